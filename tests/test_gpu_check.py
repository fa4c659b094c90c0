"""The prepared GPU check runs in CI-like conditions: `benchmarks/gpu_check.py --smoke` on the CPU.

It runs every section of the GPU run (same code, CPU at 32 px, a handful of pairs and steps) and
must leave a number or an explicit "n/a (reason)" for every measurement, so that the one run on
a GPU machine does not fail on something a CPU could have shown.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("environment", "data", "training", "kd", "syncs", "ablation")
MODELS = ("firekd_student", "resnet18")  # the smoke run's student and teacher


def measured(value) -> bool:
    """A finite number, or a string saying why there is none ("n/a (CUDA only)")."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, str) and value.startswith("n/a (")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out, work = tmp_path_factory.mktemp("gpu_check"), tmp_path_factory.mktemp("gpu_check_work")
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--smoke", "--work_dir", str(work)],
                          capture_output=True, text=True, timeout=300)
    return out, done


@pytest.mark.slow
def test_smoke_exits_zero_with_every_section_ok(smoke):
    out, done = smoke
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    sections = json.loads((out / "gpu_check.json").read_text())["sections"]
    assert set(sections) == set(SECTIONS)
    for name in SECTIONS:
        assert sections[name]["status"] == "ok", (name, sections[name])


@pytest.mark.slow
def test_smoke_records_a_number_or_a_reason_for_every_measurement(smoke):
    out, _ = smoke
    s = json.loads((out / "gpu_check.json").read_text())["sections"]
    env = s["environment"]
    assert env["precision"] == "fp32" and env["torch"]
    assert measured(env["capability"]) and measured(env["gpu"])
    assert s["data"]["pairs"] == 64 and s["data"]["cache"] == "built"
    assert all(measured(s["data"][k]) for k in ("synth_s", "load_s", "cache_s"))
    for model in MODELS:
        train = s["training"]["models"][model]
        for key in ("model_only_img_s", "e2e_img_s", "ratio", "peak_gib"):
            assert measured(train[key]), (model, key, train[key])
        assert train["model_only_img_s"] > 0 and train["e2e_img_s"] > 0
    assert measured(s["training"]["models"]["resnet18"]["est_gib"])
    kd = s["kd"]["models"]["resnet18"]
    for key in ("kd_img_s", "student_alone_img_s", "kd_time_ratio", "teacher_share", "peak_gib"):
        assert measured(kd[key]), (key, kd[key])
    syncs = s["syncs"]["models"]["resnet18"]
    assert syncs["syncs_per_step"] == syncs["syncs"] == "n/a (CUDA only)"
    assert syncs["steps"] >= 1 and syncs["kd_e2e_img_s"] > 0 and measured(syncs["kd_e2e_ratio"])
    ablation = s["ablation"]
    assert ablation["ablation"]["rc"] == 0 and ablation["compare"]["rc"] == 0
    assert ablation["compressed"] is True
    runs = ablation["f1_macro"]
    assert {"resnet18_kl_contrastive_l2_bce", "resnet18_bce"} <= set(runs)
    assert all(measured(f1) for models in runs.values() for f1 in models.values())


@pytest.mark.slow
def test_smoke_writes_and_prints_the_table(smoke):
    out, done = smoke
    table = (out / "gpu_check.md").read_text()
    assert "| model | batch | model-only img/s |" in table
    for model in MODELS:
        assert f"| {model} | 16 |" in table
    assert "firekd ablation rc 0" in table and "firekd compare rc 0" in table
    assert table.strip() in done.stdout
    assert not list((out / "ablation").rglob("*.pth")), "checkpoints are removed from OUT_DIR"
