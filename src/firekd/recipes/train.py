"""Training recipes: the shared teacher stage, the student stage per loss variant, the grid.

A teacher is trained once per (teacher, seed, data, split, teacher settings) and stored under
``output/teachers``; every loss variant, and every later invocation with the same inputs, reuses
it. Concurrent invocations (the spec's "Parallel Execution" recipe) serialise on the teacher's
lock: the first trains, the others wait and then reuse it, so no process ever reads a half-written
teacher and no GPU trains the same teacher twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import load_model
from firekd.config import TrainConfig
from firekd.engine import distributed
from firekd.engine.loop import FitConfig, fit
from firekd.engine.runtime import Runtime
from firekd.io import is_writer, read_json, save_figure, write_csv, write_json
from firekd.kd.distiller import Distiller, Supervised
from firekd.kd.variants import uses_teacher, variant_weights
from firekd.models import create_student, create_teacher
from firekd.recipes.common import FileCheckpointer, Loaders, stable_hash
from firekd.recipes.data import DataBundle
from firekd.recipes.evaluate import Evaluation, evaluate_model, predictions_table
from firekd.reporting.plots import training_curves
from firekd.rundir import link_or_copy, waiting

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """A trained (or reused) model with its training log and test evaluation."""

    model: nn.Module
    train_log: dict
    evaluation: Evaluation
    folder: Path
    reused: bool = False
    extra: dict = field(default_factory=dict)


def pos_weight_for(cfg: TrainConfig, bundle: DataBundle) -> torch.Tensor | None:
    """--pos_weight auto: negatives/positives per label on the train split."""
    if cfg.pos_weight != "auto":
        return None
    train = bundle.records[bundle.records["split_assigned"] == "train"][["fire", "smoke"]].to_numpy()
    pos = train.sum(axis=0).clip(min=1)
    return torch.tensor((len(train) - pos) / pos, dtype=torch.float32)


def data_meta(bundle: DataBundle) -> dict:
    """How to feed a checkpoint's model: recorded so `firekd evaluate` can rebuild the inputs."""
    spec = bundle.ir_spec
    return {"csv": str(bundle.config.csv), "img_size": bundle.config.img_size,
            "ir_kind": spec.kind, "ir_channels": spec.channels,
            "ir_range": list(spec.value_range) if spec.value_range else None}


def teacher_settings(cfg: TrainConfig, teacher: str, seed: int, data_fp: str,
                     variant: str | None = None) -> dict:
    """Everything a trained teacher depends on: its reuse key is a hash of this. ``variant`` is
    set only when teachers are not shared between variants (--no_teacher_reuse)."""
    own = {"variant": variant} if variant else {}
    return {**own, "teacher": teacher, "seed": seed, "data": data_fp,
            "modalities": cfg.teacher_modalities, "pretrained": cfg.pretrained,
            "teacher_weights": cfg.teacher_weights, "epochs": cfg.epochs_teacher,
            "lr": cfg.lr_teacher, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
            "patience": cfg.patience_teacher, "pos_weight": cfg.pos_weight, "amp": cfg.amp}


