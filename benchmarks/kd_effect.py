"""Does distillation move anything from the teacher into the student? Controls, side by side.

    python benchmarks/kd_effect.py [--seeds 1 2 3 4 5] [--labelled 200] [--unlabeled 2000]
        [--settings positive negative rgb_teacher cue] [--cues 0 0.3 1] [--out DIR]

On the synthetic RGB+IR set (32 px), every setting runs `firekd ablation` (a resnet18 teacher, the
three KD variants and the bce control) over the same seeds and compares each KD variant with the
control, paired by seed, with `firekd compare`'s tests. Teachers in practice start from ImageNet
weights, which cannot be had offline: here the teacher's backbone is first trained on a disjoint
labelled synthetic set (RGB only, its own seed) and handed over with --teacher_weights, as a local
ImageNet file would be; the student starts from scratch, as firekd's students do.

- positive: few labels (--labelled training pairs) plus many unlabelled pairs (--unlabeled_csv):
  the teacher's soft labels are the only way the student can use them. Target: every KD variant
  beats the control by >= +0.05 F1 macro, paired t-test p < 0.05.
- negative: the same with a teacher that knows nothing (random weights, --epochs_teacher 0).
  Target: no KD variant beats the control.
- rgb_teacher: the positive setting with an RGB-only teacher: what the extra images give without
  the teacher's infrared view.
- cue: fully labelled, a hidden fire leaves a faint glow in RGB (synth --rgb_cue S); the KD -
  control gap for a few strengths S, whatever it is.

The control depends on no teacher: settings that share data reuse it (it is copied), so their
KD - control differences are paired on the very same control runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from firekd.cli import main as firekd
from firekd.data.synthetic import SynthConfig
from firekd.kd.variants import KD_VARIANTS
from firekd.recipes.compare import compare
from firekd.recipes.synth import write_synthetic

FEW_SPLIT = ("0.1", "0.2", "0.7")  # few training labels; validation and test large enough to measure on
FULL_SPLIT = ("0.7", "0.15", "0.15")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", default=["1", "2", "3", "4", "5"])
    p.add_argument("--labelled", type=int, default=50, help="labelled training pairs (default: 50)")
    p.add_argument("--unlabeled", type=int, default=2000, help="unlabelled pairs (default: 2000)")
    p.add_argument("--few_cue", type=float, default=0.0,
                   help="RGB cue of hidden fires in the few-label settings (default: 0, none)")
    p.add_argument("--cue_labelled", type=int, default=500,
                   help="labelled training pairs of the fully labelled cue setting (default: 500)")
    p.add_argument("--cues", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    p.add_argument("--settings", nargs="+", default=["positive", "negative", "rgb_teacher", "cue"],
                   choices=("positive", "negative", "rgb_teacher", "cue"))
    p.add_argument("--img_size", type=int, default=32)
    p.add_argument("--pretrain_n", type=int, default=3000,
                   help="pairs of the disjoint set the teacher's backbone is pretrained on (default: 3000)")
    p.add_argument("--variants", nargs="+", default=list(KD_VARIANTS),
                   help="KD variants (default: all three)")
    p.add_argument("--epochs_teacher", type=int, default=200,
                   help="teacher epochs in the few-label settings (one batch each; default: 200)")
    p.add_argument("--epochs_teacher_full", type=int, default=30,
                   help="teacher epochs in the fully labelled cue settings (default: 30)")
    p.add_argument("--epochs_student", type=int, default=20)
    p.add_argument("--out", default=None, help="keep everything here (default: a temporary folder)")
    return p.parse_args()


def pretrained_teacher(root: Path, args) -> Path:
    """A resnet18 teacher trained on a disjoint labelled synthetic set, RGB only: its backbone
    (--teacher_weights takes a firekd teacher checkpoint) stands in for ImageNet weights."""
    found = list((root / "pretrain" / "teachers" / "resnet18").glob("seed_0-*/teacher_best.pth"))
    if found:
        return found[0]
    data = root / "data_pretrain"
    write_synthetic(SynthConfig(n=args.pretrain_n, size=args.img_size, seed=99), data, workers=2)
    code = firekd(["ablation", "--csv", str(data / "data.csv"), "--output", str(root / "pretrain"),
                   "--teachers", "resnet18", "--teacher_modalities", "rgb", "--teacher_only", "--seeds", "0",
                   "--no_pretrained", "--img_size", str(args.img_size), "--epochs_teacher", "30",
                   "--patience_teacher", "10", "--lr_teacher", "1e-3", "--batch_size", "64",
                   "--num_workers", "0"])
    assert code == 0, f"pretraining failed ({code})"
    return next((root / "pretrain" / "teachers" / "resnet18").glob("seed_0-*/teacher_best.pth"))


def ablation(csv: Path, output: Path, args, split: tuple[str, str, str], *extra: str) -> float:
    t0 = time.perf_counter()
    code = firekd(["ablation", "--csv", str(csv), "--output", str(output), "--teachers", "resnet18",
                   "--variants", *args.variants, "bce", "--seeds", *args.seeds,
                   "--img_size", str(args.img_size),
                   "--no_pretrained", "--lr_teacher", "1e-3", "--epochs_teacher", str(args.epochs_teacher),
                   "--epochs_student", str(args.epochs_student), "--patience_teacher", "20",
                   "--patience_student", "8", "--split_ratios", *split, "--batch_size", "64",
                   "--num_workers", "0", "--no_compress", "--max_embed_points", "0", "--latency_runs", "0",
                   *extra])
    assert code == 0, f"firekd ablation failed ({code})"
    return time.perf_counter() - t0


def effects(output: Path) -> pd.DataFrame:
    """Each KD variant against the control: student F1 macro, paired by seed."""
    cmp = compare(output)
    tests = cmp.tests
    rows = []
    for variant in [r.variant for r in cmp.runs if r.variant in KD_VARIANTS]:
        t = tests[(tests["a"] == variant) & (tests["b"] == "bce") & (tests["model"] == "student")
                  & (tests["metric"] == "f1_macro")].iloc[0]
        a = next(r for r in cmp.runs if r.variant == variant).seed_values("student", "f1_macro")
        b = next(r for r in cmp.runs if r.variant == "bce").seed_values("student", "f1_macro")
        diff = np.array([a[s] - b[s] for s in sorted(set(a) & set(b))])
        sd = diff.std(ddof=1) if len(diff) > 1 else np.nan
        rows.append({"variant": variant, "n": int(t["n"]), "KD": t["mean_a"], "control": t["mean_b"],
                     "diff": t["mean_diff"], "ci_low": t["diff_ci_low"], "ci_high": t["diff_ci_high"],
                     "d_z": diff.mean() / sd if sd > 0 else np.nan, "p_t": t["p_ttest"],
                     "p_t_holm": t["p_ttest_holm"], "p_wilcoxon": t["p_wilcoxon"]})
    return pd.DataFrame(rows)


def _f(value, spec: str) -> str:
    return "n/a" if value is None or pd.isna(value) else format(value, spec)


def show(title: str, frame: pd.DataFrame, verdict=None) -> None:
    print(f"\n### {title}\n")
    print("| variant | n | KD F1 | control F1 | KD - control [95% CI] | d_z | t-test p (Holm) | Wilcoxon p |"
          + (" target |" if verdict else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if verdict else ""))
    for r in frame.itertuples():
        ci = f"[{_f(r.ci_low, '+.4f')}, {_f(r.ci_high, '+.4f')}]"
        p = f"{_f(r.p_t, '.3g')} ({_f(r.p_t_holm, '.3g')})"
        line = (f"| {r.variant} | {r.n} | {r.KD:.4f} | {r.control:.4f} | {r.diff:+.4f} {ci} | "
                f"{_f(r.d_z, '+.2f')} | {p} | {_f(r.p_wilcoxon, '.3g')} |")
        print(line + (f" {verdict(r)} |" if verdict else ""))


def beats(r) -> str:
    return "met" if r.diff >= 0.05 and not pd.isna(r.p_t) and r.p_t < 0.05 else "not met"


def does_not_beat(r) -> str:
    return "met" if not (r.diff > 0 and not pd.isna(r.p_t) and r.p_t < 0.05) else "not met"


def main() -> None:
    args = parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kd_effect-"))
    os.environ.setdefault("FIREKD_CACHE_DIR", str(root / "cache"))
    t_all = time.perf_counter()
    n = round(args.labelled / float(FEW_SPLIT[0]))
    few = root / f"data_few{args.labelled}_cue{args.few_cue:g}"
    if not (few / "data.csv").exists():
        write_synthetic(SynthConfig(n=n, size=args.img_size, seed=0, unlabeled=args.unlabeled,
                                    rgb_cue=args.few_cue), few, workers=2)
    weights = ("--teacher_weights", str(pretrained_teacher(root, args)))
    few_args = ("--unlabeled_csv", str(few / "unlabeled.csv"))
    times, tables = {}, {}
    if "positive" in args.settings:
        times["positive"] = ablation(few / "data.csv", root / "positive", args, FEW_SPLIT, *few_args,
                                     *weights)
        tables["positive"] = effects(root / "positive")
    variations = {"negative": ("--epochs_teacher", "0"),
                  "rgb_teacher": ("--teacher_modalities", "rgb", *weights)}
    for name, extra in variations.items():
        if name not in args.settings:
            continue
        if (root / "positive" / "controls").exists() and not (root / name).exists():
            shutil.copytree(root / "positive" / "controls", root / name / "controls")  # the same control runs
        times[name] = ablation(few / "data.csv", root / name, args, FEW_SPLIT, *few_args, *extra)
        tables[name] = effects(root / name)
    if "cue" in args.settings:
        for cue in args.cues:
            data = root / f"data_cue{cue:g}"
            if not (data / "data.csv").exists():
                write_synthetic(SynthConfig(n=round(args.cue_labelled / float(FULL_SPLIT[0])),
                                            size=args.img_size, seed=0, rgb_cue=cue), data, workers=2)
            times[f"cue {cue:g}"] = ablation(data / "data.csv", root / f"cue{cue:g}", args, FULL_SPLIT,
                                             *weights, "--epochs_teacher", str(args.epochs_teacher_full))
            tables[f"cue {cue:g}"] = effects(root / f"cue{cue:g}")
    print(f"\nkd_effect: resnet18 teacher (backbone pretrained on {args.pretrain_n} disjoint pairs), "
          f"{args.img_size} px, seeds {' '.join(args.seeds)}, "
          f"split {'/'.join(FEW_SPLIT)} (cue settings {'/'.join(FULL_SPLIT)}), epochs teacher/student "
          f"{args.epochs_teacher}/{args.epochs_student}; "
          "student F1 macro on test, paired by seed (t-interval of the mean difference; d_z = mean / sd "
          "of the per-seed differences)")
    titles = {"positive": (f"positive control: {args.labelled} labelled + {args.unlabeled} unlabelled pairs, "
                           "RGB+IR teacher (target: >= +0.05, p < 0.05)", beats),
              "negative": ("negative control: the same with an untrained teacher (target: no gain)",
                           does_not_beat),
              "rgb_teacher": ("what IR adds: the positive setting with an RGB-only teacher", None)}
    for name, frame in tables.items():
        title, verdict = titles[name] if name in titles else (
            f"fully labelled ({args.cue_labelled} training pairs), RGB cue strength {name.split()[1]}", None)
        show(title, frame, verdict)
    if "positive" in tables and "rgb_teacher" in tables:
        both = tables["positive"].merge(tables["rgb_teacher"], on="variant", suffixes=("_ir", "_rgb"))
        print("\nIR's share of the gain (RGB+IR teacher gain minus RGB-only teacher gain, same control): "
              + ", ".join(f"{r.variant} {r.diff_ir - r.diff_rgb:+.4f}" for r in both.itertuples()))
    print("\nwall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; total {(time.perf_counter() - t_all) / 60:.1f} min; outputs in {root}")


if __name__ == "__main__":
    main()
