"""Prompt templates and CLIP's prompt ensembles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from vl_helpers import requires_minilm

from thinkingearth.errors import UserInputError
from thinkingearth.vl.prompts import DEFAULT_TEMPLATES, class_embeddings, format_prompts
from thinkingearth.vl.text import load_text_encoder


def test_format_prompts_fills_every_template() -> None:
    assert format_prompts("forest", ("a {}.", "{} seen from space")) == [
        "a forest.",
        "forest seen from space",
    ]
    assert len(format_prompts("water")) == len(DEFAULT_TEMPLATES) >= 3


def test_class_embeddings_is_the_renormalised_mean_of_normalised_templates(tiny_st: Path) -> None:
    text = load_text_encoder(f"sentence-transformers:{tiny_st}")
    templates = ("a satellite image of {}.", "an aerial view of {}.", "{}")
    got = class_embeddings(text, ["forest", "flooded cropland"], templates)
    assert got.shape == (2, text.dim)
    for k, name in enumerate(["forest", "flooded cropland"]):
        vectors = [text.encode([t.replace("{}", name)])[0] for t in templates]
        mean = sum(v / v.norm() for v in vectors) / len(vectors)
        torch.testing.assert_close(got[k], mean / mean.norm(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(2))
    single = class_embeddings(text, ["forest"], templates[:1])[0]
    assert not torch.allclose(single, got[0], atol=1e-3)  # the ensemble is not one template


def test_class_embeddings_accepts_a_vl_model_too(tiny_st: Path) -> None:
    text = load_text_encoder(f"sentence-transformers:{tiny_st}")

    class HasEncodeText:
        def encode_text(self, texts: list[str]) -> torch.Tensor:
            return text.encode(texts)

    torch.testing.assert_close(
        class_embeddings(HasEncodeText(), ["water"]), class_embeddings(text, ["water"])
    )


def test_prompt_ensemble_of_minilm_points_at_the_right_class() -> None:
    requires_minilm()
    text = load_text_encoder("minilm")
    classes = ["forest", "water", "built-up area", "cropland"]
    heads = class_embeddings(text, classes)
    queries = text.encode(
        ["dense woodland of tall trees", "a lake and a wide river", "streets and houses of a city"]
    )
    best = (F.normalize(queries, dim=-1) @ heads.T).argmax(dim=1).tolist()
    assert [classes[i] for i in best] == ["forest", "water", "built-up area"]


@pytest.mark.parametrize(
    ("classes", "templates", "match"),
    [
        ([], DEFAULT_TEMPLATES, "no class names"),
        (["forest", "forest"], DEFAULT_TEMPLATES, "given twice"),
        (["forest", " "], DEFAULT_TEMPLATES, "empty"),
        (["forest"], ("no placeholder",), "exactly one"),
        (["forest"], (), "no prompt templates"),
        ("forest", DEFAULT_TEMPLATES, "one string"),
    ],
)
def test_class_embeddings_refuses_bad_input(
    tiny_st: Path, classes: list[str], templates: tuple[str, ...], match: str
) -> None:
    text = load_text_encoder(f"sentence-transformers:{tiny_st}")
    with pytest.raises(UserInputError, match=match):
        class_embeddings(text, classes, templates)
