"""Scaling out on CPU: the grid with --jobs 2 and on a local Ray instance give exactly the
single-process results; 2-process DDP (gloo) gives a single process's training at the same global
batch on a model where that must hold, and through torchrun the CLI gathers every rank's predictions
and reports once."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import forked
import pytest
import torch

from firekd.checkpoints import load_payload
from firekd.data.synthetic import SynthConfig
from firekd.engine import distributed
from firekd.engine.loop import FitConfig, Member, fit_many
from firekd.engine.runtime import Runtime
from firekd.metrics.efficiency import cpu_threads
from firekd.recipes.synth import write_synthetic

pytestmark = pytest.mark.slow
TINY = ["--epochs_teacher", "2", "--epochs_student", "3", "--no_pretrained", "--img_size", "32",
        "--num_workers", "0", "--lr_teacher", "1e-3", "--max_embed_points", "0",
        "--no_compress", "--latency_runs", "0", "--no_figures"]
GRID = ["--teachers", "resnet18", "--variants", "kl_bce", "bce", "--seeds", "1", "--batch_size", "32", *TINY]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale_data")
    # an easy set (no hidden fires, no distractors): the student learns something in a few epochs
    write_synthetic(SynthConfig(n=64, size=32, seed=9, hidden_fire_rate=0, small_fire_rate=0,
                                distractor_rate=0), out)
    return out / "data.csv"


def _firekd(*args, launcher=(), timeout=900) -> subprocess.CompletedProcess:
    # one thread in every process: the parallel jobs' own count (2 cores / 2 jobs), so sums add up in
    # the same order everywhere and the results must be bit-identical
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *launcher, "-m", "firekd", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _final(output: Path, run: str, seed: int) -> dict:
    """Every metric of every model; not the checkpoint's byte size, which varies by a few bytes of
    archive bookkeeping between runs whose weights are equal (checked below)."""
    final = json.loads((output / "metrics" / run / f"seed_{seed}" / "final_evaluation.json").read_text())
    return {k: {m: x for m, x in v.items() if m != "size_mb"} for k, v in final.items() if k != "run"}


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    """The reference: the same grid in one process, this one (a new process would cost ~7 s of
    imports), on one thread as every parallel job."""
    from firekd.cli import main

    out = tmp_path_factory.mktemp("single")
    with cpu_threads(1):
        assert main([str(a) for a in ("ablation", "--csv", data, "--output", out, *GRID)]) == 0
    return out


def _assert_same_results(got: Path, ref: Path) -> None:
    for run in ("resnet18_kl_bce", "resnet18_bce"):
        assert _final(got, run, 1) == _final(ref, run, 1), run  # every metric of every model, exactly
        weights = [load_payload(o / "models" / run / "seed_1" / "student_best.pth")["state_dict"] for o in (got, ref)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1]), run
        assert json.loads((got / "metrics" / run / "aggregated_results.json").read_text())["seeds"] == [1]


def test_grid_with_two_jobs_gives_exactly_the_single_process_results(data, single, tmp_path):
    proc = _firekd("ablation", "--csv", data, "--output", tmp_path, *GRID, "--jobs", "2", "--lockstep", "off")
    # one variant per job: the teacher and the control side by side, then the KD student
    assert "grid: 3 job(s) to run" in proc.stderr
    _assert_same_results(tmp_path, single)
    assert len(list((tmp_path / "teachers/resnet18").glob("seed_*"))) == 1
    assert "[student kl_bce (seed 1)] epoch 1/" in (tmp_path / "metrics/resnet18_kl_bce/run.log").read_text()


def test_grid_on_a_local_ray_instance_gives_exactly_the_single_process_results(data, single, tmp_path):
    pytest.importorskip("ray", reason="the Ray executor is an optional extra: pip install 'firekd[ray]'")
    proc = _firekd("ablation", "--csv", data, "--output", tmp_path, *GRID, "--executor", "ray",
                   "--ray_gpus_per_job", "0")
    assert "grid: 1 job(s) to run" in proc.stderr  # the seed's teacher, then its students in lockstep
    _assert_same_results(tmp_path, single)


def test_ddp_two_processes_through_the_cli_gather_predictions_and_report_once(data, tmp_path):
    """Plumbing only: this student has BatchNorm (2 x 16 normalises otherwise than 32) and
    DistributedSampler shuffles otherwise than a single process, so its numbers cannot equal the
    single process's; the exact comparison is the next test's, on a model where it must hold."""
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    proc = _firekd("train", "--csv", data, "--output", tmp_path, "--teacher", "resnet18", "--variant", "kl_bce",
                   "--seeds", "1", "--batch_size", "16", *TINY, launcher=torchrun)
    final = json.loads((tmp_path / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json").read_text())
    log = json.loads((tmp_path / "metrics/resnet18_kl_bce/seed_1/student_train_log.json").read_text())
    assert log["epochs"] and all(math.isfinite(e["train_loss"]) for e in log["epochs"])  # trained
    rows = (tmp_path / "metrics/resnet18_kl_bce/seed_1/predictions_student.csv").read_text().splitlines()
    assert len(rows) - 1 == final["run"]["n_test"]  # gathered over both ranks, padding removed
    assert proc.stdout.count("results in ") == 1  # only rank 0 reports


class _Mlp(torch.nn.Module):
    """No BatchNorm, no dropout: a rank's half batch adds exactly its share of the mean gradient."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def trained_modules(self):
        return {"model": self.model}

    def forward(self, rgb, ir, labels, targets=None):
        logits = self.model(rgb)
        return logits, {"bce": torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)}


