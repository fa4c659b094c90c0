"""A CSV without IR: accepted when the teacher is RGB-only (--teacher_modalities rgb), refused with
one clear line otherwise; the real RGB-only collection in ../shared validates (skipped if absent)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from conftest import shared_data

from firekd.checkpoints import load_payload

NO_IR = r"no IR column .*columns found: rgb_path, fire, smoke.* --teacher_modalities rgb"
TINY_RUN = ["--no_pretrained", "--seeds", "0", "--img_size", "32",
            "--epochs_teacher", "1", "--epochs_student", "1", "--batch_size", "32", "--num_workers", "0",
            "--no_compress", "--max_embed_points", "0", "--no_figures"]


@pytest.fixture
def rgb_only_csv(synth_small: Path, tmp_path: Path) -> Path:
    """The synthetic set's RGB images and labels, no IR column."""
    table = pd.read_csv(synth_small / "data.csv")
    table["rgb_path"] = [str(synth_small / p) for p in table["rgb_path"]]
    path = tmp_path / "rgb_only.csv"
    table[["rgb_path", "fire", "smoke"]].to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_train_accepts_rgb_only_csv_with_an_rgb_teacher(rgb_only_csv: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    args = ["train", "--csv", rgb_only_csv, "--teacher_modalities", "rgb", "--teacher", "resnet18",
            "--variant", "kl_bce", "--output", out, *TINY_RUN]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "IR: none (RGB-only)" in err
    assert re.search(r"\| resnet18 +\| kl_bce +\| teacher +\| 1 ", stdout), stdout
    seed_dir = out / "models" / "resnet18_kl_bce" / "seed_0"
    payload = load_payload(seed_dir / "teacher_best.pth")
    assert payload["model_config"]["modalities"] == "rgb" and payload["meta"]["data"]["ir_kind"] is None


@pytest.mark.parametrize("command", ["train", "ablation"])
def test_rgb_only_csv_refused_for_an_rgb_ir_teacher(command: str, rgb_only_csv: Path, tmp_path: Path,
                                                    capsys):
    out = tmp_path / "out"
    teacher = ["--teacher" if command == "train" else "--teachers", "resnet18"]
    code, _, err = run_cli([command, "--csv", rgb_only_csv, "--output", out, *teacher, *TINY_RUN], capsys)
    assert_one_line_error(code, err, NO_IR)
    assert not list(out.rglob("*.*"))  # nothing written


def test_validate_rgb_only(rgb_only_csv: Path, capsys):
    code, _, err = run_cli(["validate", "--csv", rgb_only_csv], capsys)
    assert_one_line_error(code, err, NO_IR)
    code, out, _ = run_cli(["validate", "--csv", rgb_only_csv, "--teacher_modalities", "rgb"], capsys)
    assert code == 0 and "96 valid samples; IR: none (RGB-only)" in out


def test_real_rgb_collection_validates_as_rgb_only(capsys):
    csv = shared_data("fire-smoke-rgb", "data.csv")
    code, out, err = run_cli(["validate", "--csv", csv, "--teacher_modalities", "rgb", "--img_size", "64"], capsys)
    assert code == 0, err
    assert "3336 valid samples; IR: none (RGB-only)" in out
    counts = out.splitlines()[-1].split()  # "all none fire smoke both total"
    assert counts == ["all", "538", "1103", "1191", "504", "3336"]
    code, _, err = run_cli(["validate", "--csv", csv], capsys)
    assert_one_line_error(code, err, r"no IR column .*columns found: rgb_path, fire, smoke, source")
