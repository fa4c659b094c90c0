"""Metrics against reference implementations on seeded inputs; rules 8 (thresholds) and 9 (stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from firekd.metrics.classification import (
    best_threshold_score,
    best_thresholds,
    classification_scores,
    evaluation_scores,
)
from firekd.metrics.stats import aggregate_runs, summarize_values


def _inputs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2))
    score = np.clip(0.35 * y + rng.random((n, 2)) * 0.65, 0, 1)
    return y, score


def _sklearn_scores(y, s, thr) -> dict[str, float]:
    """The reference: every metric of classification_scores, by scikit-learn."""
    pred = (s >= thr).astype(int)
    ref = {"f1_macro": f1_score(y, pred, average="macro", zero_division=0), "accuracy": accuracy_score(y, pred)}
    for k, name in enumerate(("fire", "smoke")):
        t, p = y[:, k], pred[:, k]
        ref |= {f"f1_{name}": f1_score(t, p, zero_division=0), f"precision_{name}": precision_score(t, p, zero_division=0),
                f"recall_{name}": recall_score(t, p, zero_division=0), f"accuracy_{name}": accuracy_score(t, p)}
        if 0 < t.sum() < len(t):
            ref |= {f"auroc_{name}": roc_auc_score(t, s[:, k]), f"ap_{name}": average_precision_score(t, s[:, k])}
        tn, fp, fn, tp = confusion_matrix(t, p, labels=[0, 1]).ravel()
        ref |= {f"tn_{name}": tn, f"fp_{name}": fp, f"fn_{name}": fn, f"tp_{name}": tp}
    return ref


@pytest.mark.parametrize("case", ["random", "no_positive_prediction", "no_positive_label", "all_right"])
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_sklearn_at_thresholds(case, seed):
    y, s = _inputs(n=50, seed=seed)
    thr = np.array([0.4, 0.6])
    if case == "no_positive_prediction":  # precision and F1 of a label are 0/0: sklearn's zero_division=0
        s[:, 1] = 0.1
    elif case == "no_positive_label":
        y[:, 0] = 0
    elif case == "all_right":
        s = np.where(y == 1, 0.9, 0.1)
    got = classification_scores(y, s, thresholds=thr)
    ref = _sklearn_scores(y, s, thr)
    assert {k: got[k] for k in ref} == pytest.approx(ref, rel=1e-12, abs=0)
    assert list(got)[:2] == ["f1_macro", "accuracy"]  # the order of the output files' columns


def test_best_threshold_is_the_max_f1_threshold_by_brute_force():
    y, s = _inputs(seed=3)
    for k in range(2):
        candidates = np.unique(s[:, k])
        f1s = [f1_score(y[:, k], (s[:, k] >= c).astype(int)) for c in candidates]
        best = best_threshold_score(y[:, k], s[:, k])
        assert f1_score(y[:, k], (s[:, k] >= best).astype(int)) == pytest.approx(max(f1s))


def test_thresholds_from_validation_are_applied_unchanged_to_test():
    y_val, s_val = _inputs(seed=1)
    y_test, s_test = _inputs(seed=2)
    thr = best_thresholds(y_val, s_val)
    out = evaluation_scores(y_test, s_test, thresholds=thr)
    assert out["threshold_fire"] == thr[0] and out["threshold_smoke"] == thr[1]
    assert out["f1_macro"] == pytest.approx(classification_scores(y_test, s_test, thresholds=thr)["f1_macro"])
    assert out["f1_macro@0.5"] == pytest.approx(classification_scores(y_test, s_test)["f1_macro"])


def test_undefined_metrics_are_nan_not_errors():
    y = np.zeros((10, 2), int)
    out = classification_scores(y, np.random.default_rng(0).random((10, 2)))
    assert np.isnan(out["auroc_fire"]) and np.isnan(out["ap_smoke"])
    assert best_threshold_score(y[:, 0], np.zeros(10)) == 0.5


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_summary_matches_numpy_and_scipy(n: int):
    values = list(np.random.default_rng(n).random(n))
    out = summarize_values(values)
    mean, std = np.mean(values), np.std(values, ddof=1)
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(values))
    assert out["mean"] == pytest.approx(mean) and out["std"] == pytest.approx(std)
    assert out["ci95_low"] == pytest.approx(low) and out["ci95_high"] == pytest.approx(high)
    assert out["n"] == n and out["values"] == pytest.approx(values)


def test_summary_of_one_value_has_no_spread_and_skips_undefined():
    one = summarize_values([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert all(math.isnan(one[k]) for k in ("std", "ci95_low", "ci95_high"))
    assert summarize_values([None])["std"] is None and summarize_values([None])["mean"] is None
    out = summarize_values([0.5, None, float("nan"), 0.7])
    assert out["n"] == 2 and out["mean"] == pytest.approx(0.6)
    assert out["values"] == [0.5, None, None, 0.7]


def test_aggregate_runs_by_model_and_metric():
    per_seed = {1: {"student": {"f1_macro": 0.6, "note": "x"}}, 2: {"student": {"f1_macro": 0.8}}}
    agg = aggregate_runs(per_seed)
    assert agg["seeds"] == [1, 2]
    assert agg["student"]["f1_macro"]["mean"] == pytest.approx(0.7)
    assert "note" not in agg["student"]
