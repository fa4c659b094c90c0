"""The spec's setup as written: `pip install -r requirements.txt` installs this package with its
dependencies, and `python scripts/<teacher>/train_kd_<variant>.py` then runs from anywhere."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirement_lines() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_installs_this_package_with_its_declared_dependencies():
    # the package itself, not a copy of its dependency list that could drift from pyproject.toml
    assert _requirement_lines() == ["-e ."]
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "firekd"
    deps = {Requirement(d).name: Requirement(d) for d in project["dependencies"]}
    assert deps["torch"].specifier.contains("2.14.1") and deps["torchvision"].specifier.contains("0.29.1")
    assert "filelock" in deps  # the run-folder lock


@pytest.mark.parametrize("script", ["resnet-152/train_kd_kl_bce.py", "vit-b-16/train_kd_kl_contrastive_l2_bce.py"])
def test_a_spec_script_runs_from_another_folder(script: str, tmp_path: Path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--csv", "--base_path", "--output", "--epochs_teacher", "--seeds", "--prune_sparsity"):
        assert flag in proc.stdout


@pytest.mark.parametrize("script,teacher,variant", [("resnet-152/train_kd_kl_bce.py", "resnet152", "kl_bce"),
                                                    ("swin-tiny/train_kd_kl_l2_bce.py", "swin_tiny", "kl_l2_bce")])
def test_a_spec_scripts_help_names_its_own_fixed_teacher_and_variant(script, teacher, variant, monkeypatch,
                                                                     capsys):
    # the script file itself, in this process (the test above starts real processes)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / script), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: {Path(script).name}")
    assert f"teacher {teacher} and loss variant {variant}, both fixed by this script" in text
    assert "[--teacher TEACHER]" not in text and "[--variant" not in text  # not settable here


def test_no_amp_is_spelt_both_ways():
    from firekd.cli import build_parser

    parser = build_parser()
    base = ["train", "--csv", "x.csv"]
    assert parser.parse_args(base).amp is True
    assert parser.parse_args([*base, "--no_amp"]).amp is False
    assert parser.parse_args([*base, "--no-amp"]).amp is False
