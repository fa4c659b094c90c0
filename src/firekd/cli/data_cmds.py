"""Data commands: synth, validate."""

from __future__ import annotations

import argparse
import os

from firekd.cli.args import (
    add_data_args,
    add_teacher_modalities_arg,
    data_config,
    non_negative_int,
    positive_int,
    unit_fraction,
)
from firekd.data.synthetic import SynthConfig


def register(sub) -> None:
    p = sub.add_parser("synth", help="generate the synthetic RGB+IR fire/smoke dataset",
                       description="Generate RGB JPEGs, IR PNGs and a data.csv (spec format). "
                       "IR carries information RGB lacks: some fires are hidden under smoke or too "
                       "small to see in RGB; smoke is invisible in IR; distractors in both.")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--n", type=positive_int, default=2000, help="number of pairs (default: 2000)")
    p.add_argument("--size", type=positive_int, default=64, help="image side in px (default: 64)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="generator seed (default: 0)")
    p.add_argument("--fire_rate", type=unit_fraction, default=0.45,
                   help="probability that an image contains fire (default: 0.45)")
    p.add_argument("--smoke_rate", type=unit_fraction, default=0.45,
                   help="probability that an image contains smoke (default: 0.45)")
    p.add_argument("--hidden_fire_rate", type=unit_fraction, default=0.5,
                   help="of fires with smoke, the fraction buried under the plume in RGB "
                        "(default: 0.5)")
    p.add_argument("--small_fire_rate", type=unit_fraction, default=0.25,
                   help="of the other fires, the fraction too small/dim to see in RGB (default: 0.25)")
    p.add_argument("--distractor_rate", type=unit_fraction, default=0.35,
                   help="probability of each distractor kind per image (default: 0.35)")
    p.add_argument("--rgb_cue", type=unit_fraction, default=0.0, metavar="S",
                   help="a fire buried under smoke leaves a faint, noisy warm glow in RGB of strength S "
                        "(0: none, the images are exactly those without the option; 0.1-0.3: faint; "
                        "1: plain), for the case where RGB holds a weak cue (default: 0)")
    p.add_argument("--unlabeled", type=non_negative_int, default=0, metavar="N",
                   help="also write N unlabelled pairs (own scenes, same distribution) under "
                        "unlabeled/ and their unlabeled.csv (rgb_path, ir_path) beside data.csv, for "
                        "--unlabeled_csv (default: 0)")
    p.add_argument("--side_labels", action="store_true",
                   help="also write each scene's side variables as 0/1 columns of data.csv (sky, "
                        "forest, orange_object, glare, warm_surface, haze): labels a teacher can be "
                        "pretrained on without seeing fire or smoke labels, e.g. firekd train "
                        "--fire_col warm_surface --smoke_col haze --teacher_only (see README)")
    p.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="generator processes (default: min(4, CPUs))")
    p.set_defaults(func=run_synth)

    p = sub.add_parser("validate", help="check a CSV and its images, show the split",
                       description="Validate a CSV and its image files as training would, then "
                       "print counts per split and label combination. Writes nothing unless "
                       "--write_split is given.")
    add_data_args(p)
    add_teacher_modalities_arg(p)
    p.add_argument("--write_split", default=None, metavar="PATH",
                   help="write the split as CSV (reusable with --split_file)")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("cache", help="build the decoded-image cache ahead of training",
                       description="Validate a CSV and decode every image once, resized to "
                       "--img_size, into the memory-mapped cache that training reads (training "
                       "builds it too when missing). Same data flags as training.")
    add_data_args(p)
    add_teacher_modalities_arg(p)
    p.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1),
                   help="decoding processes (default: min(4, CPUs))")
    p.set_defaults(func=run_cache)


def run_synth(args: argparse.Namespace) -> int:
    from firekd.recipes.synth import write_synthetic

    config = SynthConfig(n=args.n, size=args.size, seed=args.seed, fire_rate=args.fire_rate,
                         smoke_rate=args.smoke_rate, hidden_fire_rate=args.hidden_fire_rate,
                         small_fire_rate=args.small_fire_rate, distractor_rate=args.distractor_rate,
                         rgb_cue=args.rgb_cue, unlabeled=args.unlabeled, side_labels=args.side_labels)
    table = write_synthetic(config, args.out, workers=args.workers)
    combos = table.groupby(["fire", "smoke"]).size()
    print(f"wrote {len(table)} RGB+IR pairs ({args.size}x{args.size}) and {args.out}/data.csv")
    for (fire, smoke), count in combos.items():
        print(f"  fire={fire} smoke={smoke}: {count}")
    hidden = "hidden/small"
    if args.rgb_cue:
        hidden = f"buried, but a faint glow at --rgb_cue {args.rgb_cue:g}; or small"
    print(f"  fire not visible in RGB ({hidden}): {int(table['hidden_in_rgb'].sum())}")
    if args.unlabeled:
        print(f"wrote {args.unlabeled} unlabelled RGB+IR pairs and {args.out}/unlabeled.csv")
    if args.side_labels:
        from firekd.data.synthetic import SIDE_VARIABLES

        counts = ", ".join(f"{k} {int(table[k].sum())}" for k in SIDE_VARIABLES)
        print(f"  side variables (0/1 columns, count of 1s): {counts}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from firekd.io import write_csv
    from firekd.recipes.data import describe_ir, load_data

    bundle = load_data(data_config(args, require_ir=args.teacher_modalities == "rgb+ir"))
    rep = bundle.report
    print(f"{args.csv}: {len(bundle.records)} valid samples; IR: {describe_ir(rep.ir)}")
    print(f"  RGB sizes: {_sizes(rep.rgb_sizes)}")
    if rep.ir_sizes:
        print(f"  IR sizes: {_sizes(rep.ir_sizes)}; pairs of different sizes: {rep.mismatched_pairs}")
    print(bundle.split_decision.sentence())
    print(bundle.summary().to_string())
    if args.write_split:
        write_csv(args.write_split, bundle.split_table())
        print(f"split written to {args.write_split}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from firekd.diskspace import human_bytes
    from firekd.errors import ConfigError
    from firekd.recipes.data import load_data, open_cache

    config = data_config(args, require_ir=args.teacher_modalities == "rgb+ir")
    if not config.cache:
        raise ConfigError("--no_cache: nothing to build")
    cache = open_cache(load_data(config), workers=args.workers, required=True)
    size = sum(f.stat().st_size for f in cache.folder.iterdir())
    print(f"cache ready: {cache.folder} ({len(cache)} pairs, {human_bytes(size)})")
    return 0


def _sizes(counter) -> str:
    return ", ".join(f"{w}x{h} ({n})" for (w, h), n in counter.most_common(3))
