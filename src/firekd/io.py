"""Atomic file writing: every artifact goes to a temporary file in the same folder, then is
renamed over the target, so a crash never leaves a truncated file behind."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from firekd.diskspace import (
    OutOfSpaceError,
    is_no_space,
    is_torch_write_failure,
    lacks_space,
    no_space_error,
    out_of_space,
)
from firekd.errors import FirekdError, ModelError, first_line


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_no_space(exc):
            raise no_space_error(path, exc) from None
        raise FirekdError(f"{path.parent}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if not is_no_space(exc):  # a full disk or quota: one line, the previous file stays as it was
            raise
        tmp_path.unlink(missing_ok=True)  # first, so that the message counts the space it held
        raise no_space_error(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, tuple, set)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite_or_none(obj: Any) -> Any:
    """NaN/inf become null: strict JSON, and readers see 'undefined' rather than a number."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(_finite_or_none(data), fh, indent=2, default=_jsonable, allow_nan=False)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FirekdError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise FirekdError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def write_csv(path: str | Path, frame) -> None:
    with atomic_open(path) as fh:
        frame.to_csv(fh, index=False)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def save_figure(path: str | Path, fig) -> None:
    """Save and close ``fig`` (pyplot keeps every open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def save_payload(path: str | Path, payload: dict) -> None:
    """Write atomically; a full disk or quota ends in one line naming the size (the previous file
    intact, no temporary file left)."""
    needed = payload_bytes(payload) or None  # no tensors: too small to say
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return
    except OutOfSpaceError as exc:
        quota, detail = exc.quota, None
    except RuntimeError as exc:  # torch's writer does not pass the errno on: look at the disk below
        if not is_torch_write_failure(exc):
            raise
        quota, detail = False, first_line(exc)
    gc.collect()  # the failed writer, held by the exception's frames, kept the removed temp file open
    if detail is None or lacks_space(Path(path).parent, needed):
        raise out_of_space(path, needed, quota=quota) from None
    raise ModelError(f"{path}: cannot write the checkpoint ({detail})")


def payload_bytes(obj) -> int:
    """Bytes of the tensor storages in ``obj`` (nested dicts/lists), each storage counted once:
    about what torch.save writes."""
    storages: dict[int, int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(storages.values())


def ensure_writable(folder: str | Path, flag: str = "--output") -> Path:
    """Create ``folder`` if needed and prove it is writable, or fail naming the flag."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test."):
            pass
    except OSError as exc:
        raise FirekdError(f"{folder}: output folder is not writable ({exc.strerror}); "
                          f"choose another with {flag}") from None
    return folder


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk), copying when links are impossible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class Writer:
    """The one object through which a run writes files. On the non-zero ranks of a distributed
    run it is disabled: those ranks skip every write (and the work of preparing it) instead of
    writing throw-away copies."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __repr__(self) -> str:
        return f"Writer(enabled={self.enabled})"

    def json(self, path: str | Path, data: Any) -> None:
        if self.enabled:
            write_json(path, data)

    def csv(self, path: str | Path, frame) -> None:
        if self.enabled:
            write_csv(path, frame)

    def text(self, path: str | Path, text: str) -> None:
        if self.enabled:
            write_text(path, text)

    def figure(self, path: str | Path, make_figure) -> None:
        """Draw (``make_figure()`` returns a matplotlib figure) and save, only where files are written."""
        if self.enabled:
            save_figure(path, make_figure())

    def payload(self, path: str | Path, payload: dict) -> None:
        if self.enabled:
            save_payload(path, payload)

    def mkdirs(self, *folders: Path) -> None:
        if self.enabled:
            for folder in folders:
                Path(folder).mkdir(parents=True, exist_ok=True)

    def link(self, src: Path, dst: Path) -> None:
        if self.enabled:
            link_or_copy(src, dst)

    def remove(self, *paths: Path) -> None:
        """Delete files or whole folders."""
        if not self.enabled:
            return
        for path in map(Path, paths):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


NO_WRITER = Writer(enabled=False)
