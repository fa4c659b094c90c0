"""Reuse keys: what every stored artefact depends on, so a result can never go stale.

Keys are derived from the ``KEY`` fields of the stage records (`firekd.config`), never listed by
hand, plus a `Lineage`: the data the artefact saw (images by content, labels, split), its seed, the
number of processes (the batch size is per process), the keys of the artefacts it builds on and
the recipe version. A field added to a stage enters its key unless it is declared otherwise.

    teacher key     = teacher stage + optimisation + labelled data + seed + world size
    student key     = student stage + optimisation + data (+ unlabelled pool) + seed + world size
                      + variant + teacher key (a KD student) or control key (``self_kd``)
    compressed keys = student key + the settings of that stored form (pruned, ONNX; int8 is
                      re-quantized with the outputs)
    outputs key     = student key + compression + figure settings   (a seed's final_evaluation.json)
    run key         = the student's settings without the seed       (a run folder's config.json)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from firekd.config import DataConfig, RunConfig
from firekd.kd.variants import CONTROL, SELF_KD, distills, uses_teacher, variant_weights
from firekd.options import FIGURE, KEY, kind_of

# Bump when a change to the training code (loop, losses, models, transforms, fixed constants)
# changes what a given setting trains: every store made before is then retrained, never reused.
# tests/test_recipe_version.py fails when that code changes and this line does not.
RECIPE_VERSION = 2


def stable_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    return _file_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
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


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where an artefact comes from beyond its own stage's settings."""

    data: str  # the labelled data's fingerprint (`data_fingerprint`)
    seed: int
    world_size: int = 1
    unlabeled: str | None = None  # the unlabelled pool's fingerprint (None: no pool)
    unlabeled_count: int = 0
    upstream: tuple[str, ...] = ()  # keys of the stored artefacts this one builds on

    def on(self, *keys: str | None) -> Lineage:
        """This lineage building on the artefacts of ``keys`` (None: nothing)."""
        return dataclasses.replace(self, upstream=tuple(k for k in keys if k))

    def record(self, *, unlabeled: str = "none") -> dict:
        """As a key sees it. ``unlabeled``: "none" (a teacher never sees the pool), "count" (the
        control: only its size sets the control's step count) or "content" (the KD students)."""
        out = {"recipe": RECIPE_VERSION, "data": self.data, "seed": self.seed,
               "world_size": self.world_size, "upstream": list(self.upstream)}
        if unlabeled == "count":
            out["unlabeled"] = self.unlabeled_count
        elif unlabeled == "content":
            out["unlabeled"] = self.unlabeled
        return out


def key_fields(stage: Any, *, distills: bool = True, kind: str = KEY) -> dict:
    """The fields of ``kind`` of a stage record as plain values. A ``content`` field (a file) counts
    by its content; a ``kd_only`` field is left out for a stage that distils nothing (the control)."""
    out = {}
    for f in dataclasses.fields(stage):
        if kind_of(f) != kind or (f.metadata.get("kd_only") and not distills):
            continue
        value = getattr(stage, f.name)
        if f.metadata.get("content") and value and Path(value).is_file():
            value = {"sha256": file_digest(value)}
        out[f.name] = plain(value)
    return out


def data_fingerprint(config: DataConfig, *, ir: list, rows: list) -> str:
    """The data a model was trained on: the data settings that change what is decoded (the image
    size), the IR decoding found in the files and, per sample in order, what it is: ``rows`` of
    [RGB digest, IR digest, labels..., split]. Paths, the CSV's name and the way the split was
    chosen are not in it: the same images, labels and split give the same fingerprint anywhere."""
    return stable_hash({"config": key_fields(config), "ir": plain(ir), "rows": stable_hash(rows)})


def teacher_settings(cfg: RunConfig, teacher: str, lineage: Lineage) -> dict:
    """What a trained teacher depends on; its store folder is named by the hash."""
    return {"stage": "teacher", "teacher": teacher, **lineage.record(),
            "optim": key_fields(cfg.optim), "train": key_fields(cfg.teacher)}


def teacher_key(cfg: RunConfig, teacher: str, lineage: Lineage, variant: str) -> str | None:
    """The key of the model ``variant`` distils from: its teacher, for ``self_kd`` the seed's
    control (the same under every teacher), None for the control."""
    if variant == SELF_KD:
        return student_key(cfg, "", CONTROL, lineage)
    if not uses_teacher(variant):
        return None
    return stable_hash(teacher_settings(cfg, teacher, lineage))


def student_settings(cfg: RunConfig, variant: str, lineage: Lineage) -> dict:
    """What a trained student depends on (``lineage.upstream``: its teacher's key). The control (no
    teacher) leaves out the distillation-only fields and the unlabelled pool's content, so it is
    the same control under every teacher."""
    learns = distills(variant)
    train = key_fields(cfg.student, distills=learns)
    train["loss_weights"] = variant_weights(variant, cfg.student.loss_weights)  # this variant's terms
    pool = lineage.record(unlabeled="content" if learns else "count")
    return {"stage": "student", "variant": variant, **pool, "optim": key_fields(cfg.optim), "train": train}


def student_key(cfg: RunConfig, teacher: str, variant: str, lineage: Lineage) -> str:
    """The student of ``variant`` (distilled from ``teacher``'s stored teacher when it has one)."""
    t_key = teacher_key(cfg, teacher, lineage, variant)
    return stable_hash(student_settings(cfg, variant, lineage.on(t_key)))


def pruned_settings(cfg: RunConfig) -> dict:
    c = cfg.compress
    return {"form": "pruned", "method": c.prune_method, "sparsity": c.prune_sparsity,
            "finetune_epochs": c.finetune_epochs}


def onnx_settings(cfg: RunConfig) -> dict:
    return {"form": "onnx", "calibration_batches": cfg.compress.calibration_batches}


def compression_settings(cfg: RunConfig) -> dict:
    """What the compressed students depend on beyond their student (nothing when turned off)."""
    fields = key_fields(cfg.compress)
    return fields if cfg.compress.compress else {"compress": False}


def figure_settings(cfg: RunConfig) -> dict:
    return key_fields(cfg.execution, kind=FIGURE)


def outputs_settings(cfg: RunConfig) -> dict:
    """What a finished seed's outputs depend on beyond its student: compression and figures."""
    return {"compression": compression_settings(cfg), "figures": figure_settings(cfg)}


def seed_key(cfg: RunConfig, teacher: str, variant: str, lineage: Lineage) -> str:
    """Recorded in a seed's final_evaluation.json: same key, same outputs."""
    return stable_hash({"student": student_key(cfg, teacher, variant, lineage), **outputs_settings(cfg)})


def run_settings(cfg: RunConfig, teacher: str, variant: str, lineage: Lineage) -> dict:
    """What every seed of a run folder shares: its students' settings without the seed (and with the
    teacher's settings instead of a per-seed teacher key). Seeds are aggregated only under the same
    run key; compression and figure settings are not in it (changing them retrains nothing)."""
    lineage = dataclasses.replace(lineage, seed=0, upstream=())
    student = student_settings(cfg, variant, lineage)
    settings = {k: v for k, v in student.items() if k not in ("seed", "upstream", "stage")}
    if uses_teacher(variant):
        teacher_stage = teacher_settings(cfg, teacher, lineage)
        settings["teacher_stage"] = {k: teacher_stage[k] for k in ("optim", "train")}
    return {"teacher": teacher, "variant": variant, **settings}
