"""Paired augmentation keeps RGB and IR registered; photometric jitter is per modality.

The batched transform draws torchvision v2's parameters per sample on the host and applies them
with a fixed number of tensor ops: checked against torchvision's own draws and kernels here.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from firekd.data.dataset import PairedDataset, apply_transform, make_loader
from firekd.data.transforms import (
    IR_MEAN,
    IR_STD,
    RGB_MEAN,
    RGB_STD,
    AugDraw,
    PairedTransform,
    sample_keys,
)
from firekd.engine.runtime import Runtime


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


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """(y, x) of the marker: mean position of the pixels above half its height over background
    (jitter saturates the marker to a plateau, so the argmax would be an arbitrary plateau pixel)."""
    m = img.float().sum(0)
    m = m - m.median()
    yx = torch.nonzero(m > 0.5 * m.max()).float()
    return yx.mean(0)


def _batch(rgb, ir, index=None):
    index = torch.arange(len(rgb)) if index is None else torch.as_tensor(index)
    return rgb, ir, torch.zeros(len(rgb), 2), index


def _draw(n: int, *, size: int, top=0, left=0, h=None, w=None, flip=False, angle=0.0) -> AugDraw:
    return AugDraw(top=np.full(n, top), left=np.full(n, left), height=np.full(n, h or size),
                   width=np.full(n, w or size), flip=np.full(n, flip), angle=np.full(n, angle),
                   rgb_factors=np.ones((n, 3)), rgb_order=np.tile([0, 1, 2], (n, 1)),
                   ir_factors=np.ones((n, 2)), ir_order=np.tile([0, 1], (n, 1)))


# --- registration and the existing contract ------------------------------------------------------

@pytest.mark.parametrize("size,ir_channels,dtype", [(64, 1, torch.uint8), (224, 3, torch.uint8),
                                                    (64, 1, torch.uint16)])
def test_marker_lands_on_the_same_pixel_in_rgb_and_ir(size, ir_channels, dtype):
    rgb, ir = _marker_batch(16, size, ir_channels, dtype)
    tf = PairedTransform(size, train=True, ir_max=255.0 if dtype == torch.uint8 else 65535.0)
    out_rgb, out_ir, _, _ = apply_transform(tf, _batch(rgb, ir), seed=1)
    moved = 0
    for k in range(16):
        at_rgb, at_ir = _centroid(out_rgb[k]), _centroid(out_ir[k])
        assert (at_rgb - at_ir).abs().max() < 0.75, k
        moved += bool((at_rgb - _centroid(rgb[k])).abs().max() > 1)
    assert moved >= 8  # the augmentation really moved most markers


def test_composed_warp_puts_the_marker_where_torchvision_does():
    """Crop, flip and rotation composed into one map = torchvision's three steps in sequence."""
    size = 64
    rgb, ir = _marker_batch(1, size)
    tf = PairedTransform(size, train=True)
    for top, left, h, w, flip, angle in [(4, 10, 44, 50, True, 9.0), (0, 0, 64, 40, False, -8.0),
                                         (20, 3, 40, 36, True, -3.0)]:
        draw = _draw(1, size=size, top=top, left=left, h=h, w=w, flip=flip, angle=angle)
        ours, _ = tf.augment(rgb.float() / 255, ir.float() / 255, tf.pack(draw, size, size))
        ref = TF.resized_crop(rgb[0].float() / 255, top, left, h, w, [size, size], antialias=True)
        ref = TF.horizontal_flip(ref) if flip else ref
        ref = TF.rotate(ref, angle, interpolation=v2.InterpolationMode.BILINEAR)
        assert (_centroid(ours[0]) - _centroid(ref)).abs().max() < 0.5, (top, left, angle)


def test_crop_and_flip_equal_torchvision_resized_crop():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 48, 48, generator=g)
    ir = torch.rand(2, 1, 48, 48, generator=g)
    tf = PairedTransform(48, train=True)
    for flip in (False, True):
        draw = _draw(2, size=48, top=5, left=0, h=30, w=41, flip=flip)
        out_rgb, out_ir = tf.augment(rgb, ir, tf.pack(draw, 48, 48))
        ref = TF.resized_crop(torch.cat([rgb, ir], 1), 5, 0, 30, 41, [48, 48], antialias=True)
        ref = TF.horizontal_flip(ref) if flip else ref
        assert torch.allclose(torch.cat([out_rgb, out_ir], 1), ref, atol=1e-5)


