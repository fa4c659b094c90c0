"""The ablation grid: teachers x loss variants x seeds, with teacher reuse, resume and aggregates.

``firekd train`` is the grid with one teacher and one variant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import torch

from firekd.config import TrainConfig
from firekd.engine import distributed
from firekd.errors import ConfigError
from firekd.io import ensure_writable, read_json, write_csv, write_json
from firekd.kd.variants import uses_teacher
from firekd.recipes.common import data_fingerprint, make_runtime, stable_hash
from firekd.recipes.compare import aggregate_seed_files
from firekd.recipes.compress import add_efficiency, compress_student, compression_settings
from firekd.recipes.data import DataBundle, load_data, open_cache
from firekd.recipes.figures import EMBEDDED_MODELS, write_embedding_figures, write_metric_figures
from firekd.recipes.train import (
    StageResult,
    obtain_teacher,
    student_settings,
    teacher_settings,
    train_student,
    write_predictions,
    write_teacher_outputs,
)
from firekd.reporting.tables import F1_METRICS, display_table, markdown, summary_frame
from firekd.rundir import RunDir, environment

log = logging.getLogger(__name__)
RUN_KEYS_IGNORED = ("seeds", "teachers", "variants", "num_workers", "device", "overwrite",
                    "retrain_teacher", "tensorboard", "output", "teacher_reuse", "compile",
                    "teacher_only", "jobs", "gpus", "executor", "ray_address", "ray_gpus_per_job",
                    "sync_bn", "max_embed_points", "latency_runs", "latency_threads")
TEACHER_KEYS = ("epochs_teacher", "lr_teacher", "patience_teacher", "teacher_modalities", "pretrained",
                "teacher_weights", "kd_temperature")  # irrelevant to the student-alone control


def run_settings(cfg: TrainConfig, teacher: str, variant: str) -> dict:
    """The settings a run folder's results depend on (seeds may be added later)."""
    ignored = RUN_KEYS_IGNORED + (() if uses_teacher(variant) else TEACHER_KEYS)
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ignored}
    return {**settings, "teacher": teacher, "variant": variant}


def _check_run_settings(run: RunDir, settings: dict, overwrite: bool) -> None:
    path = run.metrics / "config.json"
    if not path.exists():
        return
    if overwrite:
        log.info("%s: --overwrite, starting over", run.metrics)
        run.remove()
        return
    old = read_json(path).get("settings", {})
    differ = sorted(k for k in set(old) | set(settings) if old.get(k) != _plain(settings.get(k)))
    if differ:
        raise ConfigError(f"{run.metrics} holds a run made with other settings (differs in: "
                          f"{', '.join(differ)}); pass --overwrite to replace it or use another --output")


def _plain(value):
    """The value as it reads back from JSON (tuples become lists)."""
    import json

    return json.loads(json.dumps(value, default=str))


def _start_run(run: RunDir, cfg: TrainConfig, bundle: DataBundle, teacher: str, variant: str) -> None:
    settings = run_settings(cfg, teacher, variant)
    _check_run_settings(run, settings, cfg.overwrite)
    run.metrics.mkdir(parents=True, exist_ok=True)
    write_json(run.metrics / "config.json", {"settings": settings, "resolved": cfg.to_dict()})
    write_json(run.metrics / "environment.json", environment())
    write_csv(run.metrics / "split.csv", bundle.split_table())
    write_csv(run.metrics / "data_summary.csv", bundle.summary().reset_index())  # for `firekd report`


@dataclass
class Prepared:
    """Validated data with its cache and fingerprint: made once, shared with grid jobs."""

    bundle: DataBundle
    data_fp: str


def prepare(cfg: TrainConfig) -> Prepared:
    ensure_writable(cfg.output)
    bundle = load_data(cfg.data)
    bundle.source = _open_cache(bundle, workers=max(1, min(cfg.num_workers, os.cpu_count() or 1)))
    return Prepared(bundle, data_fingerprint(bundle))


