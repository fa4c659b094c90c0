"""The `export` command: a student checkpoint as ONNX fp32 and onnxruntime int8, both evaluated."""

from __future__ import annotations

import argparse
from pathlib import Path

from firekd.cli.args import (
    add_data_args,
    add_latency_args,
    data_config,
    image_size,
    non_negative_float,
    positive_int,
)


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a student checkpoint as ONNX (fp32 and static int8) and evaluate both",
        description="Write a trained student (student_best.pth or student_pruned.pth) as ONNX fp32 "
        "(<stem>.onnx: input 'rgb' float32 (B,3,H,W) normalised like training, outputs 'logits' "
        "(B,2) and 'embedding' (B,D), dynamic batch) and as onnxruntime static int8 in QDQ format "
        "(<stem>_int8.onnx: per-channel int8 weights, int8 activations calibrated on training "
        "images). Both run with onnxruntime on the CPU and are evaluated on the test split of "
        "--csv next to the torch fp32 checkpoint (thresholds chosen on validation): metrics, "
        "parameters, GFLOPs, file size and CPU latency are printed and written to "
        "<stem>_onnx_evaluation.json. The split is the training run's (OUTPUT/metrics/<run>/split.csv, "
        "found from the checkpoint's place in OUTPUT/models/<run>/seed_<s>/), so the test images are the "
        "ones the student never saw; --split_file names another, and the --split flags apply only to a "
        "checkpoint outside a run folder.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="fp32 student checkpoint: student_best.pth or student_pruned.pth of a run")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the ONNX files and the JSON (default: the checkpoint's folder)")
    add_data_args(p)
    _default_size_from_checkpoint(p)
    g = p.add_argument_group("export")
    g.add_argument("--calibration_batches", type=positive_int, default=32,
                   help="shuffled training batches (no augmentation) that set the int8 activation "
                        "ranges (default: 32, fewer when the train split is smaller)")
    g.add_argument("--batch_size", type=positive_int, default=64,
                   help="batch size of calibration and evaluation (default: 64)")
    add_latency_args(g, threads_help="CPU threads of torch and onnxruntime, for evaluation and "
                                     "latency, recorded as cpu_threads (default: 1)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the calibration batches' shuffle (default: 0)")
    f = p.add_argument_group(
        "fastest form", description="--fastest measures every form of the student on this CPU (torch "
        "fp32, torch int8 compiled with inductor, the pruned student when student_pruned.pth lies beside "
        "the checkpoint or --pruned names one, ONNX fp32, ONNX int8) at --deploy_size, --deploy_batch and "
        "--threads, keeps the forms whose validation F1 macro is within --f1_tolerance of fp32's, and "
        "writes the fastest as <stem>_fastest.<ext> with its model card and every number in "
        "<stem>_fastest.json.")
    f.add_argument("--fastest", action="store_true", help="choose the form to ship by measurement")
    f.add_argument("--deploy_size", type=image_size, default=None,
                   help="input size in deployment; forms are evaluated and timed at it (default: the "
                        "checkpoint's training size)")
    f.add_argument("--deploy_batch", type=positive_int, default=1,
                   help="frames per forward pass (default: 1)")
    f.add_argument("--threads", dest="latency_threads", type=positive_int, default=argparse.SUPPRESS,
                   help="CPU threads in deployment (same as --latency_threads)")
    f.add_argument("--f1_tolerance", type=non_negative_float, default=0.01,
                   help="largest drop of validation F1 macro from fp32 a form may have (default: 0.01)")
    f.add_argument("--pruned", default=None, metavar="PATH",
                   help="the pruned student to include (default: student_pruned.pth beside --checkpoint)")
    compiled = f.add_mutually_exclusive_group()
    compiled.add_argument("--quant_compile", dest="quant_compile", action="store_true",
                          help="time the torch int8 form compiled with inductor (freezing) at the "
                               "deployment shape (the default)")
    compiled.add_argument("--no_quant_compile", dest="quant_compile", action="store_false",
                          help="time it uncompiled (marked so in the table; slower than fp32)")
    p.set_defaults(quant_compile=True)
    p.set_defaults(func=run_export)


def _default_size_from_checkpoint(p: argparse.ArgumentParser) -> None:
    """--img_size defaults to the size the checkpoint was trained at, not 224."""
    for action in p._actions:
        if action.dest == "img_size":
            action.default = None
            action.help = ("image size in pixels, a multiple of 32 (default: the size recorded in "
                           "the checkpoint)")


def run_export(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from firekd.recipes.export import export_checkpoint

    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent
    if args.fastest:
        return run_fastest(args, checkpoint, out)
    results = export_checkpoint(checkpoint, data_config(args, require_ir=False), out,
                                batch_size=args.batch_size, calibration_batches=args.calibration_batches,
                                latency_runs=args.latency_runs, latency_threads=args.latency_threads,
                                seed=args.seed)
    print(tabulate(_rows(results), headers=["model", "f1_macro", "Δ f1_macro", "size (MB)",
                                            "latency b1 (ms)", "latency b32 (ms)"],
                   tablefmt="github", disable_numparse=True))
    print(f"\nwritten to {out}: {checkpoint.stem}.onnx, {checkpoint.stem}_int8.onnx, "
          f"{checkpoint.stem}_onnx_evaluation.json")
    return 0


def _rows(results: dict) -> list[list[str]]:
    base = results["student"]["f1_macro"]
    rows = []
    for name, m in results.items():
        if name == "run":
            continue
        latency = [f"{m[k]:.2f}" if k in m else "-" for k in ("latency_ms_b1", "latency_ms_b32")]
        rows.append([name, f"{m['f1_macro']:.4f}", f"{m['f1_macro'] - base:+.4f}", f"{m['size_mb']:.2f}",
                     *latency])
    return rows


def run_fastest(args: argparse.Namespace, checkpoint: Path, out: Path) -> int:
    from tabulate import tabulate

    from firekd.recipes.fastest import DeploySettings, export_fastest

    settings = DeploySettings(size=args.deploy_size, batch=args.deploy_batch, threads=args.latency_threads,
                              tolerance=args.f1_tolerance, runs=max(1, args.latency_runs),
                              compile_int8=args.quant_compile, pruned=args.pruned)
    record = export_fastest(checkpoint, data_config(args, require_ir=False), out, settings,
                            batch_size=args.batch_size, calibration_batches=args.calibration_batches,
                            seed=args.seed)
    s = record["settings"]
    rows = [[name, m["runtime"], f"{m['latency_ms']:.3f}", f"{m['frames_per_s']:.0f}",
             f"{m['val_f1_macro']:.4f}", f"{m['test_f1_macro']:.4f}", m["verdict"]]
            for name, m in sorted(record["forms"].items(), key=lambda kv: kv[1]["latency_ms"])]
    print(f"forms of {checkpoint} at {s['size']} px, batch {s['batch']}, {s['threads']} thread(s), "
          f"F1 tolerance {s['tolerance']}:\n")
    print(tabulate(rows, headers=["form", "runtime", "ms / batch", "frames/s", "val F1 macro",
                                  "test F1 macro", "verdict"], tablefmt="github", disable_numparse=True))
    print(f"\nfastest: {record['fastest']}, written as {record['written']} with its model card; numbers "
          f"in {out / (checkpoint.stem + '_fastest.json')}")
    return 0
