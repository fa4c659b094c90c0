"""Training commands: train (one teacher x one variant) and ablation (the grid)."""

from __future__ import annotations

import argparse
import time

from firekd.cli.args import (
    add_data_args,
    add_latency_args,
    add_teacher_modalities_arg,
    data_config,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
)
from firekd.compress import PRUNE_METHODS
from firekd.config import TrainConfig
from firekd.engine import distributed
from firekd.kd.variants import VARIANTS, check_loss_weights, check_variant, parse_loss_weights

SPEC_TEACHERS = ("resnet152", "efficientnet_b7", "swin_tiny", "vit_b_16")


def register(sub) -> None:
    p = sub.add_parser("train", help="train one teacher and distil one loss variant over seeds",
                       description="Train (or reuse) the RGB+IR teacher and distil the RGB-only "
                       "student with one loss variant, for every seed; writes the spec's output "
                       "tree and aggregated_results.json.")
    p.add_argument("--teacher", default="resnet152",
                   help="teacher architecture (see `firekd models`; default: resnet152)")
    p.add_argument("--variant", default="kl_bce", type=check_variant_arg,
                   help=f"loss variant: {', '.join(VARIANTS)} (bce = student alone, the control; "
                        "default: kl_bce)")
    add_training_args(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("ablation", help="run the grid: teachers x loss variants x seeds",
                       description="Run every teacher x loss variant x seed. Each teacher is "
                       "trained once per seed and reused by every variant (and by later runs with "
                       "the same data and settings). Prints the comparison table at the end.")
    p.add_argument("--teachers", nargs="+", default=list(SPEC_TEACHERS),
                   help=f"teacher architectures (default: {' '.join(SPEC_TEACHERS)})")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), type=check_variant_arg,
                   help=f"loss variants (default: all: {' '.join(VARIANTS)})")
    add_training_args(p)
    g = p.add_argument_group("parallel jobs (see README: Scaling)")
    g.add_argument("--jobs", type=positive_int, default=1,
                   help="run grid jobs in N parallel processes on this machine (CPU); teacher "
                        "jobs first, then each seed's variants (default: 1 = in this process)")
    g.add_argument("--gpus", type=gpu_list, default=(),
                   help="comma-separated GPU ids, e.g. 0,1,2,3: one grid job at a time per GPU")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes, or ray: each job a Ray task on the cluster that "
                        "ray.init(address=--ray_address) finds; --output must be on a filesystem "
                        "every node sees (default: local)")
    g.add_argument("--ray_address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray instance)")
    g.add_argument("--ray_gpus_per_job", type=non_negative_float, default=1.0,
                   help="GPUs each Ray job asks for; 0 for CPU-only clusters (default: 1)")
    p.set_defaults(func=run_ablation_cmd)


def gpu_list(text: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1,2, got '{text}'") from None
    if not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"expected distinct GPU ids >= 0, got '{text}'")
    return gpus


