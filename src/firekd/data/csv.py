"""Read and validate a firekd CSV into a table of records.

The canonical records table has one row per sample and the columns
``row`` (line number in the CSV, 1 = header), ``rgb_path``, ``ir_path`` (absolute paths; ``ir_path``
is None for RGB-only data), ``fire``, ``smoke`` (0/1 ints) and, when present, ``split`` and ``group``.
Unlabelled pairs (`read_unlabeled`) have the same table with ``fire``/``smoke`` NaN (float): the
missing-label marker, which the dataset's float label tensor carries on as NaN.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from firekd.errors import DataError

log = logging.getLogger(__name__)

# Canonical column -> accepted spellings (compared case-insensitively, first match wins).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "rgb_path": ("rgb_path", "rgb", "rgb_frame", "rgb_image", "rgb_file", "image_path", "image"),
    "ir_path": (
        "ir_path", "ir", "ir_frame", "ir_image", "ir_file",
        "thermal_path", "thermal", "thermal_frame",
    ),
    "fire": ("fire", "fire_label", "is_fire"),
    "smoke": ("smoke", "smoke_label", "is_smoke"),
    "split": ("split", "subset"),
    "group": ("group", "group_id", "video", "video_id", "sequence"),
}
REQUIRED = ("rgb_path", "fire", "smoke")
COLUMN_FLAGS = {"rgb_path": "--rgb_col", "fire": "--fire_col", "smoke": "--smoke_col"}
UNLABELED_FLAG = "--unlabeled_csv"
# cells that mean "no label" in a CSV of unlabelled pairs (pandas writes NaN as an empty cell)
MISSING_LABEL_VALUES = {"", "nan", "na", "n/a", "none", "null"}
TRUE_VALUES = {"1", "1.0", "true", "yes", "y", "t"}
FALSE_VALUES = {"0", "0.0", "false", "no", "n", "f"}
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class ColumnNames:
    """Explicit column names given by the user (None = find by alias)."""

    rgb: str | None = None
    ir: str | None = None
    fire: str | None = None
    smoke: str | None = None
    split: str | None = None
    group: str | None = None

    def explicit(self) -> dict[str, str | None]:
        return {"rgb_path": self.rgb, "ir_path": self.ir, "fire": self.fire,
                "smoke": self.smoke, "split": self.split, "group": self.group}


def line_number(index: int) -> int:
    """CSV line number of the data row at 0-based position ``index`` (the header is line 1)."""
    return index + 2


def _read_table(csv_path: Path) -> pd.DataFrame:
    if not csv_path.exists():
        raise DataError(f"{csv_path}: CSV file not found")
    if csv_path.is_dir():
        raise DataError(f"{csv_path}: is a directory, expected a CSV file")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DataError(f"{csv_path}: not a readable CSV file ({detail})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise DataError(f"{csv_path}: CSV has a header but no data rows")
    return table


def resolve_columns(found: list[str], names: ColumnNames, csv_path: Path,
                    required: tuple[str, ...] = REQUIRED) -> dict[str, str]:
    """Map canonical column names to the CSV's actual column names."""
    lower = {c.lower(): c for c in found}
    mapping: dict[str, str] = {}
    for canonical, explicit in names.explicit().items():
        if explicit is not None:
            if explicit not in found and explicit.lower() not in lower:
                raise DataError(
                    f"{csv_path}: column '{explicit}' (given for {canonical}) not found; "
                    f"columns found: {', '.join(found)}"
                )
            mapping[canonical] = explicit if explicit in found else lower[explicit.lower()]
            continue
        for alias in COLUMN_ALIASES[canonical]:
            if alias in lower:
                mapping[canonical] = lower[alias]
                break
    missing = [c for c in required if c not in mapping]
    if missing:
        raise DataError(
            f"{csv_path}: missing required column(s) {', '.join(missing)}; "
            f"columns found: {', '.join(found)} "
            f"(name them with {'/'.join(COLUMN_FLAGS[c] for c in required)})"
        )
    return mapping


