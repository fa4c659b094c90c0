"""Splits: disjoint and complete, stratified, group- and block-aware, reproducible, reusable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from firekd.data.splits import (
    SPLITS,
    SplitDecision,
    assign_groups,
    check_split,
    detect_frames,
    label_combination,
    load_split,
    make_split,
    save_split,
    split_digest,
    split_records,
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


# --- leak-safe defaults: video frames in blocks, identical images together ----------------------

def _frames(n: int, name=lambda i: f"/flame2/RGB/254p RGB Frame ({i}).jpg", seed: int = 0) -> pd.DataFrame:
    """A FLAME 2-like frame CSV without group column, listed in `ls` order (1, 10, 100, 1000, 1001, ...)
    so that CSV neighbours are not frame neighbours; labels change in long runs, as in a video."""
    frames = np.arange(1, n + 1)
    rng = np.random.default_rng(seed)
    fire = (np.sin(frames / 97.0) + rng.normal(0, 0.05, n) > 0).astype(int)
    smoke = (np.cos(frames / 61.0) > 0.3).astype(int)
    rec = pd.DataFrame({"rgb_path": [name(i) for i in frames], "ir_path": None, "fire": fire, "smoke": smoke,
                        "frame": frames})
    rec = rec.sort_values("rgb_path").reset_index(drop=True)
    return rec.assign(row=np.arange(n) + 2)


def test_flame_like_frames_are_split_in_blocks_that_never_straddle_splits():
    rec = _frames(3000)
    split, decision = split_records(rec, seed=0, block_size=50)
    assert decision.method == "frame_blocks" and decision.block_size == 50
    by_frame = pd.Series(split.to_numpy(), index=rec["frame"]).sort_index()
    blocks = by_frame.to_numpy().reshape(-1, 50)  # frames 1-50, 51-100, ...
    assert all(len(set(b)) == 1 for b in blocks)
    assert set(blocks[:, 0]) == set(SPLITS)
    share = split.value_counts(normalize=True)
    assert abs(share["train"] - 0.7) < 0.05 and share["val"] > 0.1 and share["test"] > 0.1


@pytest.mark.parametrize("name", [lambda i: f"/v/frame_{i:06d}.png", lambda i: f"/v/video3_{i:04d}.jpg",
                                  lambda i: f"/data/frames/{i:05d}.jpg", lambda i: f"/d/clip_7/img{i}.png"])
def test_frame_names_are_recognised(name):
    assert detect_frames([name(i) for i in range(1, 200)]) is not None


@pytest.mark.parametrize("paths", [
    [f"/synth/rgb/{i:06d}.jpg" for i in range(500)],  # firekd synth
    [f"/fs/images/lzf_train_fire-image_{i}.jpg" for i in range(300)]
    + [f"/fs/images/cair_normal_{i}.jpg" for i in range(200)],  # the real fire-smoke-rgb names
    [f"/d/keyframes_test/photo_{i}.jpg" for i in range(500)],  # "frame" only inside another word
    [f"/d/{name}.jpg" for name in ("beach", "forest", "room") * 100],  # no numbers at all
])
def test_an_image_collection_is_not_taken_for_video(paths):
    assert detect_frames(paths) is None


def test_a_random_looking_set_still_gets_the_stratified_random_split():
    rec = _records(600).assign(rgb_path=[f"/synth/rgb/{i:06d}.jpg" for i in range(600)])
    split, decision = split_records(rec, seed=0)
    assert decision.method == "random" and "no video frames" in decision.reason
    old = assign_groups(label_combination(rec["fire"], rec["smoke"]), np.arange(600), (0.7, 0.15, 0.15), 0)
    assert split.tolist() == old.tolist()  # exactly the split firekd made before frames were detected


def test_numbered_files_in_per_video_folders_are_frames():
    paths = [f"/d/{v}/{i:05d}.jpg" for v in ("v01", "v02", "v03") for i in range(400)]
    rec = _records(1200).assign(rgb_path=paths)
    split, decision = split_records(rec, seed=0)
    assert decision.method == "frame_blocks" and "3 per-video folders" in decision.reason
    blocks = split.to_numpy().reshape(-1, 50)  # each folder's frames in order, 400 = 8 x 50
    assert all(len(set(b)) == 1 for b in blocks)


def test_too_few_blocks_fall_back_to_rows_and_say_frames_may_leak():
    split, decision = split_records(_frames(200), seed=0, block_size=50)
    assert decision.method == "random" and decision.leak_risk
    assert "too few blocks of 50" in decision.sentence() and "--block_size" in decision.sentence()
    _, smaller = split_records(_frames(200), seed=0, block_size=10)
    assert smaller.method == "frame_blocks"


def test_stratified_is_the_old_name_of_random_and_groups_still_win():
    rec = _frames(600)
    assert make_split(rec, method="stratified", seed=1).equals(make_split(rec, method="random", seed=1))
    grouped = rec.assign(group=[f"g{i % 7}" for i in range(600)])
    split, decision = split_records(grouped, seed=0)
    assert decision.method == "random" and "group column" in decision.reason
    assert (pd.Series(split.to_numpy()).groupby(grouped["group"]).nunique() == 1).all()


@pytest.mark.parametrize("method", ["auto", "random", "block"])
def test_rows_with_the_same_image_always_share_a_split(method: str):
    rec = _frames(1000)
    same = np.arange(1000)
    pairs = [(0, 999), (5, 500), (17, 430), (250, 800)]  # far apart in CSV and frame order
    for a, b in pairs:
        same[b] = same[a]
    split, decision = split_records(rec.assign(same_image=same), method=method, seed=0, block_size=50)
    assert all(split[a] == split[b] for a, b in pairs)
    assert decision.joined_duplicates == 8 and "8 rows with identical images" in decision.sentence()


def test_the_same_path_twice_shares_a_split_without_file_checks():
    rec = _records(400)
    rec.loc[399, "rgb_path"] = rec.loc[0, "rgb_path"]
    for seed in range(5):
        split = make_split(rec, seed=seed)
        assert split[0] == split[399]


def test_split_decision_round_trips_and_reads_as_one_sentence():
    _, decision = split_records(_frames(3000), seed=0)
    assert SplitDecision.from_dict(decision.to_dict()) == decision
    assert decision.sentence() == ("split: blocks of 50 consecutive frames, because file names carry frame "
                                   "numbers (e.g. 'RGB/254p RGB Frame (1).jpg'); override with --split random")
    assert "\n" not in decision.sentence()


def test_split_digest_ignores_row_order_and_sees_changes():
    rows, split = np.arange(2, 12), np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    assert split_digest(rows, split) == split_digest(rows[::-1], split[::-1])
    assert split_digest(rows, split) != split_digest(rows, np.roll(split, 1))


# --- through load_data: real files, the log line, firekd's own synthetic set ---------------------

def _frame_folder(folder: Path, n: int, copies: dict[int, int]) -> Path:
    """n tiny RGB+IR frame pairs named like FLAME 2; frame b's files are byte copies of frame a's
    for each a -> b in ``copies``."""
    from PIL import Image

    for sub in ("RGB", "Thermal"):
        (folder / sub).mkdir(parents=True)
    lines = ["rgb_path,ir_path,fire,smoke"]
    for i in range(1, n + 1):
        src = copies.get(i, i)
        value = src % 256
        for sub, kind in (("RGB", "RGB"), ("Thermal", "Thermal")):
            Image.new("RGB", (8, 8), (value, src // 256, 7)).save(folder / sub / f"254p {kind} Frame ({i}).png")
        lines.append(f"RGB/254p RGB Frame ({i}).png,Thermal/254p Thermal Frame ({i}).png,"
                     f"{int((i // 40) % 2)},{int((i // 70) % 2)}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def test_load_data_splits_frames_in_blocks_says_so_in_one_line_and_keeps_copies_together(tmp_path, caplog):
    import logging

    from firekd.config import DataConfig
    from firekd.recipes.data import load_data

    csv = _frame_folder(tmp_path / "flame", 300, copies={290: 3, 150: 12})
    with caplog.at_level(logging.INFO):
        bundle = load_data(DataConfig(csv=str(csv), img_size=32, block_size=20, cache=False))
    decision = bundle.split_decision
    assert decision.method == "frame_blocks" and decision.joined_duplicates == 4
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("split:")]
    assert lines == [decision.sentence()]
    assert "blocks of 20 consecutive frames" in lines[0] and "override with --split random" in lines[0]
    split = bundle.records.set_index("row")["split_assigned"]
    assert split[290 + 1] == split[3 + 1] and split[150 + 1] == split[12 + 1]  # row = frame + 1


def test_a_split_column_that_separates_copies_is_kept_with_a_warning(tmp_path, caplog):
    from firekd.config import DataConfig
    from firekd.recipes.data import load_data

    csv = _frame_folder(tmp_path / "flame", 30, copies={30: 1})
    table = pd.read_csv(csv)
    table["split"] = ["test"] * 10 + ["train"] * 15 + ["val"] * 5  # frame 1 in test, its copy 30 in val
    table.to_csv(csv, index=False)
    bundle = load_data(DataConfig(csv=str(csv), img_size=32, cache=False))
    assert bundle.split_decision.method == "column"
    assert bundle.records["split_assigned"].tolist() == table["split"].tolist()
    assert "2 rows show an image that also appears in another split (split the CSV's split column)" in caplog.text


def test_firekd_synth_gets_the_stratified_random_split(synth_small: Path):
    from firekd.config import DataConfig
    from firekd.recipes.data import load_data

    bundle = load_data(DataConfig(csv=str(synth_small / "data.csv"), img_size=32, cache=False))
    assert bundle.split_decision.method == "random" and not bundle.split_decision.leak_risk


def test_the_real_rgb_collection_gets_the_random_split_and_its_copies_are_joined():
    from conftest import shared_data

    from firekd.data.checks import same_image_ids, with_digests
    from firekd.data.csv import read_records

    records = read_records(shared_data("fire-smoke-rgb", "data.csv"), require_ir=False)
    records = with_digests(records, manifest=None)
    records["same_image"] = same_image_ids(records)
    split, decision = split_records(records, seed=0)
    assert decision.method == "random"
    assert decision.joined_duplicates > 0  # the web collection holds byte-identical copies
    assert (split.groupby(records["same_image"]).nunique() == 1).all()
