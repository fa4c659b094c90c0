"""Model size and cost: parameter counts, GFLOPs as torch's FlopCounterMode counts them, file
size, CPU latency and CUDA throughput."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

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


def file_size_mb(path: str | Path) -> float:
    """Size of a file in MB (10^6 bytes)."""
    return os.path.getsize(path) / 1e6


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Run the block with ``threads`` intra-op CPU threads (None: leave torch's setting)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def median_latency_ms(fn: Callable[[], object], *, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls.

    The median, not the mean: on a shared machine a few calls are slowed by other processes.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(statistics.median(times) * 1e3)


def cuda_throughput(fn: Callable[[], object], batch: int, *, runs: int = 20, warmup: int = 5) -> float:
    """Images per second of ``fn()`` (one forward pass of ``batch`` images already on the GPU)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    return batch * runs / (time.perf_counter() - start)
