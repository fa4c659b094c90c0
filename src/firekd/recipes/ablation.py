"""The ablation grid: teachers x loss variants x seeds, with teacher reuse, one control per seed,
resume and aggregates. ``firekd train`` is the grid with one teacher and one variant.

    prepare the data (validate, split, cache) -> lock and record every run folder -> plan the jobs
    -> run the jobs (here, or in parallel: recipes.grid) -> measure each teacher's efficiency once
    (no GPU idle meanwhile) -> show the controls under every teacher -> aggregate every run folder
"""

from __future__ import annotations

import contextlib
import logging
import os

from firekd.config import RunConfig
from firekd.engine import distributed
from firekd.errors import ConfigError
from firekd.io import Writer, ensure_writable, write_csv, write_json
from firekd.kd.variants import uses_teacher
from firekd.keys import outputs_settings, plain, run_settings, stable_hash
from firekd.metrics.stats import aggregates_json
from firekd.recipes.data import DataBundle, load_data, open_cache
from firekd.recipes.efficiency import fill_teacher_efficiency
from firekd.recipes.jobs import Job, plan, publish_controls, run_job
from firekd.recipes.slices import add_missing_slices
from firekd.reporting.tables import F1_METRICS, display_table, markdown, summary_frame
from firekd.rundir import (
    AGGREGATED,
    CONFIG,
    CONFIG_FORMAT,
    DATA_SUMMARY,
    ENVIRONMENT,
    FINAL_EVALUATION,
    SPLIT,
    RunDir,
    environment,
)

log = logging.getLogger(__name__)


def run_ablation(cfg: RunConfig) -> dict[str, dict]:
    """Run the grid (one per teacher input with --teacher_modalities rgb+ir rgb: the same data,
    seeds and controls, so the students of the two teachers pair by seed); {run name: aggregates}."""
    writer = Writer(enabled=distributed.info().is_main)
    if cfg.student.pretrained or cfg.student.weights:  # unobtainable weights fail now, not after the teachers
        from firekd.models import build_student

        build_student(cfg.student.arch, pretrained=cfg.student.pretrained, weights=cfg.student.weights)
    data = prepare(cfg, writer)
    results: dict[str, dict] = {}
    for grid in cfg.per_modality():
        results.update(_run_grid(grid, data, writer))
    return results


def _run_grid(cfg: RunConfig, data: DataBundle, writer: Writer) -> dict[str, dict]:
    if cfg.execution.teacher_only:
        _execute(cfg, data, plan(cfg, data, {}), writer)
        return {}
    with open_runs(cfg, data, writer) as runs:
        jobs = distributed.from_main(plan(cfg, data, runs) if writer.enabled else None)
        _execute(cfg, data, jobs, writer)
        # once per architecture, after the jobs: the CPU timing holds no GPU idle
        fill_teacher_efficiency(cfg, data, {t: [runs[t, v].seed(s).metrics / FINAL_EVALUATION
                                                for v in cfg.variants if uses_teacher(v) for s in cfg.seeds]
                                            for t in cfg.teachers}, writer)
        publish_controls(cfg, data, runs, writer)
        for run in runs.values():  # seeds that finished before --slice_col was given
            add_missing_slices(run, data.slices, writer)
        return {run.name: aggregate(run, writer) for run in runs.values()}


def _execute(cfg: RunConfig, data: DataBundle, jobs: list[Job], writer: Writer) -> None:
    if cfg.execution.parallel:
        from firekd.recipes.grid import run_grid

        run_grid(cfg, data, jobs)
        return
    retrained: set[str] = set()
    for job in jobs:
        run_job(cfg, data, job, writer, retrained)


def prepare(cfg: RunConfig, writer: Writer) -> DataBundle:
    """Validated, split data with its decoded cache (under torchrun rank 0 builds it first)."""
    if writer.enabled:
        ensure_writable(cfg.execution.output)
    data = load_data(cfg.data, cfg.student.unlabeled_csv)
    workers = max(1, min(cfg.execution.num_workers, os.cpu_count() or 1))
    source = open_cache(data, workers=workers) if writer.enabled else None
    distributed.barrier()
    data.source = source if writer.enabled else open_cache(data, writer=writer)
    return data


