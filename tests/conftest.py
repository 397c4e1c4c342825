"""Shared fixtures: the real Sentinel samples beside the repo, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """``../shared/realdata``; tests that need it skip where a clone has no shared/ beside it."""
    if not REALDATA.is_dir():
        pytest.skip(f"real Sentinel samples not found at {REALDATA}")
    return REALDATA
