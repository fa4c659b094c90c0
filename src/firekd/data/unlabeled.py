"""Unlabelled RGB+IR pairs (``--unlabeled_csv``): file checks against the labelled data and the
guard that keeps them out of validation and test.

Read them with `firekd.data.csv.read_unlabeled` (labels NaN), then `check_unlabeled_files`, then,
once the labelled split is known, `drop_eval_overlap`. They only ever join the training split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from firekd.data.checks import SHOW, FileReport, check_files
from firekd.data.images import IRSpec
from firekd.errors import DataError

log = logging.getLogger(__name__)


def check_unlabeled_files(unlabeled: pd.DataFrame, *, labelled_ir: IRSpec, csv_name: str,
                          skip_missing: bool = False) -> tuple[pd.DataFrame, FileReport]:
    """`check_files` on the unlabelled pairs (same errors, naming ``csv_name`` and its lines), with
    the labelled data's IR decoding (channels, value range); their IR must be of the same kind."""
    has_ir = unlabeled["ir_path"].notna().all()
    if labelled_ir.kind is None:  # RGB-only data: an unlabelled IR file would never be read
        unlabeled = unlabeled.assign(ir_path=None)
    elif not has_ir:
        raise DataError(f"{csv_name}: the unlabelled pairs have no IR files but the labelled pairs "
                        "have; give IR for both or for neither")
    checked, report = check_files(unlabeled, csv_name=csv_name, skip_missing=skip_missing,
                                  ir_channels=labelled_ir.channels if labelled_ir.kind else "auto",
                                  ir_range=labelled_ir.value_range)
    if report.ir.kind != labelled_ir.kind:
        raise DataError(f"{csv_name}: IR files are {report.ir.kind} but the labelled pairs' are "
                        f"{labelled_ir.kind}; all IR files must share one format")
    return checked, report


def drop_eval_overlap(unlabeled: pd.DataFrame, labelled: pd.DataFrame, split: Sequence[str], *,
                      csv_name: str) -> pd.DataFrame:
    """Drop the unlabelled pairs that are labelled pairs too (same RGB or IR file, in any split:
    in train it is used with its labels, in val/test it must never be trained on) or that share a
    ``group`` (video) with a validation or test pair; warns with the count and lines. ``split`` is
    the labelled records' assigned split, row for row."""
    files = set(labelled["rgb_path"]) | set(labelled["ir_path"].dropna())
    same_file = (unlabeled["rgb_path"].isin(files) | unlabeled["ir_path"].isin(files)).to_numpy()
    same_group = np.zeros(len(unlabeled), dtype=bool)
    if "group" in unlabeled and "group" in labelled:
        held_out = np.isin(np.asarray(split), ("val", "test"))
        same_group = unlabeled["group"].isin(set(labelled.loc[held_out, "group"])).to_numpy() & ~same_file
    for mask, why in ((same_file, "are labelled pairs too (same image file)"),
                      (same_group, "share a group with a validation or test pair")):
        if mask.any():
            lines = ", ".join(map(str, unlabeled.loc[mask, "row"].head(SHOW)))
            log.warning("%s: %d unlabelled pair(s) %s, e.g. lines %s; they are left out", csv_name,
                        int(mask.sum()), why, lines)
    kept = unlabeled.loc[~(same_file | same_group)].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"{csv_name}: every unlabelled pair is a labelled pair or shares a group with "
                        "a validation or test pair; nothing is left to train on")
    return kept
