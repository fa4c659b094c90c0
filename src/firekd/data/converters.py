"""Convert public fire datasets into the firekd CSV (rgb_path, ir_path, fire, smoke, group).

FLAME 2 ships 53,451 frame pairs ``254p RGB Frame (N).jpg`` / ``254p Thermal Frame (N).jpg`` and a
label file of frame ranges (``first<TAB>last<TAB>XY``, X = fire Y/N, Y = smoke Y/N, after a few
header lines). Frames are consecutive video frames, so the ``group`` column holds blocks of
consecutive frames, cut at label-range boundaries: the group-aware split then never puts two
frames of one block in different splits. A frame listed by two ranges keeps one row: with the
same labels its first listing; with different labels (the official file lists frame 41642 as the
last YN frame of 38154-41642 and the first YY frame of 41642-45279, an off-by-one at a boundary)
it is dropped by default, since neither label can be trusted, or the first/last listing wins.

FLAME 3 has one folder per site with ``RGB/``, ``Thermal/`` (colour-mapped JPEG) and ``TIFF/``
(radiometric, deg C) side by side, paired by file stem. It has no per-frame fire/smoke labels in
this form: they come from a labels CSV or from constants for a folder of one kind.

These functions read folders and label files but write nothing and log nothing: problems that
do not stop the conversion are returned as warning lines for the caller to show.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from firekd.data.csv import parse_labels
from firekd.errors import DataError

FLAME2_NAME = re.compile(r"^254p (RGB|Thermal) Frame \((\d+)\)\.(jpe?g|png)$", re.IGNORECASE)
FLAME2_LINE = re.compile(r"^(\d+)\s+(\d+)\s+([YN])([YN])$", re.IGNORECASE)
CONFLICT_POLICIES = ("drop", "first", "last")
FLAME3_IR = {"thermal": ("thermal", (".jpg", ".jpeg", ".png")),
             "radiometric": ("tiff", (".tif", ".tiff"))}
RGB_EXT = (".jpg", ".jpeg", ".png")
SHOW = 5  # examples named in a warning


@dataclass(frozen=True)
class LabelRange:
    """One line of FLAME 2's label file: frames first..last (inclusive) share the labels."""

    first: int
    last: int
    fire: int
    smoke: int
    line: int  # line number in the label file, for messages


@dataclass
class Conversion:
    """The converted table (paths absolute) and the warnings met on the way."""

    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _examples(values) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:SHOW])
    return shown + (", ..." if len(values) > SHOW else "")


# --------------------------------------------------------------------------- FLAME 2 labels


def parse_flame2_labels(text: str, source: str) -> list[LabelRange]:
    """Label ranges from the label file's text; header lines are those before the first range."""
    ranges: list[LabelRange] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (not ranges and not line[0].isdigit()):
            continue
        match = FLAME2_LINE.match(line)
        if match is None:
            raise DataError(f"{source}: line {number}: expected 'FIRST<TAB>LAST<TAB>XY' with X, Y "
                            f"in Y/N (fire, smoke), got '{line}'")
        first, last = int(match[1]), int(match[2])
        if first > last:
            raise DataError(f"{source}: line {number}: first frame {first} is after last frame {last}")
        ranges.append(LabelRange(first, last, int(match[3].upper() == "Y"),
                                 int(match[4].upper() == "Y"), number))
    if not ranges:
        raise DataError(f"{source}: no label ranges found (expected lines 'FIRST<TAB>LAST<TAB>XY')")
    return ranges


def expand_ranges(ranges: list[LabelRange]) -> pd.DataFrame:
    """One row per (frame, range) listing: frame, fire, smoke, range (index into ``ranges``)."""
    frames = [np.arange(r.first, r.last + 1) for r in ranges]
    sizes = [len(f) for f in frames]
    return pd.DataFrame({
        "frame": np.concatenate(frames),
        "fire": np.repeat([r.fire for r in ranges], sizes),
        "smoke": np.repeat([r.smoke for r in ranges], sizes),
        "range": np.repeat(np.arange(len(ranges)), sizes),
    })


