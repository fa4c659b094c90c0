"""Paired RGB+IR transforms on batches of integer images, on whatever device the batch is on.

Geometric augmentation (random resized crop, horizontal flip, small rotation) is drawn once per
sample and applied to RGB and IR together, so the two stay registered; photometric jitter is drawn
per modality. Then both are scaled to [0, 1] and normalised per modality.

The random parameters are drawn on the host, per sample, from a counter-based hash of a per-sample
key (see `sample_keys`): sample i gets the same view whatever else is in its batch, whatever the
device. They follow torchvision v2's RandomResizedCrop, RandomHorizontalFlip, RandomRotation and
ColorJitter (brightness, contrast, saturation in a random order; no hue). The batch is then
transformed with a fixed number of tensor ops whatever its size: one `grid_sample` of RGB and IR
stacked on channels (crop, flip and rotation composed into one affine map, bilinear) and the
jitter as per-sample factor tensors. All parameters reach the device in one non-blocking copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from firekd.normalization import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_CROP_TRIES = 10  # torchvision's RandomResizedCrop rejection sampling
# packed per-sample parameters: (B, _NPARAM) float32, copied to the device in one go
# geometry: output->crop 2x2 matrix (flip, rotation), crop scale (x, y), shift (x, y), the crop's
# first and last pixel centres (x, y): resize reads no pixel outside the crop
_GEOM = slice(0, 12)
_RGB_STAGES, _IR_STAGES = 3, 2  # jitter ops per modality: (brightness, contrast[, saturation])
# jitter, per stage: the factor f, and 1 - f on the mean luma (contrast) or on the luma (saturation)
_RGB_JIT = slice(_GEOM.stop, _GEOM.stop + 3 * _RGB_STAGES)
_IR_JIT = slice(_RGB_JIT.stop, _RGB_JIT.stop + 3 * _IR_STAGES)
_NPARAM = _IR_JIT.stop


# --- host-side random draws -------------------------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective 64-bit hash (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(seed: int, index: np.ndarray | torch.Tensor, epoch: int = 0) -> np.ndarray:
    """Per-sample random-stream keys (B,) uint64, a hash of (seed, epoch, sample index) alone."""
    index = np.asarray(index, dtype=np.int64).astype(np.uint64)
    head = _mix(np.array([seed % 2**64], dtype=np.uint64) + _GOLDEN)
    head = _mix(head ^ (np.array([epoch % 2**64], dtype=np.uint64) + _GOLDEN))
    return _mix(head ^ _mix(index + _GOLDEN))


def _uniforms(keys: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64 uniforms in [0, 1): draw k of sample b is splitmix64 output k of key b."""
    counters = keys[:, None] + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)  # (B, n), wraps
    return (_mix(counters) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass
class AugDraw:
    """One batch's random parameters, as torchvision v2 would draw them per sample."""

    top: np.ndarray  # (B,) int crop box, input pixels
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray  # (B,) bool
    angle: np.ndarray  # (B,) degrees, counter-clockwise
    rgb_factors: np.ndarray  # (B,3) brightness, contrast, saturation
    rgb_order: np.ndarray  # (B,3) permutation of op ids 0 (b), 1 (c), 2 (s): the order applied
    ir_factors: np.ndarray  # (B,2) brightness, contrast
    ir_order: np.ndarray  # (B,2)


def _jitter_range(amount: float) -> tuple[float, float]:
    return max(0.0, 1.0 - amount), 1.0 + amount  # ColorJitter's [max(0, 1 - x), 1 + x]


def _crop_boxes(u: np.ndarray, height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """RandomResizedCrop.make_params for every sample: the first of 10 tries that fits, else the
    central fallback. u: (B, 2*_CROP_TRIES + 2) uniforms."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:_CROP_TRIES])  # (B, tries)
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, _CROP_TRIES:2 * _CROP_TRIES])
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)  # rint: Python's round, half to even
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, tries)
    first = fits.argmax(axis=1)
    found = fits.any(axis=1)
    rows = np.arange(len(u))
    w, h = w[rows, first], h[rows, first]
    top = np.floor(u[:, -2] * (height - h + 1)).astype(np.int64)
    left = np.floor(u[:, -1] * (width - w + 1)).astype(np.int64)
    # fallback: the central crop at the nearest allowed ratio
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w, h = np.where(found, w, fw), np.where(found, h, fh)
    top = np.where(found, top, (height - fh) // 2)
    left = np.where(found, left, (width - fw) // 2)
    return top, left, h, w


# --- batched tensor ops ------------------------------------------------------------------------

def _jitter(x: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
    """ColorJitter's ops, each a blend clamp(f x + (1-f) target, 0, 1) with target 0 (brightness),
    the mean luma (contrast) or the luma image (saturation); luma is the image itself for one
    channel, as in torchvision. stages (B, n*3): per stage the factor f and the weights of the mean
    luma and of the luma image; a stage is one op per sample, a per-sample colour map
    f I + w_luma 1 g^T plus a bias, applied with one batched matmul."""
    b, c = x.shape[:2]
    eye, luma = _constants(c, x.device, x.dtype)  # (C,C), (C,)
    flat = x.flatten(2)  # (B,C,HW)
    for k in range(stages.shape[1] // 3):
        f, on_mean, on_luma = stages[:, 3 * k:3 * k + 3, None, None].unbind(1)  # (B,1,1)
        colour = torch.addcmul(eye * f, on_luma, luma.expand(1, c, c))  # (B,C,C), rows = luma
        bias = on_mean * (flat.mean(2) @ luma)[:, None, None]  # (B,1,1)
        flat = torch.baddbmm(bias, colour, flat).clamp_(0, 1)  # (B,C,HW)
    return flat.view_as(x)


def _warp(x: torch.Tensor, geom: torch.Tensor, size: int) -> torch.Tensor:
    """Crop+resize, flip and rotate (B,C,H,W) -> (B,C,size,size) with one bilinear sampling.

    Output pixels map through the flip+rotation matrix to the crop's normalised coordinates, then
    through the crop's scale and shift to the input's. Pixels the rotation brings in from outside
    the crop are zero, blended over one pixel as torchvision's bilinear rotate with fill 0 does.
    """
    b = x.shape[0]
    theta = F.pad(geom[:, :4].view(b, 2, 2), (0, 1))  # (B,2,3): no shift, rotation about the centre
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)  # (B,S,S,2) crop coords
    inside = ((1 - grid.abs()) * (size / 2) + 0.5).clamp_(0, 1).prod(-1)  # (B,S,S)
    grid = torch.addcmul(geom[:, None, None, 6:8], grid, geom[:, None, None, 4:6])  # input coords
    # clamped to the crop's pixel centres: resize (crop first) replicates the crop's edge pixels
    grid = grid.clamp(geom[:, None, None, 8:10], geom[:, None, None, 10:12])
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside.unsqueeze(1)  # (B,C,S,S)


_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _cached(key: tuple, make) -> tuple[torch.Tensor, torch.Tensor]:
    """Small constant tensors made once per (device, dtype): no host-to-device copy per batch."""
    if key not in _CONSTANTS:
        _CONSTANTS[key] = make()
    return _CONSTANTS[key]


def _constants(channels: int, device: torch.device, dtype: torch.dtype):
    """(C,C) identity and (C,) luma weights (torchvision's for 3 channels, 1 for one)."""
    return _cached(("jitter", channels, device, dtype), lambda: (
        torch.eye(channels, dtype=dtype, device=device),
        torch.tensor(GRAY_WEIGHTS if channels == 3 else (1.0,) * channels, dtype=dtype, device=device)))


def _rgb_affine(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,3,1,1) scale 1/std and shift -mean/std of the RGB normalisation."""
    def make():
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (RGB_MEAN, RGB_STD))
        return (1 / std).to(device, dtype), (-mean / std).to(device, dtype)

    return _cached(("rgb", device, dtype), make)


def normalize(rgb: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x - mean) / std per modality, each in one pass."""
    scale, shift = _rgb_affine(rgb.device, rgb.dtype)
    return torch.addcmul(shift, rgb, scale), torch.add(ir, -IR_MEAN).mul_(1 / IR_STD)


class PairedTransform:
    """(rgb uint8 (B,3,S,S), ir uint (B,C,S,S)) -> normalised float tensors of the same shapes.

    C may be 0 (RGB-only data), 1 or 3. With train=True, each sample's augmentation is a pure
    function of its key (`sample_keys`); without keys they are drawn from torch's global CPU RNG.
    `set_epoch` gives every sample a new view per epoch (see `firekd.data.dataset.apply_transform`).
    """

    def __init__(self, size: int, *, train: bool, ir_max: float = 255.0, crop_scale=(0.6, 1.0),
                 crop_ratio=(3 / 4, 4 / 3), rotation: float = 10.0, rgb_jitter: float = 0.3,
                 ir_jitter: float = 0.1) -> None:
        self.size, self.train, self.ir_max = size, train, ir_max
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.rotation = rotation
        self.rgb_jitter, self.ir_jitter = rgb_jitter, ir_jitter
        # in shared memory: loader workers, persistent ones included, see set_epoch() of the main
        # process (the loader sends no work for an epoch before it is iterated)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Key the augmentation by this epoch from now on: call before iterating the epoch."""
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __call__(self, rgb: torch.Tensor, ir: torch.Tensor,
                 keys: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = rgb.float().div_(255.0)
        ir = ir.float().div_(self.ir_max)
        if self.train:
            if keys is None:
                keys = sample_keys(int(torch.randint(2**62, ())), np.arange(len(rgb)))
            draw = self.draw(keys, rgb.shape[-2], rgb.shape[-1])
            rgb, ir = self.augment(rgb, ir, self.pack(draw, rgb.shape[-2], rgb.shape[-1]))
        return normalize(rgb, ir)

    def draw(self, keys: np.ndarray, height: int, width: int) -> AugDraw:
        """Every sample's parameters from its key, with torchvision v2's distributions."""
        crop = 2 * _CROP_TRIES + 2  # (scale, ratio) per try, then top and left
        # then flip, angle, RGB factors (3) and order (3), IR factors (2) and order (2)
        u = _uniforms(np.asarray(keys, dtype=np.uint64), crop + 12)
        top, left, h, w = _crop_boxes(u[:, :crop], height, width, self.crop_scale, self.crop_ratio)
        u = u[:, crop:]
        lo, hi = _jitter_range(self.rgb_jitter)
        ir_lo, ir_hi = _jitter_range(self.ir_jitter)
        return AugDraw(
            top=top, left=left, height=h, width=w,
            flip=u[:, 0] < 0.5,
            angle=self.rotation * (2 * u[:, 1] - 1),
            rgb_factors=lo + (hi - lo) * u[:, 2:5],
            rgb_order=np.argsort(u[:, 5:8], axis=1),  # a uniform random permutation
            ir_factors=ir_lo + (ir_hi - ir_lo) * u[:, 8:10],
            ir_order=np.argsort(u[:, 10:12], axis=1),
        )

    @staticmethod
    def pack(draw: AugDraw, height: int, width: int) -> np.ndarray:
        """(B, _NPARAM) float32: the affine maps and jitter stages the batched ops take."""
        b = len(draw.top)
        out = np.zeros((b, _NPARAM), dtype=np.float32)
        rad = np.deg2rad(draw.angle)
        cos, sin = np.cos(rad), np.sin(rad)
        sign = np.where(draw.flip, -1.0, 1.0)  # hflip of the resized crop: x -> -x
        # output -> crop coordinates: flip(rotation^-1); torchvision rotates counter-clockwise
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = sign * cos, -sign * sin, sin, cos
        # crop -> input coordinates (normalised, align_corners=False)
        out[:, 4], out[:, 5] = draw.width / width, draw.height / height
        out[:, 6] = (2 * draw.left + draw.width) / width - 1
        out[:, 7] = (2 * draw.top + draw.height) / height - 1
        out[:, 8], out[:, 9] = (2 * draw.left + 1) / width - 1, (2 * draw.top + 1) / height - 1
        out[:, 10] = (2 * (draw.left + draw.width) - 1) / width - 1
        out[:, 11] = (2 * (draw.top + draw.height) - 1) / height - 1
        out[:, _RGB_JIT] = _stages(draw.rgb_factors, draw.rgb_order)
        out[:, _IR_JIT] = _stages(draw.ir_factors, draw.ir_order)
        return out

    def augment(self, rgb: torch.Tensor, ir: torch.Tensor,
                params: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp RGB and IR (floats in [0, 1]) together, then jitter each; params from `pack`."""
        p = torch.from_numpy(params)
        if rgb.device.type == "cuda":
            p = p.pin_memory().to(rgb.device, non_blocking=True)  # the step's only copy, async
        else:
            p = p.to(rgb.device)
        both = _warp(torch.cat([rgb, ir], dim=1), p[:, _GEOM], self.size)  # (B,3+C,S,S)
        rgb, ir = both[:, :3], both[:, 3:]
        rgb = _jitter(rgb, p[:, _RGB_JIT])
        if ir.shape[1]:
            ir = _jitter(ir, p[:, _IR_JIT])
        return rgb, ir


def _stages(factors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(B,n) factors in op order and (B,n) op permutations -> (B, 3n) per applied stage: factor,
    weight of the mean luma (contrast, op 1), weight of the luma image (saturation, op 2)."""
    f = np.take_along_axis(factors, order, axis=1)  # (B,n) factor of the op applied at stage k
    rest = 1.0 - f
    return np.stack([f, rest * (order == 1), rest * (order == 2)], axis=2).reshape(len(f), -1)
