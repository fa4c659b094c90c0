"""Paired RGB+IR transforms on batches of integer images, on whatever device the batch is on.

Geometric augmentation (random resized crop, horizontal flip, small rotation) is drawn once per
sample and applied to RGB and IR together, so the two stay registered; photometric jitter is drawn
per modality. Then both are scaled to [0, 1] and normalised per modality.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

RGB_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics: the teachers' backbones expect them
RGB_STD = (0.229, 0.224, 0.225)
IR_MEAN = 0.5  # IR is already scaled to [0, 1] by the decoder
IR_STD = 0.25


class PairedTransform:
    """(rgb uint8 (B,3,S,S), ir uint (B,C,S,S)) -> normalised float tensors of the same shapes."""

    def __init__(self, size: int, *, train: bool, ir_max: float = 255.0, crop_scale=(0.6, 1.0),
                 rotation: float = 10.0, rgb_jitter: float = 0.3, ir_jitter: float = 0.1) -> None:
        self.train = train
        self.ir_max = ir_max
        self.geometric = v2.Compose([
            v2.RandomResizedCrop(size, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(rotation),
        ])
        # no hue jitter: it costs more than all the other transforms together (HSV round trip)
        self.rgb_photometric = v2.ColorJitter(rgb_jitter, rgb_jitter, rgb_jitter)
        self.ir_photometric = v2.ColorJitter(brightness=ir_jitter, contrast=ir_jitter)

    def __call__(self, rgb: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = rgb.float().div_(255.0)
        ir = ir.float().div_(self.ir_max)
        if self.train:
            rgb, ir = self._augment(rgb, ir)
        return normalize(rgb, ir)

    def _augment(self, rgb: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        has_ir = ir.shape[1] > 0
        out_rgb, out_ir = [], []
        for k in range(rgb.shape[0]):
            if has_ir:
                r, i = self.geometric(tv_tensors.Image(rgb[k]), tv_tensors.Image(ir[k]))
                out_ir.append(self.ir_photometric(i).clamp_(0, 1).as_subclass(torch.Tensor))
            else:
                r = self.geometric(tv_tensors.Image(rgb[k]))
            out_rgb.append(self.rgb_photometric(r).clamp_(0, 1).as_subclass(torch.Tensor))
        return torch.stack(out_rgb), (torch.stack(out_ir) if has_ir else ir)


def normalize(rgb: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = rgb.new_tensor(RGB_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(RGB_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std, (ir - IR_MEAN) / IR_STD