def resolve_overlaps(listed: pd.DataFrame, ranges: list[LabelRange],
                     on_conflict: str = "drop") -> tuple[pd.DataFrame, list[str]]:
    """One row per frame. A frame listed twice with the same labels keeps its first listing; with
    different labels ``on_conflict`` decides: drop the frame, or keep the first or last listing."""
    if on_conflict not in CONFLICT_POLICIES:
        raise DataError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got '{on_conflict}'")
    warnings: list[str] = []
    repeated = listed["frame"].duplicated(keep=False)
    if not repeated.any():
        return listed.reset_index(drop=True), warnings
    labels = listed.loc[repeated].groupby("frame")[["fire", "smoke"]].nunique().max(axis=1)
    conflicting = labels.index[labels > 1]
    same = labels.index[labels == 1]
    if len(same):
        warnings.append(f"{len(same)} frame(s) listed more than once with the same labels "
                        f"(e.g. {_examples(same)}); each is kept once")
    if len(conflicting):
        warnings.append(_conflict_warning(listed, ranges, conflicting, on_conflict))
    keep = "last" if on_conflict == "last" else "first"
    resolved = listed.drop_duplicates("frame", keep=keep)
    if on_conflict == "drop":
        resolved = resolved[~resolved["frame"].isin(conflicting)]
    return resolved.sort_values("frame").reset_index(drop=True), warnings


def _conflict_warning(listed: pd.DataFrame, ranges: list[LabelRange], conflicting,
                      on_conflict: str) -> str:
    rows = listed[listed["frame"].isin(conflicting)]
    lines = sorted({ranges[k].line for k in rows["range"]})
    action = {"drop": "dropped (--on_conflict first/last keeps one listing)",
              "first": "the first listing's labels are kept", "last": "the last listing's labels are kept"}
    return (f"{len(conflicting)} frame(s) listed with conflicting labels (e.g. frame "
            f"{_examples(conflicting)}, on lines {_examples(lines)}); {action[on_conflict]}")


def frame_groups(frames: np.ndarray, range_index: np.ndarray, ranges: list[LabelRange],
                 block_size: int) -> np.ndarray:
    """'FIRST-LAST' block name per frame: blocks of ``block_size`` frames counted from the start of
    the frame's label range, so a block never spans two ranges."""
    starts = np.array([r.first for r in ranges])[range_index]
    ends = np.array([r.last for r in ranges])[range_index]
    block_start = starts + (frames - starts) // block_size * block_size
    block_end = np.minimum(block_start + block_size - 1, ends)
    return np.char.add(np.char.add(block_start.astype(str), "-"), block_end.astype(str))


def label_gaps(ranges: list[LabelRange]) -> list[str]:
    """Warnings for frame numbers between the first and last range that no range covers."""
    spans = sorted((r.first, r.last) for r in ranges)
    gaps, reach = [], spans[0][1]
    for first, last in spans[1:]:
        if first > reach + 1:
            gaps.append((reach + 1, first - 1))
        reach = max(reach, last)
    if not gaps:
        return []
    total = sum(b - a + 1 for a, b in gaps)
    shown = _examples(f"{a}-{b}" for a, b in gaps)
    return [f"{total} frame number(s) lie in no label range ({shown}); they are not converted"]


# --------------------------------------------------------------------------- FLAME 2 files


def scan_flame2_folder(folder: Path, kind: str) -> dict[int, str]:
    """Frame number -> file name for the files of ``kind`` (RGB or Thermal) named like FLAME 2's."""
    found: dict[int, str] = {}
    for name in sorted(os.listdir(folder)):
        match = FLAME2_NAME.match(name)
        if match and match[1].lower() == kind.lower():
            found.setdefault(int(match[2]), name)
    return found


def flame2_name(kind: str, frame: int) -> str:
    return f"254p {kind} Frame ({frame}).jpg"


def _flame2_files(frames: np.ndarray, folder: Path, kind: str, found: dict[int, str]) -> np.ndarray:
    prefix = os.path.join(folder, "")
    return np.array([prefix + found.get(f, flame2_name(kind, f)) for f in frames.tolist()], dtype=object)


def _missing_warning(frames: np.ndarray, have_rgb: np.ndarray, have_ir: np.ndarray,
                     keep_missing: bool) -> str:
    missing = frames[~(have_rgb & have_ir)]
    action = ("kept (--keep_missing): training will need --skip_missing or the files" if keep_missing
              else "dropped (--keep_missing keeps them)")
    return (f"{len(missing)} labelled frame(s) lack a file ({int((~have_rgb).sum())} without RGB, "
            f"{int((~have_ir).sum())} without thermal; e.g. frame {_examples(missing)}); {action}")


