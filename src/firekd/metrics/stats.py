"""Across-seed statistics: mean, sample std (ddof=1), 95% CI from the t distribution."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def summarize_values(values: list[float | None], *, confidence: float = 0.95) -> dict:
    """``{mean, std, ci95_low, ci95_high, n, values}``; undefined entries (None/NaN) are left out
    of the statistics but kept in ``values``. std and CI need n >= 2 (else None)."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(finite)
    out = {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": n,
           "values": [None if v is None or not math.isfinite(v) else float(v) for v in values]}
    if n == 0:
        return out
    out["mean"] = float(finite.mean())
    if n >= 2:
        std = float(finite.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
        out.update(std=std, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


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
