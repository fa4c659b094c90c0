"""What does the teacher's infrared view give an RGB-only student? The study, with its controls.

    python benchmarks/kd_effect.py [--out DIR] [--replicates 10] [--others 5] [--jobs 2]

Synthetic RGB+IR set with a faint RGB trace of fires buried under smoke (`synth --rgb_cue 0.3`):
IR shows them plainly, RGB barely. Every replicate (seed s) draws its own split and its own
labelled subset (`--resample_split --n_labelled`): the teachers, the no-teacher baselines and the
students of a seed share that draw, so arms pair by seed. Validation is no larger than the labelled
training set. A resnet18 teacher is fine-tuned on the seed's labelled pairs from one of two
backbones (offline stand-ins for ImageNet weights, each trained on the same disjoint set of images):

- side: pretrained on the scenes' side variables (orange objects, haze), never on fire or smoke:
  a teacher that knows no more about the task than the student's labels tell it;
- task: pretrained on fire/smoke labels of the disjoint set: "a teacher trained on more labels
  elsewhere", a real use case, and a teacher that knows more than the student.

and with either input, RGB+IR or RGB only (`--teacher_modalities rgb+ir rgb`, one ablation). The
students (kl_bce) are compared with each other and with the two no-teacher baselines, `bce`
(labels only) and `self_kd` (the seed's `bce` model teaching a fresh student on the same labelled
and unlabelled pairs); `untrained` is the negative control (a teacher with random weights).

The primary comparison and the Holm family are fixed below, before anything runs. Results are
written to DIR/study.md after every stage; a rerun with the same --out resumes (firekd skips
finished seeds), so the study survives an interrupted session.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from firekd.cli import main as firekd
from firekd.data.synthetic import SynthConfig
from firekd.metrics.stats import holm, paired_tests, summarize_values
from firekd.recipes.compare import Run, find_runs
from firekd.recipes.synth import write_synthetic

HIDDEN_RECALL = "recall_fire[hidden_in_rgb=1]"  # recall of fires RGB does not show (the slice IR is for)
F1 = "f1_macro"


@dataclass(frozen=True)
class Test:
    name: str
    a: tuple[str, str]  # (arm, run name)
    b: tuple[str, str]
    metric: str
    expect: str  # what a pipeline that works should show
    passes: object = None  # (diff, p) -> bool, for the expectation


def at_least(delta: float):
    return lambda diff, p: diff >= delta and p is not None and p < 0.05


def no_gain(diff, p) -> bool:
    return not (diff > 0 and p is not None and p < 0.05)


T = "resnet18"
IR, RGB, BCE, SELF = f"{T}_kl_bce", f"{T}-rgb_kl_bce", f"{T}_bce", f"{T}_self_kd"

# Named before the run: the study's question, one test, not adjusted.
PRIMARY = Test("what IR adds, on RGB-hidden fires (teacher without task labels)",
               ("side", IR), ("side", RGB), HIDDEN_RECALL,
               "KD from the RGB+IR teacher >= +0.10 recall over KD from the RGB-only teacher, p < 0.05",
               at_least(0.10))
# Secondary: Holm-adjusted together (this family, these seven tests, nothing else).
SECONDARY = [
    Test("a teacher that knows more vs self_kd", ("task", IR), ("side", SELF), F1,
         ">= +0.03 F1 macro, p < 0.05", at_least(0.03)),
    Test("teacher without task labels vs self_kd", ("side", IR), ("side", SELF), F1, "(reported)"),
    Test("teacher without task labels vs bce", ("side", IR), ("side", BCE), F1, "(reported)"),
    Test("untrained teacher vs bce (negative control)", ("untrained", IR), ("side", BCE), F1,
         "no gain", no_gain),
    Test("self_kd vs bce", ("side", SELF), ("side", BCE), F1, "(reported)"),
    Test("what IR adds, overall (teacher without task labels)", ("side", IR), ("side", RGB), F1,
         "(reported)"),
    Test("what IR adds, on RGB-hidden fires (teacher that knows more)", ("task", IR), ("task", RGB),
         HIDDEN_RECALL, "(reported)"),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None,
                   help="keep everything here; a rerun resumes (default: a temp folder)")
    p.add_argument("--replicates", type=int, default=10,
                   help="replicates of the primary comparison's arms (default: 10)")
    p.add_argument("--others", type=int, default=5, help="replicates of every other arm (default: 5)")
    p.add_argument("--rgb_cue", type=float, default=0.3, help="RGB trace of buried fires (default: 0.3)")
    p.add_argument("--n", type=int, default=800, help="labelled pairs generated (default: 800)")
    p.add_argument("--split_ratios", nargs=3, default=["0.25", "0.075", "0.675"],
                   help="train/val/test of the --n pairs (default: 0.25 0.075 0.675: 200/60/540)")
    p.add_argument("--n_labelled", type=int, default=60,
                   help="labelled training pairs per replicate; the other train rows become "
                        "unlabelled (default: 60)")
    p.add_argument("--unlabeled", type=int, default=1500, help="extra unlabelled pairs (default: 1500)")
    p.add_argument("--img_size", type=int, default=32)
    p.add_argument("--pretrain_n", type=int, default=3000,
                   help="pairs of the disjoint set the teachers' backbones learn from (default: 3000)")
    p.add_argument("--pretrain_epochs", type=int, default=20)
    p.add_argument("--steps_teacher", type=int, default=150)
    p.add_argument("--epochs_student", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="firekd --jobs (default: 2)")
    return p.parse_args()


def common(args) -> list[str]:
    return ["--img_size", str(args.img_size), "--no_pretrained", "--batch_size", "64", "--num_workers", "0",
            "--max_embed_points", "0", "--latency_runs", "0", "--no_figures", "--save_every", "10"]


def pretrained(root: Path, args, name: str, fire_col: str, smoke_col: str) -> Path:
    """A resnet18 teacher trained (RGB only) on the disjoint set's fire_col/smoke_col labels; its
    backbone goes to the study's teachers through --teacher_weights."""
    folder = root / f"pretrain_{name}" / "teachers" / T
    if not list(folder.glob("seed_0-*/teacher.store.json")):
        data = root / "data_pretrain"
        if not (data / "data.csv").exists():
            write_synthetic(SynthConfig(n=args.pretrain_n, size=args.img_size, seed=99, rgb_cue=args.rgb_cue,
                                        side_labels=True), data, workers=2)
        code = firekd(["ablation", "--csv", str(data / "data.csv"), "--output", str(folder.parents[1]),
                       "--fire_col", fire_col, "--smoke_col", smoke_col, "--teachers", T,
                       "--teacher_modalities", "rgb", "--teacher_only", "--seeds", "0", *common(args),
                       "--epochs_teacher", str(args.pretrain_epochs), "--patience_teacher", "5",
                       "--lr_teacher", "1e-3", "--no_compress"])
        assert code == 0, f"pretraining {name} failed ({code})"
    return next(folder.glob("seed_0-*/teacher_best.pth"))


