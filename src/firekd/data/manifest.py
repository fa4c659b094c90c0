"""Image digests: what the data fingerprint keys by, so a result is tied to the images a model saw,
not to the CSV that lists them.

Each file's digest is computed once and remembered by (absolute path, size, mtime) in a small JSON
file next to the decoded caches, so a rerun reads no image; a file rewritten in place gets a new
mtime and is read again. The same bytes in another folder (a moved data set, another machine) give
the same digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import filelock

from firekd.errors import DataError

MANIFEST = "digests.json"
FORMAT = "firekd-digests/1"


def file_digest(path: str | Path) -> str:
    """blake2b-128 of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return h.hexdigest()


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def digests(paths: Iterable[str], *, manifest: Path | None, workers: int = 8,
            progress: Callable[[int], object] | None = None) -> dict[str, str]:
    """{path: digest} for every path. ``manifest``: the JSON file remembering earlier digests by
    (absolute path, size, mtime); None computes every digest afresh."""
    unique = list(dict.fromkeys(paths))
    absolute = {p: os.path.abspath(p) for p in unique}
    stamps = {p: _stamp(p) for p in unique}
    known = _read(manifest) if manifest else {}
    out, todo = {}, []
    for p in unique:
        entry = known.get(absolute[p])
        if entry is not None and entry[:2] == stamps[p]:
            out[p] = entry[2]
        else:
            todo.append(p)
    if todo:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for p, digest in zip(todo, pool.map(file_digest, todo), strict=True):
                out[p] = digest
                if progress:
                    progress(1)
        if manifest:
            _remember(manifest, {absolute[p]: [*stamps[p], out[p]] for p in todo})
    return out


def _read(manifest: Path) -> dict:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):  # absent or damaged: digests are recomputed, never trusted blindly
        return {}
    return data.get("files", {}) if data.get("format") == FORMAT else {}


def _remember(manifest: Path, new: dict) -> None:
    """Merge ``new`` into the manifest under its lock; a manifest that cannot be written only costs
    recomputing the digests next time."""
    with contextlib.suppress(OSError):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(manifest) + ".lock"):
            files = {**_read(manifest), **new}
            tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "files": files}))
            os.replace(tmp, manifest)
