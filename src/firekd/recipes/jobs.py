"""The grid's units of work, planned once and run the same way in this process or in grid jobs.

A job is one seed of one teacher: obtain the teacher (train it or reuse the stored one), train the
students of the job's variants in lockstep, compress them, write every seed folder. The ``bce``
control depends on no teacher: the first job of a seed trains it (into ``output/controls/...``)
and `publish_controls` shows it under every teacher. A job without variants trains (or finds) its
teacher and stops (--teacher_only, and the teacher jobs that come before a seed's one-variant jobs
with --lockstep off).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from firekd.config import RunConfig
from firekd.engine import distributed
from firekd.io import Writer, read_json
from firekd.kd.variants import CONTROL, uses_teacher
from firekd.keys import run_settings, seed_key, stable_hash
from firekd.recipes.checks import check_teacher
from firekd.recipes.compress import compress_students
from firekd.recipes.context import ModelResult, SeedRun, seed_run
from firekd.recipes.data import DataBundle
from firekd.recipes.efficiency import add_efficiency, teacher_efficiency
from firekd.recipes.outputs import link_teacher, publish, write_seed_outputs
from firekd.recipes.student import StudentResult, train_students
from firekd.recipes.teacher import TeacherResult, obtain_teacher
from firekd.rundir import STUDENT_LOG, RunDir, SeedDirs, control_store

log = logging.getLogger(__name__)
CONTROL_TITLE = "bce control (the student alone, no teacher)"


@dataclass(frozen=True)
class Job:
    teacher: str | None  # None: the control alone (no KD variant of this seed is due)
    seed: int
    variants: tuple[str, ...] = ()  # (): the teacher alone
    after: tuple[Job, ...] = ()  # jobs that must finish first

    @property
    def name(self) -> str:
        return f"{self.teacher or 'control'}/seed {self.seed}/{'+'.join(self.variants) or 'teacher'}"


def control_dirs(cfg: RunConfig, data: DataBundle, seed: int) -> tuple[SeedDirs, str]:
    """Where the control of ``seed`` is stored, and its key (the same under every teacher)."""
    key = seed_key(cfg, "", CONTROL, seed, data.for_seed(seed).fingerprint, distributed.info().world_size)
    return control_store(cfg.execution.output, cfg.student.arch, seed, key), key


def plan(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir]) -> list[Job]:
    """The jobs still to do, in order; finished seeds are left out (a rerun resumes the grid)."""
    ws = distributed.info().world_size
    if cfg.execution.teacher_only:
        return [Job(t, s) for t in cfg.teachers for s in cfg.seeds]
    jobs: list[Job] = []
    control_due = {s for s in cfg.seeds if CONTROL in cfg.variants and not _control_done(cfg, data, s)}
    lockstep = cfg.execution.lockstep == "on" and cfg.execution.teacher_reuse
    for teacher in cfg.teachers:
        for seed in cfg.seeds:
            done = [v for v in cfg.variants if runs[teacher, v].seed_done(
                seed, seed_key(cfg, teacher, v, seed, data.for_seed(seed).fingerprint, ws))]
            for v in done:
                log.info("%s seed %d: already done, skipping", runs[teacher, v].name, seed)
            kd = [v for v in cfg.variants if uses_teacher(v) and v not in done]
            control = (CONTROL,) if seed in control_due else ()
            control_due.discard(seed)
            if lockstep:
                jobs += [Job(teacher, seed, (*kd, *control))] if kd or control else []
                continue
            first = Job(teacher, seed) if kd and cfg.execution.teacher_reuse else None
            jobs += [first] if first else []
            jobs += [Job(teacher, seed, (v,), (first,) if first else ()) for v in kd]
            jobs += [Job(None, seed, control)] if control else []
    return jobs


def _control_done(cfg: RunConfig, data: DataBundle, seed: int) -> bool:
    dirs, key = control_dirs(cfg, data, seed)
    return dirs.done(key)


def run_job(cfg: RunConfig, data: DataBundle, job: Job, writer: Writer, retrained: set[str]) -> str:
    """Do one job. ``retrained``: the teachers this invocation trained (--retrain_teacher acts once)."""
    run = seed_run(cfg, data.for_seed(job.seed), job.seed, writer)
    if not job.variants:
        obtain_teacher(run, job.teacher, retrained)
        return job.name
    lockstep = cfg.execution.lockstep == "on" and cfg.execution.teacher_reuse
    for group in [job.variants] if lockstep else [(v,) for v in job.variants]:
        _train_group(run, job.teacher, group, retrained)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return job.name


def _train_group(run: SeedRun, teacher_name: str | None, variants: tuple[str, ...],
                 retrained: set[str]) -> None:
    """Students of ``variants`` trained together (one teacher), compressed, written."""
    t0 = time.perf_counter()
    cfg = run.cfg
    kd = [v for v in variants if uses_teacher(v)]
    own = None if cfg.execution.teacher_reuse else kd[0] if kd else None
    teacher = obtain_teacher(run, teacher_name, retrained, own_variant=own) if kd else None
    folders = {v: RunDir(cfg.execution.output, teacher_name, v).seed(run.seed) for v in kd}
    if CONTROL in variants:
        folders[CONTROL] = control_dirs(cfg, run.data, run.seed)[0]
    for dirs in folders.values():
        dirs.create(run.writer)
    control_log = _control_log(run)
    if teacher is not None and control_log is not None:  # before the students: the control is known
        check_teacher(teacher_name, run.seed, teacher.train_log, control_log)
    students = train_students(run, folders, teacher)
    if teacher is not None and control_log is None and CONTROL in students:  # trained alongside
        check_teacher(teacher_name, run.seed, teacher.train_log, students[CONTROL].train_log)
    compressed = compress_students(run, students, teacher) if cfg.compress.compress else {}
    for variant, student in students.items():
        _finish_seed(run, teacher_name, variant, teacher if uses_teacher(variant) else None, student,
                     compressed.get(variant, {}))
    log.info("seed %d: %s done in %.0fs (student f1_macro %s)", run.seed, ", ".join(variants),
             time.perf_counter() - t0,
             ", ".join(f"{v} {s.evaluation.metrics['f1_macro']:.4f}" for v, s in students.items()))


def _control_log(run: SeedRun) -> dict | None:
    """The training log of this seed's finished control (None when it is not trained yet)."""
    dirs, key = control_dirs(run.cfg, run.data, run.seed)
    path = dirs.metrics / STUDENT_LOG
    return read_json(path) if dirs.done(key) and path.exists() else None


