"""The run-folder lock (filelock): a held lock is refused naming its holder, the kernel releases it
when the holder is killed, and firekd.rundir imports where fcntl does not exist (native Windows)."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from firekd.locks import FileLock, RunLockedError, exclusive, waiting

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from firekd.locks import FileLock
    lock = FileLock(Path(sys.argv[1]))
    assert lock.acquire(blocking=False)
    print("held", flush=True)
    time.sleep(120)
""")


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def test_a_held_lock_is_refused_naming_the_holder_and_free_after_release(tmp_path: Path):
    path = tmp_path / "run" / ".lock"
    holder = FileLock(path)
    assert holder.acquire(blocking=False)
    other = FileLock(path)
    assert not other.acquire(blocking=False)
    expected = rf"run folder x is in use by pid {os.getpid()} on {platform.node()} \(lock {re.escape(str(path))}\)"
    with pytest.raises(RunLockedError, match=expected), exclusive(path, what="run folder x"):
        pass
    holder.release()
    assert not holder.holder_path.exists()  # no stale holder record
    with waiting(path) as lock:
        assert lock.holder().startswith(f"pid {os.getpid()} ")


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path: Path):
    path = tmp_path / ".lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    try:
        assert proc.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.acquire(blocking=False)
        assert lock.holder() == f"pid {proc.pid} on {platform.node()}"
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: only the kernel can release it
        proc.wait(timeout=30)
    assert lock.acquire(blocking=False)
    lock.release()


def test_rundir_imports_and_locks_without_fcntl(tmp_path: Path):
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.modules["fcntl"] = None  # as on native Windows: `import fcntl` raises ImportError
        warnings.simplefilter("ignore")
        from pathlib import Path
        from firekd.locks import FileLock
        lock = FileLock(Path({str(tmp_path / '.lock')!r}))
        assert lock.acquire(blocking=False)
        lock.release()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
