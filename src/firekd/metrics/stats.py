"""Across-seed statistics: mean, sample std (ddof=1), 95% CI from the t distribution."""

from __future__ import annotations

import json
import math

import numpy as np
from scipy import stats


def summarize_values(values: list[float | None], *, confidence: float = 0.95) -> dict:
    """``{mean, std, ci95_low, ci95_high, n, values}``; undefined entries (None/NaN) are left out
    of the statistics but kept in ``values``. No value: everything but n is None. One value: std and
    CI are NaN, a number that formats (the spec's snippet prints ``nan``) but never passes for a
    measured spread."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(finite)
    out = {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": n,
           "values": [None if v is None or not math.isfinite(v) else float(v) for v in values]}
    if n == 0:
        return out
    out.update(mean=float(finite.mean()), std=math.nan, ci95_low=math.nan, ci95_high=math.nan)
    if n >= 2:
        std = float(finite.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
        out.update(std=std, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


def aggregates_json(aggregated: dict) -> str:
    """aggregated_results.json's text: NaN written as ``NaN`` (one-seed std and CI), which Python's
    json reads back; every other undefined value is null."""
    return json.dumps(aggregated, indent=2, allow_nan=True) + "\n"


def aggregate_runs(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict:
    """{seed: {model: {metric: value}}} -> {model: {metric: summary}, "seeds": [...]}.

    Only numeric scalars are aggregated; a metric missing for a seed counts as undefined.
    """
    seeds = sorted(per_seed)
    out: dict = {"seeds": seeds}
    models = sorted({m for run in per_seed.values() for m in run})
    for model in models:
        metrics = sorted({k for run in per_seed.values() for k, v in run.get(model, {}).items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
        out[model] = {metric: summarize_values([per_seed[s].get(model, {}).get(metric)
                                                for s in seeds]) for metric in metrics}
    return out


def _finite_pairs(a: list[float | None], b: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    keep = [(x, y) for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return np.array([x for x, _ in keep], dtype=float), np.array([y for _, y in keep], dtype=float)


def paired_tests(a: list[float | None], b: list[float | None]) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` vs ``b`` (aligned by seed; pairs with
    an undefined value are dropped), the mean difference a - b with its 95% t-interval, and a
    plain-words note on what n allows. Two-sided; p is None where a test cannot be computed."""
    x, y = _finite_pairs(a, b)
    diff = np.round(x - y, 12)  # float noise (0.8-0.7 vs 0.7-0.6) is no difference
    n = len(diff)
    # n = 1: the difference's CI is None like the p-values (summarize_values gives NaN for the file)
    summary = {k: None if isinstance(v, float) and math.isnan(v) else v
               for k, v in summarize_values(list(diff)).items()}
    out = {"n": n, "mean_diff": summary["mean"], "diff_ci_low": summary["ci95_low"],
           "diff_ci_high": summary["ci95_high"], "t": None, "p_ttest": None, "w": None,
           "p_wilcoxon": None, "note": small_n_note(n)}
    if n >= 2 and np.ptp(diff) > 0:  # identical differences: t is undefined (zero variance)
        res = stats.ttest_1samp(diff, 0.0)  # = ttest_rel(x, y)
        out["t"], out["p_ttest"] = float(res.statistic), float(res.pvalue)
    if n >= 2 and np.any(diff != 0):
        res = stats.wilcoxon(diff)  # = wilcoxon(x, y); exact for small n without ties/zeros
        out["w"], out["p_wilcoxon"] = float(res.statistic), float(res.pvalue)
    elif n >= 2:
        out["note"] = _join(out["note"], "identical values in every pair: no difference to test")
    return out


def small_n_note(n: int) -> str:
    """What the paired tests can and cannot say with n pairs."""
    if n < 2:
        return f"n = {n}: no test is possible"
    notes = []
    if n < 6:
        notes.append(f"Wilcoxon cannot reach p < 0.05 with n = {n} (smallest p = {2 / 2 ** n:.3g})")
    if n < 5:
        notes.append(f"t-test with {n - 1} df: low power, normality of the differences untestable")
    return "; ".join(notes)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None entries stay None and are not counted)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mcnemar_exact(first_correct: np.ndarray, second_correct: np.ndarray) -> dict:
    """Exact McNemar test: a two-sided binomial test (p = 0.5) on the discordant pairs.

    ``b``: first right and second wrong, ``c``: first wrong and second right. The exact form is
    used because on a test set of a few hundred images b + c is often small, where the
    chi-square approximation is unreliable; p = 1 when there are no discordant pairs.
    """
    first, second = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    b, c = int((first & ~second).sum()), int((~first & second).sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"n": int(len(first)), "b": b, "c": c, "p_mcnemar": p}
