"""Data commands: validate prints the summary; bad inputs end in one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli, run_subprocess
from conftest import write_csv


def test_validate_prints_split_counts(synth_small: Path, capsys, tmp_path: Path):
    split_path = tmp_path / "split.csv"
    csv = synth_small / "data.csv"
    code, out, _ = run_cli(["validate", "--csv", csv, "--write_split", split_path], capsys)
    assert code == 0
    assert "96 valid samples" in out and "train" in out and "none" in out
    assert "split: stratified random split, because file names show no video frames" in out
    code, out, _ = run_cli(["validate", "--csv", csv, "--split_file", split_path], capsys)
    assert code == 0 and f"split: a saved split, from {split_path}" in out


def test_top_level_help_lists_subcommands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("synth", "validate", "train", "ablation"):
        assert command in out


@pytest.mark.parametrize("command", ["synth", "validate", "train", "ablation"])
def test_every_subcommand_explains_every_flag(command: str, capsys):
    from firekd.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    undocumented = [a.option_strings for a in sub._actions
                    if a.option_strings and a.dest != "help" and not a.help]
    assert not undocumented
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "--" in out


def test_bad_csv_in_a_real_process_has_no_traceback(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", "rgb_path,ir_path,fire,smoke\na.jpg,a.png,maybe,0\n")
    proc = run_subprocess(["validate", "--csv", csv])
    assert_one_line_error(proc.returncode, proc.stderr, r"line 2: column 'fire' has value 'maybe'")


def test_bad_flag_value_names_the_flag(capsys):
    code, _, err = run_cli(["synth", "--out", "x", "--n", "0"], capsys)
    assert_one_line_error(code, err, r"argument --n: must be a positive integer, got 0")


def test_unwritable_synth_output(tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["synth", "--out", blocker / "sub", "--n", "2"], capsys)
    assert_one_line_error(code, err, "output folder is not writable .*--out")
