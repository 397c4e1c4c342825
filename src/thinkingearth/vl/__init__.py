"""Vision-language: any sensor aligned with text, zero-shot heads and text search.

* :mod:`~thinkingearth.vl.text`: text encoders behind one interface (all-MiniLM-L6-v2 offline by
  default, any local sentence-transformers model, an OpenCLIP text tower from a local file);
* :mod:`~thinkingearth.vl.prompts`: prompt templates and CLIP's prompt ensembles;
* :mod:`~thinkingearth.vl.model`: :class:`VLModel` (any-sensor encoder + projection into the text
  space), :func:`save_vl_model`, :func:`load_vl_model`;
* :mod:`~thinkingearth.vl.losses`: :func:`clip_loss` (softmax InfoNCE) and :func:`siglip_loss`
  (pairwise sigmoid);
* :mod:`~thinkingearth.vl.recipes`: the ``image_text`` pretraining recipe (``thinkingearth
  pretrain`` with ``recipe: image_text``).

Names are imported on first use, so ``import thinkingearth.vl`` loads neither torch nor
sentence-transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thinkingearth.vl.losses import clip_loss, siglip_loss
    from thinkingearth.vl.model import VLModel, load_vl_model, save_vl_model
    from thinkingearth.vl.prompts import DEFAULT_TEMPLATES, class_embeddings
    from thinkingearth.vl.text import TextEncoder, load_text_encoder

__all__ = [
    "DEFAULT_TEMPLATES",
    "TextEncoder",
    "VLModel",
    "class_embeddings",
    "clip_loss",
    "load_text_encoder",
    "load_vl_model",
    "save_vl_model",
    "siglip_loss",
]

_LAZY: dict[str, str] = {
    "DEFAULT_TEMPLATES": "thinkingearth.vl.prompts",
    "class_embeddings": "thinkingearth.vl.prompts",
    "TextEncoder": "thinkingearth.vl.text",
    "load_text_encoder": "thinkingearth.vl.text",
    "VLModel": "thinkingearth.vl.model",
    "load_vl_model": "thinkingearth.vl.model",
    "save_vl_model": "thinkingearth.vl.model",
    "clip_loss": "thinkingearth.vl.losses",
    "siglip_loss": "thinkingearth.vl.losses",
}


def __getattr__(name: str) -> object:
    """Import a name lazily (``from thinkingearth.vl import VLModel``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *__all__})
