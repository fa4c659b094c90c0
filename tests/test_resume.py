"""A run killed with SIGKILL in the middle of teacher training, then run again, ends with exactly
the metrics of an uninterrupted run (so two runs of one command agree; test_lockstep shows the same
for students killed mid-epoch, with loader workers, and for lockstep against one-at-a-time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firekd.data.synthetic import SynthConfig
from firekd.recipes.synth import write_synthetic

pytestmark = pytest.mark.slow
RUN = "metrics/resnet18_kl_bce/seed_5/final_evaluation.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_data")
    write_synthetic(SynthConfig(n=120, size=32, seed=2), out)
    return out / "data.csv"


def _command(data: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "firekd", "train", "--csv", str(data), "--output", str(output),
            "--teacher", "resnet18", "--variant", "kl_bce", "--seeds", "5", "--epochs_teacher", "3",
            "--epochs_student", "1", "--patience_teacher", "10", "--no_pretrained", "--img_size", "32",
            "--num_workers", "0", "--batch_size", "16", "--lr_teacher", "1e-3", "--max_embed_points", "0",
            "--no_compress", "--latency_runs", "0"]


def _run(data: Path, output: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(data, output), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _models(output: Path) -> dict:
    """Every model's metrics, without wall-clock measurements (latency), which no run repeats."""
    final = json.loads((output / RUN).read_text())
    return {model: {k: v for k, v in metrics.items() if not k.startswith(("latency_ms", "throughput"))}
            for model, metrics in final.items() if model != "run"}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("reference")
    _run(data, output)
    return output


def test_killed_mid_teacher_then_rerun_gives_the_uninterrupted_metrics(data, reference, tmp_path):
    output = tmp_path / "killed"
    proc = subprocess.Popen(_command(data, output), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    for line in proc.stderr:  # kill as soon as the teacher has finished its second epoch
        if "[teacher resnet18 (seed 5)] epoch 2/3" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = next((output / "teachers" / "resnet18").glob("seed_5-*"))
    assert not (store / "teacher_train_log.json").exists()  # killed before the teacher finished
    assert not (output / RUN).exists()
    resumed = _run(data, output)
    assert "resuming after epoch" in resumed.stderr
    assert "[teacher resnet18 (seed 5)] epoch 1/3" not in resumed.stderr  # not started over
    assert _models(output) == _models(reference)
