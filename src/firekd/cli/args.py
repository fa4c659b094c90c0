"""Argument types and the flag groups several commands share."""

from __future__ import annotations

import argparse

from firekd.config import DataConfig
from firekd.data.csv import ColumnNames
from firekd.data.splits import METHODS
from firekd.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """Bad flags end in one line naming the flag, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def open_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def unit_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def image_size(text: str) -> int:
    value = positive_int(text)
    if value % 32 or value < 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (>= 32), got {text}")
    return value


def _number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got '{text}'") from None


def add_column_args(g) -> None:
    """--base_path, the column-name flags and --skip_missing (shared by every command reading a CSV)."""
    g.add_argument("--base_path", default=None,
                   help="folder that relative image paths start from (default: the CSV's folder)")
    g.add_argument("--rgb_col", help="name of the RGB path column (default: found by alias)")
    g.add_argument("--ir_col", help="name of the IR path column (default: found by alias)")
    g.add_argument("--fire_col", help="name of the fire label column (default: fire)")
    g.add_argument("--smoke_col", help="name of the smoke label column (default: smoke)")
    g.add_argument("--split_col", help="name of a train/val/test column (default: split)")
    g.add_argument("--group_col", help="name of a group column, e.g. video id (default: group)")
    g.add_argument("--skip_missing", action="store_true",
                   help="drop rows whose images are missing or unreadable (with a warning) "
                        "instead of stopping")


def column_names(args: argparse.Namespace) -> ColumnNames:
    return ColumnNames(args.rgb_col, args.ir_col, args.fire_col, args.smoke_col, args.split_col,
                       args.group_col)


def add_data_args(p: argparse.ArgumentParser, *, csv_required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", required=csv_required,
                   help="CSV with columns rgb_path,ir_path,fire,smoke (aliases accepted; "
                        "optional split and group columns are honoured, others ignored)")
    add_column_args(g)
    g.add_argument("--img_size", type=image_size, default=224,
                   help="training image size in pixels, a multiple of 32; RGB and IR are both "
                        "resized to it (default: 224)")
    g.add_argument("--ir_channels", choices=("auto", "1", "3"), default="auto",
                   help="IR channels: 1 for grayscale/16-bit/radiometric, 3 for colour-mapped; "
                        "auto decides from the files (default: auto)")
    g.add_argument("--ir_range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="for 16-bit or radiometric (float, deg C) IR: the value range mapped to "
                        "[0, 1], clipped (default: 0 65535 for 16-bit, -20 600 for radiometric)")
    g.add_argument("--no_cache", action="store_true",
                   help="decode image files on every access instead of using the decoded cache "
                        "(the cache is built once, when it fits the disk, and reused)")
    g.add_argument("--cache_dir", default=None,
                   help="where decoded caches live (default: $FIREKD_CACHE_DIR or "
                        "~/.cache/firekd); safe to delete")
    s = p.add_argument_group("split")
    s.add_argument("--split", choices=METHODS, default="auto",
                   help="stratified: on label combinations (group-aware when a group column "
                        "exists); block: contiguous blocks of --block_size rows in CSV order, for "
                        "video frames; column: the CSV's split column; auto: column if present, "
                        "else stratified (default: auto)")
    s.add_argument("--split_ratios", type=unit_fraction, nargs=3, default=(0.7, 0.15, 0.15),
                   metavar=("TRAIN", "VAL", "TEST"), help="split ratios (default: 0.7 0.15 0.15)")
    s.add_argument("--split_seed", type=int, default=0,
                   help="seed of the split, independent of the training seeds (default: 0)")
    s.add_argument("--block_size", type=positive_int, default=50,
                   help="rows per block for --split block (default: 50)")
    s.add_argument("--split_file", default=None,
                   help="reuse a split.csv written by an earlier run (row,split columns)")


def add_latency_args(g, *, threads_help: str) -> None:
    g.add_argument("--latency_runs", type=non_negative_int, default=20,
                   help="timed forward passes per CPU latency number (median after 3 warm-up "
                        "passes, random inputs, batch 1 and 32); 0 skips latency (default: 20)")
    g.add_argument("--latency_threads", type=positive_int, default=1, help=threads_help)


def add_teacher_modalities_arg(g) -> None:
    g.add_argument("--teacher_modalities", choices=("rgb+ir", "rgb"), default="rgb+ir",
                   help="teacher input: rgb+ir, or rgb for an RGB-only teacher; rgb also accepts a "
                        "CSV without IR (default: rgb+ir)")


def data_config(args: argparse.Namespace, *, require_ir: bool = True) -> DataConfig:
    if any(r <= 0 for r in args.split_ratios):
        raise ConfigError(f"--split_ratios: every ratio must be > 0, got {args.split_ratios}")
    if args.ir_range and not args.ir_range[0] < args.ir_range[1]:
        raise ConfigError(f"--ir_range: LO must be below HI, got {args.ir_range}")
    return DataConfig(
        csv=args.csv,
        base_path=args.base_path,
        columns=column_names(args),
        skip_missing=args.skip_missing,
        split=args.split,
        split_ratios=tuple(args.split_ratios),
        split_seed=args.split_seed,
        block_size=args.block_size,
        split_file=args.split_file,
        img_size=args.img_size,
        ir_channels=args.ir_channels,
        ir_range=tuple(args.ir_range) if args.ir_range else None,
        require_ir=require_ir,
        cache=not args.no_cache,
        cache_dir=args.cache_dir,
    )
