"""One registry for teachers and students, timm style: decorated builders, create_* factories.

Names are matched case-insensitively; the spec's folder spellings (`resnet-152`, ...) are aliases.
`create_student` also accepts any timm model name, wrapped to the firekd student interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from firekd.errors import ModelError

Builder = Callable[..., nn.Module]


class _Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.builders: dict[str, Builder] = {}
        self.aliases: dict[str, str] = {}  # alias -> canonical name

    def register(self, name: str, aliases: Iterable[str] = ()) -> Callable[[Builder], Builder]:
        def decorator(builder: Builder) -> Builder:
            for key in (name, *aliases):
                if key in self.builders or key in self.aliases:
                    raise ValueError(f"{self.kind} name '{key}' is already registered")
            self.builders[name] = builder
            self.aliases.update({alias: name for alias in aliases})
            return builder
        return decorator

    def resolve(self, name: str) -> str | None:
        key = name.strip().lower()
        return key if key in self.builders else self.aliases.get(key)

    def known(self) -> str:
        """'resnet152 (resnet-152), swin_tiny (swin-tiny), ...' for error messages."""
        by_name: dict[str, list[str]] = {n: [] for n in self.builders}
        for alias, name in self.aliases.items():
            by_name[name].append(alias)
        return ", ".join(f"{n} ({', '.join(a)})" if a else n for n, a in by_name.items())


_TEACHERS = _Registry("teacher")
_STUDENTS = _Registry("student")


def register_teacher(name: str, aliases: Iterable[str] = ()) -> Callable[[Builder], Builder]:
    """Decorator: `@register_teacher("resnet152", aliases=("resnet-152",))` on a builder."""
    return _TEACHERS.register(name, aliases)


def register_student(name: str, aliases: Iterable[str] = ()) -> Callable[[Builder], Builder]:
    """Decorator for student builders, like `register_teacher`."""
    return _STUDENTS.register(name, aliases)


def list_teachers() -> list[str]:
    """Canonical teacher names in registration order (the spec's four first)."""
    return list(_TEACHERS.builders)


def list_students() -> list[str]:
    """Canonical names of firekd's own students (any timm model name works too)."""
    return list(_STUDENTS.builders)


def teacher_aliases(name: str) -> list[str]:
    """Aliases of a teacher (ModelError for unknown names)."""
    canonical = resolve_teacher_name(name)
    return [alias for alias, target in _TEACHERS.aliases.items() if target == canonical]


def student_aliases(name: str) -> list[str] | None:
    """Aliases of a registered student; None for other names (timm models)."""
    canonical = _STUDENTS.resolve(name)
    if canonical is None:
        return None
    return [alias for alias, target in _STUDENTS.aliases.items() if target == canonical]


def resolve_teacher_name(name: str) -> str:
    """Canonical name of a teacher or alias; ModelError listing the known names otherwise."""
    canonical = _TEACHERS.resolve(name)
    if canonical is None:
        raise ModelError(f"unknown teacher '{name}'; known teachers: {_TEACHERS.known()}")
    return canonical


RGB_ONLY_SUFFIX = "-rgb"  # a study with RGB+IR and RGB-only teachers names the RGB-only ones so


def teacher_label(name: str, modalities: str) -> str:
    """The name a teacher's runs and store go by in a study of several teacher inputs
    (--teacher_modalities rgb+ir rgb): the RGB+IR teacher keeps its name (the spec's tree), the
    RGB-only one gets ``-rgb`` (``resnet152-rgb``)."""
    return name if modalities == "rgb+ir" else f"{name}{RGB_ONLY_SUFFIX}"


def teacher_arch(label: str) -> str:
    """The architecture behind a teacher label (``resnet152-rgb`` -> ``resnet152``)."""
    base = label.removesuffix(RGB_ONLY_SUFFIX)
    return base if base != label and _TEACHERS.resolve(base) is not None else label


def create_teacher(name: str, **kwargs) -> nn.Module:
    """Build a teacher by name, alias or label (`teacher_label`); kwargs go to its builder (see
    `teachers.Teacher`; the label's modality is in ``modalities``)."""
    return _TEACHERS.builders[resolve_teacher_name(teacher_arch(name))](**kwargs)


_STUDENT_FALLBACK: list[Callable[..., nn.Module | None]] = []


def register_student_fallback(build: Callable[..., nn.Module | None]) -> None:
    """``build(name, **kwargs)`` makes a student of a name no builder is registered for (the timm
    wrapper), or returns None when it does not know the name either."""
    _STUDENT_FALLBACK[:] = [build]


def create_student(name: str = "firekd_student", **kwargs) -> nn.Module:
    """Build a firekd student by name, or wrap any timm model name as a student."""
    canonical = _STUDENTS.resolve(name)
    if canonical is not None:
        return _STUDENTS.builders[canonical](**kwargs)
    for build in _STUDENT_FALLBACK:
        if (model := build(name, **kwargs)) is not None:
            return model
    raise ModelError(f"unknown student '{name}'; known students: {_STUDENTS.known()}, "
                     "or any timm model name (e.g. mobilenetv3_small_100)")
