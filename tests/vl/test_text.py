"""Text encoders: MiniLM offline, local sentence-transformers folders, OpenCLIP (faked)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from vl_helpers import requires_minilm

from thinkingearth.errors import UserInputError
from thinkingearth.vl.text import TextEncoder, load_text_encoder, parse_text_spec


def test_minilm_is_the_offline_default(monkeypatch: pytest.MonkeyPatch) -> None:
    requires_minilm()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # it must not matter: the folder is local
    text = load_text_encoder()
    assert isinstance(text, TextEncoder)
    assert (text.name, text.dim, text.spec, text.trainable) == (
        "all-MiniLM-L6-v2",
        384,
        "minilm",
        False,
    )
    vectors = text.encode(["a flooded river valley", "a dense forest", "a flooded river valley"])
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(vectors[0], vectors[2])
    # Meaning, not noise: paraphrases are closer than unrelated sentences.
    para = text.encode(["floodwater covers the fields near the river"])[0]
    assert float(para @ vectors[0]) > float(para @ vectors[1]) + 0.1
    assert load_text_encoder("minilm") is text  # frozen encoders are shared


def test_frozen_encoder_has_no_gradients_and_caches(tiny_st: Path) -> None:
    text = load_text_encoder(f"sentence-transformers:{tiny_st}")
    assert text.dim == 32 and not text.trainable
    assert all(not p.requires_grad for p in text.parameters())
    out = text.encode(["a lake", "a town"])
    assert not out.requires_grad
    assert set(text._cache) >= {"a lake", "a town"}
    text.train()  # a parent's train() leaves a frozen encoder in eval mode
    assert not text.training
    assert text.encode([]).shape == (0, 32)


def test_trainable_encoder_passes_gradients(tiny_st: Path) -> None:
    text = load_text_encoder(f"sentence-transformers:{tiny_st}", trainable=True)
    assert text is not load_text_encoder(f"sentence-transformers:{tiny_st}", trainable=True)
    text.train()
    out = text.encode(["a lake", "a green forest"])
    assert out.requires_grad
    out[0, 0].backward()
    grads = [p.grad for p in text.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # its weights change with training, so nothing is cached
    with torch.no_grad():
        text.encode(["a lake"])
    assert not text._cache


class _FakeCLIP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = nn.Linear(3, 3)
        self.token_embedding = nn.Embedding(100, 16)
        self.text_projection = nn.Parameter(torch.randn(16, 12))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens).mean(dim=1) @ self.text_projection


def _fake_open_clip(calls: list[Any]) -> types.ModuleType:
    module = types.ModuleType("open_clip")

    def create_model(
        arch: str, pretrained: str | None = None, device: str = "cpu", **kwargs: Any
    ) -> nn.Module:
        calls.append((arch, pretrained, device))
        torch.manual_seed(1)  # not the checkpoint's weights: those are loaded from the file
        return _FakeCLIP()

    def get_tokenizer(arch: str) -> Any:
        def tokenize(texts: list[str]) -> torch.Tensor:
            return torch.tensor([[(ord(c) % 99) + 1 for c in (t + " " * 8)[:8]] for t in texts])

        return tokenize

    module.create_model = create_model  # type: ignore[attr-defined]
    module.get_model_config = lambda arch: {"embed_dim": 12}  # type: ignore[attr-defined]
    module.get_tokenizer = get_tokenizer  # type: ignore[attr-defined]
    return module


def test_open_clip_text_tower_from_a_local_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "clip.pt"
    torch.manual_seed(0)
    saved = _FakeCLIP()
    torch.save(saved.state_dict(), checkpoint)
    calls: list[Any] = []
    monkeypatch.setitem(sys.modules, "open_clip", _fake_open_clip(calls))
    spec = f"open-clip:ViT-B-32:{checkpoint}"
    text = load_text_encoder(spec, trainable=True)  # trainable: not the shared frozen cache
    # built without weights (OpenCLIP's pretrained=PATH may unpickle); ours read weights-only
    assert calls == [("ViT-B-32", None, "cpu")]
    assert torch.equal(text.model.text_projection, saved.text_projection)
    assert text.dim == 12 and text.spec == spec
    assert isinstance(text.model.visual, nn.Identity)  # the image tower is dropped
    out = text.encode(["water", "forest"])
    assert out.shape == (2, 12)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_open_clip_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip raises ImportError
    with pytest.raises(UserInputError, match=r"needs open_clip, which is not installed") as info:
        load_text_encoder(f"open-clip:ViT-B-32:{tmp_path / 'x.pt'}")
    assert "\n" not in str(info.value)


def test_open_clip_missing_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", _fake_open_clip([]))
    with pytest.raises(UserInputError, match=r"does not exist"):
        load_text_encoder(f"open-clip:ViT-B-32:{tmp_path / 'missing.pt'}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("bert", "unknown text encoder"),
        ("open-clip:ViT-B-32", "unknown text encoder"),
        ("sentence-transformers:", "unknown text encoder"),
        ("sentence-transformers:/nonexistent/folder", "does not exist"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, match: str) -> None:
    with pytest.raises(UserInputError, match=match) as info:
        load_text_encoder(spec)
    assert "\n" not in str(info.value)


def test_a_folder_that_is_no_model_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserInputError, match=r"cannot load text encoder"):
        load_text_encoder(f"sentence-transformers:{tmp_path}")


def test_parse_text_spec() -> None:
    assert parse_text_spec("minilm") == ("minilm", None, None)
    assert parse_text_spec("sentence-transformers:/a/b") == ("sentence-transformers", None, "/a/b")
    assert parse_text_spec("open-clip:ViT-B-32:/c/d.pt") == ("open-clip", "ViT-B-32", "/c/d.pt")
