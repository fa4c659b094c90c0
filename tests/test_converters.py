"""FLAME 2 and FLAME 3 converters: the real label file and real FLAME 3 folders (../shared, skipped
when absent), generated folders of tiny images named like the real ones, every warning path and
one-line errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from conftest import shared_data
from PIL import Image

from firekd.data.converters import (
    expand_ranges,
    parse_flame2_labels,
    resolve_overlaps,
)
from firekd.data.splits import make_split

FLAME2_LABELS = ("flame2", "Frame Pair Labels.txt")
OVERLAP = 41642  # listed by lines 19 (YN, ends there) and 20 (YY, starts there) of the real file
SUBSET = (41401, 41900)  # 500 frames around the overlap: ranges YN | YY


def tiny_jpeg(path: Path, value: int = 0) -> None:
    Image.new("RGB", (8, 6), (value % 256, 40, 90)).save(path)


def flame2_folder(root: Path, frames, *, without_rgb=(), without_ir=(), extra=()) -> Path:
    """FLAME 2's file names for ``frames`` in one folder (as its zip unpacks), minus some files."""
    folder = root / "254p Frame Pairs"
    folder.mkdir(parents=True)
    for n in [*frames, *extra]:
        if n not in without_rgb:
            tiny_jpeg(folder / f"254p RGB Frame ({n}).jpg", n)
        if n not in without_ir:
            tiny_jpeg(folder / f"254p Thermal Frame ({n}).jpg", n + 1)
    return folder


def convert_flame2(capsys, labels: Path, folder: Path, out: Path, *extra):
    return run_cli(["convert", "flame2", "--labels", labels, "--rgb_dir", folder, "--ir_dir", folder,
                    "--out", out, *extra], capsys)


# --------------------------------------------------------------------------- FLAME 2, real labels


def test_real_label_file_ranges_and_its_overlap():
    path = shared_data(*FLAME2_LABELS)
    ranges = parse_flame2_labels(path.read_text(), str(path))
    assert len(ranges) == 19 and ranges[0].first == 1 and ranges[-1].last == 53451
    listed = expand_ranges(ranges)
    assert len(listed) == 53452  # 53,451 frames, one listed twice
    dup = listed[listed["frame"].duplicated(keep=False)]
    assert dup["frame"].tolist() == [OVERLAP, OVERLAP]
    assert [(r.line, r.fire, r.smoke) for r in ranges if r.first <= OVERLAP <= r.last] == [
        (19, 1, 0), (20, 1, 1)]
    for policy, expected in (("drop", None), ("first", (1, 0)), ("last", (1, 1))):
        frames, warnings = resolve_overlaps(listed, ranges, policy)
        assert frames["frame"].is_unique and len(frames) == 53451 - (policy == "drop")
        assert len(warnings) == 1 and "conflicting labels" in warnings[0] and "19, 20" in warnings[0]
        row = frames[frames["frame"] == OVERLAP][["fire", "smoke"]].to_numpy()
        assert (row.tolist() == []) if expected is None else (tuple(row[0]) == expected)


def test_flame2_subset_with_missing_files(tmp_path: Path, capsys):
    labels = shared_data(*FLAME2_LABELS)
    frames = range(SUBSET[0], SUBSET[1] + 1)
    folder = flame2_folder(tmp_path, frames, without_rgb={41450}, without_ir={41460})
    out = tmp_path / "data.csv"
    code, stdout, err = convert_flame2(capsys, labels, folder, out, "--frames", *SUBSET,
                                       "--block_size", "50")
    assert code == 0, err
    assert f"frame {OVERLAP}, on lines 19, 20); dropped" in err
    assert ("2 labelled frame(s) lack a file (1 without RGB, 1 without thermal; "
            "e.g. frame 41450, 41460)") in err
    table = pd.read_csv(out)
    assert len(table) == 500 - 3 and OVERLAP not in set(table["frame"])
    assert table["rgb_path"].iloc[0] == f"254p Frame Pairs/254p RGB Frame ({SUBSET[0]}).jpg"
    assert all((tmp_path / p).is_file() for p in [*table["rgb_path"], *table["ir_path"]])
    before, after = table[table["frame"] < OVERLAP], table[table["frame"] > OVERLAP]
    assert (before[["fire", "smoke"]] == [1, 0]).all().all()
    assert (after[["fire", "smoke"]] == [1, 1]).all().all()
    assert "fire=1 smoke=0: 239" in stdout and "fire=1 smoke=1: 258" in stdout
    _check_groups(table, block_size=50)


