"""Running a model through ``torch.compile`` (inductor, freezing) on the CPU, at fixed shapes.

Freezing turns the weights into constants, which lets inductor pre-pack them for oneDNN and fuse
the int8 quantize/dequantize ops into int8 convolutions; without it a PT2E model runs its q/dq ops
one by one and is slower than fp32.

Each input shape is compiled once (tens of seconds on two cores), so the model is compiled for
static shapes only: ``StaticBatch`` cuts evaluation batches into fixed-size chunks (padding the
last) and latency is measured at exactly those shapes. Compiled graphs are also kept in inductor's
on-disk FX graph cache, so compiling the same model again (a rerun) is fast.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from firekd.errors import first_line
from firekd.metrics.efficiency import cpu_threads

log = logging.getLogger(__name__)


class CompileUnavailable(RuntimeError):
    """torch.compile failed here (e.g. no C++ compiler); the message says why in one line."""


class FrozenCompiled(nn.Module):
    """``torch.compile(module, dynamic=False)`` whose compilations run with inductor freezing.

    Freezing is an inductor config read when a shape is compiled, which happens lazily on the
    first call with that shape: every call patches it rather than setting it process-wide.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(module, dynamic=False)

    def forward(self, *args):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            return self.compiled(*args)


class StaticBatch(nn.Module):
    """Runs ``module`` on chunks of exactly ``batch`` samples (the last one zero-padded), so a
    shape-specialised compiled model sees one batch shape whatever the loader yields.

    The module returns a tuple of tensors with the batch first (logits, embedding).
    """

    def __init__(self, module: nn.Module, batch: int) -> None:
        super().__init__()
        self.module, self.batch = module, batch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = []
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            n = len(chunk)
            if n < self.batch:
                pad = chunk.new_zeros((self.batch - n, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            parts.append(tuple(out[:n] for out in self.module(chunk)))
        return tuple(torch.cat(outs) for outs in zip(*parts, strict=True))


def compile_for_cpu(module: nn.Module, examples: list[torch.Tensor]) -> tuple[FrozenCompiled, float]:
    """Compile ``module`` for the shapes of ``examples`` (compiling happens here, not on first use).

    Returns (compiled module, seconds spent compiling); raises ``CompileUnavailable`` when inductor
    cannot compile on this machine.
    """
    module.eval()  # an exported program's eval() returns None: not chained
    compiled = FrozenCompiled(module)
    start = time.perf_counter()
    try:
        for example in examples:
            compiled(example)
    except (RuntimeError, OSError) as exc:  # dynamo/inductor errors, a missing or broken compiler
        raise CompileUnavailable(first_line(exc, 200)) from None
    return compiled, time.perf_counter() - start


def runnable_int8(quantized: nn.Module, examples: list[torch.Tensor], compile_model: bool,
                  threads: int) -> tuple[nn.Module, float | None]:
    """The int8 module compiled for the shapes of ``examples``, or uncompiled with a warning when
    compilation is off or impossible. Returns (module, compile seconds or None).

    Inductor writes the thread count into its kernels, so it compiles with the ``threads`` the
    latency is measured with."""
    if not compile_model:
        log.info("student_quantized: --no_quant_compile, evaluating the int8 model uncompiled "
                 "(slower than fp32)")
        return quantized, None
    try:
        with cpu_threads(threads):
            compiled, seconds = compile_for_cpu(quantized, examples)
    except CompileUnavailable as exc:
        log.warning("student_quantized: torch.compile is unavailable here (%s); evaluating the int8 "
                    "model uncompiled, which is slower than fp32", exc)
        return quantized, None
    log.info("student_quantized: compiled with inductor (freezing) for batch %s in %.1fs",
             " and ".join(str(len(e)) for e in examples), seconds)
    return compiled, seconds
