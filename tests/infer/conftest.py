"""Fixtures of the scene-prediction tests (helpers live in ``infer_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from infer_helpers import PlantedScene, make_planted


@pytest.fixture
def planted(tmp_path: Path) -> PlantedScene:
    """A planted flood scene in ``tmp_path/scene``."""
    return make_planted(tmp_path / "scene")