@contextlib.contextmanager
def open_runs(cfg: RunConfig, data: DataBundle, writer: Writer):
    """Lock every run folder of the grid (fail now, not hours in), record its settings, and log
    into its run.log for the duration."""
    runs = {(t, v): RunDir(cfg.execution.output, t, v) for t in cfg.teachers for v in cfg.variants}
    with contextlib.ExitStack() as stack:
        for run in runs.values():
            stack.enter_context(run.lock(writer))
        for run in runs.values():
            _start_run(run, cfg, data, writer)
            stack.enter_context(run.log_to_file(writer))
        yield runs


def _start_run(run: RunDir, cfg: RunConfig, data: DataBundle, writer: Writer) -> None:
    lineage = data.run_lineage(distributed.info().world_size)
    settings = plain(run_settings(cfg, run.teacher, run.variant, lineage))
    _check_run_settings(run, settings, cfg.execution.overwrite, writer)
    if not writer.enabled:
        return
    write_json(run.metrics / CONFIG, {"format": CONFIG_FORMAT, "settings": settings,
                                      "run_key": stable_hash(settings),
                                      "outputs_key": stable_hash(outputs_settings(cfg)), "flags": cfg.flags(),
                                      "resolved": cfg.to_dict(), "split": data.split_decision.to_dict(),
                                      "samples": {"labelled": len(data.labelled),
                                                  "unlabeled": data.unlabeled_count,
                                                  "moved_to_unlabeled": data.moved_count},
                                      "resampled": data.resampled()})
    write_json(run.metrics / ENVIRONMENT, environment())
    if data.config.resample_split:  # no split is common to the seeds: each seed folder has its own
        writer.remove(run.metrics / SPLIT)
    else:
        write_csv(run.metrics / SPLIT, data.split_table())
    write_csv(run.metrics / DATA_SUMMARY, data.summary().reset_index())  # for `firekd report`


def _check_run_settings(run: RunDir, settings: dict, overwrite: bool, writer: Writer) -> None:
    """A run folder holds one set of settings. Other settings replace it when nothing finished
    under the old ones (e.g. a rerun with a smaller --batch_size after running out of memory),
    and are refused when finished seeds would be mixed with new ones."""
    config = run.config()
    if not config:
        return
    if overwrite:
        log.info("%s: --overwrite, starting over", run.metrics)
        run.remove(writer)
        return
    differ = _differences(config.get("settings", {}), settings)
    if config.get("format") != CONFIG_FORMAT:
        differ = [f"made by an earlier firekd (settings format {config.get('format', 1)})"]
    if not differ:
        return
    if not run.seeds():
        log.info("%s: no seed finished under its earlier settings (differs in: %s); discarding its "
                 "partial state", run.metrics, ", ".join(differ))
        run.remove(writer)
        return
    raise ConfigError(f"{run.metrics} holds finished seeds made with other settings (differs in: "
                      f"{', '.join(differ)}); pass --overwrite to replace them or use another --output")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (data: the data fingerprint)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def aggregate(run: RunDir, writer: Writer) -> dict:
    """aggregated_results.json: NaN (not null) for one seed's std and CI, which the spec's snippet
    formats as ``nan``."""
    aggregated = run.aggregate()
    writer.text(run.metrics / AGGREGATED, aggregates_json(aggregated))
    return aggregated


def results_table(results: dict[str, dict], metrics=F1_METRICS) -> str:
    """Markdown comparison table: variant x model, mean ± std over seeds (and efficiency when
    measured); `firekd compare` adds CIs and significance tests."""
    frame = summary_frame(results, metrics)
    return markdown(display_table(frame, metrics, ci=False)) if not frame.empty else "(no results)"

