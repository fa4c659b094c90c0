"""Evaluation commands: compare (tables + tests), report (markdown + HTML), evaluate (a checkpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

from firekd.cli.args import add_column_args, column_names, image_size, positive_int, unit_fraction


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="OUTPUT", help="the --output folder of firekd train/ablation")
    p.add_argument("--teacher", default=None, help="only this teacher's runs (default: all)")


def register(sub) -> None:
    p = sub.add_parser("compare", help="results table and significance tests over an output folder",
                       description="Table of loss variants (with the bce control) x models: mean ± std "
                       "and 95%% CI over seeds of F1 macro/fire/smoke, plus size and latency when "
                       "measured; paired t-test and Wilcoxon across seeds between variants; McNemar "
                       "teacher vs student per label. Prints markdown; writes CSVs and a bar chart "
                       "to OUTPUT/comparison/<teacher or all>/ (see --out).")
    _add_output_args(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the CSVs and the chart (default: OUTPUT/comparison/<teacher or all>)")
    p.set_defaults(func=run_compare)

    p = sub.add_parser("report", help="write report.md and report.html for an output folder",
                       description="A readable report: data summary, configuration, results table, "
                       "statistical tests and every run's figures. Written to "
                       "OUTPUT/report/<teacher or all>/ with relative links to OUTPUT/graphs.")
    _add_output_args(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default: OUTPUT/report/<teacher or all>)")
    p.add_argument("--embed", action="store_true",
                   help="embed the figures in report.html (one file to share; larger)")
    p.set_defaults(func=run_report)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a CSV",
                       description="Evaluate any saved checkpoint (teacher, student, ...) on any CSV "
                       "with labels. Image size and IR decoding come from the checkpoint's training "
                       "data settings, the decision thresholds from its validation, unless overridden. "
                       "Writes the metrics as JSON and one line of predictions per sample.")
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a *_best.pth (or compressed) model")
    p.add_argument("--csv", required=True, help="CSV with rgb_path[,ir_path],fire,smoke")
    add_column_args(p.add_argument_group("data"))
    p.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                   help="rows to evaluate: all, or one split, taken from --split_file, else from the "
                        "split.csv of the run the checkpoint belongs to (OUTPUT/models/<run>/seed_<s>/ "
                        "-> OUTPUT/metrics/<run>/split.csv) when it fits --csv, else from the CSV's "
                        "split column (default: all). --split test on a run's checkpoint and its CSV "
                        "reproduces the run's test metrics")
    p.add_argument("--split_file", default=None,
                   help="a split.csv written by a run (row,split columns); default: the checkpoint's run's")
    p.add_argument("--thresholds", type=unit_fraction, nargs=2, metavar=("FIRE", "SMOKE"), default=None,
                   help="decision thresholds (default: the checkpoint's validation-tuned ones)")
    p.add_argument("--img_size", type=image_size, default=None,
                   help="input size in pixels (default: the training size recorded in the checkpoint)")
    p.add_argument("--ir_channels", choices=("1", "3"), default=None,
                   help="IR channels (default: as in training)")
    p.add_argument("--ir_range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="16-bit/radiometric IR range mapped to [0, 1] (default: as in training)")
    p.add_argument("--slice_col", action="append", default=[], metavar="COL",
                   help="a categorical column of --csv (e.g. hidden_in_rgb): recall, precision and F1 "
                        "per label on each of its values, in the metrics JSON; repeatable")
    p.add_argument("--batch_size", type=positive_int, default=64, help="batch size (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--out", default="evaluation", metavar="DIR",
                   help="folder for <checkpoint>_<csv>_<split>.json (metrics) and "
                        "..._predictions.csv (default: ./evaluation)")
    p.set_defaults(func=run_evaluate)


def _out_dir(args: argparse.Namespace, kind: str, teacher: str) -> Path:
    return Path(args.out) if args.out else Path(args.output) / kind / (teacher if args.teacher else "all")


def run_compare(args: argparse.Namespace) -> int:
    from firekd.recipes.compare import compare, mcnemar_summary, tests_display, write_comparison
    from firekd.reporting.tables import display_table, markdown

    cmp = compare(args.output, args.teacher)
    paths = write_comparison(cmp, _out_dir(args, "comparison", cmp.runs[0].teacher))
    print("## Results on test (mean ± std over seeds; 95% CI: t-interval over seeds)\n")
    print(markdown(display_table(cmp.summary)))
    tests, notes = tests_display(cmp.tests)
    print("\n## Paired tests across seeds (two-sided; in brackets: Holm-adjusted p)\n")
    print(markdown(tests) if not tests.empty else "(no pairs of variants to compare)")
    for note in notes:
        print(f"note: {note}")
    print("\n## Teacher vs student per sample: exact McNemar per seed "
          "(b: only the teacher right, c: only the other model right)\n")
    mc = mcnemar_summary(cmp.mcnemar)
    print(markdown(mc) if not mc.empty else "(no run has teacher predictions)")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from firekd.recipes.compare import compare
    from firekd.recipes.report import distillation_answer, ir_lines, teacher_check_lines, write_report

    cmp = compare(args.output, args.teacher)
    files = write_report(args.output, args.teacher, embed=args.embed, out_dir=args.out, comparison=cmp)
    print("What distillation buys (student test F1 macro, paired by seed):")
    for line in distillation_answer(cmp):
        print(f"- {line}")
    ir = ir_lines(cmp)
    if ir:
        print("What IR adds (KD from the RGB+IR teacher minus KD from the RGB-only teacher, paired by seed):")
        for line in ir:
            print(f"- {line}")
    for line in teacher_check_lines(cmp):
        print(f"- {line.replace('**', '')}")
    print(f"report: {files['markdown']} and {files['html']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from firekd.io import write_csv, write_json
    from firekd.recipes.evaluate import EvalRequest, evaluate_checkpoint

    req = EvalRequest(checkpoint=args.checkpoint, csv=args.csv, base_path=args.base_path,
                      columns=column_names(args), split=args.split, split_file=args.split_file,
                      skip_missing=args.skip_missing, img_size=args.img_size, ir_channels=args.ir_channels,
                      ir_range=tuple(args.ir_range) if args.ir_range else None,
                      thresholds=tuple(args.thresholds) if args.thresholds else None,
                      batch_size=args.batch_size, device=args.device, slice_cols=tuple(args.slice_col))
    result = evaluate_checkpoint(req)
    stem = f"{Path(args.checkpoint).stem}_{Path(args.csv).stem}_{args.split}"
    metrics_path, preds_path = Path(args.out) / f"{stem}.json", Path(args.out) / f"{stem}_predictions.csv"
    write_json(metrics_path, {"evaluated": result.info, "metrics": result.metrics})
    write_csv(preds_path, result.predictions)
    m, info = result.metrics, result.info
    split = args.split if not info["split_file"] else f"{args.split} of {info['split_file']}"
    print(f"{info['kind']} {args.checkpoint} on {info['n']} samples ({split}) of {args.csv}, "
          f"thresholds {info['thresholds'][0]:.3f}/{info['thresholds'][1]:.3f} ({info['thresholds_from']})")
    print(f"  F1 macro {m['f1_macro']:.4f} (bootstrap 95% CI [{_num(m['f1_macro_boot_low'])}, "
          f"{_num(m['f1_macro_boot_high'])}]), F1 fire {m['f1_fire']:.4f}, F1 smoke {m['f1_smoke']:.4f}, "
          f"exact-match accuracy {m['accuracy']:.4f}")
    for line in slice_lines(m):
        print(f"  {line}")
    print(f"written: {metrics_path}, {preds_path}")
    return 0


def _num(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"  # NaN on an empty set


def slice_lines(metrics: dict) -> list[str]:
    """One line per slice value: its sample count and recall/precision/F1 per label."""
    from firekd.metrics.slices import parse_slice_key

    lines = {}
    for key, value in metrics.items():
        parsed = parse_slice_key(key)
        if parsed and not parsed[0].startswith("positives_"):
            metric, column, category = parsed
            text = f"n {int(value)}" if metric == "n" else f"{metric.replace('_', ' ')} {_num(value)}"
            lines.setdefault(f"{column} = {category}", []).append(text)
    return [f"{where}: {', '.join(parts)}" for where, parts in lines.items()]