def _check_groups(table: pd.DataFrame, block_size: int) -> None:
    """Blocks: consecutive frames, one label range each, at most block_size frames, and the
    group-aware split keeps every block whole."""
    for _, group in table.groupby("group"):
        span = group["frame"].max() - group["frame"].min()
        assert span < block_size and len(group[["fire", "smoke"]].drop_duplicates()) == 1
    split = make_split(table.assign(row=range(len(table))), seed=0)
    assert (table.assign(split=split).groupby("group")["split"].nunique() == 1).all()
    assert set(split) == {"train", "val", "test"}


def test_flame2_full_label_file_partial_download(tmp_path: Path, capsys):
    """All 53,451 labels against 100 frames on disk and one frame with no label."""
    labels = shared_data(*FLAME2_LABELS)
    folder = flame2_folder(tmp_path, range(13651, 13751), extra=[60001])  # NN | YY boundary
    out = tmp_path / "data.csv"
    code, stdout, err = convert_flame2(capsys, labels, folder, out)
    assert code == 0, err
    assert "53350 labelled frame(s) lack a file" in err and "dropped" in err
    assert "1 frame(s) have image files but no label (e.g. frame 60001)" in err
    table = pd.read_csv(out)
    assert len(table) == 100 and "fire=0 smoke=0: 50" in stdout and "fire=1 smoke=1: 50" in stdout
    assert table.groupby("group")[["fire", "smoke"]].nunique().max().max() == 1  # cut at 13700

    code, _, err = convert_flame2(capsys, labels, folder, out, "--keep_missing", "--on_conflict", "last")
    assert code == 0 and "kept (--keep_missing)" in err and "last listing's labels are kept" in err
    table = pd.read_csv(out)
    assert len(table) == 53451 and table["frame"].is_unique
    assert table.loc[table["frame"] == OVERLAP, ["fire", "smoke"]].to_numpy().tolist() == [[1, 1]]
    assert table["rgb_path"].iloc[-1] == "254p Frame Pairs/254p RGB Frame (53451).jpg"


# --------------------------------------------------------------------------- FLAME 2, made-up labels


def write_labels(path: Path, *lines: str) -> Path:
    header = ["FirstFrameNumber - LastFrameNumber Fire(Y/N)Smoke(Y/N)", "Fire (Y/N) ...", ""]
    path.write_text("\n".join([*header, *lines]) + "\n")
    return path


def test_flame2_repeated_frames_same_labels_gaps_and_paths_outside(tmp_path: Path, capsys):
    labels = write_labels(tmp_path / "labels.txt", "1\t10\tNN", "8\t12\tNN", "20 30 yn")
    folder = flame2_folder(tmp_path / "images", range(1, 31))
    out = tmp_path / "csv" / "data.csv"
    code, stdout, err = convert_flame2(capsys, labels, folder, out, "--block_size", "5")
    assert code == 0, err
    assert "3 frame(s) listed more than once with the same labels (e.g. 8, 9, 10); each is kept once" in err
    assert "7 frame number(s) lie in no label range (13-19)" in err
    assert "7 frame(s) have image files but no label (e.g. frame 13, 14, 15, 16, 17, ...)" in err
    table = pd.read_csv(out)
    assert table["frame"].tolist() == [*range(1, 13), *range(20, 31)]
    assert Path(table["rgb_path"].iloc[0]).is_absolute()  # images are not under the CSV's folder
    # 8-10 keep their first listing (block 6-10); 11-12 are counted in their own range 8-12
    assert table["group"].tolist()[:12] == ["1-5"] * 5 + ["6-10"] * 5 + ["8-12"] * 2
    assert "fire=0 smoke=0: 12" in stdout and "fire=1 smoke=0: 11" in stdout


