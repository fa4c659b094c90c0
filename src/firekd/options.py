"""Configuration fields that declare their own command-line flag, and the value parsers flags use.

``option(default, help=...)`` makes a dataclass field whose metadata says how the CLI spells it and
whether results depend on it (its ``kind``):

- ``KEY``: results depend on it; it enters the reuse key of the stage that owns it.
- ``EXEC``: how or where the work runs (folders, workers, device, logging); in no key.
- ``DATA``: where the data is and how it is read or split; keyed by what it selects (the images'
  content, the labels and the split drawn: the data fingerprint), never by its spelling.
- ``FIGURE``: how figures are drawn; keys the figures of a seed, never a trained model.

`firekd.cli.args` turns the fields of a config class into flags and back, so a flag and its
default are declared once, here, next to the field.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

KEY = "key"
EXEC = "exec"
DATA = "data"
FIGURE = "figure"


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None, kind: str = KEY,
           group: str | None = None, switch: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
           kd_only: bool = False, content: bool = False, ablation_only: bool = False,
           cli: bool = True, convert: Any = None, **argparse_kw: Any) -> Any:
    """A dataclass field with its flag.

    flag: the flag's name (default ``--{field name}``); switch: (on flags, off flags) of a boolean;
    kd_only: a student setting that only distillation reads (the ``bce`` control's key leaves it
    out); content: a file path whose content (not its name) is what results depend on;
    cli: False for fields set by the program, not by a flag; convert: applied to the parsed flag
    value; argparse_kw: type, choices, nargs...
    """
    metadata = {"help": help, "flag": flag, "kind": kind, "group": group, "switch": switch,
                "kd_only": kd_only, "content": content, "ablation_only": ablation_only, "cli": cli,
                "convert": convert, "argparse": argparse_kw}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def kind_of(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", KEY)


# --- value parsers: a bad value ends in one line naming the flag (argparse adds the flag) -------

def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def open_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def open_unit_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def unit_fraction(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def image_size(text: str) -> int:
    value = positive_int(text)
    if value % 32 or value < 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (>= 32), got {text}")
    return value


def gpu_list(text: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1,2, got '{text}'") from None
    if not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"expected distinct GPU ids >= 0, got '{text}'")
    return gpus


def _number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got '{text}'") from None
