"""The synthetic generator: deterministic, labels consistent with content, accepted by the data
layer, and IR carries information that RGB lacks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli, snapshot
from torch import nn

from firekd.cli import main
from firekd.config import DataConfig
from firekd.data.csv import read_unlabeled
from firekd.data.synthetic import SynthConfig, generate, make_sample
from firekd.metrics.classification import classification_scores
from firekd.recipes.data import load_data
from firekd.recipes.synth import write_synthetic

# Computed on main before --rgb_cue and --unlabeled existed (numpy 2.4.6, Pillow 13.0.0), for
# SynthConfig(n=24, size=32, seed=3): the pixel arrays and labels, and the files written.
BEFORE_ARRAYS = "dc1e345066a9de85303579172b3ed850099f0c1454cea7e41283d4c5c064ff56"
BEFORE_FILES = "032cf8cac7a6557a29852020df5f46bdef044c1af67270c6b39d202028f71df1"  # all but synth.json
BEFORE_CSV = "74a2d6bd825363ddfef9ae98691b55ea3776c86ebb19ebcf48f0f00a47ce64be"


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
    for _ in range(6):
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
    samples = list(generate(SynthConfig(n=1000, size=32, seed=11)))
    rgb = torch.tensor(np.stack([s.rgb for s in samples])).permute(0, 3, 1, 2).float() / 255
    ir = torch.tensor(np.stack([s.ir for s in samples]))[:, None].float() / 255
    y = torch.tensor([[s.fire, s.smoke] for s in samples], dtype=torch.float32)
    both = torch.cat([rgb, ir], dim=1)
    tr, te = slice(0, 800), slice(800, None)
    with_ir = _train_and_score(both[tr], y[tr], both[te], y[te], seed=0)
    rgb_only = _train_and_score(rgb[tr], y[tr], rgb[te], y[te], seed=0)
    gap = with_ir["f1_macro"] - rgb_only["f1_macro"]
    print(f"macro-F1 RGB+IR {with_ir['f1_macro']:.3f} vs RGB {rgb_only['f1_macro']:.3f} "
          f"(fire {with_ir['f1_fire']:.3f} vs {rgb_only['f1_fire']:.3f}); gap {gap:.3f}")
    assert with_ir["f1_fire"] > 0.95
    assert with_ir["f1_fire"] - rgb_only["f1_fire"] > 0.1  # hidden and small fires
    assert gap > 0


def _arrays_hash(samples) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.rgb.tobytes())
        h.update(s.ir.tobytes())
        h.update(bytes([s.fire, s.smoke, s.hidden_fire]))
    return h.hexdigest()


def test_default_output_is_what_it_was_before_the_new_options(tmp_path: Path):
    config = SynthConfig(n=24, size=32, seed=3)
    assert config.rgb_cue == 0 and config.unlabeled == 0
    assert _arrays_hash(generate(config)) == BEFORE_ARRAYS
    assert _arrays_hash(generate(SynthConfig(n=24, size=32, seed=3, rgb_cue=0.0))) == BEFORE_ARRAYS
    write_synthetic(config, tmp_path)
    files = snapshot(tmp_path)
    assert hashlib.sha256((tmp_path / "data.csv").read_bytes()).hexdigest() == BEFORE_CSV
    assert not (tmp_path / "unlabeled.csv").exists() and not (tmp_path / "unlabeled").exists()
    assert json.loads((tmp_path / "synth.json").read_text())["rgb_cue"] == 0.0  # recorded, new keys
    if PIL.__version__ != "13.0.0":  # another JPEG/PNG encoder may write other bytes for equal pixels
        pytest.skip(f"file hash recorded with Pillow 13.0.0, this is {PIL.__version__}")
    h = hashlib.sha256()
    for rel in sorted(files):
        if rel != "synth.json":
            h.update(Path(rel).as_posix().encode())
            h.update((tmp_path / rel).read_bytes())
    assert h.hexdigest() == BEFORE_FILES


def _red_shift(with_cue, without) -> int:
    """Largest increase of R - B over the image: how much warmer the cue made some pixel."""
    warm = lambda rgb: rgb[..., 0].astype(int) - rgb[..., 2].astype(int)  # noqa: E731
    return int((warm(with_cue) - warm(without)).max())


def test_rgb_cue_changes_only_fires_buried_under_smoke_and_grows_with_strength():
    base = list(generate(SynthConfig(n=150, size=32, seed=1)))
    buried = np.array([s.fire and s.smoke and s.hidden_fire for s in base], dtype=bool)
    assert buried.sum() >= 10
    shifts = {}
    for strength in (0.2, 1.0):
        cued = list(generate(SynthConfig(n=150, size=32, seed=1, rgb_cue=strength)))
        changed = np.array([not np.array_equal(a.rgb, b.rgb) for a, b in zip(base, cued, strict=True)])
        assert np.array_equal(changed, buried)
        assert all(np.array_equal(a.ir, b.ir) and (a.fire, a.smoke, a.hidden_fire) ==
                   (b.fire, b.smoke, b.hidden_fire) for a, b in zip(base, cued, strict=True))
        shifts[strength] = np.median([_red_shift(b.rgb, a.rgb) for a, b, k in
                                      zip(base, cued, buried, strict=True) if k])
    # pixel noise has a std of about 5 grey levels: 0.2 is a faint trace, 1 a plain orange glow
    assert 10 < shifts[0.2] < 40 and shifts[1.0] > 90


def test_rgb_cue_is_reproducible_by_seed_and_independent_of_workers():
    config = SynthConfig(n=40, size=32, seed=6, rgb_cue=0.3)
    once = _arrays_hash(generate(config))
    assert _arrays_hash(generate(config, workers=2, chunk=16)) == once
    assert _arrays_hash(generate(SynthConfig(n=40, size=32, seed=7, rgb_cue=0.3))) != once


def test_unlabeled_pairs_have_their_own_images_and_no_labels(tmp_path: Path):
    config = SynthConfig(n=30, size=32, seed=2, unlabeled=20)
    labelled_only = write_synthetic(SynthConfig(n=30, size=32, seed=2), tmp_path / "a")
    table = write_synthetic(config, tmp_path / "b")
    pd.testing.assert_frame_equal(table, labelled_only)  # the labelled pairs do not depend on N
    assert (tmp_path / "a" / "data.csv").read_bytes() == (tmp_path / "b" / "data.csv").read_bytes()
    unlabeled = pd.read_csv(tmp_path / "b" / "unlabeled.csv")
    assert list(unlabeled.columns) == ["rgb_path", "ir_path"] and len(unlabeled) == 20
    records = read_unlabeled(tmp_path / "b" / "unlabeled.csv")
    assert all(Path(p).is_file() for p in [*records["rgb_path"], *records["ir_path"]])
    labelled_files = {(tmp_path / "b" / p).read_bytes() for p in table["rgb_path"]}
    assert not labelled_files & {Path(p).read_bytes() for p in records["rgb_path"]}
    # never a labelled scene, whatever n: compare with a labelled pool 10x larger
    pool = {s.ir.tobytes() for s in generate(SynthConfig(n=300, size=32, seed=2))}
    extra = list(generate(config, unlabeled=True))
    assert not pool & {s.ir.tobytes() for s in extra}
    assert 0 < np.mean([s.fire for s in extra]) < 1  # the same scene distribution, labels unwritten
    assert _arrays_hash(generate(config, unlabeled=True, workers=2, chunk=8)) == _arrays_hash(extra)


def test_synth_command_writes_unlabeled_csv_and_validates_its_options(tmp_path: Path, capsys):
    code, out, err = run_cli(["synth", "--out", tmp_path, "--n", "16", "--size", "32", "--workers", "1",
                              "--unlabeled", "8", "--rgb_cue", "0.25"], capsys)
    assert code == 0, err
    assert f"wrote 8 unlabelled RGB+IR pairs and {tmp_path}/unlabeled.csv" in out
    assert "faint glow at --rgb_cue 0.25" in out
    settings = json.loads((tmp_path / "synth.json").read_text())
    assert (settings["unlabeled"], settings["rgb_cue"]) == (8, 0.25)
    assert len(read_unlabeled(tmp_path / "unlabeled.csv")) == 8
    code, _, err = run_cli(["synth", "--out", tmp_path, "--n", "16", "--size", "32", "--workers", "1"],
                           capsys)
    assert code == 0 and not (tmp_path / "unlabeled.csv").exists()  # stale: not of this data.csv
    for flag, value, message in (("--rgb_cue", "1.5", "must be between 0 and 1"),
                                 ("--unlabeled", "-3", "must be >= 0"), ("--seed", "-1", "must be >= 0")):
        code, _, err = run_cli(["synth", "--out", tmp_path, flag, value], capsys)
        assert_one_line_error(code, err, f"{flag}.*{message}")


def test_side_labels_add_columns_and_change_no_image(tmp_path: Path, capsys):
    from firekd.data.synthetic import SIDE_VARIABLES

    config = SynthConfig(n=24, size=32, seed=3, side_labels=True)
    assert _arrays_hash(generate(config)) == BEFORE_ARRAYS  # the scenes are the same draws
    table = write_synthetic(config, tmp_path)
    assert list(table.columns[-len(SIDE_VARIABLES):]) == list(SIDE_VARIABLES)
    assert set(np.unique(table[list(SIDE_VARIABLES)].to_numpy())) <= {0, 1}
    assert table[list(SIDE_VARIABLES)].sum().gt(0).all()  # each occurs in 24 scenes
    # the side variables are what the scene holds: a sky band means a cold top row in IR
    for i, sample in enumerate(generate(config)):
        assert sample.side == {k: int(table.loc[i, k]) for k in SIDE_VARIABLES}
        if sample.side["sky"] and not sample.fire:
            assert sample.ir[0].mean() < 0.15 * 255
    code = main(["synth", "--out", str(tmp_path / "cli"), "--n", "8", "--size", "32", "--side_labels",
                 "--workers", "1"])
    assert code == 0 and "side variables" in capsys.readouterr().out


@pytest.mark.slow
def test_a_teacher_pretrains_on_side_variables_without_task_labels(tmp_path: Path, capsys):
    """The stand-in for ImageNet weights that carries no fire/smoke labels: the side variables as the
    two labels of a teacher-only run, whose checkpoint then seeds a teacher with --teacher_weights."""
    write_synthetic(SynthConfig(n=96, size=32, seed=7, side_labels=True), tmp_path / "pre")
    common = ["--teachers", "resnet18", "--seeds", "1", "--epochs_teacher", "1", "--no_pretrained",
              "--img_size", "32", "--num_workers", "0", "--batch_size", "32", "--latency_runs", "0"]
    code = main(["ablation", "--csv", str(tmp_path / "pre/data.csv"), "--fire_col", "warm_surface",
                 "--smoke_col", "haze", "--output", str(tmp_path / "pre_out"), "--teacher_only", *common])
    assert code == 0
    (checkpoint,) = (tmp_path / "pre_out/teachers/resnet18").glob("seed_1-*/teacher_best.pth")
    write_synthetic(SynthConfig(n=96, size=32, seed=8), tmp_path / "task")
    code = main(["ablation", "--csv", str(tmp_path / "task/data.csv"), "--output", str(tmp_path / "out"),
                 "--teacher_weights", str(checkpoint), "--teacher_only", *common])
    assert code == 0
    assert list((tmp_path / "out/teachers").glob("backbone-*.pth"))  # the backbone taken from it