@pytest.mark.parametrize(("policy", "expected"), [("drop", None), ("first", (1, 0)), ("last", (1, 1))])
def test_flame2_conflicting_labels_on_generated_files(tmp_path: Path, capsys, policy, expected):
    """What the real label file does at frame 41642 (two ranges, two label sets), on made-up files:
    frames 9-10 are listed YN on line 4 and YY on line 5; frame 14 twice with the same labels."""
    labels = write_labels(tmp_path / "labels.txt", "1\t10\tYN", "9 14 yy", "14\t16\tYY")
    folder = flame2_folder(tmp_path / "images", range(1, 17))
    out = tmp_path / "data.csv"
    code, _, err = convert_flame2(capsys, labels, folder, out, "--on_conflict", policy)
    assert code == 0, err
    assert "2 frame(s) listed with conflicting labels (e.g. frame 9, 10, on lines 4, 5)" in err
    assert "1 frame(s) listed more than once with the same labels (e.g. 14)" in err
    table = pd.read_csv(out)
    assert table["frame"].is_unique
    assert table["frame"].tolist() == ([*range(1, 9), *range(11, 17)] if expected is None else list(range(1, 17)))
    for frame in (9, 10):
        row = table.loc[table["frame"] == frame, ["fire", "smoke"]].to_numpy().tolist()
        assert row == ([] if expected is None else [list(expected)])
    assert (table.loc[table["frame"] < 9, ["fire", "smoke"]] == [1, 0]).all().all()
    assert (table.loc[table["frame"] > 10, ["fire", "smoke"]] == [1, 1]).all().all()


@pytest.mark.parametrize(("lines", "pattern"), [
    (["1\t10\tNN", "11\t20\tNX"], r"labels.txt: line 5: expected 'FIRST<TAB>LAST<TAB>XY'.*got '11\t20\tNX'"),
    (["1\t10\tNN", "oops"], r"line 5: expected .* got 'oops'"),
    (["10\t1\tYY"], r"line 4: first frame 10 is after last frame 1"),
    ([], r"no label ranges found"),
])
def test_flame2_bad_label_file(tmp_path: Path, capsys, lines, pattern):
    labels = write_labels(tmp_path / "labels.txt", *lines)
    code, _, err = convert_flame2(capsys, labels, tmp_path, tmp_path / "d.csv")
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "d.csv").exists()


def test_flame2_bad_paths_and_flags(tmp_path: Path, capsys):
    labels = write_labels(tmp_path / "labels.txt", "1\t10\tNN")
    out = tmp_path / "d.csv"
    code, _, err = convert_flame2(capsys, tmp_path / "nope.txt", tmp_path, out)
    assert_one_line_error(code, err, r"--labels .*nope.txt: label file not found")
    code, _, err = run_cli(["convert", "flame2", "--labels", labels, "--rgb_dir", tmp_path / "no_dir",
                            "--ir_dir", tmp_path, "--out", out], capsys)
    assert_one_line_error(code, err, r"--rgb_dir .*no_dir: folder not found")
    code, _, err = run_cli(["convert", "flame2", "--labels", labels, "--rgb_dir", tmp_path,
                            "--ir_dir", labels, "--out", out], capsys)
    assert_one_line_error(code, err, r"--ir_dir .*labels.txt: is a file, not a folder")
    code, _, err = convert_flame2(capsys, labels, tmp_path, out)
    assert_one_line_error(code, err, r"none of the 10 labelled frames has both files: expected e\.g\. "
                                     r"'254p RGB Frame \(1\)\.jpg'")
    code, _, err = convert_flame2(capsys, labels, tmp_path, out, "--frames", "9", "3")
    assert_one_line_error(code, err, r"--frames: FIRST 9 is after LAST 3")
    code, _, err = convert_flame2(capsys, labels, tmp_path, out, "--frames", "50", "60")
    assert_one_line_error(code, err, r"--frames 50 60: no labelled frame in this range \(labels cover 1-10\)")
    assert not out.exists()


