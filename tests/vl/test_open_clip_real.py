"""The ``open-clip:ARCH:PATH`` text encoder on the real OpenCLIP library, fully offline.

A tiny OpenCLIP architecture is registered from a JSON config (nothing is downloaded; its
tokenizer is OpenCLIP's SimpleTokenizer, whose BPE vocabulary ships inside the wheel), its
weights are saved the ways OpenCLIP saves them, and thinkingearth's encoder must give exactly
``normalize(model.encode_text(tokenizer(texts)))``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from thinkingearth.errors import UserInputError
from thinkingearth.vl.text import load_text_encoder

open_clip = pytest.importorskip("open_clip")

ARCH = "thinkingearth-test-tiny-clip"  # no "siglip" in the name: OpenCLIP's SimpleTokenizer
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEXTS = [
    "a satellite image of flooded farmland next to a river.",
    "forest",
    "a sentinel-2 scene dominated by cropland, autumn 2023",
]


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Register the tiny architecture with OpenCLIP for this module, then take it away again."""
    from open_clip import factory

    folder = tmp_path_factory.mktemp("open-clip-configs")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    before = list(factory._MODEL_CONFIG_PATHS)
    open_clip.add_model_config(folder)
    yield ARCH
    factory._MODEL_CONFIG_PATHS[:] = before
    factory._rescan_model_configs()


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH, pretrained=None, device="cpu").eval()


def _save(model: torch.nn.Module, path: Path, layout: str) -> None:
    """Save ``model``'s weights the way OpenCLIP does in each of its layouts."""
    state = model.state_dict()
    if layout == "safetensors":  # open_clip_model.safetensors (push_to_hf_hub)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "state_dict":  # open_clip_pytorch_model.bin
        torch.save(state, path)
    else:  # a training checkpoint of open_clip_train under DDP
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.save(
            {
                "epoch": 3,
                "name": "tiny",
                "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": optimizer.state_dict(),
            },
            path,
        )


