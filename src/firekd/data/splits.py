"""Train/val/test splits: stratified on label combinations, group- and block-aware, reusable.

Every method assigns whole groups so that near-duplicate images never straddle splits. Groups are
placed greedily, largest first, into the split whose per-label-combination counts are furthest
below target; the shuffle that breaks ties comes from the split seed alone, never from a training
seed.

What a group is depends on the method (``auto`` picks one and says why, see `split_records`):
- ``random`` (alias ``stratified``): the CSV's group column, else each row alone;
- ``block``: contiguous blocks of ``block_size`` rows in CSV order;
- ``auto`` on video frames: blocks of ``block_size`` consecutive frame numbers per video.
Whatever the method, rows showing the same image (the ``same_image`` column, see
`firekd.data.checks.same_image_ids`; else the same paths) are joined into one group.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from firekd.errors import DataError

SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"  # a training row whose labels are not used (the unlabelled pool)
COMBO_NAMES = ("none", "fire", "smoke", "both")
METHODS = ("auto", "random", "stratified", "block", "column")
SYNONYMS = {"stratified": "random"}  # the old name of the random split, still accepted
# A word that marks video frames: in the file name or its folder, not inside another word
# ("Frame (12)", "frame_000012", "video3_0042", "clip07/"), "keyframe" or "videography" do not count.
VIDEO_WORD = re.compile(r"(?<![a-z])(frame|video|vid|clip|seq|sequence|movie)s?(?![a-z])", re.IGNORECASE)
LAST_NUMBER = re.compile(r"\d+(?=\D*$)")
MIN_NUMBERED = 0.9  # share of rows whose file name must carry a number to look like frames


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


def merge_groups(*labelings) -> np.ndarray:
    """One id per row such that rows sharing a label in any of ``labelings`` share the id
    (connected components; a missing label (None/NaN) links nothing)."""
    n = len(labelings[0])
    rows, nodes, offset = [], [], n
    for labels in labelings:
        codes, uniques = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), use_na_sentinel=True)
        keep = codes >= 0
        rows.append(np.nonzero(keep)[0])
        nodes.append(codes[keep] + offset)
        offset += len(uniques)
    src, dst = np.concatenate(rows), np.concatenate(nodes)
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(offset, offset))
    return connected_components(graph, directed=False)[1][:n]


# --- video frames --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameSequences:
    """Rows read as video frames: a sequence key (folder + file name without its number) and the
    frame number per row (-1 for the few rows without one), and the evidence in words."""

    sequence: np.ndarray
    frame: np.ndarray
    evidence: str


def _parse_name(path: str) -> tuple[str, int, bool]:
    """(sequence key, frame number or -1, whether the name or its folder has a video word)."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    match = LAST_NUMBER.search(stem)
    has_word = bool(VIDEO_WORD.search(stem) or VIDEO_WORD.search(os.path.basename(folder)))
    if match is None or len(match.group()) > 18:  # a hash or an id, not a frame number
        return path, -1, has_word
    key = os.path.join(folder, stem[:match.start()] + "#" + stem[match.end():])
    return key, int(match.group()), has_word


def detect_frames(paths) -> FrameSequences | None:
    """Video frames, told from a numbered image collection by the file names alone (reading the
    images to see whether neighbours look alike would cost a decode of every pair):
    numbered file names (at least 90% of rows) AND either a video word (frame, video, vid, clip,
    seq, sequence, movie) in the file name or its folder for most rows, or numbered files in two or
    more folders, each numbered mostly consecutively (per-video folders).
    A single folder of numbered files without such a word (``rgb/000123.jpg``) is an image set."""
    parsed = [_parse_name(str(p)) for p in paths]
    if not parsed:
        return None
    keys = np.array([p[0] for p in parsed], dtype=object)
    frames = np.array([p[1] for p in parsed], dtype=np.int64)
    numbered = frames >= 0
    if numbered.mean() < MIN_NUMBERED:
        return None
    example = _short(str(paths[int(np.argmax(numbered))]))
    words = np.array([p[2] for p in parsed])
    if (words & numbered).mean() >= 0.5:
        evidence = f"file names carry frame numbers (e.g. '{example}')"
    elif (folders := _per_video_folders(keys[numbered], frames[numbered])) >= 2:
        evidence = f"numbered files fill {folders} per-video folders (e.g. '{example}')"
    else:
        return None
    return FrameSequences(keys, frames, evidence)


def _short(path: str) -> str:
    """The file name with its folder, for messages."""
    folder, name = os.path.split(path)
    return f"{os.path.basename(folder)}/{name}" if folder else name


