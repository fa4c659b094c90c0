"""The student stage: the RGB-only students of one seed, one per loss variant, trained in one pass.

Every variant of a seed (and the ``bce`` control when it is due) trains in lockstep on the same
batches: each batch is loaded and augmented once, the frozen teacher runs once, and each student
takes its own step with its own loss, optimizer, schedule, projector and early stopping
(`firekd.engine.loop.fit_many`). Each student gets exactly what it would get trained alone.
With unlabelled pairs (--unlabeled_csv) the KD students train on them too, so the control, which
sees the labelled pairs alone, takes a pass of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from firekd.checkpoints import load_model, load_payload
from firekd.engine.evaluation import Evaluation, evaluate_model
from firekd.engine.loop import FitConfig, Member
from firekd.io import read_json
from firekd.kd.distiller import Distiller, Supervised
from firekd.kd.variants import distills, variant_weights
from firekd.keys import stable_hash, student_settings
from firekd.models import build_student
from firekd.recipes.context import FileCheckpointer, SeedRun, raise_failures
from firekd.recipes.teacher import TeacherResult, data_meta, pos_weight_for, tensorboard, train_log
from firekd.rundir import CHECKPOINTS, PROJECTOR, STUDENT_CURVES, STUDENT_LOG, SeedDirs
from firekd.store import Store

log = logging.getLogger(__name__)


@dataclass
class Source:
    """A frozen model a student distils from: a trained teacher (`TeacherResult` has these fields)
    or, for ``self_kd``, the seed's ``bce`` control wrapped as an RGB-only teacher."""

    model: nn.Module
    key: str  # its store key: the student's upstream
    build: str | None  # its store's build id: a student of another build is stale


@dataclass
class StudentResult:
    """A trained student with its L2 projector (kept for fine-tuning after pruning), training
    log, test evaluation and the seed folders it was saved in."""

    variant: str
    key: str  # the student's store key: its compressed forms build on it
    model: nn.Module
    projector: nn.Module | None
    train_log: dict
    evaluation: Evaluation
    dirs: SeedDirs


def make_task(run: SeedRun, student: nn.Module, variant: str, teacher: nn.Module | None,
              projector: nn.Module | None = None) -> nn.Module:
    """The variant's training task: the student alone (``bce``) or distilled from ``teacher``."""
    pos_weight = pos_weight_for(run.cfg.optim.pos_weight, run.data)
    if not distills(variant):
        return Supervised(student, pos_weight)
    weights = variant_weights(variant, run.cfg.student.loss_weights)
    return Distiller(student, teacher, set(weights), temperature=run.cfg.student.kd_temperature,
                     pos_weight=pos_weight, projector=projector)


def fit_config(run: SeedRun, variant: str, *, kind: str, epochs: int) -> FitConfig:
    cfg = run.cfg
    return FitConfig(kind=kind, label=f"{kind} {variant} (seed {run.seed})", epochs=epochs,
                     lr=cfg.student.lr, weight_decay=cfg.optim.weight_decay,
                     patience=cfg.student.patience,
                     weights=variant_weights(variant, cfg.student.loss_weights), seed=run.seed,
                     save_every=cfg.execution.save_every)


def student_store(run: SeedRun, variant: str, dirs: SeedDirs,
                  teacher: TeacherResult | Source | None) -> tuple[Store, dict]:
    """The store of ``variant``'s student in its seed models folder (guarded by its run folder's
    lock, or the control store's), and the settings that key it."""
    settings = student_settings(run.cfg, variant, run.lineage.on(teacher.key if teacher else None))
    return Store(dirs.models, stable_hash(settings), writer=run.writer, name="student"), settings


