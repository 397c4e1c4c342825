"""Imported published models match torchgeo's reference implementations feature for feature."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from thinkingearth.models import load
from thinkingearth.models.conventions import hypernet_input
from thinkingearth.sensors import get_bands, get_sensor

TOL = 1e-5
LN6 = partial(nn.LayerNorm, eps=1e-6)
META = torch.tensor([[11.58, 48.14, 19_000.0, 0.0256], [-3.70, 40.42, 18_512.5, 0.0256]])
NO_META = torch.full((2, 4), float("nan"))
SPECTRAL_CASES = [
    ("sentinel-1-grd", None),
    ("sentinel-2-l1c", None),
    ("sentinel-3-olci", None),
]
DOFA_CASES = [*SPECTRAL_CASES, ("sentinel-2-l2a", ["B04", "B03", "B02", "B08"])]


def reference_inputs(
    sensor: str, names: list[str] | None, convention: str
) -> tuple[list[str], list[float], list[float | None]]:
    bands = get_bands(sensor, names)
    described = [hypernet_input(b, get_sensor(sensor).name, convention) for b in bands]  # type: ignore[arg-type]
    return (
        [b.name for b in bands],
        [d.wavelength for d in described],
        [d.bandwidth for d in described],
    )


@pytest.fixture(scope="module")
def cfm(cfm_reference: tuple[nn.Module, Path]) -> tuple[nn.Module, nn.Module]:
    reference, path = cfm_reference
    return reference, load(path)


@pytest.mark.parametrize("patch_size", [16, 8])
@pytest.mark.parametrize("meta", [META, NO_META], ids=["meta", "no-meta"])
@pytest.mark.parametrize(("sensor", "names"), SPECTRAL_CASES, ids=[c[0] for c in SPECTRAL_CASES])
def test_copernicusfm_spectral_matches_torchgeo(
    cfm: tuple[nn.Module, nn.Module],
    sensor: str,
    names: list[str] | None,
    meta: Tensor,
    patch_size: int,
) -> None:
    reference, encoder = cfm
    band_names, wavelengths, bandwidths = reference_inputs(sensor, names, "copernicusfm")
    image = torch.randn(2, len(band_names), 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(
            image, meta, wavelengths=wavelengths, bandwidths=bandwidths, kernel_size=patch_size
        )
        got = encoder(image, band_names, sensor=sensor, meta=meta, patch_size=patch_size)
    assert got.shape == (2, 768)
    assert (got - expected).abs().max().item() <= TOL


def test_copernicusfm_s1_uses_published_convention() -> None:
    _, wavelengths, bandwidths = reference_inputs("sentinel-1-grd", None, "copernicusfm")
    assert wavelengths == [5e7, 5e7] and bandwidths == [1e9, 1e9]
    _, wavelengths, bandwidths = reference_inputs("sentinel-2-l2a", ["B04", "B08"], "copernicusfm")
    assert wavelengths == [665.0, 842.0] and bandwidths == [30.0, 115.0]


@pytest.mark.parametrize("patch_size", [16, 8])
@pytest.mark.parametrize("meta", [META, NO_META], ids=["meta", "no-meta"])
def test_copernicusfm_variable_matches_torchgeo(
    cfm: tuple[nn.Module, nn.Module], meta: Tensor, patch_size: int
) -> None:
    reference, encoder = cfm
    language = torch.randn(2048, generator=torch.Generator().manual_seed(4))
    encoder.set_language_embeddings({"Sentinel 5P Nitrogen Dioxide": language})
    image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(
            image, meta, language_embed=language, input_mode="variable", kernel_size=patch_size
        )
        by_name = encoder(image, variable="Sentinel-5P NO2", meta=meta, patch_size=patch_size)
        by_band = encoder(image, ["sentinel-5p:NO2"], meta=meta, patch_size=patch_size)
        explicit = encoder(
            image,
            variable="soil moisture",
            meta=meta,
            patch_size=patch_size,
            language_embed=language,
        )
    for got in (by_name, by_band, explicit):
        assert (got - expected).abs().max().item() <= TOL


def test_copernicusfm_language_table_file(
    cfm_reference: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    reference, path = cfm_reference
    table = {"Copernicus Digital Elevation Model": torch.randn(2048)}
    table_path = tmp_path / "var_embed_llama3.2_1B.pt"
    torch.save(table, table_path)
    encoder = load(path, language_table=table_path)
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = reference(
            image,
            META,
            language_embed=table["Copernicus Digital Elevation Model"],
            input_mode="variable",
            kernel_size=8,
        )
        got = encoder(image, ["copernicus-dem:DEM"], meta=META, patch_size=8)
    assert (got - expected).abs().max().item() <= TOL


def test_copernicusfm_published_layout(
    cfm_reference: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    """The authors' file: wrapped in "model", MAE extras, no fc_norm, LayerNorm eps 1e-6."""
    reference, _ = cfm_reference
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc_norm.")}
    state["norm.weight"] = torch.ones(768)
    state["norm.bias"] = torch.zeros(768)
    path = tmp_path / "CopernicusFM_ViT_base_varlang_e100.pth"
    torch.save({"model": state, "epoch": 99}, path)
    encoder = load(path)
    assert encoder.config.norm_eps == 1e-6
    # The authors' model: torchgeo's code with LayerNorm eps 1e-6 and a fresh fc_norm.
    original = copy.copy(reference)  # shallow: shares the weights, not the LayerNorm settings
    norms = [m for m in reference.modules() if isinstance(m, nn.LayerNorm)]
    saved = [(m.eps, m.weight.detach().clone(), m.bias.detach().clone()) for m in norms]
    band_names, wavelengths, bandwidths = reference_inputs("sentinel-2-l2a", None, "copernicusfm")
    image = torch.randn(2, len(band_names), 64, 64)
    try:
        with torch.no_grad():
            for m in norms:
                m.eps = 1e-6
            original.fc_norm.weight.fill_(1.0)
            original.fc_norm.bias.zero_()
            expected = original(image, META, wavelengths=wavelengths, bandwidths=bandwidths)
            got = encoder(image, band_names, sensor="sentinel-2-l2a", meta=META)
    finally:
        with torch.no_grad():
            for m, (eps, weight, bias) in zip(norms, saved, strict=True):
                m.eps = eps
                m.weight.copy_(weight)
                m.bias.copy_(bias)
    assert (got - expected).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def dofa(dofa_reference: tuple[nn.Module, Path]) -> tuple[nn.Module, nn.Module]:
    reference, path = dofa_reference
    return reference, load(path)