def parse_labels(values: pd.Series, column: str, csv_path: Path) -> pd.Series:
    """0/1 ints from 1/0, true/false, yes/no in any case; the first bad value is an error."""
    norm = values.str.strip().str.lower()
    parsed = pd.Series(pd.NA, index=values.index, dtype="Int64")
    parsed[norm.isin(TRUE_VALUES)] = 1
    parsed[norm.isin(FALSE_VALUES)] = 0
    bad = parsed.isna()
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{csv_path}: line {line_number(pos)}: column '{column}' has value "
            f"'{values.iloc[pos]}', expected 0/1, true/false or yes/no "
            f"({int(bad.sum())} bad value(s) in this column)"
        )
    return parsed.astype(int)


def _resolve_paths(values: pd.Series, column: str, base: Path, csv_path: Path) -> pd.Series:
    stripped = values.str.strip()
    empty = stripped == ""
    if empty.any():
        pos = int(empty.to_numpy().nonzero()[0][0])
        raise DataError(f"{csv_path}: line {line_number(pos)}: column '{column}' is empty")
    base_str = str(base)
    return stripped.map(lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(base_str, p)))


def _parse_split(values: pd.Series, column: str, csv_path: Path) -> pd.Series:
    norm = values.str.strip().str.lower().map(SPLIT_ALIASES)
    bad = norm.isna()
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{csv_path}: line {line_number(pos)}: column '{column}' has value "
            f"'{values.iloc[pos]}', expected one of train/val/test"
        )
    return norm


def _require_ir(mapping: dict[str, str], found: list[str], csv_path: Path, require_ir: bool) -> None:
    if require_ir and "ir_path" not in mapping:
        raise DataError(
            f"{csv_path}: no IR column (looked for ir_path, ir, ir_frame, thermal, ...); "
            f"columns found: {', '.join(found)}. Name it with --ir_col, or train an "
            "RGB-only teacher with --teacher_modalities rgb"
        )


def read_records(
    csv_path: str | Path,
    *,
    base_path: str | Path | None = None,
    columns: ColumnNames = ColumnNames(),
    require_ir: bool = True,
) -> pd.DataFrame:
    """Parse a CSV into the canonical records table (no file checks; see `check_files`)."""
    csv_path = Path(csv_path)
    table = _read_table(csv_path)
    mapping = resolve_columns(list(table.columns), columns, csv_path)
    _require_ir(mapping, list(table.columns), csv_path, require_ir)
    records = _image_records(table, mapping, base_path, csv_path)
    for label in ("fire", "smoke"):
        records[label] = parse_labels(table[mapping[label]], mapping[label], csv_path).to_numpy()
    if "split" in mapping:
        records["split"] = _parse_split(table[mapping["split"]], mapping["split"], csv_path).to_numpy()
    if "group" in mapping:
        records["group"] = table[mapping["group"]].str.strip().to_numpy()
    _warn_duplicates(records, csv_path)
    return records


def _image_records(table: pd.DataFrame, mapping: dict[str, str], base_path: str | Path | None,
                   csv_path: Path) -> pd.DataFrame:
    """``row`` (the CSV line) and the absolute ``rgb_path`` and ``ir_path`` (None without IR)."""
    base = Path(base_path) if base_path is not None else csv_path.resolve().parent
    records = pd.DataFrame({"row": [line_number(i) for i in range(len(table))]})
    for column in ("rgb_path", "ir_path"):
        if column in mapping:
            paths = _resolve_paths(table[mapping[column]], mapping[column], base, csv_path)
            records[column] = paths.to_numpy()
    if "ir_path" not in mapping:
        records["ir_path"] = None
    return records


