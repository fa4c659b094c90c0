"""`firekd compare`: the results table, significance tests across seeds and McNemar tests on
per-sample predictions, from an output tree. Tolerant of runs without a teacher (`bce`), of
models that only some runs have (compressed students) and of metrics that may be absent."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from firekd import LABELS
from firekd.errors import FirekdError
from firekd.io import save_figure, write_csv
from firekd.kd.variants import CONTROL, SELF_KD, uses_teacher
from firekd.metrics.slices import SLICE_METRICS, natural_order, parse_slice_key, slice_key
from firekd.metrics.stats import holm, mcnemar_exact, paired_tests
from firekd.reporting import plots
from firekd.reporting.tables import F1_METRICS, model_order, summary_frame, variant_rank
from firekd.rundir import FINAL_EVALUATION, RunDir


@dataclass
class Run:
    name: str
    teacher: str
    variant: str
    folder: Path  # output/metrics/{name}
    results: dict  # aggregated_results.json
    modality: str | None = None  # the teacher's input (rgb+ir or rgb) as config.json records it

    def seed_values(self, model: str, metric: str) -> dict[int, float | None]:
        summary = self.results.get(model, {}).get(metric)
        if not summary:
            return {}
        return dict(zip(self.results["seeds"], summary["values"], strict=True))


@dataclass
class Comparison:
    runs: list[Run]
    summary: pd.DataFrame  # one row per (run, model): n, mean/std/CI per metric, efficiency
    tests: pd.DataFrame  # paired tests between variants, per teacher, model and metric (slices too)
    mcnemar: pd.DataFrame  # teacher vs each other model, per run, seed and label
    slices: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (run, model, slice): metrics


def find_runs(output: str | Path, teacher: str | None = None) -> list[Run]:
    """Every run folder under ``output/metrics`` with results; one clear error when there are none."""
    output = Path(output)
    if not output.is_dir():
        raise FirekdError(f"{output}: output folder not found")
    folders = sorted(p.parent.parent for p in (output / "metrics").glob(f"*/seed_*/{FINAL_EVALUATION}"))
    runs = [_load_run(folder) for folder in dict.fromkeys(folders)]
    if not runs:
        raise FirekdError(f"{output}: no finished runs (no metrics/*/seed_*/final_evaluation.json); "
                          "is this the --output of firekd train/ablation?")
    if teacher is None:
        return runs
    chosen = [r for r in runs if r.teacher in (teacher, _canonical(teacher))]
    if not chosen:
        found = ", ".join(sorted({r.teacher for r in runs}))
        raise FirekdError(f"--teacher {teacher}: no runs for this teacher in {output}/metrics "
                          f"(teachers found: {found})")
    return chosen


def _canonical(teacher: str) -> str:
    """The registered name of a teacher alias (resnet-152 -> resnet152); unknown names unchanged."""
    from firekd.models import resolve_teacher_name

    try:
        return resolve_teacher_name(teacher)
    except FirekdError:
        return teacher


def _load_run(folder: Path) -> Run:
    run = RunDir.open(folder)  # aggregated from its seeds: aggregated_results.json may be stale
    modality = run.config().get("flags", {}).get("teacher_modalities")
    return Run(run.name, run.teacher, run.variant, folder, run.aggregate(),
               modality if isinstance(modality, str) else None)


def compare(output: str | Path, teacher: str | None = None, metrics=F1_METRICS) -> Comparison:
    runs = sorted(find_runs(output, teacher), key=lambda r: (r.teacher, variant_rank(r.variant)))
    summary = summary_frame({r.name: r.results for r in runs}, metrics)
    if summary.empty:
        raise FirekdError(f"{output}: the runs' final_evaluation.json files hold no model results")
    summary["teacher"] = summary["run"].map({r.name: r.teacher for r in runs})
    summary["variant"] = summary["run"].map({r.name: r.variant for r in runs})
    sliced = slice_metric_names(runs)
    tests = seed_tests(runs, (*metrics, *sliced))
    ir = ir_tests(runs, (*metrics, *sliced))
    tests = pd.concat([tests, ir], ignore_index=True) if not ir.empty else tests
    return Comparison(runs, summary, tests, mcnemar_tests(runs), slice_frame(runs, sliced))


IR_KIND = "what IR adds"


def ir_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(KD from the RGB+IR teacher, KD from the RGB-only teacher) of one architecture and variant:
    the runs of a study with --teacher_modalities rgb+ir rgb."""
    from firekd.models import teacher_arch

    by_key: dict[tuple[str, str], dict[str, Run]] = {}
    for run in runs:
        if uses_teacher(run.variant) and run.modality in ("rgb+ir", "rgb"):
            by_key.setdefault((teacher_arch(run.teacher), run.variant), {})[run.modality] = run
    return [(pair["rgb+ir"], pair["rgb"]) for pair in by_key.values() if len(pair) == 2]


