"""Evaluation shared by every stage: per-label thresholds chosen on validation (max F1), applied
unchanged to test; metrics and per-sample predictions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from firekd import LABELS
from firekd.engine.loop import Predictions, predict
from firekd.engine.runtime import Runtime
from firekd.metrics.classification import best_thresholds, evaluation_scores


@dataclass
class Evaluation:
    metrics: dict[str, float]
    thresholds: np.ndarray  # (2,) chosen on validation
    test: Predictions


def evaluate_model(model: nn.Module, val_loader, test_loader, rt: Runtime,
                   thresholds: np.ndarray | None = None) -> Evaluation:
    """Per-label max-F1 thresholds on validation (unless given), applied unchanged to test."""
    if thresholds is None:
        val = predict(model, val_loader, rt)
        thresholds = best_thresholds(val.labels, val.probs)
    test = predict(model, test_loader, rt)
    return Evaluation(evaluation_scores(test.labels, test.probs, thresholds=thresholds), thresholds, test)


def predictions_table(pred: Predictions, rows: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """One line per test sample: CSV line number, true labels, probabilities, decisions."""
    table = pd.DataFrame({"row": np.asarray(rows)[pred.index]})
    for k, name in enumerate(LABELS):
        table[f"{name}_true"] = pred.labels[:, k].astype(int)
        table[f"{name}_prob"] = np.round(pred.probs[:, k], 6)
        table[f"{name}_pred"] = (pred.probs[:, k] >= thresholds[k]).astype(int)
    return table
