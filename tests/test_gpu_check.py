"""The prepared GPU check runs in CI-like conditions: `benchmarks/gpu_check.py --smoke` on the CPU.

It runs every section of the GPU run (same code, CPU at 32 px, a handful of pairs and steps) and
must leave a number or an explicit "n/a (reason)" for every measurement, so that the one run on
a GPU machine does not fail on something a CPU could have shown.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
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
                          capture_output=True, text=True, timeout=600)
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
        for key in ("model_only_img_s", "e2e_img_s", "ratio", "peak_gib", "epoch_img_s", "epoch_ratio",
                    "val_share", "ckpt_share"):
            assert measured(train[key]), (model, key, train[key])
        assert train["model_only_img_s"] > 0 and train["e2e_img_s"] > 0
        # the whole epoch: training, then validation and the checkpoint writes beside it
        assert train["epoch_val_s"] > 0 and train["epoch_timed"] in (1, 2)
        assert "state" in train["epoch_ckpt_writes"] and train["epoch_ckpt_s"] > 0
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
    assert "| whole epoch img/s | epoch / model-only |" in table
    assert table.strip() in done.stdout


@pytest.mark.slow
def test_smoke_returns_three_files_and_nothing_else(smoke):
    out, _ = smoke
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    log = (out / "gpu_check.log").read_text()
    assert "training, kd, syncs: start" in log and "firekd ablation + compare: last" in log


def _script():
    """benchmarks/gpu_check.py as a module (registered: its dataclasses look themselves up)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def test_models_are_measured_cheapest_first():
    gc = _script()
    assert gc.by_cost(["efficientnet_b7", "resnet152", "vit_b_16", "swin_tiny", "resnet18"]) == [
        "resnet18", "vit_b_16", "swin_tiny", "resnet152", "efficientnet_b7"]


def test_the_budget_is_checked_inside_a_models_measurement():
    """Past the model's deadline the timed loop stops after one step instead of running them all."""
    import torch

    from firekd.engine.runtime import Runtime
    from firekd.kd.distiller import Supervised
    from firekd.models import create_student

    gc = _script()
    rt = Runtime(torch.device("cpu"))
    task = Supervised(create_student("firekd_student", pretrained=False))
    steps = []
    forward = task.forward
    task.forward = lambda *a, **k: steps.append(1) or forward(*a, **k)
    batch = gc.resident_batch(rt, 2, 32)
    gc.model_only_rate(task, rt, batch, {"bce": 1.0}, steps=50, warmup=5, deadline=0.0)
    assert len(steps) == 1 + 1  # one warm-up step, one timed step
    assert gc.Budget(100).share(reserve_s=40, parts=3) - time.perf_counter() == pytest.approx(20, abs=1)


# the script's exit handling (benchmarks/_children.py, standard library only: no torch to import)
CHILD_HOLDER = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import _children
_children.install_exit_handlers()
child = _children.start_child([sys.executable, "-c", "import time; time.sleep(120)"], subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_the_script_starts_and_ends_its_children_with_the_holders_functions():
    """What test_children_end_with_the_script runs is what gpu_check.py runs."""
    gc = _script()
    children = sys.modules["_children"]
    assert gc.start_child is children.start_child and gc.install_exit_handlers is children.install_exit_handlers
    assert gc.end_children is children.end_children


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has ended, its parent gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses PR_SET_PDEATHSIG")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_children_end_with_the_script(how):
    """The ablation's child (its own process group) dies when the script is terminated or killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", CHILD_HOLDER, str(SCRIPT.parent)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        child = int(holder.stdout.readline())
        assert not _gone(child)
        holder.send_signal(how)
        holder.wait(timeout=30)
        deadline = time.time() + 10
        while not _gone(child) and time.time() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        holder.kill()
