"""Two-label (fire, smoke) classification metrics: ranking metrics (AUROC, AP, the PR curve) by
scikit-learn, the thresholded ones from each label's confusion counts (every validation epoch of
every model computes them: sklearn's input checks cost ~13 ms a call, the counts ~0.2 ms; they
equal sklearn's with ``zero_division=0``, tested against it).

Convention: ``y_true`` (N, 2) of 0/1, ``y_score`` (N, 2) probabilities; metrics at per-label
thresholds chosen on validation (max F1) carry plain names, the same at 0.5 carry ``@0.5``.
Every metric is a flat scalar (confusion matrices as ``tn_/fp_/fn_/tp_<label>`` counts) so that
seeds aggregate without special cases.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

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
    y_score = np.asarray(y_score)
    thresholds = np.full(y_true.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)
    y_pred = (y_score >= thresholds).astype(int)
    per_label: dict[str, float] = {}
    for k, name in enumerate(LABELS):
        t, p, s = y_true[:, k], y_pred[:, k], y_score[:, k]
        tn, fp, fn, tp = _confusion(t, p)
        per_label[f"f1_{name}"] = _ratio(2 * tp, 2 * tp + fp + fn)
        per_label[f"precision_{name}"] = _ratio(tp, tp + fp)
        per_label[f"recall_{name}"] = _ratio(tp, tp + fn)
        per_label[f"accuracy_{name}"] = _ratio(tp + tn, len(t))
        per_label[f"auroc_{name}"] = _safe(roc_auc_score, t, s)
        per_label[f"ap_{name}"] = _safe(average_precision_score, t, s) if t.any() else float("nan")
        per_label.update(confusion_counts(t, p, name))
    out = {"f1_macro": np.mean([per_label[f"f1_{name}"] for name in LABELS]),
           "accuracy": (y_pred == y_true).all(axis=1).mean(),  # both labels right
           **per_label}
    return {k: float(v) for k, v in out.items()}


def _ratio(numerator: int, denominator: int) -> float:
    """sklearn's ``zero_division=0``: an empty denominator gives 0."""
    return numerator / denominator if denominator else 0.0


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) of one label's 0/1 truths and decisions."""
    cells = 2 * np.asarray(y_true, dtype=int) + np.asarray(y_pred, dtype=int)  # 0 tn, 1 fp, 2 fn, 3 tp
    tn, fp, fn, tp = np.bincount(cells, minlength=4)
    return int(tn), int(fp), int(fn), int(tp)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, name: str) -> dict[str, int]:
    """One label's confusion matrix as ``{tn_name, fp_name, fn_name, tp_name}`` (0/1 inputs)."""
    keys = (f"{cell}_{name}" for cell in ("tn", "fp", "fn", "tp"))
    return dict(zip(keys, _confusion(y_true, y_pred), strict=True))


def bootstrap_f1_macro(y_true: np.ndarray, y_pred: np.ndarray, *, n_resamples: int = 1000,
                       seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of F1 macro over test samples, decisions held fixed.

    Vectorised: each resample's per-label TP/FP/FN come from index counts, F1 as sklearn's
    ``f1_score(average="macro", zero_division=0)``; chunked so memory stays small.
    """
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    kinds = np.stack([y_true & y_pred, ~y_true & y_pred, y_true & ~y_pred]).astype(np.int64)  # (3,N,L)
    scores = []
    for start in range(0, n_resamples, 200):
        idx = rng.integers(0, n, size=(min(200, n_resamples - start), n))
        weights = np.stack([np.bincount(row, minlength=n) for row in idx])  # (B, N)
        tp, fp, fn = (weights @ kinds[k] for k in range(3))  # each (B, L)
        denom = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
        scores.append(f1.mean(axis=1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(scores), [alpha, 1 - alpha])
    return float(low), float(high)


def evaluation_scores(y_true: np.ndarray, y_score: np.ndarray, *,
                      thresholds: np.ndarray) -> dict[str, float]:
    """Metrics at the given (validation-tuned) thresholds, the same at 0.5, the thresholds, and a
    bootstrap 95% CI of F1 macro at the tuned thresholds (``f1_macro_boot_low/high``)."""
    tuned = classification_scores(y_true, y_score, thresholds=thresholds)
    at_half = classification_scores(y_true, y_score)
    out = dict(tuned)
    out.update({f"{k}@0.5": v for k, v in at_half.items() if not k.startswith(("auroc", "ap_"))})
    out.update({f"threshold_{name}": float(t) for name, t in zip(LABELS, thresholds, strict=True)})
    y_pred = np.asarray(y_score) >= np.asarray(thresholds)
    out["f1_macro_boot_low"], out["f1_macro_boot_high"] = bootstrap_f1_macro(y_true, y_pred)
    return out
