"""The ablation's jobs (`firekd.recipes.jobs`) in parallel: local processes (one per GPU, or N on
CPU) or Ray tasks.

The parent has validated the data, built the decoded cache, holds every run folder's lock and
writes the aggregates at the end; jobs get the validated data and write only their seed's
outputs. A job starts once the jobs it depends on are done; the first failure cancels the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from tqdm import tqdm

from firekd.config import RunConfig
from firekd.errors import ConfigError, FirekdError
from firekd.io import Writer
from firekd.logs import setup_logging
from firekd.recipes.data import DataBundle
from firekd.recipes.jobs import Job, run_job
from firekd.rundir import RunDir

log = logging.getLogger(__name__)


def run_grid(cfg: RunConfig, data: DataBundle, jobs: list[Job]) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--jobs/--gpus/--executor ray start their own processes; do not combine "
                          "them with torchrun")
    ex = cfg.execution
    job_cfg = dataclasses.replace(cfg, execution=dataclasses.replace(
        ex, jobs=1, gpus=(), executor="local", device="cuda" if ex.gpus else ex.device))
    log.info("grid: %d job(s) to run, %s", len(jobs), _where(cfg))
    if jobs:
        (_run_ray if ex.executor == "ray" else _run_local)(job_cfg, data, jobs, cfg)


def job_process(cfg: RunConfig, data: DataBundle, job: Job, gpu: int | None = None) -> str:
    """Body of one job in its own process (or Ray worker)."""
    if gpu is not None:  # before anything touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    setup_logging(quiet=True)  # the job's progress goes to run.log; the parent shows the grid
    if job.after:  # the grid's teacher job has (re)trained the teacher: --retrain_teacher is spent
        cfg = dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution, retrain_teacher=False))
    writer = Writer()
    with contextlib.ExitStack() as stack:  # the parent holds the run folders' locks
        for variant in job.variants if job.teacher else ():
            stack.enter_context(RunDir(cfg.execution.output, job.teacher, variant).log_to_file(writer))
        return run_job(cfg, data, job, writer, set())


def _where(cfg: RunConfig) -> str:
    ex = cfg.execution
    if ex.executor == "ray":
        return f"on the Ray cluster at {ex.ray_address or 'RAY_ADDRESS or a local instance'}"
    if ex.gpus:
        return f"one at a time on each of GPUs {', '.join(map(str, ex.gpus))}"
    return f"{ex.jobs} at a time on CPU"


_GPU_QUEUE = None


def _pin_worker(queue, threads: int) -> None:
    """Pool initializer: each worker process owns one GPU (or a share of the CPU threads)."""
    global _GPU_QUEUE
    _GPU_QUEUE = queue.get() if queue is not None else None
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(cfg: RunConfig, data: DataBundle, job: Job) -> str:
    return job_process(cfg, data, job, gpu=_GPU_QUEUE)


def _process_context():
    """Workers forked from a fresh server process that imported torch and the recipes once, instead
    of each worker importing them again (~7 s of CPU a worker on 2 cores); spawn where there is
    no forkserver. Either way no worker inherits this process's threads or CUDA state."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["firekd.recipes.grid"])
    return ctx


def _run_local(cfg: RunConfig, data: DataBundle, jobs: list[Job], grid_cfg: RunConfig) -> None:
    ctx = _process_context()
    workers = len(grid_cfg.execution.gpus) or grid_cfg.execution.jobs
    queue = None
    if grid_cfg.execution.gpus:
        queue = ctx.Queue()
        for gpu in grid_cfg.execution.gpus:
            queue.put(gpu)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pin_worker,
                             initargs=(queue, threads)) as pool:
        schedule(jobs, lambda job: pool.submit(_run_in_worker, cfg, data, job))


def schedule(jobs: list[Job], submit) -> None:
    """Submit every job whose dependencies are done; report progress; stop at the first error."""
    done: set[Job] = set()
    pending = list(jobs)
    running = {}
    with tqdm(total=len(jobs), desc="grid", unit="job", disable=None) as bar:
        while pending or running:
            for job in [j for j in pending if all(d in done for d in j.after)]:
                pending.remove(job)
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


def _run_ray(cfg: RunConfig, data: DataBundle, jobs: list[Job], grid_cfg: RunConfig) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'firekd[ray]'") from None
    ex = grid_cfg.execution
    ray.init(address=ex.ray_address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_gpus=ex.ray_gpus_per_job, num_cpus=1)(_ray_job)
    data_ref = ray.put(data)
    refs = {}
    for job in jobs:  # dependencies come first: their refs exist when a job needs them
        refs[job] = task.remote(cfg, data_ref, job, *[refs[d] for d in job.after])
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


def _ray_job(cfg: RunConfig, data: DataBundle, job: Job, *after: str) -> str:
    """A Ray task; ``after`` are the results of the jobs it depends on (Ray waits for them)."""
    return job_process(cfg, data, job)
