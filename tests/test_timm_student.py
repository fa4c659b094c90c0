"""Students from timm with ImageNet weights: --student_pretrained / --student_weights, one clear
line when the weights cannot be had, and compression and export working for them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from cli_helpers import assert_one_line_error, run_cli

from firekd.compress.onnx_export import OnnxStudent, export_onnx
from firekd.compress.quantize import quantize_int8
from firekd.errors import ModelError
from firekd.models import build_student

NAME = "mobilenetv3_small_050"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A timm state dict of NAME, as one downloaded elsewhere would be (ImageNet head of 1000)."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / f"{NAME}.pth"
    torch.save(timm.create_model(NAME, pretrained=False).state_dict(), path)
    return path


def test_student_weights_load_into_the_backbone(weights_file):
    student = build_student(NAME, weights=weights_file)
    held = torch.load(weights_file, weights_only=True)
    ours = student.backbone.state_dict()
    stem = "conv_stem.weight"
    assert torch.equal(ours[stem], held[stem])
    assert student(torch.randn(2, 3, 64, 64))[0].shape == (2, 2)  # the classifier is replaced
    assert not torch.equal(build_student(NAME).backbone.state_dict()[stem], held[stem])


@pytest.mark.slow
def test_timm_student_from_weights_quantizes_and_exports(weights_file, tmp_path):
    student = build_student(NAME, weights=weights_file).eval()
    rgb = torch.randn(4, 3, 32, 32)
    quantized, used = quantize_int8(student, [rgb])
    assert used == 1 and quantized(rgb)[0].shape == (4, 2)
    export_onnx(student, tmp_path / "s.onnx", rgb)
    with torch.no_grad():
        torch.testing.assert_close(OnnxStudent(tmp_path / "s.onnx")(rgb)[0], student(rgb)[0], atol=1e-4, rtol=1e-3)


def test_firekd_student_has_no_pretrained_weights():
    with pytest.raises(ModelError, match="trained from scratch"):
        build_student("firekd_student", pretrained=True)


def test_missing_weights_file_is_one_line(synth_small, tmp_path, capsys):
    code, _, err = run_cli(["train", "--csv", synth_small / "data.csv", "--student", NAME,
                            "--student_weights", tmp_path / "nope.pth", "--output", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, r"nope\.pth")


def test_offline_without_cached_weights_is_one_line_naming_student_weights(synth_small, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    proc = subprocess.run([sys.executable, "-m", "firekd", "train", "--csv", str(synth_small / "data.csv"),
                           "--student", NAME, "--student_pretrained", "--output", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert_one_line_error(proc.returncode, proc.stderr, rf"ImageNet weights of {NAME}.*--student_weights PATH")
    assert not (tmp_path / "o" / "teachers").exists()  # failed before any teacher trained
