"""The decoded cache gives exactly the decoded tensors, follows the CSV, and is never trusted
when damaged."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from firekd.config import DataConfig
from firekd.data.dataset import FileSource
from firekd.recipes.data import load_data, open_cache


def _bundle(csv: Path, tmp_path: Path, **kw):
    return load_data(DataConfig(csv=str(csv), img_size=32, cache_dir=str(tmp_path / "cache"), **kw))


def test_cache_gives_exactly_the_decoded_samples(synth_small: Path, tmp_path: Path):
    bundle = _bundle(synth_small / "data.csv", tmp_path)
    cache = open_cache(bundle)
    files = FileSource(bundle.records, 32, bundle.ir_spec)
    assert len(cache) == len(bundle.records)
    for position in range(len(cache)):
        for cached, decoded in zip(cache(position), files(position), strict=True):
            assert cached.dtype == decoded.dtype and np.array_equal(cached, decoded)
    bundle.source = cache
    rgb, ir, labels, index = bundle.dataset("test")[0]
    assert rgb.shape == (3, 32, 32) and ir.shape == (1, 32, 32)


def test_sixteen_bit_ir_is_cached_exactly(tmp_path: Path):
    from PIL import Image

    rows = ["rgb_path,ir_path,fire,smoke"]
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        tifffile.imwrite(tmp_path / f"{i}.tiff", rng.integers(0, 65535, (40, 40), dtype=np.uint16))
        rows.append(f"{i}.jpg,{i}.tiff,{i % 2},0")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    bundle = _bundle(tmp_path / "d.csv", tmp_path)
    cache = open_cache(bundle)
    assert cache.ir.dtype == np.uint16
    files = FileSource(bundle.records, 32, bundle.ir_spec)
    assert all(np.array_equal(cache(i)[1], files(i)[1]) for i in range(12))


def test_a_changed_csv_or_image_selects_a_new_cache(synth_small: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(synth_small, data)
    first = open_cache(_bundle(data / "data.csv", tmp_path)).folder
    lines = (data / "data.csv").read_text().splitlines()
    (data / "data.csv").write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
    second = open_cache(_bundle(data / "data.csv", tmp_path)).folder
    assert second != first
    (data / "rgb/000000.jpg").write_bytes((data / "rgb/000001.jpg").read_bytes())  # an image changed
    third = open_cache(_bundle(data / "data.csv", tmp_path)).folder
    assert third not in (first, second)
    bigger = load_data(DataConfig(csv=str(data / "data.csv"), img_size=64, cache_dir=str(tmp_path / "cache")))
    assert open_cache(bigger).folder not in (first, second, third)  # another image size


@pytest.mark.parametrize("damage", ["bit_rot", "rewritten", "truncate", "no_meta"])
def test_a_damaged_cache_is_detected_and_rebuilt(synth_small: Path, tmp_path: Path, caplog, damage: str):
    bundle = _bundle(synth_small / "data.csv", tmp_path)
    cache = open_cache(bundle)
    reference = cache(5)
    folder = cache.folder
    del cache
    target = folder / "rgb.bin"
    if damage in ("bit_rot", "rewritten"):
        stat = target.stat()
        data = bytearray(target.read_bytes())
        row = 0 if damage == "bit_rot" else 5  # the first row is always among the sampled CRCs
        data[row * 3 * 32 * 32 + 100] ^= 0xFF
        target.write_bytes(bytes(data))
        later = stat.st_mtime_ns + (10**9 if damage == "rewritten" else 0)  # bit rot keeps the time
        os.utime(target, ns=(stat.st_atime_ns, later))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        (folder / "meta.json").unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = open_cache(_bundle(synth_small / "data.csv", tmp_path))
    assert "damaged or incomplete; rebuilding" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt(5), reference, strict=True))


def test_no_cache_when_it_would_not_fit_the_disk(synth_small: Path, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(100, 99, 1000))
    with caplog.at_level(logging.WARNING):
        assert open_cache(_bundle(synth_small / "data.csv", tmp_path)) is None
    assert "decoding images on the fly" in caplog.text


def test_cache_can_be_turned_off(synth_small: Path, tmp_path: Path):
    assert open_cache(_bundle(synth_small / "data.csv", tmp_path, cache=False)) is None
    assert not (tmp_path / "cache").exists()


def test_batched_fetch_from_the_cache_equals_per_sample_reads(synth_small: Path, tmp_path: Path):
    bundle = _bundle(synth_small / "data.csv", tmp_path)
    bundle.source = open_cache(bundle)
    dataset = bundle.dataset("train")
    indices = [5, 0, 17, 3]
    stacked = dataset.__getitems__(indices)
    for k, i in enumerate(indices):
        for part, single in zip(stacked, dataset[i], strict=True):
            assert torch.equal(part[k], single)
