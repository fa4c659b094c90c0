"""Per-slice metrics of a seed's models (``--slice_col``), from their test predictions and the
CSV's slice columns: written into final_evaluation.json when a seed finishes, and added to seeds
that finished before the column was asked for (their predictions files hold all it needs)."""

from __future__ import annotations

import logging

import pandas as pd

from firekd import LABELS
from firekd.errors import DataError
from firekd.io import Writer
from firekd.metrics.slices import parse_slice_key, slice_scores
from firekd.rundir import FINAL_EVALUATION, RunDir

log = logging.getLogger(__name__)


def slice_metrics(predictions: pd.DataFrame, slices: pd.DataFrame | None) -> dict[str, float]:
    """Slice metrics of one model from its predictions table (``row``, ``{label}_true``,
    ``{label}_pred``) and the slice columns (indexed by CSV line)."""
    if slices is None or slices.empty or not len(slices.columns):
        return {}
    missing = ~predictions["row"].isin(slices.index)
    if missing.any():
        raise DataError(f"no slice value for CSV line {int(predictions.loc[missing, 'row'].iloc[0])}: the "
                        "predictions were made from another CSV than --csv")
    y_true = predictions[[f"{label}_true" for label in LABELS]].to_numpy()
    y_pred = predictions[[f"{label}_pred" for label in LABELS]].to_numpy()
    groups = slices.loc[predictions["row"].to_numpy()]
    out: dict[str, float] = {}
    for column in slices.columns:
        out.update(slice_scores(y_true, y_pred, groups[column].to_numpy(), column))
    return out


def has_slices(metrics: dict, columns) -> bool:
    found = {parsed[1] for parsed in map(parse_slice_key, metrics) if parsed}
    return set(columns) <= found


def add_missing_slices(run: RunDir, slices: pd.DataFrame | None, writer: Writer) -> int:
    """Add the slice metrics to the finished seeds of ``run`` that lack them (computed from the
    seed's predictions files); returns how many seeds were updated."""
    if slices is None or not writer.enabled:
        return 0
    updated = 0
    for seed in run.seeds():
        final = run.final_evaluation(seed)
        files = run.predictions(seed)
        models = [m for m, v in final.items() if m != "run" and isinstance(v, dict)]
        todo = [m for m in models if not has_slices(final[m], slices.columns) and m in files]
        if not todo:
            continue
        for model in todo:
            final[model] = {**final[model], **slice_metrics(pd.read_csv(files[model]), slices)}
        writer.json(run.seed(seed).metrics / FINAL_EVALUATION, final)
        updated += 1
    if updated:
        log.info("%s: slice metrics (%s) added to %d seed(s) that finished without them", run.name,
                 ", ".join(slices.columns), updated)
    return updated
