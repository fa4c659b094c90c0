"""Class-activation maps: the input's spatial size, different for different models, and
`firekd predict --cam` with a teacher beside the student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from deploy_helpers import SIZE, flame_images, toy_detector
from test_evaluation import assert_png_with_content

from firekd.checkpoints import load_model, save_model
from firekd.data.transforms import PairedTransform
from firekd.deploy.cam import class_activation_maps
from firekd.errors import ModelError
from firekd.models import create_student, create_teacher


@pytest.fixture(scope="module")
def two_students(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cams")
    return toy_detector(folder / "a.pth", seed=0), toy_detector(folder / "b.pth", seed=1)


def _inputs(n=4):
    images, _ = flame_images(n, seed=7)
    rgb, _ = PairedTransform(SIZE, train=False)(torch.from_numpy(images), torch.zeros(n, 0, SIZE, SIZE))
    return rgb


def test_cams_have_the_input_size_and_differ_between_models(two_students):
    rgb = _inputs()
    a, b = (class_activation_maps(load_model(p)[0], rgb, None, "fire") for p in two_students)
    assert a.shape == b.shape == (4, SIZE, SIZE)
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0.5
    assert np.abs(a - b).mean() > 0.05
    # the same model twice gives the same maps: the difference above is the models'
    np.testing.assert_allclose(class_activation_maps(load_model(two_students[0])[0], rgb, None, "fire"), a,
                               atol=1e-5)


def test_teacher_cam_takes_rgb_and_ir():
    teacher = create_teacher("resnet18", modalities="rgb+ir", ir_channels=1, pretrained=False)
    rgb, ir = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 64, 64)
    maps = class_activation_maps(teacher, rgb, ir, "smoke")
    assert maps.shape == (2, 64, 64)
    timm_student = create_student("mobilenetv3_small_050")
    assert class_activation_maps(timm_student, rgb, None, "fire").shape == (2, 64, 64)


def test_a_model_without_a_convolutional_stage_is_refused_in_one_line():
    class Tokens(torch.nn.Module):  # stands in for the ViT/Swin teachers (no spatial feature map)
        def forward(self, rgb):
            return torch.zeros(len(rgb), 2), torch.zeros(len(rgb), 4)

    with pytest.raises(ModelError, match="convolutional model.*not Tokens"):
        class_activation_maps(Tokens(), torch.randn(1, 3, 32, 32), None, "fire")


def test_predict_cam_draws_the_teacher_beside_the_student(two_students, synth_small, tmp_path, capsys):
    teacher = create_teacher("resnet18", modalities="rgb+ir", ir_channels=1, pretrained=False)
    path = tmp_path / "teacher_best.pth"
    save_model(path, teacher, kind="teacher",
               meta={"data": {"img_size": SIZE, "ir_kind": "8bit", "ir_channels": 1}})
    code, out, err = run_cli(["predict", "--model", two_students[0], "--input", synth_small / "data.csv",
                              "--cam", "--cam_with", path, "--cam_frames", "3", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert_png_with_content(tmp_path / "o" / "cam_fire.png")
    onnx = tmp_path / "x.onnx"
    onnx.write_bytes(b"not onnx")
    code, _, err = run_cli(["predict", "--model", two_students[0], "--input", synth_small / "data.csv",
                            "--cam", "--cam_with", onnx, "--out", tmp_path / "p"], capsys)
    assert_one_line_error(code, err, r"x\.onnx")