@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("safetensors", "open_clip_model.safetensors"),
        ("state_dict", "open_clip_pytorch_model.bin"),
        ("training", "epoch_3.pt"),
    ],
)
def test_real_open_clip_checkpoint_gives_its_own_text_embeddings(
    tiny_arch: str, tmp_path: Path, layout: str, name: str
) -> None:
    model = _model(seed=1)
    path = tmp_path / name
    _save(model, path, layout)
    text = load_text_encoder(f"open-clip:{tiny_arch}:{path}", trainable=True)
    assert text.dim == TINY_CONFIG["embed_dim"]
    ours = text.encode(TEXTS)
    tokenizer = open_clip.get_tokenizer(tiny_arch)
    assert type(tokenizer).__name__ == "SimpleTokenizer"
    tokens = tokenizer(TEXTS)
    assert tokens.shape == (len(TEXTS), TINY_CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        reference = F.normalize(model.encode_text(tokens), dim=-1)
        other = F.normalize(_model(seed=2).encode_text(tokens), dim=-1)
    assert torch.equal(ours, reference)
    assert not torch.allclose(ours, other, atol=1e-3)  # the weights came from the file
    assert isinstance(text.model.visual, torch.nn.Identity)  # the image tower is dropped


def test_frozen_real_open_clip_encoder_is_shared_and_without_gradients(
    tiny_arch: str, tmp_path: Path
) -> None:
    path = tmp_path / "open_clip_model.safetensors"
    _save(_model(seed=3), path, "safetensors")
    spec = f"open-clip:{tiny_arch}:{path}"
    text = load_text_encoder(spec)
    assert load_text_encoder(spec) is text
    assert not any(p.requires_grad for p in text.parameters())
    out = text.encode(TEXTS[:2])
    assert out.shape == (2, 32) and not out.requires_grad
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def _crafted_type_error_pickle(path: Path, marker: Path) -> None:
    """A raw pickle that weights-only loading stops with a TypeError, which full unpickling runs.

    OpenCLIP's own ``pretrained=PATH`` retries a TypeError with a plain ``torch.load`` (full
    unpickling where ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set).
    """
    code = pickle.dumps(f"open({str(marker)!r}, 'w').write('unpickled')", protocol=2)[2:-1]
    path.write_bytes(
        b"\x80\x02ctorch\nFloatTensor\n)R"  # an empty tensor
        b"(ctorch\nFloatTensor\n)R\x89N\x89}tb0"  # BUILD with a 5-tuple: set_() -> TypeError
        b"cbuiltins\nexec\n(" + code + b"tR."
    )


@pytest.mark.parametrize("crafted", ["object", "type-error"])
def test_a_checkpoint_that_would_run_code_is_refused(
    tiny_arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crafted: str
) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    if crafted == "object":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    else:
        _crafted_type_error_pickle(path, marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # an explicit True still holds
    with pytest.raises(UserInputError) as info:
        load_text_encoder(f"open-clip:{tiny_arch}:{path}", trainable=True)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if crafted == "object":
        assert "refused (never unpickled)" in message
    assert not marker.exists()


def test_wrong_architecture_and_unknown_architecture_are_one_line(
    tiny_arch: str, tmp_path: Path
) -> None:
    path = tmp_path / "open_clip_model.safetensors"
    _save(_model(seed=0), path, "safetensors")
    wider = tmp_path / "configs"
    wider.mkdir()
    config = json.loads(json.dumps(TINY_CONFIG))
    config["text_cfg"]["width"] = 32
    (wider / "thinkingearth-test-tiny-clip-narrow.json").write_text(json.dumps(config))
    from open_clip import factory

    before = list(factory._MODEL_CONFIG_PATHS)
    open_clip.add_model_config(wider)
    try:
        with pytest.raises(UserInputError, match="is ARCH the checkpoint's architecture") as info:
            load_text_encoder(f"open-clip:thinkingearth-test-tiny-clip-narrow:{path}")
        assert "\n" not in str(info.value)
    finally:
        factory._MODEL_CONFIG_PATHS[:] = before
        factory._rescan_model_configs()
    with pytest.raises(
        UserInputError, match="unknown OpenCLIP architecture 'no-such-arch'"
    ) as info:
        load_text_encoder(f"open-clip:no-such-arch:{path}")
    assert "\n" not in str(info.value)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(UserInputError, match="not a state dict of tensors"):
        load_text_encoder(f"open-clip:{tiny_arch}:{tmp_path / 'tensor.pt'}")


def test_a_clip_layout_checkpoint_loads_into_a_custom_text_architecture(
    tiny_arch: str, tmp_path: Path
) -> None:
    """OpenCLIP's format change (CLIP's text weights -> CustomTextCLIP's ``text.``) is made."""
    from open_clip import factory

    folder = tmp_path / "configs"
    folder.mkdir()
    custom = "thinkingearth-test-tiny-clip-custom"
    (folder / f"{custom}.json").write_text(json.dumps({**TINY_CONFIG, "custom_text": True}))
    model = _model(seed=4)
    path = tmp_path / "open_clip_pytorch_model.bin"
    _save(model, path, "state_dict")
    assert "positional_embedding" in torch.load(path, weights_only=True)
    before = list(factory._MODEL_CONFIG_PATHS)
    open_clip.add_model_config(folder)
    try:
        text = load_text_encoder(f"open-clip:{custom}:{path}", trainable=True)
    finally:
        factory._MODEL_CONFIG_PATHS[:] = before
        factory._rescan_model_configs()
    assert type(text.model).__name__ == "CustomTextCLIP"
    tokens = open_clip.get_tokenizer(tiny_arch)(TEXTS)
    with torch.no_grad():
        reference = F.normalize(model.encode_text(tokens), dim=-1)
    torch.testing.assert_close(text.encode(TEXTS), reference)