def _unlabelled_warning(on_disk: set[int], labelled: set[int]) -> list[str]:
    extra = sorted(on_disk - labelled)
    if not extra:
        return []
    return [f"{len(extra)} frame(s) have image files but no label (e.g. frame {_examples(extra)}); "
            "they are not converted"]


def convert_flame2(labels_path: str | Path, rgb_dir: str | Path, ir_dir: str | Path, *,
                   block_size: int = 250, frames: tuple[int, int] | None = None,
                   keep_missing: bool = False, on_conflict: str = "drop") -> Conversion:
    """FLAME 2 label file + image folders -> table (rgb_path, ir_path, fire, smoke, group, frame).

    ``frames`` (first, last) converts only that frame range; ``keep_missing`` keeps frames whose
    files are absent (their expected paths are written) instead of dropping them.
    """
    labels_path, rgb_dir, ir_dir = Path(labels_path), Path(rgb_dir), Path(ir_dir)
    ranges = parse_flame2_labels(_read_text(labels_path, "--labels"), str(labels_path))
    _require_dir(rgb_dir, "--rgb_dir")
    _require_dir(ir_dir, "--ir_dir")
    listed = expand_ranges(ranges) if frames is None else _restrict(expand_ranges(ranges), frames)
    table, warnings = resolve_overlaps(listed, ranges, on_conflict)
    warnings += label_gaps(ranges)
    found = {"RGB": scan_flame2_folder(rgb_dir, "RGB"), "Thermal": scan_flame2_folder(ir_dir, "Thermal")}
    on_disk = {f for names in found.values() for f in names
               if frames is None or frames[0] <= f <= frames[1]}
    warnings += _unlabelled_warning(on_disk, set(listed["frame"].tolist()))
    table = _drop_missing(table, found, keep_missing, warnings, (rgb_dir, ir_dir))
    numbers = table["frame"].to_numpy()
    out = pd.DataFrame({
        "rgb_path": _flame2_files(numbers, rgb_dir.resolve(), "RGB", found["RGB"]),
        "ir_path": _flame2_files(numbers, ir_dir.resolve(), "Thermal", found["Thermal"]),
        "fire": table["fire"].to_numpy(), "smoke": table["smoke"].to_numpy(),
        "group": frame_groups(numbers, table["range"].to_numpy(), ranges, block_size),
        "frame": numbers,
    })
    return Conversion(out, warnings)


def _drop_missing(table: pd.DataFrame, found: dict[str, dict[int, str]], keep_missing: bool,
                  warnings: list[str], dirs: tuple[Path, Path]) -> pd.DataFrame:
    """Frames with both files (all frames with --keep_missing); a warning when some lack one."""
    numbers = table["frame"].to_numpy()
    have_rgb, have_ir = np.isin(numbers, list(found["RGB"])), np.isin(numbers, list(found["Thermal"]))
    complete = have_rgb & have_ir
    if complete.all():
        return table
    warnings.append(_missing_warning(numbers, have_rgb, have_ir, keep_missing))
    if keep_missing:
        return table
    if not complete.any():
        first = int(numbers[0])
        raise DataError(f"none of the {len(numbers)} labelled frames has both files: expected "
                        f"e.g. '{flame2_name('RGB', first)}' in --rgb_dir {dirs[0]} and "
                        f"'{flame2_name('Thermal', first)}' in --ir_dir {dirs[1]}")
    return table[complete].reset_index(drop=True)


def _restrict(listed: pd.DataFrame, frames: tuple[int, int]) -> pd.DataFrame:
    first, last = frames
    if first > last:
        raise DataError(f"--frames: FIRST {first} is after LAST {last}")
    kept = listed[(listed["frame"] >= first) & (listed["frame"] <= last)]
    if kept.empty:
        lo, hi = int(listed["frame"].min()), int(listed["frame"].max())
        raise DataError(f"--frames {first} {last}: no labelled frame in this range (labels cover {lo}-{hi})")
    return kept


# --------------------------------------------------------------------------- FLAME 3


