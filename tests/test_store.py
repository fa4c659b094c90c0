"""Stores cannot go stale and never race: data keyed by its images (changed bytes under the same CSV
retrain, the same bytes elsewhere reuse), one control when two processes want it, a build killed
before its marker is rebuilt, --retrain_teacher never takes a consumer's teacher away, and changing
compression or figure settings trains no model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path

import forked
import pytest
from cli_helpers import log_lines

from firekd.cli import main
from firekd.io import Writer
from firekd.store import Store

pytestmark = pytest.mark.slow
TINY = ["--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained", "--img_size", "32",
        "--num_workers", "0", "--batch_size", "32", "--lr_teacher", "1e-3", "--max_embed_points", "0",
        "--no_compress", "--latency_runs", "0", "--seeds", "1"]
EPOCH = re.compile(r"\[(teacher|student|finetune) [^\]]*\] epoch \d+/")


def synth(out: Path, *extra: str) -> Path:
    assert main(["synth", "--out", str(out), "--n", "80", "--size", "32", "--seed", "0", *extra]) == 0
    return out / "data.csv"


@pytest.fixture
def logs():
    """Every log line of the test, as text."""
    with log_lines(logging.INFO) as lines:
        yield lines


def ablation(csv: Path, out: Path, *extra, expect: int = 0, figures: bool = False) -> None:
    args = ["ablation", "--csv", csv, "--output", out, "--teachers", "resnet18", "--variants", "kl_bce", "bce",
            *TINY, *([] if figures else ["--no_figures"]), *extra]
    assert main([str(a) for a in args]) == expect


def epochs(lines: list[str]) -> list[str]:
    return [line for line in lines if EPOCH.search(line)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished KD + control ablation on 80 synthetic pairs, no figures: (data folder, output folder)."""
    root = tmp_path_factory.mktemp("store")
    csv = synth(root / "d")
    ablation(csv, root / "out")
    return csv, root / "out"


def copy_output(finished, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished[1], out, copy_function=shutil.copy2)
    return out


def test_changed_images_under_the_same_csv_retrain(finished, tmp_path, logs):
    csv, _ = finished
    data = tmp_path / "d"
    shutil.copytree(csv.parent, data)
    out = copy_output(finished, tmp_path)
    before = (data / "data.csv").read_bytes()
    synth(data, "--rgb_cue", "1")  # other images, the same CSV bytes
    assert (data / "data.csv").read_bytes() == before
    ablation(data / "data.csv", out, "--overwrite")
    assert not any("already done" in line for line in logs)
    trained = {EPOCH.search(line).group(1) for line in epochs(logs)}
    assert trained == {"teacher", "student"}


def test_the_same_images_in_another_folder_and_working_directory_reuse(finished, tmp_path, logs, monkeypatch):
    csv, _ = finished
    moved = tmp_path / "moved" / "data"
    shutil.copytree(csv.parent, moved)  # new paths and new file times, the same bytes
    out = copy_output(finished, tmp_path)
    monkeypatch.chdir(tmp_path / "moved")
    ablation(Path("data/data.csv"), out, "--base_path", str(moved) + os.sep)
    assert epochs(logs) == []
    assert any("resnet18_kl_bce seed 1: already done" in line for line in logs)


def test_a_build_killed_before_its_marker_is_rebuilt_not_read_as_done(finished, tmp_path, logs, monkeypatch):
    csv, _ = finished
    out = tmp_path / "out"
    publish = Store.publish

    def killed(self, record=None):
        if self.name == "teacher":
            raise KeyboardInterrupt  # the process dies after the weights, before the marker
        return publish(self, record)

    monkeypatch.setattr(Store, "publish", killed)
    ablation(csv, out, expect=130)
    store = next((out / "teachers" / "resnet18").glob("seed_1-*"))
    assert (store / "teacher_best.pth").exists() and (store / "teacher_train_log.json").exists()
    assert not Store(store, store.name.split("-", 1)[1], writer=Writer(), name="teacher").done()
    monkeypatch.setattr(Store, "publish", publish)
    logs.clear()
    ablation(csv, out)
    assert any(line.startswith("[teacher resnet18") for line in epochs(logs))
    assert not any("teacher resnet18 seed 1: reusing" in line for line in logs)


