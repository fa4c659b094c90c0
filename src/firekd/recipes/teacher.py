"""The teacher stage: train the RGB+IR (or RGB) teacher of a seed once, or reuse it.

A teacher is trained once per (teacher, seed, data, split, teacher settings) and stored under
``output/teachers``; every loss variant, and every later invocation with the same inputs, reuses
it. Concurrent invocations (the spec's "Parallel Execution" recipe) serialise on the teacher's
lock: the first trains, the others wait and then reuse it, so no process ever reads a half-written
teacher and no GPU trains the same teacher twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import is_firekd_checkpoint, load_model, load_payload
from firekd.config import RunConfig
from firekd.data.splits import split_digest
from firekd.diskspace import human_bytes
from firekd.engine import distributed
from firekd.engine.evaluation import Evaluation, evaluate_model
from firekd.engine.loop import FitConfig, fit
from firekd.errors import ModelError
from firekd.io import Writer, read_json
from firekd.kd.distiller import Supervised
from firekd.keys import Lineage, file_digest, stable_hash, teacher_settings
from firekd.models import create_teacher
from firekd.models.memory import free_device_bytes, should_checkpoint
from firekd.recipes.context import FileCheckpointer, SeedRun
from firekd.recipes.data import DataBundle
from firekd.rundir import CHECKPOINTS, TEACHER_CURVES, TEACHER_LOG, SeedDirs, teacher_store
from firekd.store import Store

log = logging.getLogger(__name__)


@dataclass
class TeacherResult:
    """A trained (or reused) teacher with its log and test evaluation, stored in ``folder``."""

    model: nn.Module
    train_log: dict
    evaluation: Evaluation
    folder: Path
    key: str
    reused: bool = False
    build: str | None = None  # the store's build id: students of another build are stale
    efficiency: dict = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINTS["teacher"]


def pos_weight_for(pos_weight: str, data: DataBundle) -> torch.Tensor | None:
    """--pos_weight auto: negatives/positives per label on the train split."""
    if pos_weight != "auto":
        return None
    train = data.records[data.records["split_assigned"] == "train"][["fire", "smoke"]].to_numpy()
    pos = train.sum(axis=0).clip(min=1)
    return torch.tensor((len(train) - pos) / pos, dtype=torch.float32)


def data_meta(data: DataBundle) -> dict:
    """How to feed a checkpoint's model: recorded so `firekd evaluate` can rebuild the inputs."""
    spec = data.ir_spec
    return {"csv": str(data.config.csv), "img_size": data.config.img_size,
            "ir_kind": spec.kind, "ir_channels": spec.channels,
            "ir_range": list(spec.value_range) if spec.value_range else None,
            "split_digest": split_digest(data.labelled["row"], data.labelled["split_assigned"])}


