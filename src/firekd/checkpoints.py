"""Model checkpoints: plain config + state dict, loaded with ``weights_only=True``.

A checkpoint is ``{"format", "kind", "model_config", "state_dict", "meta"}``: everything needed to
rebuild the architecture (``create_teacher(**model_config)`` / ``create_student(...)``) and nothing
that needs unpickling arbitrary objects. A structurally pruned model adds ``"structure"``: its
narrower layers as plain sizes (see ``firekd.compress.structure``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from firekd.errors import ModelError, first_line
from firekd.io import save_payload

FORMAT = "firekd-model/1"


def save_model(path: str | Path, model: nn.Module, *, kind: str, meta: dict | None = None,
               state_dict: dict | None = None, structure: dict | None = None) -> None:
    payload = {"format": FORMAT, "kind": kind, "model_config": model.model_config(),
               "state_dict": state_dict if state_dict is not None else model.state_dict(),
               "meta": meta or {}}
    if structure:
        payload["structure"] = structure
    save_payload(path, payload)


def load_payload(path: str | Path) -> dict:
    """Load any firekd checkpoint safely; refuse pickled objects and foreign files."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path}: refused to load, the checkpoint holds pickled objects that "
                         f"weights_only loading does not allow ({first_line(exc, 120)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise ModelError(f"{path}: not a firekd checkpoint")
    return payload


def is_firekd_checkpoint(path: str | Path) -> bool:
    """A file saved by `save_model` (not, e.g., a timm state dict)."""
    try:
        payload = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # unreadable or another format: not ours
        return False
    return isinstance(payload, dict) and str(payload.get("format", "")).startswith("firekd-model/")


def build_from_payload(payload: dict) -> nn.Module:
    from firekd.models import create_student, create_teacher

    config = {k: v for k, v in payload["model_config"].items()
              if k not in ("pretrained", "pretrained_file")}  # the weights come from the checkpoint
    factory = create_teacher if payload["kind"] == "teacher" else create_student
    model = factory(**config, pretrained=False)
    if payload.get("structure"):
        from firekd.compress.structure import apply_structure

        apply_structure(model, payload["structure"], payload["state_dict"])
    return model


def load_model(path: str | Path, *, kind: str | None = None,
               expect_config: dict | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model, meta)."""
    payload = load_payload(path)
    if kind is not None and payload.get("kind") != kind:
        raise ModelError(f"{path}: holds a {payload.get('kind')} model, expected a {kind}")
    if expect_config is not None:
        ours = payload.get("model_config", {}).get("name")
        if ours != expect_config.get("name"):
            raise ModelError(f"{path}: checkpoint of architecture '{ours}', "
                             f"expected '{expect_config.get('name')}'")
    model = build_from_payload(payload)
    load_state(model, payload["state_dict"], str(path))
    return model, payload.get("meta", {})


def load_state(model: nn.Module, state_dict: dict, source: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not match the architecture ({first_line(exc)})") from None
