"""Shared fixtures: a small synthetic dataset, the real data under ../shared (skipped if absent)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# one torch thread per pytest-xdist worker (two workers share two cores), else two; set before
# torch is imported anywhere
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")

from firekd.data.synthetic import SynthConfig
from firekd.recipes.synth import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
# FIREKD_SHARED_DATA points elsewhere when the project is not checked out beside ../shared
SHARED_DATA = Path(os.environ.get("FIREKD_SHARED_DATA") or ROOT.parent / "shared" / "data")

# decoded caches of test runs go to a throw-away folder, never to the user's ~/.cache
os.environ["FIREKD_CACHE_DIR"] = tempfile.mkdtemp(prefix="firekd-test-cache-")
atexit.register(shutil.rmtree, os.environ["FIREKD_CACHE_DIR"], ignore_errors=True)


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


@pytest.fixture(scope="session")
def tiny_run(synth_small, tmp_path_factory) -> Path:
    """A real ablation on the synthetic set: resnet18 x (kl_bce, bce), seed 1, one epoch each, with
    every figure (compression is tested on its own in test_compress); returns its --output folder. In-process, so that numba compiles UMAP only once."""
    from firekd.cli import main

    out = tmp_path_factory.mktemp("tiny_run")
    code = main(["ablation", "--csv", str(synth_small / "data.csv"), "--output", str(out),
                 "--teachers", "resnet18", "--variants", "kl_bce", "bce", "--seeds", "1",
                 "--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained", "--img_size", "32",
                 "--batch_size", "32", "--num_workers", "0", "--lr_teacher", "1e-3",
                 "--max_embed_points", "12", "--no_compress", "--latency_runs", "2"])
    assert code == 0
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with slow end-to-end tests first: `make test` hands whole files to its two
    pytest-xdist workers (--dist loadfile, so a module's shared fixtures are built once), and the
    quick files fill the gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept
