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
from firekd.io import NO_WRITER, Writer, read_json
from firekd.kd.variants import CONTROL, uses_teacher
from firekd.keys import outputs_settings, run_settings, seed_key, stable_hash, student_key
from firekd.locks import FileLock
from firekd.recipes.checks import check_teacher
from firekd.recipes.compress import compress_students
from firekd.recipes.context import ModelResult, SeedRun, seed_run
from firekd.recipes.data import DataBundle
from firekd.recipes.efficiency import add_efficiency, stored_teacher_efficiency
from firekd.recipes.outputs import publish, write_seed_outputs
from firekd.recipes.student import StudentResult, train_students
from firekd.recipes.teacher import TeacherResult, obtain_teacher, teacher_store_of
from firekd.rundir import STUDENT_LOG, RunDir, SeedDirs, control_store, working_on
from firekd.store import Store

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


def control_store_of(cfg: RunConfig, data: DataBundle, seed: int, writer: Writer) -> tuple[Store, SeedDirs]:
    """The control of ``seed``: its folder (named by its student's key, the same under every
    teacher) and the store of its finished outputs (keyed by the seed key: a change of compression
    or figure settings redoes the outputs, reusing the trained control)."""
    lineage = data.lineage(seed, distributed.info().world_size)
    folder_key = student_key(cfg, "", CONTROL, lineage)
    dirs = control_store(cfg.execution.output, cfg.student.arch, seed, folder_key)
    store = Store(dirs.metrics.parent, seed_key(cfg, "", CONTROL, lineage), writer=writer, name="control")
    return store, dirs


def plan(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir]) -> list[Job]:
    """The jobs still to do, in order; finished seeds are left out (a rerun resumes the grid)."""
    if cfg.execution.teacher_only:
        return [Job(t, s) for t in cfg.teachers for s in cfg.seeds]
    jobs: list[Job] = []
    control_done = {s for s in cfg.seeds
                    if CONTROL in cfg.variants and control_store_of(cfg, data, s, NO_WRITER)[0].done()}
    control_due = {s for s in cfg.seeds if CONTROL in cfg.variants} - control_done
    lockstep = cfg.execution.lockstep == "on" and cfg.execution.teacher_reuse
    for teacher in cfg.teachers:
        for seed in cfg.seeds:
            done = [v for v in cfg.variants
                    if uses_teacher(v) and _kd_done(cfg, data, runs[teacher, v], seed)]
            for v in [*done, *([CONTROL] if seed in control_done else [])]:
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


def _run_names(cfg: RunConfig, teacher: str | None, variants: tuple[str, ...]) -> list[str]:
    """The run folders a group of students works for (the control: under every teacher)."""
    return [f"{t}_{v}" for v in variants for t in (cfg.teachers if v == CONTROL else (teacher,))]


def _kd_done(cfg: RunConfig, data: DataBundle, run: RunDir, seed: int) -> bool:
    """A KD seed is done when its outputs match the settings and its teacher was not retrained since
    (--retrain_teacher retrains the teacher and, so, its students)."""
    lineage = data.lineage(seed, distributed.info().world_size)
    key = seed_key(cfg, run.teacher, run.variant, lineage)
    if cfg.execution.retrain_teacher or not run.seed_done(seed, key):
        return False
    store = teacher_store_of(cfg, run.teacher, lineage, writer=NO_WRITER)[0]
    current = store.build
    return current is None or run.final_evaluation(seed)["run"].get("teacher_build") == current


def run_job(cfg: RunConfig, data: DataBundle, job: Job, writer: Writer, retrained: set[str]) -> str:
    """Do one job. ``retrained``: the teachers this invocation trained (--retrain_teacher acts once)."""
    run = seed_run(cfg, data.for_seed(job.seed), job.seed, writer)
    if not job.variants:
        with working_on(f"{job.teacher}_{v}" for v in cfg.variants):
            obtain_teacher(run, job.teacher, retrained)
        return job.name
    lockstep = cfg.execution.lockstep == "on" and cfg.execution.teacher_reuse
    for group in [job.variants] if lockstep else [(v,) for v in job.variants]:
        with working_on(_run_names(cfg, job.teacher, group)):
            _train_group(run, job.teacher, group, retrained)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return job.name


@dataclass
class ControlClaim:
    """The control of a job's seed: its store and, when this process trains it, the store's lock."""

    store: Store
    dirs: SeedDirs
    lock: FileLock | None


def _claim_control(run: SeedRun) -> ControlClaim | None:
    """The control to train in this job (None: already done). Another process training it now keeps
    its lock: this job trains its other students and waits for that one afterwards."""
    store, dirs = control_store_of(run.cfg, run.data, run.seed, run.writer)
    lock = store.try_hold()
    if lock is not None and store.done():
        lock.release()
        return None
    if lock is None:
        log.info("seed %d: another process (%s) is training the bce control; waiting for it after "
                 "this job's other students", run.seed, FileLock(store.lock_path).holder())
    return ControlClaim(store, dirs, lock)


def _train_group(run: SeedRun, teacher_name: str | None, variants: tuple[str, ...],
                 retrained: set[str]) -> None:
    """Students of ``variants`` trained together (one teacher), compressed, written. The control is
    trained under its store's lock, by one process at a time."""
    control = _claim_control(run) if CONTROL in variants else None
    mine = tuple(v for v in variants if v != CONTROL or (control and control.lock))
    try:
        if mine:
            _train_variants(run, teacher_name, mine, retrained, control)
    finally:
        if control and control.lock:
            control.lock.release()
    if control and not control.lock:  # trained elsewhere: wait; train it here only if that one failed
        with control.store.held():
            if not control.store.done():
                _train_variants(run, None, (CONTROL,), retrained, control)


