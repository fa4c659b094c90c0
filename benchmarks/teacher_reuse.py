"""Ablation wall time three ways: the spec's way, teacher reuse alone, teacher reuse + lockstep.

    python benchmarks/teacher_reuse.py [--teacher resnet50] [--img_size 32] [--n 400]
        [--epochs_teacher 5] [--epochs_student 3] [--finetune_epochs 1] [--extra=--no_compress]

One teacher x (3 KD variants + the bce control) x 2 seeds on a synthetic set, through
`firekd ablation`, side by side in one run on this machine:

- spec: a teacher retrained for every variant, one variant at a time (--no_teacher_reuse
  --lockstep off), as the spec's three scripts do;
- reuse: one teacher per seed shared by the variants, one variant at a time (--lockstep off);
- lockstep: one teacher per seed, and the variants of a seed (with the control) trained in one
  pass over the data, the teacher running once per batch (the default).

The default epochs keep the spec's 50:30:10 teacher:student:fine-tuning ratio. Targets: lockstep
<= 0.55x reuse on the student stages (training and fine-tuning), the whole ablation <= 0.35x the
spec's way. Per-stage times come from the epoch logs (a lockstep pass is counted once, not once
per student). An untimed warm-up run first pays the one-off costs (imports, cache, compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from firekd.cli import main as firekd
from firekd.data.synthetic import SynthConfig
from firekd.kd.variants import KD_VARIANTS
from firekd.recipes.synth import write_synthetic

ARMS = {"spec": ("--no_teacher_reuse", "--lockstep", "off"), "reuse": ("--lockstep", "off"), "lockstep": ()}


def run(csv: Path, output: Path, args, *, seeds=("1", "2"), variants=(*KD_VARIANTS, "bce"), epochs=None,
        extra=()) -> float:
    teacher_epochs, student_epochs, finetune = epochs or (args.epochs_teacher, args.epochs_student,
                                                          args.finetune_epochs)
    t0 = time.perf_counter()
    code = firekd(["ablation", "--csv", str(csv), "--output", str(output), "--teachers", args.teacher,
                   "--variants", *variants, "--seeds", *seeds, "--epochs_teacher", str(teacher_epochs),
                   "--epochs_student", str(student_epochs), "--finetune_epochs", str(finetune),
                   "--patience_teacher", "100", "--patience_student", "100", "--no_pretrained",
                   "--img_size", str(args.img_size), "--num_workers", "0", "--lr_teacher", "1e-3",
                   "--no_quant_compile", "--latency_runs", "0", "--max_embed_points", "0",
                   *args.extra, *extra])
    assert code == 0
    return time.perf_counter() - t0


def stage_seconds(output: Path, teacher: str) -> dict[str, float]:
    """Seconds in teacher epochs, student epochs and fine-tuning epochs, from the logs; students
    of one lockstep pass share its epochs' time, so a (seed, epoch) pass is counted once."""
    logs = (output / "teachers" / teacher).glob("seed_*/teacher_train_log.json")
    teacher_s = sum(e["time_s"] for log in logs for e in json.loads(log.read_text())["epochs"])
    out = {"teacher": teacher_s}
    for stage, name in (("students", "student_train_log.json"),
                        ("fine-tuning", "student_pruned_train_log.json")):
        passes: dict[tuple, float] = defaultdict(float)
        logs = [*output.glob(f"metrics/*/seed_*/{name}"), *output.glob(f"controls/*/*/metrics/{name}")]
        for log in {p.resolve() for p in logs}:  # the control's files are linked into its run folders
            seed, epochs = log.parent.name, json.loads(log.read_text())["epochs"]
            for e in epochs:  # a pass shared by several students has one wall time
                key = (seed, e["epoch"], round(e["time_s"], 3))
                passes[key] = e["time_s"]
        out[stage] = sum(passes.values())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet50")
    p.add_argument("--img_size", type=int, default=32)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--epochs_teacher", type=int, default=5)
    p.add_argument("--epochs_student", type=int, default=3)
    p.add_argument("--finetune_epochs", type=int, default=1)
    p.add_argument("--extra", nargs="*", default=[],
                   help="more flags for firekd ablation, e.g. --extra=--no_compress")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["FIREKD_CACHE_DIR"] = str(tmp / "cache")
        write_synthetic(SynthConfig(n=args.n, size=args.img_size, seed=0), tmp / "data")
        csv = tmp / "data" / "data.csv"
        # warm-up: imports, the decoded cache, one-off compilation; untimed
        run(csv, tmp / "warmup", args, seeds=("0",), variants=("kl_bce",), epochs=(1, 1, 1))
        wall = {arm: run(csv, tmp / arm, args, extra=flags) for arm, flags in ARMS.items()}
        stages = {arm: stage_seconds(tmp / arm, args.teacher) for arm in ARMS}
    print(f"\n{args.teacher}, 3 KD variants + control x 2 seeds, {args.img_size} px, {args.n} samples, "
          f"epochs teacher/student/fine-tune {args.epochs_teacher}/{args.epochs_student}/"
          f"{args.finetune_epochs} {' '.join(args.extra)}\n")
    print("| arm | whole ablation (s) | teacher epochs (s) | student epochs (s) | fine-tuning epochs (s) | "
          "whole vs spec |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        s = stages[arm]
        print(f"| {arm} | {wall[arm]:.1f} | {s['teacher']:.1f} | {s['students']:.1f} | "
              f"{s['fine-tuning']:.1f} | {wall[arm] / wall['spec']:.2f}x |")
    student = {arm: stages[arm]["students"] + stages[arm]["fine-tuning"] for arm in ARMS}
    ratio = student["lockstep"] / student["reuse"]
    print(f"\nstudent stages, lockstep vs reuse: {ratio:.2f}x (target <= 0.55x)")
    print(f"whole ablation, lockstep vs spec: {wall['lockstep'] / wall['spec']:.2f}x (target <= 0.35x); "
          f"reuse vs spec: {wall['reuse'] / wall['spec']:.2f}x")


if __name__ == "__main__":
    main()