def run_ablation(cfg: TrainConfig) -> dict[str, dict]:
    """Run the grid in this process (or hand it to parallel jobs); {run name: aggregates}."""
    if cfg.jobs > 1 or cfg.gpus or cfg.executor == "ray":
        from firekd.recipes.grid import run_grid

        return run_grid(cfg)
    prep = prepare(cfg)
    retrained: set[str] = set()
    if cfg.teacher_only:
        for teacher in cfg.teachers:
            for seed in cfg.seeds:
                train_teacher_job(cfg, prep, teacher, seed, retrained)
        return {}
    with open_runs(cfg, prep.bundle) as runs:
        for teacher in cfg.teachers:
            for seed in cfg.seeds:
                _run_seed(cfg, prep.bundle, prep.data_fp, teacher, seed, runs, retrained)
        return {run.name: _aggregate(run) for run in runs.values()}


@contextlib.contextmanager
def open_runs(cfg: TrainConfig, bundle: DataBundle):
    """Lock every run folder of the grid (fail now, not hours in), record its settings, and log
    into its run.log for the duration."""
    runs = {(t, v): RunDir(cfg.output, t, v) for t in cfg.teachers for v in cfg.variants}
    with contextlib.ExitStack() as stack:
        for run in runs.values():
            stack.enter_context(run.lock())
        for (teacher, variant), run in runs.items():
            _start_run(run, cfg, bundle, teacher, variant)
            stack.enter_context(run.log_to_file())
        yield runs


def train_teacher_job(cfg: TrainConfig, prep: Prepared, teacher: str, seed: int,
                      retrained: set[str] | None = None) -> None:
    """Train (or find) one seed's teacher and stop: --teacher_only, and a grid's teacher jobs."""
    rt, loaders = make_runtime(cfg, seed, prep.bundle)
    obtain_teacher(cfg, prep.bundle, teacher, seed, rt, loaders, prep.data_fp,
                   set() if retrained is None else retrained)


def student_job(cfg: TrainConfig, prep: Prepared, teacher: str, variant: str, seed: int) -> None:
    """One (teacher, variant, seed) inside a grid whose parent holds the run folder's lock."""
    runs = {(teacher, variant): RunDir(cfg.output, teacher, variant)}
    with runs[teacher, variant].log_to_file():
        job_cfg = dataclasses.replace(cfg, variants=(variant,))
        _run_seed(job_cfg, prep.bundle, prep.data_fp, teacher, seed, runs, set())


def _open_cache(bundle: DataBundle, workers: int):
    """Rank 0 builds the cache (under torchrun), the other ranks open it once it is there."""
    main = distributed.info().is_main
    source = open_cache(bundle, workers=workers) if main else None
    distributed.barrier()
    return source if main else open_cache(bundle)


def _seed_done(run: RunDir, seed: int, settings_hash: str) -> bool:
    path = run.metrics / f"seed_{seed}" / "final_evaluation.json"
    return path.exists() and read_json(path).get("run", {}).get("settings_hash") == settings_hash


def _run_seed(cfg: TrainConfig, bundle: DataBundle, data_fp: str, teacher_name: str, seed: int,
              runs: dict, retrained: set[str]) -> None:
    variants = list(cfg.variants)
    t_keys = {v: _teacher_key(cfg, data_fp, teacher_name, v, seed) for v in variants}
    settings = {v: student_settings(cfg, v, seed, data_fp, t_keys[v]) for v in variants}
    hashes = {v: variant_settings_hash(cfg, data_fp, teacher_name, v, seed) for v in variants}
    todo = [v for v in variants if not _seed_done(runs[teacher_name, v], seed, hashes[v])]
    for v in sorted(set(variants) - set(todo)):
        log.info("%s seed %d: already done, skipping", runs[teacher_name, v].name, seed)
    if not todo:
        return
    rt, loaders = make_runtime(cfg, seed, bundle)
    teachers: dict[str, StageResult] = {}  # by teacher key: one, unless --no_teacher_reuse
    for variant in todo:
        run = runs[teacher_name, variant]
        t0 = time.perf_counter()
        dirs = run.seed_dirs(seed)
        teacher = None
        if uses_teacher(variant):
            if t_keys[variant] not in teachers:
                teachers.clear()  # free the previous teacher's memory first
                teachers[t_keys[variant]] = obtain_teacher(cfg, bundle, teacher_name, seed, rt, loaders,
                                                           data_fp, retrained, _own_teacher(cfg, variant))
            teacher = teachers[t_keys[variant]]
        student = train_student(cfg, bundle, variant, teacher.model if teacher else None,
                                seed, rt, loaders, settings[variant], dirs[1], dirs[2])
        models = {"student": student}
        if teacher:
            write_teacher_outputs(teacher, dirs)
            models = {"teacher": teacher, **models}
        if cfg.compress:
            kd_teacher = teacher.model if teacher else None
            models.update(compress_student(cfg, bundle, variant, kd_teacher, student, seed, rt, loaders,
                                           dirs))
        add_efficiency(cfg, bundle, models, dirs[1], rt)
        _write_seed_outputs(run, dirs, seed, variant, models, student, hashes[variant], bundle,
                            cfg.max_embed_points)
        log.info("%s seed %d: done in %.0fs, student f1_macro %.4f", run.name, seed,
                 time.perf_counter() - t0, student.evaluation.metrics["f1_macro"])
    teachers.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _teacher_key(cfg: TrainConfig, data_fp: str, teacher: str, variant: str, seed: int) -> str | None:
    if not uses_teacher(variant):
        return None
    return stable_hash(teacher_settings(cfg, teacher, seed, data_fp, _own_teacher(cfg, variant)))


