"""Children of benchmarks/gpu_check.py (the ablation's driver and its loader workers) end with it.

Standard library only: tests/test_gpu_check.py starts throwaway scripts that use these without
importing torch. Each child runs in its own process group (its loader workers with it), killed at
exit, on SIGTERM/SIGINT/SIGHUP, and by the kernel (PR_SET_PDEATHSIG, Linux) if the script is
SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys

CHILDREN: set[int] = set()  # process groups of running children, ended with the script


def end_children() -> None:
    """Kill every child's process group (the driver and its loader workers)."""
    for pgid in list(CHILDREN):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        CHILDREN.discard(pgid)


def _on_signal(signum, frame) -> None:
    end_children()
    raise SystemExit(128 + signum)  # unwinds main(): the report is saved, the work folder removed


def die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when this script dies, even by SIGKILL
    (Linux; elsewhere the atexit and signal handlers are what ends it)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def install_exit_handlers() -> None:
    """Children end with the script: at exit, and on SIGTERM/SIGINT/SIGHUP."""
    atexit.register(end_children)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)


def start_child(argv: list[str], stdout, env: dict | None = None) -> subprocess.Popen:
    """A child in its own process group (its loader workers with it), ended with the script."""
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=die_with_parent if sys.platform == "linux" else None)
    CHILDREN.add(proc.pid)  # its own session: its pid is its process group's id
    return proc
