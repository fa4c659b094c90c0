"""Run the CLI in-process or as a subprocess and check the one-line error contract."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from firekd.cli import main

# The spec's own code for comparing the variants, verbatim: it must run on firekd's outputs.
SPEC_SNIPPET = """
import json
import pandas as pd

# Load aggregated results
baseline = json.load(open('output/metrics/resnet152_kl_bce/aggregated_results.json'))
variant1 = json.load(open('output/metrics/resnet152_kl_l2_bce/aggregated_results.json'))
variant2 = json.load(open('output/metrics/resnet152_kl_contrastive_l2_bce/aggregated_results.json'))

# Compare student F1 scores
results = {
    'Loss Configuration': ['Baseline (KL+BCE)', 'Variant 1 (KL+L2+BCE)', 'Variant 2 (KL+Cont+L2+BCE)'],
    'F1 Macro': [
        f"{baseline['student']['f1_macro']['mean']:.4f} ± {baseline['student']['f1_macro']['std']:.4f}",
        f"{variant1['student']['f1_macro']['mean']:.4f} ± {variant1['student']['f1_macro']['std']:.4f}",
        f"{variant2['student']['f1_macro']['mean']:.4f} ± {variant2['student']['f1_macro']['std']:.4f}"
    ],
    'F1 Fire': [
        f"{baseline['student']['f1_fire']['mean']:.4f}",
        f"{variant1['student']['f1_fire']['mean']:.4f}",
        f"{variant2['student']['f1_fire']['mean']:.4f}"
    ],
    'F1 Smoke': [
        f"{baseline['student']['f1_smoke']['mean']:.4f}",
        f"{variant1['student']['f1_smoke']['mean']:.4f}",
        f"{variant2['student']['f1_smoke']['mean']:.4f}"
    ]
}

df = pd.DataFrame(results)
print(df.to_markdown(index=False))
"""


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
    lines = [line for line in err.splitlines() if line.strip()]
    error_lines = [line for line in lines if "error:" in line]
    assert len(error_lines) == 1, err  # alone
    assert lines[-1] == error_lines[0], err  # and last: nothing after it (a log line, a warning)
    assert re.search(pattern, error_lines[0]), f"{pattern!r} not in {error_lines[0]!r}"


@contextlib.contextmanager
def log_lines(level: int = logging.NOTSET) -> Iterator[list[str]]:
    """Every log line emitted inside the block, as text (the in-process CLI logs through the root logger)."""
    lines: list[str] = []
    handler = logging.Handler(level)
    handler.emit = lambda record: lines.append(record.getMessage())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