def variant_settings_hash(cfg: TrainConfig, data_fp: str, teacher: str, variant: str, seed: int) -> str:
    """What a finished seed's final_evaluation.json records: same hash, same result."""
    t_key = _teacher_key(cfg, data_fp, teacher, variant, seed)
    return stable_hash({**student_settings(cfg, variant, seed, data_fp, t_key), **compression_settings(cfg)})


def _own_teacher(cfg: TrainConfig, variant: str) -> str | None:
    """With --no_teacher_reuse (the naive baseline of the reuse benchmark) every variant trains
    its own teacher: the variant becomes part of the teacher's key."""
    return None if cfg.teacher_reuse else variant


def _write_seed_outputs(run: RunDir, dirs, seed: int, variant: str, models: dict, student,
                        settings_hash: str, bundle: DataBundle, max_embed_points: int = 0) -> None:
    metrics_dir = dirs[0]
    _write_seed_figures(run, dirs[2], seed, variant, models, max_embed_points)
    write_json(metrics_dir / "student_train_log.json", student.train_log)
    rows = bundle.dataset("test").rows
    for name, stage in models.items():
        write_predictions(metrics_dir, name, stage.evaluation, rows)
    final = {name: stage.evaluation.metrics for name, stage in models.items()}
    final["run"] = {"name": run.name, "seed": seed, "variant": variant,
                    "settings_hash": settings_hash,
                    "teacher_reused": bool(models.get("teacher") and models["teacher"].reused),
                    "n_test": int(len(rows))}
    write_json(metrics_dir / "final_evaluation.json", final)  # written last: the seed is done


def _write_seed_figures(run: RunDir, graphs_dir, seed: int, variant: str, models: dict,
                        max_embed_points: int) -> None:
    title = f"{run.name}, seed {seed}"
    write_metric_figures(graphs_dir, {name: stage.evaluation for name, stage in models.items()}, title)
    teacher_name = run.name[: -len(variant) - 1]
    for name in EMBEDDED_MODELS:
        if name not in models:
            continue
        stage = models[name]
        shared = name == "teacher"  # one teacher serves every variant: project it once
        write_embedding_figures(
            graphs_dir, name, stage.evaluation,
            f"teacher {teacher_name}, seed {seed}" if shared else title,
            max_points=max_embed_points, seed=seed,
            cache_dir=stage.folder / f"figures_max{max_embed_points}" if shared else None)


def _aggregate(run: RunDir) -> dict:
    aggregated = aggregate_seed_files(run.metrics)
    write_json(run.metrics / "aggregated_results.json", aggregated)
    return aggregated


def results_table(results: dict[str, dict], metrics=F1_METRICS) -> str:
    """Markdown comparison table: variant x model, mean ± std over seeds (and efficiency when
    measured); `firekd compare` adds CIs and significance tests."""
    frame = summary_frame(results, metrics)
    return markdown(display_table(frame, metrics, ci=False)) if not frame.empty else "(no results)"

