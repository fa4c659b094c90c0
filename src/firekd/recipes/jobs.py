"""The grid's units of work, planned once and run the same way in this process or in grid jobs.

A job is one seed of one teacher: obtain the teacher (train it or reuse the stored one), train the
students of the job's variants in lockstep, compress them, write every seed folder. The no-teacher
baselines depend on no teacher: the first job of a seed trains the ``bce`` control (into
``output/controls/...``) and then ``self_kd`` (a fresh student distilled from that control, its
store beside it), and `publish_controls` shows both under every teacher. A job without variants
trains (or finds) its teacher and stops (--teacher_only, and the teacher jobs that come before a
seed's one-variant jobs with --lockstep off).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from firekd.checkpoints import load_model
from firekd.config import RunConfig
from firekd.engine import distributed
from firekd.errors import TrainingError
from firekd.io import NO_WRITER, Writer, read_json
from firekd.kd.distiller import RgbTeacher
from firekd.kd.variants import BASELINES, CONTROL, SELF_KD, uses_teacher
from firekd.keys import outputs_settings, run_settings, seed_key, stable_hash, student_key
from firekd.locks import FileLock
from firekd.recipes.checks import check_teacher
from firekd.recipes.compress import compress_students
from firekd.recipes.context import ModelResult, SeedRun, seed_run
from firekd.recipes.data import DataBundle
from firekd.recipes.efficiency import add_efficiency, stored_teacher_efficiency
from firekd.recipes.outputs import publish, write_seed_outputs
from firekd.recipes.student import Source, StudentResult, train_students
from firekd.recipes.teacher import TeacherResult, obtain_teacher, teacher_store_of
from firekd.rundir import CHECKPOINTS, STUDENT_LOG, RunDir, SeedDirs, control_store, working_on
from firekd.store import Store

log = logging.getLogger(__name__)
TITLES = {CONTROL: "bce control (the student alone, no teacher)",
          SELF_KD: "self_kd baseline (kl_bce from the bce control, no teacher)"}


@dataclass(frozen=True)
class Job:
    teacher: str | None  # None: the control alone (no KD variant of this seed is due)
    seed: int
    variants: tuple[str, ...] = ()  # (): the teacher alone
    after: tuple[Job, ...] = ()  # jobs that must finish first

    @property
    def name(self) -> str:
        return f"{self.teacher or 'control'}/seed {self.seed}/{'+'.join(self.variants) or 'teacher'}"


def control_store_of(cfg: RunConfig, data: DataBundle, seed: int, writer: Writer,
                     variant: str = CONTROL) -> tuple[Store, SeedDirs]:
    """The control of ``seed`` (or the baseline ``variant``: ``self_kd``): its folder (named by
    its student's key, the same under every teacher; self_kd's key builds on the control's) and
    the store of its finished outputs (keyed by the seed key: a change of compression or figure
    settings redoes the outputs, reusing the trained student)."""
    lineage = data.lineage(seed, distributed.info().world_size)
    folder_key = student_key(cfg, "", variant, lineage)
    dirs = control_store(cfg.execution.output, cfg.student.arch, seed, folder_key, variant)
    store = Store(dirs.metrics.parent, seed_key(cfg, "", variant, lineage), writer=writer,
                  name="control" if variant == CONTROL else variant)
    return store, dirs


def control_build(cfg: RunConfig, data: DataBundle, seed: int) -> str | None:
    """The build id of the seed's trained control student (None: not trained): self_kd made from
    another build is stale."""
    lineage = data.lineage(seed, distributed.info().world_size)
    dirs = control_store_of(cfg, data, seed, NO_WRITER)[1]
    return Store(dirs.models, student_key(cfg, "", CONTROL, lineage), writer=NO_WRITER, name="student").build


def baseline_done(cfg: RunConfig, data: DataBundle, seed: int, variant: str) -> bool:
    """The baseline's seed is finished (self_kd: from the control's current build)."""
    record = control_store_of(cfg, data, seed, NO_WRITER, variant)[0].record()
    if record is None or variant != SELF_KD:
        return record is not None
    return record.get("control_build") == control_build(cfg, data, seed)


def plan(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir]) -> list[Job]:
    """The jobs still to do, in order; finished seeds are left out (a rerun resumes the grid)."""
    if cfg.execution.teacher_only:
        return [Job(t, s) for t in cfg.teachers for s in cfg.seeds]
    jobs: list[Job] = []
    baselines = [b for b in BASELINES if b in cfg.variants]
    already = {b: {s for s in cfg.seeds if baseline_done(cfg, data, s, b)} for b in baselines}
    due = {b: set(cfg.seeds) - already[b] for b in baselines}
    lockstep = cfg.execution.lockstep == "on" and cfg.execution.teacher_reuse
    for teacher in cfg.teachers:
        for seed in cfg.seeds:
            done = [v for v in cfg.variants
                    if uses_teacher(v) and _kd_done(cfg, data, runs[teacher, v], seed)]
            for v in [*done, *(b for b in baselines if seed in already[b])]:
                log.info("%s seed %d: already done, skipping", runs[teacher, v].name, seed)
            kd = [v for v in cfg.variants if uses_teacher(v) and v not in done]
            control = tuple(b for b in baselines if seed in due[b])  # self_kd last: after the control
            for b in control:
                due[b].discard(seed)
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
    return [f"{t}_{v}" for v in variants for t in (cfg.teachers if v in BASELINES else (teacher,))]


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
    """The control (or self_kd) of a job's seed: its store and, when this process trains it, the
    store's lock."""

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
    """Students of ``variants`` trained together (one teacher), compressed, written; then self_kd,
    which distils from the control and so needs it finished."""
    first = tuple(v for v in variants if v != SELF_KD)
    if first:
        _train_first(run, teacher_name, first, retrained)
    if SELF_KD in variants:
        _train_self_kd(run, retrained)


