"""Model cards: `firekd export` writes one beside each artefact, and `firekd predict` run with only
an artefact and its card gives the checkpoint's probabilities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from deploy_helpers import toy_detector

from firekd import __version__
from firekd.deploy.card import card_paths, file_digest


@pytest.fixture(scope="module")
def exported(synth_small, tmp_path_factory):
    """A student exported with `firekd export` (ONNX fp32 and int8, each with its card)."""
    folder = tmp_path_factory.mktemp("export")
    checkpoint = toy_detector(folder / "student_best.pth")
    from firekd.cli import main

    code = main(["export", "--checkpoint", str(checkpoint), "--csv", str(synth_small / "data.csv"),
                 "--batch_size", "32", "--calibration_batches", "2", "--latency_runs", "2"])
    assert code == 0
    return checkpoint


def test_export_writes_a_card_beside_each_artefact(exported):
    folder = exported.parent
    for name, kind in (("student_best.pth", "student"), ("student_best.onnx", "student_onnx"),
                       ("student_best_int8.onnx", "student_onnx_int8")):
        json_path, md_path = card_paths(folder / name)
        card = json.loads(json_path.read_text())
        assert card["artefact"]["kind"] == kind
        assert card["artefact"]["sha256"] == file_digest(folder / name)
        assert card["input"]["img_size"] == 32 and card["model"]["architecture"] == "firekd_student"
        assert card["firekd_version"] == __version__
        assert card["training_data"]["split_counts"]["test"] > 0
        low, high = card["test"]["f1_macro_ci95"]
        assert low <= card["test"]["f1_macro"] <= high
        assert card["latency"]["batch1_ms"] > 0 and card["latency"]["threads"] == 1 and card["latency"]["cpu"]
        assert f"Model card: {name}" in md_path.read_text()
    evaluation = json.loads((folder / "student_best_onnx_evaluation.json").read_text())
    card = json.loads(card_paths(folder / "student_best_int8.onnx")[0].read_text())
    assert card["test"]["f1_macro"] == pytest.approx(evaluation["student_onnx_int8"]["f1_macro"])
    assert card["thresholds"]["fire"] == pytest.approx(evaluation["student_onnx_int8"]["threshold_fire"])


def test_artefact_and_card_alone_reproduce_the_checkpoint(exported, synth_small, tmp_path, capsys):
    images = tmp_path / "frames"
    images.mkdir()
    for path in sorted((synth_small / "rgb").iterdir())[:12]:
        shutil.copy(path, images / path.name)
    camera_box = tmp_path / "camera_box"  # only the ONNX file and its card travel
    camera_box.mkdir()
    for path in (exported.with_suffix(".onnx"), card_paths(exported.with_suffix(".onnx"))[0]):
        shutil.copy(path, camera_box / path.name)
    code, _, err = run_cli(["predict", "--model", exported, "--input", images, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["predict", "--model", camera_box / "student_best.onnx", "--input", images,
                            "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    a, b = (pd.read_csv(tmp_path / x / "predictions.csv") for x in "ab")
    np.testing.assert_allclose(a[["fire_prob", "smoke_prob"]], b[["fire_prob", "smoke_prob"]], atol=1e-5)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    card = json.loads(card_paths(exported.with_suffix(".onnx"))[0].read_text())
    assert summary["img_size"] == 32 and summary["thresholds_from"] == "model card"
    assert summary["thresholds"] == [card["thresholds"]["fire"], card["thresholds"]["smoke"]]


def test_a_stale_card_is_refused(exported, synth_small, tmp_path, capsys):
    onnx = tmp_path / "student_best.onnx"
    shutil.copy(exported.with_suffix(".onnx"), onnx)
    # the int8 file's card beside the fp32 file: the digest tells them apart
    shutil.copy(card_paths(exported.parent / "student_best_int8.onnx")[0], card_paths(onnx)[0])
    code, _, err = run_cli(["predict", "--model", onnx, "--input", synth_small / "rgb", "--out", tmp_path / "o"],
                           capsys)
    assert_one_line_error(code, err, r"describes another file")
