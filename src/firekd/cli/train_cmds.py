"""Training commands: train (one teacher x one variant), ablation (the grid) and the spec's scripts.

Every training flag comes from the stage records in `firekd.config`; this module only adds the
grid's axes (teachers, variants, seeds), which differ between the commands.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from firekd.cli.args import (
    Parser,
    add_data_args,
    add_stage_args,
    data_config,
    group,
    ordered_groups,
    stage_from_args,
)
from firekd.config import CompressConfig, ExecConfig, OptimConfig, RunConfig, StudentConfig, TeacherConfig
from firekd.kd.variants import SPEC_VARIANTS, VARIANTS, check_loss_weights, check_variant

SPEC_TEACHERS = ("resnet152", "efficientnet_b7", "swin_tiny", "vit_b_16")
DEFAULT_SEEDS = (42, 123, 456, 789, 1024)
STAGE_CLASSES = (OptimConfig, TeacherConfig, StudentConfig, CompressConfig, ExecConfig)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one teacher and distil one loss variant over seeds",
                       description="Train (or reuse) the RGB+IR teacher and distil the RGB-only "
                       "student with one loss variant, for every seed; writes the spec's output "
                       "tree and aggregated_results.json.")
    p.add_argument("--teacher", default="resnet152",
                   help="teacher architecture (see `firekd models`; default: resnet152)")
    p.add_argument("--variant", default="kl_bce", type=check_variant_arg,
                   help=f"loss variant: {', '.join(VARIANTS)} (bce = student alone, the control; self_kd = "
                        "kl_bce from the seed's bce control instead of a teacher; default: kl_bce)")
    add_training_args(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("ablation", help="run the grid: teachers x loss variants x seeds",
                       description="Run every teacher x loss variant x seed. Each teacher is "
                       "trained once per seed and reused by every variant (and by later runs with "
                       "the same data and settings); the bce control is trained once per seed and "
                       "shown under every teacher. Prints the comparison table at the end.")
    p.add_argument("--teachers", nargs="+", default=list(SPEC_TEACHERS),
                   help=f"teacher architectures (default: {' '.join(SPEC_TEACHERS)})")
    p.add_argument("--variants", nargs="+", default=list(SPEC_VARIANTS), type=check_variant_arg,
                   help=f"loss variants: {', '.join(VARIANTS)} (self_kd: the no-teacher semi-supervised "
                        f"baseline; default: the spec's {' '.join(SPEC_VARIANTS)})")
    add_training_args(p, ablation=True)
    p.set_defaults(func=run_ablation_cmd)


def spec_parser(script: str, teacher: str, variant: str) -> Parser:
    """The parser of a spec script: `firekd train` with its teacher and variant fixed."""
    p = Parser(prog=Path(script).name, description=(
        f"The original spec's script for teacher {teacher} and loss variant {variant}, both fixed by "
        f"this script ({script}); it runs `firekd train --teacher {teacher} --variant {variant}` "
        "with the flags below (the spec's flags and firekd's own)."))
    add_training_args(p)
    p.set_defaults(func=run_train, teacher=teacher, variant=variant, command="train")
    return p


def check_variant_arg(text: str) -> str:
    try:
        return check_variant(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_training_args(p: argparse.ArgumentParser, *, ablation: bool = False) -> None:
    ordered_groups(p)
    add_data_args(p)
    group(p, "output and seeds").add_argument(
        "--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
        help=f"training seeds, one run each (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    for cls in STAGE_CLASSES:
        add_stage_args(p, cls, ablation=ablation)


def run_config(args: argparse.Namespace, teachers: list[str], variants: list[str]) -> RunConfig:
    from firekd.models import resolve_teacher_name

    given = args.teacher_modalities
    modalities = tuple(dict.fromkeys([given] if isinstance(given, str) else given))
    teacher = stage_from_args(TeacherConfig, args, modalities=modalities[0])
    student = stage_from_args(StudentConfig, args)
    check_loss_weights(variants, student.loss_weights)
    return RunConfig(
        data=data_config(args, require_ir="rgb+ir" in modalities), modalities=modalities,
        optim=stage_from_args(OptimConfig, args), teacher=teacher, student=student,
        compress=stage_from_args(CompressConfig, args), execution=stage_from_args(ExecConfig, args),
        teachers=tuple(dict.fromkeys(resolve_teacher_name(t) for t in teachers)),
        variants=tuple(dict.fromkeys(variants)), seeds=tuple(dict.fromkeys(args.seeds)))


def _run(cfg: RunConfig) -> int:
    from firekd.engine import distributed
    from firekd.recipes.ablation import results_table, run_ablation

    t0 = time.perf_counter()
    results = run_ablation(cfg)
    if distributed.info().is_main:
        print(results_table(results))
        print(f"\nresults in {cfg.execution.output}/metrics ({time.perf_counter() - t0:.0f}s)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    return _run(run_config(args, [args.teacher], [args.variant]))


def run_ablation_cmd(args: argparse.Namespace) -> int:
    return _run(run_config(args, args.teachers, args.variants))
