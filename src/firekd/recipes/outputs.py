"""A finished seed's outputs: figures, predictions, logs and final_evaluation.json (written last:
its presence means the seed is done), and the links that show a shared model (the teacher, the
``bce`` control) in every run folder that uses it."""

from __future__ import annotations

from pathlib import Path

from firekd.engine.evaluation import predictions_table
from firekd.io import Writer, read_json, write_csv, write_json
from firekd.recipes.cards import write_cards
from firekd.recipes.context import ModelResult, SeedRun
from firekd.recipes.slices import slice_metrics
from firekd.recipes.teacher import TeacherResult
from firekd.rundir import (
    FINAL_EVALUATION,
    SPLIT,
    STUDENT_CURVES,
    STUDENT_LOG,
    SeedDirs,
    predictions_file,
)


def write_seed_outputs(run: SeedRun, dirs: SeedDirs, models: dict[str, ModelResult], *, title: str,
                       run_block: dict, teacher: TeacherResult | None = None) -> None:
    """Figures (the student's training curves among them, drawn from its log), predictions and logs
    of every model of a seed, then final_evaluation.json."""
    if not run.writer.enabled:
        return
    _figures(run, dirs.graphs, models, title, teacher)
    write_json(dirs.metrics / STUDENT_LOG, models["student"].train_log)
    if run.data.config.resample_split:  # this seed's own split (--resample_split)
        write_csv(dirs.metrics / SPLIT, run.data.split_table())
    rows = run.data.dataset("test").rows
    final = {}
    for name, result in models.items():
        table = predictions_table(result.evaluation.test, rows, result.evaluation.thresholds)
        write_csv(dirs.metrics / predictions_file(name), table)
        final[name] = {**result.evaluation.metrics, **slice_metrics(table, run.data.slices)}
    write_cards(models, run.data)  # beside each saved student form: what deploying it needs
    write_json(dirs.metrics / FINAL_EVALUATION, {**final, "run": {**run_block, "n_test": int(len(rows))}})


def _figures(run: SeedRun, graphs: Path, models: dict[str, ModelResult], title: str,
             teacher: TeacherResult | None) -> None:
    if not run.cfg.execution.figures:
        return
    # matplotlib and UMAP: imported only where figures are drawn (--no_figures processes start faster)
    from firekd.recipes.figures import EMBEDDED_MODELS, write_embedding_figures, write_metric_figures
    from firekd.reporting.plots import training_curves

    history = models["student"].train_log["epochs"]
    run.writer.figure(graphs / STUDENT_CURVES, lambda: training_curves(history, f"Student - {title}"))
    write_metric_figures(graphs, {name: result.evaluation for name, result in models.items()}, title)
    points = run.cfg.execution.max_embed_points
    for name in EMBEDDED_MODELS:
        if name not in models:
            continue
        shared = name == "teacher" and teacher is not None  # one teacher, every variant: project once
        write_embedding_figures(
            graphs, name, models[name].evaluation,
            f"teacher {teacher.folder.parent.name}, seed {run.seed}" if shared else title,
            max_points=points, seed=run.seed,
            cache_dir=teacher.folder / f"figures-{teacher.build}-max{points}" if shared else None)


def publish(writer: Writer, source: SeedDirs, target: SeedDirs, run_block: dict) -> None:
    """Show a seed made elsewhere (the ``bce`` control's store) in a run folder: every file linked,
    final_evaluation.json rewritten with this run's name and key (and written last)."""
    for path, kind in source.files():
        if path.name != FINAL_EVALUATION:
            writer.link(path, getattr(target, kind) / path.name)
    final = read_json(source.metrics / FINAL_EVALUATION)
    writer.json(target.metrics / FINAL_EVALUATION, {**final, "run": {**final["run"], **run_block}})
