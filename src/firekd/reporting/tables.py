"""Result tables from aggregated results: one row per (run, model), tolerant of models and
metrics that a run may or may not have (compressed students, efficiency numbers)."""

from __future__ import annotations

import math

import pandas as pd

from firekd.kd.variants import BASELINES, CONTROL, VARIANTS, split_run_name, uses_teacher

F1_METRICS = ("f1_macro", "f1_fire", "f1_smoke")
# (key, column title, format): shown only when some model has them
EFFICIENCY = (("params", "params (M)", lambda v: f"{v / 1e6:.2f}"),
              ("gflops", "GFLOPs", lambda v: f"{v:.3f}"),
              ("size_mb", "size (MB)", lambda v: f"{v:.2f}"),
              ("latency_ms_b1", "latency b1 (ms)", lambda v: f"{v:.2f}"),
              ("latency_ms_b32", "latency b32 (ms)", lambda v: f"{v:.1f}"))
MODEL_ORDER = ("teacher", "student", "student_quantized", "student_pruned")


def model_order(models) -> list[str]:
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(m for m in models if m not in MODEL_ORDER)


def variant_rank(variant: str) -> int:
    """The spec's order, the control last."""
    order = [v for v in VARIANTS if v != "bce"] + ["bce"]
    return order.index(variant) if variant in order else len(order)


