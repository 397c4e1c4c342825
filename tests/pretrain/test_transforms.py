"""Normalisation per sensor and augmentations whose metadata follows the crop."""

from __future__ import annotations

import math

import pytest
import torch

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.errors import UserInputError
from thinkingearth.pretrain.transforms import (
    EARTH_RADIUS_M,
    Augmenter,
    CropParams,
    Normaliser,
    choose_bands,
    crop_metadata,
    flip_transform,
    resized_crop,
    sample_crops,
)
from thinkingearth.sensors import SSL4EO_S12_S1_DB_STATS, get_sensor


def test_modes_and_registry_statistics():
    norm = Normaliser()
    assert norm.mode("s2") == "registry"
    assert norm.mode("sentinel-1-grd") == "sar_db"
    assert norm.mode("copernicus-dem") == "dataset"
    mean, std = get_sensor("s2").normalisation(["B04", "B08"])
    image = torch.tensor(mean).reshape(2, 1, 1).expand(2, 4, 4) + torch.tensor(std).reshape(2, 1, 1)
    assert torch.allclose(norm(image, "s2", ["B04", "B08"]), torch.ones(2, 4, 4), atol=1e-5)


def test_sar_is_standardised_in_decibels_and_nodata_becomes_zero():
    vv_mean, vv_std = SSL4EO_S12_S1_DB_STATS["VV"]
    sigma0 = 10 ** ((vv_mean + vv_std) / 10)
    image = torch.full((1, 2, 2), sigma0)
    image[0, 0, 0] = 0.0  # Sentinel-1 no data
    out = Normaliser()(image, "s1", ["VV"])
    assert out[0, 0, 0] == 0
    assert torch.allclose(out[0, 1:, :], torch.ones(1, 2), atol=1e-4)


def test_dataset_statistics_for_sensors_without_published_ones():
    ds = SyntheticCopernicus(task="none", sensor="copernicus-dem", n=4, size=16)
    norm = Normaliser()
    with pytest.raises(UserInputError, match="no normalisation statistics"):
        norm(ds[0]["image"], "dem", ds.bands)
    norm.fit("dem", ds.bands, (ds[i]["image"] for i in range(4)))
    x = torch.stack([norm(ds[i]["image"], "dem", ds.bands) for i in range(4)])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
    assert Normaliser.from_dict(norm.to_dict()).stats == norm.stats


def _params(top, left, h, w, out, src=(64, 64), hflip=False, vflip=False):
    return CropParams(
        torch.tensor([[top, left, h, w]], dtype=torch.float64),
        torch.tensor([hflip]),
        torch.tensor([vflip]),
        out,
        src,
    )


def test_crop_metadata_follows_centre_and_area():
    meta = {
        "lon": torch.tensor([10.0], dtype=torch.float64),
        "lat": torch.tensor([45.0], dtype=torch.float64),
        "time": torch.tensor([1.0], dtype=torch.float64),
        "gsd": torch.tensor([10.0], dtype=torch.float64),
    }
    full = crop_metadata(meta, _params(0, 0, 64, 64, 64))
    assert torch.allclose(full["lon"], meta["lon"]) and torch.allclose(full["lat"], meta["lat"])
    assert torch.allclose(full["gsd"], meta["gsd"])
    # The top-right quarter, zoomed back to 64 px: centre 16 px north and 16 px east.
    quarter = crop_metadata(meta, _params(0, 32, 32, 32, 64))
    dlat = math.degrees(160.0 / EARTH_RADIUS_M)
    dlon = math.degrees(160.0 / (EARTH_RADIUS_M * math.cos(math.radians(45.0))))
    assert quarter["lat"].item() == pytest.approx(45.0 + dlat, abs=1e-9)
    assert quarter["lon"].item() == pytest.approx(10.0 + dlon, abs=1e-9)
    assert quarter["gsd"].item() == pytest.approx(5.0)  # 2x zoom: half the pixel size
    assert quarter["time"].item() == 1.0
    # Unknown metadata stays unknown.
    nan = {k: torch.tensor([math.nan], dtype=torch.float64) for k in meta}
    assert torch.isnan(crop_metadata(nan, _params(0, 32, 32, 32, 64))["lon"]).all()


def test_resized_crop_and_flips_match_the_georeferencing():
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    params = _params(8, 16, 16, 16, 16, hflip=True)
    out = resized_crop(image, params)
    assert torch.equal(out[0, 0], image[0, 0, 8:24, 16:32].flip(-1))
    # The affine of the output maps its pixel (0, 0) to source pixel (row 8, col 31).
    a, b, c, d, e, f = flip_transform(
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), [8, 16, 16, 16], 16, True, False
    )
    col, row = a * 0.5 + b * 0.5 + c, d * 0.5 + e * 0.5 + f  # centre of output pixel (0, 0)
    assert (col, row) == (31.5, 8.5)


def test_random_crops_respect_scale_and_ratio_and_bands_fraction():
    g = torch.Generator().manual_seed(0)
    params = sample_crops(200, (64, 64), 32, (0.25, 1.0), (0.75, 4 / 3), True, g)
    area = params.boxes[:, 2] * params.boxes[:, 3] / 64**2
    assert area.min() >= 0.2 and area.max() <= 1.0
    assert (params.boxes[:, :2] >= 0).all()
    assert (params.boxes[:, 0] + params.boxes[:, 2] <= 64).all()
    assert 0.2 < params.hflip.float().mean() < 0.8
    counts = {len(choose_bands(12, (0.75, 1.0), g)) for _ in range(200)}
    assert counts == {9, 10, 11, 12}
    assert choose_bands(2, (0.75, 1.0), g) == [0, 1]


def test_augmenter_views_are_deterministic_per_seed():
    ds = SyntheticCopernicus(task="none", sensor="s2", n=4, size=32)
    batch = collate([ds[i] for i in range(4)])
    aug = Augmenter(Normaliser(), out_size=16)
    v1 = aug.view(batch, torch.Generator().manual_seed(3))
    v2 = aug.view(batch, torch.Generator().manual_seed(3))
    assert torch.equal(v1.image, v2.image) and v1.bands == v2.bands
    assert v1.image.shape[1] == len(v1.bands) and v1.image.shape[-1] == 16
    assert v1.full_image.shape[1] == 12 and v1.labels is not None
