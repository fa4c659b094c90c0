"""The 10 real FLAME 3 pairs (../shared, skipped when absent) end to end at 224 px: the data layer
detects colour-mapped (3-channel JPEG) and radiometric (1-channel float TIFF, deg C) IR, every
teacher and the student run forward on a loader batch, and augmentation keeps RGB and IR registered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_data

from firekd.config import DataConfig
from firekd.data.dataset import make_loader
from firekd.data.images import DEFAULT_RANGES
from firekd.data.transforms import PairedTransform
from firekd.models import create_student, create_teacher
from firekd.recipes.data import load_data

SIZE = 224
TEACHERS = ("resnet152", "efficientnet_b7", "swin_tiny", "vit_b_16")
FORMATS = {"data.csv": ("8bit", 3), "data_radiometric.csv": ("float", 1)}


def real_bundle(csv: str):
    return load_data(DataConfig(csv=str(shared_data("flame3-pairs", csv)), img_size=SIZE))


def first_batch(bundle, *, train: bool, batch_size: int = 2):
    transform = PairedTransform(SIZE, train=train, ir_max=bundle.ir_spec.max_value)
    loader = make_loader(bundle.dataset("train"), batch_size=batch_size, train=train,
                         transform=transform, seed=0, generator=torch.Generator().manual_seed(0))
    return next(iter(loader))


def check_radiometric_scale(bundle) -> None:
    """The decoded maximum maps back to the file's hottest pixel (max_temp_c, deg C), a little
    lower since the resize to 224 px averages small flames with their surroundings; the median
    is ambient ground."""
    lo, hi = DEFAULT_RANGES["float"]
    peaks = pd.read_csv(bundle.config.csv)["max_temp_c"].to_numpy()
    source = bundle.dataset("train").source
    for position, row in enumerate(bundle.records["row"]):
        ir = source(position)[1].astype(np.float64) / bundle.ir_spec.max_value * (hi - lo) + lo
        peak = peaks[row - 2]  # CSV line 2 is the first data row
        assert 0.85 * peak < ir.max() <= peak + 1 and -20 < np.median(ir) < 60


@pytest.mark.slow
def test_real_flame3_pairs_through_data_layer_and_every_model():
    batches = {}
    for csv, (kind, channels) in FORMATS.items():
        bundle = real_bundle(csv)
        report = bundle.report
        assert (report.ir.kind, report.ir.channels) == (kind, channels)
        assert report.rgb_sizes == report.ir_sizes == {(640, 512): 10} and report.mismatched_pairs == 0
        rgb, ir, labels, _ = first_batch(bundle, train=True)
        assert rgb.shape == (2, 3, SIZE, SIZE) and ir.shape == (2, channels, SIZE, SIZE)
        assert torch.isfinite(rgb).all() and torch.isfinite(ir).all() and (labels == 1).all()
        assert ir.std() > 0.05  # real thermal structure survived decoding and normalisation
        batches[channels] = (rgb, ir)
    check_radiometric_scale(real_bundle("data_radiometric.csv"))
    with torch.no_grad():
        for name in TEACHERS:
            for channels, (rgb, ir) in batches.items():
                model = create_teacher(name, ir_channels=channels, img_size=SIZE, pretrained=False).eval()
                logits, embedding = model(rgb, ir)
                assert logits.shape == (2, 2) and embedding.shape == (2, model.embed_dim)
                assert torch.isfinite(logits).all() and torch.isfinite(embedding).all(), name
                del model
        student = create_student("firekd_student").eval()
        logits, embedding = student(batches[1][0])
        assert logits.shape == (2, 2) and torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def marked(rgb: torch.Tensor, ir: torch.Tensor, ir_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair with the same off-centre square pushed to the far end of each value range."""
    rgb, ir_wide = rgb.clone(), ir.to(torch.int32)  # few ops exist for uint16 tensors
    box = (slice(None), slice(None), slice(84, 108), slice(136, 160))
    rgb[box] = torch.where(rgb[box] > 127, 0, 255).to(rgb.dtype)
    ir_wide[box] = torch.where(ir_wide[box] > ir_max / 2, 0, int(ir_max)).to(torch.int32)
    return rgb, ir_wide.to(ir.dtype)


def marker_mask(with_mark: torch.Tensor, without: torch.Tensor) -> torch.Tensor:
    """Where the marker ended up after augmentation: (B,S,S) booleans."""
    diff = (with_mark - without).abs().amax(dim=1)
    return diff > 0.5 * diff.amax(dim=(1, 2), keepdim=True)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a & b).sum(dim=(1, 2)) / (a | b).sum(dim=(1, 2)).clamp(min=1)


def augment(transform: PairedTransform, rgb, ir, seed: int):
    torch.manual_seed(seed)
    return transform(rgb, ir)


@pytest.mark.slow
@pytest.mark.parametrize("csv", list(FORMATS))
def test_real_pairs_stay_registered_after_augmentation(csv: str):
    """Same marker in RGB and IR; after one paired augmentation it must land on the same pixels.
    The control (RGB and IR augmented with different draws) shows the check would catch that."""
    bundle = real_bundle(csv)
    source = bundle.dataset("train").source
    pairs = [source(k) for k in range(4)]
    rgb = torch.from_numpy(np.stack([p[0] for p in pairs]))
    ir = torch.from_numpy(np.stack([p[1] for p in pairs]))
    ir_max = bundle.ir_spec.max_value
    transform = PairedTransform(SIZE, train=True, ir_max=ir_max)
    rgb_m, ir_m = marked(rgb, ir, ir_max)
    masks = {}
    for seed in (1, 2):
        plain_rgb, plain_ir = augment(transform, rgb, ir, seed)
        mark_rgb, mark_ir = augment(transform, rgb_m, ir_m, seed)
        masks[seed] = (marker_mask(mark_rgb, plain_rgb), marker_mask(mark_ir, plain_ir))
    for rgb_mask, ir_mask in masks.values():
        assert (rgb_mask.sum(dim=(1, 2)) > 100).all() and (iou(rgb_mask, ir_mask) > 0.8).all()
    crossed = iou(masks[1][0], masks[2][1])  # RGB drawn with seed 1, IR with seed 2
    assert crossed.mean() < 0.4, crossed