def _per_video_folders(keys: np.ndarray, frames: np.ndarray) -> int:
    """How many folders hold a run of mostly consecutive numbers (0 when that is not the rule)."""
    table = pd.DataFrame({"folder": [os.path.dirname(k) for k in keys], "frame": frames})
    steps = table.sort_values(["folder", "frame"]).groupby("folder")["frame"].diff().dropna()
    if steps.empty or (steps == 1).mean() < 0.5:
        return 0
    return int(table["folder"].nunique())


def frame_blocks(seq: FrameSequences, block_size: int) -> np.ndarray:
    """Group per row: blocks of ``block_size`` consecutive frames of one sequence, in frame-number
    order whatever the CSV order (``ls`` puts frame 100 next to 1000). A row without a number is a
    sequence of its own."""
    table = pd.DataFrame({"sequence": seq.sequence, "frame": seq.frame})
    order = table.sort_values(["sequence", "frame"], kind="stable").index.to_numpy()
    ordered = table.loc[order]
    rank = ordered.groupby("sequence").cumcount().to_numpy()
    block = ordered["sequence"].astype(str) + "\0" + (rank // block_size).astype(str)
    groups = np.empty(len(table), dtype=object)
    groups[order] = block.to_numpy()
    return groups


# --- the decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitDecision:
    """Which split was made and why, in words a user can act on."""

    method: str  # column | file | random | block | frame_blocks
    reason: str
    block_size: int | None = None
    joined_duplicates: int = 0  # rows that share an image with another row, kept in one split
    leak_risk: bool = False  # frames were seen but split row by row (too few blocks)

    def sentence(self) -> str:
        what = {"column": "the CSV's split column", "file": "a saved split",
                "random": "stratified random split",
                "block": f"blocks of {self.block_size} consecutive rows in CSV order",
                "frame_blocks": f"blocks of {self.block_size} consecutive frames"}[self.method]
        text = f"split: {what}, {self.reason}"
        if self.joined_duplicates:
            text += f"; {self.joined_duplicates} rows with identical images are kept in one split"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "sentence": self.sentence()}

    @classmethod
    def from_dict(cls, data: dict) -> SplitDecision:
        return cls(**{k: data[k] for k in ("method", "reason", "block_size", "joined_duplicates",
                                           "leak_risk") if k in data})


def _enough_blocks(groups: np.ndarray, ratios) -> bool:
    """At least one block expected in the smallest split."""
    return len(pd.unique(groups)) * min(ratios) / sum(ratios) >= 1


def decide_split(records: pd.DataFrame, method: str = "auto", ratios=(0.7, 0.15, 0.15),
                 block_size: int = 50) -> tuple[SplitDecision, np.ndarray | None]:
    """The split to make and its groups before identical images are joined (None: column)."""
    method = SYNONYMS.get(method, method)
    if method not in METHODS:
        raise DataError(f"--split must be one of {', '.join(METHODS)}, got '{method}'")
    n = len(records)
    if method == "column" or (method == "auto" and "split" in records):
        if "split" not in records:
            raise DataError("--split column needs a 'split' column in the CSV")
        return SplitDecision("column", "as given"), None
    if method == "block":
        return (SplitDecision("block", "as asked (--split block)", block_size),
                block_groups(n, block_size))
    has_groups = "group" in records
    groups = records["group"].to_numpy() if has_groups else np.arange(n)
    if method == "random":
        why = "whole groups of the CSV's group column" if has_groups else "row by row"
        return SplitDecision("random", f"{why}, as asked (--split {method})"), groups
    if has_groups:
        return SplitDecision("random", "keeping the groups of the CSV's group column whole"), groups
    return _decide_auto(records, ratios, block_size)


def _decide_auto(records: pd.DataFrame, ratios, block_size: int) -> tuple[SplitDecision, np.ndarray]:
    rows = np.arange(len(records))
    seq = detect_frames(records["rgb_path"].tolist())
    if seq is None:
        return SplitDecision("random", "because file names show no video frames (no frame/video/clip "
                             "word, no per-video folders); for video frames add a group column or pass "
                             "--split block"), rows
    blocks = frame_blocks(seq, block_size)
    if not _enough_blocks(blocks, ratios):
        return SplitDecision("random", f"although {seq.evidence}: {len(records)} rows make too few "
                             f"blocks of {block_size} for three splits, so neighbouring frames may leak "
                             "(lower --block_size to split by blocks)", leak_risk=True), rows
    return SplitDecision("frame_blocks", f"because {seq.evidence}; override with --split random",
                         block_size), blocks


