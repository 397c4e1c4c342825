"""Domain generalisation: band dropout, spectral jitter and metadata dropout measured back,
source/target pairing, and the adapt: section's checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from thinkingearth.adapt.data import SourceTargetPairs, collate_pairs
from thinkingearth.adapt.generalise import augment_batch
from thinkingearth.data.sample import collate
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder
from thinkingearth.tasks.variants import AdaptSection

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def _batch(b: int = 8, size: int = 8, series: bool = False) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    shape = (2, len(BANDS), size, size) if series else (len(BANDS), size, size)
    samples = [
        {
            "image": torch.randn(*shape, generator=g) + 3.0,
            "bands": BANDS,
            "sensor": "sentinel-2-l2a",
            "lon": 5.0,
            "lat": 50.0,
            "time": [19000.0, 19010.0] if series else 19000.0,
            "gsd": 10.0,
            "key": f"train:{i}",
        }
        for i in range(b)
    ]
    return collate(samples)


def test_nothing_changes_without_rates() -> None:
    batch = _batch()
    out = augment_batch(batch, AdaptSection(), torch.Generator().manual_seed(0))
    assert out["image"] is batch["image"] and out["key"] == batch["key"]


def test_band_dropout_drop_mode_rate_and_names() -> None:
    batch = _batch(b=2)
    section = AdaptSection(band_dropout=0.3)
    g = torch.Generator().manual_seed(0)
    kept_counts = []
    for _ in range(400):
        out = augment_batch(batch, section, g, mode="drop")
        names = out["bands"][0]
        assert all(n == names for n in out["bands"])
        assert out["image"].shape[1] == len(names) >= 1
        index = [BANDS.index(n) for n in names]
        assert torch.equal(out["image"], batch["image"][:, index])  # the kept channels, intact
        assert "key" not in out
        kept_counts.append(len(names))
    kept = sum(kept_counts) / (400 * len(BANDS))
    assert kept == pytest.approx(0.7, abs=0.03)
    assert batch["image"].shape[1] == len(BANDS)  # the input is not changed


def test_band_dropout_zero_mode_per_sample_and_series() -> None:
    batch = _batch(b=64, series=True)
    out = augment_batch(
        batch, AdaptSection(band_dropout=0.5), torch.Generator().manual_seed(1), mode="zero"
    )
    assert out["image"].shape == batch["image"].shape and out["bands"] == batch["bands"]
    zeroed = (out["image"] == 0).flatten(3).all(dim=3)  # [B, T, C]
    assert torch.equal(zeroed[:, 0], zeroed[:, 1])  # the same bands at every time step
    assert (~zeroed[:, 0]).sum(dim=1).min() >= 1  # at least one band kept per sample
    assert float(zeroed[:, 0].float().mean()) == pytest.approx(0.5, abs=0.06)
    assert len({tuple(row.tolist()) for row in zeroed[:, 0]}) > 10  # drawn per sample


def test_spectral_jitter_gain_statistics() -> None:
    batch = _batch(b=256, size=4)
    out = augment_batch(batch, AdaptSection(spectral_jitter=0.2), torch.Generator().manual_seed(2))
    gain = out["image"] / batch["image"]  # [B, C, H, W], constant over pixels
    per_band = gain[:, :, 0, 0]
    torch.testing.assert_close(gain, per_band[:, :, None, None].expand_as(gain))
    assert float(per_band.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(per_band.std()) == pytest.approx(0.2, abs=0.01)


def test_metadata_dropout_rate_per_sample() -> None:
    batch = _batch(b=2000, size=1, series=True)
    out = augment_batch(
        batch, AdaptSection(metadata_dropout=0.25), torch.Generator().manual_seed(3)
    )
    dropped = torch.isnan(out["lon"])
    for name in ("lat", "gsd"):
        assert torch.equal(torch.isnan(out[name]), dropped)
    assert torch.equal(torch.isnan(out["time"]).all(dim=1), dropped)
    assert not torch.isnan(out["time"][~dropped]).any()
    assert float(dropped.float().mean()) == pytest.approx(0.25, abs=0.03)
    assert not torch.isnan(batch["lon"]).any()


def test_dropped_metadata_reads_as_unknown_to_the_encoder() -> None:
    torch.manual_seed(0)
    encoder = create_encoder("thinkingearth_vit_tiny", depth=2, embed_dim=48).eval()
    batch = _batch(b=2, size=16)
    out = augment_batch(batch, AdaptSection(metadata_dropout=1.0), torch.Generator())
    unknown = {
        k: torch.full((2,), math.nan, dtype=torch.float64) for k in ("lon", "lat", "time", "gsd")
    }
    with torch.no_grad():
        a = encoder(
            out["image"], bands=list(BANDS), sensor="sentinel-2-l2a", meta=out, patch_size=8
        )
        b = encoder(
            out["image"], bands=list(BANDS), sensor="sentinel-2-l2a", meta=unknown, patch_size=8
        )
        c = encoder(
            batch["image"], bands=list(BANDS), sensor="sentinel-2-l2a", meta=batch, patch_size=8
        )
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_pairs_cover_both_sides_deterministically() -> None:
    source = [{"i": i} for i in range(3)]
    target = [{"j": j} for j in range(7)]
    pairs = SourceTargetPairs(source, target, seed=4)
    assert len(pairs) == 7
    items = [pairs[i] for i in range(len(pairs))]
    assert sorted(item["target"]["j"] for item in items) == list(range(7))
    assert {item["source"]["i"] for item in items} == {0, 1, 2}
    assert items == [SourceTargetPairs(source, target, seed=4)[i] for i in range(7)]
    assert items != [SourceTargetPairs(source, target, seed=5)[i] for i in range(7)]
    with pytest.raises(UserInputError, match="unlabelled target samples; none given"):
        SourceTargetPairs(source, [], seed=0)


def test_collate_pairs_keeps_sides_apart() -> None:
    s = {"image": torch.zeros(2, 4, 4), "bands": ("B02", "B03"), "sensor": "sentinel-2-l2a"}
    t = {"image": torch.ones(3, 8, 8), "bands": ("B1", "B2", "B3"), "sensor": "landsat-8-9"}
    batch = collate_pairs([{"source": s, "target": t}] * 2)
    assert batch["source"]["image"].shape == (2, 2, 4, 4)
    assert batch["target"]["image"].shape == (2, 3, 8, 8)
    assert torch.isnan(batch["target"]["lon"]).all()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "magic"}, "adapt.method is 'magic'; expected one of: none, dann"),
        ({"weight": -1}, "adapt.weight must be >= 0"),
        ({"threshold": 0}, "adapt.threshold must be in (0, 1]"),
        ({"steps": -1}, "adapt.steps must be an integer >= 0"),
        ({"method": "tent", "steps": 0}, "adapt.steps must be >= 1 for tent"),
        ({"lr": 0}, "adapt.lr must be > 0"),
        ({"band_dropout": 1.0}, "adapt.band_dropout must be in [0, 1)"),
        ({"spectral_jitter": -0.1}, "adapt.spectral_jitter must be >= 0"),
        ({"metadata_dropout": 1.5}, "adapt.metadata_dropout must be in [0, 1]"),
        ({"wieght": 1}, "unknown adapt key(s): wieght; expected: band_dropout"),
    ],
)
def test_adapt_section_one_line_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError) as info:
        AdaptSection.from_dict(values)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_adapt_section_properties() -> None:
    assert AdaptSection().plain and not AdaptSection().needs_target
    assert not AdaptSection(spectral_jitter=0.1).plain
    assert (
        AdaptSection(method="tent").needs_target and not AdaptSection(method="tent").during_training
    )
    assert AdaptSection(method="dann").during_training
    section = AdaptSection(method="mmd", weight=2)
    assert AdaptSection.from_dict(section.to_dict()) == section
    assert isinstance(section.weight, float)