def ir_tests(runs: list[Run], metrics=F1_METRICS) -> pd.DataFrame:
    """Students distilled from the RGB+IR teacher against those from the RGB-only teacher, paired by
    seed, per variant, model and metric (slices included); Holm over the variants of one
    (architecture, model, metric)."""
    from firekd.models import teacher_arch

    rows = []
    for a, b in ir_pairs(runs):
        models = [m for m in model_order(a.results) if m != "teacher" and isinstance(b.results.get(m), dict)]
        for model, metric in itertools.product(models, metrics):
            row = _test_row(a, b, model, metric)
            row.update(teacher=teacher_arch(a.teacher), a=f"{a.variant} from RGB+IR",
                       b=f"{b.variant} from RGB", kind=IR_KIND, variant=a.variant)
            rows.append(row)
    return _with_holm(pd.DataFrame(rows))


def slice_metric_names(runs: list[Run]) -> list[str]:
    """The per-slice recall/precision/F1 keys (``--slice_col``) any run's models have, in order."""
    names = {k for r in runs for model in r.results.values() if isinstance(model, dict) for k in model
             if (parsed := parse_slice_key(k)) and parsed[0].split("_")[0] in SLICE_METRICS}
    return sorted(names, key=_slice_order)


def _slice_order(key: str):
    metric, column, value = parse_slice_key(key)
    name, label = metric.split("_", 1)
    rank = LABELS.index(label) if label in LABELS else len(LABELS)
    return column, natural_order(value), rank, SLICE_METRICS.index(name)


def slice_frame(runs: list[Run], names: list[str]) -> pd.DataFrame:
    """One row per (run, model, slice column, value): mean and 95% CI over seeds of recall,
    precision and F1 per label, and the slice's mean sample count."""
    rows = []
    for run in runs:
        for model in model_order([k for k, v in run.results.items() if isinstance(v, dict)]):
            agg = run.results[model]
            by_slice: dict[tuple[str, str], dict] = {}
            for key in names:
                if key not in agg:
                    continue
                metric, column, value = parse_slice_key(key)
                row = by_slice.setdefault((column, value), {
                    "run": run.name, "teacher": run.teacher, "variant": run.variant, "model": model,
                    "column": column, "value": value,
                    "samples": (agg.get(slice_key("n", column, value)) or {}).get("mean")})
                summary = agg[key]
                row[f"{metric}_mean"] = summary.get("mean")
                row[f"{metric}_ci_low"] = summary.get("ci95_low")
                row[f"{metric}_ci_high"] = summary.get("ci95_high")
                row["n"] = max(row.get("n", 0), summary.get("n", 0))
            rows += by_slice.values()
    return pd.DataFrame(rows)


def seed_tests(runs: list[Run], metrics=F1_METRICS) -> pd.DataFrame:
    """Paired (by seed) t-test and Wilcoxon for every pair of variants of a teacher, for every
    model both runs have except the (shared) teacher; each KD variant (and `self_kd`) against the
    `bce` control first, then each KD variant against `self_kd`. Holm-adjusted p-values within each
    (teacher, model, metric) family: with the control and k KD variants, k tests against the
    control plus k(k-1)/2 between variants (6 for 3); with `self_kd` too, k + 1 against the control,
    k against self_kd and k(k-1)/2 between variants (10 for 3)."""
    rows = []
    for teacher in dict.fromkeys(r.teacher for r in runs):
        mine = sorted((r for r in runs if r.teacher == teacher), key=lambda r: variant_rank(r.variant))
        for a, b in _pairs(mine):
            models = [m for m in model_order(a.results)
                      if m != "teacher" and isinstance(b.results.get(m), dict)]
            for model, metric in itertools.product(models, metrics):
                rows.append(_test_row(a, b, model, metric))
    return _with_holm(pd.DataFrame(rows))


