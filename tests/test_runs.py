"""What a result depends on, end to end: the control trained once per seed and shown under every
teacher, a changed teacher setting retrains the teacher, a run folder aggregates only seeds made
from its own data and settings (and refuses to mix them), a rerun after running out of memory is
accepted when nothing finished, and a run folder of an earlier firekd is read and not mixed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, log_lines, run_cli, snapshot

from firekd.data.synthetic import SynthConfig
from firekd.recipes.synth import write_synthetic
from firekd.rundir import RunDir

pytestmark = pytest.mark.slow
TINY = ["--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained", "--img_size", "32",
        "--num_workers", "0", "--batch_size", "32", "--lr_teacher", "1e-3", "--max_embed_points", "0", "--no_figures",
        "--no_compress", "--latency_runs", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs_data")
    write_synthetic(SynthConfig(n=96, size=32, seed=5), out)
    return out / "data.csv"


@pytest.fixture(scope="module")
def two_teachers(data, tmp_path_factory):
    """resnet18 and resnet10t (two small teachers: which ones does not matter here), one KD variant
    and the control, two seeds."""
    from firekd.cli import main

    out = tmp_path_factory.mktemp("two_teachers")
    with log_lines() as records:
        code = main(["ablation", "--csv", str(data), "--output", str(out), "--teachers", "resnet18", "resnet10t",
                     "--variants", "kl_bce", "bce", "--seeds", "1", "2", *TINY])
    assert code == 0
    return out, "\n".join(records)


def test_the_control_is_trained_once_per_seed_and_shown_under_every_teacher(two_teachers):
    out, log = two_teachers
    for seed in (1, 2):
        assert len(re.findall(rf"\[student bce \(seed {seed}\)\] epoch 1/1", log)) == 1
        assert len(list((out / "controls" / "firekd_student").glob(f"seed_{seed}-*"))) == 1
        finals = [json.loads((out / f"metrics/{t}_bce/seed_{seed}/final_evaluation.json").read_text())
                  for t in ("resnet18", "resnet10t")]
        assert finals[0]["student"] == finals[1]["student"]
        assert [f["run"]["name"] for f in finals] == ["resnet18_bce", "resnet10t_bce"]
        assert "teacher" not in finals[0]
        for teacher in ("resnet18", "resnet10t"):  # every file of the seed is there, linked
            assert (out / f"models/{teacher}_bce/seed_{seed}/student_best.pth").is_file()
            assert (out / f"metrics/{teacher}_bce/seed_{seed}/predictions_student.csv").is_file()
    for teacher in ("resnet18", "resnet10t"):
        agg = json.loads((out / f"metrics/{teacher}_bce/aggregated_results.json").read_text())
        assert agg["seeds"] == [1, 2]


def test_each_run_log_holds_the_lines_of_its_own_run(two_teachers):
    out, _ = two_teachers
    logs = {name: (out / "metrics" / name / "run.log").read_text()
            for name in ("resnet18_kl_bce", "resnet10t_kl_bce", "resnet18_bce", "resnet10t_bce")}
    assert "[teacher resnet18 (seed 1)] epoch 1/1" in logs["resnet18_kl_bce"]
    assert "[teacher resnet18" not in logs["resnet10t_kl_bce"]
    assert "[teacher resnet10t" not in logs["resnet18_kl_bce"]
    assert "[teacher" not in logs["resnet18_bce"] + logs["resnet10t_bce"]
    for name in ("resnet18_bce", "resnet10t_bce"):  # the control, trained once, logged under every teacher
        assert "[student bce (seed 1)] epoch 1/1" in logs[name]


def test_teacher_efficiency_is_measured_once_per_architecture(two_teachers):
    out, log = two_teachers
    for teacher in ("resnet18", "resnet10t"):
        assert len(list((out / "teachers" / teacher).glob("efficiency-*.json"))) == 1
        assert log.count(f"teacher {teacher}: measuring params") == 1
        params = {json.loads((out / f"metrics/{teacher}_kl_bce/seed_{s}/final_evaluation.json").read_text())
                  ["teacher"]["params"] for s in (1, 2)}
        assert len(params) == 1


def test_teacher_efficiency_is_measured_after_every_job_and_merged_into_each_seed(two_teachers):
    """No GPU waits while the CPU times a teacher: the measurement comes after the last job, and
    each seed's teacher block then holds exactly the stored numbers, after its evaluation metrics."""
    out, log = two_teachers
    lines = log.splitlines()
    last_job = max(i for i, line in enumerate(lines) if re.match(r"seed \d: .* done in", line))
    first_measure = min(i for i, line in enumerate(lines) if ": measuring params" in line)
    assert last_job < first_measure
    for teacher in ("resnet18", "resnet10t"):
        stored = json.loads(next((out / "teachers" / teacher).glob("efficiency-*.json")).read_text())
        for seed in (1, 2):
            block = json.loads((out / f"metrics/{teacher}_kl_bce/seed_{seed}/final_evaluation.json")
                               .read_text())["teacher"]
            assert list(block)[-len(stored["efficiency"]):] == list(stored["efficiency"])
            assert {k: block[k] for k in stored["efficiency"]} == stored["efficiency"]
            assert "f1_macro" in block


