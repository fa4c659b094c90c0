"""int8 post-training static quantization through torchao's PT2E flow, for x86 CPUs.

``torch.export`` captures the student (batch dimension dynamic), ``prepare_pt2e`` inserts observers
chosen by ``X86InductorQuantizer`` (default config: per-channel symmetric int8 weights, per-tensor
uint8 activations, BatchNorm folded into the convolutions), calibration batches set the activation
ranges, and ``convert_pt2e`` folds the weights to int8. The result is a graph of quantize /
dequantize ops around fp32 ops: run eagerly it is slower than the fp32 model; inductor with freezing
(``firekd.compress.compile``) fuses it into oneDNN int8 kernels.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable

import torch
from torch import nn

from firekd.errors import ModelError, first_line

MAX_BATCH = 4096  # upper bound of the exported dynamic batch dimension


def batch_dim() -> dict:
    """Dynamic-shape spec of a single (B, C, H, W) input whose batch size may vary."""
    return {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}


def export_example(batch: torch.Tensor) -> torch.Tensor:
    """Two images of ``batch``: export specialises a batch of 1 into a constant."""
    return batch[:2] if len(batch) >= 2 else batch.repeat(2, 1, 1, 1)


def capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` a model (eval mode, on the CPU) with a dynamic batch dimension."""
    try:
        program = torch.export.export(model, (export_example(example),), dynamic_shapes=(batch_dim(),))
    except Exception as exc:  # export fails in many ways (graph breaks, data-dependent control flow)
        first = first_line(exc, 200)
        raise ModelError(f"torch.export cannot capture the student for int8 quantization ({first}); "
                         "train without --compress or use another --student") from None
    return program.module()


def x86_quantizer():
    """X86InductorQuantizer with its default static int8 config.

    Importing its module also registers torchao's int8 fusion passes with inductor.
    """
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    return quantizer


def quantize_int8(model: nn.Module, batches: Iterable[torch.Tensor],
                  max_batches: int | None = None) -> tuple[torch.fx.GraphModule, int]:
    """Static int8 copy of ``model`` calibrated on ``batches`` of normalised RGB (B,3,H,W).

    Returns (quantized graph module on the CPU, number of calibration batches used). The caller's
    model is left as it was (a copy is exported).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    source = copy.deepcopy(model).cpu().eval()
    prepared = None
    used = 0
    with torch.no_grad():
        for rgb in batches:
            if max_batches is not None and used >= max_batches:
                break
            rgb = rgb.cpu().float()
            if prepared is None:
                prepared = prepare_pt2e(capture(source, rgb), x86_quantizer())
            prepared(rgb)
            used += 1
    if prepared is None:
        raise ModelError("int8 calibration needs at least one training batch; the train split is empty")
    quantized = convert_pt2e(prepared)
    drop_unused_tensors(quantized)
    return eval_mode_only(quantized), used


def eval_mode_only(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Let evaluation code call ``.eval()`` / ``.train()`` on an exported int8 graph (export
    forbids both) as no-ops: it was captured in eval mode, so dropout is gone and BatchNorm is in
    its inference form (folded). torchao's ``allow_exported_model_train_eval`` would re-trace its
    dropout and BatchNorm patterns on every call (about a second each) to change nothing."""
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(lambda self: self, module)  # type: ignore[method-assign]
    return module


def drop_unused_tensors(module: torch.fx.GraphModule) -> None:
    """Delete parameters and buffers no graph node reads: after conversion the fp32 weights stay
    attached next to their int8 copies, and would be saved and loaded for nothing."""
    used = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    for name in names:
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            delattr(module.get_submodule(owner_name) if owner_name else module, attr)
    module.delete_all_unused_submodules()
    module.recompile()


def int8_weight_count(module: nn.Module) -> int:
    """Number of int8 weight elements a quantized module holds."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() for t in tensors if t.dtype == torch.int8)