def arm(root: Path, data: Path, args, name: str, seeds: list[str], *extra: str) -> float:
    t0 = time.perf_counter()
    code = firekd(["ablation", "--csv", str(data / "data.csv"),
                   "--unlabeled_csv", str(data / "unlabeled.csv"),
                   "--output", str(root / name), "--teachers", T, "--seeds", *seeds, *common(args),
                   "--split_ratios", *args.split_ratios, "--resample_split",
                   "--n_labelled", str(args.n_labelled),
                   "--slice_col", "hidden_in_rgb", "--lr_teacher", "1e-3", "--patience_teacher", "30",
                   "--epochs_student", str(args.epochs_student), "--patience_student", "5",
                   "--no_compress", "--jobs", str(args.jobs), *extra])
    assert code == 0, f"arm {name} failed ({code})"
    return time.perf_counter() - t0


def load_runs(root: Path) -> dict[tuple[str, str], Run]:
    """Every arm's runs, read once: {(arm, run name): Run}."""
    return {(arm_name, r.name): r for arm_name in ("side", "task", "untrained")
            if (root / arm_name / "metrics").exists() for r in find_runs(root / arm_name)}


def seed_values(runs: dict, arm_name: str, run: str, metric: str, model: str = "student") -> dict:
    found = runs.get((arm_name, run))
    return found.seed_values(model, metric) if found else {}


