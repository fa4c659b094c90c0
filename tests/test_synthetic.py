"""The synthetic generator: deterministic, labels consistent with content, accepted by the data
layer, and IR carries information that RGB lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firekd.cli import main
from firekd.config import DataConfig
from firekd.data.synthetic import SynthConfig, generate, make_sample
from firekd.metrics.classification import classification_scores
from firekd.recipes.data import load_data


def test_deterministic_for_a_seed_and_independent_of_n_and_workers():
    a = list(generate(SynthConfig(n=12, size=32, seed=4)))
    b = list(generate(SynthConfig(n=20, size=32, seed=4), workers=2, chunk=5))[:12]
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.ir, y.ir) for x, y in zip(a, b, strict=True))
    c = make_sample(SynthConfig(size=32, seed=5), 0)
    assert not np.array_equal(a[0].rgb, c.rgb)


def test_labels_match_content():
    samples = list(generate(SynthConfig(n=300, size=48, seed=1)))
    for s in samples:
        if s.fire:  # every fire is hot in IR
            assert s.ir.max() > 0.85 * 255
        else:  # warm surfaces stay well below fire temperature
            assert s.ir.max() < 0.65 * 255
    fire = np.array([s.fire for s in samples])
    smoke = np.array([s.smoke for s in samples])
    hidden = np.array([s.hidden_fire for s in samples])
    assert 0.3 < fire.mean() < 0.6 and 0.3 < smoke.mean() < 0.6
    assert hidden[fire == 1].mean() > 0.2 and not hidden[fire == 0].any()


def test_prevalence_is_configurable():
    samples = list(generate(SynthConfig(n=200, size=32, seed=0, fire_rate=0.1, smoke_rate=0.9)))
    assert np.mean([s.fire for s in samples]) < 0.2 and np.mean([s.smoke for s in samples]) > 0.8


def test_synth_command_writes_valid_pairs_the_data_layer_accepts(tmp_path: Path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--n", "64", "--size", "64", "--workers", "1"]) == 0
    assert "wrote 64 RGB+IR pairs" in capsys.readouterr().out
    bundle = load_data(DataConfig(csv=str(tmp_path / "data.csv"), img_size=64))
    assert len(bundle.records) == 64 and bundle.ir_spec.kind == "8bit"
    rgb, ir, labels, index = bundle.dataset("train")[0]
    assert rgb.shape == (3, 64, 64) and ir.shape == (1, 64, 64) and labels.shape == (2,)


def _tiny_cnn(in_ch: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))


def _train_and_score(x_train, y_train, x_test, y_test, seed: int) -> dict:
    torch.manual_seed(seed)
    model = _tiny_cnn(x_train.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(12):
        model.train()
        for idx in torch.randperm(len(x_train)).split(64):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(x_test)).numpy()
    return classification_scores(y_test.numpy(), probs)


@pytest.mark.slow
def test_ir_carries_information_rgb_lacks():
    """The same small CNN, trained on RGB+IR vs RGB alone, scored on held-out synthetic data."""
    samples = list(generate(SynthConfig(n=1600, size=32, seed=11)))
    rgb = torch.tensor(np.stack([s.rgb for s in samples])).permute(0, 3, 1, 2).float() / 255
    ir = torch.tensor(np.stack([s.ir for s in samples]))[:, None].float() / 255
    y = torch.tensor([[s.fire, s.smoke] for s in samples], dtype=torch.float32)
    both = torch.cat([rgb, ir], dim=1)
    tr, te = slice(0, 1200), slice(1200, None)
    with_ir = _train_and_score(both[tr], y[tr], both[te], y[te], seed=0)
    rgb_only = _train_and_score(rgb[tr], y[tr], rgb[te], y[te], seed=0)
    gap = with_ir["f1_macro"] - rgb_only["f1_macro"]
    print(f"macro-F1 RGB+IR {with_ir['f1_macro']:.3f} vs RGB {rgb_only['f1_macro']:.3f} "
          f"(fire {with_ir['f1_fire']:.3f} vs {rgb_only['f1_fire']:.3f}); gap {gap:.3f}")
    assert with_ir["f1_fire"] > 0.95
    assert with_ir["f1_fire"] - rgb_only["f1_fire"] > 0.1  # hidden and small fires
    assert gap > 0