def _fit_mlp(rank: int = 0, world: int = 1) -> tuple[dict, list]:
    """Four epochs on global batches of 32; rank r of `world` takes the r-th slice of each batch."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=g)
    labels = torch.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0], dim=1).float()
    share = 32 // world
    batches = [(x[i:i + share], torch.zeros(share, 0), labels[i:i + share], torch.arange(i, i + share))
               for start in range(0, 128, 32) for i in [start + rank * share]]
    task = _Mlp()
    cfg = FitConfig(kind="student", label="mlp", epochs=4, lr=0.01, weight_decay=0.01, patience=100,
                    weights={"bce": 1.0}, seed=0)
    result = fit_many([Member(task, cfg)], batches, batches, Runtime(torch.device("cpu")))[0]
    return task.state_dict(), [{k: v for k, v in r.items() if k != "time_s"} for r in result.history]


def _ddp_rank(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", FIREKD_DDP_BACKEND="gloo")
    torch.set_num_threads(1)
    distributed.setup()
    try:
        torch.save(_fit_mlp(rank, 2), out / f"rank{rank}.pt")
    finally:
        distributed.teardown()


def test_ddp_two_ranks_train_as_one_process_at_the_same_global_batch(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forked.context()  # two rank processes forked from a server that imported firekd once
    torch.multiprocessing.start_processes(_ddp_rank, args=(port, tmp_path), nprocs=2, start_method="forkserver")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single_state, single_history = _fit_mlp()
    initial = _Mlp().state_dict()
    for name, weight in single_state.items():
        assert not torch.equal(weight, initial[name])  # it trained
        torch.testing.assert_close(ranks[0][0][name], ranks[1][0][name], rtol=0, atol=0)  # in sync
        # the mean of two half-batch gradients is the full batch's up to float rounding (~1e-7 per step)
        torch.testing.assert_close(ranks[0][0][name], weight, rtol=1e-5, atol=1e-6)
    for ddp, ref in zip(ranks[0][1], single_history, strict=True):  # validation gathered over the ranks
        assert ddp.keys() == ref.keys() and ddp["val_loss"] == pytest.approx(ref["val_loss"], abs=1e-6)
        assert ddp["val_f1_macro"] == pytest.approx(ref["val_f1_macro"], abs=1e-6)


def test_a_failing_job_stops_the_grid_and_cancels_queued_jobs():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from firekd.recipes.grid import Job, schedule

    ran, lock = [], threading.Lock()

    def body(job):
        with lock:
            ran.append(job.variants)
        if job.variants == "a":
            raise RuntimeError("CUDA out of memory")  # not a FirekdError
        time.sleep(0.5)

    jobs = [Job("t", 1, v) for v in ("a", "b", "c", "d")]
    with pytest.raises(RuntimeError, match="out of memory"), ThreadPoolExecutor(1) as pool:
        schedule(jobs, lambda job: pool.submit(body, job))
    assert "d" not in ran  # cancelled, not run after the failure


def test_students_after_a_retrained_teacher_job_do_not_retrain_it(monkeypatch):
    from firekd.config import DataConfig, ExecConfig, RunConfig
    from firekd.recipes import grid

    seen = []
    monkeypatch.setattr(grid, "setup_logging", lambda **kw: None)
    monkeypatch.setattr(grid, "run_job", lambda cfg, data, job, *a: seen.append(
        (job.variants, cfg.execution.retrain_teacher)))
    cfg = RunConfig(data=DataConfig(csv="x.csv"), execution=ExecConfig(retrain_teacher=True))
    teacher = grid.Job("resnet18", 1)
    grid.job_process(cfg, None, teacher)
    grid.job_process(cfg, None, grid.Job("resnet18", 1, ("kl_bce",), (teacher,)))
    grid.job_process(cfg, None, grid.Job("resnet18", 1, ("kl_bce", "bce")))  # lockstep: trains its teacher
    assert seen == [((), True), (("kl_bce",), False), (("kl_bce", "bce"), True)]
