"""CSV parsing: aliases, label spellings, optional columns, and every bad input's message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import write_csv

from firekd.data.csv import ColumnNames, read_records
from firekd.errors import DataError


def test_spec_format_relative_paths_resolve_against_csv_folder(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\na/1.jpg,b/1.png,1,0\n")
    rec = read_records(csv)
    assert rec.loc[0, "rgb_path"] == str(tmp_path / "a/1.jpg")
    assert rec.loc[0, "ir_path"] == str(tmp_path / "b/1.png")
    assert (rec.loc[0, "fire"], rec.loc[0, "smoke"], rec.loc[0, "row"]) == (1, 0, 2)


def test_base_path_and_absolute_paths(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\nx.jpg,/abs/y.png,0,0\n")
    rec = read_records(csv, base_path="/data/root")
    assert rec.loc[0, "rgb_path"] == "/data/root/x.jpg"
    assert rec.loc[0, "ir_path"] == "/abs/y.png"


@pytest.mark.parametrize("rgb,ir", [("rgb_frame", "ir_frame"), ("rgb", "ir"), ("RGB_Path", "Thermal"),
                                    ("rgb_image", "thermal_path")])
def test_column_aliases(tmp_path: Path, rgb: str, ir: str):
    csv = write_csv(tmp_path / "d.csv", f"{rgb},{ir},Fire,SMOKE,extra\n1.jpg,1.png,1,1,whatever\n")
    rec = read_records(csv)
    assert rec.loc[0, "rgb_path"].endswith("1.jpg") and rec.loc[0, "ir_path"].endswith("1.png")
    assert "extra" not in rec.columns


def test_explicit_column_names(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "left,right,f,s\n1.jpg,1.png,yes,no\n")
    rec = read_records(csv, columns=ColumnNames(rgb="left", ir="right", fire="f", smoke="s"))
    assert (rec.loc[0, "fire"], rec.loc[0, "smoke"]) == (1, 0)


def test_explicit_column_that_does_not_exist(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n1.jpg,1.png,1,0\n")
    with pytest.raises(DataError, match=r"'vis' \(given for rgb_path\) not found; columns found: rgb_path"):
        read_records(csv, columns=ColumnNames(rgb="vis"))


@pytest.mark.parametrize("text,value", [("1", 1), ("0", 0), ("true", 1), ("FALSE", 0), ("Yes", 1),
                                        ("no", 0), (" 1 ", 1), ("1.0", 1), ("N", 0)])
def test_label_spellings(tmp_path: Path, text: str, value: int):
    csv = write_csv(tmp_path / "d.csv", f"rgb_path,ir_path,fire,smoke\n1.jpg,1.png,{text},0\n")
    assert read_records(csv).loc[0, "fire"] == value


def test_bad_label_names_line_column_and_value(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n1.jpg,1.png,1,0\n2.jpg,2.png,2,0\n")
    with pytest.raises(DataError, match=r"d\.csv: line 3: column 'fire' has value '2', expected 0/1"):
        read_records(csv)


def test_empty_label_is_an_error(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n1.jpg,1.png,1,\n")
    with pytest.raises(DataError, match="line 2: column 'smoke' has value ''"):
        read_records(csv)


def test_missing_columns_are_named_with_the_columns_found(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire\n1.jpg,1.png,1\n")
    with pytest.raises(DataError, match=r"missing required column\(s\) smoke; columns found: rgb_path"):
        read_records(csv)


def test_missing_ir_column_suggests_rgb_teacher(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,fire,smoke\n1.jpg,1,0\n")
    with pytest.raises(DataError, match="--teacher_modalities rgb"):
        read_records(csv)
    assert read_records(csv, require_ir=False).loc[0, "ir_path"] is None


def test_empty_csv_and_header_only(tmp_path: Path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="CSV file is empty"):
        read_records(tmp_path / "e.csv")
    write_csv(tmp_path / "h.csv", "rgb_path,ir_path,fire,smoke")
    with pytest.raises(DataError, match="header but no data rows"):
        read_records(tmp_path / "h.csv")


def test_missing_csv_and_directory(tmp_path: Path):
    with pytest.raises(DataError, match="CSV file not found"):
        read_records(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_records(tmp_path)


def test_not_a_csv(tmp_path: Path):
    (tmp_path / "bin.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary junk \x00" * 20)
    with pytest.raises(DataError, match="bin.csv"):
        read_records(tmp_path / "bin.csv")


def test_empty_path_cell(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n,1.png,1,0\n")
    with pytest.raises(DataError, match="line 2: column 'rgb_path' is empty"):
        read_records(csv)


def test_split_and_group_columns_are_honoured(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke,split,video\n"
                    "1.jpg,1.png,1,0,Train,v1\n2.jpg,2.png,0,0,validation,v2\n3.jpg,3.png,0,1,TEST,v3\n")
    rec = read_records(csv)
    assert rec["split"].tolist() == ["train", "val", "test"]
    assert rec["group"].tolist() == ["v1", "v2", "v3"]


def test_bad_split_value(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke,split\n1.jpg,1.png,1,0,holdout\n")
    with pytest.raises(DataError, match="line 2: column 'split' has value 'holdout'"):
        read_records(csv)


def test_duplicate_rows_warn_with_count(tmp_path: Path, caplog):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\n1.jpg,1.png,1,0\n"
                    "1.jpg,1.png,1,0\n1.jpg,1.png,1,0\n2.jpg,2.png,0,0\n")
    with caplog.at_level(logging.WARNING):
        rec = read_records(csv)
    assert len(rec) == 4
    assert "2 duplicate row(s)" in caplog.text and "lines 3, 4" in caplog.text
