"""One store for every trained artefact: a folder built once, under its lock, and marked done last.

    folder/<name>.store.json   the completion marker: key, recipe version, build id, record
    folder/.<name>.lock        held while the artefact is read, built, rebuilt or linked

Rules, the same for teachers, controls, students, compressed students and cached figures:
- obtain-or-build under the lock: whoever holds it finds the artefact done (and reads or links it
  while still holding it) or builds it; a second process waits and then finds it done;
- the marker is written last and removed first: a build killed at any moment (kill -9 between the
  weights and the marker included) leaves a store that is rebuilt, never read as done; files inside
  are written atomically, so a resume state left by a killed build is whole or absent;
- a rebuild (``--retrain_*``, ``--overwrite``) happens under the lock and gets a new build id, so
  the artefacts made from the old build (students of a retrained teacher) know they are stale.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from firekd.io import Writer, read_json
from firekd.keys import RECIPE_VERSION
from firekd.locks import FileLock


class Store:
    """The artefact ``name`` with key ``key`` in ``folder`` (several stores may share a folder)."""

    def __init__(self, folder: Path, key: str, *, writer: Writer, name: str = "artefact") -> None:
        self.folder, self.key, self.writer, self.name = Path(folder), key, writer, name
        self.marker = self.folder / f"{name}.store.json"
        self.lock_path = self.folder / f".{name}.lock"

    def __repr__(self) -> str:
        return f"Store({self.marker})"

    def record(self) -> dict | None:
        """The marker's content when the artefact is done with this key, else None."""
        if not self.marker.exists():
            return None
        record = read_json(self.marker)
        ok = record.get("key") == self.key and record.get("recipe") == RECIPE_VERSION
        return record if ok else None

    def done(self) -> bool:
        return self.record() is not None

    @property
    def build(self) -> str | None:
        """The id of the build this store holds (None when not done)."""
        record = self.record()
        return record.get("build") if record else None

    @contextlib.contextmanager
    def held(self, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the store's lock, waiting for the current holder."""
        lock = FileLock(self.lock_path, enabled=self.writer.enabled)
        if not lock.acquire(blocking=False):
            if on_wait:
                on_wait(lock.holder())
            lock.acquire(blocking=True)
        try:
            yield
        finally:
            lock.release()

    def try_hold(self) -> FileLock | None:
        """The store's lock if it is free now (release it when done), else None."""
        lock = FileLock(self.lock_path, enabled=self.writer.enabled)
        return lock if lock.acquire(blocking=False) else None

    def invalidate(self) -> None:
        """Forget the artefact (hold the lock): the marker goes first, so it is never read as done."""
        self.writer.remove(self.marker)

    def clear(self) -> None:
        """Remove the marker, then every file of the folder but the locks. Only for a store that
        owns its folder."""
        self.invalidate()
        if not self.folder.exists():
            return
        for path in self.folder.iterdir():
            if not path.name.endswith((".lock", ".lock.holder")):
                self.writer.remove(path)

    def publish(self, record: dict | None = None) -> str:
        """Mark the artefact done (the last write of a build); returns the new build id."""
        build = uuid.uuid4().hex[:12]
        self.writer.json(self.marker, {"key": self.key, "recipe": RECIPE_VERSION, "build": build,
                                       **(record or {})})
        return build
