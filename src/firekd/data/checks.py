"""File-level validation of records: missing/corrupt images, pair sizes, IR format, identical images."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from firekd.data.images import ImageInfo, IRSpec, inspect_many
from firekd.data.manifest import digests
from firekd.data.splits import merge_groups
from firekd.errors import DataError

log = logging.getLogger(__name__)
SHOW = 5  # how many offending rows an error message lists


@dataclass(frozen=True)
class FileReport:
    ir: IRSpec
    rgb_sizes: Counter
    ir_sizes: Counter
    mismatched_pairs: int


def _describe(records: pd.DataFrame, mask: np.ndarray, column: str) -> str:
    rows = records.loc[mask, ["row", column]].head(SHOW)
    return "; ".join(f"line {r.row}: {getattr(r, column)}" for r in rows.itertuples())


def _drop_or_raise(records: pd.DataFrame, bad: np.ndarray, what: str, column: str,
                   skip: bool, csv_name: str) -> pd.DataFrame:
    if not bad.any():
        return records
    msg = f"{csv_name}: {int(bad.sum())} {what} ({_describe(records, bad, column)})"
    return _stop_or_drop(records, bad, msg, skip, csv_name)


def _stop_or_drop(records: pd.DataFrame, bad: np.ndarray, msg: str, skip: bool,
                  csv_name: str) -> pd.DataFrame:
    if not skip:
        raise DataError(msg + "; fix the CSV or pass --skip_missing to drop these rows")
    log.warning("%s; dropping them (--skip_missing)", msg)
    kept = records.loc[~bad].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"{csv_name}: no usable rows left after dropping bad images")
    return kept


def _check_missing(records: pd.DataFrame, columns: list[str], skip: bool, csv_name: str) -> pd.DataFrame:
    for column in columns:
        missing = ~records[column].map(os.path.isfile).to_numpy(dtype=bool)
        records = _drop_or_raise(records, missing, f"missing {column} file(s)", column, skip, csv_name)
    return records


def _check_readable(records: pd.DataFrame, column: str, skip: bool, csv_name: str):
    infos = inspect_many(records[column].tolist())
    bad = np.array([isinstance(i, DataError) for i in infos])
    if not bad.any():
        return records, infos
    problems = [f"line {row}: {info}" for row, info in zip(records["row"], infos, strict=True)
                if isinstance(info, DataError)]
    msg = f"{csv_name}: {len(problems)} unreadable {column} file(s) ({'; '.join(problems[:SHOW])})"
    kept = _stop_or_drop(records, bad, msg, skip, csv_name)
    return kept, [i for i in infos if not isinstance(i, DataError)]


def _ir_spec(records: pd.DataFrame, infos: list[ImageInfo], channels: str | int,
             value_range: tuple[float, float] | None, csv_name: str) -> IRSpec:
    kinds = [i.kind for i in infos]
    first_kind = kinds[0]
    odd = next((k for k, kind in enumerate(kinds) if kind != first_kind), None)
    if odd is not None:
        raise DataError(
            f"{csv_name}: line {records['row'].iloc[odd]}: IR file is {kinds[odd]} but earlier ones "
            f"are {first_kind}; all IR files must share one format"
        )
    if channels == "auto":
        channels = 3 if any(i.channels == 3 for i in infos) and first_kind == "8bit" else 1
    return IRSpec(kind=first_kind, channels=int(channels), value_range=value_range)


def check_files(
    records: pd.DataFrame,
    *,
    csv_name: str,
    skip_missing: bool = False,
    ir_channels: str | int = "auto",
    ir_range: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, FileReport]:
    """Check that every image exists and is readable; infer the IR format."""
    has_ir = records["ir_path"].notna().all()
    columns = ["rgb_path", "ir_path"] if has_ir else ["rgb_path"]
    records = _check_missing(records, columns, skip_missing, csv_name)
    records, rgb_infos = _check_readable(records, "rgb_path", skip_missing, csv_name)
    if not has_ir:
        sizes = Counter((i.width, i.height) for i in rgb_infos)
        return records, FileReport(IRSpec(kind=None, channels=0), sizes, Counter(), 0)
    before = len(records)
    records, ir_infos = _check_readable(records, "ir_path", skip_missing, csv_name)
    if len(records) != before:  # rows dropped for bad IR: re-inspect RGB of the survivors
        rgb_infos = [i for i in inspect_many(records["rgb_path"].tolist())]
    spec = _ir_spec(records, ir_infos, ir_channels, ir_range, csv_name)
    mismatched = [k for k, (a, b) in enumerate(zip(rgb_infos, ir_infos, strict=True))
                  if (a.width, a.height) != (b.width, b.height)]
    if mismatched:
        rows = ", ".join(str(records["row"].iloc[k]) for k in mismatched[:SHOW])
        log.warning("%s: %d RGB/IR pair(s) differ in size (e.g. lines %s); both images are "
                    "resized to the training size", csv_name, len(mismatched), rows)
    return records, FileReport(
        ir=spec,
        rgb_sizes=Counter((i.width, i.height) for i in rgb_infos),
        ir_sizes=Counter((i.width, i.height) for i in ir_infos),
        mismatched_pairs=len(mismatched),
    )


def with_digests(records: pd.DataFrame, *, manifest: Path | None, workers: int = 8) -> pd.DataFrame:
    """``records`` with ``rgb_digest`` and ``ir_digest`` (None without IR): each file's content
    digest, remembered in ``manifest`` (see `firekd.data.manifest`)."""
    paths = [p for column in ("rgb_path", "ir_path") for p in records[column] if isinstance(p, str)]
    found = digests(paths, manifest=manifest, workers=workers)
    ir = [found.get(p) if isinstance(p, str) else None for p in records["ir_path"]]
    return records.assign(rgb_digest=[found[p] for p in records["rgb_path"]], ir_digest=ir)


def same_image_ids(records: pd.DataFrame) -> np.ndarray:
    """An id per row, shared by rows whose RGB file or IR file holds the same bytes: one file listed
    twice, reached through a link, or copied under another name (scraped sets have such copies).
    Such rows must never be split apart. ``records`` carries the digests of `with_digests`."""
    columns = ["rgb_digest", "ir_digest"] if records["ir_digest"].notna().all() else ["rgb_digest"]
    return merge_groups(np.arange(len(records)), *(records[c].to_numpy(dtype=object) for c in columns))
