"""The architecture of a structurally pruned model as plain data, and rebuilding it.

A pruned model is its unpruned architecture (``model_config()``) with some layers narrower. The
checkpoint stores, per changed layer, the plain attributes that size it (``{"blocks.0.0":
{"in_channels": 3, "out_channels": 16, "groups": 1}, ...}``); the tensor shapes come from the
state dict. Rebuilding = build the unpruned model, resize those layers, load the weights. Works for
any model made of standard convolution, linear and normalisation layers, timm students included.
"""

from __future__ import annotations

import torch
from torch import nn

from firekd.errors import ModelError

SIZE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features",
              "out_features", "normalized_shape", "num_channels", "num_groups")


def _sizes(module: nn.Module) -> dict:
    return {a: list(v) if isinstance(v, tuple) else v
            for a in SIZE_ATTRS if isinstance(v := getattr(module, a, None), (int, tuple))}


def structure_changes(model: nn.Module, reference: nn.Module) -> dict[str, dict]:
    """{layer name: size attributes} for every layer of ``model`` sized unlike ``reference``
    (the same architecture, unpruned)."""
    ref = dict(reference.named_modules())
    changes = {}
    for name, module in model.named_modules():
        if name not in ref:
            raise ModelError(f"layer '{name}' of the pruned model is not in the unpruned architecture")
        sizes = _sizes(module)
        if sizes != _sizes(ref[name]):
            changes[name] = sizes
    return changes


def apply_structure(model: nn.Module, structure: dict[str, dict], state_dict: dict) -> None:
    """Resize the layers of a freshly built ``model`` as ``structure`` says, with tensor shapes
    taken from ``state_dict`` (values are loaded afterwards)."""
    modules = dict(model.named_modules())
    for name, sizes in structure.items():
        if name not in modules:
            raise ModelError(f"the checkpoint resizes layer '{name}', which this architecture lacks")
        module = modules[name]
        for attr, value in sizes.items():
            setattr(module, attr, tuple(value) if isinstance(value, list) else value)
        _resize_tensors(module, name, state_dict)


def _resize_tensors(module: nn.Module, name: str, state_dict: dict) -> None:
    prefix = f"{name}." if name else ""
    for store in (module._parameters, module._buffers):
        for key, tensor in store.items():
            saved = state_dict.get(prefix + key)
            if tensor is None or saved is None or saved.shape == tensor.shape:
                continue
            empty = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
            is_param = isinstance(tensor, nn.Parameter)
            store[key] = nn.Parameter(empty, tensor.requires_grad) if is_param else empty
