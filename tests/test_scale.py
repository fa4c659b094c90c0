"""Scaling out on CPU: 2-process DDP (gloo) through torchrun, the grid with --jobs 2, and the grid
on a local Ray instance; re-running each skips finished work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firekd.data.synthetic import SynthConfig
from firekd.recipes.synth import write_synthetic

pytestmark = pytest.mark.slow
TINY = ["--epochs_teacher", "2", "--epochs_student", "4", "--no_pretrained", "--img_size", "32",
        "--num_workers", "0", "--lr_teacher", "1e-3", "--max_embed_points", "0",
        "--no_compress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale_data")
    # an easy set (no hidden fires, no distractors): the student learns something in two epochs, so
    # DDP and single-process metrics can be compared (an untrained model's AUROC is noise)
    write_synthetic(SynthConfig(n=160, size=32, seed=9, hidden_fire_rate=0, small_fire_rate=0,
                                distractor_rate=0), out)
    return out / "data.csv"


def _firekd(*args, launcher=(), timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *launcher, "-m", "firekd", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _final(output: Path, run: str, seed: int) -> dict:
    final = json.loads((output / "metrics" / run / f"seed_{seed}" / "final_evaluation.json").read_text())
    return {k: v for k, v in final.items() if k != "run"}


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    """The reference: the same grid in one process."""
    out = tmp_path_factory.mktemp("single")
    _firekd("ablation", "--csv", data, "--output", out, "--teachers", "resnet18", "--variants", "kl_bce", "bce",
            "--seeds", "1", "--batch_size", "32", *TINY)
    return out


def test_ddp_two_processes_on_cpu_close_to_a_single_process(data, single, tmp_path):
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    args = ["train", "--csv", data, "--output", tmp_path, "--teacher", "resnet18", "--variant", "kl_bce",
            "--seeds", "1", "--batch_size", "16", *TINY]  # 2 x 16 = the reference's batch of 32
    proc = _firekd(*args, launcher=torchrun)
    ddp, ref = _final(tmp_path, "resnet18_kl_bce", 1), _final(single, "resnet18_kl_bce", 1)
    # 2 x 16 is not 32 (BatchNorm sees half batches) and the test split has 22 samples: the student
    # must learn as the single process's does (an untrained one scores 0.5), F1s roughly agree
    learned = lambda m: (m["auroc_fire"] + m["auroc_smoke"]) / 2 > 0.6  # noqa: E731
    assert learned(ddp["student"]) and learned(ref["student"]), (ddp["student"], ref["student"])
    for model in ("teacher", "student"):
        assert abs(ddp[model]["f1_macro"] - ref[model]["f1_macro"]) < 0.2, (model, ddp[model], ref[model])
    n_test = json.loads((tmp_path / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json").read_text())["run"]["n_test"]
    rows = (tmp_path / "metrics/resnet18_kl_bce/seed_1/predictions_student.csv").read_text().splitlines()
    assert len(rows) - 1 == n_test  # gathered over both ranks, padding removed
    assert proc.stdout.count("results in ") == 1  # only rank 0 reports
    again = _firekd(*args, launcher=torchrun)
    assert "already done, skipping" in again.stderr


def test_grid_with_two_jobs_matches_the_single_process_grid(data, single, tmp_path):
    args = ["ablation", "--csv", data, "--output", tmp_path, "--teachers", "resnet18", "--variants",
            "kl_bce", "bce", "--seeds", "1", "--batch_size", "32", *TINY, "--jobs", "2", "--lockstep", "off"]
    proc = _firekd(*args)
    # one variant per job: the teacher and the control side by side, then the KD student
    assert "grid: 3 job(s) to run" in proc.stderr
    for run in ("resnet18_kl_bce", "resnet18_bce"):
        got, ref = _final(tmp_path, run, 1), _final(single, run, 1)
        for model in ref:
            assert got[model]["f1_macro"] == pytest.approx(ref[model]["f1_macro"], abs=0.02)
        assert json.loads((tmp_path / "metrics" / run / "aggregated_results.json").read_text())["seeds"] == [1]
    assert len(list((tmp_path / "teachers/resnet18").glob("seed_*"))) == 1
    assert "[student kl_bce (seed 1)] epoch 1/" in (tmp_path / "metrics/resnet18_kl_bce/run.log").read_text()
    assert "grid: 0 job(s) to run" in _firekd(*args).stderr  # resumed: nothing left


def test_grid_on_a_local_ray_instance(data, tmp_path):
    pytest.importorskip("ray", reason="the Ray executor is an optional extra: pip install 'firekd[ray]'")
    args = ["ablation", "--csv", data, "--output", tmp_path, "--teachers", "resnet18", "--variants", "kl_bce",
            "bce", "--seeds", "1", "2", "--batch_size", "32", *TINY, "--epochs_teacher", "1", "--epochs_student", "1",
            "--executor", "ray", "--ray_gpus_per_job", "0"]  # scheduling only: one epoch each
    proc = _firekd(*args)
    assert "grid: 2 job(s) to run" in proc.stderr  # one per seed: its teacher, then its students in lockstep
    for run in ("resnet18_kl_bce", "resnet18_bce"):
        assert (tmp_path / "metrics" / run / "seed_1" / "final_evaluation.json").is_file()
    assert "grid: 0 job(s) to run" in _firekd(*args).stderr


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