@pytest.mark.parametrize(("sensor", "names"), DOFA_CASES, ids=[c[0] for c in DOFA_CASES])
def test_dofa_base_matches_torchgeo(
    dofa: tuple[nn.Module, nn.Module], sensor: str, names: list[str] | None
) -> None:
    reference, encoder = dofa
    band_names, wavelengths_um, _ = reference_inputs(sensor, names, "dofa")
    image = torch.randn(2, len(band_names), 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = reference.forward_features(image, wavelengths_um)
        got = encoder(image, band_names, sensor=sensor, meta=META)  # DOFA ignores metadata
    assert got.shape == (2, 768)
    assert (got - expected).abs().max().item() <= TOL


def test_dofa_large_and_published_layout(
    dofa_large_reference: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    reference, path = dofa_large_reference
    band_names, wavelengths_um, _ = reference_inputs("sentinel-1-grd", None, "dofa")
    assert wavelengths_um == [5.405, 5.405]
    image = torch.randn(2, 2, 32, 32)
    encoder = load(path)
    assert (encoder.config.embed_dim, encoder.config.num_heads) == (1024, 16)
    with torch.no_grad():
        expected = reference.forward_features(image, wavelengths_um)
        got = encoder(image, band_names, sensor="sentinel-1-grd")
    assert (got - expected).abs().max().item() <= TOL

    # The authors' DOFA_ViT_*_e100.pth: MAE extras, no fc_norm and no head.
    state = {
        k: v for k, v in reference.state_dict().items() if not k.startswith(("fc_norm.", "head."))
    }
    state |= {
        "mask_token": torch.zeros(1, 1, 1024),
        "norm.weight": torch.ones(1024),
        "norm.bias": torch.zeros(1024),
        "projector.weight": torch.zeros(8, 1024),
        "projector.bias": torch.zeros(8),
    }
    published = tmp_path / "DOFA_ViT_large_e100.pth"
    torch.save(state, published)
    original = copy.deepcopy(reference)
    nn.init.ones_(original.fc_norm.weight)
    nn.init.zeros_(original.fc_norm.bias)
    with torch.no_grad():
        expected = original.forward_features(image, wavelengths_um)
        got = load(published)(image, band_names, sensor="sentinel-1-grd")
    assert (got - expected).abs().max().item() <= TOL


def test_wavelength_form_matches_band_form(cfm: tuple[nn.Module, nn.Module]) -> None:
    _, encoder = cfm
    band_names, wavelengths, bandwidths = reference_inputs("sentinel-2-l2a", None, "copernicusfm")
    image = torch.randn(2, len(band_names), 32, 48)  # non-square
    with torch.no_grad():
        a = encoder(image, band_names, sensor="sentinel-2-l2a", meta=META)
        b = encoder(image, wavelengths=wavelengths, bandwidths=bandwidths, meta=META)
    assert torch.equal(a, b)