def summary_frame(results: dict[str, dict], metrics=F1_METRICS) -> pd.DataFrame:
    """{run name: aggregated results} -> one row per (run, model) with n and, per metric,
    ``_mean, _std, _ci_low, _ci_high`` (NaN where undefined) and the efficiency means."""
    rows = []
    for run, agg in results.items():
        teacher, variant = split_run_name(run)
        for model in model_order([k for k, v in agg.items() if isinstance(v, dict)]):
            rows.append({"run": run, "teacher": teacher, "variant": variant, "model": model,
                         **_model_cells(agg[model], metrics)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_rank"] = frame["variant"].map(variant_rank)
    frame = frame.sort_values(["teacher", "_rank"], kind="stable").drop(columns="_rank")
    return frame.reset_index(drop=True)


def best_against_control(summary: pd.DataFrame, tests: pd.DataFrame, *, model: str = "student",
                         metric: str = "f1_macro") -> pd.DataFrame:
    """Per teacher, the KD variant with the highest mean ``metric`` for ``model`` against the best
    no-teacher baseline (``baseline``: the `bce` control or `self_kd`, the higher mean; its mean and
    n in ``control_mean``, ``control_n``): the paired difference with its 95% CI, the t-test p and
    its Holm-adjusted value (from `compare.seed_tests`' frame; NaN where there is no baseline or too
    few seeds). Choosing the best of several is covered by Holm: it adjusts over all of the
    teacher's comparisons."""
    rows = []
    mine = summary[summary["model"] == model] if not summary.empty else summary
    for teacher in dict.fromkeys(summary["teacher"]) if not summary.empty else []:
        runs = mine[mine["teacher"] == teacher]
        kd = runs[runs["variant"].map(uses_teacher) & runs[f"{metric}_mean"].notna()]
        control = _best_baseline(runs, metric)
        row = {"teacher": teacher, "variant": None, "mean": math.nan, "n": 0,
               "baseline": control["variant"].iloc[0] if len(control) else CONTROL,
               "control_mean": control[f"{metric}_mean"].iloc[0] if len(control) else math.nan,
               "control_n": int(control["n"].iloc[0]) if len(control) else 0, "pairs": 0,
               "mean_diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
               "p_ttest": math.nan, "p_ttest_holm": math.nan, "note": ""}
        if not kd.empty:
            best = kd.loc[kd[f"{metric}_mean"].idxmax()]  # first in the spec's order on a tie
            row.update(variant=best["variant"], mean=best[f"{metric}_mean"], n=int(best["n"]))
            row.update(_test_against_control(tests, teacher, best["variant"], model, metric, row["baseline"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _best_baseline(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The no-teacher baseline run (one row) with the highest mean, the control on a tie; a
    baseline without results only when no baseline has any."""
    order = {v: i for i, v in enumerate(BASELINES)}
    baselines = runs[runs["variant"].isin(BASELINES)].sort_values("variant", key=lambda s: s.map(order))
    finite = baselines[baselines[f"{metric}_mean"].notna()]
    if finite.empty:
        return baselines.head(1)
    return finite.loc[[finite[f"{metric}_mean"].idxmax()]]


def _test_against_control(tests: pd.DataFrame, teacher: str, variant: str, model: str,
                          metric: str, baseline: str = CONTROL) -> dict:
    if tests.empty:
        return {}
    hit = tests[(tests["teacher"] == teacher) & (tests["model"] == model) & (tests["metric"] == metric)
                & (tests["a"] == variant) & (tests["b"] == baseline)]
    if hit.empty:
        return {}
    test = hit.iloc[0]
    return {"pairs": int(test["n"]), "note": test["note"] if isinstance(test["note"], str) else "",
            **{k: _num(test[k]) for k in ("mean_diff", "diff_ci_low", "diff_ci_high", "p_ttest",
                                          "p_ttest_holm")}}


def _model_cells(model: dict, metrics) -> dict:
    cells = {"n": max((s.get("n", 0) for s in model.values()), default=0)}
    for metric in metrics:
        s = model.get(metric) or {}
        for key, src in (("mean", "mean"), ("std", "std"), ("ci_low", "ci95_low"), ("ci_high", "ci95_high")):
            cells[f"{metric}_{key}"] = _num(s.get(src))
    for key, _, _ in EFFICIENCY:
        if key in model:
            cells[key] = _num(model[key].get("mean"))
    if "compiled_int8" in model:  # int8 run eagerly is slower than fp32: say so wherever it is shown
        cells["uncompiled_int8"] = _num(model["compiled_int8"].get("mean")) < 1
    return cells


def model_label(model: str, uncompiled) -> str:
    """The model's name as tables and figures show it: uncompiled int8 marked as such."""
    return f"{model} (uncompiled int8)" if uncompiled is not None and uncompiled == True else model  # noqa: E712


def model_labels(frame: pd.DataFrame) -> list[str]:
    flags = frame["uncompiled_int8"] if "uncompiled_int8" in frame else [None] * len(frame)
    return [model_label(m, u) for m, u in zip(frame["model"], flags, strict=True)]


def _num(value) -> float:
    return float(value) if value is not None else math.nan


def shared_teacher_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with one teacher row per teacher: every variant of a seed distils from the same
    teacher, so its rows repeat. The kept row's variant reads "(shared)"; teacher rows that differ
    (other seeds, a retrained teacher) all stay, each naming the variants it belongs to."""
    teachers = frame[frame["model"] == "teacher"] if not frame.empty else frame
    if teachers.empty:
        return frame
    values = [c for c in frame.columns if c not in ("run", "variant")]
    key = pd.util.hash_pandas_object(teachers[values], index=False)  # equal rows (NaN too): equal keys
    label = {}
    for _, same_teacher in key.groupby(teachers["teacher"], sort=False):
        distinct = same_teacher.unique()
        for k in distinct:
            names = teachers.loc[same_teacher.index[same_teacher == k], "variant"].tolist()
            label[k] = "(shared)" if len(distinct) == 1 and len(names) > 1 else ", ".join(names)
    first = key.index[~key.duplicated()]
    kept = frame.drop(index=key.index[key.duplicated()])
    kept.loc[first, "variant"] = [label[k] for k in key[first]]
    return kept.reset_index(drop=True)


def display_table(frame: pd.DataFrame, metrics=F1_METRICS, *, ci: bool = True,
                  one_teacher_row: bool = True) -> pd.DataFrame:
    """Human-readable cells: 'mean ± std' and '[low, high]' per metric, efficiency when present;
    teacher rows once per teacher (`shared_teacher_rows`) unless ``one_teacher_row`` is False."""
    if one_teacher_row:
        frame = shared_teacher_rows(frame)
    out = pd.DataFrame({"teacher": frame["teacher"], "variant": frame["variant"],
                        "model": model_labels(frame), "n": frame["n"].astype(int)})
    for metric in metrics:
        name = metric.replace("f1_", "F1 ")
        out[f"{name} (mean ± std)"] = [
            _pm(m, s) for m, s in zip(frame[f"{metric}_mean"], frame[f"{metric}_std"], strict=True)]
        if ci:
            out[f"{name} 95% CI"] = [
                _interval(lo, hi) for lo, hi in zip(frame[f"{metric}_ci_low"], frame[f"{metric}_ci_high"],
                                                    strict=True)]
    for key, title, fmt in EFFICIENCY:
        if key in frame and frame[key].notna().any():
            out[title] = [fmt(v) if math.isfinite(v) else "" for v in frame[key]]
    return out


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def _interval(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]" if math.isfinite(low) and math.isfinite(high) else "n < 2"


def markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True) if not frame.empty else "(no rows)"
