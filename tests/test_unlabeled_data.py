"""Unlabelled pairs (--unlabeled_csv): read into the canonical records table with NaN labels,
validated with the same one-line errors as labelled CSVs (columns, stray labels, missing images, IR
format), kept out of validation and test, and carried to the batch as NaN labels."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_csv
from PIL import Image

from firekd.data.csv import ColumnNames, read_records, read_unlabeled
from firekd.data.dataset import FileSource, PairedDataset
from firekd.data.images import IRSpec
from firekd.data.unlabeled import check_unlabeled_files, drop_eval_overlap
from firekd.errors import DataError
from firekd.kd.losses import masked_bce


def _images(folder: Path, names: list[str], ir_mode: str = "L") -> None:
    for name in names:
        Image.new("RGB", (8, 8), (120, 60, 30)).save(folder / f"{name}.jpg")
        Image.new(ir_mode, (8, 8), 40).save(folder / f"{name}.png")


def test_reads_pairs_with_nan_labels(tmp_path: Path):
    csv = write_csv(tmp_path / "u.csv", "rgb_path,ir_path\nrgb/a.jpg,ir/a.png\nrgb/b.jpg,ir/b.png\n")
    rec = read_unlabeled(csv)
    assert rec["row"].tolist() == [2, 3]
    assert rec.loc[1, "rgb_path"] == str(tmp_path / "rgb/b.jpg")
    assert rec.loc[0, "ir_path"] == str(tmp_path / "ir/a.png")
    assert rec["fire"].dtype == np.float64 and rec[["fire", "smoke"]].isna().all().all()
    assert list(rec.columns) == ["row", "rgb_path", "ir_path", "fire", "smoke"]


@pytest.mark.parametrize("cell", ["", " ", "nan", "NaN", "NA", "none"])
def test_empty_label_columns_are_accepted(tmp_path: Path, cell: str):
    csv = write_csv(tmp_path / "u.csv", f"rgb,thermal,fire,smoke,split\n1.jpg,1.png,{cell},,test\n")
    rec = read_unlabeled(csv)
    assert math.isnan(rec.loc[0, "fire"]) and "split" not in rec  # unlabelled pairs only train


def test_a_stray_label_names_file_line_column_and_value(tmp_path: Path):
    csv = write_csv(tmp_path / "u.csv", "rgb_path,ir_path,fire,smoke\n1.jpg,1.png,,\n2.jpg,2.png,,1\n"
                    "3.jpg,3.png,,0\n")
    with pytest.raises(DataError, match=r"u\.csv: line 3: column 'smoke' has value '1' in a CSV of "
                                        r"unlabelled pairs \(--unlabeled_csv\).*\(2 label value\(s\)"):
        read_unlabeled(csv)


def test_missing_columns_and_empty_cells(tmp_path: Path):
    csv = write_csv(tmp_path / "u.csv", "image_left,ir_path\n1.jpg,1.png\n")
    with pytest.raises(DataError, match=r"u\.csv: missing required column\(s\) rgb_path; columns found: "
                                        r"image_left, ir_path \(name them with --rgb_col\)"):
        read_unlabeled(csv)
    csv = write_csv(tmp_path / "v.csv", "rgb_path\n1.jpg\n")
    with pytest.raises(DataError, match=r"v\.csv: no IR column"):
        read_unlabeled(csv)
    assert read_unlabeled(csv, require_ir=False).loc[0, "ir_path"] is None
    csv = write_csv(tmp_path / "w.csv", "rgb_path,ir_path\n1.jpg,1.png\n2.jpg,\n")
    with pytest.raises(DataError, match=r"w\.csv: line 3: column 'ir_path' is empty"):
        read_unlabeled(csv)
    write_csv(tmp_path / "h.csv", "rgb_path,ir_path")
    with pytest.raises(DataError, match="header but no data rows"):
        read_unlabeled(tmp_path / "h.csv")


def test_the_labelled_csvs_column_names_apply_where_present(tmp_path: Path):
    names = ColumnNames(rgb="left", ir="right", fire="is_burning", smoke="s", group="clip")
    csv = write_csv(tmp_path / "u.csv", "left,right,clip\n1.jpg,1.png,v7\n")
    rec = read_unlabeled(csv, columns=names)  # no label columns here: their names do not matter
    assert rec.loc[0, "rgb_path"].endswith("1.jpg") and rec.loc[0, "group"] == "v7"
    with pytest.raises(DataError, match=r"'left' \(given for rgb_path\) not found"):
        read_unlabeled(write_csv(tmp_path / "v.csv", "rgb_path,right\n1.jpg,1.png\n"), columns=names)


def test_missing_and_unreadable_images_fail_like_labelled_ones(tmp_path: Path, caplog):
    _images(tmp_path, ["a", "b"])
    csv = write_csv(tmp_path / "u.csv", "rgb_path,ir_path\na.jpg,a.png\nmissing.jpg,b.png\nb.jpg,b.png\n")
    rec = read_unlabeled(csv)
    with pytest.raises(DataError, match=r"u\.csv: 1 missing rgb_path file\(s\) \(line 3: .*missing\.jpg\)"):
        check_unlabeled_files(rec, labelled_ir=IRSpec("8bit", 1), csv_name=str(csv))
    with caplog.at_level(logging.WARNING):
        kept, report = check_unlabeled_files(rec, labelled_ir=IRSpec("8bit", 1), csv_name=str(csv),
                                             skip_missing=True)
    assert kept["row"].tolist() == [2, 4] and report.ir == IRSpec("8bit", 1)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"u\.csv: 1 unreadable ir_path file\(s\) \(line 2: "):
        check_unlabeled_files(rec.drop(index=1), labelled_ir=IRSpec("8bit", 1), csv_name=str(csv))


def test_ir_must_match_the_labelled_data(tmp_path: Path):
    _images(tmp_path, ["a"], ir_mode="I;16")
    csv = write_csv(tmp_path / "u.csv", "rgb_path,ir_path\na.jpg,a.png\n")
    rec = read_unlabeled(csv)
    with pytest.raises(DataError, match=r"u\.csv: IR files are 16bit but the labelled pairs' are 8bit"):
        check_unlabeled_files(rec, labelled_ir=IRSpec("8bit", 1), csv_name="u.csv")
    rgb_only = read_unlabeled(write_csv(tmp_path / "v.csv", "rgb_path\na.jpg\n"), require_ir=False)
    with pytest.raises(DataError, match=r"v\.csv: the unlabelled pairs have no IR files"):
        check_unlabeled_files(rgb_only, labelled_ir=IRSpec("8bit", 1), csv_name="v.csv")
    kept, report = check_unlabeled_files(rec, labelled_ir=IRSpec(kind=None, channels=0), csv_name="u.csv")
    assert kept["ir_path"].isna().all() and report.ir.kind is None  # RGB-only data: IR never read


def test_pairs_of_labelled_files_or_held_out_groups_are_left_out(tmp_path: Path, caplog):
    labelled = read_records(write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke,video\n"
                                      "a.jpg,a.png,1,0,v1\nb.jpg,b.png,0,1,v2\nc.jpg,c.png,0,0,v3\n"))
    unlabeled = read_unlabeled(write_csv(tmp_path / "u.csv", "rgb_path,ir_path,video\n"
                                         "x.jpg,x.png,v1\nb.jpg,b2.png,v9\ny.jpg,y.png,v2\n"
                                         "z.jpg,z.png,v3\nw.jpg,w.png,v4\n"))
    with caplog.at_level(logging.WARNING):
        kept = drop_eval_overlap(unlabeled, labelled, ["train", "val", "test"], csv_name="u.csv")
    assert kept["rgb_path"].map(lambda p: Path(p).name).tolist() == ["x.jpg", "w.jpg"]
    assert "1 unlabelled pair(s) are labelled pairs too (same image file), e.g. lines 3" in caplog.text
    assert "2 unlabelled pair(s) share a group with a validation or test pair, e.g. lines 4, 5" in caplog.text
    with pytest.raises(DataError, match=r"u\.csv: every unlabelled pair is a labelled pair"):
        drop_eval_overlap(unlabeled.iloc[[1]], labelled, ["train", "val", "test"], csv_name="u.csv")


def test_the_dataset_carries_nan_labels_and_the_masked_bce_ignores_them(tmp_path: Path):
    _images(tmp_path, ["a", "b", "c"])
    labelled = read_records(write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n"
                                      "a.jpg,a.png,1,0\nb.jpg,b.png,0,1\n"))
    unlabeled = read_unlabeled(write_csv(tmp_path / "u.csv", "rgb_path,ir_path\nc.jpg,c.png\n"))
    records = pd.concat([labelled, unlabeled], ignore_index=True)
    dataset = PairedDataset(records, np.arange(3), FileSource(records, 8, IRSpec("8bit", 1)))
    labels = torch.stack([dataset[i][2] for i in range(3)])
    assert labels[:2].tolist() == [[1.0, 0.0], [0.0, 1.0]] and labels[2].isnan().all()
    logits = torch.zeros(3, 2)
    assert masked_bce(logits, labels).item() == pytest.approx(math.log(2), abs=1e-6)
