"""Shared bits of the benchmark scripts (not part of the test suite)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# FIREKD_SHARED_DATA points elsewhere when the project is not checked out beside ../shared
SHARED_DATA = Path(os.environ.get("FIREKD_SHARED_DATA") or ROOT.parent / "shared" / "data")