def train_students(run: SeedRun, folders: dict[str, SeedDirs],
                   teacher: TeacherResult | Source | None) -> dict[str, StudentResult]:
    """Train one student per variant in ``folders`` (its seed folders) in one pass over the data;
    KD variants (and ``self_kd``, given the control as ``teacher``) distil from ``teacher``.
    Resumes each from its last finished epoch; a student stored with the same settings (and the
    same build of its teacher) is reused."""
    out, todo, stores = {}, {}, {}
    for variant, dirs in folders.items():
        t = teacher if distills(variant) else None
        stores[variant], settings = student_store(run, variant, dirs, t)
        record = stores[variant].record()
        if record is not None and record.get("teacher_build") == (t.build if t else None):
            out[variant] = _reuse(run, variant, dirs, t, stores[variant].key)
        else:
            stores[variant].invalidate()
            todo[variant] = _member(run, variant, dirs, t, settings)
    results = run.fit_variants(todo)
    for variant, result in results.items():
        if result.error is None:
            out[variant] = _finish(run, variant, folders[variant], todo[variant], result, stores[variant])
    raise_failures(results, "students")  # after the others are stored: a rerun trains the failed alone
    return {variant: out[variant] for variant in folders}


def _reuse(run: SeedRun, variant: str, dirs: SeedDirs, teacher: TeacherResult | Source | None,
           key: str) -> StudentResult:
    """The student stored earlier with the same settings."""
    path = dirs.models / CHECKPOINTS["student"]
    student, _ = load_model(path, kind="student")
    student = run.rt.prepare_model(student)
    task = make_task(run, student, variant, teacher.model if teacher else None).to(run.rt.device)
    projector = getattr(task, "projector", None)
    if projector is not None:
        projector.load_state_dict(load_payload(dirs.models / PROJECTOR)["state_dict"])
    log.info("student %s seed %d: reusing the student trained earlier with the same settings (%s)",
             variant, run.seed, path)
    evaluation = evaluate_model(student, run.loaders.val, run.loaders.test, run.rt)
    return StudentResult(variant, key, student, projector, read_json(dirs.metrics / STUDENT_LOG), evaluation,
                         dirs)


def _member(run: SeedRun, variant: str, dirs: SeedDirs, teacher: TeacherResult | Source | None,
            settings: dict) -> Member:
    cfg = run.cfg
    run.writer.remove(dirs.graphs / STUDENT_CURVES)  # an earlier training's: the outputs draw the new one
    torch.manual_seed(run.seed)  # every variant's student starts from the same weights
    student = run.rt.prepare_model(build_student(cfg.student.arch, pretrained=cfg.student.pretrained,
                                                 weights=cfg.student.weights),
                                   compile=cfg.execution.compile, sync_bn=cfg.optim.sync_bn)
    task = make_task(run, student, variant, teacher.model if teacher else None).to(run.rt.device)
    projector = getattr(task, "projector", None)
    if projector is not None:
        log.info("student %s seed %d: L2 projector %d params (trained with the student, not deployed)",
                 variant, run.seed, sum(p.numel() for p in projector.parameters()))
    meta = {"settings": settings, "teacher_build": teacher.build if teacher else None,
            "data": data_meta(run.data)}
    ckpt = FileCheckpointer(dirs.models, "student", student, "student", meta=meta, writer=run.writer)
    on_epoch = tensorboard(cfg.execution.tensorboard and run.writer.enabled, dirs.models, "student")
    return Member(task, fit_config(run, variant, kind="student", epochs=cfg.student.epochs), ckpt, on_epoch)


def _finish(run: SeedRun, variant: str, dirs: SeedDirs, member: Member, result,
            store: Store) -> StudentResult:
    task = member.task
    student = task.trained_modules()["model"]
    evaluation = evaluate_model(student, run.loaders.val, run.loaders.test, run.rt)
    member.checkpointer.finish(evaluation.thresholds)
    meta = member.checkpointer.meta
    log_ = {**train_log(result, meta["settings"], run.rt.precision), "params": trained_params(task)}
    run.writer.json(dirs.metrics / STUDENT_LOG, log_)
    store.publish({"teacher_build": meta["teacher_build"]})  # written last: the student is done
    projector = getattr(task, "projector", None)
    return StudentResult(variant, store.key, student, projector, log_, evaluation, dirs)


def trained_params(task: nn.Module) -> dict[str, int]:
    """Parameters trained in a stage: the student, and the L2 projector that is trained with it
    but not deployed (it never enters student_best.pth)."""
    modules = task.trained_modules()
    count = lambda name: sum(p.numel() for p in modules[name].parameters()) if name in modules else 0  # noqa: E731
    return {"student": count("model"), "projector": count("projector")}