def check_variant_arg(text: str) -> str:
    try:
        return check_variant(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_training_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    g = p.add_argument_group("output and seeds")
    g.add_argument("--output", default="output", help="output folder (default: ./output)")
    g.add_argument("--seeds", type=int, nargs="+", default=[42, 123, 456, 789, 1024],
                   help="training seeds, one run each (default: 42 123 456 789 1024)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete this run's earlier results and start over (the shared teacher "
                        "is kept; see --retrain_teacher)")
    g.add_argument("--retrain_teacher", action="store_true",
                   help="train the teacher again even if one with the same settings exists")
    g.add_argument("--teacher_only", action="store_true",
                   help="train (or find) the teachers for every seed, then stop (students later "
                        "reuse them)")
    g.add_argument("--no_teacher_reuse", action="store_true",
                   help="train a separate teacher for every loss variant (slow; the naive "
                        "baseline the reuse benchmark compares against)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs_teacher", type=positive_int, default=50,
                   help="maximum teacher epochs (default: 50)")
    g.add_argument("--epochs_student", type=positive_int, default=30,
                   help="maximum student epochs (default: 30)")
    g.add_argument("--batch_size", type=positive_int, default=64, help="batch size (default: 64)")
    g.add_argument("--num_workers", type=non_negative_int, default=4,
                   help="data loader worker processes, capped at the CPU count (default: 4)")
    g.add_argument("--lr_teacher", type=positive_float, default=1e-4,
                   help="teacher peak learning rate (default: 1e-4)")
    g.add_argument("--lr_student", type=positive_float, default=1e-3,
                   help="student peak learning rate (default: 1e-3)")
    g.add_argument("--weight_decay", type=float, default=1e-4,
                   help="AdamW weight decay (default: 1e-4). LR schedule: linear warm-up over the "
                        "first 10%% of steps, then cosine decay to 0 at the maximum epoch")
    g.add_argument("--patience_teacher", type=positive_int, default=10,
                   help="teacher early-stopping patience in epochs on validation macro-F1 (default: 10)")
    g.add_argument("--patience_student", type=positive_int, default=5,
                   help="student early-stopping patience in epochs (default: 5)")
    g.add_argument("--pos_weight", choices=("none", "auto"), default="none",
                   help="BCE positive-class weight: auto = negatives/positives per label on the "
                        "train split (default: none)")
    g = p.add_argument_group("distillation")
    g.add_argument("--kd_temperature", type=positive_float, default=4.0,
                   help="distillation temperature T of the per-label binary KL (default: 4.0)")
    g.add_argument("--loss_weights", nargs="+", metavar="TERM=W", default=None,
                   help="override loss weights, e.g. kl=0.6 bce=0.4 (terms: kl, l2, contrastive, "
                        "bce; default: the spec's weights per variant)")
    g.add_argument("--student", default="firekd_student",
                   help="student: firekd_student (~1.2M params) or any timm model name, e.g. "
                        "mobilenetv3_small_100 (default: firekd_student)")
    g = p.add_argument_group("models")
    add_teacher_modalities_arg(g)
    g.add_argument("--no_pretrained", action="store_true",
                   help="initialise teachers randomly instead of from ImageNet weights")
    g.add_argument("--teacher_weights", default=None, metavar="PATH",
                   help="local timm-compatible ImageNet weights file for the teacher backbone")
    add_compression_args(p)
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast and channels_last on CUDA (default: on; no effect on CPU)")
    g.add_argument("--sync_bn", action="store_true",
                   help="under torchrun on CUDA: SyncBatchNorm across the processes")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile teacher and student for training (worth it on GPU for "
                        "long runs; the first epoch pays the compile time)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log every epoch to TensorBoard (in the models folder)")
    g = p.add_argument_group("figures")
    g.add_argument("--max_embed_points", type=non_negative_int, default=2000,
                   help="test samples (a seeded random subset) shown in each t-SNE/UMAP figure; "
                        "0 skips those figures (default: 2000)")


COMPRESSION_HELP = (
    "Per seed, after the student: student_quantized.pth, the int8 student (torchao PT2E static "
    "quantization, X86InductorQuantizer), a torch.export archive (zip: graph JSON, int8 weights, "
    "scales; load with firekd.compress.artifacts.load_quantized or torch.export.load after "
    "'import torchao.quantization.pt2e'), evaluated on the CPU; and student_pruned.pth, the pruned "
    "and fine-tuned student, a plain checkpoint (architecture config + the pruned layers' sizes + "
    "weights; loads with weights_only=True via firekd.checkpoints.load_model). Every model gets "
    "params, gflops, size_mb, latency_ms_b1/b32 (CPU, median) and cpu_threads in "
    "final_evaluation.json (throughput_cuda on a GPU).")


def add_compression_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compression", description=COMPRESSION_HELP)
    switch = g.add_mutually_exclusive_group()
    switch.add_argument("--compress", dest="compress", action="store_true", default=True,
                        help="quantize and prune the student of every seed (the default)")
    switch.add_argument("--no_compress", dest="compress", action="store_false",
                        help="skip quantization and pruning (teacher and student only)")
    g.add_argument("--prune_method", choices=PRUNE_METHODS, default="structured",
                   help="structured: remove whole channels (Torch-Pruning, L2 magnitude, output "
                        "layer kept), a smaller dense model; unstructured: zero single weights "
                        "(global L1 magnitude), same size and speed on dense kernels "
                        "(default: structured)")
    g.add_argument("--prune_sparsity", type=open_fraction, default=0.4,
                   help="fraction of the student's parameters removed, in (0, 1): structured "
                        "removes channels until the parameter count has dropped by at least this "
                        "fraction; unstructured zeroes exactly this fraction of the conv and "
                        "linear weights. The fraction achieved is reported as prune_fraction "
                        "(default: 0.4)")
    g.add_argument("--finetune_epochs", type=positive_int, default=10,
                   help="maximum fine-tuning epochs after pruning, with the same loss variant and "
                        "teacher, early stopping (--patience_student) and the student's schedule "
                        "and peak LR (--lr_student) (default: 10)")
    g.add_argument("--calibration_batches", type=positive_int, default=32,
                   help="training batches (of --batch_size, no augmentation) that set the int8 "
                        "activation ranges; fewer when the train split is smaller (default: 32)")
    switch = g.add_mutually_exclusive_group()
    switch.add_argument("--quant_compile", dest="quant_compile", action="store_true", default=True,
                        help="run the int8 student through torch.compile (inductor, freezing) for "
                             "its evaluation and latency, compiled for batch 32 and 1: about 10-40 s "
                             "per seed on 2 cores, less on a rerun (inductor's cache). Falls back to "
                             "uncompiled, with a warning, where compiling is impossible (default)")
    switch.add_argument("--no_quant_compile", dest="quant_compile", action="store_false",
                        help="evaluate the int8 student uncompiled: nearly the same predictions, "
                             "no compile cost, but slower than fp32, so its latency means little")
    g.add_argument("--onnx", action="store_true",
                   help="also export each seed's student as ONNX (student_best.onnx) and as "
                        "onnxruntime static int8 QDQ (student_best_int8.onnx), evaluated as "
                        "student_onnx and student_onnx_int8; with --compress (see also firekd export)")
    add_latency_args(g, threads_help="CPU threads while measuring latency, recorded as cpu_threads "
                                     "(default: 1, reproducible on a shared machine)")


def train_config(args: argparse.Namespace, teachers: list[str], variants: list[str]) -> TrainConfig:
    from firekd.models import resolve_teacher_name

    weights = parse_loss_weights(args.loss_weights)
    check_loss_weights(variants, weights)
    return TrainConfig(
        data=data_config(args, require_ir=args.teacher_modalities == "rgb+ir"),
        output=args.output,
        teachers=tuple(dict.fromkeys(resolve_teacher_name(t) for t in teachers)),
        variants=tuple(dict.fromkeys(variants)),
        seeds=tuple(dict.fromkeys(args.seeds)),
        epochs_teacher=args.epochs_teacher, epochs_student=args.epochs_student,
        batch_size=args.batch_size, num_workers=args.num_workers,
        lr_teacher=args.lr_teacher, lr_student=args.lr_student, weight_decay=args.weight_decay,
        kd_temperature=args.kd_temperature, patience_teacher=args.patience_teacher,
        patience_student=args.patience_student, prune_sparsity=args.prune_sparsity,
        finetune_epochs=args.finetune_epochs, compress=args.compress, prune_method=args.prune_method,
        calibration_batches=args.calibration_batches, quant_compile=args.quant_compile,
        latency_runs=args.latency_runs, latency_threads=args.latency_threads, onnx=args.onnx,
        loss_weights=weights,
        student=args.student,
        teacher_modalities=args.teacher_modalities, pretrained=not args.no_pretrained,
        teacher_weights=args.teacher_weights, pos_weight=args.pos_weight, device=args.device,
        amp=args.amp, retrain_teacher=args.retrain_teacher, overwrite=args.overwrite,
        tensorboard=args.tensorboard, max_embed_points=args.max_embed_points,
        teacher_reuse=not args.no_teacher_reuse, compile=args.compile,
        teacher_only=args.teacher_only, sync_bn=args.sync_bn, jobs=getattr(args, "jobs", 1),
        gpus=getattr(args, "gpus", ()), executor=getattr(args, "executor", "local"),
        ray_address=getattr(args, "ray_address", None),
        ray_gpus_per_job=getattr(args, "ray_gpus_per_job", 1.0),
    )


def _run(cfg: TrainConfig) -> int:
    from firekd.recipes.ablation import results_table, run_ablation

    t0 = time.perf_counter()
    results = run_ablation(cfg)
    if distributed.info().is_main:
        print(results_table(results))
        print(f"\nresults in {cfg.output}/metrics ({time.perf_counter() - t0:.0f}s)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    return _run(train_config(args, [args.teacher], [args.variant]))


def run_ablation_cmd(args: argparse.Namespace) -> int:
    return _run(train_config(args, args.teachers, args.variants))
