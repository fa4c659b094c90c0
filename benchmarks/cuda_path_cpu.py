"""What issue 24 removed from a student stage, measured on the CPU side by side in one run.

    python benchmarks/cuda_path_cpu.py [--img_size 32] [--batch 64] [--steps 20] [--teacher resnet50]

1. Host time per student step on the device-augmentation path (the path CUDA runs; here on the
   CPU, where "device" ops run synchronously): before, the training process drew and packed each
   batch's augmentation parameters (`apply_transform` on a batch of four); after, the loader
   workers draw them and the batch brings them (a batch of five). Shown: the draw alone (the host
   work moved off the training process), the batch preparation, and the whole step (preparation
   + firekd's train_step of the student), each before and after.
2. Validation time per epoch of a lockstep student stage (three KD students and the bce control)
   before and after the teacher-output cache: before, the frozen teacher ran on every validation
   batch of every epoch; after, in epoch 1 only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "firekd").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from firekd.data.dataset import augmentation_params  # noqa: E402
from firekd.data.transforms import PairedTransform, sample_keys  # noqa: E402
from firekd.engine.loop import FitConfig, make_optimizer, train_step, validate  # noqa: E402
from firekd.engine.runtime import Runtime  # noqa: E402
from firekd.kd.distiller import Distiller, Supervised  # noqa: E402
from firekd.kd.variants import VARIANTS  # noqa: E402
from firekd.models import create_student, create_teacher  # noqa: E402

KD = ("kl_bce", "kl_l2_bce", "kl_contrastive_l2_bce")


def integer_batches(n: int, batch: int, size: int, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        rgb = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
        ir = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 2, (batch, 2), generator=g).float()
        out.append((rgb, ir, labels, torch.arange(i * batch, (i + 1) * batch)))
    return out


def side_by_side(before, after, repeats: int) -> tuple[float, float]:
    """Median seconds of before() and after(), called alternately ``repeats`` times each after one
    warm-up call of each: a load that drifts on a shared machine weighs on both alike."""
    before(), after()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, out in ((before, times[0]), (after, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def host_step(args) -> None:
    size = args.img_size
    train_tf = PairedTransform(size, train=True)
    rt = Runtime(torch.device("cpu"), seed=0,
                 device_transforms=(train_tf, PairedTransform(size, train=False)))
    batches = integer_batches(args.steps, args.batch, size)
    with_params = [(*b, augmentation_params(train_tf, b, 0)) for b in batches]  # as the workers send them
    torch.manual_seed(0)
    task = Supervised(create_student("firekd_student", pretrained=False))
    cfg = FitConfig(kind="student", label="bench", epochs=1, lr=1e-4, weight_decay=0.0, patience=1,
                    weights=VARIANTS["bce"], seed=0)
    optimizer, _ = make_optimizer(task, cfg, 10**6)
    task.train()

    def draw_only():
        for b in batches:
            train_tf.params_for(sample_keys(0, b[3].numpy(), train_tf.epoch), size, size)

    def prepare(source):
        return lambda: [rt.to_device(b, train=True) for b in source]

    def steps(source):
        def run():
            for b in source:
                train_step(task, rt.to_device(b, train=True), optimizer, cfg.weights, rt, grad_clip=10.0)
        return run

    n = len(batches)
    draw = side_by_side(draw_only, lambda: None, args.repeats)[0] / n
    prep_before, prep_after = (t / n for t in side_by_side(prepare(batches), prepare(with_params),
                                                            args.repeats))
    step_before, step_after = (t / n for t in side_by_side(steps(batches), steps(with_params), args.repeats))
    print(f"## 1. Host time per student step (CPU, {size} px, batch {args.batch}, {n} steps, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads)\n")
    print("| per step | before (drawn in the training process) | after (drawn in the workers) "
          "| after / before |")
    print("|---|---|---|---|")
    print(f"| parameter draw (host) | {draw * 1e3:.2f} ms | 0 ms (in the workers) | 0.00 |")
    print(f"| batch preparation (draw + augmentation ops) | {prep_before * 1e3:.2f} ms "
          f"| {prep_after * 1e3:.2f} ms "
          f"| {prep_after / prep_before:.2f} |")
    print(f"| whole step (preparation + train_step) | {step_before * 1e3:.2f} ms | {step_after * 1e3:.2f} ms "
          f"| {step_after / step_before:.2f} |")


def validation(args) -> None:
    size = args.img_size
    rt = Runtime(torch.device("cpu"))
    tf = PairedTransform(size, train=False)
    val = [(*tf(b[0], b[1]), b[2], b[3]) for b in integer_batches(args.val_batches, args.batch, size, seed=1)]
    torch.manual_seed(0)
    teacher = create_teacher(args.teacher, img_size=size, pretrained=False).eval()
    tasks, cfgs = [], []
    for variant in (*KD, "bce"):
        torch.manual_seed(0)
        student = create_student("firekd_student", pretrained=False)
        weights = VARIANTS[variant]
        tasks.append(Distiller(student, teacher, set(weights)) if variant != "bce" else Supervised(student))
        cfgs.append(FitConfig(kind="student", label=variant, epochs=1, lr=1e-4, weight_decay=0.0, patience=1,
                              weights=weights, seed=0))

    before, after, plain, cached, cache = [], [], [], [], {}
    for _ in range(args.epochs):  # epoch k before, then epoch k after: side by side
        for cache_or_none, times, results in ((None, before, plain), (cache, after, cached)):
            t0 = time.perf_counter()
            results.append(validate(tasks, cfgs, val, rt, teacher_cache=cache_or_none))
            times.append(time.perf_counter() - t0)
    assert all(r == plain[0] for r in plain + cached), "the cache changed the validation results"
    mean = lambda t: sum(t) / len(t)  # noqa: E731
    print(f"\n## 2. Validation per epoch of a lockstep student stage ({', '.join(KD)} + bce; teacher "
          f"{args.teacher}; {args.val_batches} batches of {args.batch} at {size} px; {args.epochs} epochs)\n")
    print("| per epoch | before (teacher every epoch) | after (teacher-output cache) | after / before |")
    print("|---|---|---|---|")
    print(f"| epoch 1 | {before[0]:.2f} s | {after[0]:.2f} s | {after[0] / before[0]:.2f} |")
    print(f"| epochs 2-{args.epochs} (mean) | {mean(before[1:]):.2f} s | {mean(after[1:]):.2f} s "
          f"| {mean(after[1:]) / mean(before[1:]):.2f} |")
    print(f"| all {args.epochs} epochs (mean) | {mean(before):.2f} s | {mean(after):.2f} s "
          f"| {mean(after) / mean(before):.2f} |")
    print("\nValidation results identical with and without the cache: yes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img_size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="student steps timed per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--teacher", default="resnet50")
    p.add_argument("--val_batches", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    np.seterr(over="ignore")  # uint64 hashing wraps by design
    host_step(args)
    validation(args)


if __name__ == "__main__":
    main()
