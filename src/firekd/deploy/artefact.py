"""Any firekd model file as a runnable detector with its settings: student_best.pth, the pruned
student, the int8 archive (compiled with inductor when possible), an ONNX file (fp32 or int8), or a
teacher checkpoint (RGB+IR).

Settings come, in this order, from the flags, the model card beside the file, the metadata inside
the file (checkpoints and the int8 archive record their training size and validation thresholds),
and for ONNX the graph's input shape; a missing threshold falls back to 0.5 with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from firekd import LABELS
from firekd.data.images import IRSpec
from firekd.deploy.card import read_card
from firekd.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class Deployed:
    path: Path
    kind: str  # student, student_pruned, student_quantized, student_onnx, student_onnx_int8, teacher
    forward: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # (rgb, ir) -> logits (B,2)
    modalities: str  # rgb or rgb+ir
    img_size: int
    thresholds: np.ndarray  # (2,)
    thresholds_from: str
    ir: IRSpec | None  # how IR files are decoded (RGB+IR models)
    card: dict | None
    module: nn.Module | None = None  # the fp32 torch module, when there is one (class-activation maps)
    runtime: str = "torch"

    @property
    def needs_ir(self) -> bool:
        return self.modalities == "rgb+ir"


def _is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def _onnx_kind(path: Path, card: dict | None) -> str:
    if card:
        return card["artefact"]["kind"]
    return "student_onnx_int8" if "int8" in path.stem.lower() else "student_onnx"


def _torch_forward(model: nn.Module) -> Callable:
    from firekd.kd.distiller import model_outputs

    def forward(rgb: torch.Tensor, ir: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return model_outputs(model, rgb, ir)[0]
    return forward


def _compiled_int8(module: nn.Module, size: int, batch: int, threads: int | None) -> tuple[Callable, str]:
    """The int8 program compiled for (batch,3,size,size) chunks, or eager with a warning."""
    from firekd.compress.compile import StaticBatch, runnable_int8

    runnable, seconds = runnable_int8(module, [torch.randn(batch, 3, size, size)], True, threads or 1)
    if seconds is None:
        return _torch_forward(runnable), "torch int8 (eager, not compiled)"
    return _torch_forward(StaticBatch(runnable, batch)), "torch int8 (inductor-compiled)"


def load_deployed(path: str | Path, *, img_size: int | None = None,
                  thresholds: tuple[float, float] | None = None, threads: int | None = None,
                  batch: int = 8, compile_int8: bool = True) -> Deployed:
    """The artefact at ``path`` ready to run on the CPU (torch checkpoints also on ``torch``'s
    default device: the CPU here), with the settings it needs."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--model {path}: file not found")
    card = read_card(path)
    meta: dict = {}
    module = None
    if _is_onnx(path):
        from firekd.compress.onnx_export import OnnxStudent

        runner = OnnxStudent(path, threads=threads or 0)
        kind, modalities, runtime = _onnx_kind(path, card), "rgb", "onnxruntime"
        forward = lambda rgb, ir: runner(rgb)[0]  # noqa: E731
        graph_size = runner.session.get_inputs()[0].shape[-1]
        graph_size = graph_size if isinstance(graph_size, int) else None
    else:
        from firekd.compress.artifacts import is_quantized_file, load_quantized

        graph_size = None
        if is_quantized_file(path):
            program, meta = load_quantized(path)
            kind, modalities = "student_quantized", "rgb"
            size = img_size or _card_size(card) or meta.get("data", {}).get("img_size") or 224
            if compile_int8:
                forward, runtime = _compiled_int8(program, size, batch, threads)
            else:
                forward, runtime = _torch_forward(program), "torch int8 (eager, not compiled)"
        else:
            from firekd.checkpoints import build_from_payload, load_payload, load_state

            payload = load_payload(path)
            module = build_from_payload(payload)
            load_state(module, payload["state_dict"], str(path))
            module.eval()
            meta = payload.get("meta", {})
            kind = "student_pruned" if payload.get("structure") else str(payload.get("kind"))
            modalities, runtime = getattr(module, "modalities", "rgb"), "torch"
            forward = _torch_forward(module)
    size = img_size or _card_size(card) or meta.get("data", {}).get("img_size") or graph_size
    if size is None:
        raise ModelError(f"--model {path}: no model card beside it and no input size in the file; "
                         "pass --img_size")
    if graph_size is not None and size != graph_size:
        raise ModelError(f"--model {path}: the ONNX graph takes {graph_size} px images, not {size} "
                         "(--img_size or its card)")
    chosen, source = _thresholds(path, thresholds, card, meta)
    return Deployed(path, kind, forward, modalities, int(size), chosen, source,
                    _ir_spec(card, meta) if modalities == "rgb+ir" else None, card, module, runtime)


def _card_size(card: dict | None) -> int | None:
    return card["input"]["img_size"] if card else None


def _thresholds(path: Path, given, card: dict | None, meta: dict) -> tuple[np.ndarray, str]:
    if given is not None:
        return np.asarray(given, dtype=float), "--thresholds"
    if card:
        return np.array([card["thresholds"][k] for k in LABELS], dtype=float), "model card"
    if meta.get("thresholds") is not None:
        return np.asarray(meta["thresholds"], dtype=float), "checkpoint, validation-tuned"
    log.warning("%s: no model card and no recorded thresholds; deciding at 0.5 (set --thresholds)", path)
    return np.full(len(LABELS), 0.5), "default 0.5"


def _ir_spec(card: dict | None, meta: dict) -> IRSpec:
    """How the teacher's IR was decoded in training (card, else the checkpoint's data meta)."""
    ir = (card or {}).get("input", {}).get("ir") or {}
    data = meta.get("data", {})
    kind = ir.get("kind") or data.get("ir_kind") or "8bit"
    channels = int(ir.get("channels") or data.get("ir_channels") or 1)
    value_range = ir.get("range") or data.get("ir_range")
    return IRSpec(kind=kind, channels=channels, value_range=tuple(value_range) if value_range else None)
