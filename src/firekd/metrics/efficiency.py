"""Model size and cost: parameter counts and GFLOPs as torch's FlopCounterMode counts them."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gflops(model: nn.Module, *example_inputs: torch.Tensor) -> float:
    """GFLOPs of one forward pass on `example_inputs` (eval mode, no grad): FlopCounterMode's
    total / 1e9, i.e. 2 FLOPs per multiply-add; convs, matmuls and attention, not elementwise ops.

    Attention runs on the math backend while counting: fused CPU kernels are not counted by
    FlopCounterMode, which would make transformers look cheaper than they are.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            model(*example_inputs)
    finally:
        model.train(was_training)
    return fc.get_total_flops() / 1e9