def test_a_changed_teacher_setting_trains_a_new_teacher(data, tmp_path, capsys):
    args = ["ablation", "--csv", data, "--output", tmp_path, "--teachers", "resnet18", "--seeds", "1",
            "--teacher_only", *TINY]
    for lr in ("1e-3", "2e-3", "1e-3"):
        code, _, err = run_cli([*args, "--lr_teacher", lr], capsys)
        assert code == 0, err
    stores = sorted((tmp_path / "teachers" / "resnet18").glob("seed_1-*"))
    assert len(stores) == 2  # the third run reused the first teacher


def test_seeds_of_other_data_are_refused_and_nothing_is_overwritten(data, tmp_path, capsys):
    shutil.copytree(data.parent, tmp_path / "d")
    csv = tmp_path / "d" / "data.csv"
    args = ["train", "--csv", csv, "--output", tmp_path / "out", "--teacher", "resnet18", "--variant", "bce",
            *TINY]
    assert run_cli([*args, "--seeds", "1"], capsys)[0] == 0
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:-1]) + "\n")  # the CSV changed: one row fewer
    before = snapshot(tmp_path / "out" / "metrics")
    code, _, err = run_cli([*args, "--seeds", "1", "2"], capsys)
    assert_one_line_error(code, err, r"resnet18_bce holds finished seeds made with other settings "
                                     r"\(differs in: data\)")
    assert snapshot(tmp_path / "out" / "metrics") == before  # split.csv and results untouched


def test_aggregation_leaves_out_seeds_made_from_other_data(data, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    args = ["train", "--csv", data, "--output", out, "--teacher", "resnet18", "--variant", "bce", *TINY]
    assert run_cli([*args, "--seeds", "1", "2"], capsys)[0] == 0
    final = out / "metrics/resnet18_bce/seed_2/final_evaluation.json"
    fake = json.loads(final.read_text())
    fake["run"]["run_key"] = "made-from-other-data"
    final.write_text(json.dumps(fake))
    aggregated = RunDir.open(out / "metrics/resnet18_bce").aggregate()
    assert aggregated["seeds"] == [1]
    assert "seed(s) 2 were made with other data or settings" in caplog.text


def test_running_out_of_memory_ends_in_one_line_and_a_smaller_batch_is_accepted(data, tmp_path, capsys,
                                                                               monkeypatch, caplog):
    from firekd.kd import distiller

    real = distiller.Supervised.forward

    def out_of_memory(self, rgb, *args):
        if len(rgb) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, rgb, *args)

    monkeypatch.setattr(distiller.Supervised, "forward", out_of_memory)
    args = ["train", "--csv", data, "--output", tmp_path, "--teacher", "resnet18", "--variant", "kl_bce",
            "--seeds", "1", *TINY]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, r"teacher resnet18 \(seed 1\), epoch 1: out of GPU memory at "
                                     r"--batch_size 32; rerun with --batch_size 16")
    code, _, err = run_cli([*args, "--batch_size", "16"], capsys)
    assert code == 0, err
    assert "no seed finished under its earlier settings (differs in: optim.batch_size" in caplog.text


