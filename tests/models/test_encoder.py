"""Shapes for every registered sensor, input errors, Sample-batch metadata, kernel cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from thinkingearth.data.sample import collate
from thinkingearth.errors import UnknownBandError, UnknownSensorError, UserInputError
from thinkingearth.models import create_encoder, list_models
from thinkingearth.sensors import SENSORS


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return create_encoder("thinkingearth_vit_tiny", depth=2, img_size=32).eval()


def test_registry_sizes() -> None:
    names = list_models()
    for size in ("tiny", "small", "base", "large"):
        assert f"thinkingearth_vit_{size}" in names
    assert {"copernicusfm_vit_base", "dofa_vit_base", "dofa_vit_large"} <= set(names)
    with pytest.raises(UserInputError, match="unknown model"):
        create_encoder("vit_gigantic")


@pytest.mark.parametrize("sensor", sorted(SENSORS))
def test_every_sensor_shapes(model: nn.Module, sensor: str, fake_text_encoder: object) -> None:
    bands = SENSORS[sensor].band_names
    image = torch.randn(2, len(bands), 32, 48)  # non-square
    with torch.no_grad():
        pooled = model(image, bands, sensor=sensor)
        maps = model.forward_intermediates(image, bands, sensor=sensor, indices=[0, -1])
        fine = model.forward_intermediates(image, bands, sensor=sensor, indices=1, patch_size=8)
    assert pooled.shape == (2, 192) and torch.isfinite(pooled).all()
    assert [m.shape for m in maps] == [(2, 192, 2, 3)] * 2
    assert [m.shape for m in fine] == [(2, 192, 4, 6)]


def test_qualified_and_bare_names_agree(model: nn.Module) -> None:
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        bare = model(image, ["B04", "B03", "B02"], sensor="sentinel-2-l2a")
        qualified = model(image, [f"sentinel-2-l2a:{b}" for b in ("red", "B3", "B02")])
        swapped = model(image, ["B02", "B03", "B04"], sensor="sentinel-2-l2a")
    assert torch.equal(bare, qualified)
    assert not torch.equal(bare, swapped)


def test_intermediates_match_pooled(model: nn.Module) -> None:
    image = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        pooled = model(image, ["VV", "VH"], sensor="sentinel-1-grd")
        (last,) = model.forward_intermediates(image, ["VV", "VH"], sensor="sentinel-1-grd")
    again = model.fc_norm(last.flatten(2).mean(dim=2))
    assert torch.allclose(pooled, again, atol=1e-5)


def test_sample_batch_metadata(model: nn.Module) -> None:
    image = torch.randn(3, 32, 32)
    samples = [
        {
            "image": image,
            "bands": ("B04", "B03", "B02"),
            "sensor": "sentinel-2-l2a",
            "lon": 11.5,
            "lat": 48.1,
            "time": 19_000.0,
            "gsd": 10.0,
        },
        {
            "image": image,
            "bands": ("B04", "B03", "B02"),
            "sensor": "sentinel-2-l2a",
            "lon": 11.5,
            "lat": 48.1,
            "gsd": 10.0,
        },  # no time
    ]
    batch = collate(samples)
    area = (10.0 * 16 / 1000) ** 2
    as_tensor = torch.tensor(
        [[11.5, 48.1, 19_000.0, area], [11.5, 48.1, math.nan, area]], dtype=torch.float64
    )
    with torch.no_grad():
        from_batch = model(batch["image"], batch["bands"][0], sensor="sentinel-2-l2a", meta=batch)
        from_tensor = model(
            batch["image"], batch["bands"][0], sensor="sentinel-2-l2a", meta=as_tensor
        )
    assert torch.equal(from_batch, from_tensor)
    assert not torch.equal(from_batch[0], from_batch[1])  # sample 0 keeps its time


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(bands=["B99"], sensor="sentinel-2-l2a"), UnknownBandError, "B99"),
        (dict(bands=["sentinel-9:B04"]), UnknownSensorError, "sentinel-9"),
        (dict(bands=["B04", "B03", "B02"]), UserInputError, "sensor="),
        (dict(bands=["B04", "B03"], sensor="sentinel-2-l2a"), UserInputError, "3 channels"),
        (dict(wavelengths=[665.0, 560.0], bandwidths=[30.0, 35.0]), UserInputError, "3 channels"),
        (dict(wavelengths=[665.0, 560.0, 490.0], bandwidths=[30.0]), UserInputError, "bandwidths"),
        (dict(wavelengths=[665.0, 560.0, 490.0]), UserInputError, "bandwidths="),
        (dict(wavelengths=[1.0, 560.0, 490.0], bandwidths=[3.0] * 3), UserInputError, "range"),
        (dict(), UserInputError, "exactly one of"),
        (dict(bands=["B04"] * 3, sensor="s2", variable="NO2"), UserInputError, "exactly one"),
        (
            dict(bands=["sentinel-2-l2a:B04", "sentinel-5p:NO2", "sentinel-2-l2a:B02"]),
            UserInputError,
            "mix",
        ),
        (
            dict(bands=["B04", "B03", "B02"], sensor="s2", meta=torch.zeros(3, 4)),
            UserInputError,
            "meta has shape",
        ),
    ],
)
def test_bad_inputs(model: nn.Module, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        model(torch.randn(2, 3, 32, 32), **kwargs)
    assert "\n" not in str(info.value)


def test_image_smaller_than_a_patch(model: nn.Module) -> None:
    with pytest.raises(UserInputError, match="smaller than one patch"):
        model(torch.randn(1, 2, 12, 40), ["VV", "VH"], sensor="s1")
    with pytest.raises(UserInputError, match=r"\[B, C, H, W\]"):
        model(torch.randn(2, 32, 32), ["VV", "VH"], sensor="s1")


def test_dofa_has_no_variables() -> None:
    dofa = create_encoder("dofa_vit_base", depth=1, embed_dim=192, num_heads=3, img_size=32)
    with pytest.raises(UserInputError, match="no variable hypernetwork"):
        dofa(torch.randn(1, 1, 32, 32), variable="Sentinel-5P NO2")


def test_kernel_cache_invalidated_on_weight_change() -> None:
    torch.manual_seed(0)
    model = create_encoder("thinkingearth_vit_tiny", depth=1, img_size=32).eval()
    other = create_encoder("thinkingearth_vit_tiny", depth=1, img_size=32).eval()
    image = torch.randn(1, 2, 32, 32)
    run = lambda m: m(image, ["VV", "VH"], sensor="s1")  # noqa: E731
    with torch.no_grad():
        first = run(model)
        assert len(model._kernel_cache) == 1
        assert torch.equal(run(model), first)
        model.spectral.generator.to_bias.bias.add_(0.5)  # in-place, e.g. an optimiser step
        changed = run(model)
        assert not torch.equal(changed, first)
        model.spectral.generator.to_bias.bias.sub_(0.5)
        assert torch.allclose(run(model), first, atol=1e-6)
        model.load_state_dict(other.state_dict())
        assert torch.equal(run(model), run(other))
    # No caching in training mode or with gradients.
    model.train()
    run(model)
    assert len(model._kernel_cache) == 0
    model.eval()
    run(model)
    assert len(model._kernel_cache) == 0


def test_gradients_reach_the_hypernetwork() -> None:
    model = create_encoder("thinkingearth_vit_tiny", depth=1, img_size=32)
    model(
        torch.randn(2, 2, 32, 32), ["VV", "VH"], sensor="s1", meta=torch.rand(2, 4)
    ).sum().backward()
    assert model.spectral.generator.to_weight.weight.grad is not None
    assert model.spectral.identity.weight.grad is not None
    assert model.meta.year_fc.weight.grad is not None
