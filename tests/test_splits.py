"""Splits: disjoint and complete, stratified, group- and block-aware, reproducible, reusable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from firekd.data.splits import (
    SPLITS,
    assign_groups,
    check_split,
    label_combination,
    load_split,
    make_split,
    save_split,
)
from firekd.errors import DataError


def _records(n: int, seed: int = 0, groups: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rec = pd.DataFrame({"row": np.arange(n) + 2, "rgb_path": [f"/d/{i}.jpg" for i in range(n)],
                        "fire": rng.integers(0, 2, n), "smoke": (rng.random(n) < 0.3).astype(int)})
    if groups:
        rec["group"] = [f"video{i * groups // n}" for i in range(n)]
    return rec


def test_every_row_in_exactly_one_split_with_ratios():
    split = make_split(_records(1000), ratios=(0.7, 0.15, 0.15), seed=1)
    counts = split.value_counts()
    assert set(split) == set(SPLITS) and counts.sum() == 1000
    assert abs(counts["train"] - 700) <= 4 and abs(counts["val"] - 150) <= 4


def test_label_combination_proportions_are_kept():
    rec = _records(2000, seed=2)
    split = make_split(rec, seed=0)
    combos = pd.Series(label_combination(rec["fire"], rec["smoke"]))
    overall = combos.value_counts(normalize=True).sort_index()
    for name in SPLITS:
        part = combos[split.to_numpy() == name].value_counts(normalize=True).sort_index()
        assert np.allclose(part, overall, atol=0.02), name


def test_reproducible_for_a_split_seed_and_different_for_another():
    rec = _records(300)
    assert make_split(rec, seed=5).equals(make_split(rec, seed=5))
    assert not make_split(rec, seed=5).equals(make_split(rec, seed=6))


def test_groups_never_straddle_splits_and_ratios_roughly_hold():
    rec = _records(1200, groups=60)
    split = make_split(rec, seed=0)
    per_group = pd.Series(split.to_numpy()).groupby(rec["group"]).nunique()
    assert (per_group == 1).all()
    share = split.value_counts(normalize=True)
    assert abs(share["train"] - 0.7) < 0.05 and share["val"] > 0.08 and share["test"] > 0.08


def test_block_split_cuts_contiguous_blocks():
    rec = _records(500)
    split = make_split(rec, method="block", block_size=25, seed=0).to_numpy()
    blocks = split.reshape(20, 25)
    assert all(len(set(b)) == 1 for b in blocks)  # a block is never cut
    assert len(set(blocks[:, 0])) == 3


def test_split_column_is_used_as_given():
    rec = _records(6).assign(split=["train", "train", "val", "test", "train", "val"])
    assert make_split(rec).tolist() == rec["split"].tolist()


def test_assign_groups_respects_targets_per_combination():
    combos = np.repeat([0, 1, 2, 3], 100)
    split = assign_groups(combos, np.arange(400), (0.5, 0.25, 0.25), seed=0)
    for c in range(4):
        counts = pd.Series(split[combos == c]).value_counts()
        assert (counts["train"], counts["val"], counts["test"]) == (50, 25, 25)


def test_too_small_for_the_ratios_names_the_empty_split():
    split = make_split(_records(3), ratios=(0.9, 0.05, 0.05), seed=0)
    with pytest.raises(DataError, match=r"the (val|test) split is empty \(3 rows"):
        check_split(split, (0.9, 0.05, 0.05))


def test_saved_split_round_trips(tmp_path: Path):
    rec = _records(100)
    split = make_split(rec, seed=3)
    save_split(rec, split).to_csv(tmp_path / "split.csv", index=False)
    assert load_split(tmp_path / "split.csv", rec).tolist() == split.tolist()


def test_saved_split_from_another_csv_is_refused(tmp_path: Path):
    rec = _records(10)
    save_split(rec, make_split(rec, seed=0)).to_csv(tmp_path / "split.csv", index=False)
    other = rec.assign(rgb_path=[f"/d/other{i}.jpg" for i in range(10)])
    with pytest.raises(DataError, match="names 0.jpg in the split file but other0.jpg in the CSV"):
        load_split(tmp_path / "split.csv", other)
    with pytest.raises(DataError, match=r"no split for CSV line 12 \(2 row\(s\) missing\)"):
        load_split(tmp_path / "split.csv", _records(12))
    with pytest.raises(DataError, match="split file not found"):
        load_split(tmp_path / "missing.csv", rec)
