"""Replicates that resample the labels: --resample_split draws each seed's own split (split seed =
training seed) that the seed's teacher, control and students share; --n_labelled/--label_fraction
keep that many train rows labelled and move the rest to the unlabelled pool, never into val/test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli

from firekd.checkpoints import load_payload
from firekd.config import DataConfig
from firekd.data.splits import UNLABELED, keep_labelled, split_digest
from firekd.errors import ConfigError
from firekd.recipes.data import load_data


def _cfg(csv: Path, **kw) -> DataConfig:
    return DataConfig(csv=str(csv), img_size=32, cache=False, **kw)


def test_keep_labelled_moves_only_train_rows_in_a_stratified_seeded_draw():
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * 10, dtype=object)
    combos = np.tile([0, 1, 2, 3], 15)  # 10 train rows of each combination
    out = keep_labelled(split, combos, 8, seed=3)
    assert (out[40:] == split[40:]).all()  # validation and test untouched
    kept = np.nonzero(out == "train")[0]
    assert len(kept) == 8 and (out == UNLABELED).sum() == 32
    assert np.bincount(combos[kept], minlength=4).tolist() == [2, 2, 2, 2]  # stratified
    assert (keep_labelled(split, combos, 8, seed=3) == out).all()  # seeded
    assert not (keep_labelled(split, combos, 8, seed=4) == out).all()
    # fewer rows than combinations: still exactly `keep`
    assert (keep_labelled(split, combos, 3, seed=0) == "train").sum() == 3


def test_keep_labelled_keeps_a_rare_combination():
    split = np.array(["train"] * 21, dtype=object)
    combos = np.array([0] * 20 + [3])
    out = keep_labelled(split, combos, 4, seed=0)
    assert (out == "train").sum() == 4 and out[20] == "train"


def test_label_fraction_moves_train_rows_to_the_unlabelled_pool_never_into_val_or_test(synth_small):
    csv = synth_small / "data.csv"
    full = load_data(_cfg(csv))
    part = load_data(_cfg(csv, label_fraction=0.25))
    a, b = full.records.set_index("row"), part.records.set_index("row")
    for held in ("val", "test"):  # identical validation and test sets
        assert a.index[a["split_assigned"] == held].equals(b.index[b["split_assigned"] == held])
    moved = b.index[b["split_assigned"] == UNLABELED]
    n_train = int((a["split_assigned"] == "train").sum())
    assert len(b.index[b["split_assigned"] == "train"]) == round(0.25 * n_train)
    assert len(moved) == n_train - round(0.25 * n_train) and part.moved_count == len(moved)
    assert (a.loc[moved, "split_assigned"] == "train").all()  # only train rows move
    assert b.loc[moved, ["fire", "smoke"]].isna().all().all()  # nothing trains on their labels
    assert part.unlabeled_count == len(moved) and len(part.labelled) == len(full.labelled) - len(moved)
    assert len(part.dataset("train", with_unlabeled=True)) == n_train
    assert part.fingerprint != full.fingerprint
    table = part.split_table()  # split.csv records the moved rows, reusable with --split_file
    assert (table["split"] == UNLABELED).sum() == len(moved)


def test_n_labelled_larger_than_the_train_split_fails_with_one_line(synth_small):
    from firekd.errors import DataError

    with pytest.raises(DataError, match="--n_labelled 1000: the train split has only"):
        load_data(_cfg(synth_small / "data.csv", n_labelled=1000))
    with pytest.raises(ConfigError, match="not both"):
        _cfg(synth_small / "data.csv", n_labelled=5, label_fraction=0.5)


def test_resample_split_draws_each_seed_its_own_split(synth_small):
    data = load_data(_cfg(synth_small / "data.csv", resample_split=True, n_labelled=10))
    one, two = data.for_seed(1), data.for_seed(2)
    assert data.for_seed(1) is one  # drawn once per seed
    assert not np.array_equal(one.records["split_assigned"], two.records["split_assigned"])
    assert one.fingerprint != two.fingerprint
    assert one.run_lineage(1) == two.run_lineage(1) == data.run_lineage(1)  # one run key for all seeds
    assert data.run_lineage(1).data != data.fingerprint  # marked: never a fixed split's run key
    assert data.lineage(2, 1).data == two.fingerprint and two.lineage(2, 1) == data.lineage(2, 1)
    for seed_data in (one, two):
        assert (seed_data.records["split_assigned"] == "train").sum() == 10
    # the seed's split is the one a plain split with split seed = training seed gives
    plain = load_data(_cfg(synth_small / "data.csv", split_seed=2, n_labelled=10))
    assert np.array_equal(plain.records["split_assigned"], two.records["split_assigned"])
    fixed = load_data(_cfg(synth_small / "data.csv"))
    assert fixed.for_seed(1) is fixed and fixed.for_seed(2) is fixed


def test_resample_split_refuses_a_fixed_split(synth_small, tmp_path):
    with pytest.raises(ConfigError, match="--resample_split"):
        _cfg(synth_small / "data.csv", resample_split=True, split="column")
    table = pd.read_csv(synth_small / "data.csv").assign(split=["train"] * 60 + ["val"] * 18 + ["test"] * 18)
    table.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "rgb").symlink_to(synth_small / "rgb")
    (tmp_path / "ir").symlink_to(synth_small / "ir")
    with pytest.raises(ConfigError, match="--resample_split draws a split per seed"):
        load_data(_cfg(tmp_path / "data.csv", resample_split=True))


def _ablation(csv: Path, out: Path, *extra: str) -> list[str]:
    return ["ablation", "--csv", str(csv), "--output", str(out), "--teachers", "resnet18", "--variants",
            "kl_bce", "bce", "--seeds", "1", "2", "--epochs_teacher", "1", "--epochs_student", "1",
            "--no_pretrained", "--img_size", "32", "--num_workers", "0", "--batch_size", "32",
            "--max_embed_points", "0", "--no_compress", "--latency_runs", "0", "--no_figures", *extra]


@pytest.mark.slow
def test_each_seeds_teacher_control_and_students_share_the_seeds_own_split(synth_small, tmp_path, capsys,
                                                                        caplog):
    out = tmp_path / "out"
    args = _ablation(synth_small / "data.csv", out, "--resample_split", "--n_labelled", "20")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    digests = {}
    for seed in (1, 2):
        split = pd.read_csv(out / f"metrics/resnet18_kl_bce/seed_{seed}/split.csv")
        assert (split["split"] == "train").sum() == 20 and (split["split"] == UNLABELED).any()
        labelled = split[split["split"] != UNLABELED]
        digest = split_digest(labelled["row"], labelled["split"])
        for path in (f"models/resnet18_kl_bce/seed_{seed}/teacher_best.pth",
                     f"models/resnet18_kl_bce/seed_{seed}/student_best.pth",
                     f"models/resnet18_bce/seed_{seed}/student_best.pth"):
            assert load_payload(out / path)["meta"]["data"]["split_digest"] == digest, path
        assert pd.read_csv(out / f"metrics/resnet18_bce/seed_{seed}/split.csv").equals(split)
        digests[seed] = digest
    assert digests[1] != digests[2]
    assert not (out / "metrics/resnet18_kl_bce/split.csv").exists()  # no split is common to the seeds
    config = json.loads((out / "metrics/resnet18_kl_bce/config.json").read_text())
    assert "each seed draws its own" in config["resampled"]
    agg = json.loads((out / "metrics/resnet18_kl_bce/aggregated_results.json").read_text())
    assert agg["seeds"] == [1, 2]  # one run key for the seeds of different splits
    caplog.clear()
    code, _, err = run_cli(args, capsys)  # a rerun finds every seed done: the seed keys are stable
    assert code == 0, err
    assert caplog.text.count("already done, skipping") == 4  # kl_bce and the control, 2 seeds each
    assert "epoch 1/1" not in caplog.text  # nothing trained again, the controls neither


def test_label_fraction_is_a_flag_with_a_checked_value(synth_small, tmp_path, capsys):
    code, _, err = run_cli(["train", "--csv", synth_small / "data.csv", "--label_fraction", "0",
                            "--output", tmp_path], capsys)
    assert_one_line_error(code, err, "--label_fraction")
