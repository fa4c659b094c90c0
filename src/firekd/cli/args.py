"""Flags generated from the configuration records (`firekd.config`), and back.

Each field of a stage record declares its flag, default, type and help (`firekd.options.option`);
``add_stage_args`` turns a record class into flags and ``stage_from_args`` turns the parsed flags
into the record, so a flag and its default are declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from firekd.config import CompressConfig, DataConfig, TeacherConfig, flag_name
from firekd.data.csv import ColumnNames
from firekd.options import (  # noqa: F401  (the flag value types, for every command module)
    image_size,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    unit_fraction,
)

# Help sections in the order --help shows them; descriptions where a section needs one.
GROUPS = ("data", "split", "output and seeds", "training", "distillation", "models", "compression",
          "hardware", "figures", "parallel jobs (see README: Scaling)")
GROUP_HELP = {"compression": (
    "Per seed, after the student: student_quantized.pth, the int8 student (torchao PT2E static "
    "quantization, X86InductorQuantizer), a torch.export archive (zip: graph JSON, int8 weights, "
    "scales; load with firekd.compress.artifacts.load_quantized or torch.export.load after "
    "'import torchao.quantization.pt2e'), evaluated on the CPU; and student_pruned.pth, the pruned "
    "and fine-tuned student, a plain checkpoint (architecture config + the pruned layers' sizes + "
    "weights; loads with weights_only=True via firekd.checkpoints.load_model). Every model gets "
    "params, gflops, size_mb, latency_ms_b1/b32 (CPU, median) and cpu_threads in "
    "final_evaluation.json (throughput_cuda on a GPU).")}


class Parser(argparse.ArgumentParser):
    """Bad flags end in one line naming the flag, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def group(p: argparse.ArgumentParser, title: str):
    """The parser's argument group ``title``, created once (sections appear in GROUPS order when
    ``ordered_groups`` made them first)."""
    groups = p.__dict__.setdefault("_firekd_groups", {})
    if title not in groups:
        groups[title] = p.add_argument_group(title, description=GROUP_HELP.get(title))
    return groups[title]


def ordered_groups(p: argparse.ArgumentParser) -> None:
    for title in GROUPS:
        group(p, title)


def add_stage_args(p: argparse.ArgumentParser, cls: type, *, ablation: bool = False,
                   skip: tuple[str, ...] = (), **overrides: dict) -> None:
    """One flag per field of ``cls`` that has one (``skip``: fields added elsewhere; ``overrides``:
    argparse settings, help included, by field name)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip or (meta.get("ablation_only") and not ablation):
            continue
        add_field(group(p, meta.get("group") or "training"), f, **overrides.get(f.name, {}))


def add_field(g, f: dataclasses.Field, **overrides: Any) -> None:
    """The flag(s) of a field in parser or group ``g``."""
    if f.metadata.get("switch"):
        _add_switch(g, f)
        return
    kwargs = {**f.metadata.get("argparse", {}), "help": f.metadata["help"], **overrides}
    if f.default is not dataclasses.MISSING and not kwargs.get("required"):
        # a repeatable flag appends to a copy of its default, which must be a list
        kwargs["default"] = list(f.default) if kwargs.get("action") == "append" else f.default
    kwargs["help"] = _with_default(kwargs["help"], kwargs.get("default"))
    g.add_argument(f.metadata.get("flag") or f"--{f.name}", dest=flag_name(f), **kwargs)


def field_of(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _add_switch(g, f: dataclasses.Field) -> None:
    """A boolean: its on flags store True, its off flags False; the last one given wins (so a flag
    appended to a command, e.g. through the Makefile's DEMO_FLAGS, overrides an earlier one)."""
    on, off = f.metadata["switch"]
    dest, text = flag_name(f), f.metadata["help"]
    if on:
        g.add_argument(*on, dest=dest, action="store_true",
                       help=text + (" (the default)" if f.default else ""))
    if off:
        g.add_argument(*off, dest=dest, action="store_false",
                       help=f"turn {on[0]} off; the last of the two given wins" if on else text)
    g.set_defaults(**{dest: f.default})


def _with_default(text: str, default: Any) -> str:
    if default is None or default in ({}, [], ()) or "default:" in text:
        return text
    shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
    return f"{text} (default: {shown})"


def stage_from_args(cls: type, args: argparse.Namespace, **values: Any):
    """The record of ``cls`` from parsed flags; ``values`` set fields that have no flag."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = flag_name(f)
        if f.name in values or not hasattr(args, name):
            continue
        value = getattr(args, name)
        convert = f.metadata.get("convert")
        if convert is not None:
            value = convert(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs, **values)


# --- the data flags several commands share -------------------------------------------------

def add_column_args(g) -> None:
    """--base_path, the column-name flags and --skip_missing (every command reading a CSV)."""
    add_field(g, field_of(DataConfig, "base_path"))
    add_field(g, field_of(DataConfig, "skip_missing"))
    g.add_argument("--rgb_col", help="name of the RGB path column (default: found by alias)")
    g.add_argument("--ir_col", help="name of the IR path column (default: found by alias)")
    g.add_argument("--fire_col", help="name of the fire label column (default: fire)")
    g.add_argument("--smoke_col", help="name of the smoke label column (default: smoke)")
    g.add_argument("--split_col", help="name of a train/val/test column (default: split)")
    g.add_argument("--group_col", help="name of a group column, e.g. video id (default: group)")


def column_names(args: argparse.Namespace) -> ColumnNames:
    return ColumnNames(args.rgb_col, args.ir_col, args.fire_col, args.smoke_col, args.split_col,
                       args.group_col)


def add_data_args(p: argparse.ArgumentParser, *, csv_required: bool = True) -> None:
    add_stage_args(p, DataConfig, skip=("base_path", "skip_missing"), csv={"required": csv_required})
    add_column_args(group(p, "data"))


def data_config(args: argparse.Namespace, *, require_ir: bool = True) -> DataConfig:
    return stage_from_args(DataConfig, args, columns=column_names(args), require_ir=require_ir)


def add_latency_args(g, *, threads_help: str) -> None:
    add_field(g, field_of(CompressConfig, "latency_runs"))
    add_field(g, field_of(CompressConfig, "latency_threads"), help=threads_help)


def add_teacher_modalities_arg(g) -> None:
    """One teacher input (the data commands: which files the data needs)."""
    field = field_of(TeacherConfig, "modalities")
    add_field(g, field, nargs=None, help="teacher input: rgb+ir, or rgb for an RGB-only teacher (rgb "
                                          "also accepts a CSV without IR)")
