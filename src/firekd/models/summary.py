"""A table of every registered model: parameters, GFLOPs, embedding size (for `firekd models`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from firekd.metrics.efficiency import gflops, parameter_count
from firekd.models.registry import (
    create_student,
    create_teacher,
    list_students,
    list_teachers,
    resolve_teacher_name,
    student_aliases,
    teacher_aliases,
)
from firekd.models.teachers import SPEC_PARAMS_M

DEFAULT_TIMM_STUDENTS = ("mobilenetv3_small_100",)
SPEC_STUDENT_PARAMS_M = 1.2


@dataclass
class ModelRow:
    kind: str
    name: str
    aliases: str
    inputs: str
    fusion: str
    params_m: float
    gflops: float
    embed_dim: int
    spec_params_m: float | None


def model_rows(img_size: int = 224, ir_channels: int = 1, teachers: Iterable[str] | None = None,
               students: Iterable[str] | None = None) -> list[ModelRow]:
    """Build each model with random weights (one at a time) and measure it on one image."""
    teachers = list_teachers() if teachers is None else [resolve_teacher_name(t) for t in teachers]
    students = [*list_students(), *DEFAULT_TIMM_STUDENTS] if students is None else students
    rows = [_teacher_row(name, img_size, ir_channels) for name in teachers]
    return rows + [_student_row(name, img_size) for name in students]


def _teacher_row(name: str, img_size: int, ir_channels: int) -> ModelRow:
    model = create_teacher(name, img_size=img_size, ir_channels=ir_channels)
    rgb, ir = torch.randn(1, 3, img_size, img_size), torch.randn(1, ir_channels, img_size, img_size)
    return ModelRow("teacher", name, ", ".join(teacher_aliases(name)), f"RGB+IR({ir_channels})",
                    model.fusion_kind, parameter_count(model) / 1e6, gflops(model, rgb, ir),
                    model.embed_dim, SPEC_PARAMS_M.get(name))


def _student_row(name: str, img_size: int) -> ModelRow:
    model = create_student(name)
    aliases = student_aliases(name)
    spec = SPEC_STUDENT_PARAMS_M if aliases is not None else None
    return ModelRow("student" if aliases is not None else "student (timm)", name,
                    ", ".join(aliases or ()), "RGB", "-", parameter_count(model) / 1e6,
                    gflops(model, torch.randn(1, 3, img_size, img_size)), model.embed_dim, spec)
