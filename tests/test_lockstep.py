"""Lockstep students: the variants of a seed train in one pass over the same batches, and each
gets exactly what it gets trained alone, with 0 or 2 loader workers; a student that early-stops
stops receiving steps; a run killed in the middle of a lockstep epoch resumes every student."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from firekd.data.synthetic import SynthConfig
from firekd.engine.loop import FitConfig, Member, fit_many
from firekd.engine.runtime import Runtime
from firekd.recipes.synth import write_synthetic

VARIANTS = ("kl_bce", "kl_l2_bce", "bce")
ARGS = ["--teachers", "resnet18", "--variants", *VARIANTS, "--seeds", "1", "--epochs_teacher", "1",
        "--epochs_student", "3", "--patience_student", "10", "--no_pretrained", "--img_size", "32",
        "--batch_size", "16", "--lr_teacher", "1e-3", "--max_embed_points", "0", "--no_compress",
        "--latency_runs", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lockstep_data")
    write_synthetic(SynthConfig(n=96, size=32, seed=4), out)
    return out / "data.csv"


def _students(output: Path) -> dict[str, dict]:
    """Each variant's student metrics (wall-clock numbers left out)."""
    out = {}
    for variant in VARIANTS:
        final = json.loads((output / f"metrics/resnet18_{variant}/seed_1/final_evaluation.json").read_text())
        out[variant] = {k: v for k, v in final["student"].items() if not k.startswith(("latency", "throughput"))}
    return out


def _ablation(data: Path, output: Path, *extra: str) -> None:
    from firekd.cli import main

    assert main(["ablation", "--csv", str(data), "--output", str(output), *ARGS, *extra]) == 0


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    """The seed's teacher, trained once and copied into every run below."""
    out = tmp_path_factory.mktemp("teacher")
    _ablation(data, out, "--teacher_only", "--num_workers", "0")
    return out / "teachers"


def _with_teacher(teacher: Path, output: Path) -> Path:
    shutil.copytree(teacher, output / "teachers")
    return output


@pytest.fixture(scope="module")
def lockstep(data, teacher, tmp_path_factory) -> Path:
    out = _with_teacher(teacher, tmp_path_factory.mktemp("lockstep"))
    _ablation(data, out, "--num_workers", "0")
    return out


@pytest.mark.slow
def test_lockstep_gives_each_variant_what_it_gets_alone(data, teacher, lockstep, tmp_path):
    alone = _with_teacher(teacher, tmp_path / "alone")
    _ablation(data, alone, "--lockstep", "off", "--num_workers", "0")
    assert _students(lockstep) == _students(alone)


@pytest.mark.slow
def test_two_loader_workers_give_the_same_students(data, teacher, lockstep, tmp_path):
    workers = _with_teacher(teacher, tmp_path / "workers")
    _ablation(data, workers, "--num_workers", "2")
    assert _students(lockstep) == _students(workers)


@pytest.mark.slow
def test_killed_mid_lockstep_epoch_then_rerun_gives_the_uninterrupted_students(data, teacher, lockstep,
                                                                                tmp_path):
    output = _with_teacher(teacher, tmp_path / "killed")
    command = [sys.executable, "-m", "firekd", "ablation", "--csv", str(data), "--output", str(output), *ARGS,
               "--num_workers", "2"]
    # as many threads as the in-process reference: another count sums in another order (1e-7 apart)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:  # kl_bce has saved epoch 2 (it logs before saving), bce has not logged it
        if "[student kl_l2_bce (seed 1)] epoch 2/3" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (output / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[student kl_bce (seed 1)] resuming after epoch 2" in resumed.stderr
    assert "[student kl_bce (seed 1)] epoch 1/3" not in resumed.stderr
    assert _students(output) == _students(lockstep)


class _Task(torch.nn.Module):
    """A tiny task that counts its training steps; ``frozen_score`` makes its validation F1 constant
    (its logits do not depend on what it learns), so it early-stops."""

    def __init__(self, frozen_score: bool) -> None:
        super().__init__()
        self.model = torch.nn.Linear(4, 2)
        self.frozen_score, self.steps = frozen_score, 0

    def trained_modules(self):
        return {"model": self.model}

    def forward(self, rgb, ir, labels, targets=None):
        self.steps += self.training
        logits = self.model(rgb)
        if self.frozen_score:
            logits = logits * 0 + torch.tensor([1.0, -1.0])
        return logits, {"bce": torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)}


def test_a_student_that_early_stops_drops_out_while_the_others_go_on():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    labels = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] > 0).float()], dim=1)
    batches = [(x[i:i + 16], torch.zeros(16, 0), labels[i:i + 16], torch.arange(i, i + 16))
               for i in range(0, 64, 16)]
    stops, learns = _Task(frozen_score=True), _Task(frozen_score=False)
    cfg = dict(epochs=6, lr=0.05, weight_decay=0.0, weights={"bce": 1.0}, seed=0)
    members = [Member(stops, FitConfig(kind="student", label="stops", patience=1, **cfg)),
               Member(learns, FitConfig(kind="student", label="learns", patience=100, **cfg))]
    results = fit_many(members, batches, batches, Runtime(torch.device("cpu")))
    assert results[0].stopped_early and len(results[0].history) == 2  # no better than epoch 1
    assert not results[1].stopped_early and len(results[1].history) == 6
    assert stops.steps == 2 * len(batches) and learns.steps == 6 * len(batches)
