"""Real RGB images through the real pipeline: RGB-only teacher, the student alone and the KD students.

Runs `firekd ablation --teacher_modalities rgb` on ../shared/data/fire-smoke-rgb (3,336 web images,
fire/smoke labels, no IR) and prints, on the held-out test split, F1 macro / fire / smoke as
mean ± std over the seeds for the teacher, the student trained with BCE alone and the three KD
variants. Not a test: it trains for tens of minutes on CPU. Skips with a message when the data is
absent. Time is reported per stage as a share of the run, plus the total for context.

    python benchmarks/real_rgb.py                      # defaults sized for ~30 min on 2 CPU cores
    OMP_NUM_THREADS=1 python benchmarks/real_rgb.py    # on a CPU shared with other jobs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED_DATA

from firekd.kd.variants import KD_VARIANTS

METRICS = ("f1_macro", "f1_fire", "f1_smoke")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, default=SHARED_DATA / "fire-smoke-rgb" / "data.csv")
    p.add_argument("--output", type=Path, default=ROOT / "output" / "bench_real_rgb")
    p.add_argument("--teacher", default="resnet18")
    p.add_argument("--img_size", type=int, default=64)
    p.add_argument("--epochs_teacher", type=int, default=12)
    p.add_argument("--epochs_student", type=int, default=10)
    p.add_argument("--lr_teacher", type=float, default=1e-3, help="from scratch, not the 1e-4 default")
    p.add_argument("--lr_student", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    return p.parse_args()


def ablation_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "firekd", "ablation", "--csv", str(args.csv),
            "--teachers", args.teacher, "--teacher_modalities", "rgb", "--no_pretrained",
            "--variants", *KD_VARIANTS, "bce", "--seeds", *map(str, args.seeds),
            "--img_size", str(args.img_size), "--epochs_teacher", str(args.epochs_teacher),
            "--epochs_student", str(args.epochs_student), "--lr_teacher", str(args.lr_teacher),
            "--lr_student", str(args.lr_student), "--batch_size", str(args.batch_size),
            "--num_workers", str(args.num_workers), "--device", "cpu", "--output", str(args.output)]


def cell(summary: dict) -> str:
    if summary["mean"] is None:
        return "n/a"
    spread = f" ± {summary['std']:.3f}" if summary["std"] is not None else ""
    return f"{summary['mean']:.3f}{spread}"


def load(output: Path, teacher: str, variant: str) -> dict:
    with open(output / "metrics" / f"{teacher}_{variant}" / "aggregated_results.json") as fh:
        return json.load(fh)


def stage_seconds(output: Path, teacher: str, variant: str, log: str) -> float:
    """Training time of a stage summed over epochs and seeds, from its train logs."""
    total = 0.0
    for path in (output / "metrics" / f"{teacher}_{variant}").glob(f"seed_*/{log}"):
        with open(path) as fh:
            total += sum(e["time_s"] for e in json.load(fh)["epochs"])
    return total


def results_rows(args: argparse.Namespace) -> list[tuple[str, dict, float]]:
    out, t = args.output, args.teacher
    rows = [(f"teacher {t} (RGB)", load(out, t, "kl_bce")["teacher"],
             stage_seconds(out, t, "kl_bce", "teacher_train_log.json"))]
    rows.append(("student alone (bce)", load(out, t, "bce")["student"],
                 stage_seconds(out, t, "bce", "student_train_log.json")))
    for variant in KD_VARIANTS:
        rows.append((f"student {variant}", load(out, t, variant)["student"],
                     stage_seconds(out, t, variant, "student_train_log.json")))
    return rows


def print_table(rows: list[tuple[str, dict, float]], wall: float) -> None:
    train_total = sum(seconds for _, _, seconds in rows) or 1.0
    print("\n| model | n | F1 macro | F1 fire | F1 smoke | share of training time |")
    print("|---|---|---|---|---|---|")
    for name, summary, seconds in rows:
        cells = " | ".join(cell(summary[m]) for m in METRICS)
        print(f"| {name} | {summary['f1_macro']['n']} | {cells} | {seconds / train_total:.0%} |")
    print(f"\nmean ± sample std over seeds on the held-out test split; whole run {wall / 60:.1f} min "
          f"wall clock, of which training epochs {train_total / 60:.1f} min")


def main() -> int:
    args = parse_args()
    if not args.csv.is_file():
        print(f"skipped: {args.csv} is absent (the real images live in ../shared/data, outside the "
              "project; set FIREKD_SHARED_DATA or --csv)")
        return 0
    command = ablation_command(args)
    print("running:", " ".join(command[1:]), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    code = subprocess.run(command, env=env, check=False).returncode
    wall = time.perf_counter() - t0
    if code != 0:
        print(f"firekd ablation failed with exit code {code}")
        return code
    print_table(results_rows(args), wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
