"""The bad-input corpus: every case ends in one clear line naming the file/row/flag, a non-zero
exit, no traceback, and no file that existed before is changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli, run_subprocess, snapshot

from firekd.locks import FileLock

TRAIN = ["train", "--teacher", "resnet18", "--variant", "kl_bce", "--seeds", "1", "--epochs_teacher", "1",
         "--epochs_student", "1", "--no_pretrained", "--img_size", "32", "--num_workers", "0", "--no_compress",
         "--max_embed_points", "0"]


@pytest.fixture
def workspace(synth_small: Path, tmp_path: Path) -> Path:
    """A copy of the small synthetic set and an output folder holding an earlier result."""
    shutil.copytree(synth_small, tmp_path / "data")
    earlier = tmp_path / "output" / "metrics" / "earlier_run" / "aggregated_results.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"student": {}}\n')
    return tmp_path


def _csv_text(ws: Path) -> str:
    return (ws / "data" / "data.csv").read_text()


def _write(ws: Path, name: str, text: str) -> Path:
    path = ws / "data" / name
    path.write_text(text)
    return path


def _first_rgb(ws: Path) -> Path:
    return ws / "data" / _csv_text(ws).splitlines()[1].split(",")[0]


def _case(ws: Path, name: str) -> tuple[list[str], str]:
    """Build the case's inputs; returns (extra CLI args, expected message pattern)."""
    csv = ws / "data" / "data.csv"
    lines = _csv_text(ws).splitlines()
    if name == "csv_missing":
        return ["--csv", ws / "data" / "nope.csv"], r"nope\.csv: CSV file not found"
    if name == "not_a_csv":
        (ws / "data" / "bin.csv").write_bytes(b"\x00\xff\xfe\x00binary" * 50)
        return ["--csv", ws / "data" / "bin.csv"], r"bin\.csv"
    if name == "empty_csv":
        return ["--csv", _write(ws, "empty.csv", "")], r"empty\.csv: CSV file is empty"
    if name == "missing_column":
        text = "\n".join(",".join(line.split(",")[:3]) for line in lines)
        return ["--csv", _write(ws, "nosmoke.csv", text)], r"missing required column\(s\) smoke"
    if name == "bad_label":
        bad = lines[:3] + [lines[3].replace(",1,", ",7,").replace(",0,", ",7,", 1)] + lines[4:]
        return ["--csv", _write(ws, "bad.csv", "\n".join(bad))], r"line 4: column '(fire|smoke)' has value '7'"
    if name == "missing_image":
        _first_rgb(ws).unlink()
        return ["--csv", csv], r"1 missing rgb_path file\(s\) \(line 2: .*--skip_missing"
    if name == "corrupt_jpeg":
        data = _first_rgb(ws).read_bytes()
        _first_rgb(ws).write_bytes(data[: len(data) // 2])
        return ["--csv", csv], r"1 unreadable rgb_path file\(s\) \(line 2: .*000000.jpg: (not a readable|.*trunc)"
    if name == "zero_byte_image":
        _first_rgb(ws).write_bytes(b"")
        return ["--csv", csv], r"image file is empty \(0 bytes\)"
    if name == "unknown_teacher":
        return ["--csv", csv, "--teacher", "resnet9000"], r"unknown teacher 'resnet9000'; known teachers: resnet152"
    if name == "unknown_variant":
        return ["--csv", csv, "--variant", "kl_mse"], r"argument --variant: unknown loss variant 'kl_mse'"
    if name == "negative_epochs":
        return ["--csv", csv, "--epochs_teacher", "-3"], r"--epochs_teacher: must be >= 0, got -3"
    if name == "sparsity_out_of_range":
        return ["--csv", csv, "--prune_sparsity", "1.5"], r"--prune_sparsity: must be strictly between 0 and 1"
    if name == "temperature_zero":
        return ["--csv", csv, "--kd_temperature", "0"], r"--kd_temperature: must be > 0, got 0"
    if name == "batch_size_zero":
        return ["--csv", csv, "--batch_size", "0"], r"--batch_size: must be a positive integer, got 0"
    if name == "split_too_small":
        return (["--csv", _write(ws, "tiny.csv", "\n".join(lines[:4])), "--split_ratios", "0.9", "0.05", "0.05"],
                r"the (val|test) split is empty \(3 rows")
    if name == "unwritable_output":
        (ws / "blocker").write_text("a file, not a folder")
        return ["--csv", csv, "--output", ws / "blocker" / "out"], r"output folder is not writable .*--output"
    if name == "bad_ir_range":
        return ["--csv", csv, "--ir_range", "10", "5"], r"--ir_range: LO must be below HI"
    if name == "loss_weights_unknown_term":
        return ["--csv", csv, "--loss_weights", "l2=0.3"], r"--loss_weights: no selected variant has the term 'l2'"
    if name.startswith("unlabeled_"):
        unlabeled, pattern = _unlabeled_case(ws, name)
        return ["--csv", csv, "--unlabeled_csv", unlabeled], pattern
    raise AssertionError(name)


def _unlabeled_case(ws: Path, name: str) -> tuple[Path, str]:
    """An --unlabeled_csv case: (the CSV, expected message pattern). Its pairs are copies of the first
    labelled pair's images under other names (a labelled pair itself would only be left out)."""
    rgb, ir = (ws / "data" / cell for cell in _csv_text(ws).splitlines()[1].split(",")[:2])
    shutil.copy(rgb, ws / "data" / "u1.jpg")
    shutil.copy(ir, ws / "data" / "u1.png")
    if name == "unlabeled_missing_csv":
        return ws / "data" / "nope_u.csv", r"nope_u\.csv: CSV file not found"
    if name == "unlabeled_stray_label":
        return (_write(ws, "u.csv", "rgb_path,ir_path,fire,smoke\nu1.jpg,u1.png,,\nu1.jpg,u1.png,1,\n"),
                r"u\.csv: line 3: column 'fire' has value '1' in a CSV of unlabelled pairs")
    if name == "unlabeled_missing_image":
        return (_write(ws, "u.csv", "rgb_path,ir_path\nu1.jpg,u1.png\ngone.jpg,u1.png\n"),
                r"u\.csv: 1 missing rgb_path file\(s\) \(line 3: .*gone\.jpg")
    if name == "unlabeled_no_ir_column":
        return (_write(ws, "u.csv", "rgb_path,other\nu1.jpg,u1.png\n"),
                r"u\.csv: no IR column \(looked for ir_path")
    raise AssertionError(name)


CASES = ["csv_missing", "not_a_csv", "empty_csv", "missing_column", "bad_label", "missing_image",
         "corrupt_jpeg", "zero_byte_image", "unknown_teacher", "unknown_variant", "negative_epochs",
         "sparsity_out_of_range", "temperature_zero", "batch_size_zero", "split_too_small",
         "unwritable_output", "bad_ir_range", "loss_weights_unknown_term", "unlabeled_missing_csv",
         "unlabeled_stray_label", "unlabeled_missing_image", "unlabeled_no_ir_column"]
# one case per way an error reaches the user (argparse, the labelled CSV, the output folder, the
# unlabelled pairs' images), run as real processes (each costs an interpreter start): the line must
# also be the last one the process writes, after any logging and at-exit output
IN_A_PROCESS = ["unknown_variant", "bad_label", "unwritable_output", "unlabeled_missing_image"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name: str, workspace: Path, capsys):
    extra, pattern = _case(workspace, name)
    output = ["--output", workspace / "output"] if "--output" not in extra else []
    before = snapshot(workspace)
    code, _, err = run_cli([*TRAIN, *output, *extra], capsys)
    assert_one_line_error(code, err, pattern)
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    assert not any("metrics/resnet18" in k for k in after)  # and no run started


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_real_process(name: str, workspace: Path):
    extra, pattern = _case(workspace, name)
    output = ["--output", workspace / "output"] if "--output" not in extra else []
    before = snapshot(workspace)
    proc = run_subprocess([*TRAIN, *output, *extra])
    assert_one_line_error(proc.returncode, proc.stderr, pattern)
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before


def test_a_second_writer_of_the_same_run_is_refused_naming_the_holder(workspace: Path, capsys):
    lock_path = workspace / "output" / "metrics" / "resnet18_kl_bce" / ".lock"
    holder = FileLock(lock_path)
    assert holder.acquire(blocking=False)
    try:
        before = snapshot(workspace)
        code, _, err = run_cli([*TRAIN, "--output", workspace / "output", "--csv",
                                workspace / "data" / "data.csv"], capsys)
        assert_one_line_error(code, err, r"run folder .*resnet18_kl_bce is in use by pid \d+ on ")
        assert snapshot(workspace) == before
    finally:
        holder.release()


def test_a_lock_left_by_a_dead_process_is_not_stale(tmp_path: Path):
    path = tmp_path / ".lock"
    path.write_text("pid 999999 on some-host\n")  # a holder that died: the kernel lock is gone
    lock = FileLock(path)
    assert lock.acquire(blocking=False)
    lock.release()


def test_a_nan_loss_stops_naming_stage_and_epoch(workspace: Path, capsys):
    code, _, err = run_cli([*TRAIN, "--output", workspace / "output", "--csv", workspace / "data" / "data.csv",
                            "--lr_teacher", "1e12", "--batch_size", "16"], capsys)
    assert_one_line_error(code, err, r"teacher resnet18 \(seed 1\) training, epoch 1, step \d+: "
                                     r"the loss became (nan|inf)")


class PickledThing:
    """Stands for arbitrary code a malicious checkpoint could run when unpickled."""


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path: Path):
    from firekd.checkpoints import load_payload
    from firekd.errors import ModelError

    # any class outside the weights_only allowlist makes loading refuse the file
    torch.save({"format": "firekd-model/1", "evil": PickledThing()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="refused to load, the checkpoint holds pickled objects"):
        load_payload(tmp_path / "evil.pth")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path):
    from firekd.checkpoints import load_model, save_model
    from firekd.errors import ModelError
    from firekd.models import create_student

    student = create_student("firekd_student")
    save_model(tmp_path / "s.pth", student, kind="student")
    with pytest.raises(ModelError, match="holds a student model, expected a teacher"):
        load_model(tmp_path / "s.pth", kind="teacher")
    other = create_student("firekd_student", widths=[16, 32, 64, 128])
    save_model(tmp_path / "mixed.pth", student, kind="student", state_dict=other.state_dict())
    with pytest.raises(ModelError, match=r"mixed\.pth: weights do not match the architecture"):
        load_model(tmp_path / "mixed.pth")
