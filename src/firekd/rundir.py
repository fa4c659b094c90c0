"""The run-directory writer: the spec's output tree, locks, logs, config and environment.

    output/metrics/{teacher}_{variant}/          config.json, environment.json, split.csv, run.log,
                                                  aggregated_results.json
    output/metrics/{teacher}_{variant}/seed_{s}/  teacher_train_log.json, student_train_log.json,
                                                  final_evaluation.json, predictions_*.csv
    output/models/{teacher}_{variant}/seed_{s}/   teacher_best.pth, student_best.pth, ...
    output/graphs/{teacher}_{variant}/seed_{s}/   *.png
    output/teachers/{teacher}/seed_{s}-{key}/     the shared teacher, trained once per
                                                  (teacher, seed, data, split, settings)
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import filelock

from firekd.errors import FirekdError
from firekd.io import is_writer


class RunLockedError(FirekdError):
    pass


class FileLock:
    """An exclusive lock on ``path`` through the maintained `filelock` package (``flock`` on Unix,
    ``LockFileEx`` on Windows): the kernel drops it when the holder dies, so a lock left by a killed
    process is never stale. The holder is recorded in ``<path>.holder`` for messages; the lock file
    cannot carry it, since Windows locks its bytes against reading."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.holder_path = self.path.with_name(self.path.name + ".holder")
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self, *, blocking: bool) -> bool:
        if not is_writer():  # a non-zero DDP rank: rank 0 holds the lock for the whole group
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
def exclusive(path: Path, *, what: str):
    """Hold the lock at ``path`` or fail at once, naming the holder."""
    lock = FileLock(path)
    if not lock.acquire(blocking=False):
        raise RunLockedError(f"{what} is in use by {lock.holder()} (lock {path}); wait for it to "
                             "finish or use another --output")
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def waiting(path: Path, *, on_wait=None):
    """Hold the lock at ``path``, waiting for the current holder if there is one."""
    lock = FileLock(path)
    if not lock.acquire(blocking=False):
        if on_wait:
            on_wait(lock.holder())
        lock.acquire(blocking=True)
    try:
        yield lock
    finally:
        lock.release()


class RunDir:
    """Paths of one (teacher, variant) run inside ``output``."""

    def __init__(self, output: str | Path, teacher: str, variant: str) -> None:
        self.output = Path(output)
        self.name = f"{teacher}_{variant}"
        self.metrics = self.output / "metrics" / self.name
        self.models = self.output / "models" / self.name
        self.graphs = self.output / "graphs" / self.name

    def seed_dirs(self, seed: int) -> tuple[Path, Path, Path]:
        dirs = tuple(d / f"seed_{seed}" for d in (self.metrics, self.models, self.graphs))
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        return dirs

    def lock(self):
        return exclusive(self.metrics / ".lock", what=f"run folder {self.metrics}")

    def remove(self) -> None:
        if not is_writer():
            return
        for d in (self.metrics, self.models, self.graphs):
            shutil.rmtree(d, ignore_errors=True)

    @contextlib.contextmanager
    def log_to_file(self):
        """Append everything logged during the block to run.log."""
        if not is_writer():
            yield
            return
        self.metrics.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.metrics / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk), copying when links are impossible."""
    if not is_writer():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def environment() -> dict:
    """Versions, device and git commit: enough to tell how a result was produced."""
    import torch

    packages = {}
    for name in ("firekd", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scipy",
                 "torchao", "torch-pruning", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": packages,
        "git_commit": _git_commit(),
        "command": " ".join(sys.argv),
    }


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
