"""Device placement and numerics: bf16 autocast and channels_last on CUDA, plain fp32 on CPU."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from firekd.data.dataset import Batch, apply_transform
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


@dataclass
class Runtime:
    device: torch.device
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    # (train, eval) batch transforms when they run on the device; None when the loader applies them
    device_transforms: tuple[PairedTransform, PairedTransform] | None = None
    seed: int = 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        if self.cuda and self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_model(self, model: torch.nn.Module, *, compile: bool = False,
                      sync_bn: bool = False) -> torch.nn.Module:
        if sync_bn and self.cuda and distributed.info().enabled:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif sync_bn:
            log.warning("--sync_bn applies to torchrun runs on CUDA; ignored here")
        model = model.to(self.device)
        if self.cuda and self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            model.compile()  # in place: state_dict keys stay those of the plain model
        return model

    def to_device(self, batch: Batch, *, train: bool = False) -> Batch:
        rgb, ir, labels, index = batch
        rgb, ir = rgb.to(self.device, non_blocking=True), ir.to(self.device, non_blocking=True)
        if self.device_transforms is not None:  # index still on the host: no device sync to seed
            transform = self.device_transforms[0 if train else 1]
            rgb, ir, _, _ = apply_transform(transform, (rgb, ir, labels, index), self.seed)
        labels = labels.to(self.device, non_blocking=True)
        if self.cuda and self.channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
            if ir.shape[1]:
                ir = ir.contiguous(memory_format=torch.channels_last)
        return rgb, ir, labels, index
