"""Train/val/test splits: stratified on label combinations, group- and block-aware, reusable.

Every method assigns whole groups (a row is its own group when there is no group column) so that
near-duplicate video frames never straddle splits. Groups are placed greedily, largest first, into
the split whose per-label-combination counts are furthest below target; the shuffle that breaks
ties comes from the split seed alone, never from a training seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from firekd.errors import DataError

SPLITS = ("train", "val", "test")
COMBO_NAMES = ("none", "fire", "smoke", "both")
METHODS = ("auto", "stratified", "block", "column")


def label_combination(fire: np.ndarray, smoke: np.ndarray) -> np.ndarray:
    """0 none, 1 fire only, 2 smoke only, 3 both."""
    return np.asarray(fire, dtype=int) + 2 * np.asarray(smoke, dtype=int)


def assign_groups(combos: np.ndarray, groups: np.ndarray, ratios: tuple[float, float, float],
                  seed: int) -> np.ndarray:
    """Split name per row; every group lands in exactly one split."""
    group_ids, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_ids), 4))
    np.add.at(counts, (inverse, combos), 1)
    targets = np.outer(np.asarray(ratios) / sum(ratios), counts.sum(axis=0))  # (3, 4)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]  # big groups first
    current = np.zeros_like(targets)
    placed = np.empty(len(group_ids), dtype=int)
    for g in order:
        gain = counts[g] @ (current - targets).T  # (3,) lower = bigger deficit where g has rows
        s = int(np.argmin(gain))
        placed[g] = s
        current[s] += counts[g]
    return np.asarray(SPLITS)[placed[inverse]]


def block_groups(n: int, block_size: int) -> np.ndarray:
    """Contiguous blocks of ``block_size`` rows in CSV order."""
    return np.arange(n) // block_size


def make_split(records: pd.DataFrame, *, method: str = "auto", ratios=(0.7, 0.15, 0.15),
               seed: int = 0, block_size: int = 50) -> pd.Series:
    """Split name per record (indexed like ``records``)."""
    if method == "auto":
        method = "column" if "split" in records else "stratified"
    if method == "column":
        if "split" not in records:
            raise DataError("--split column needs a 'split' column in the CSV")
        return records["split"].copy()
    combos = label_combination(records["fire"], records["smoke"])
    if method == "block":
        groups = block_groups(len(records), block_size)
    elif "group" in records:
        groups = records["group"].to_numpy()
    else:
        groups = np.arange(len(records))
    return pd.Series(assign_groups(combos, groups, tuple(ratios), seed), index=records.index)


def check_split(split: pd.Series, ratios=(0.7, 0.15, 0.15), *, n_total: int | None = None) -> None:
    """Every split must have rows; say which one is empty and why."""
    counts = split.value_counts()
    for name, ratio in zip(SPLITS, ratios, strict=True):
        if counts.get(name, 0) == 0:
            n = n_total if n_total is not None else len(split)
            raise DataError(
                f"the {name} split is empty ({n} rows, ratio {ratio:g}); "
                "add data or change --split_ratios"
            )


def save_split(records: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """The table written to split.csv: CSV line number, RGB file and split."""
    return pd.DataFrame({"row": records["row"].to_numpy(), "rgb_path": records["rgb_path"].to_numpy(),
                         "split": split.to_numpy()})


def load_split(path: str | Path, records: pd.DataFrame) -> pd.Series:
    """Reuse a saved split: rows are matched by CSV line number and checked by file name."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found (--split_file)")
    try:
        table = pd.read_csv(path, dtype={"row": int, "split": str})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a split file ({str(exc).splitlines()[0]})") from None
    if not {"row", "split"} <= set(table.columns):
        raise DataError(f"{path}: a split file needs the columns row,split")
    by_row = table.set_index("row")
    missing = ~records["row"].isin(by_row.index)
    if missing.any():
        raise DataError(f"{path}: no split for CSV line {int(records.loc[missing, 'row'].iloc[0])} "
                        f"({int(missing.sum())} row(s) missing); was it made from this CSV?")
    if "rgb_path" in by_row:
        saved = by_row.loc[records["row"], "rgb_path"].map(lambda p: Path(p).name).to_numpy()
        now = records["rgb_path"].map(lambda p: Path(p).name).to_numpy()
        differ = np.nonzero(saved != now)[0]
        if len(differ):
            raise DataError(f"{path}: line {int(records['row'].iloc[differ[0]])} names "
                            f"{saved[differ[0]]} in the split file but {now[differ[0]]} in the CSV")
    split = by_row.loc[records["row"], "split"].to_numpy()
    bad = ~np.isin(split, SPLITS)
    if bad.any():
        raise DataError(f"{path}: split value '{split[bad][0]}' is not one of train/val/test")
    return pd.Series(split, index=records.index)
