"""A decoded-image cache: every image decoded and resized once into memory-mapped arrays.

Layout of one cache (a folder named by its key):
    rgb.bin   uint8 (N, 3, S, S)            ir.bin  uint8|uint16 (N, C, S, S)
    meta.json shapes, dtypes, key inputs and a CRC32 per row of each array
The key hashes the records (paths, each file's size and mtime), the image size and the IR
decoding settings, so editing the CSV or an image, or changing --img_size/--ir_*, selects a new
cache. A cache is built in a temporary folder and renamed into place when complete; on opening,
its files' sizes and times and a sample of rows' CRCs are checked (`verify`), and a damaged cache
is rebuilt rather than trusted.
Decoding goes through `decode_sample`, so cached samples are exactly the decoded ones.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from firekd.data.images import IRSpec, decode_sample
from firekd.diskspace import is_no_space, no_space_error

FORMAT = "firekd-cache/1"


def cache_key(records: pd.DataFrame, size: int, spec: IRSpec) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, size, asdict(spec)], default=str).encode())
    for rgb, ir in zip(records["rgb_path"], records["ir_path"], strict=True):
        for path in (rgb, ir):
            if path is None:
                continue
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cache_bytes(n: int, size: int, spec: IRSpec) -> int:
    return n * size * size * (3 + spec.channels * spec.dtype.itemsize)


class DecodedCache:
    """Read access to a complete cache; callable like a `SampleSource`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = json.loads((folder / "meta.json").read_text())
        self.meta = meta
        self.rgb = np.memmap(folder / "rgb.bin", dtype=np.uint8, mode="r", shape=tuple(meta["rgb_shape"]))
        self.ir = np.memmap(folder / "ir.bin", dtype=np.dtype(meta["ir_dtype"]), mode="r",
                            shape=tuple(meta["ir_shape"]))

    def __call__(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.rgb[position]), np.array(self.ir[position])

    def read_many(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``positions`` of both arrays, (B,3,S,S) and (B,C,S,S): one gather each."""
        order = np.argsort(positions)  # sequential reads, then back to the requested order
        back = np.argsort(order)
        return self.rgb[positions[order]][back], self.ir[positions[order]][back]

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def __getstate__(self) -> dict:  # loader workers reopen the maps instead of pickling them
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])


def _row_crcs(array: np.ndarray) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(row)) for row in array]  # rows are contiguous: no copy


def verify(folder: Path, *, sample: int | None = 64) -> bool:
    """True when the cache at ``folder`` is complete and intact. Every row's CRC was computed as it
    was built; opening checks what is cheap: the format, the arrays' file sizes, that no array was
    written after the cache was finished (meta.json is written last), and the CRCs of ``sample``
    rows spread over the arrays (None: every row, ~11 GB of reads for FLAME 2 at 224 px)."""
    try:
        cache = DecodedCache(folder)
        meta = cache.meta
        if meta.get("format") != FORMAT or not _intact_files(folder, cache):
            return False
        rows = np.arange(len(cache)) if sample is None else _sample_rows(len(cache), sample)
        return all(_row_crcs(array[rows]) == [meta[key][i] for i in rows]
                   for array, key in ((cache.rgb, "rgb_crc"), (cache.ir, "ir_crc")))
    except (OSError, ValueError, KeyError, IndexError, json.JSONDecodeError):
        return False


def _intact_files(folder: Path, cache: DecodedCache) -> bool:
    meta_time = (folder / "meta.json").stat().st_mtime_ns
    for name, array in (("rgb.bin", cache.rgb), ("ir.bin", cache.ir)):
        st = (folder / name).stat()
        if st.st_size != array.nbytes or st.st_mtime_ns > meta_time:
            return False
    return True


def _sample_rows(n: int, k: int) -> np.ndarray:
    """The first and last rows and ``k`` spread over the rest (fixed: the same rows every time)."""
    return np.unique(np.concatenate([[0, n - 1], np.random.default_rng(0).integers(0, n, size=k)]))


def _decode_chunk(args) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs, size, spec = args
    return [decode_sample(rgb, ir, size, spec) for rgb, ir in pairs]


def _chunks(records: pd.DataFrame, size: int, spec: IRSpec, chunk: int) -> Iterable:
    pairs = list(zip(records["rgb_path"], records["ir_path"], strict=True))
    for start in range(0, len(pairs), chunk):
        yield pairs[start:start + chunk], size, spec


def build(folder: Path, records: pd.DataFrame, size: int, spec: IRSpec, *, workers: int = 1,
          progress: Callable[[int], None] | None = None, chunk: int = 64) -> None:
    """Decode every record into a new cache at ``folder`` (built aside, then renamed in). A full
    disk ends in one line (OutOfSpaceError) and leaves no partial cache."""
    tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _build_in(tmp, records, size, spec, workers, progress, chunk)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        raise no_space_error(folder, exc, cache_bytes(len(records), size, spec),
                             hint="free some space or choose another --cache_dir "
                                  "(or train with --no_cache)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_in(tmp: Path, records: pd.DataFrame, size: int, spec: IRSpec, workers: int,
              progress: Callable[[int], None] | None, chunk: int) -> None:
    n, channels = len(records), (spec.channels if spec.kind else 0)
    tmp.mkdir(parents=True)
    rgb = np.memmap(tmp / "rgb.bin", dtype=np.uint8, mode="w+", shape=(n, 3, size, size))
    ir = np.memmap(tmp / "ir.bin", dtype=spec.dtype, mode="w+", shape=(n, channels, size, size))
    _reserve(tmp / "rgb.bin")
    _reserve(tmp / "ir.bin")
    position = 0
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for decoded in pool.map(_decode_chunk, _chunks(records, size, spec, chunk)):
            for rgb_row, ir_row in decoded:
                rgb[position], ir[position] = rgb_row, ir_row
                position += 1
            if progress:
                progress(len(decoded))
    rgb.flush()
    ir.flush()
    meta = {"format": FORMAT, "rgb_shape": list(rgb.shape), "ir_shape": list(ir.shape),
            "ir_dtype": spec.dtype.name, "size": size, "ir_spec": asdict(spec),
            "rgb_crc": _row_crcs(rgb), "ir_crc": _row_crcs(ir)}
    (tmp / "meta.json").write_text(json.dumps(meta))


def _reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: a page written into a sparse file on a full disk
    kills the process (SIGBUS) instead of raising, so a full disk must show up here, as ENOSPC."""
    size = path.stat().st_size
    if not size or not hasattr(os, "posix_fallocate"):  # Windows allocates when the map is made
        return
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a filesystem that cannot
                raise


class _Inline:
    """`map` in this process, shaped like an executor."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def map(fn, iterable):
        return map(fn, iterable)