def _train_log(result, stage_settings: dict) -> dict:
    return {"settings": stage_settings, "best_epoch": result.best_epoch,
            "best_val_f1_macro": result.best_score, "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from, "epochs": result.history}


def _tensorboard(cfg: TrainConfig, folder: Path, tag: str):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("--tensorboard needs the tensorboard package (pip install 'firekd[tensorboard]')")
        return None
    writer = SummaryWriter(str(folder / "tensorboard"))

    def on_epoch(record: dict) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(f"{tag}/{key}", value, record["epoch"])
        writer.flush()

    return on_epoch


def build_teacher(cfg: TrainConfig, bundle: DataBundle, name: str) -> nn.Module:
    return create_teacher(name, modalities=cfg.teacher_modalities,
                          ir_channels=max(1, bundle.ir_spec.channels),
                          img_size=bundle.config.img_size, pretrained=cfg.pretrained,
                          pretrained_file=cfg.teacher_weights)


def obtain_teacher(cfg: TrainConfig, bundle: DataBundle, name: str, seed: int, rt: Runtime,
                   loaders: Loaders, data_fp: str, retrained: set[str],
                   variant: str | None = None) -> StageResult:
    """Reuse the stored teacher for these inputs, or train it (once, under its lock)."""
    settings = teacher_settings(cfg, name, seed, data_fp, variant)
    key = stable_hash(settings)
    store = Path(cfg.output) / "teachers" / name / f"seed_{seed}-{key}"
    done = store / "teacher_train_log.json"
    on_wait = lambda who: log.info("teacher %s seed %d: waiting for %s, which is training it",  # noqa: E731
                                   name, seed, who)
    with waiting(store / ".lock", on_wait=on_wait):
        # under torchrun only rank 0 holds the lock: every rank follows its reading of the store
        reuse = distributed.from_main(done.exists() and not (cfg.retrain_teacher and key not in retrained))
        if reuse:
            model, _ = load_model(store / "teacher_best.pth", kind="teacher")
            model = rt.prepare_model(model)
            train_log, reused = read_json(done), True
            log.info("teacher %s seed %d: reusing %s (trained earlier with the same settings)",
                     name, seed, store)
            evaluation = evaluate_model(model, loaders.val, loaders.test, rt)
        else:
            if done.exists() and is_writer():
                log.info("teacher %s seed %d: retraining (--retrain_teacher)", name, seed)
                for path in store.glob("teacher_*"):
                    path.unlink()
            model, train_log, evaluation = _train_teacher(cfg, bundle, name, seed, rt, loaders,
                                                          settings, store)
            retrained.add(key)
            reused = False
    return StageResult(model, train_log, evaluation, store, reused)


def _train_teacher(cfg, bundle, name, seed, rt, loaders, settings, store: Path):
    torch.manual_seed(seed)
    model = rt.prepare_model(build_teacher(cfg, bundle, name), compile=cfg.compile, sync_bn=cfg.sync_bn)
    task = Supervised(model, pos_weight_for(cfg, bundle)).to(rt.device)
    fit_cfg = FitConfig(stage=f"teacher {name} (seed {seed})", epochs=cfg.epochs_teacher,
                        lr=cfg.lr_teacher, weight_decay=cfg.weight_decay,
                        patience=cfg.patience_teacher, weights={"bce": 1.0}, seed=seed)
    ckpt = FileCheckpointer(store, "teacher", model, "teacher",
                            meta={"settings": settings, "data": data_meta(bundle)})
    result = fit(task, model, loaders.train, loaders.val, fit_cfg, rt, ckpt, loaders.generator,
                 on_epoch=_tensorboard(cfg, store, "teacher"))
    inputs = "RGB+IR" if cfg.teacher_modalities == "rgb+ir" else "RGB"
    save_figure(store / "teacher_training_curves.png",
                training_curves(result.history, f"Teacher {name} ({inputs}) - seed {seed}"))
    evaluation = evaluate_model(model, loaders.val, loaders.test, rt)
    ckpt.finish(evaluation.thresholds)
    train_log = _train_log(result, settings)
    write_json(store / "teacher_train_log.json", train_log)  # the completion marker, written last
    return model, train_log, evaluation


def student_settings(cfg: TrainConfig, variant: str, seed: int, data_fp: str,
                     teacher_key: str | None) -> dict:
    return {"student": cfg.student, "variant": variant, "seed": seed, "data": data_fp,
            "teacher": teacher_key, "weights": variant_weights(variant, cfg.loss_weights),
            "temperature": cfg.kd_temperature if uses_teacher(variant) else None,
            "epochs": cfg.epochs_student, "lr": cfg.lr_student, "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size, "patience": cfg.patience_student,
            "pos_weight": cfg.pos_weight, "amp": cfg.amp}


def make_task(cfg: TrainConfig, bundle: DataBundle, student: nn.Module, variant: str,
              teacher: nn.Module | None) -> nn.Module:
    weights = variant_weights(variant, cfg.loss_weights)
    pos_weight = pos_weight_for(cfg, bundle)
    if teacher is None:
        return Supervised(student, pos_weight)
    return Distiller(student, teacher, set(weights), temperature=cfg.kd_temperature,
                     pos_weight=pos_weight)


def train_student(cfg: TrainConfig, bundle: DataBundle, variant: str, teacher: nn.Module | None,
                  seed: int, rt: Runtime, loaders: Loaders, settings: dict,
                  models_dir: Path, graphs_dir: Path) -> StageResult:
    torch.manual_seed(seed)
    student = rt.prepare_model(create_student(cfg.student, pretrained=False), compile=cfg.compile,
                               sync_bn=cfg.sync_bn)
    task = make_task(cfg, bundle, student, variant, teacher).to(rt.device)
    params = trained_params(task)
    if params["projector"]:
        log.info("student %s seed %d: L2 projector %d params (trained with the student, not deployed)",
                 variant, seed, params["projector"])
    fit_cfg = FitConfig(stage=f"student {variant} (seed {seed})", epochs=cfg.epochs_student,
                        lr=cfg.lr_student, weight_decay=cfg.weight_decay,
                        patience=cfg.patience_student,
                        weights=variant_weights(variant, cfg.loss_weights), seed=seed)
    ckpt = FileCheckpointer(models_dir, "student", student, "student",
                            meta={"settings": settings, "data": data_meta(bundle)})
    result = fit(task, student, loaders.train, loaders.val, fit_cfg, rt, ckpt, loaders.generator,
                 on_epoch=_tensorboard(cfg, models_dir, "student"))
    save_figure(graphs_dir / "student_training_curves.png",
                training_curves(result.history, f"Student ({variant}) - seed {seed}"))
    evaluation = evaluate_model(student, loaders.val, loaders.test, rt)
    ckpt.finish(evaluation.thresholds)
    train_log = {**_train_log(result, settings), "params": trained_params(task)}
    return StageResult(student, train_log, evaluation, models_dir, extra={"task": task})


def trained_params(task: nn.Module) -> dict[str, int]:
    """Parameters trained in a stage: the student, and the L2 projector that is trained with it
    but not deployed (it never enters student_best.pth)."""
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    student = getattr(task, "student", getattr(task, "model", None))
    return {"student": count(student), "projector": count(getattr(task, "projector", None))}


def write_teacher_outputs(teacher: StageResult, dirs: tuple[Path, Path, Path]) -> None:
    """Link the shared teacher's checkpoint, log and curves into a variant's seed folders."""
    metrics_dir, models_dir, graphs_dir = dirs
    link_or_copy(teacher.folder / "teacher_best.pth", models_dir / "teacher_best.pth")
    link_or_copy(teacher.folder / "teacher_train_log.json", metrics_dir / "teacher_train_log.json")
    curves = teacher.folder / "teacher_training_curves.png"
    if curves.exists():
        link_or_copy(curves, graphs_dir / "teacher_training_curves.png")


def write_predictions(metrics_dir: Path, name: str, evaluation: Evaluation, rows) -> None:
    write_csv(metrics_dir / f"predictions_{name}.csv",
              predictions_table(evaluation.test, rows, evaluation.thresholds))