def _train_variants(run: SeedRun, teacher_name: str | None, variants: tuple[str, ...],
                    retrained: set[str], control: ControlClaim | None) -> None:
    t0 = time.perf_counter()
    cfg = run.cfg
    folders = {v: RunDir(cfg.execution.output, teacher_name, v).seed(run.seed) for v in variants
               if uses_teacher(v)}
    if CONTROL in variants:
        folders[CONTROL] = control.dirs
        control.store.invalidate()
    for dirs in folders.values():
        dirs.create(run.writer)
    kd = [v for v in variants if uses_teacher(v)]
    own = None if cfg.execution.teacher_reuse else kd[0] if kd else None
    teacher = None
    if kd:
        with working_on(_run_names(cfg, teacher_name, tuple(kd))):  # not the control's logs
            teacher = obtain_teacher(run, teacher_name, retrained, own_variant=own,
                                     link_into=[folders[v] for v in kd])
    control_log = None if CONTROL in variants else _control_log(run)
    if teacher is not None and control_log is not None:  # before the students: the control is known
        check_teacher(teacher_name, run.seed, teacher.train_log, control_log)
    students = train_students(run, folders, teacher)
    if teacher is not None and CONTROL in students:  # the control trained alongside: check now
        check_teacher(teacher_name, run.seed, teacher.train_log, students[CONTROL].train_log)
    compressed = compress_students(run, students, teacher) if cfg.compress.compress else {}
    for variant, student in students.items():
        _finish_seed(run, teacher_name, variant, teacher if uses_teacher(variant) else None, student,
                     compressed.get(variant, {}))
    if CONTROL in variants:
        control.store.publish()  # after its final_evaluation.json: the control is done
    log.info("seed %d: %s done in %.0fs (student f1_macro %s)", run.seed, ", ".join(variants),
             time.perf_counter() - t0,
             ", ".join(f"{v} {s.evaluation.metrics['f1_macro']:.4f}" for v, s in students.items()))


def _control_log(run: SeedRun) -> dict | None:
    """The training log of this seed's finished control (None when it is not trained yet)."""
    store, dirs = control_store_of(run.cfg, run.data, run.seed, NO_WRITER)
    path = dirs.metrics / STUDENT_LOG
    return read_json(path) if store.done() and path.exists() else None


def _finish_seed(run: SeedRun, teacher_name: str | None, variant: str, teacher: TeacherResult | None,
                 student: StudentResult, compressed: dict[str, ModelResult]) -> None:
    cfg, data = run.cfg, run.data
    models = {"student": ModelResult(student.model, student.evaluation,
                                     student.dirs.models / "student_best.pth", student.train_log),
              **compressed}
    if teacher is not None:
        # measured after the jobs (recipes.ablation) unless stored already: {} leaves it to then
        efficiency = stored_teacher_efficiency(cfg, data, teacher_name) or {}
        models = {"teacher": ModelResult(teacher.model, teacher.evaluation, teacher.checkpoint,
                                         teacher.train_log, efficiency=efficiency), **models}
    add_efficiency(models, size=data.config.img_size, ir_channels=max(1, data.ir_spec.channels),
                   runs=cfg.compress.latency_runs, threads=cfg.compress.latency_threads, rt=run.rt)
    key = seed_key(cfg, teacher_name or "", variant, run.lineage)
    block = {"seed": run.seed, "variant": variant, "settings_hash": key,
             "outputs_key": stable_hash(outputs_settings(cfg)), "precision": run.rt.precision}
    if uses_teacher(variant):
        name = f"{teacher_name}_{variant}"
        block |= {"name": name, "run_key": stable_hash(run_settings(cfg, teacher_name, variant,
                                                                  data.run_lineage(run.world_size))),
                  "teacher_reused": teacher.reused, "teacher_build": teacher.build}
        title = f"{name}, seed {run.seed}"
    else:
        block |= {"name": CONTROL, "teacher_reused": False}
        title = f"{CONTROL_TITLE}, seed {run.seed}"
    write_seed_outputs(run, student.dirs, models, title=title, run_block=block, teacher=teacher)


def publish_controls(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir],
                     writer: Writer) -> None:
    """Show every seed's trained control under every teacher (``{teacher}_bce``): links, and a
    final_evaluation.json naming the run, made under the control store's lock."""
    if CONTROL not in cfg.variants:
        return
    ws = distributed.info().world_size
    for seed in cfg.seeds:
        store, source = control_store_of(cfg, data, seed, writer)
        with store.held():
            if not store.done():
                continue
            for teacher in cfg.teachers:
                run = runs[teacher, CONTROL]
                if run.seed_done(seed, store.key):
                    continue
                settings = run_settings(cfg, teacher, CONTROL, data.run_lineage(ws))
                block = {"name": run.name, "run_key": stable_hash(settings),
                         "control_store": source.metrics.parent.relative_to(run.output).as_posix()}
                publish(writer, source, run.seed(seed), block)
                log.info("%s seed %d: the control (trained once for every teacher) from %s", run.name, seed,
                         source.metrics.parent)