def _with_holm(frame: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjusted p-values within each (teacher, model, metric) family of ``frame``'s tests."""
    if frame.empty:
        return frame
    for column in ("p_ttest", "p_wilcoxon"):
        frame[column] = frame[column].astype(float)
        adjusted = pd.Series(np.nan, index=frame.index)
        for idx in frame.groupby(["teacher", "model", "metric"]).groups.values():
            family = holm([None if pd.isna(v) else float(v) for v in frame.loc[idx, column]])
            adjusted[idx] = [np.nan if v is None else v for v in family]
        frame[f"{column}_holm"] = adjusted
    return frame


def _pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    control = [r for r in runs if r.variant == CONTROL]
    self_kd = [r for r in runs if r.variant == SELF_KD]
    kd = [r for r in runs if uses_teacher(r.variant)]
    return ([(r, c) for r in [*kd, *self_kd] for c in control] + [(r, s) for r in kd for s in self_kd]
            + list(itertools.combinations(kd, 2)))


def _test_row(a: Run, b: Run, model: str, metric: str) -> dict:
    va, vb = a.seed_values(model, metric), b.seed_values(model, metric)
    seeds = sorted(set(va) & set(vb))
    res = paired_tests([va[s] for s in seeds], [vb[s] for s in seeds])
    return {"teacher": a.teacher, "model": model, "metric": metric, "a": a.variant, "b": b.variant,
            "kind": {CONTROL: "vs control", SELF_KD: "vs self_kd"}.get(b.variant, "between variants"),
            "seeds": " ".join(map(str, seeds)),
            "mean_a": _mean(va, seeds), "mean_b": _mean(vb, seeds), **res}


def _mean(values: dict, seeds: list[int]) -> float:
    finite = [values[s] for s in seeds if values[s] is not None]
    return float(np.mean(finite)) if finite else float("nan")


def mcnemar_tests(runs: list[Run]) -> pd.DataFrame:
    """Teacher vs every other model of a run, per seed and label, on the per-sample decisions."""
    rows = []
    for run in runs:
        folder = RunDir.open(run.folder)
        for seed in folder.matching_seeds()[0]:
            files = folder.predictions(seed)
            if "teacher" not in files:
                continue
            teacher = pd.read_csv(files["teacher"])
            for model in model_order(files):
                if model != "teacher":
                    rows.extend(_mcnemar_rows(run, seed, teacher, pd.read_csv(files[model]), model))
    return pd.DataFrame(rows)


def _mcnemar_rows(run: Run, seed: int, teacher: pd.DataFrame, other: pd.DataFrame, model: str) -> list[dict]:
    both = teacher.merge(other, on="row", suffixes=("_t", "_o"))  # same test samples, by CSV line
    rows = []
    for label in LABELS:
        truth = both[f"{label}_true_t"].to_numpy()
        res = mcnemar_exact(both[f"{label}_pred_t"].to_numpy() == truth,
                            both[f"{label}_pred_o"].to_numpy() == truth)
        rows.append({"run": run.name, "teacher": run.teacher, "variant": run.variant, "seed": seed,
                     "model": model, "label": label, **res})
    return rows


def mcnemar_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (run, model, label): discordant counts and p per seed."""
    if frame.empty:
        return frame
    rows = []
    for (run, model, label), g in frame.groupby(["run", "model", "label"], sort=False):
        rows.append({"run": run, "model": f"teacher vs {model}", "label": label, "seeds": len(g),
                     "b / c per seed": ", ".join(f"{b}/{c}" for b, c in zip(g["b"], g["c"], strict=True)),
                     "p per seed": ", ".join(f"{p:.3g}" for p in g["p_mcnemar"]),
                     "p < 0.05": f"{int((g['p_mcnemar'] < 0.05).sum())} of {len(g)}"})
    return pd.DataFrame(rows)


def tests_display(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Readable tests table and the distinct small-n notes (printed once, not on every row)."""
    if frame.empty:
        return frame, []
    out = pd.DataFrame({
        "teacher": frame["teacher"], "model": frame["model"],
        "comparison": frame["a"] + " vs " + frame["b"], "metric": frame["metric"], "n": frame["n"],
        "diff a-b [95% CI]": [_diff(r) for r in frame.itertuples()],
        "t-test p (Holm)": [_p(p, h) for p, h in zip(frame["p_ttest"], frame["p_ttest_holm"], strict=True)],
        "Wilcoxon p (Holm)": [_p(p, h) for p, h in zip(frame["p_wilcoxon"], frame["p_wilcoxon_holm"],
                                                         strict=True)],
    })
    notes = [n for n in dict.fromkeys(frame["note"]) if n]
    return out, notes


def _diff(r) -> str:
    if pd.isna(r.mean_diff):
        return "n/a"
    if pd.isna(r.diff_ci_low):
        return f"{r.mean_diff:+.4f}"
    return f"{r.mean_diff:+.4f} [{r.diff_ci_low:+.4f}, {r.diff_ci_high:+.4f}]"


def _p(p, adjusted) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g} ({adjusted:.3g})"


def write_comparison(cmp: Comparison, folder: Path) -> dict[str, Path]:
    """comparison.csv, tests.csv, mcnemar.csv and f1_ci_bars.png in ``folder``."""
    paths = {"table": folder / "comparison.csv", "tests": folder / "tests.csv",
             "mcnemar": folder / "mcnemar.csv", "bars": folder / "f1_ci_bars.png"}
    if not cmp.slices.empty:
        paths["slices"] = folder / "slices.csv"
        write_csv(paths["slices"], cmp.slices)
    write_csv(paths["table"], cmp.summary)
    write_csv(paths["tests"], cmp.tests)
    write_csv(paths["mcnemar"], cmp.mcnemar)
    teachers = ", ".join(dict.fromkeys(r.teacher for r in cmp.runs))
    save_figure(paths["bars"], plots.ci_bars(cmp.summary, list(F1_METRICS), f"F1 on test ({teachers})"))
    return paths
