"""Paired augmentation keeps RGB and IR registered; photometric jitter is per modality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from firekd.data.dataset import apply_transform
from firekd.data.transforms import IR_MEAN, IR_STD, RGB_MEAN, RGB_STD, PairedTransform


def _marker_batch(n: int, size: int, ir_channels: int = 1, ir_dtype=torch.uint8):
    rng = np.random.default_rng(0)
    rgb = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    ir = torch.zeros(n, ir_channels, size, size, dtype=ir_dtype)
    top = 255 if ir_dtype == torch.uint8 else 65535
    for k in range(n):
        y, x = rng.integers(size // 4, 3 * size // 4, size=2)
        rgb[k, :, y - 1:y + 2, x - 1:x + 2] = 255
        ir[k, :, y - 1:y + 2, x - 1:x + 2] = top
    return rgb, ir


def _argmax_yx(img: torch.Tensor) -> tuple[int, int]:
    flat = img.sum(0).flatten().argmax().item()
    return divmod(flat, img.shape[-1])


@pytest.mark.parametrize("size,ir_channels,dtype", [(64, 1, torch.uint8), (224, 3, torch.uint8),
                                                    (64, 1, torch.uint16)])
def test_marker_lands_on_the_same_pixel_in_rgb_and_ir(size, ir_channels, dtype):
    rgb, ir = _marker_batch(16, size, ir_channels, dtype)
    tf = PairedTransform(size, train=True, ir_max=255.0 if dtype == torch.uint8 else 65535.0)
    batch = apply_transform(tf, (rgb, ir, torch.zeros(16, 2), torch.arange(16)), seed=1)
    moved = 0
    for k in range(16):
        yx_rgb, yx_ir = _argmax_yx(batch[0][k]), _argmax_yx(batch[1][k])
        assert abs(yx_rgb[0] - yx_ir[0]) <= 1 and abs(yx_rgb[1] - yx_ir[1]) <= 1, k
        moved += yx_rgb != _argmax_yx(rgb[k].float())
    assert moved >= 8  # the augmentation really moved most markers


def test_photometric_jitter_is_drawn_per_modality():
    rgb = torch.full((32, 3, 16, 16), 128, dtype=torch.uint8)
    ir = torch.full((32, 1, 16, 16), 128, dtype=torch.uint8)
    tf = PairedTransform(16, train=True, crop_scale=(1.0, 1.0), rotation=0.0)
    out_rgb, out_ir, _, _ = apply_transform(tf, (rgb, ir, torch.zeros(32, 2), torch.arange(32)), 0)
    rgb_gain = out_rgb[:, 0].mean(dim=(1, 2))
    ir_gain = out_ir[:, 0].mean(dim=(1, 2))
    assert rgb_gain.std() > 0 and ir_gain.std() > 0
    assert abs(np.corrcoef(rgb_gain.numpy(), ir_gain.numpy())[0, 1]) < 0.9


def test_eval_transform_only_scales_and_normalises():
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ir = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    out_rgb, out_ir = PairedTransform(8, train=False)(rgb, ir)
    mean, std = torch.tensor(RGB_MEAN).view(1, 3, 1, 1), torch.tensor(RGB_STD).view(1, 3, 1, 1)
    expect = (rgb.float() / 255 - mean) / std
    assert torch.allclose(out_rgb, expect)
    assert torch.allclose(out_ir, (ir.float() / 255 - IR_MEAN) / IR_STD)


def test_augmentation_depends_only_on_seed_and_indices():
    rgb, ir = _marker_batch(4, 32)
    tf = PairedTransform(32, train=True)
    labels = torch.zeros(4, 2)
    a = apply_transform(tf, (rgb, ir, labels, torch.arange(4)), seed=7)
    torch.manual_seed(123)  # the caller's RNG state must not matter, nor be changed
    state = torch.get_rng_state()
    b = apply_transform(tf, (rgb, ir, labels, torch.arange(4)), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = apply_transform(tf, (rgb, ir, labels, torch.arange(4)), seed=8)
    assert not torch.equal(a[0], c[0])


def test_rgb_only_batches_pass_through():
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ir = torch.zeros(2, 0, 32, 32, dtype=torch.uint8)
    out_rgb, out_ir, _, _ = apply_transform(PairedTransform(32, train=True),
                                            (rgb, ir, torch.zeros(2, 2), torch.arange(2)), 0)
    assert out_rgb.shape == (2, 3, 32, 32) and out_ir.shape == (2, 0, 32, 32)
