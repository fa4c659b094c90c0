"""Image files: header inspection (validation) and decoding to fixed-size integer arrays.

A decoded sample is ``rgb`` uint8 (3,S,S) and ``ir`` (C,S,S): uint8 for 8-bit IR files, uint16 for
16-bit and radiometric (float, degrees Celsius) files. High-depth IR is mapped linearly from
``IRSpec.value_range`` to [0, 65535] and clipped, so that the decoded cache can hold it exactly;
defaults: 16-bit files use their full range 0..65535, radiometric files -20..600 C.
RGB and IR are both resized to SxS (bilinear, antialiased) whatever their original sizes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from firekd.errors import DataError

TIFF_EXT = (".tif", ".tiff")
DEFAULT_RANGES = {"16bit": (0.0, 65535.0), "float": (-20.0, 600.0)}


@dataclass(frozen=True)
class ImageInfo:
    """What a file header says: size (width, height), channels and sample kind."""

    width: int
    height: int
    channels: int
    kind: str  # "8bit", "16bit" or "float"


@dataclass(frozen=True)
class IRSpec:
    """How IR files are decoded. ``kind`` None means the data has no IR."""

    kind: str | None = "8bit"
    channels: int = 1
    value_range: tuple[float, float] | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.kind in ("8bit", None) else np.uint16)

    @property
    def max_value(self) -> float:
        return float(np.iinfo(self.dtype).max)

    def range(self) -> tuple[float, float]:
        return self.value_range or DEFAULT_RANGES[self.kind]


_PIL_KIND = {"1": ("8bit", 1), "L": ("8bit", 1), "P": ("8bit", 3), "RGB": ("8bit", 3),
             "RGBA": ("8bit", 3), "LA": ("8bit", 1), "CMYK": ("8bit", 3), "YCbCr": ("8bit", 3),
             "I;16": ("16bit", 1), "I;16B": ("16bit", 1), "I;16L": ("16bit", 1),
             "I": ("16bit", 1), "F": ("float", 1)}


def _tiff_info(path: str) -> ImageInfo:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape, dtype = page.shape, np.dtype(page.dtype)
    height, width = shape[0], shape[1]
    channels = 1 if len(shape) == 2 else (3 if shape[2] >= 3 else 1)
    kind = "8bit" if dtype == np.uint8 else ("float" if dtype.kind == "f" else "16bit")
    return ImageInfo(width, height, channels, kind)


def _is_truncated(path: str, fmt: str | None) -> bool:
    """Cheap end-of-file marker check that catches truncated JPEG/PNG without decoding."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - 64))
        tail = fh.read().rstrip(b"\x00")
    if fmt == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def inspect_image(path: str) -> ImageInfo:
    """Read a header; raise DataError (naming the file) when it is not a readable image."""
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    try:
        if path.lower().endswith(TIFF_EXT):
            return _tiff_info(path)
        with Image.open(path) as img:
            kind, channels = _PIL_KIND.get(img.mode, ("8bit", 3))
            info = ImageInfo(img.width, img.height, channels, kind)
            fmt = img.format
    except (UnidentifiedImageError, tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from None
    if _is_truncated(path, fmt):
        raise DataError(f"{path}: image file is truncated or corrupt ({fmt})")
    return info


def inspect_many(paths: list[str], workers: int = 8) -> list[ImageInfo | DataError]:
    """Inspect headers in parallel; errors are returned in place, not raised."""

    def one(path: str) -> ImageInfo | DataError:
        try:
            return inspect_image(path)
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths, chunksize=64))


def _open_pil(path: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _read_array(path: str) -> np.ndarray:
    if path.lower().endswith(TIFF_EXT):
        try:
            return tifffile.imread(path)
        except (tifffile.TiffFileError, OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode TIFF ({exc})") from None
    return np.asarray(_open_pil(path))


def _resize_u8(img: Image.Image, size: int) -> np.ndarray:
    arr = np.array(img.resize((size, size), Image.BILINEAR))  # writable: torch.from_numpy needs it
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_rgb(path: str, size: int) -> np.ndarray:
    """uint8 (3,S,S)."""
    return np.ascontiguousarray(_resize_u8(_open_pil(path).convert("RGB"), size))


def decode_ir(path: str, size: int, spec: IRSpec) -> np.ndarray:
    """(C,S,S) in ``spec.dtype``; see the module docstring for the scaling."""
    if spec.kind == "8bit" and not path.lower().endswith(TIFF_EXT):
        img = _open_pil(path).convert("L" if spec.channels == 1 else "RGB")
        return np.ascontiguousarray(_resize_u8(img, size))
    arr = _read_array(path).astype(np.float32)
    if arr.ndim == 3:  # multi-channel high-depth IR: use its mean as the thermal value
        arr = arr[..., :3].mean(axis=2)
    if spec.kind == "8bit":
        lo, hi, top = 0.0, 255.0, 255.0
    else:
        (lo, hi), top = spec.range(), 65535.0
    scaled = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    resized = np.asarray(Image.fromarray(scaled, mode="F").resize((size, size), Image.BILINEAR))
    out = np.rint(np.clip(resized, 0.0, 1.0) * top).astype(spec.dtype)[None]
    return np.ascontiguousarray(np.repeat(out, spec.channels, axis=0))


def decode_sample(rgb_path: str, ir_path: str | None, size: int,
                  spec: IRSpec) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (3,S,S), ir (C,S,S)); ir is (0,S,S) for RGB-only data."""
    rgb = decode_rgb(rgb_path, size)
    if ir_path is None or spec.kind is None:
        return rgb, np.zeros((0, size, size), dtype=spec.dtype)
    return rgb, decode_ir(ir_path, size, spec)