def test_row(runs: dict, test: Test, only: set[int] | None = None) -> dict:
    a, b = seed_values(runs, *test.a, test.metric), seed_values(runs, *test.b, test.metric)
    seeds = sorted(set(a) & set(b) & (only if only is not None else set(a)))
    res = paired_tests([a[s] for s in seeds], [b[s] for s in seeds])
    return {"test": test.name, "metric": test.metric, "a": "/".join(test.a), "b": "/".join(test.b),
            "n": res["n"], "mean_a": _mean(a, seeds), "mean_b": _mean(b, seeds), "diff": res["mean_diff"],
            "ci_low": res["diff_ci_low"], "ci_high": res["diff_ci_high"], "p": res["p_ttest"],
            "p_wilcoxon": res["p_wilcoxon"], "expect": test.expect, "passes": test.passes}


def _mean(values: dict, seeds: list[int]) -> float | None:
    return summarize_values([values[s] for s in seeds])["mean"] if seeds else None


def _f(value, spec: str) -> str:
    return "n/a" if value is None or pd.isna(value) else format(value, spec)


def verdict(row: dict) -> str:
    if row["passes"] is None or row["diff"] is None:
        return "-"
    p = row.get("p_holm", row["p"])
    return "met" if row["passes"](row["diff"], p) else "not met"


def tests_table(rows: list[dict], adjusted: bool) -> list[str]:
    head = "| test | metric | n | A | B | A - B [95% CI] | t-test p" + (" (Holm)" if adjusted else "") + \
        " | Wilcoxon p | expected | verdict |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        p = _f(r["p"], ".3g") + (f" ({_f(r['p_holm'], '.3g')})" if adjusted else "")
        lines.append(f"| {r['test']} | {r['metric']} | {r['n']} | {_f(r['mean_a'], '.4f')} | "
                     f"{_f(r['mean_b'], '.4f')} | {_f(r['diff'], '+.4f')} [{_f(r['ci_low'], '+.4f')}, "
                     f"{_f(r['ci_high'], '+.4f')}] | {p} | {_f(r['p_wilcoxon'], '.3g')} | {r['expect']} | "
                     f"{verdict(r)} |")
    return lines


ARMS = [("side", IR), ("side", RGB), ("side", BCE), ("side", SELF), ("task", IR), ("task", RGB),
        ("untrained", IR)]


def arms_table(runs: dict) -> list[str]:
    lines = ["| arm | run | n | teacher F1 macro | student F1 macro | student recall, RGB-hidden fires |",
             "|---|---|---|---|---|---|"]
    for arm_name, run in ARMS:
        cells = []
        for model, metric in (("teacher", F1), ("student", F1), ("student", HIDDEN_RECALL)):
            s = summarize_values(list(seed_values(runs, arm_name, run, metric, model).values()))
            cells.append("n/a" if s["mean"] is None else
                         f"{s['mean']:.4f} [{_f(s['ci95_low'], '.4f')}, {_f(s['ci95_high'], '.4f')}]")
        n = len(seed_values(runs, arm_name, run, F1))
        teacher = "-" if run in (BCE, SELF) else cells[0]
        lines.append(f"| {arm_name} | {run} | {n} | {teacher} | {cells[1]} | {cells[2]} |")
    return lines


# the headline tests on seeds 1-6 and on the rest: what another set of seeds does to a verdict
DEMO_TESTS = [PRIMARY, SECONDARY[1], SECONDARY[2], SECONDARY[5]]