# --------------------------------------------------------------------------- FLAME 3


def flame3_site(root: Path, name: str, rgb=(), thermal=(), tiff=(), folders=("RGB", "Thermal", "TIFF")):
    for folder, stems, ext in (("RGB", rgb, ".JPG"), ("Thermal", thermal, ".JPG"), ("TIFF", tiff, ".TIFF")):
        if folder not in folders:
            continue
        (root / name / folder).mkdir(parents=True)
        for stem in stems:
            path = root / name / folder / f"{stem}{ext}"
            if ext == ".TIFF":
                import tifffile

                tifffile.imwrite(path, np.full((6, 8), 25.0, dtype=np.float32))
            else:
                tiny_jpeg(path)


def convert_flame3(capsys, root: Path, out: Path, *extra):
    return run_cli(["convert", "flame3", "--root", root, "--out", out, *extra], capsys)


def test_flame3_sites_unpaired_files_and_groups(tmp_path: Path, capsys):
    root = tmp_path / "flame3"
    stems = [f"{k:05d}" for k in range(1, 8)]
    flame3_site(root, "SiteA", rgb=stems, thermal=stems, tiff=stems[:5])
    flame3_site(root, "SiteB", rgb=["00001", "00002", "00003"], thermal=["00001", "00002", "00009"])
    flame3_site(root, "SiteC", rgb=["00001"], folders=("RGB",))
    (root / "notes").mkdir()  # not a site: no RGB/ inside
    out = root / "data.csv"
    code, stdout, err = convert_flame3(capsys, root, out, "--fire", "1", "--smoke", "0", "--block_size", "3")
    assert code == 0, err
    assert "site SiteB: 1 RGB file(s) without a partner (e.g. 00003); skipped" in err
    assert "site SiteB: 1 thermal IR file(s) without a partner (e.g. 00009); skipped" in err
    assert "site SiteC: no Thermal/ folder beside RGB/ (needed for --ir thermal)" in err
    table = pd.read_csv(out, dtype=str)
    assert len(table) == 9 and "fire=1 smoke=0: 9" in stdout and "in 4 groups" in stdout
    assert table["rgb_path"].iloc[0] == "SiteA/RGB/00001.JPG"
    assert table["ir_path"].iloc[0] == "SiteA/Thermal/00001.JPG"
    assert table["group"].tolist() == ["SiteA/0"] * 3 + ["SiteA/1"] * 3 + ["SiteA/2", "SiteB/0", "SiteB/0"]

    code, _, err = convert_flame3(capsys, root, out, "--ir", "radiometric", "--fire", "1", "--smoke", "1")
    assert code == 0, err
    assert "site SiteA: 2 RGB file(s) without a partner (e.g. 00006, 00007)" in err
    table = pd.read_csv(out, dtype=str)
    assert table["ir_path"].tolist() == [f"SiteA/TIFF/{s}.TIFF" for s in stems[:5]]


def test_flame3_labels_csv(tmp_path: Path, capsys):
    root = tmp_path / "flame3"
    flame3_site(root, "A", rgb=["00001", "00002"], thermal=["00001", "00002"])
    flame3_site(root, "B", rgb=["00001", "00003"], thermal=["00001", "00003"])
    labels = tmp_path / "labels.csv"
    labels.write_text("site,stem,fire,smoke\nA,00001.JPG,1,0\nA,00002,0,0\nB,00001,yes,yes\n")
    out = tmp_path / "data.csv"
    code, stdout, err = convert_flame3(capsys, root, out, "--labels", labels)
    assert code == 0, err
    assert "1 pair(s) have no label row" in err and "B/00003" in err
    table = pd.read_csv(out, dtype=str)
    assert table[["site", "stem", "fire", "smoke"]].values.tolist() == [
        ["A", "00001", "1", "0"], ["A", "00002", "0", "0"], ["B", "00001", "1", "1"]]
    assert table["rgb_path"].iloc[0] == "flame3/A/RGB/00001.JPG"

    labels.write_text("stem,fire,smoke\n00001,1,0\n")
    code, _, err = convert_flame3(capsys, root, out, "--labels", labels)
    assert_one_line_error(code, err, r"labels.csv: stems repeat across sites \(e\.g\. 00001\); add a site")