def _finish_seed(run: SeedRun, teacher_name: str | None, variant: str, teacher: TeacherResult | None,
                 student: StudentResult, compressed: dict[str, ModelResult]) -> None:
    cfg, data = run.cfg, run.data
    models = {"student": ModelResult(student.model, student.evaluation,
                                     student.dirs.models / "student_best.pth", student.train_log),
              **compressed}
    if teacher is not None:
        link_teacher(run.writer, teacher, student.dirs)
        efficiency = teacher_efficiency(cfg, data, teacher_name, run.writer) if run.writer.enabled else None
        models = {"teacher": ModelResult(teacher.model, teacher.evaluation, teacher.checkpoint,
                                         teacher.train_log, efficiency=efficiency), **models}
    add_efficiency(models, size=data.config.img_size, ir_channels=max(1, data.ir_spec.channels),
                   runs=cfg.compress.latency_runs, threads=cfg.compress.latency_threads, rt=run.rt)
    key = seed_key(cfg, teacher_name or "", variant, run.seed, data.fingerprint, run.world_size)
    if uses_teacher(variant):
        name = f"{teacher_name}_{variant}"
        block = {"name": name, "seed": run.seed, "variant": variant, "settings_hash": key,
                 "run_key": stable_hash(run_settings(cfg, teacher_name, variant, data.shared_fingerprint,
                                                     run.world_size)),
                 "teacher_reused": teacher.reused, "precision": run.rt.precision}
        title = f"{name}, seed {run.seed}"
    else:
        block = {"name": CONTROL, "seed": run.seed, "variant": variant, "settings_hash": key,
                 "teacher_reused": False, "precision": run.rt.precision}
        title = f"{CONTROL_TITLE}, seed {run.seed}"
    write_seed_outputs(run, student.dirs, models, title=title, run_block=block, teacher=teacher)


def publish_controls(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir],
                     writer: Writer) -> None:
    """Show every seed's trained control under every teacher (``{teacher}_bce``): links, and a
    final_evaluation.json naming the run."""
    if CONTROL not in cfg.variants:
        return
    ws = distributed.info().world_size
    for seed in cfg.seeds:
        source, key = control_dirs(cfg, data, seed)
        if not source.done(key):
            continue
        for teacher in cfg.teachers:
            run = runs[teacher, CONTROL]
            if run.seed_done(seed, key):
                continue
            block = {"name": run.name, "run_key": stable_hash(run_settings(cfg, teacher, CONTROL,
                                                                           data.fingerprint, ws)),
                     "control_store": source.metrics.parent.relative_to(run.output).as_posix()}
            publish(writer, source, run.seed(seed), block)
            log.info("%s seed %d: the control (trained once for every teacher) from %s", run.name, seed,
                     source.metrics.parent)
