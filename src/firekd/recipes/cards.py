"""Model cards of the artefacts a run or an export writes (see `firekd.deploy.card`): one card per
saved student form, with its validation thresholds, test metrics and measured efficiency."""

from __future__ import annotations

import logging
from pathlib import Path

from firekd.deploy.card import build_card, write_card
from firekd.recipes.context import ModelResult
from firekd.recipes.data import DataBundle
from firekd.recipes.teacher import data_meta

log = logging.getLogger(__name__)

STUDENT_FORMS = ("student", "student_pruned", "student_quantized", "student_onnx", "student_onnx_int8")


def split_counts(data: DataBundle) -> dict[str, int]:
    counts = data.labelled["split_assigned"].value_counts()
    out = {split: int(counts.get(split, 0)) for split in ("train", "val", "test")}
    if data.unlabeled_count:
        out["unlabelled (KD students only)"] = int(data.unlabeled_count)
    return out


def model_config(result: ModelResult) -> dict:
    """The fp32 architecture behind a result (a deployed form's source; a compiled module's original)."""
    source = result.fp32_source if result.fp32_source is not None else result.model
    source = getattr(source, "_orig_mod", source)
    return source.model_config() if hasattr(source, "model_config") else {}


def card_of(name: str, result: ModelResult, data: DataBundle, metrics: dict | None = None) -> dict:
    metrics = metrics if metrics is not None else result.evaluation.metrics
    return build_card(result.checkpoint, kind=name, model_config=model_config(result), modalities="rgb",
                      img_size=data.config.img_size, thresholds=result.evaluation.thresholds,
                      data=data_meta(data), metrics=metrics, split_counts=split_counts(data))


def write_cards(models: dict[str, ModelResult], data: DataBundle,
                metrics: dict[str, dict] | None = None) -> list[Path]:
    """A card beside every saved student form in ``models`` (``metrics``: per model, when the
    numbers are not in its evaluation). A card that cannot be written costs a warning only."""
    written = []
    for name, result in models.items():
        if name not in STUDENT_FORMS or not Path(result.checkpoint).is_file():
            continue
        try:
            card = card_of(name, result, data, (metrics or {}).get(name))
            written.append(write_card(result.checkpoint, card)[0])
        except OSError as exc:
            log.warning("%s: model card not written (%s)", result.checkpoint, exc)
    return written
