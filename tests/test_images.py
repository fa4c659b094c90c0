"""Image files: each IR format decodes with its documented scaling; bad files are named."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import write_csv
from PIL import Image

from firekd.data.checks import check_files
from firekd.data.csv import read_records
from firekd.data.images import IRSpec, decode_ir, decode_rgb, inspect_image
from firekd.errors import DataError


def _rgb(path: Path, size=(40, 30), value=(200, 100, 50)) -> Path:
    Image.new("RGB", size, value).save(path)
    return path


def test_rgb_is_resized_to_square_uint8(tmp_path: Path):
    out = decode_rgb(str(_rgb(tmp_path / "a.jpg")), 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert abs(int(out[0].mean()) - 200) <= 3


def test_ir_8bit_gray_png(tmp_path: Path):
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / "i.png")
    out = decode_ir(str(tmp_path / "i.png"), 16, IRSpec("8bit", 1))
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8 and (out == 128).all()


def test_ir_colour_mapped_jpeg_keeps_three_channels(tmp_path: Path):
    _rgb(tmp_path / "t.jpg", value=(250, 10, 10))
    info = inspect_image(str(tmp_path / "t.jpg"))
    assert (info.kind, info.channels) == ("8bit", 3)
    out = decode_ir(str(tmp_path / "t.jpg"), 16, IRSpec("8bit", 3))
    assert out.shape == (3, 16, 16) and out[0].mean() > 240 and out[1].mean() < 20


def test_ir_16bit_png_uses_full_range_by_default(tmp_path: Path):
    arr = np.full((8, 8), 32768, np.uint16)
    Image.fromarray(arr).save(tmp_path / "i16.png")
    info = inspect_image(str(tmp_path / "i16.png"))
    assert info.kind == "16bit"
    out = decode_ir(str(tmp_path / "i16.png"), 8, IRSpec("16bit", 1))
    assert out.dtype == np.uint16 and (out == 32768).all()


def test_ir_16bit_tiff_with_custom_range(tmp_path: Path):
    tifffile.imwrite(tmp_path / "i.tiff", np.full((8, 8), 7500, np.uint16))
    out = decode_ir(str(tmp_path / "i.tiff"), 8, IRSpec("16bit", 1, value_range=(7000, 8000)))
    assert np.allclose(out / 65535, 0.5, atol=1e-4)


def test_radiometric_float_tiff_maps_celsius_range(tmp_path: Path):
    temps = np.array([[-20.0, 290.0], [600.0, 1000.0]], np.float32)  # 1000 C is clipped
    tifffile.imwrite(tmp_path / "r.tiff", np.kron(temps, np.ones((4, 4), np.float32)))
    assert inspect_image(str(tmp_path / "r.tiff")).kind == "float"
    out = decode_ir(str(tmp_path / "r.tiff"), 8, IRSpec("float", 1)).astype(float) / 65535
    corners = [out[0, 0, 0], out[0, 0, 7], out[0, 7, 0], out[0, 7, 7]]
    assert np.allclose(corners, [0.0, 0.5, 1.0, 1.0], atol=0.02)


def test_ir_three_channels_requested_from_gray_repeats(tmp_path: Path):
    tifffile.imwrite(tmp_path / "r.tiff", np.full((8, 8), 290.0, np.float32))
    out = decode_ir(str(tmp_path / "r.tiff"), 8, IRSpec("float", 3))
    assert out.shape == (3, 8, 8) and (out[0] == out[2]).all()


def _pair_csv(tmp_path: Path, n: int = 3) -> Path:
    lines = ["rgb_path,ir_path,fire,smoke"]
    for i in range(n):
        _rgb(tmp_path / f"r{i}.jpg", size=(32, 32))
        Image.fromarray(np.full((32, 32), 60, np.uint8)).save(tmp_path / f"i{i}.png")
        lines.append(f"r{i}.jpg,i{i}.png,{i % 2},0")
    return write_csv(tmp_path / "d.csv", "\n".join(lines))


def test_missing_files_are_counted_with_lines(tmp_path: Path):
    csv = _pair_csv(tmp_path)
    (tmp_path / "r1.jpg").unlink()
    with pytest.raises(DataError, match=r"1 missing rgb_path file\(s\) \(line 3: .*r1.jpg\); .*--skip"):
        check_files(read_records(csv), csv_name="d.csv")


def test_skip_missing_drops_rows_with_a_warning(tmp_path: Path, caplog):
    csv = _pair_csv(tmp_path)
    (tmp_path / "i2.png").unlink()
    with caplog.at_level(logging.WARNING):
        rec, _ = check_files(read_records(csv), csv_name="d.csv", skip_missing=True)
    assert rec["row"].tolist() == [2, 3]
    assert "dropping them" in caplog.text


@pytest.mark.parametrize("damage", ["zero", "garbage", "truncated"])
def test_corrupt_images_are_named(tmp_path: Path, damage: str):
    csv = _pair_csv(tmp_path)
    target = tmp_path / "r0.jpg"
    data = target.read_bytes()
    target.write_bytes({"zero": b"", "garbage": b"not an image at all" * 10,
                        "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(DataError, match=r"1 unreadable rgb_path file\(s\) \(line 2: .*r0.jpg: "):
        check_files(read_records(csv), csv_name="d.csv")


def test_pairs_of_different_sizes_warn_and_are_resized(tmp_path: Path, caplog):
    csv = _pair_csv(tmp_path)
    _rgb(tmp_path / "r1.jpg", size=(64, 48))
    with caplog.at_level(logging.WARNING):
        _, report = check_files(read_records(csv), csv_name="d.csv")
    assert report.mismatched_pairs == 1
    assert "differ in size (e.g. lines 3)" in caplog.text


def test_mixed_ir_formats_are_refused(tmp_path: Path):
    csv = _pair_csv(tmp_path)
    Image.fromarray(np.full((32, 32), 9, np.uint16)).save(tmp_path / "i1.png")
    with pytest.raises(DataError, match="line 3: IR file is 16bit but earlier ones are 8bit"):
        check_files(read_records(csv), csv_name="d.csv")


def test_ir_channels_auto(tmp_path: Path):
    csv = _pair_csv(tmp_path)
    _, report = check_files(read_records(csv), csv_name="d.csv")
    assert (report.ir.kind, report.ir.channels) == ("8bit", 1)
    _, report = check_files(read_records(csv), csv_name="d.csv", ir_channels="3")
    assert report.ir.channels == 3