def _same_image(records: pd.DataFrame) -> np.ndarray:
    if "same_image" in records:
        return records["same_image"].to_numpy()
    keys = [k for k in ("rgb_path", "ir_path") if k in records and records[k].notna().all()]
    return merge_groups(*(records[k].to_numpy() for k in keys))


def join_identical(groups: np.ndarray, same_image: np.ndarray) -> tuple[np.ndarray, int]:
    """Groups joined wherever two of them hold the same image, and how many rows share an image.
    Unchanged ids when nothing is joined, so splits of data without duplicates stay as they were."""
    shared = int(pd.Series(same_image).duplicated(keep=False).sum())
    merged = merge_groups(groups, same_image)
    if len(np.unique(merged)) == len(pd.unique(pd.Series(groups))):
        return groups, shared
    return merged, shared


def split_records(records: pd.DataFrame, *, method: str = "auto", ratios=(0.7, 0.15, 0.15),
                  seed: int = 0, block_size: int = 50) -> tuple[pd.Series, SplitDecision]:
    """Split name per record (indexed like ``records``) and the decision behind it."""
    decision, groups = decide_split(records, method, ratios, block_size)
    if groups is None:
        return records["split"].copy(), decision
    groups, shared = join_identical(groups, _same_image(records))
    if shared:
        decision = SplitDecision(**{**asdict(decision), "joined_duplicates": shared})
    combos = label_combination(records["fire"], records["smoke"])
    return pd.Series(assign_groups(combos, groups, tuple(ratios), seed), index=records.index), decision


def make_split(records: pd.DataFrame, *, method: str = "auto", ratios=(0.7, 0.15, 0.15),
               seed: int = 0, block_size: int = 50) -> pd.Series:
    """Split name per record (indexed like ``records``); see `split_records` for the decision."""
    return split_records(records, method=method, ratios=ratios, seed=seed, block_size=block_size)[0]


def labelled_count(n_train: int, *, n: int | None = None, fraction: float | None = None) -> int:
    """How many train rows stay labelled under --n_labelled / --label_fraction (all without)."""
    if n is not None:
        if n > n_train:
            raise DataError(f"--n_labelled {n}: the train split has only {n_train} labelled rows")
        return n
    if fraction is not None:
        return max(1, round(fraction * n_train))
    return n_train


def keep_labelled(split: np.ndarray, combos: np.ndarray, keep: int, seed: int) -> np.ndarray:
    """The split with all but ``keep`` train rows moved to the unlabelled pool (``UNLABELED``);
    validation and test rows untouched. The kept rows are a draw stratified on the label
    combinations (largest-remainder shares per combination, at least one row of each combination
    present when ``keep`` allows), from a generator seeded by ``seed``."""
    split, combos = np.asarray(split, dtype=object).copy(), np.asarray(combos)
    train = np.nonzero(split == "train")[0]
    if keep >= len(train):
        return split
    present, counts = np.unique(combos[train], return_counts=True)
    share = keep * counts / counts.sum()
    quota = np.floor(share).astype(int)
    by_remainder = np.argsort(-(share - quota), kind="stable")
    quota[by_remainder[:keep - quota.sum()]] += 1  # largest remainders take the rows left over
    if keep >= len(present):  # every combination keeps a labelled example, taken from the largest
        for i in np.nonzero(quota == 0)[0]:
            quota[np.argmax(quota)] -= 1
            quota[i] = 1
    rng = np.random.default_rng(seed)
    kept = np.concatenate([rng.choice(train[combos[train] == c], size=q, replace=False)
                           for c, q in zip(present, quota, strict=True)])
    moved = np.setdiff1d(train, kept)
    split[moved] = UNLABELED
    return split


def straddling_images(split: pd.Series, same_image: np.ndarray) -> int:
    """Rows whose image also appears in another split (a given split column or split file)."""
    per_image = pd.Series(np.asarray(split)).groupby(np.asarray(same_image)).transform("nunique")
    return int((per_image > 1).sum())


def split_digest(rows, split) -> str:
    """A short hash of a split (CSV line -> split name), order-independent: recorded in checkpoints
    so a split.csv found later can be checked to be the one the model was trained with."""
    table = pd.DataFrame({"row": np.asarray(rows, dtype=int), "split": np.asarray(split, dtype=str)})
    text = table.sort_values("row").to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    bad = ~np.isin(split, (*SPLITS, UNLABELED))
    if bad.any():
        raise DataError(f"{path}: split value '{split[bad][0]}' is not one of train/val/test/{UNLABELED}")
    return pd.Series(split, index=records.index)