def _train_first(run: SeedRun, teacher_name: str | None, variants: tuple[str, ...],
                 retrained: set[str]) -> None:
    """The students of ``variants`` (one teacher, and the control). The control is trained under
    its store's lock, by one process at a time."""
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


def _train_self_kd(run: SeedRun, retrained: set[str]) -> None:
    """The seed's self_kd student, under its store's lock: the control first (trained here when no
    earlier job did, e.g. when ``bce`` is not among --variants), then a fresh student distilled
    from it."""
    cfg, data = run.cfg, run.data
    if not control_store_of(cfg, data, run.seed, NO_WRITER)[0].done():
        with working_on(_run_names(cfg, None, (CONTROL,))):
            _train_first(run, None, (CONTROL,), retrained)
    store, dirs = control_store_of(cfg, data, run.seed, run.writer, SELF_KD)
    wait = lambda holder: log.info("seed %d: waiting for %s, who is training self_kd", run.seed, holder)  # noqa: E731
    with store.held(on_wait=wait):
        if not baseline_done(cfg, data, run.seed, SELF_KD):
            _train_variants(run, None, (SELF_KD,), retrained, ControlClaim(store, dirs, None),
                            _control_source(run))


def _control_source(run: SeedRun) -> Source:
    """The seed's finished control as self_kd's frozen RGB-only teacher (read under its lock)."""
    store, dirs = control_store_of(run.cfg, run.data, run.seed, run.writer)
    with store.held():
        build = control_build(run.cfg, run.data, run.seed)
        if not store.done() or build is None:
            raise TrainingError(f"seed {run.seed}: the bce control is not trained ({store.folder}); "
                                "self_kd distils from it")
        model, _ = load_model(dirs.models / CHECKPOINTS["student"], kind="student")
    log.info("self_kd seed %d: distilling from the bce control (build %s, %s)", run.seed, build, store.folder)
    return Source(RgbTeacher(run.rt.prepare_model(model)), student_key(run.cfg, "", CONTROL, run.lineage),
                  build)


def _train_variants(run: SeedRun, teacher_name: str | None, variants: tuple[str, ...],
                    retrained: set[str], control: ControlClaim | None, source: Source | None = None) -> None:
    """``control``: the store of the group's baseline (the control, or self_kd, which distils from
    ``source``, the control)."""
    t0 = time.perf_counter()
    cfg = run.cfg
    folders = {v: RunDir(cfg.execution.output, teacher_name, v).seed(run.seed) for v in variants
               if uses_teacher(v)}
    baseline = next((v for v in variants if v in BASELINES), None)
    if baseline is not None:
        folders[baseline] = control.dirs
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
    students = train_students(run, folders, source or teacher)
    if teacher is not None and CONTROL in students:  # the control trained alongside: check now
        check_teacher(teacher_name, run.seed, teacher.train_log, students[CONTROL].train_log)
    compressed = compress_students(run, students, source or teacher) if cfg.compress.compress else {}
    for variant, student in students.items():
        _finish_seed(run, teacher_name, variant, teacher if uses_teacher(variant) else None, student,
                     compressed.get(variant, {}), source)
    if baseline is not None:  # after its final_evaluation.json: the baseline is done
        control.store.publish({"control_build": source.build} if source else None)
    log.info("seed %d: %s done in %.0fs (student f1_macro %s)", run.seed, ", ".join(variants),
             time.perf_counter() - t0,
             ", ".join(f"{v} {s.evaluation.metrics['f1_macro']:.4f}" for v, s in students.items()))


def _control_log(run: SeedRun) -> dict | None:
    """The training log of this seed's finished control (None when it is not trained yet)."""
    store, dirs = control_store_of(run.cfg, run.data, run.seed, NO_WRITER)
    path = dirs.metrics / STUDENT_LOG
    return read_json(path) if store.done() and path.exists() else None


def _finish_seed(run: SeedRun, teacher_name: str | None, variant: str, teacher: TeacherResult | None,
                 student: StudentResult, compressed: dict[str, ModelResult],
                 source: Source | None = None) -> None:
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
        block |= {"name": variant, "teacher_reused": False}
        if source is not None:  # self_kd: the control it distilled from (no teacher)
            block |= {"control_key": source.key, "control_build": source.build}
        title = f"{TITLES[variant]}, seed {run.seed}"
    write_seed_outputs(run, student.dirs, models, title=title, run_block=block, teacher=teacher)


def publish_controls(cfg: RunConfig, data: DataBundle, runs: dict[tuple[str, str], RunDir],
                     writer: Writer) -> None:
    """Show every seed's trained control (and self_kd) under every teacher (``{teacher}_bce``,
    ``{teacher}_self_kd``): links, and a final_evaluation.json naming the run, made under the
    baseline store's lock."""
    ws = distributed.info().world_size
    for variant, seed in [(b, s) for b in BASELINES if b in cfg.variants for s in cfg.seeds]:
        store, source = control_store_of(cfg, data, seed, writer, variant)
        with store.held():
            if not store.done():
                continue
            for teacher in cfg.teachers:
                run = runs[teacher, variant]
                if run.seed_done(seed, store.key):
                    continue
                settings = run_settings(cfg, teacher, variant, data.run_lineage(ws))
                block = {"name": run.name, "run_key": stable_hash(settings),
                         "control_store": source.metrics.parent.relative_to(run.output).as_posix()}
                publish(writer, source, run.seed(seed), block)
                log.info("%s seed %d: the %s baseline (trained once for every teacher) from %s", run.name,
                         seed, variant, source.metrics.parent)
