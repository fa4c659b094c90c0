"""End-to-end training throughput against the model fed by tensors already on the device.

    python benchmarks/gpu_throughput.py [--teacher resnet152] [--img_size 224] [--steps 200]

For the teacher (BCE step) and the student (kl_contrastive_l2_bce KD step): images/s of
(a) the model alone on random tensors already on the device, and (b) the real pipeline: decoded
cache -> loader -> device augmentation -> bf16 autocast + channels_last step. Target (b)/(a) >= 0.9.
Meant for a CUDA machine; runs on CPU too (small settings) to check that it works.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from firekd.config import DataConfig, ExecConfig, OptimConfig, RunConfig
from firekd.data.synthetic import SynthConfig
from firekd.engine.loop import train_step
from firekd.io import Writer
from firekd.kd.distiller import Distiller, Supervised
from firekd.kd.variants import VARIANTS
from firekd.models import create_student, create_teacher
from firekd.recipes.context import seed_run
from firekd.recipes.data import load_data, open_cache
from firekd.recipes.synth import write_synthetic


def images_per_s(task, weights, batches, rt, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    task.train()
    seen, t0 = 0, None
    for step, batch in enumerate(batches()):
        if step == 10:  # warm-up done (cudnn autotune, allocator)
            if rt.cuda:
                torch.cuda.synchronize()
            seen, t0 = 0, time.perf_counter()
        train_step(task, batch, opt, weights, rt)
        seen += len(batch[0])
        if step >= steps + 10:
            break
    if rt.cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet152")
    p.add_argument("--img_size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n", type=int, default=2000, help="synthetic pairs (generated at img_size)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FIREKD_CACHE_DIR"] = str(Path(tmp) / "cache")
        synth = SynthConfig(n=args.n, size=args.img_size, seed=0)
        write_synthetic(synth, Path(tmp) / "d", workers=args.workers)
        data = DataConfig(csv=str(Path(tmp) / "d" / "data.csv"), img_size=args.img_size)
        cfg = RunConfig(data=data, optim=OptimConfig(batch_size=args.batch),
                        execution=ExecConfig(num_workers=args.workers))
        bundle = load_data(data)
        bundle.source = open_cache(bundle, workers=args.workers)
        run = seed_run(cfg, bundle, 0, Writer())
        rt, loaders = run.rt, run.loaders

        def pipeline():
            while True:
                for batch in loaders.train:
                    yield rt.to_device(batch, train=True)

        def resident():
            rgb = torch.randn(args.batch, 3, args.img_size, args.img_size, device=rt.device)
            ir = torch.randn(args.batch, 1, args.img_size, args.img_size, device=rt.device)
            labels = torch.randint(0, 2, (args.batch, 2), device=rt.device).float()
            if rt.cuda:
                rgb, ir = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, ir))
            while True:
                yield rgb, ir, labels, None

        teacher = rt.prepare_model(create_teacher(args.teacher, img_size=args.img_size, pretrained=False))
        student = rt.prepare_model(create_student("firekd_student"))
        kd_terms = VARIANTS["kl_contrastive_l2_bce"]
        rows = [  # built lazily: the distiller freezes the teacher
            ("teacher " + args.teacher, lambda: Supervised(teacher), VARIANTS["bce"]),
            ("student KD", lambda: Distiller(student, teacher, set(kd_terms)).to(rt.device), kd_terms)]
        name = torch.cuda.get_device_name(0) if rt.cuda else "CPU"
        print(f"{name}, {args.img_size} px, batch {args.batch}, {rt.precision}, "
              f"{args.workers} loader workers")
        print("| step | model-only img/s | end-to-end img/s | ratio |\n|---|---|---|---|")
        for label, build, weights in rows:
            task = build()
            alone = images_per_s(task, weights, resident, rt, args.steps)
            e2e = images_per_s(task, weights, pipeline, rt, args.steps)
            print(f"| {label} | {alone:.0f} | {e2e:.0f} | {e2e / alone:.2f} |")


if __name__ == "__main__":
    main()
