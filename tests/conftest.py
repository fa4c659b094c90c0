"""Shared fixtures: a small synthetic dataset, the real data under ../shared (skipped if absent)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# one torch thread per pytest-xdist worker (two workers share two cores), else two; set before
# torch is imported anywhere. A worker overrides what it inherits: the xdist controller loads this
# file too and would hand its "2" down, and two workers of two threads on two cores run 1.5x slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    os.environ.setdefault("OMP_NUM_THREADS", "2")

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
    from firekd.data.synthetic import SynthConfig  # here: the xdist controller imports no torch
    from firekd.recipes.synth import write_synthetic

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


# Files whose tests share a session fixture go to one pytest-xdist worker, which builds it once.
SHARED_FIXTURE_FILES = {"tiny_run": ("test_compare_report.py", "test_evaluation.py", "test_report_details.py",
                                     "test_teacher_check.py")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with slow end-to-end tests first: `make test` hands whole files to its two
    pytest-xdist workers (--dist loadfile, so a module's shared fixtures are built once), and the
    quick files fill the gaps at the end."""
    for fixture, files in SHARED_FIXTURE_FILES.items():
        strays = sorted({item.path.name for item in items
                         if fixture in getattr(item, "fixturenames", ()) and item.path.name not in files})
        if strays:
            raise pytest.UsageError(f"{', '.join(strays)} use {fixture}: add them to SHARED_FIXTURE_FILES")
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` without pytest-xdist still runs
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile, with the files of SHARED_FIXTURE_FILES as one unit, in collection order
    (xdist would reorder the files by their number of tests, which puts slow files last)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    group = {name: fixture for fixture, files in SHARED_FIXTURE_FILES.items() for name in files}

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return group.get(path.rpartition("/")[2], path)

    config.option.loadscopereorder = False
    return SharedFixtureScheduling(config, log)
