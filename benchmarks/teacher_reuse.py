"""Ablation wall time with teacher reuse vs a teacher retrained for every loss variant.

    python benchmarks/teacher_reuse.py [--teacher resnet50] [--img_size 32] [--n 400]
        [--epochs_teacher 5] [--epochs_student 3] [--finetune_epochs 1] [--extra=--no_compress]

One teacher x 3 KD variants x 2 seeds on a synthetic set, run twice through `firekd ablation`
side by side: once as firekd runs it (each teacher trained once per seed and shared), once with
--no_teacher_reuse (each variant trains its own). The default epochs keep the spec's 50:30:10
teacher:student:fine-tuning ratio. Target: reuse takes at most 0.45x the time. With a teacher
costing T and a variant's student work (training, compression, evaluation, figures) S, the ratio
is (T + 3S) / (3T + 3S): it approaches 1/3 only when T >> S, so the time spent in teacher epochs
is printed too. An untimed warm-up run first pays the one-off compilation costs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from firekd.cli import main as firekd
from firekd.data.synthetic import SynthConfig
from firekd.kd.variants import KD_VARIANTS
from firekd.recipes.synth import write_synthetic


def run(csv: Path, output: Path, args, *, seeds=("1", "2"), variants=KD_VARIANTS, epochs=None,
        extra=()) -> float:
    teacher_epochs, student_epochs, finetune = epochs or (args.epochs_teacher, args.epochs_student,
                                                          args.finetune_epochs)
    t0 = time.perf_counter()
    code = firekd(["ablation", "--csv", str(csv), "--output", str(output), "--teachers", args.teacher,
                   "--variants", *variants, "--seeds", *seeds, "--epochs_teacher", str(teacher_epochs),
                   "--epochs_student", str(student_epochs), "--finetune_epochs", str(finetune),
                   "--patience_teacher", "100", "--patience_student", "100", "--no_pretrained",
                   "--img_size", str(args.img_size), "--num_workers", "0", "--lr_teacher", "1e-3",
                   *args.extra, *extra])
    assert code == 0
    return time.perf_counter() - t0


def teacher_epochs_s(output: Path) -> float:
    """Seconds spent in the teachers' training epochs, from their logs."""
    logs = (output / "teachers").glob("*/seed_*/teacher_train_log.json")
    return sum(e["time_s"] for log in logs for e in json.loads(log.read_text())["epochs"])


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
        # warm-up: imports, numba (UMAP) and inductor compilation, the decoded cache; untimed
        run(csv, tmp / "warmup", args, seeds=("0",), variants=("kl_bce",), epochs=(1, 1, 1))
        reuse = run(csv, tmp / "reuse", args)
        naive = run(csv, tmp / "naive", args, extra=("--no_teacher_reuse",))
        in_teacher = teacher_epochs_s(tmp / "reuse"), teacher_epochs_s(tmp / "naive")
    print(f"\n{args.teacher}, 3 variants x 2 seeds, {args.img_size} px, {args.n} samples, "
          f"epochs teacher/student/fine-tune {args.epochs_teacher}/{args.epochs_student}/"
          f"{args.finetune_epochs} {' '.join(args.extra)}")
    print(f"teacher reused: {reuse:.1f}s   retrained per variant: {naive:.1f}s   "
          f"ratio {reuse / naive:.2f}x (target <= 0.45x)")
    print(f"of which teacher training epochs: {in_teacher[0]:.1f}s vs {in_teacher[1]:.1f}s; the rest "
          f"(students, compression, evaluation, figures): {reuse - in_teacher[0]:.1f}s vs "
          f"{naive - in_teacher[1]:.1f}s")


if __name__ == "__main__":
    main()
