"""Shared fixtures: the real Sentinel samples beside the repo, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """``../shared/realdata``; tests that need it skip where a clone has no shared/ beside it."""
    if not REALDATA.is_dir():
        pytest.skip(f"real Sentinel samples not found at {REALDATA}")
    return REALDATA


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never write the user's cache (``~/.cache/thinkingearth``): one folder per session.

    Set in the environment, so that commands the tests start in subprocesses use it too.
    """
    os.environ["THINKINGEARTH_CACHE"] = str(tmp_path_factory.mktemp("thinkingearth-cache"))