def test_rotation_equals_torchvision_bilinear_rotate():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 40, generator=g)
    tf = PairedTransform(40, train=True)
    for angle in (7.5, -10.0):
        out, _ = tf.augment(x, x[:, :0], tf.pack(_draw(1, size=40, angle=angle), 40, 40))
        ref = TF.rotate(x, angle, interpolation=v2.InterpolationMode.BILINEAR)
        inside = TF.rotate(torch.ones_like(x), angle, interpolation=v2.InterpolationMode.BILINEAR)
        interior = inside == 1  # torchvision's zero padding darkens its edge pixels differently
        assert interior.float().mean() > 0.7
        assert torch.allclose(out[interior], ref[interior], atol=1e-5)
        assert out[inside == 0].abs().max() == 0  # the corners outside the image are filled with 0


def test_jitter_equals_torchvision_ops_in_the_drawn_order():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 16, 16, generator=g)
    ir = torch.rand(6, 3, 16, 16, generator=g)  # colour-mapped IR: contrast uses its luma
    tf = PairedTransform(16, train=True)
    draw = _draw(6, size=16)
    perms = list(itertools.permutations(range(3)))
    draw.rgb_order = np.array(perms)
    draw.rgb_factors = 0.7 + 0.6 * np.random.default_rng(0).random((6, 3))
    draw.ir_order = np.array([[0, 1], [1, 0]] * 3)
    draw.ir_factors = 0.9 + 0.2 * np.random.default_rng(1).random((6, 2))
    out_rgb, out_ir = tf.augment(rgb, ir, tf.pack(draw, 16, 16))
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for k in range(6):
        ref_rgb, ref_ir = rgb[k], ir[k]
        for op in draw.rgb_order[k]:
            ref_rgb = ops[op](ref_rgb, float(draw.rgb_factors[k, op]))
        for op in draw.ir_order[k]:
            ref_ir = ops[op](ref_ir, float(draw.ir_factors[k, op]))
        assert torch.allclose(out_rgb[k], ref_rgb, atol=1e-5), k
        assert torch.allclose(out_ir[k], ref_ir, atol=1e-5), k


def test_photometric_jitter_is_drawn_per_modality():
    rgb = torch.full((32, 3, 16, 16), 128, dtype=torch.uint8)
    ir = torch.full((32, 1, 16, 16), 128, dtype=torch.uint8)
    tf = PairedTransform(16, train=True, crop_scale=(1.0, 1.0), rotation=0.0)
    out_rgb, out_ir, _, _ = apply_transform(tf, _batch(rgb, ir), 0)
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


def test_rgb_only_batches_pass_through():
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ir = torch.zeros(2, 0, 32, 32, dtype=torch.uint8)
    out_rgb, out_ir, _, _ = apply_transform(PairedTransform(32, train=True), _batch(rgb, ir), 0)
    assert out_rgb.shape == (2, 3, 32, 32) and out_ir.shape == (2, 0, 32, 32)


# --- seeding -------------------------------------------------------------------------------------