def replication_table(runs: dict, args) -> list[str]:
    halves = {"1-6": set(range(1, 7)),
              f"7-{args.replicates}": set(range(7, args.replicates + 1))}
    lines = ["| test | metric | seeds | A - B [95% CI] | t-test p |", "|---|---|---|---|---|"]
    for test in DEMO_TESTS:
        for label, seeds in halves.items():
            r = test_row(runs, test, seeds)
            lines.append(f"| {test.name} | {test.metric} | {label} (n = {r['n']}) | {_f(r['diff'], '+.4f')} "
                         f"[{_f(r['ci_low'], '+.4f')}, {_f(r['ci_high'], '+.4f')}] | {_f(r['p'], '.3g')} |")
    return lines


def write_results(root: Path, args, times: dict[str, float]) -> str:
    runs = load_runs(root)
    primary = test_row(runs, PRIMARY)
    secondary = [test_row(runs, t) for t in SECONDARY]
    for row, p in zip(secondary, holm([r["p"] for r in secondary]), strict=True):
        row["p_holm"] = p
    text = "\n".join([
        f"kd_effect: {args.img_size} px, rgb_cue {args.rgb_cue}, {args.n} labelled pairs split "
        f"{'/'.join(args.split_ratios)} per replicate (resampled), {args.n_labelled} of the train rows "
        f"labelled, the rest + {args.unlabeled} unlabelled pairs as the pool; teachers resnet18 "
        f"({args.steps_teacher} steps, patience 30), students {args.epochs_student} epochs; "
        "paired by seed, 95% t-interval of the mean difference, two-sided tests.", "",
        "### Primary comparison (named before the run, not adjusted)", "", *tests_table([primary], False), "",
        f"### Secondary comparisons (Holm over these {len(secondary)} tests)", "",
        *tests_table(secondary, True), "",
        "### Arms (mean [95% CI] over replicates)", "", *arms_table(runs), "",
        "### Replication: seeds 1-6 against the others", "", *replication_table(runs, args), "",
        "wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()), ""])
    (root / "study.md").write_text(text)
    return text


def main() -> None:
    args = parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kd_effect-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FIREKD_CACHE_DIR", str(root / "cache"))
    print(f"primary comparison: {PRIMARY.name}: {PRIMARY.a} vs {PRIMARY.b} on {PRIMARY.metric}; "
          f"expected {PRIMARY.expect}\nHolm family: {', '.join(t.name for t in SECONDARY)}", flush=True)
    print(f"outputs in {root}", flush=True)
    data = root / "data"
    if not (data / "data.csv").exists():
        write_synthetic(SynthConfig(n=args.n, size=args.img_size, seed=0, unlabeled=args.unlabeled,
                                    rgb_cue=args.rgb_cue), data, workers=2)
    t0 = time.perf_counter()
    side = pretrained(root, args, "side", "orange_object", "haze")
    task = pretrained(root, args, "task", "fire", "smoke")
    times = {"pretraining": time.perf_counter() - t0}
    few = [str(s) for s in range(1, args.others + 1)]
    every = [str(s) for s in range(1, args.replicates + 1)]
    teacher = ("--steps_teacher", str(args.steps_teacher))
    side_arm = ("--teacher_weights", str(side), "--teacher_modalities", "rgb+ir", "rgb",
                "--variants", "kl_bce", "bce", "self_kd", *teacher)
    # the primary comparison's arm first, then the others: an interrupted study has the primary
    # comparison, and a rerun completes the rest
    stages = [("side", every, side_arm),
              ("task", few, ("--teacher_weights", str(task), "--teacher_modalities", "rgb+ir", "rgb",
                             "--variants", "kl_bce", *teacher)),
              ("untrained", few, ("--epochs_teacher", "0", "--variants", "kl_bce"))]
    for name, seeds, extra in stages:
        times[name] = times.get(name, 0.0) + arm(root, data, args, name, seeds, *extra)
        print(write_results(root, args, times), flush=True)


if __name__ == "__main__":
    main()
