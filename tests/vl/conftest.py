"""Fixtures of the vision-language tests (helpers live in ``vl_helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from vl_helpers import tiny_sentence_transformer, tiny_vl_model


@pytest.fixture
def tiny_vl() -> Callable[..., Any]:
    """``tiny_vl(text="minilm", loss="clip", trainable=False, seed=0)``: a tiny VLModel."""
    return tiny_vl_model


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random sentence-transformers model (32-d), written once per session."""
    pytest.importorskip("sentence_transformers")
    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))