def test_augmentation_depends_only_on_seed_and_indices():
    rgb, ir = _marker_batch(4, 32)
    tf = PairedTransform(32, train=True)
    a = apply_transform(tf, _batch(rgb, ir), seed=7)
    torch.manual_seed(123)  # the caller's RNG state must not matter, nor be changed
    state = torch.get_rng_state()
    b = apply_transform(tf, _batch(rgb, ir), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = apply_transform(tf, _batch(rgb, ir), seed=8)
    assert not torch.equal(a[0], c[0])


def test_no_global_generator_is_reseeded(monkeypatch):
    """The old fork_rng(devices=[]) + manual_seed reseeded every CUDA generator behind the caller."""
    def boom(*args, **kwargs):
        raise AssertionError("apply_transform reseeded a global generator")

    for target, name in [(torch, "manual_seed"), (torch.random, "manual_seed"), (torch, "seed"),
                         (torch.cuda, "manual_seed"), (torch.cuda, "manual_seed_all"),
                         (torch.random, "fork_rng")]:
        monkeypatch.setattr(target, name, boom)
    rgb, ir = _marker_batch(4, 32)
    apply_transform(PairedTransform(32, train=True), _batch(rgb, ir), seed=3)


def test_a_sample_gets_the_same_view_in_any_batch():
    rgb, ir = _marker_batch(8, 32, ir_channels=3)
    tf = PairedTransform(32, train=True)
    full = apply_transform(tf, _batch(rgb, ir, range(100, 108)), seed=5, epoch=2)
    pick = [6, 1, 3]
    part = apply_transform(tf, _batch(rgb[pick], ir[pick], [106, 101, 103]), seed=5, epoch=2)
    assert torch.allclose(full[0][pick], part[0], atol=1e-6)
    assert torch.allclose(full[1][pick], part[1], atol=1e-6)
    other_epoch = apply_transform(tf, _batch(rgb, ir, range(100, 108)), seed=5, epoch=3)
    assert not torch.allclose(full[0], other_epoch[0])  # a new view every epoch


def test_sample_keys_are_distinct():
    keys = {int(k) for seed, epoch in itertools.product(range(3), range(3))
            for k in sample_keys(seed, np.arange(500), epoch)}
    assert len(keys) == 9 * 500


# --- distributions: the same as torchvision v2's draws -------------------------------------------

N = 4000


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(), x.std()


def _close(ours, theirs, label: str) -> None:
    """Means within 5 standard errors of the difference, standard deviations within 8%."""
    (m1, s1), (m2, s2) = _stats(ours), _stats(theirs)
    assert abs(m1 - m2) < 5 * math.sqrt((s1**2 + s2**2) / N) + 1e-9, (label, m1, m2)
    assert abs(s1 - s2) <= 0.08 * max(s1, s2) + 1e-9, (label, s1, s2)


@pytest.mark.parametrize("height,width,scale", [(64, 64, (0.6, 1.0)), (48, 80, (0.6, 1.0)),
                                                (64, 64, (1.0, 1.0))])
def test_crop_boxes_follow_torchvision(height, width, scale):
    tf = PairedTransform(64, train=True, crop_scale=scale)
    ours = tf.draw(sample_keys(0, np.arange(N)), height, width)
    rrc = v2.RandomResizedCrop(64, scale=scale)
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = [rrc.make_params([image]) for _ in range(N)]
    for field, key in [("top", "top"), ("left", "left"), ("height", "height"), ("width", "width")]:
        _close(getattr(ours, field), [p[key] for p in theirs], field)
    area = ours.height * ours.width / (height * width)
    assert area.min() >= scale[0] - 0.05 and area.max() <= 1.0
    assert (ours.top + ours.height <= height).all() and (ours.left + ours.width <= width).all()


def test_flip_rotation_and_jitter_follow_torchvision():
    tf = PairedTransform(32, train=True)
    d = tf.draw(sample_keys(1, np.arange(N)), 32, 32)
    assert abs(d.flip.mean() - 0.5) < 5 * 0.5 / math.sqrt(N)
    torch.manual_seed(0)
    rotation = v2.RandomRotation(10.0)
    _close(d.angle, [rotation.make_params([])["angle"] for _ in range(N)], "angle")
    assert -10 <= d.angle.min() < -9.9 and 9.9 < d.angle.max() <= 10
    for jitter, factors, order, ops in [(v2.ColorJitter(0.3, 0.3, 0.3), d.rgb_factors, d.rgb_order, 3),
                                        (v2.ColorJitter(0.1, 0.1), d.ir_factors, d.ir_order, 2)]:
        theirs = [jitter.make_params([]) for _ in range(N)]
        names = ("brightness_factor", "contrast_factor", "saturation_factor")[:ops]
        for k, name in enumerate(names):
            _close(factors[:, k], [p[name] for p in theirs], name)
        # the order the present ops run in: every permutation as often as torchvision's
        their_orders = [tuple(int(i) for i in p["fn_idx"] if i < ops) for p in theirs]
        for perm in itertools.permutations(range(ops)):
            ours_rate = np.mean([tuple(o) == perm for o in order])
            their_rate = np.mean([o == perm for o in their_orders])
            assert abs(ours_rate - their_rate) < 5 * math.sqrt(2 * 0.25 / N), perm


# --- cost: a fixed number of ops per batch ---------------------------------------------------------

class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("ir_channels", [0, 1, 3])
def test_op_count_does_not_grow_with_the_batch(ir_channels):
    tf = PairedTransform(32, train=True)
    counts = []
    for n in (4, 64):
        rgb, ir = _marker_batch(n, 32, ir_channels=ir_channels)
        with _CountOps() as ops:
            apply_transform(tf, _batch(rgb, ir), seed=0)
        counts.append(ops.count)
    assert counts[0] == counts[1] and counts[0] < 150, counts


# --- a new view every epoch, in loader workers too -----------------------------------------------

class _Markers:
    """A SampleSource: one marker image pair per row."""

    def __call__(self, position: int):
        rgb, ir = _marker_batch(position + 1, 32)
        return rgb[-1].numpy(), ir[-1].numpy()


def _views(loader) -> torch.Tensor:
    return torch.cat([rgb for rgb, _, _, _ in loader])


def test_set_epoch_reaches_persistent_loader_workers():
    records = pd.DataFrame({"row": np.arange(8) + 2, "fire": 0, "smoke": 0})
    dataset = PairedDataset(records, np.arange(8), _Markers())
    tf = PairedTransform(32, train=True)
    loaders = [make_loader(dataset, batch_size=4, train=False, transform=tf, seed=1, num_workers=n)
               for n in (0, 1)]
    assert loaders[1].persistent_workers
    views = {}
    for epoch in (1, 2, 1):
        tf.set_epoch(epoch)
        in_process, in_worker = _views(loaders[0]), _views(loaders[1])
        assert torch.equal(in_process, in_worker)  # the worker saw the epoch, and the same draws
        views.setdefault(epoch, in_worker)
        assert torch.equal(views[epoch], in_worker)
    assert not torch.allclose(views[1], views[2])


def test_device_transform_follows_the_epoch():
    tfs = (PairedTransform(16, train=True), PairedTransform(16, train=False))
    rt = Runtime(torch.device("cpu"), device_transforms=tfs, seed=3)
    rgb, ir = _marker_batch(4, 16)
    first = rt.to_device(_batch(rgb, ir), train=True)[0]
    assert torch.equal(rt.to_device(_batch(rgb, ir), train=True)[0], first)
    tfs[0].set_epoch(2)
    assert not torch.equal(rt.to_device(_batch(rgb, ir), train=True)[0], first)


def test_loader_workers_draw_the_device_transforms_parameters_whatever_their_number():
    """With the transform on the device, the workers draw each sample's parameters from (seed,
    epoch, index) alone: the same with 0 or 2 workers, and the same views as a draw in the
    training process (the batch of four, as before)."""
    records = pd.DataFrame({"row": np.arange(8) + 2, "fire": 0, "smoke": 0})
    dataset = PairedDataset(records, np.arange(8), _Markers())
    tf = PairedTransform(32, train=True)
    rt = Runtime(torch.device("cpu"), seed=1, device_transforms=(tf, PairedTransform(32, train=False)))
    tf.set_epoch(3)
    drawn = []
    for workers in (0, 2):
        loader = make_loader(dataset, batch_size=4, train=True, transform=None, draw=tf, seed=1,
                             num_workers=workers, generator=torch.Generator().manual_seed(workers))
        params = {}
        for batch in loader:
            assert len(batch) == 5 and batch[0].dtype == torch.uint8
            params.update({int(i): p for i, p in zip(batch[3], batch[4], strict=True)})
            on_device = rt.to_device(batch, train=True)
            on_host = rt.to_device(batch[:4], train=True)
            assert all(torch.equal(a, b) for a, b in zip(on_device, on_host, strict=True))
        drawn.append(params)
    assert drawn[0].keys() == drawn[1].keys() == set(range(8))
    expected = tf.params_for(sample_keys(1, np.arange(8), 3), 32, 32)
    for i in range(8):
        assert torch.equal(drawn[0][i], drawn[1][i])
        assert np.array_equal(drawn[0][i].numpy(), expected[i])


def test_runtime_batches_on_the_cpu_are_to_device_of_each_batch():
    rgb, ir = _marker_batch(4, 32)
    batches = [_batch(rgb, ir), _batch(rgb.flip(0), ir.flip(0), [4, 5, 6, 7])]
    rt = Runtime(torch.device("cpu"), seed=2,
                 device_transforms=(PairedTransform(32, train=True), PairedTransform(32, train=False)))
    got = list(rt.batches(batches, train=True))
    for out, batch in zip(got, batches, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(out, rt.to_device(batch, train=True), strict=True))
