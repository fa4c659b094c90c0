"""Distributed data parallel through PyTorch's own launcher.

`torchrun --nproc_per_node N -m firekd train ...` starts N processes with RANK/WORLD_SIZE set;
`setup()` joins them into one process group (NCCL on CUDA, gloo on CPU). Every rank runs the same
recipe; only rank 0 writes files and takes locks (see `firekd.io.Writer`), decisions that
depend on files are made by rank 0 and broadcast, and validation/test predictions are gathered
from all ranks so metrics and early stopping see the whole split.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def setup() -> DistInfo:
    """Join the process group when launched by torchrun; a no-op for a plain process."""
    global _INFO
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return _INFO
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("FIREKD_DDP_BACKEND", "") != "gloo"
    kwargs = {}
    if cuda:
        torch.cuda.set_device(local)
        # binds the NCCL communicator to this rank's GPU up front (PyTorch >= 2.3): no guessing
        # of the device by barrier() and friends, and the communicator is created eagerly
        if "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2), **kwargs)
    _INFO = DistInfo(rank, world, local)
    return _INFO


def info() -> DistInfo:
    return _INFO


def teardown() -> None:
    """Leave the process group: call once when a torchrun run ends, on success or error, so
    NCCL shuts down cleanly (no warning about a leaked group); a no-op in a plain process."""
    global _INFO
    if dist.is_initialized():
        dist.destroy_process_group()
    _INFO = DistInfo()


def barrier() -> None:
    if _INFO.enabled:
        dist.barrier()


def from_main(value):
    """Rank 0's value on every rank (for decisions that read files)."""
    if not _INFO.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate each rank's arrays, in rank order (an identity on a single process)."""
    if not _INFO.enabled:
        return arrays
    parts: list[dict[str, np.ndarray]] = [None] * _INFO.world_size  # type: ignore[list-item]
    dist.all_gather_object(parts, arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in arrays}


def unique_by_index(arrays: dict[str, np.ndarray], key: str = "index") -> dict[str, np.ndarray]:
    """Drop the samples a DistributedSampler repeated to even out the ranks; sort by index."""
    _, first = np.unique(arrays[key], return_index=True)
    return {k: v[first] for k, v in arrays.items()}