def test_two_processes_wanting_one_control_train_it_once(finished, tmp_path):
    csv, _ = finished
    out = tmp_path / "out"
    args = ["ablation", "--csv", csv, "--output", out, "--variants", "bce", *TINY, "--no_figures"]
    # two processes (forked from one that imported firekd: tests/forked.py), one store
    procs = [forked.start([*args, "--teachers", t], logs=tmp_path / t) for t in ("resnet18", "resnet50")]
    results = [p.communicate(timeout=600) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    stderr = "".join(err for _, _, err in results)
    assert len(re.findall(r"\[student bce \(seed 1\)\] epoch 1/1", stderr)) == 1
    controls = list((out / "controls").glob("*/seed_1-*"))
    assert len(controls) == 1 and (controls[0] / "control.store.json").exists()
    for teacher in ("resnet18", "resnet50"):
        assert (out / "metrics" / f"{teacher}_bce" / "seed_1" / "final_evaluation.json").exists()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_retrain_teacher_never_takes_a_consumers_teacher_away(finished, tmp_path, logs):
    """A consumer holds the teacher's lock while it reads and links it; a retrain waits for it, and
    the consumer's linked copy stays the teacher it distils from."""
    csv, _ = finished
    out = copy_output(finished, tmp_path)
    ablation(csv, out, figures=True)  # the curves, drawn from the logs: they must go with the old teacher
    store = next((out / "teachers" / "resnet18").glob("seed_1-*"))
    linked = out / "models" / "resnet18_kl_bce" / "seed_1" / "teacher_best.pth"
    graphs = out / "graphs" / "resnet18_kl_bce" / "seed_1"
    curves = [store / "teacher_training_curves.png", graphs / "teacher_training_curves.png",
              graphs / "student_training_curves.png"]
    assert all(path.is_file() for path in curves)
    old = digest(linked)
    consumer = Store(store, "any", writer=Writer(), name="teacher")
    retrain = threading.Thread(target=ablation, args=(csv, out, "--retrain_teacher"))
    with consumer.held():  # a consumer between reading and linking
        retrain.start()
        retrain.join(timeout=3)
        assert retrain.is_alive()  # the retrain waits for the lock
        assert digest(store / "teacher_best.pth") == old
    retrain.join(timeout=600)
    assert not retrain.is_alive()
    assert any("retraining (--retrain_teacher)" in line for line in logs)
    assert any(line.startswith("[student kl_bce") for line in epochs(logs))  # its students too
    assert not any(line.startswith("[student bce") for line in epochs(logs))  # not the control
    assert digest(linked) == digest(store / "teacher_best.pth") != old  # relinked: the new teacher
    assert not any(path.exists() for path in curves)  # retrained under --no_figures: no old curve shown


def test_compression_and_figure_settings_train_no_model_and_make_new_outputs(finished, tmp_path, logs):
    csv, _ = finished
    out = copy_output(finished, tmp_path)  # its teacher and students, trained without compression
    args = ["ablation", "--csv", csv, "--output", out, "--teachers", "resnet18", "--variants", "kl_bce", *TINY,
            "--finetune_epochs", "1", "--calibration_batches", "1", "--compress"]
    run = lambda *extra: main([str(a) for a in [*args, *extra]])  # noqa: E731
    graphs = out / "graphs" / "resnet18_kl_bce" / "seed_1"
    assert run("--no_quant_compile", "--no_figures") == 0
    assert [line for line in epochs(logs) if not line.startswith("[finetune")] == []
    assert not list((out / "graphs").rglob("*.png")) and not list((out / "teachers").rglob("*.png"))
    logs.clear()
    # a figure setting: the figures are drawn (the training curves from the logs of models trained
    # under --no_figures), nothing trains, the pruned student is reused. (t-SNE/UMAP: tiny_run.)
    assert run("--no_quant_compile") == 0
    assert epochs(logs) == []
    store = next((out / "teachers" / "resnet18").glob("seed_1-*"))
    assert (store / "teacher_training_curves.png").is_file()
    assert all((graphs / f"{m}_training_curves.png").is_file() for m in ("teacher", "student"))
    assert (graphs / "pr_curves.png").is_file()
    assert any("student_pruned kl_bce: reusing" in line for line in logs)
    final = out / "metrics" / "resnet18_kl_bce" / "seed_1" / "final_evaluation.json"
    logs.clear()
    # a compression setting (the later of two values winning): new outputs, same run, nothing trains.
    # (Compiling int8 would show the same; it costs tens of seconds of inductor on a fresh machine,
    # and test_compress compiles; the later of a switch pair winning is test_a_later_switch_wins.)
    before = json.loads(final.read_text())["run"]
    assert run("--no_quant_compile", "--calibration_batches", "2") == 0
    assert epochs(logs) == []
    after = json.loads(final.read_text())["run"]
    assert after["run_key"] == before["run_key"] and after["outputs_key"] != before["outputs_key"]


@pytest.mark.parametrize("switches, compiled", [(("--no_quant_compile", "--quant_compile"), True),
                                                (("--quant_compile", "--no_quant_compile"), False)])
def test_a_later_switch_wins(switches, compiled):
    """DEMO_FLAGS appends to the Makefile's flags: the later of a switch pair must win, not clash."""
    from firekd.cli import build_parser

    assert build_parser().parse_args(["ablation", "--csv", "x.csv", *switches]).quant_compile is compiled


def test_an_rgb_only_teacher_reuses_the_control(finished, tmp_path, logs):
    csv, _ = finished
    out = copy_output(finished, tmp_path)
    ablation(csv, out, "--teacher_modalities", "rgb", "--overwrite")  # not the same RGB+IR checks
    trained = [line for line in epochs(logs)]
    assert any(line.startswith("[teacher resnet18") for line in trained)
    assert not any(line.startswith("[student bce") for line in trained)


def test_a_resume_state_is_found_from_another_working_directory(tmp_path):
    import torch

    from firekd.recipes.context import FileCheckpointer

    model = torch.nn.Linear(2, 2)
    meta = {"settings": {"data": "fp"}, "teacher_build": None, "data": {"csv": "data/data.csv"}}
    FileCheckpointer(tmp_path, "student", model, "student", meta, Writer()).save_last({"epoch": 3})
    moved = {**meta, "data": {"csv": "/elsewhere/data.csv"}}
    assert FileCheckpointer(tmp_path, "student", model, "student", moved, Writer()).load_last() == {"epoch": 3}
    other = {**meta, "settings": {"data": "other"}}
    assert FileCheckpointer(tmp_path, "student", model, "student", other, Writer()).load_last() is None


def test_a_figure_change_reuses_the_onnx_export(finished, tmp_path):
    csv, _ = finished
    out = copy_output(finished, tmp_path)  # its teacher and students: only compression and export run
    args = ["ablation", "--csv", csv, "--output", out, "--teachers", "resnet18", "--variants", "kl_bce", *TINY,
            "--finetune_epochs", "1", "--calibration_batches", "1", "--compress", "--onnx", "--no_quant_compile"]
    assert main([str(a) for a in [*args, "--no_figures"]]) == 0
    models = out / "models" / "resnet18_kl_bce" / "seed_1"
    marker = json.loads((models / "student_onnx.store.json").read_text())
    stamp = (models / "student_best_int8.onnx").stat().st_mtime_ns
    assert main([str(a) for a in args]) == 0  # figures on: new outputs
    assert json.loads((models / "student_onnx.store.json").read_text())["build"] == marker["build"]
    assert (models / "student_best_int8.onnx").stat().st_mtime_ns == stamp
    final = json.loads((out / "metrics" / "resnet18_kl_bce" / "seed_1" / "final_evaluation.json").read_text())
    assert "student_onnx_int8" in final
