"""Disk space: sizes in readable units, and a write that fails for lack of space or quota turned
into one line naming the path, the bytes needed (when known) and the bytes free."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from firekd.errors import FirekdError

QUOTA_ERRNOS = {getattr(errno, "EDQUOT", errno.ENOSPC)}  # Windows has no EDQUOT
NO_SPACE_ERRNOS = {errno.ENOSPC} | QUOTA_ERRNOS
# torch's zip writer reports a failed write as a RuntimeError ("[enforce fail at
# inline_container.cc:672] . unexpected pos 2304 vs 2198", "... failed writing file data/0: file
# write failed"), without the errno
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
RERUN_HINT = "free some space and run the same command again (finished work is kept)"


class OutOfSpaceError(FirekdError):
    """A write failed, or would fail, because the disk (or the user's quota) is full."""

    def __init__(self, message: str, *, quota: bool = False) -> None:
        super().__init__(message)
        self.quota = quota


def out_of_space(path: str | Path, needed: int | None = None, *, quota: bool = False,
                 hint: str = RERUN_HINT) -> OutOfSpaceError:
    """``<path>: no space left on device (needs 4.19 MB, 1.05 MB free); <hint>``."""
    free = free_bytes(path)
    sizes = [f"needs {human_bytes(needed)}" if needed is not None else None,
             f"{human_bytes(free)} free" if free is not None else None]
    detail = ", ".join(s for s in sizes if s)
    what = "disk quota exceeded" if quota else "no space left on device"
    return OutOfSpaceError(f"{path}: {what}" + (f" ({detail})" if detail else "") + f"; {hint}", quota=quota)


def human_bytes(n: float) -> str:
    """``1234567`` -> ``'1.23 MB'``: decimal units, three significant digits, never '0.0 GB'."""
    value, unit = float(n), 0
    while abs(value) >= 999.5 and unit < len(UNITS) - 1:
        value, unit = value / 1000, unit + 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.{2 if abs(value) < 10 else 1 if abs(value) < 100 else 0}f} {UNITS[unit]}"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing folder); None if unknown."""
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def is_torch_write_failure(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in TORCH_WRITE_FAILURES)


def lacks_space(path: str | Path, needed: int | None) -> bool:
    """Whether the filesystem of ``path`` cannot take ``needed`` more bytes (less than 1 MiB left
    when the size is unknown): how a write error without an errno is told to be a full disk."""
    free = free_bytes(path)
    return free is not None and free < (needed if needed is not None else 1 << 20)


def no_space_error(path: str | Path, exc: OSError, needed: int | None = None, **kwargs) -> OutOfSpaceError:
    """The one-line error for an ENOSPC/EDQUOT ``exc`` met writing ``path``."""
    return out_of_space(path, needed, quota=exc.errno in QUOTA_ERRNOS and exc.errno != errno.ENOSPC, **kwargs)
