"""Run the CLI in-process or as a subprocess and check the one-line error contract."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from firekd.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse exits for bad flags and --help
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_subprocess(args: list[str], cwd: Path | None = None,
                   timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firekd", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, check=False)


def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code != 0, "expected a non-zero exit code"
    assert "Traceback" not in err, err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    assert re.search(pattern, error_lines[0]), f"{pattern!r} not in {error_lines[0]!r}"
