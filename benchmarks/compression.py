"""Compression benchmark (not a test): latency ratios and F1 changes, all measured in one run.

    python benchmarks/compression.py --work /tmp/bench          # trains a student on synthetic data
    python benchmarks/compression.py --models output/models/<run>/seed_<s> --csv data.csv \\
        --split_file output/metrics/<run>/split.csv              # a seed folder of a trained run

Latency: CPU, --threads threads, median of --runs timed passes (after warm-up) per round, median of
--rounds rounds that visit the models in turn (a busy machine slows whichever model runs when it is
busy), random inputs, batch 1 and 32, at the trained size and at 224 px. Ratios compare the same
runtime: compiled int8 against compiled fp32 (torch.compile, inductor, freezing), eager against
eager; ONNX (onnxruntime) against torch eager. F1: macro-F1 on the test split at per-label
thresholds chosen on validation, change against the fp32 student. Targets (issue 5): int8 at most
0.5x fp32 latency losing at most 0.01 F1; pruned at most 0.7x unpruned losing at most 0.02 F1.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate

from firekd.checkpoints import load_model
from firekd.compress.compile import StaticBatch, compile_for_cpu
from firekd.compress.onnx_export import OnnxStudent, export_onnx, quantize_onnx_int8
from firekd.compress.quantize import quantize_int8
from firekd.config import CompressConfig, DataConfig, ExecConfig, RunConfig, StudentConfig, TeacherConfig
from firekd.data.synthetic import SynthConfig
from firekd.engine.evaluation import evaluate_model
from firekd.engine.runtime import Runtime
from firekd.logs import setup_logging
from firekd.metrics.efficiency import cpu_threads, median_latency_ms
from firekd.recipes.ablation import run_ablation
from firekd.recipes.data import load_data
from firekd.recipes.export import eval_loaders
from firekd.recipes.synth import write_synthetic

BATCHES = (1, 32)
CPU = Runtime(torch.device("cpu"), amp=False, channels_last=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, help="seed folder holding student_best.pth and student_pruned.pth")
    p.add_argument("--csv", help="the run's CSV (with --models)")
    p.add_argument("--split_file", help="the run's split.csv (with --models)")
    p.add_argument("--work", type=Path, default=None, help="folder for the synthetic data and run")
    p.add_argument("--n", type=int, default=2000, help="synthetic pairs (default: 2000)")
    p.add_argument("--size", type=int, default=64, help="synthetic/training image size (default: 64)")
    p.add_argument("--epochs", type=int, default=15, help="student epochs (default: 15)")
    p.add_argument("--variant", default="bce", help="loss variant; KD variants train a resnet18 "
                   "teacher first (default: bce, the student alone: fastest)")
    p.add_argument("--prune_method", default="structured")
    p.add_argument("--prune_sparsity", type=float, default=0.4)
    p.add_argument("--finetune_epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    p.add_argument("--runs", type=int, default=20, help="timed passes per round (default: 20)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="latency image sizes (default: the trained size and 224)")
    return p.parse_args(argv)


def train_student(args: argparse.Namespace, work: Path) -> tuple[Path, str, str]:
    """Synthetic data and one pipeline run (seed 0); returns (seed models folder, csv, split)."""
    write_synthetic(SynthConfig(n=args.n, size=args.size, seed=0), work / "data")
    csv = str(work / "data" / "data.csv")
    cfg = RunConfig(data=DataConfig(csv=csv, img_size=args.size), teachers=("resnet18",),
                    variants=(args.variant,), seeds=(0,), teacher=TeacherConfig(epochs=5, pretrained=False),
                    student=StudentConfig(epochs=args.epochs),
                    compress=CompressConfig(quant_compile=False, prune_method=args.prune_method,
                                            prune_sparsity=args.prune_sparsity,
                                            finetune_epochs=args.finetune_epochs, latency_runs=0),
                    execution=ExecConfig(output=str(work / "run"), num_workers=0))
    run_ablation(cfg)
    name = f"resnet18_{args.variant}"
    return work / "run" / "models" / name / "seed_0", csv, str(work / "run" / "metrics" / name / "split.csv")


def build_models(models_dir: Path, calibration: list[torch.Tensor], sizes: list[int],
                 onnx_dir: Path, threads: int) -> dict[str, dict[int, torch.nn.Module]]:
    """{name: {image size: module}}: fp32 and pruned serve every size; their int8 copies are
    exported with a fixed image size, so there is one per size (calibrated on resized images)."""
    fp32, _ = load_model(models_dir / "student_best.pth", kind="student")
    pruned, _ = load_model(models_dir / "student_pruned.pth", kind="student")
    fp32.eval()
    pruned.eval()

    def resized(size: int) -> list[torch.Tensor]:
        return [F.interpolate(b, size=size, mode="bilinear") for b in calibration]

    return {"fp32": dict.fromkeys(sizes, fp32), "pruned": dict.fromkeys(sizes, pruned),
            "int8": {s: quantize_int8(fp32, resized(s))[0] for s in sizes},
            "pruned+int8": {s: quantize_int8(pruned, resized(s))[0] for s in sizes},
            **onnx_students(fp32, {s: resized(s) for s in sizes}, onnx_dir, threads)}


def onnx_students(model: torch.nn.Module, calibration: dict[int, list[torch.Tensor]], folder: Path,
                  threads: int) -> dict[str, dict[int, OnnxStudent]]:
    """ONNX fp32 and int8 students per image size (the exported spatial size is fixed)."""
    out: dict[str, dict[int, OnnxStudent]] = {"onnx fp32": {}, "onnx int8": {}}
    for size, batches in calibration.items():
        fp32_path, int8_path = folder / f"student_{size}.onnx", folder / f"student_{size}_int8.onnx"
        export_onnx(model, fp32_path, batches[0])
        quantize_onnx_int8(fp32_path, int8_path, (b.numpy() for b in batches))
        out["onnx fp32"][size] = OnnxStudent(fp32_path, threads=threads)
        out["onnx int8"][size] = OnnxStudent(int8_path, threads=threads)
    return out


class BySize:
    """Dispatches an image batch to the model of its size."""

    def __init__(self, models: dict) -> None:
        self.by_size = models

    def eval(self) -> BySize:
        return self

    def __call__(self, x: torch.Tensor):
        return self.by_size[x.shape[-1]](x)


def compile_all(models: dict[str, dict[int, torch.nn.Module]], threads: int) -> dict:
    """{"<name> compiled": compiled for every (batch, size)}; prints the compile cost."""
    compiled = {}
    with cpu_threads(threads):
        for name, by_size in models.items():
            done, seconds = {}, 0.0
            for size, module in by_size.items():
                done[size], spent = compile_for_cpu(module, [torch.randn(b, 3, size, size) for b in BATCHES])
                seconds += spent
            compiled[f"{name} compiled"] = BySize(done)
            shapes = len(by_size) * len(BATCHES)
            print(f"compile {name}: {seconds:.1f}s for {shapes} shapes ({seconds / shapes:.1f}s each)",
                  flush=True)
    return compiled


def f1_scores(runners: dict, val, test) -> dict[str, float]:
    """Macro-F1 on test of each runner (compiled ones fed fixed batches of 32 at the eval size)."""
    scores = {}
    for name, runner in runners.items():
        model = StaticBatch(runner, 32) if name.endswith("compiled") else runner
        scores[name] = evaluate_model(model, val, test, CPU).metrics["f1_macro"]
    return scores


def latencies(runners: dict, sizes: list[int], runs: int, rounds: int, threads: int) -> dict:
    """{(name, size, batch): median over rounds of the per-round median latency in ms}."""
    samples: dict[tuple, list[float]] = {}
    inputs = {(s, b): torch.randn(b, 3, s, s) for s in sizes for b in BATCHES}
    with cpu_threads(threads):
        for _ in range(rounds):
            for (name, runner), (key, x) in itertools.product(runners.items(), inputs.items()):
                samples.setdefault((name, *key), []).append(
                    median_latency_ms(lambda r=runner, x=x: r(x), runs=runs))
    return {key: statistics.median(values) for key, values in samples.items()}


COMPARISONS = (  # (label, model, baseline, latency target, F1 loss allowed)
    ("int8 / fp32 (compiled)", "int8 compiled", "fp32 compiled", 0.5, 0.01),
    ("pruned / unpruned (eager)", "pruned", "fp32", 0.7, 0.02),
    ("pruned / unpruned (compiled)", "pruned compiled", "fp32 compiled", 0.7, 0.02),
    ("pruned+int8 / fp32 (compiled)", "pruned+int8 compiled", "fp32 compiled", None, None),
    ("ONNX fp32 / torch fp32 (eager)", "onnx fp32", "fp32", None, None),
    ("ONNX int8 / torch fp32 (eager)", "onnx int8", "fp32", None, None),
    ("ONNX int8 / ONNX fp32", "onnx int8", "onnx fp32", 0.5, 0.01),
)


def report(lat: dict, f1: dict, sizes: list[int]) -> None:
    names = list(dict.fromkeys(key[0] for key in lat))
    shapes = [(s, b) for s in sizes for b in BATCHES]
    print("\nlatency (ms), F1 macro on test")
    print(tabulate([[n, f"{f1[n]:.4f}", *(f"{lat[n, s, b]:.2f}" for s, b in shapes)] for n in names],
                   headers=["model", "F1", *(f"{s}px b{b}" for s, b in shapes)],
                   tablefmt="github", disable_numparse=True))
    rows = []
    for label, model, base, target, f1_loss in COMPARISONS:
        delta = f1[model] - f1[base]
        ratios = [lat[model, s, b] / lat[base, s, b] for s in sizes for b in BATCHES]
        met = "-" if target is None else ("yes" if max(ratios) <= target and -delta <= f1_loss else
                                          "no" if min(ratios) > target or -delta > f1_loss else "partly")
        rows.append([label, *(f"{r:.2f}x" for r in ratios), f"{delta:+.4f}",
                     "-" if target is None else f"<= {target}x, >= -{f1_loss}", met])
    print("\nratios (model / baseline)")
    print(tabulate(rows, headers=["comparison", *(f"{s}px b{b}" for s in sizes for b in BATCHES),
                                  "Δ F1", "target", "met"], tablefmt="github", disable_numparse=True))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    if hasattr(torch._dynamo.config, "recompile_limit"):  # fp32 and pruned share one forward
        torch._dynamo.config.recompile_limit = 64
    work = args.work or Path(tempfile.mkdtemp(prefix="firekd_bench_"))
    if args.models:
        models_dir, csv, split_file = args.models, args.csv, args.split_file
    else:
        models_dir, csv, split_file = train_student(args, work)
    bundle = load_data(DataConfig(csv=csv, img_size=args.size, split_file=split_file))
    calib_loader, val, test = eval_loaders(bundle, 64, seed=0)
    calibration = [rgb for rgb, *_ in itertools.islice(calib_loader, 32)]
    sizes = args.sizes or sorted({args.size, 224})
    models = build_models(models_dir, calibration, sizes, work, args.threads)
    eager = ("fp32", "pruned", "onnx fp32", "onnx int8")
    runners = {**{name: BySize(models[name]) for name in eager},
               **compile_all({k: v for k, v in models.items() if not k.startswith("onnx")}, args.threads)}
    f1 = f1_scores(runners, val, test)
    lat = latencies(runners, sizes, args.runs, args.rounds, args.threads)
    print(f"\n{torch.get_num_threads()} torch threads available, measured with {args.threads}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; models from {models_dir}")
    report(lat, f1, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