def train_log(result, stage_settings: dict, precision: str) -> dict:
    return {"settings": stage_settings, "precision": precision, "best_epoch": result.best_epoch,
            "best_val_f1_macro": result.best_score, "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from, "epochs": result.history}


def tensorboard(enabled: bool, folder: Path, tag: str):
    """An ``on_epoch`` callback logging every epoch to TensorBoard, or None."""
    if not enabled:
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


def build_teacher(run: SeedRun, name: str) -> nn.Module:
    cfg = run.cfg.teacher
    return create_teacher(name, modalities=cfg.modalities, ir_channels=max(1, run.data.ir_spec.channels),
                          img_size=run.data.config.img_size, pretrained=cfg.pretrained,
                          pretrained_file=backbone_weights(run, cfg.weights))


def backbone_weights(run: SeedRun, weights: str | None) -> str | None:
    """--teacher_weights: a timm state dict as it is, or a firekd teacher checkpoint (e.g. a teacher
    trained on another dataset), whose backbone is extracted once into a timm state dict in the
    teachers folder."""
    if weights is None or not is_firekd_checkpoint(weights):
        return weights
    payload = load_payload(weights)
    if payload.get("kind") != "teacher":
        raise ModelError(f"--teacher_weights {weights}: a firekd {payload.get('kind')} checkpoint; expected "
                         "a teacher's (teacher_best.pth) or a timm state dict")
    path = run.output / "teachers" / f"backbone-{file_digest(weights)}.pth"
    if not path.exists() and run.writer.enabled:
        state = {k.removeprefix("backbone."): v for k, v in payload["state_dict"].items()
                 if k.startswith("backbone.")}
        run.writer.payload(path, state)
    distributed.barrier()
    return str(path)


def grad_checkpointing(run: SeedRun, name: str) -> bool:
    """--grad_checkpointing: on, off, or auto (on when the plain training step would not fit)."""
    mode = run.cfg.teacher.grad_checkpointing
    if mode == "on":
        log.info("teacher %s: activation checkpointing on (--grad_checkpointing on)", name)
    if mode != "auto":
        return mode == "on"
    batch, size = run.cfg.optim.batch_size, run.data.config.img_size
    # rank 0 decides for every rank: ranks that disagreed would run different collectives (hang)
    free = distributed.from_main(free_device_bytes(run.rt.device))
    if not should_checkpoint(name, batch, size, free, dtype=run.rt.amp_dtype or torch.float32,
                             ir_channels=max(1, run.data.ir_spec.channels)):
        return False
    log.info("teacher %s: activation checkpointing on (batch %d at %d px would need more than 75%% of the "
             "%s free on %s; --grad_checkpointing off turns it off)", name, batch, size, human_bytes(free),
             run.rt.device)
    return True


def teacher_store_of(cfg: RunConfig, name: str, lineage: Lineage, *, writer: Writer,
                     own_variant: str | None = None) -> tuple[Store, dict]:
    """The store of teacher ``name`` for this lineage and these settings, and those settings."""
    settings = teacher_settings(cfg, name, lineage)
    key = stable_hash(settings)
    folder = teacher_store(cfg.execution.output, name, lineage.seed, key, own_variant)
    return Store(folder, key, writer=writer, name="teacher"), settings


def obtain_teacher(run: SeedRun, name: str, retrained: set[str], *, own_variant: str | None = None,
                   link_into: Iterable[SeedDirs] = ()) -> TeacherResult:
    """Reuse the stored teacher for these inputs, or train it (once, under its lock), and link it
    into the seed folders ``link_into`` while still holding the lock (so a concurrent
    --retrain_teacher never takes a consumer's teacher away). With --retrain_teacher a stored
    teacher is trained again, once per invocation: ``retrained`` holds the folders of the teachers
    this invocation has trained. ``own_variant``: with --no_teacher_reuse every variant trains a
    teacher of its own."""
    store, settings = teacher_store_of(run.cfg, name, run.lineage, writer=run.writer, own_variant=own_variant)
    retrain = run.cfg.execution.retrain_teacher and str(store.folder) not in retrained
    on_wait = lambda who: log.info("teacher %s seed %d: waiting for %s, which holds it",  # noqa: E731
                                   name, run.seed, who)
    with store.held(on_wait=on_wait):
        # under torchrun only rank 0 holds the lock: every rank follows its reading of the store
        if distributed.from_main(store.done() and not retrain):
            result = _reuse_teacher(run, name, store)
        else:
            if store.done():
                log.info("teacher %s seed %d: retraining (--retrain_teacher)", name, run.seed)
                store.clear()
            retrained.add(str(store.folder))
            result = _train_teacher(run, name, settings, store)
        _draw_curves(run, name, result)
        for dirs in link_into:
            link_teacher(run.writer, result, dirs)
    return result


def link_teacher(writer: Writer, teacher: TeacherResult, dirs: SeedDirs) -> None:
    """The shared teacher's checkpoint, log and curves, linked into a variant's seed folders (hold
    the teacher's lock)."""
    writer.link(teacher.checkpoint, dirs.models / CHECKPOINTS["teacher"])
    writer.link(teacher.folder / TEACHER_LOG, dirs.metrics / TEACHER_LOG)
    if (teacher.folder / TEACHER_CURVES).exists():
        writer.link(teacher.folder / TEACHER_CURVES, dirs.graphs / TEACHER_CURVES)
    else:  # not drawn (--no_figures, or never trained): no curve of an earlier teacher stays shown
        writer.remove(dirs.graphs / TEACHER_CURVES)


def _draw_curves(run: SeedRun, name: str, teacher: TeacherResult) -> None:
    """The teacher's training curves, drawn from its log into its store once (hold the teacher's
    lock): a teacher trained under --no_figures gets them when a later run draws figures."""
    path, history = teacher.folder / TEACHER_CURVES, teacher.train_log["epochs"]
    if run.cfg.execution.figures and history and not path.exists():
        from firekd.reporting.plots import training_curves  # matplotlib: only where figures are drawn

        inputs = "RGB+IR" if run.cfg.teacher.modalities == "rgb+ir" else "RGB"
        title = f"Teacher {name} ({inputs}) - seed {run.seed}"
        run.writer.figure(path, lambda: training_curves(history, title))


def _reuse_teacher(run: SeedRun, name: str, store: Store) -> TeacherResult:
    model, _ = load_model(store.folder / CHECKPOINTS["teacher"], kind="teacher")
    model = run.rt.prepare_model(model)
    log.info("teacher %s seed %d: reusing %s (trained earlier with the same settings)", name, run.seed,
             store.folder)
    evaluation = evaluate_model(model, run.loaders.val, run.loaders.test, run.rt)
    return TeacherResult(model, read_json(store.folder / TEACHER_LOG), evaluation, store.folder, store.key,
                         reused=True, build=store.build)


def _train_teacher(run: SeedRun, name: str, settings: dict, store_: Store) -> TeacherResult:
    cfg, store = run.cfg, store_.folder
    run.writer.remove(store / TEACHER_CURVES)  # an earlier build's, if any: drawn again from the new log
    torch.manual_seed(run.seed)
    model = build_teacher(run, name)
    if grad_checkpointing(run, name):  # before the weights reach the GPU: free memory as the run starts
        model.set_grad_checkpointing(True)
    model = run.rt.prepare_model(model, compile=cfg.execution.compile, sync_bn=cfg.optim.sync_bn)
    task = Supervised(model, pos_weight_for(cfg.optim.pos_weight, run.data)).to(run.rt.device)
    epochs = cfg.teacher.epochs_for(len(run.loaders.train))  # --steps_teacher: whole epochs of steps
    fit_cfg = FitConfig(kind="teacher", label=f"teacher {name} (seed {run.seed})", epochs=epochs,
                        lr=cfg.teacher.lr, weight_decay=cfg.optim.weight_decay,
                        patience=cfg.teacher.patience, weights={"bce": 1.0}, seed=run.seed,
                        save_every=cfg.execution.save_every)
    ckpt = FileCheckpointer(store, "teacher", model, "teacher",
                            meta={"settings": settings, "data": data_meta(run.data)}, writer=run.writer)
    result = fit(task, run.loaders.train, run.loaders.val, fit_cfg, run.rt, ckpt, run.loaders.start_epoch,
                 on_epoch=tensorboard(cfg.execution.tensorboard and run.writer.enabled, store, "teacher"))
    if not result.history:  # --epochs_teacher 0: the initial weights are the teacher
        log.info("teacher %s seed %d: not trained (--epochs_teacher 0), its initial weights are the teacher",
                 name, run.seed)
        ckpt.save_best({"model": model.state_dict()}, 0, float("nan"))
    evaluation = evaluate_model(model, run.loaders.val, run.loaders.test, run.rt)
    ckpt.finish(evaluation.thresholds)
    log_ = train_log(result, settings, run.rt.precision)
    run.writer.json(store / TEACHER_LOG, log_)
    build = store_.publish({"settings": settings})  # the completion marker, written last
    return TeacherResult(model, log_, evaluation, store, store_.key, build=build)
