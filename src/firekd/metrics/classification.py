"""Two-label (fire, smoke) classification metrics, computed with scikit-learn.

Convention: ``y_true`` (N, 2) of 0/1, ``y_score`` (N, 2) probabilities; metrics at per-label
thresholds chosen on validation (max F1) carry plain names, the same at 0.5 carry ``@0.5``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from firekd import LABELS


def best_threshold_score(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The threshold on one label's scores that maximises F1 (0.5 when there are no positives)."""
    y_true = np.asarray(y_true)
    if y_true.sum() == 0 or y_true.sum() == len(y_true):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    return float(thresholds[int(np.argmax(f1))])


def best_thresholds(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-label max-F1 thresholds (L,)."""
    return np.array([best_threshold_score(y_true[:, k], y_score[:, k]) for k in range(y_true.shape[1])])


def _safe(fn, *args, **kw) -> float:
    """A metric that is undefined for this input (one class only) is NaN, not an exception."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            return float(fn(*args, **kw))
        except ValueError:
            return float("nan")


def classification_scores(y_true: np.ndarray, y_score: np.ndarray, *,
                          thresholds: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics dict at ``thresholds`` (default 0.5 for every label)."""
    y_true = np.asarray(y_true).astype(int)
    thresholds = np.full(y_true.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)
    y_pred = (np.asarray(y_score) >= thresholds).astype(int)
    out = {
        "f1_macro": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "accuracy": accuracy_score(y_true, y_pred),  # exact match of both labels
    }
    for k, name in enumerate(LABELS):
        t, p, s = y_true[:, k], y_pred[:, k], y_score[:, k]
        out[f"f1_{name}"] = f1_score(t, p, zero_division=0)
        out[f"precision_{name}"] = precision_score(t, p, zero_division=0)
        out[f"recall_{name}"] = recall_score(t, p, zero_division=0)
        out[f"accuracy_{name}"] = accuracy_score(t, p)
        out[f"auroc_{name}"] = _safe(roc_auc_score, t, s)
        out[f"ap_{name}"] = _safe(average_precision_score, t, s) if t.any() else float("nan")
    return {k: float(v) for k, v in out.items()}


def evaluation_scores(y_true: np.ndarray, y_score: np.ndarray, *,
                      thresholds: np.ndarray) -> dict[str, float]:
    """Metrics at the given (validation-tuned) thresholds, the same at 0.5, and the thresholds."""
    tuned = classification_scores(y_true, y_score, thresholds=thresholds)
    at_half = classification_scores(y_true, y_score)
    out = dict(tuned)
    out.update({f"{k}@0.5": v for k, v in at_half.items() if not k.startswith(("auroc", "ap_"))})
    out.update({f"threshold_{name}": float(t) for name, t in zip(LABELS, thresholds, strict=True)})
    return out
