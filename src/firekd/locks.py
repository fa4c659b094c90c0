"""Locks on files through the maintained `filelock` package: an exclusive lock (fail at once,
naming the holder) and a waiting one. Both are dropped by the kernel when the holder dies."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import filelock

from firekd.errors import FirekdError


class RunLockedError(FirekdError):
    pass


class FileLock:
    """An exclusive lock on ``path`` through the maintained `filelock` package (``flock`` on Unix,
    ``LockFileEx`` on Windows): the kernel drops it when the holder dies, so a lock left by a killed
    process is never stale. The holder is recorded in ``<path>.holder`` for messages; the lock file
    cannot carry it, since Windows locks its bytes against reading. A disabled lock (a non-zero
    DDP rank, whose rank 0 holds the real one) is always granted."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self, *, blocking: bool) -> bool:
        if not self.enabled:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, thread_local=False)  # not tied to the thread that took it
        try:
            lock.acquire(blocking=blocking)
        except filelock.Timeout:
            return False
        self._lock = lock
        with contextlib.suppress(OSError):  # the record only serves messages: never fail a run for it
            self.holder_path.write_text(f"pid {os.getpid()} on {platform.node()}\n")
        return True

    def holder(self) -> str:
        try:
            return self.holder_path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._lock is not None:
            self.holder_path.unlink(missing_ok=True)  # before releasing: never a later holder's record
            self._lock.release()
            self._lock = None


@contextlib.contextmanager
def exclusive(path: Path, *, what: str, enabled: bool = True):
    """Hold the lock at ``path`` or fail at once, naming the holder."""
    lock = FileLock(path, enabled=enabled)
    if not lock.acquire(blocking=False):
        raise RunLockedError(f"{what} is in use by {lock.holder()} (lock {path}); wait for it to "
                             "finish or use another --output")
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def waiting(path: Path, *, on_wait=None, enabled: bool = True):
    """Hold the lock at ``path``, waiting for the current holder if there is one."""
    lock = FileLock(path, enabled=enabled)
    if not lock.acquire(blocking=False):
        if on_wait:
            on_wait(lock.holder())
        lock.acquire(blocking=True)
    try:
        yield lock
    finally:
        lock.release()
