"""Per-slice metrics: recall, precision and F1 per label on each value of a categorical column
(e.g. ``hidden_in_rgb``: the fires IR exists for), computed with scikit-learn.

Keys are flat scalars, ``{metric}_{label}[{column}={value}]`` plus ``n[{column}={value}]`` (samples)
and ``positives_{label}[...]``, so seeds aggregate and runs compare without special cases. A metric
a slice cannot define (recall without positives, precision without predicted positives) is NaN,
never 0: an undefined value is left out of the statistics rather than counted as a failure.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score

from firekd import LABELS

SLICE_METRICS = ("recall", "precision", "f1")
_KEY = re.compile(r"^(?P<metric>[a-z0-9_]+)\[(?P<column>[^=\]]+)=(?P<value>[^\]]*)\]$")


def slice_key(metric: str, column: str, value: str) -> str:
    return f"{metric}[{column}={value}]"


def parse_slice_key(key: str) -> tuple[str, str, str] | None:
    """(metric, column, value) of a slice key; None for any other metric name."""
    m = _KEY.match(key)
    return (m["metric"], m["column"], m["value"]) if m else None


def slice_scores(y_true: np.ndarray, y_pred: np.ndarray, groups, column: str) -> dict[str, float]:
    """Recall, precision and F1 per label on every value of ``groups`` (N,), the slice column
    ``column``; ``y_true``, ``y_pred`` (N, 2) of 0/1 decisions (at the validation thresholds)."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    groups = np.asarray(groups).astype(str)
    out: dict[str, float] = {}
    for value in sorted(np.unique(groups), key=natural_order):
        rows = groups == value
        out[slice_key("n", column, value)] = int(rows.sum())
        for k, label in enumerate(LABELS):
            t, p = y_true[rows, k], y_pred[rows, k]
            out[slice_key(f"positives_{label}", column, value)] = int(t.sum())
            for name, fn in (("recall", recall_score), ("precision", precision_score), ("f1", f1_score)):
                out[slice_key(f"{name}_{label}", column, value)] = float(fn(t, p, zero_division=np.nan))
    return out


def natural_order(value: str):
    """Numbers in numeric order (2 before 10), then words."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)
