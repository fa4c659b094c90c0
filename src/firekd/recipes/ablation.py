"""The ablation grid: teachers x loss variants x seeds, with teacher reuse, resume and aggregates.

``firekd train`` is the grid with one teacher and one variant.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from firekd.config import TrainConfig
from firekd.errors import ConfigError
from firekd.io import ensure_writable, read_json, write_csv, write_json
from firekd.kd.variants import uses_teacher
from firekd.metrics.stats import aggregate_runs
from firekd.recipes.common import data_fingerprint, make_runtime, stable_hash
from firekd.recipes.compress import add_efficiency, compress_student, compression_settings
from firekd.recipes.data import DataBundle, load_data
from firekd.recipes.train import (
    obtain_teacher,
    student_settings,
    teacher_settings,
    train_student,
    write_predictions,
    write_teacher_outputs,
)
from firekd.rundir import RunDir, environment

log = logging.getLogger(__name__)
RUN_KEYS_IGNORED = ("seeds", "teachers", "variants", "num_workers", "device", "overwrite",
                    "retrain_teacher", "tensorboard", "output", "latency_runs", "latency_threads")


def run_settings(cfg: TrainConfig, teacher: str, variant: str) -> dict:
    """The settings a run folder's results depend on (seeds may be added later)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in RUN_KEYS_IGNORED}
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


def run_ablation(cfg: TrainConfig) -> dict[str, dict]:
    """Run the grid; returns {run name: aggregated results}."""
    ensure_writable(cfg.output)
    bundle = load_data(cfg.data)
    data_fp = data_fingerprint(bundle)
    runs = {(t, v): RunDir(cfg.output, t, v) for t in cfg.teachers for v in cfg.variants}
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        for run in runs.values():  # one writer per run folder: fail now, not hours in
            stack.enter_context(run.lock())
        for (teacher, variant), run in runs.items():
            _start_run(run, cfg, bundle, teacher, variant)
            stack.enter_context(run.log_to_file())
        retrained: set[str] = set()
        for teacher in cfg.teachers:
            for seed in cfg.seeds:
                _run_seed(cfg, bundle, data_fp, teacher, seed, runs, retrained)
            for variant in cfg.variants:
                results[runs[teacher, variant].name] = _aggregate(runs[teacher, variant])
    return results


def _seed_done(run: RunDir, seed: int, settings_hash: str) -> bool:
    path = run.metrics / f"seed_{seed}" / "final_evaluation.json"
    return path.exists() and read_json(path).get("run", {}).get("settings_hash") == settings_hash


def _run_seed(cfg: TrainConfig, bundle: DataBundle, data_fp: str, teacher_name: str, seed: int,
              runs: dict, retrained: set[str]) -> None:
    variants = list(cfg.variants)
    t_key = stable_hash(teacher_settings(cfg, teacher_name, seed, data_fp))
    hashes = {v: stable_hash({**student_settings(cfg, v, seed, data_fp, t_key if uses_teacher(v) else None),
                              **compression_settings(cfg)}) for v in variants}
    todo = [v for v in variants if not _seed_done(runs[teacher_name, v], seed, hashes[v])]
    for v in sorted(set(variants) - set(todo)):
        log.info("%s seed %d: already done, skipping", runs[teacher_name, v].name, seed)
    if not todo:
        return
    rt, loaders = make_runtime(cfg, seed, bundle)
    teacher = None
    if any(uses_teacher(v) for v in todo):
        teacher = obtain_teacher(cfg, bundle, teacher_name, seed, rt, loaders, data_fp, retrained)
    for variant in todo:
        run = runs[teacher_name, variant]
        t0 = time.perf_counter()
        dirs = run.seed_dirs(seed)
        settings = student_settings(cfg, variant, seed, data_fp, t_key if teacher else None)
        student = train_student(cfg, bundle, variant, teacher.model if uses_teacher(variant) else None,
                                seed, rt, loaders, settings, dirs[1], dirs[2])
        models = {"student": student}
        if uses_teacher(variant):
            write_teacher_outputs(teacher, dirs)
            models = {"teacher": teacher, **models}
        if cfg.compress:
            kd_teacher = teacher.model if uses_teacher(variant) else None
            models.update(compress_student(cfg, bundle, variant, kd_teacher, student, seed, rt, loaders,
                                           dirs))
        add_efficiency(cfg, bundle, models, dirs[1], rt)
        _write_seed_outputs(run, dirs, seed, variant, models, student, hashes[variant], bundle)
        log.info("%s seed %d: done in %.0fs, student f1_macro %.4f", run.name, seed,
                 time.perf_counter() - t0, student.evaluation.metrics["f1_macro"])
    del teacher
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_seed_outputs(run: RunDir, dirs, seed: int, variant: str, models: dict, student,
                        settings_hash: str, bundle: DataBundle) -> None:
    metrics_dir = dirs[0]
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


def _aggregate(run: RunDir) -> dict:
    per_seed = {}
    for path in sorted(run.metrics.glob("seed_*/final_evaluation.json")):
        final = read_json(path)
        per_seed[int(final["run"]["seed"])] = {k: v for k, v in final.items() if k != "run"}
    aggregated = aggregate_runs(per_seed)
    write_json(run.metrics / "aggregated_results.json", aggregated)
    return aggregated


def results_table(results: dict[str, dict], metrics=("f1_macro", "f1_fire", "f1_smoke")) -> str:
    """Markdown table: run x model, mean +- std of each metric."""
    lines = ["| run | model | n | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name, agg in results.items():
        for model in ("teacher", "student", "student_quantized", "student_pruned"):
            if model not in agg:
                continue
            cells = [_pm(agg[model].get(m)) for m in metrics]
            n = agg[model][metrics[0]]["n"] if metrics[0] in agg[model] else 0
            lines.append(f"| {name} | {model} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(summary: dict | None) -> str:
    if not summary or summary["mean"] is None:
        return "n/a"
    if summary["std"] is None:
        return f"{summary['mean']:.4f}"
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"