def _child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name`` in any letter case."""
    for child in sorted(parent.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def find_flame3_sites(root: Path) -> list[Path]:
    """Site folders (holding RGB/): ``root`` itself, or its sub-folders."""
    _require_dir(root, "--root")
    if _child_dir(root, "rgb") is not None:
        return [root]
    sites = [c for c in sorted(root.iterdir()) if c.is_dir() and _child_dir(c, "rgb") is not None]
    if not sites:
        raise DataError(f"--root {root}: no FLAME 3 site found (expected {root}/RGB/ or "
                        f"{root}/<site>/RGB/ beside Thermal/ and TIFF/)")
    return sites


def scan_stems(folder: Path | None, extensions: tuple[str, ...]) -> dict[str, str]:
    """File stem -> file name for the files with one of ``extensions`` (any case)."""
    if folder is None:
        return {}
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        if Path(name).suffix.lower() in extensions:
            found.setdefault(Path(name).stem, name)
    return found


def _stem_order(stem: str) -> tuple:
    """Numeric stems in number order (00009 before 00010), others after, alphabetically."""
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def pair_flame3_site(site: Path, ir: str) -> tuple[pd.DataFrame, list[str]]:
    """Pairs (site, stem, rgb_path, ir_path) of one site, ordered by stem, and unpaired warnings."""
    folder_name, extensions = FLAME3_IR[ir]
    rgb_dir, ir_dir = _child_dir(site, "rgb"), _child_dir(site, folder_name)
    warnings = []
    if ir_dir is None:
        warnings.append(f"site {site.name}: no {folder_name.capitalize()}/ folder beside RGB/ "
                        f"(needed for --ir {ir}); its frames are skipped")
    rgb, irs = scan_stems(rgb_dir, RGB_EXT), scan_stems(ir_dir, extensions)
    stems = sorted(set(rgb) & set(irs), key=_stem_order)
    for name, only in (("RGB", set(rgb) - set(irs)), (f"{ir} IR", set(irs) - set(rgb))):
        if only and ir_dir is not None:
            warnings.append(f"site {site.name}: {len(only)} {name} file(s) without a partner "
                            f"(e.g. {_examples(sorted(only, key=_stem_order))}); skipped")
    table = pd.DataFrame({
        "site": site.name, "stem": stems,
        "rgb_path": [str(rgb_dir.resolve() / rgb[s]) for s in stems],
        "ir_path": [str(ir_dir.resolve() / irs[s]) for s in stems] if ir_dir else [],
    })
    return table, warnings


def site_groups(table: pd.DataFrame, block_size: int) -> np.ndarray:
    """'site/k': blocks of ``block_size`` consecutive frames of a site (table ordered by stem)."""
    position = table.groupby("site", sort=False).cumcount().to_numpy()
    return (table["site"] + "/" + (position // block_size).astype(str)).to_numpy()


def read_flame3_labels(path: Path) -> pd.DataFrame:
    """Labels CSV: a ``stem`` column (file name without extension, e.g. 00001), ``fire``,
    ``smoke`` and optionally ``site`` (needed when stems repeat across sites)."""
    text = _read_text(path, "--labels")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[-1]})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    missing = [c for c in ("stem", "fire", "smoke") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a FLAME 3 labels CSV needs "
                        f"stem,fire,smoke (and site when stems repeat); found {', '.join(table.columns)}")
    table["stem"] = table["stem"].str.strip().map(lambda s: Path(s).stem)
    for label in ("fire", "smoke"):
        table[label] = parse_labels(table[label], label, path)
    return table


def merge_flame3_labels(pairs: pd.DataFrame, labels: pd.DataFrame,
                        source: str) -> tuple[pd.DataFrame, list[str]]:
    """Attach fire/smoke by (site, stem), or by stem alone when the labels have no site column."""
    keys = ["site", "stem"] if "site" in labels.columns else ["stem"]
    labels = labels.assign(site=labels["site"].str.strip()) if "site" in keys else labels
    dup = labels.duplicated(keys, keep=False)
    if dup.any():
        what = "/".join(str(labels.loc[dup, k].iloc[0]) for k in keys)
        hint = "" if "site" in keys else " (add a site column when stems repeat across sites)"
        raise DataError(f"{source}: {what} is labelled more than once{hint}")
    if "site" not in keys and pairs.duplicated("stem").any():
        raise DataError(f"{source}: stems repeat across sites (e.g. "
                        f"{pairs.loc[pairs.duplicated('stem'), 'stem'].iloc[0]}); add a site column")
    merged = pairs.merge(labels[[*keys, "fire", "smoke"]], on=keys, how="left", validate="m:1")
    unlabelled = merged["fire"].isna()
    warnings = []
    if unlabelled.all():
        raise DataError(f"{source}: no pair found matches a label row (keys {', '.join(keys)}; "
                        f"e.g. pair {'/'.join(str(pairs[k].iloc[0]) for k in keys)})")
    if unlabelled.any():
        names = (merged.loc[unlabelled, "site"] + "/" + merged.loc[unlabelled, "stem"]).tolist()
        warnings.append(f"{len(names)} pair(s) have no label row in {source} "
                        f"(e.g. {_examples(names)}); skipped")
    merged = merged[~unlabelled].reset_index(drop=True)
    return merged.astype({"fire": int, "smoke": int}), warnings


def convert_flame3(root: str | Path, *, ir: str = "thermal", labels: str | Path | None = None,
                   fire: int | None = None, smoke: int | None = None,
                   block_size: int = 20) -> Conversion:
    """FLAME 3 folders -> table (rgb_path, ir_path, fire, smoke, group, site, stem).

    Labels come from ``labels`` (a CSV, see `read_flame3_labels`) or, for a folder whose frames
    are all of one kind, from the constants ``fire`` and ``smoke``.
    """
    if ir not in FLAME3_IR:
        raise DataError(f"--ir must be one of {', '.join(FLAME3_IR)}, got '{ir}'")
    constants = (fire, smoke) != (None, None)
    if (labels is None and None in (fire, smoke)) or (labels is not None and constants):
        raise DataError("FLAME 3 has no per-frame labels here: give --labels CSV (stem,fire,smoke"
                        "[,site]), or --fire and --smoke for a folder whose frames are all alike")
    if constants and not {fire, smoke} <= {0, 1}:
        raise DataError(f"--fire and --smoke must be 0 or 1, got {fire} and {smoke}")
    warnings: list[str] = []
    parts = []
    for site in find_flame3_sites(Path(root)):
        pairs, site_warnings = pair_flame3_site(site, ir)
        parts.append(pairs)
        warnings += site_warnings
    pairs = pd.concat(parts, ignore_index=True)
    if pairs.empty:
        raise DataError(f"--root {root}: no RGB/{FLAME3_IR[ir][0]} pair with the same file stem")
    if labels is not None:
        pairs, label_warnings = merge_flame3_labels(pairs, read_flame3_labels(Path(labels)), str(labels))
        warnings += label_warnings
    else:
        pairs = pairs.assign(fire=int(fire), smoke=int(smoke))
    pairs["group"] = site_groups(pairs, block_size)
    columns = ["rgb_path", "ir_path", "fire", "smoke", "group", "site", "stem"]
    return Conversion(pairs[columns], warnings)


# --------------------------------------------------------------------------- shared


def _read_text(path: Path, flag: str) -> str:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise DataError(f"{flag} {path}: label file {what}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataError(f"{flag} {path}: cannot read ({exc.strerror})") from None


def _require_dir(path: Path, flag: str) -> None:
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "folder not found"
        raise DataError(f"{flag} {path}: {what}")


def relative_paths(table: pd.DataFrame, csv_path: str | Path) -> pd.DataFrame:
    """Image paths relative to the CSV's folder when the images lie under it, else absolute:
    the CSV then moves with its images, and a CSV kept elsewhere still finds them."""
    prefix = os.path.join(Path(csv_path).resolve().parent, "")  # string ops: 100k paths
    columns = {}
    for column in ("rgb_path", "ir_path"):
        paths = table[column].astype(str)
        columns[column] = paths.where(~paths.str.startswith(prefix), paths.str.slice(len(prefix)))
    return table.assign(**columns)


def combination_counts(table: pd.DataFrame) -> pd.Series:
    """Rows per (fire, smoke) combination, all four listed."""
    index = pd.MultiIndex.from_product([[0, 1], [0, 1]], names=["fire", "smoke"])
    return table.groupby(["fire", "smoke"]).size().reindex(index, fill_value=0)
