"""The ablation grid as parallel jobs: local processes (one per GPU, or N on CPU) or Ray tasks.

Jobs: one teacher job per (teacher, seed), then one student job per (teacher, seed, variant)
that starts only when its teacher job is done (the `bce` control needs no teacher). The parent
validates the data, builds the decoded cache, holds every run folder's lock and writes the
aggregates at the end; jobs get the validated data and write only their seed's outputs. A seed
that is already done is not scheduled again, so re-running the command resumes the grid.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from tqdm import tqdm

from firekd.config import TrainConfig
from firekd.errors import ConfigError, FirekdError
from firekd.kd.variants import uses_teacher
from firekd.recipes.ablation import (
    Prepared,
    _aggregate,
    _seed_done,
    open_runs,
    prepare,
    student_job,
    train_teacher_job,
    variant_settings_hash,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    teacher: str
    seed: int
    variant: str | None = None  # None: the teacher job
    after: tuple[Job, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.teacher}/seed {self.seed}/" + (self.variant or "teacher")


def plan(cfg: TrainConfig, prep: Prepared, runs: dict) -> list[Job]:
    """Jobs still to do, teacher jobs first; finished seeds are left out."""
    jobs: list[Job] = []
    for teacher in cfg.teachers:
        for seed in cfg.seeds:
            todo = [v for v in cfg.variants if not _seed_done(
                runs[teacher, v], seed, variant_settings_hash(cfg, prep.data_fp, teacher, v, seed))]
            needs_teacher = cfg.teacher_reuse and any(uses_teacher(v) for v in todo)
            first = Job(teacher, seed) if needs_teacher else None
            jobs += [first] if first else []
            jobs += [Job(teacher, seed, v, (first,) if first and uses_teacher(v) else ()) for v in todo]
    return jobs


def run_job(cfg: TrainConfig, prep: Prepared, job: Job, gpu: int | None = None) -> str:
    """Body of one job, in its own process (or Ray worker)."""
    if gpu is not None:  # before anything touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from firekd.cli import setup_logging

    setup_logging(quiet=True)  # the job's progress goes to run.log; the parent shows the grid
    if job.variant is None:
        train_teacher_job(cfg, prep, job.teacher, job.seed)
    else:  # the grid's teacher job has (re)trained the teacher: --retrain_teacher is spent
        student_cfg = dataclasses.replace(cfg, retrain_teacher=False) if job.after else cfg
        student_job(student_cfg, prep, job.teacher, job.variant, job.seed)
    return job.name


def run_grid(cfg: TrainConfig) -> dict[str, dict]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs/--gpus/--executor ray start their own processes; do not combine "
                          "them with torchrun")
    prep = prepare(cfg)
    with open_runs(cfg, prep.bundle) as runs:
        jobs = plan(cfg, prep, runs)
        job_cfg = dataclasses.replace(cfg, jobs=1, gpus=(), executor="local",
                                      device="cuda" if cfg.gpus else cfg.device)
        log.info("grid: %d job(s) to run, %s", len(jobs), _where(cfg))
        if jobs:
            (_run_ray if cfg.executor == "ray" else _run_local)(job_cfg, prep, jobs, cfg)
        return {run.name: _aggregate(run) for run in runs.values()}


def _where(cfg: TrainConfig) -> str:
    if cfg.executor == "ray":
        return f"on the Ray cluster at {cfg.ray_address or 'RAY_ADDRESS or a local instance'}"
    if cfg.gpus:
        return f"one at a time on each of GPUs {', '.join(map(str, cfg.gpus))}"
    return f"{cfg.jobs} at a time on CPU"


_GPU_QUEUE = None


def _pin_worker(queue, threads: int) -> None:
    """Pool initializer: each worker process owns one GPU (or a share of the CPU threads)."""
    global _GPU_QUEUE
    _GPU_QUEUE = queue.get() if queue is not None else None
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(cfg: TrainConfig, prep: Prepared, job: Job) -> str:
    return run_job(cfg, prep, job, gpu=_GPU_QUEUE)


def _run_local(cfg: TrainConfig, prep: Prepared, jobs: list[Job], grid_cfg: TrainConfig) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = len(grid_cfg.gpus) or grid_cfg.jobs
    queue = None
    if grid_cfg.gpus:
        queue = ctx.Queue()
        for gpu in grid_cfg.gpus:
            queue.put(gpu)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pin_worker,
                             initargs=(queue, threads)) as pool:
        _schedule(jobs, lambda job: pool.submit(_run_in_worker, cfg, prep, job))


def _schedule(jobs: list[Job], submit) -> None:
    """Submit every job whose dependencies are done; report progress; stop at the first error."""
    done: set[Job] = set()
    waiting = list(jobs)
    running = {}
    with tqdm(total=len(jobs), desc="grid", unit="job", disable=None) as bar:
        while waiting or running:
            for job in [j for j in waiting if all(d in done for d in j.after)]:
                waiting.remove(job)
                running[submit(job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    future.result()
                except BaseException:  # a failed job stops the grid: queued jobs are cancelled
                    for other in running:
                        other.cancel()
                    raise
                done.add(job)
                bar.update()
                log.info("grid: %s done (%d/%d)", job.name, len(done), len(jobs))


def _run_ray(cfg: TrainConfig, prep: Prepared, jobs: list[Job], grid_cfg: TrainConfig) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'firekd[ray]'") from None
    ray.init(address=grid_cfg.ray_address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_gpus=grid_cfg.ray_gpus_per_job, num_cpus=1)(_ray_job)
    prep_ref = ray.put(prep)
    refs = {}
    for job in jobs:  # teacher jobs come first: their refs exist when a student job needs them
        refs[job] = task.remote(cfg, prep_ref, job, *[refs[d] for d in job.after])
    pending = {ref: job for job, ref in refs.items()}
    with tqdm(total=len(jobs), desc="grid (ray)", unit="job", disable=None) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref)
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, FirekdError) else FirekdError(
                    f"grid job {job.name} failed on Ray: {str(exc).strip().splitlines()[-1]}")) from None
            bar.update()
            log.info("grid: %s done on Ray", job.name)


def _ray_job(cfg: TrainConfig, prep: Prepared, job: Job, *after: str) -> str:
    """A Ray task; ``after`` are the results of the jobs it depends on (Ray waits for them)."""
    return run_job(cfg, prep, job)