def test_a_run_folder_of_an_earlier_firekd_is_read_and_not_mixed(data, tmp_path, capsys):
    run = tmp_path / "metrics" / "resnet18_bce"
    (run / "seed_7").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"settings": {"teacher": "resnet18", "variant": "bce",
                                                              "batch_size": 32, "data": {"csv": str(data)}}}))
    final = {"student": {"f1_macro": 0.5, "f1_fire": 0.5, "f1_smoke": 0.5}, "run": {"seed": 7}}
    (run / "seed_7" / "final_evaluation.json").write_text(json.dumps(final))
    assert RunDir.open(run).aggregate()["seeds"] == [7]  # no run key recorded: every seed counts
    code, out, _ = run_cli(["compare", tmp_path], capsys)
    assert code == 0 and "resnet18" in out
    code, _, err = run_cli(["train", "--csv", data, "--output", tmp_path, "--teacher", "resnet18",
                            "--variant", "bce", "--seeds", "1", *TINY], capsys)
    assert_one_line_error(code, err, r"made by an earlier firekd \(settings format 1\).*--overwrite")


def test_an_untrained_teacher_keeps_its_initial_weights(data, tmp_path, capsys):
    code, _, err = run_cli(["ablation", "--csv", data, "--output", tmp_path, "--teachers", "resnet18",
                            "--seeds", "1", "--teacher_only", *TINY, "--epochs_teacher", "0"], capsys)
    assert code == 0, err
    store = next((tmp_path / "teachers" / "resnet18").glob("seed_1-*"))
    log = json.loads((store / "teacher_train_log.json").read_text())
    assert log["epochs"] == [] and (store / "teacher_best.pth").is_file()
    from firekd.checkpoints import load_model
    from firekd.models import create_teacher

    torch.manual_seed(1)  # the seed's initialisation, untouched
    fresh = create_teacher("resnet18", img_size=32, pretrained=False)
    model, meta = load_model(store / "teacher_best.pth", kind="teacher")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    assert len(meta["thresholds"]) == 2


def test_activation_checkpointing_trains_the_same_teacher(data, tmp_path, capsys):
    from firekd.checkpoints import load_model

    weights = {}
    for mode in ("off", "on"):
        code, _, err = run_cli(["ablation", "--csv", data, "--output", tmp_path / mode, "--teachers", "resnet18",
                                "--seeds", "1", "--teacher_only", *TINY, "--grad_checkpointing", mode], capsys)
        assert code == 0, err
        assert ("activation checkpointing on" in err) == (mode == "on")
        store = next((tmp_path / mode / "teachers" / "resnet18").glob("seed_1-*"))
        weights[mode] = load_model(store / "teacher_best.pth", kind="teacher")[0].state_dict()
    assert all(torch.allclose(weights["off"][k].float(), weights["on"][k].float(), atol=1e-5)
               for k in weights["off"])


def test_a_firekd_teacher_checkpoint_seeds_another_teachers_backbone(data, tmp_path, capsys):
    from firekd.checkpoints import load_model

    code, _, err = run_cli(["ablation", "--csv", data, "--output", tmp_path / "first", "--teachers", "resnet18",
                            "--seeds", "1", "--teacher_only", "--teacher_modalities", "rgb", *TINY], capsys)
    assert code == 0, err
    source = next((tmp_path / "first" / "teachers" / "resnet18").glob("seed_1-*")) / "teacher_best.pth"
    code, _, err = run_cli(["ablation", "--csv", data, "--output", tmp_path / "second", "--teachers", "resnet18",
                            "--seeds", "2", "--teacher_only", *TINY, "--epochs_teacher", "0",
                            "--teacher_weights", source], capsys)
    assert code == 0, err
    start = next((tmp_path / "second" / "teachers" / "resnet18").glob("seed_2-*")) / "teacher_best.pth"
    first, second = (load_model(p, kind="teacher")[0].state_dict() for p in (source, start))
    backbone = [k for k in first if k.startswith("backbone.") and not k.startswith("backbone.fc.")]
    assert backbone and all(torch.equal(first[k], second[k]) for k in backbone)  # the classifier is new
    assert any(k.startswith("ir_stem.") for k in second)  # an RGB+IR teacher now
    code, _, err = run_cli(["ablation", "--csv", data, "--output", tmp_path / "third", "--teachers", "resnet18",
                            "--seeds", "1", "--teacher_only", *TINY, "--teacher_weights",
                            tmp_path / "first/models/x.pth"], capsys)
    assert_one_line_error(code, err, r"pretrained weights file not found: .*x\.pth")
