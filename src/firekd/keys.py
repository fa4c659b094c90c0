"""Reuse keys: what a trained teacher, a finished student seed and a run folder depend on.

Keys are derived from the ``KEY`` fields of the stage records (`firekd.config`), never listed by
hand, plus the data fingerprint, the seed and the number of processes (the batch size is per
process). A field added to a stage enters its key unless it is declared ``EXEC``.

    teacher key  = teacher stage + optimisation + data + seed + world size
    student key  = student stage + optimisation + data + seed + world size + variant + teacher key
    seed key     = student key + compression stage           (recorded in final_evaluation.json)
    run key      = the seed key's settings without the seed  (recorded in config.json)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from firekd.config import DataConfig, RunConfig
from firekd.kd.variants import uses_teacher, variant_weights
from firekd.options import KEY, kind_of


def stable_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def plain(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists, dataclasses dicts)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def key_fields(stage: Any, *, distills: bool = True) -> dict:
    """The ``KEY`` fields of a stage record as plain values. A ``content`` field (a file) counts by
    its content; a ``kd_only`` field is left out for a stage that distils nothing (the control)."""
    out = {}
    for f in dataclasses.fields(stage):
        if kind_of(f) != KEY or (f.metadata.get("kd_only") and not distills):
            continue
        value = getattr(stage, f.name)
        if f.metadata.get("content") and value and Path(value).is_file():
            value = {"sha256": file_digest(value)}
        out[f.name] = plain(value)
    return out


def data_fingerprint(config: DataConfig, *, ir: list, split: list) -> str:
    """The data a model was trained on: the data settings (files by content), the IR decoding
    found in the files and the split actually drawn (``split``: [CSV line, split] per sample)."""
    return stable_hash({"config": key_fields(config), "ir": plain(ir), "split": stable_hash(split)})


def teacher_settings(cfg: RunConfig, teacher: str, seed: int, data_fp: str, world_size: int) -> dict:
    """What a trained teacher depends on; its store folder is named by the hash."""
    return {"stage": "teacher", "teacher": teacher, "seed": seed, "data": data_fp,
            "world_size": world_size, "optim": key_fields(cfg.optim), "train": key_fields(cfg.teacher)}


def teacher_key(cfg: RunConfig, teacher: str, seed: int, data_fp: str, world_size: int,
                variant: str) -> str | None:
    """The key of the teacher ``variant`` distils from (None for the control)."""
    if not uses_teacher(variant):
        return None
    return stable_hash(teacher_settings(cfg, teacher, seed, data_fp, world_size))


def student_settings(cfg: RunConfig, variant: str, seed: int, data_fp: str, world_size: int,
                     teacher_key: str | None) -> dict:
    """What a trained student depends on. The control (no teacher) leaves out the distillation-only
    fields, so it is the same control under every teacher."""
    train = key_fields(cfg.student, distills=uses_teacher(variant))
    train["loss_weights"] = variant_weights(variant, cfg.student.loss_weights)  # this variant's terms
    return {"stage": "student", "variant": variant, "seed": seed, "data": data_fp,
            "world_size": world_size, "optim": key_fields(cfg.optim), "train": train,
            "teacher": teacher_key}


def compression_settings(cfg: RunConfig) -> dict:
    """What the compressed students depend on beyond their student (nothing when turned off)."""
    fields = key_fields(cfg.compress)
    return fields if cfg.compress.compress else {"compress": False}


def seed_settings(cfg: RunConfig, teacher: str, variant: str, seed: int, data_fp: str,
                  world_size: int) -> dict:
    """Everything a finished seed of one run depends on."""
    t_key = teacher_key(cfg, teacher, seed, data_fp, world_size, variant)
    return {**student_settings(cfg, variant, seed, data_fp, world_size, t_key),
            "compression": compression_settings(cfg)}


def seed_key(cfg: RunConfig, teacher: str, variant: str, seed: int, data_fp: str, world_size: int) -> str:
    """Recorded in a seed's final_evaluation.json: same key, same result."""
    return stable_hash(seed_settings(cfg, teacher, variant, seed, data_fp, world_size))


def run_settings(cfg: RunConfig, teacher: str, variant: str, data_fp: str, world_size: int) -> dict:
    """What every seed of a run folder shares: its seeds' settings without the seed (and with the
    teacher's settings instead of a per-seed teacher key). Seeds are aggregated only under the same
    run key."""
    student = student_settings(cfg, variant, 0, data_fp, world_size, None)
    settings = {k: v for k, v in student.items() if k not in ("seed", "teacher", "stage")}
    settings["compression"] = compression_settings(cfg)
    if uses_teacher(variant):
        teacher_stage = teacher_settings(cfg, teacher, 0, data_fp, world_size)
        settings["teacher_stage"] = {k: teacher_stage[k] for k in ("optim", "train")}
    return {"teacher": teacher, "variant": variant, **settings}
