"""The four spec teachers and the student at the spec's 224 px, run forward on a loader batch of
generated pairs in both IR formats (colour-mapped 3-channel JPEG, radiometric 1-channel float TIFF):
what test_real_flame3 checks on the real pairs, here without ../shared (a plain clone runs it). Each
teacher is built once, at 224 px, and its parameter count checked against the spec's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from firekd.config import DataConfig
from firekd.data.dataset import make_loader
from firekd.data.transforms import PairedTransform
from firekd.metrics.efficiency import parameter_count
from firekd.models import create_student, create_teacher
from firekd.models.teachers import SPEC_PARAMS_M
from firekd.recipes.data import load_data

SIZE = 224
# each teacher once, the IR formats alternating (both IR stems are also tested at small sizes)
TEACHERS = {"resnet152": 3, "efficientnet_b7": 1, "swin_tiny": 1, "vit_b_16": 3}


def _pairs(folder: Path, channels: int, n: int = 20) -> Path:
    """``n`` 80x64 pairs, every second one with a hot spot; returns the CSV."""
    rng = np.random.default_rng(channels)
    rows = ["rgb_path,ir_path,fire,smoke"]
    for k in range(n):
        fire = k % 2
        rgb = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"rgb_{k}.jpg")
        celsius = rng.uniform(10, 30, (64, 80)).astype(np.float32)
        celsius[20:30, 30:40] += 400 * fire
        if channels == 1:
            ir_name = f"ir_{k}.tiff"
            tifffile.imwrite(folder / ir_name, celsius)
        else:
            ir_name = f"ir_{k}.jpg"
            mapped = np.clip(celsius / 450 * 255, 0, 255).astype(np.uint8)
            Image.fromarray(np.stack([mapped, mapped // 2, 255 - mapped], axis=-1)).save(folder / ir_name)
        rows.append(f"rgb_{k}.jpg,{ir_name},{fire},{k // 2 % 2}")
    csv = folder / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{IR channels: (rgb, ir)}: a training batch of 2 at 224 px from each format."""
    out = {}
    for channels, kind in ((1, "float"), (3, "8bit")):
        folder = tmp_path_factory.mktemp(f"pairs_{channels}")
        bundle = load_data(DataConfig(csv=str(_pairs(folder, channels)), img_size=SIZE, cache=False,
                                        split_ratios=(0.6, 0.2, 0.2)))
        assert (bundle.report.ir.kind, bundle.report.ir.channels) == (kind, channels)
        transform = PairedTransform(SIZE, train=True, ir_max=bundle.ir_spec.max_value)
        loader = make_loader(bundle.dataset("train"), batch_size=2, train=True, transform=transform, seed=0,
                             generator=torch.Generator().manual_seed(0))
        rgb, ir, _, _ = next(iter(loader))
        assert rgb.shape == (2, 3, SIZE, SIZE) and ir.shape == (2, channels, SIZE, SIZE)
        assert torch.isfinite(ir).all() and ir.std() > 0.05
        out[channels] = rgb, ir
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEACHERS))
def test_spec_teacher_at_224_has_the_spec_size_and_runs_forward(name: str, batches):
    channels = TEACHERS[name]
    rgb, ir = batches[channels]
    model = create_teacher(name, ir_channels=channels, img_size=SIZE, pretrained=False).eval()
    count = parameter_count(model) / 1e6
    assert abs(count - SPEC_PARAMS_M[name]) <= 0.25 * SPEC_PARAMS_M[name], count
    with torch.no_grad():
        logits, embedding = model(rgb, ir)
    assert logits.shape == (2, 2) and embedding.shape == (2, model.embed_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_student_forward_at_224(batches):
    rgb, _ = batches[1]
    with torch.no_grad():
        logits, embedding = create_student("firekd_student").eval()(rgb)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all() and torch.isfinite(embedding).all()
