"""`firekd convert flame2|flame3`: write a firekd CSV for a public dataset's own layout."""

from __future__ import annotations

import argparse
import logging

from firekd.cli.args import Parser, positive_int

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("convert", help="write a firekd CSV for FLAME 2 or FLAME 3",
                       description="Convert a public dataset's labels and folders into a firekd "
                       "CSV (rgb_path,ir_path,fire,smoke,group). Image paths are written relative "
                       "to the CSV's folder when the images lie under it, else absolute.")
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", parser_class=Parser, required=True)
    _register_flame2(datasets)
    _register_flame3(datasets)


def _register_flame2(datasets) -> None:
    p = datasets.add_parser("flame2", help="FLAME 2: label file of frame ranges + frame pairs",
                            description="FLAME 2: '254p RGB Frame (N).jpg' / '254p Thermal Frame "
                            "(N).jpg' pairs labelled by the ranges of 'Frame Pair Labels.txt'. The "
                            "group column holds blocks of consecutive frames, cut at label-range "
                            "boundaries, so the default split keeps near-duplicate frames together.")
    p.add_argument("--labels", required=True, help="FLAME 2's 'Frame Pair Labels.txt'")
    p.add_argument("--rgb_dir", required=True, help="folder of '254p RGB Frame (N).jpg' files")
    p.add_argument("--ir_dir", required=True, help="folder of '254p Thermal Frame (N).jpg' files "
                   "(may be the same folder as --rgb_dir)")
    p.add_argument("--out", required=True, help="CSV to write (written atomically)")
    p.add_argument("--block_size", type=positive_int, default=250,
                   help="consecutive frames per group (default: 250)")
    p.add_argument("--frames", type=int, nargs=2, metavar=("FIRST", "LAST"), default=None,
                   help="convert only frames FIRST..LAST (default: all labelled frames)")
    p.add_argument("--keep_missing", action="store_true",
                   help="keep labelled frames whose RGB or thermal file is missing, with their "
                        "expected paths (default: drop them with a warning)")
    p.add_argument("--on_conflict", choices=("drop", "first", "last"), default="drop",
                   help="a frame listed in two ranges with different labels: drop it, or keep the "
                        "labels of its first or last listing (default: drop)")
    p.set_defaults(func=run_flame2)


def _register_flame3(datasets) -> None:
    p = datasets.add_parser("flame3", help="FLAME 3: <site>/RGB, Thermal, TIFF paired by file name",
                            description="FLAME 3: RGB/, Thermal/ (colour-mapped JPEG) and TIFF/ "
                            "(radiometric, deg C) side by side in each site folder, paired by file "
                            "stem; sites are the sub-folders of --root, or --root itself. FLAME 3 "
                            "has no per-frame labels in this layout: give --labels, or --fire and "
                            "--smoke for a folder whose frames are all alike. The group column "
                            "holds blocks of consecutive frames of a site.")
    p.add_argument("--root", required=True, help="a site folder, or a folder of site folders")
    p.add_argument("--ir", choices=("thermal", "radiometric"), default="thermal",
                   help="IR files: thermal = colour-mapped JPEGs in Thermal/, radiometric = float "
                        "TIFFs in TIFF/ (default: thermal)")
    p.add_argument("--out", required=True, help="CSV to write (written atomically)")
    p.add_argument("--labels", default=None,
                   help="CSV with columns stem,fire,smoke (and site when file stems repeat across "
                        "sites); pairs without a row are skipped with a warning")
    p.add_argument("--fire", type=int, choices=(0, 1), default=None,
                   help="fire label of every pair (instead of --labels)")
    p.add_argument("--smoke", type=int, choices=(0, 1), default=None,
                   help="smoke label of every pair (instead of --labels)")
    p.add_argument("--block_size", type=positive_int, default=20,
                   help="consecutive frames of a site per group (default: 20)")
    p.set_defaults(func=run_flame3)


def run_flame2(args: argparse.Namespace) -> int:
    from firekd.data.converters import convert_flame2

    conversion = convert_flame2(args.labels, args.rgb_dir, args.ir_dir, block_size=args.block_size,
                                frames=tuple(args.frames) if args.frames else None,
                                keep_missing=args.keep_missing, on_conflict=args.on_conflict)
    return _finish(conversion, args.out, "frame pairs")


def run_flame3(args: argparse.Namespace) -> int:
    from firekd.data.converters import convert_flame3

    conversion = convert_flame3(args.root, ir=args.ir, labels=args.labels, fire=args.fire,
                                smoke=args.smoke, block_size=args.block_size)
    return _finish(conversion, args.out, f"RGB/{args.ir} pairs")


def _finish(conversion, out: str, what: str) -> int:
    from firekd.data.converters import combination_counts, relative_paths
    from firekd.io import write_csv

    for warning in conversion.warnings:
        log.warning("%s", warning)
    table = relative_paths(conversion.table, out)
    write_csv(out, table)
    print(f"wrote {out}: {len(table)} {what} in {table['group'].nunique()} groups")
    for (fire, smoke), count in combination_counts(table).items():
        print(f"  fire={fire} smoke={smoke}: {count}")
    return 0