def read_unlabeled(
    csv_path: str | Path,
    *,
    base_path: str | Path | None = None,
    columns: ColumnNames = ColumnNames(),
    require_ir: bool = True,
) -> pd.DataFrame:
    """Parse a CSV of unlabelled pairs (``--unlabeled_csv``) into the canonical records table with
    ``fire`` and ``smoke`` NaN. Label columns may be absent or empty; a label value in one is an
    error (a labelled pair belongs in --csv). A ``group`` column is kept (see `drop_eval_overlap`);
    a ``split`` column is ignored: unlabelled pairs only ever train. No file checks (`check_files`).
    """
    csv_path = Path(csv_path)
    table = _read_table(csv_path)
    found = list(table.columns)
    lower = {c.lower() for c in found}
    # --fire_col etc. name the labelled CSV's columns: here they may be absent
    absent = [f for f in ("fire", "smoke", "split", "group")
              if getattr(columns, f) is not None and getattr(columns, f).lower() not in lower]
    mapping = resolve_columns(found, dataclasses.replace(columns, **dict.fromkeys(absent)), csv_path,
                              required=("rgb_path",))
    _require_ir(mapping, found, csv_path, require_ir)
    for label in ("fire", "smoke"):
        if label in mapping:
            _reject_labels(table[mapping[label]], mapping[label], csv_path)
    records = _image_records(table, mapping, base_path, csv_path)
    records["fire"] = records["smoke"] = float("nan")
    if "group" in mapping:
        records["group"] = table[mapping["group"]].str.strip().to_numpy()
    _warn_duplicates(records, csv_path)
    return records


def _reject_labels(values: pd.Series, column: str, csv_path: Path) -> None:
    stray = ~values.str.strip().str.lower().isin(MISSING_LABEL_VALUES)
    if stray.any():
        pos = int(stray.to_numpy().nonzero()[0][0])
        raise DataError(
            f"{csv_path}: line {line_number(pos)}: column '{column}' has value '{values.iloc[pos]}' "
            f"in a CSV of unlabelled pairs ({UNLABELED_FLAG}): leave label columns empty or drop "
            f"them; labelled pairs belong in --csv ({int(stray.sum())} label value(s) in this column)"
        )


def _warn_duplicates(records: pd.DataFrame, csv_path: Path) -> None:
    keys = ["rgb_path", "ir_path"] if records["ir_path"].notna().any() else ["rgb_path"]
    dup = records.duplicated(subset=keys, keep="first")
    if dup.any():
        first = records.loc[dup, "row"].head(5).tolist()
        log.warning("%s: %d duplicate row(s) (same image files), e.g. lines %s; they are kept, in one "
                    "split",
                    csv_path, int(dup.sum()), ", ".join(map(str, first)))


MAX_SLICE_VALUES = 20  # more distinct values than this: not a categorical column


def read_slices(csv_path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The slice columns (``--slice_col``) of a CSV as strings, indexed by CSV line (``row``).
    A column that is absent, has an empty value, or is not categorical (a number with a fraction,
    or more than MAX_SLICE_VALUES distinct values) ends in one DataError naming file, column, line."""
    csv_path = Path(csv_path)
    table = _read_table(csv_path)
    lower = {c.lower(): c for c in table.columns}
    out = pd.DataFrame(index=pd.Index([line_number(i) for i in range(len(table))], name="row"))
    for column in dict.fromkeys(columns):
        found = lower.get(column.lower())
        if found is None:
            raise DataError(f"{csv_path}: no column '{column}' (--slice_col); columns: "
                            f"{', '.join(table.columns)}")
        values = table[found].str.strip()
        empty = values.str.lower().isin(("", "nan", "na", "none", "null"))
        if empty.any():
            pos = int(empty.to_numpy().nonzero()[0][0])
            raise DataError(f"{csv_path}: line {line_number(pos)}: column '{found}' (--slice_col) has no "
                            f"value ({int(empty.sum())} row(s) without one); every row needs a category")
        out[column] = _categories(values, found, csv_path).to_numpy()
    return out


def _categories(values: pd.Series, column: str, csv_path: Path) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    fractional = numbers.notna() & (numbers != numbers.round())
    if fractional.any():
        pos = int(fractional.to_numpy().nonzero()[0][0])
        raise DataError(f"{csv_path}: line {line_number(pos)}: column '{column}' (--slice_col) has the value "
                        f"'{values.iloc[pos]}'; a slice column must be categorical (labels or whole numbers)")
    values = values.copy()
    whole = numbers.notna()
    values[whole] = numbers[whole].astype("int64").astype(str)  # "1.0" and "1" are one category
    distinct = values.nunique()
    if distinct > MAX_SLICE_VALUES:
        raise DataError(f"{csv_path}: column '{column}' (--slice_col) has {distinct} distinct values; a "
                        f"slice column must be categorical (at most {MAX_SLICE_VALUES} values)")
    return values
