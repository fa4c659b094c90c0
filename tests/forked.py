"""`firekd` commands and spec scripts in processes forked from a server that imported firekd once.

For tests whose claim is about separate processes (SIGKILLed then resumed, several runs racing for
one store), not about how an interpreter starts: a fresh `python -m firekd` spends ~4-6 s of CPU
importing torch, timm and scikit-learn before its first line. A forked child is still its own
process (its own pid, memory and file locks, killed by a real SIGKILL); the fresh interpreters
and their entry points are tested where they are the claim (test_bad_inputs, test_spec_setup,
test_scale, test_gpu_check).
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PRELOAD = ["firekd.cli", "firekd.recipes.grid", "forked"]


class Child:
    """A started command: its pid, its stderr line by line while it runs, its exit code."""

    def __init__(self, process: multiprocessing.process.BaseProcess, stdout: Path, stderr: Path) -> None:
        self.process, self.stdout_path, self.stderr_path = process, stdout, stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_lines(self) -> Iterator[str]:
        """Each line the child writes to stderr, as it comes, until the child ends."""
        with open(self.stderr_path) as f:
            pending = ""
            while True:
                alive = self.process.is_alive()
                pending += f.read()
                *lines, pending = pending.split("\n")
                yield from (line + "\n" for line in lines)
                if not alive:
                    break
                time.sleep(0.01)
        if pending:
            yield pending

    def wait(self, timeout: float = 900) -> int:
        """The exit code (negative: the signal that ended it)."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            raise TimeoutError(f"{self.process.name} still running after {timeout} s")
        return self.process.exitcode

    def communicate(self, timeout: float = 900) -> tuple[int, str, str]:
        code = self.wait(timeout)
        return code, self.stdout_path.read_text(), self.stderr_path.read_text()


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context whose server imports firekd once (at its first start)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start(argv: list, *, logs: Path, script: Path | None = None, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Child:
    """Fork `firekd <argv>` (or `python <script> <argv>`) with stdout and stderr written to files
    under ``logs`` (a new folder per child)."""
    logs.mkdir(parents=True)
    ctx = context()
    stdout, stderr = logs / "stdout", logs / "stderr"
    stderr.touch()
    process = ctx.Process(target=_child, name=" ".join(map(str, [script or "firekd", *argv]))[:200],
                          args=([str(a) for a in argv], script, cwd or Path.cwd(), env or {}, stdout, stderr))
    process.start()
    return Child(process, stdout, stderr)


def _child(argv: list[str], script: Path | None, cwd: Path, env: dict[str, str], stdout: Path,
           stderr: Path) -> None:
    os.chdir(cwd)
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:  # the server's torch read its own count at import
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    if script is None:
        from firekd.cli import main

        sys.exit(main(argv))
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")  # a spec script ends in sys.exit(...)
