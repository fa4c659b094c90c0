"""`firekd evaluate --split test` and `firekd export` use the split the checkpoint's run recorded
(OUTPUT/metrics/<run>/split.csv, found from OUTPUT/models/<run>/seed_<s>/), not one remade from flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

from firekd.checkpoints import save_model
from firekd.config import DataConfig
from firekd.data.splits import split_digest
from firekd.errors import DataError
from firekd.models import create_student
from firekd.recipes.data import load_data
from firekd.recipes.evaluate import recorded_split
from firekd.recipes.export import _load_data, with_recorded_split


@pytest.fixture
def run(synth_small: Path, tmp_path: Path) -> Path:
    """OUTPUT with a student checkpoint of run resnet18_kl_bce, seed 1, and the run's split.csv: a
    split the default flags would not make (another split seed)."""
    output = tmp_path / "output"
    bundle = load_data(DataConfig(csv=str(synth_small / "data.csv"), img_size=32, split_seed=7, cache=False))
    metrics = output / "metrics" / "resnet18_kl_bce"
    metrics.mkdir(parents=True)
    bundle.split_table().to_csv(metrics / "split.csv", index=False)
    meta = {"data": {"csv": str(synth_small / "data.csv"), "img_size": 32, "ir_kind": "8bit", "ir_channels": 1},
            "thresholds": [0.5, 0.5]}
    save_model(output / "models" / "resnet18_kl_bce" / "seed_1" / "student_best.pth",
               create_student("firekd_student"), kind="student", meta=meta)
    return output


def _checkpoint(output: Path) -> Path:
    return output / "models" / "resnet18_kl_bce" / "seed_1" / "student_best.pth"


def _evaluate(capsys, tmp_path: Path, checkpoint: Path, csv: Path, *extra) -> dict:
    code, out, err = run_cli(["evaluate", "--checkpoint", checkpoint, "--csv", csv, "--split", "test",
                              "--out", tmp_path / "ev", "--device", "cpu", *extra], capsys)
    assert code == 0, err
    return json.loads(next((tmp_path / "ev").glob("*.json")).read_text())["evaluated"]


def test_evaluate_defaults_to_the_runs_recorded_split(run: Path, synth_small: Path, tmp_path: Path, capsys):
    split_csv = run / "metrics" / "resnet18_kl_bce" / "split.csv"
    assert recorded_split(_checkpoint(run)) == split_csv
    info = _evaluate(capsys, tmp_path, _checkpoint(run), synth_small / "data.csv")
    recorded = pd.read_csv(split_csv)
    assert info["split_file"] == str(split_csv) and info["n"] == int((recorded["split"] == "test").sum())
    predicted = pd.read_csv(next((tmp_path / "ev").glob("*_predictions.csv")))
    assert sorted(predicted["row"]) == sorted(recorded.loc[recorded["split"] == "test", "row"])
    default = load_data(DataConfig(csv=str(synth_small / "data.csv"), img_size=32, cache=False))
    assert sorted(predicted["row"]) != sorted(default.records.loc[default.positions("test"), "row"])


def test_a_csv_the_run_did_not_use_falls_back_to_its_split_column_or_one_clear_line(
        run: Path, synth_small: Path, tmp_path: Path, capsys):
    other = pd.read_csv(synth_small / "data.csv").iloc[::-1].head(40)  # line 2 now names another image
    other["rgb_path"] = other["rgb_path"].map(lambda p: str(synth_small / p))
    other["ir_path"] = other["ir_path"].map(lambda p: str(synth_small / p))
    other.to_csv(tmp_path / "other.csv", index=False)
    code, _, err = run_cli(["evaluate", "--checkpoint", _checkpoint(run), "--csv", tmp_path / "other.csv",
                            "--split", "test", "--out", tmp_path / "ev"], capsys)
    assert_one_line_error(code, err, r"split\.csv: line 2 names 000000.jpg .* \(the split of the checkpoint's "
                                     r"run; name another with --split_file, or use --split all\)")
    other.assign(split=["test"] * 5 + ["train"] * 35).to_csv(tmp_path / "other.csv", index=False)
    info = _evaluate(capsys, tmp_path, _checkpoint(run), tmp_path / "other.csv")
    assert info["split_file"] is None and info["n"] == 5


def test_a_checkpoint_outside_a_run_folder_needs_a_split_file(run: Path, synth_small: Path, tmp_path, capsys):
    loose = tmp_path / "student_best.pth"
    shutil.copy(_checkpoint(run), loose)
    code, _, err = run_cli(["evaluate", "--checkpoint", loose, "--csv", synth_small / "data.csv",
                            "--split", "test", "--out", tmp_path / "ev"], capsys)
    assert_one_line_error(code, err, r"--split test: .* has no split column and .*student_best\.pth is not in "
                                     r"a run's models folder; pass the run's split\.csv with --split_file")


def test_a_recorded_split_digest_catches_a_rewritten_run_folder(run: Path, synth_small: Path, tmp_path, capsys):
    split_csv = run / "metrics" / "resnet18_kl_bce" / "split.csv"
    table = pd.read_csv(split_csv)
    meta = {"data": {"img_size": 32, "split_digest": split_digest(table["row"], table["split"])},
            "thresholds": [0.5, 0.5]}
    save_model(_checkpoint(run), create_student("firekd_student"), kind="student", meta=meta)
    assert _evaluate(capsys, tmp_path, _checkpoint(run), synth_small / "data.csv")["split_file"] == str(split_csv)
    table.assign(split=table["split"].iloc[::-1].to_numpy()).to_csv(split_csv, index=False)  # a later run
    code, _, err = run_cli(["evaluate", "--checkpoint", _checkpoint(run), "--csv", synth_small / "data.csv",
                            "--split", "test", "--out", tmp_path / "ev2"], capsys)
    assert_one_line_error(code, err, r"split\.csv is not the split .*student_best\.pth was trained with")


def test_export_uses_the_runs_split_unless_told_otherwise(run: Path, synth_small: Path, tmp_path: Path, caplog):
    data = DataConfig(csv=str(synth_small / "data.csv"), img_size=32, cache=False)
    split_csv = run / "metrics" / "resnet18_kl_bce" / "split.csv"
    chosen, recorded = with_recorded_split(data, _checkpoint(run), {})
    assert chosen.split_file == str(split_csv) and recorded == split_csv
    bundle = _load_data(chosen, recorded)
    assert bundle.split_table()["split"].tolist() == pd.read_csv(split_csv)["split"].tolist()
    explicit = DataConfig(csv=data.csv, img_size=32, split_file=str(tmp_path / "mine.csv"))
    assert with_recorded_split(explicit, _checkpoint(run), {}) == (explicit, None)
    loose = tmp_path / "student_best.pth"
    shutil.copy(_checkpoint(run), loose)
    assert with_recorded_split(data, loose, {}) == (data, None)
    assert "the test images may include training images" in caplog.text
    small = tmp_path / "small.csv"
    pd.read_csv(synth_small / "data.csv").iloc[::-1].head(50).to_csv(small, index=False)
    with pytest.raises(DataError, match=r"split\.csv: .*\(the split of the checkpoint's run; name another"):
        _load_data(*with_recorded_split(DataConfig(csv=str(small), base_path=str(synth_small), img_size=32,
                                                   cache=False), _checkpoint(run), {}))