@pytest.mark.parametrize(("labels_text", "args", "pattern"), [
    (None, [], r"no per-frame labels here: give --labels CSV"),
    (None, ["--fire", "1"], r"no per-frame labels here"),
    ("stem,fire\n1,1\n", [], r"labels.csv: missing column\(s\) smoke"),
    ("stem,fire,smoke\n00001,1,2\n", [], r"labels.csv: line 2: column 'smoke' has value '2'"),
    ("stem,fire,smoke\n00001,1,1\n00001,0,0\n", [], r"labels.csv: 00001 is labelled more than once"),
    ("stem,fire,smoke\n99999,1,1\n", [], r"no pair found matches a label row"),
])
def test_flame3_bad_labels(tmp_path: Path, capsys, labels_text, args, pattern):
    flame3_site(tmp_path / "root", "A", rgb=["00001"], thermal=["00001"])
    if labels_text is not None:
        (tmp_path / "labels.csv").write_text(labels_text)
        args = [*args, "--labels", tmp_path / "labels.csv"]
    code, _, err = convert_flame3(capsys, tmp_path / "root", tmp_path / "d.csv", *args)
    assert_one_line_error(code, err, pattern)


def test_flame3_bad_roots(tmp_path: Path, capsys):
    out = tmp_path / "d.csv"
    code, _, err = convert_flame3(capsys, tmp_path / "missing", out, "--fire", "0", "--smoke", "0")
    assert_one_line_error(code, err, r"--root .*missing: folder not found")
    code, _, err = convert_flame3(capsys, tmp_path, out, "--fire", "0", "--smoke", "0")
    assert_one_line_error(code, err, r"no FLAME 3 site found \(expected .*/RGB/ or .*/<site>/RGB/")
    flame3_site(tmp_path, "A", rgb=["00001"], thermal=["00002"])
    code, _, err = convert_flame3(capsys, tmp_path / "A", out, "--fire", "0", "--smoke", "0")
    assert_one_line_error(code, err, r"no RGB/thermal pair with the same file stem")
    assert not out.exists()


@pytest.mark.parametrize(("ir", "published"),
                         [("thermal", "data.csv"), ("radiometric", "data_radiometric.csv")])
def test_flame3_real_folders_match_the_published_pairs(tmp_path: Path, capsys, ir: str, published: str):
    root = shared_data("flame3-pairs")
    out = tmp_path / "data.csv"
    code, stdout, err = convert_flame3(capsys, root, out, "--ir", ir, "--fire", "1", "--smoke", "1")
    assert code == 0 and err == "", err
    ours = pd.read_csv(out)
    theirs = pd.read_csv(root / published)
    as_abs = lambda paths: sorted(str((root / p).resolve()) for p in paths)  # noqa: E731
    assert sorted(ours["rgb_path"]) == as_abs(theirs["rgb_path"])
    assert sorted(zip(ours["rgb_path"], ours["ir_path"], strict=True)) == sorted(
        zip(as_abs(theirs["rgb_path"]), as_abs(theirs["ir_path"]), strict=True))
    assert "10 RGB/" in stdout and set(ours["site"]) == {"Sycan", "Wilamette"}


def test_convert_help_explains_every_flag(capsys):
    from firekd.cli import build_parser

    convert = next(a for a in build_parser()._actions if a.dest == "command").choices["convert"]
    datasets = next(a for a in convert._actions if a.dest == "dataset").choices
    for name in ("flame2", "flame3"):
        undocumented = [a.option_strings for a in datasets[name]._actions
                        if a.option_strings and a.dest != "help" and not a.help]
        assert not undocumented
        code, out, _ = run_cli(["convert", name, "--help"], capsys)
        assert code == 0 and "--out" in out
