"""Atomic outputs: a write that fails half-way leaves the previous file intact and no debris."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from firekd.checkpoints import load_model, save_model
from firekd.diskspace import OutOfSpaceError
from firekd.io import read_json, save_figure, save_payload, write_csv, write_json
from firekd.models import create_student


class Unserialisable:
    pass


def _folder_is_clean(folder: Path, *expected: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)  # no temporary files left


def test_json_failing_mid_write_keeps_the_previous_file(tmp_path: Path):
    path = tmp_path / "final_evaluation.json"
    write_json(path, {"f1_macro": 0.8})
    before = path.read_bytes()
    # json.dump has written the first key to the temporary file when it meets the bad value
    with pytest.raises(TypeError):
        write_json(path, {"f1_macro": 0.9, "zzz": Unserialisable()})
    assert path.read_bytes() == before and read_json(path) == {"f1_macro": 0.8}
    _folder_is_clean(tmp_path, path.name)


def test_csv_failing_mid_write_keeps_the_previous_file(tmp_path: Path):
    path = tmp_path / "predictions.csv"
    write_csv(path, pd.DataFrame({"row": [2, 3], "p_fire": [0.1, 0.9]}))
    before = path.read_bytes()

    class Exploding(pd.DataFrame):
        def to_csv(self, fh, **kw):
            fh.write("row,p_fire\n2,0.")  # a truncated line, then the crash
            raise OSError(28, "No space left on device")

    with pytest.raises(OutOfSpaceError, match=r"predictions\.csv: no space left on device"):
        write_csv(path, Exploding())
    assert path.read_bytes() == before
    _folder_is_clean(tmp_path, path.name)


def test_checkpoint_failing_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    path = tmp_path / "student_best.pth"
    model = create_student("firekd_student")
    save_model(path, model, kind="student")
    before = path.read_bytes()

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OutOfSpaceError, match=r"student_best\.pth: no space left on device"):
        save_payload(path, {"format": "anything"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    loaded, _ = load_model(path, kind="student")  # still a complete, loadable checkpoint
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    _folder_is_clean(tmp_path, path.name)


def test_figure_failing_mid_write_keeps_the_previous_image(tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "student_training_curves.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(path, fig)
    before = path.read_bytes()
    fig, _ = plt.subplots()

    def half_written(target, **kwargs):
        Path(target).write_bytes(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    fig.savefig = half_written
    with pytest.raises(OutOfSpaceError, match=r"student_training_curves\.png: no space left on device"):
        save_figure(path, fig)
    assert path.read_bytes() == before and before.startswith(b"\x89PNG")
    _folder_is_clean(tmp_path, path.name)


def test_a_successful_write_replaces_the_file(tmp_path: Path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"v": 2, "nan": None}  # strict JSON: NaN becomes null
    _folder_is_clean(tmp_path, path.name)
