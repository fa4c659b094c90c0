"""Training memory of a teacher, estimated without memory: the forward runs on the meta device.

The saved activations (what autograd keeps for backward) dominate at 224 px: the fused trunk runs
RGB and IR as one batch of 2B. `estimate_teacher_memory` counts them with a saved-tensor hook,
with and without activation checkpointing; `should_checkpoint` is the policy built on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from firekd.models.registry import create_teacher, teacher_arch

GiB = 2**30
TRAINING_BYTES_PER_PARAM = 16  # fp32 weight, gradient and AdamW's two moments


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # one id per storage, on meta too (data_ptr is 0 there)


class SavedTensorBytes:
    """Context manager: bytes of the distinct storages autograd saves for backward, parameters
    excepted (they live anyway). Saved tensors stay alive until backward, so ids are not reused."""

    def __init__(self, model: nn.Module) -> None:
        self.skip = {_storage_key(p) for p in model.parameters()}
        self.seen: set[int] = set()
        self.total = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self.skip and key not in self.seen:
            self.seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


@dataclass(frozen=True)
class MemoryEstimate:
    activations: int  # bytes saved for backward by one training forward
    activations_checkpointed: int  # the same with set_grad_checkpointing(True), incl. one block's peak
    params: int  # parameter count

    def training_bytes(self, checkpointed: bool) -> int:
        """Activations plus fp32 weights, gradients and AdamW state (workspace not included)."""
        acts = self.activations_checkpointed if checkpointed else self.activations
        return acts + TRAINING_BYTES_PER_PARAM * self.params


@functools.lru_cache(maxsize=64)
def estimate_teacher_memory(name: str, batch_size: int, img_size: int,
                            dtype: torch.dtype = torch.float32, ir_channels: int = 1,
                            modalities: str = "rgb+ir") -> MemoryEstimate:
    """A teacher's training memory at (batch, img_size) with activations in ``dtype``, measured on
    the meta device (no memory used, about a second). bf16 stands for autocast: the model is cast,
    so ops that autocast keeps in fp32 are undercounted a little.

    Checkpointed: each trunk block keeps only its input, and backward holds one block's
    activations at a time, so the estimate is (activations outside the blocks) + (block inputs) +
    (the largest block). The plain path (modalities="rgb") uses timm's checkpointing: not modelled.
    """
    with torch.device("meta"):
        model = create_teacher(teacher_arch(name), img_size=img_size, ir_channels=ir_channels,
                               modalities=modalities, pretrained=False)
        rgb = torch.empty(batch_size, 3, img_size, img_size, dtype=dtype)
        ir = torch.empty(batch_size, ir_channels, img_size, img_size, dtype=dtype)
    model = model.to(dtype).train()
    blocks: list[tuple[int, int]] = []  # (input bytes, bytes saved inside) per checkpointed block
    with SavedTensorBytes(model) as saved:
        def probe(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
            before = saved.total
            y = block(x)
            blocks.append((x.untyped_storage().nbytes(), saved.total - before))
            return y

        model._run_block = probe  # instance attribute: the forward's block runner, measured
        model(rgb, ir)
    inside = sum(b[1] for b in blocks)
    checkpointed = saved.total - inside + sum(b[0] for b in blocks) + max((b[1] for b in blocks), default=0)
    params = sum(p.numel() for p in model.parameters())
    return MemoryEstimate(saved.total, min(checkpointed, saved.total), params)


def should_checkpoint(teacher_name: str, batch_size: int, img_size: int, free_bytes: int | None, *,
                      dtype: torch.dtype = torch.bfloat16, ir_channels: int = 1,
                      headroom: float = 0.75) -> bool:
    """Activation checkpointing for ``--grad_checkpointing auto``: on when the teacher's training
    memory without it (activations, weights, gradients, AdamW state) would exceed ``headroom`` of
    the free device memory. The rest is left for cuDNN workspaces, the allocator's fragmentation
    and the batch. ``free_bytes=None`` (CPU: host memory, not measured) means off.
    """
    if free_bytes is None:
        return False
    need = estimate_teacher_memory(teacher_name, batch_size, img_size, dtype, ir_channels)
    return need.training_bytes(checkpointed=False) > headroom * free_bytes


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device now (one driver query); None elsewhere."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]
