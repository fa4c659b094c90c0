"""A full disk or quota, said plainly: any write that fails for lack of space (checkpoint, resume
state, decoded cache, figure, JSON/CSV) ends in one line naming the path, the bytes needed where
known and the bytes free; the previous file stays intact, no temporary file is left, and a rerun
after freeing space resumes. Simulated with ENOSPC/torch's own error, and for real on a 6 MB tmpfs
where the sandbox allows mounting one."""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

import firekd.diskspace
from firekd.checkpoints import load_payload
from firekd.diskspace import OutOfSpaceError, human_bytes
from firekd.io import read_json, save_figure, save_payload, write_csv, write_json

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 3968"
TRAIN = ["train", "--teacher", "resnet18", "--variant", "kl_bce", "--seeds", "1", "--no_pretrained",
         "--img_size", "32", "--num_workers", "0", "--no_compress", "--max_embed_points", "0", "--no_figures",
         "--batch_size", "32", "--epochs_student", "1", "--lr_teacher", "1e-3"]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".building-" in p.name]


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("n,text", [(0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (12_345, "12.3 kB"),
                                    (4_194_304, "4.19 MB"), (45_300_000, "45.3 MB"), (393_216, "393 kB"),
                                    (16e9, "16.0 GB"), (999_999, "1.00 MB"), (2.5e15, "2.50 PB")])
def test_human_bytes_never_rounds_a_small_size_to_zero(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("code,what", [(errno.ENOSPC, "no space left on device"),
                                       (errno.EDQUOT, "disk quota exceeded")])
def test_a_json_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, code, what):
    path = tmp_path / "final_evaluation.json"
    write_json(path, {"f1": 0.5})

    def full(*args, **kwargs):
        raise OSError(code, "simulated")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(OutOfSpaceError) as info:
        write_json(path, {"f1": 0.9})
    assert _one_line(info.value).startswith(f"{path}: {what} (")
    assert "free); free some space and run the same command again" in str(info.value)
    assert read_json(path) == {"f1": 0.5} and not _leftovers(tmp_path)


def test_a_csv_or_figure_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    write_csv(tmp_path / "split.csv", pd.DataFrame({"row": [2]}))
    fig = plt.figure()
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x")))
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x")))
    with pytest.raises(OutOfSpaceError, match=r"split\.csv: no space left on device"):
        write_csv(tmp_path / "split.csv", pd.DataFrame({"row": [3]}))
    with pytest.raises(OutOfSpaceError, match=r"curves\.png: no space left on device"):
        save_figure(tmp_path / "curves.png", fig)
    assert (tmp_path / "split.csv").read_text() == "row\n2\n" and not (tmp_path / "curves.png").exists()
    assert not _leftovers(tmp_path)


def _payload(mb: float) -> dict:
    return {"format": "firekd-model/1", "state_dict": {"w": torch.ones(int(mb * 2**20) // 4)}}


def test_torchs_full_disk_error_names_the_checkpoint_its_size_and_the_free_space(tmp_path, monkeypatch):
    path = tmp_path / "student_best.pth"
    save_payload(path, _payload(0.01))
    real_save = torch.save

    def fails_half_way(obj, f, *args, **kwargs):
        real_save({"part": torch.zeros(100)}, f)
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(torch, "save", fails_half_way)
    monkeypatch.setattr(firekd.diskspace, "free_bytes", lambda _: 1_000_000)
    with pytest.raises(OutOfSpaceError) as info:
        save_payload(path, _payload(4))
    assert _one_line(info.value).startswith(f"{path}: no space left on device (needs 4.19 MB, 1.00 MB free)")
    assert torch.equal(load_payload(path)["state_dict"]["w"], _payload(0.01)["state_dict"]["w"])
    assert not _leftovers(tmp_path)
    # the same error with room to spare is not a full disk: one line, without the claim
    monkeypatch.setattr(firekd.diskspace, "free_bytes", lambda _: 10**12)
    with pytest.raises(Exception, match=r"cannot write the checkpoint \(\[enforce fail") as other:
        save_payload(path, _payload(4))
    assert not isinstance(other.value, OutOfSpaceError)


def test_firekd_cache_says_its_size_before_building_and_one_line_when_it_cannot_fit(
        synth_small: Path, tmp_path: Path, capsys, monkeypatch, caplog):
    common = ["cache", "--csv", synth_small / "data.csv", "--img_size", "32", "--cache_dir", tmp_path / "c"]
    with caplog.at_level(logging.INFO):
        code, out, _ = run_cli(common, capsys)
    assert code == 0 and re.search(r"\(96 pairs, 39\d kB\)", out)  # the arrays and meta.json
    assert "cache: decoding 96 pairs at 32 px into " in caplog.text and "(393 kB; " in caplog.text
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 100_000, 100_000))
    code, _, err = run_cli([*common, "--img_size", "64"], capsys)
    assert_one_line_error(code, err, r"c: the decoded cache needs 1\.57 MB, more than 80% of the 100 kB "
                                     r"free; free some space or choose another --cache_dir")


def test_a_cache_build_that_runs_out_of_space_leaves_nothing(synth_small, tmp_path, capsys, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "simulated")

    monkeypatch.setattr("os.posix_fallocate", full, raising=False)
    code, _, err = run_cli(["cache", "--csv", synth_small / "data.csv", "--img_size", "32",
                            "--cache_dir", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, r"no space left on device \(needs 393 kB, .* free\); free some space "
                                     r"or choose another --cache_dir")
    assert not _leftovers(tmp_path) and not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


@pytest.mark.slow
def test_training_stopped_by_a_full_disk_resumes_after_space_is_freed(synth_small, tmp_path, capsys,
                                                                       monkeypatch, caplog):
    """The second epoch's resume state hits a full disk: one line, epoch 1's state intact; the same
    command run again resumes after epoch 1."""
    command = [*TRAIN, "--csv", synth_small / "data.csv", "--output", tmp_path / "out", "--epochs_teacher", "2"]
    real_save, saves = torch.save, []

    def full_on_second_state(obj, f, *args, **kwargs):
        if Path(f).name.startswith(".teacher_state.pt."):
            saves.append(f)
            if len(saves) == 2:
                real_save({"part": torch.zeros(10)}, f)
                raise RuntimeError(TORCH_FULL)
        return real_save(obj, f, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full_on_second_state)
        patch.setattr(firekd.diskspace, "free_bytes", lambda _: 5_000)
        code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, r"teacher_state\.pt: no space left on device \(needs [\d.]+ MB, 5\.00 kB "
                                     r"free\); free some space and run the same command again")
    state = next((tmp_path / "out" / "teachers").rglob("teacher_state.pt"))
    assert load_payload(state)["state"]["epoch"] == 1
    assert not _leftovers(tmp_path)
    with caplog.at_level(logging.INFO):
        code, _, err = run_cli(command, capsys)
    assert code == 0, err
    assert "resuming after epoch 1" in caplog.text
    assert (tmp_path / "out" / "metrics" / "resnet18_kl_bce" / "seed_1" / "final_evaluation.json").exists()


# --- a real small filesystem ---------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path: Path):
    """A 6 MB tmpfs at tmp_path/fs (skipped where mounting is not permitted); unmounted after."""
    folder = tmp_path / "fs"
    folder.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 6 MB tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_real_full_filesystem_checkpoint_json_and_csv(small_fs: Path):
    path = small_fs / "teacher_best.pth"
    save_payload(path, _payload(4))
    with pytest.raises(OutOfSpaceError) as info:
        save_payload(path, _payload(4))  # torch's own "unexpected pos" error, for real
    message = _one_line(info.value)
    assert message.startswith(f"{path}: no space left on device (needs 4.19 MB, ")
    free = float(message.split(", ")[1].split(" MB free")[0])
    assert 1.0 < free < 2.1  # 6 MB minus the first checkpoint, the failed one's blocks given back
    assert torch.equal(load_payload(path)["state_dict"]["w"], _payload(4)["state_dict"]["w"])
    big = pd.DataFrame({"x": np.arange(400_000)})
    with pytest.raises(OutOfSpaceError, match=r"big\.csv: no space left on device \(\d+(\.\d+)? [kM]B free\)"):
        write_csv(small_fs / "big.csv", big)
    with pytest.raises(OutOfSpaceError, match=r"big\.json: no space left on device"):
        write_json(small_fs / "big.json", {"x": list(range(400_000))})
    assert sorted(p.name for p in small_fs.iterdir()) == ["teacher_best.pth"]


def test_real_full_filesystem_cache(synth_small: Path, small_fs: Path, capsys, monkeypatch):
    common = ["cache", "--csv", synth_small / "data.csv", "--cache_dir", small_fs]
    code, _, err = run_cli([*common, "--img_size", "224"], capsys)  # 19 MB: refused before building
    assert_one_line_error(code, err, r"the decoded cache needs 19\.3 MB, more than 80% of the 6\.\d+ MB free")
    monkeypatch.setattr("firekd.recipes.data.FREE_SHARE", 100.0)  # the check before building fooled
    code, _, err = run_cli([*common, "--img_size", "160"], capsys)  # 9.8 MB: the disk fills while building
    assert_one_line_error(code, err, r"no space left on device \(needs 9\.83 MB, 6\.\d+ MB free\)")
    assert [p.name for p in small_fs.iterdir() if p.is_dir()] == []


@pytest.mark.slow
def test_real_full_filesystem_training_is_one_line_and_runs_after_space_is_freed(
        synth_small: Path, small_fs: Path, capsys):
    command = [*TRAIN, "--csv", synth_small / "data.csv", "--output", small_fs / "out", "--epochs_teacher", "1"]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, r"teacher_best\.pth: no space left on device \(needs 45\.\d MB, "
                                     r"[\d.]+ MB free\); free some space and run the same command again")
    assert not _leftovers(small_fs)
    subprocess.run(["mount", "-o", "remount,size=500m", str(small_fs)], check=True)  # space freed
    code, _, err = run_cli(command, capsys)
    assert code == 0, err
    assert (small_fs / "out" / "metrics" / "resnet18_kl_bce" / "seed_1" / "final_evaluation.json").exists()
