"""Per-seed evaluation figures: precision-recall curves, confusion matrices, t-SNE / UMAP plots."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from firekd.data.splits import COMBO_NAMES, label_combination
from firekd.engine.evaluation import Evaluation
from firekd.io import link_or_copy, save_figure
from firekd.reporting import plots
from firekd.reporting.embeddings import METHODS, MIN_POINTS, project, subsample

log = logging.getLogger(__name__)
EMBEDDED_MODELS = ("teacher", "student")  # the spec's embedding figures; compressed copies add nothing


def write_metric_figures(graphs_dir: Path, evaluations: dict[str, Evaluation], title: str) -> None:
    """``pr_curves.png`` and ``confusion_matrices.png`` for every model of one seed."""
    curves = {name: (e.test.labels, e.test.probs, e.thresholds) for name, e in evaluations.items()}
    save_figure(graphs_dir / "pr_curves.png", plots.pr_curves(curves, f"Precision-recall on test - {title}"))
    counts = {name: e.metrics for name, e in evaluations.items()}
    save_figure(graphs_dir / "confusion_matrices.png",
                plots.confusion_matrices(counts, f"Confusion matrices on test - {title}"))


def write_embedding_figures(graphs_dir: Path, model: str, evaluation: Evaluation, title: str, *,
                            max_points: int, seed: int, cache_dir: Path | None = None) -> None:
    """``tsne_{model}.png`` and ``umap_{model}.png``; ``cache_dir`` keeps a shared teacher's figures
    so that every loss variant reuses them instead of projecting the same embeddings again."""
    if max_points <= 0:
        return
    names = [f"{method}_{model}.png" for method in METHODS]
    if cache_dir is not None and all((cache_dir / n).exists() for n in names):
        for n in names:
            link_or_copy(cache_dir / n, graphs_dir / n)
        return
    test = evaluation.test
    order = np.argsort(test.index, kind="stable")  # same samples, same order, for every model
    keep = order[subsample(len(order), max_points, seed)]
    if len(keep) < MIN_POINTS:
        log.info("%s: only %d test samples, no t-SNE/UMAP figure for %s", graphs_dir, len(keep), model)
        return
    combos = np.asarray(COMBO_NAMES)[label_combination(test.labels[keep, 0], test.labels[keep, 1])]
    for method, name in zip(METHODS, names, strict=True):
        points = project(test.embeddings[keep], method, seed)
        label = f"{plots.METHOD_NAMES[method]} of {model} embeddings (test, n={len(keep)})\n{title}"
        target = cache_dir / name if cache_dir is not None else graphs_dir / name
        save_figure(target, plots.embedding_scatter(points, combos, label, method))
        if cache_dir is not None:
            link_or_copy(target, graphs_dir / name)
