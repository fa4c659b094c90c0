"""Shared fixtures: a small synthetic dataset, the real data under ../shared (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firekd.data.synthetic import SynthConfig
from firekd.recipes.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
# FIREKD_SHARED_DATA points elsewhere when the project is not checked out beside ../shared
SHARED_DATA = Path(os.environ.get("FIREKD_SHARED_DATA") or ROOT.parent / "shared" / "data")

os.environ.setdefault("OMP_NUM_THREADS", "2")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives outside the project, "
                    "in ../shared/data, which a plain clone does not have)")
    return path


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """96 synthetic 32 px RGB+IR pairs; returns the folder holding data.csv."""
    out = tmp_path_factory.mktemp("synth_small")
    write_synthetic(SynthConfig(n=96, size=32, seed=3), out)
    return out


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path
