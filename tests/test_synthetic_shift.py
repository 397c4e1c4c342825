"""The synthetic world's controllable shift (biomes, knobs, flood types, seasons) and Landsat 8/9.

Every default must give exactly the scenes of the original world (digests recorded before the
shifts existed); every setting must move a measured statistic in its direction; the shifts must
open a domain gap that target data can close.
"""

import hashlib
from dataclasses import FrozenInstanceError, fields

import numpy as np
import pytest
import torch

from thinkingearth.data.readers import open_split
from thinkingearth.data.synthetic import (
    BARE,
    BIOMES,
    BUILT,
    CROP,
    ENDMEMBERS,
    GRASS,
    LANDCOVER_CLASSES,
    SEASON_DAYS,
    SHRUB,
    TREE,
    WETLAND,
    WORLD_SHIFT_FIELDS,
    SyntheticCopernicus,
    WorldConfig,
    _block_mean,
    generate_scene,
    world_spectra,
)
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_bands

# sha256 (first 32 hex digits) of dtype, shape and bytes of each array of
# generate_scene(0, i, WorldConfig(size=32), stream=s), recorded before the shifts were added;
# "meta" digests repr((lon, lat, s2_date, s1_dates, caption, no2 bytes)). "l1c/1" is
# generate_scene(0, 1, WorldConfig(size=32, s2_level="L1C", cloud_cover=0.3)).
_DEFAULT_DIGESTS = {
    "0/0": {
        "s2": "4a85723f07b06ce584a48cec20ba1cb4",
        "s1": "778f495d6981a5fb29aa2b4f9b97b14b",
        "s3": "d3db84e0bca1c15d72b51e554048cc46",
        "landcover": "9d778a73a3ef478abf9363472e352446",
        "flood": "a6da34a97ca17158c840098e4c610383",
        "biomass": "33f11d35deb7cd46b96ff05186bfe5d4",
        "dem": "1dbf8ba9a24d66a8601f6f24b4945406",
        "meta": "b64fc31556f7a891d0aced85dcece0da",
    },
    "0/1": {
        "s2": "ca638118fd38cdbe731d0f1570203d2a",
        "s1": "4c50350e0e5c30837577d6f23feb755a",
        "s3": "7ff173fa932509cae0bf80be9a328599",
        "landcover": "7776d1328a56d2f721b8b775429c2c50",
        "flood": "e191a7d1263d18b4584213377d5b4d7f",
        "biomass": "e430b42c10172c660a7efbd0975495f7",
        "dem": "0f31b021d43f6daca8b276696f5db2d2",
        "meta": "b40613494386c546d5008f3bcd0dd542",
    },
    "0/2": {
        "s2": "b04dbc1f0ee118ccbd4f22e61c78fbf2",
        "s1": "71a7f50db0c8ddffb59730b2562066e9",
        "s3": "3b3ae3f61a0d68054d49915fbf3b4037",
        "landcover": "0b7846326e90ffb54738cdece92a9bf9",
        "flood": "4f7257ba73a3cbf2aa6900661e303f3d",
        "biomass": "4878b5840581987866d1483d251a896a",
        "dem": "ccca345314a5a2cea6193e70032a91e7",
        "meta": "de6872279c5c6a185b936d04afbff394",
    },
    "0/3": {
        "s2": "069b7c3766d0213995240c8cf1d225a5",
        "s1": "d43c42c22bd779a91d9a8eb449abafae",
        "s3": "3a5cc5425b95a6feae03a2e66bb56d9c",
        "landcover": "b78d00ea69364ee821862ec973dcdeb0",
        "flood": "6e7693603a5429ed22d669e523518600",
        "biomass": "e0a425fc798141b5194cd2e50486ae5a",
        "dem": "7eec794108857dc5b3fb49713737521d",
        "meta": "2902a28a6f94dd21e5e9c243e7352c1a",
    },
    "2/0": {
        "s2": "72f8a201e743e9f9507a84ef19aa4e3a",
        "s1": "9049f334d49efd10210b3e8678219887",
        "s3": "d3a4bdb93bb09ab83f7270b82414a547",
        "landcover": "091b5c13d6181a962563844bce869542",
        "flood": "a4b9b0141d3effc79adc27fd98c67be6",
        "biomass": "a2e8360762522595f340c939d929c8ef",
        "dem": "1e2e8ccd409b64eb0cfe07c544a65d3c",
        "meta": "110065a26bc72848083ff8550493645a",
    },
    "2/1": {
        "s2": "eb73e46c94d4d2077e980b967bb37fb6",
        "s1": "10707e7655f10a5243ae5b5598efcba8",
        "s3": "756f5948cf1f5c633c2e2cc96d8e92a3",
        "landcover": "61f1b0d1e056d1a83edf0383e92b14d6",
        "flood": "d3fd92276e3fa5b5be43ac6f0878490b",
        "biomass": "44501ca8ba247b58fe9d5fa42cf22623",
        "dem": "8c8efdcf47b42e163df4ab7297c9e93e",
        "meta": "01fcd04a6feaa0b2c14530ae2449f216",
    },
    "2/2": {
        "s2": "764144ef3b149af0c609469d1e035eb4",
        "s1": "75513d89ee10d7da2d6354ed843b53a0",
        "s3": "a1fef4c6a753c8fd7d43fbbe071488bb",
        "landcover": "63d5ad6da10d47070036c0cb8a9a3a75",
        "flood": "bfeafe22e0f3b44f6f6737ed7b4859c1",
        "biomass": "2ab067658e3bab52b25329a96c2621e3",
        "dem": "04d8b26b1a6ba65c545bdc2512ababf0",
        "meta": "3f719e7f6aafde13b350c054210d73a4",
    },
    "2/3": {
        "s2": "23a2401b220b34f1e70dbc93dc2661d0",
        "s1": "25698e9b8e496b215ffc7df9c519e861",
        "s3": "113af5a72e9cc96d5498a02f2c8ce35f",
        "landcover": "03b0843ff9e89dda3a6f7942f11eeb2d",
        "flood": "efad40d097d85e6fdda5183d7a0a9217",
        "biomass": "5fdc1d452758e419c4c6e885d0ece420",
        "dem": "a914b5c67fd2d17ec1f17b0f03797a79",
        "meta": "0fdc25ade82ffdab1d8fee1eed5679bd",
    },
    "l1c/1": {
        "s2": "3292b6a730dedc672ae7f12e0220803a",
        "cloud_mask": "3dc9ccf2b4b0ed1e3e5321d9ad967b05",
    },
}

_ARRAYS = ("s2", "s1", "s3", "landcover", "flood", "biomass", "dem")


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:32]


def _meta_digest(s) -> str:
    text = repr((s.lon, s.lat, s.s2_date, s.s1_dates, s.caption, s.no2.tobytes()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@pytest.mark.parametrize("stream", [0, 2])
def test_defaults_reproduce_the_original_world_byte_for_byte(stream):
    for i in range(4):
        s = generate_scene(0, i, WorldConfig(size=32), stream=stream)
        want = _DEFAULT_DIGESTS[f"{stream}/{i}"]
        got = {k: _digest(getattr(s, k)) for k in _ARRAYS}
        got["meta"] = _meta_digest(s)
        assert got == want, f"scene {stream}/{i} changed"
    # Explicit values equal to the defaults are the defaults.
    explicit = WorldConfig(
        size=32, biome="temperate", speckle_looks=4.4, soil_moisture_db=0.0, season="any"
    )
    s = generate_scene(0, 0, explicit, stream=stream)
    assert _digest(s.s1) == _DEFAULT_DIGESTS[f"{stream}/0"]["s1"]


def test_defaults_with_clouds_and_l1c_are_unchanged():
    s = generate_scene(0, 1, WorldConfig(size=32, s2_level="L1C", cloud_cover=0.3))
    assert _digest(s.s2) == _DEFAULT_DIGESTS["l1c/1"]["s2"]
    assert _digest(s.cloud_mask) == _DEFAULT_DIGESTS["l1c/1"]["cloud_mask"]


def test_world_config_stays_frozen_and_hashable():
    a = WorldConfig(size=16, biome="arid", season="summer")
    assert hash(a) == hash(WorldConfig(size=16, biome="arid", season="summer"))
    with pytest.raises(FrozenInstanceError):
        a.biome = "boreal"  # type: ignore[misc]
    assert a.resolved("soil_brightness") == BIOMES["arid"].soil_brightness
    assert WorldConfig(biome="arid", soil_brightness=0.5).resolved("soil_brightness") == 0.5
    assert BIOMES["temperate"] == type(BIOMES["temperate"])(
        "temperate", BIOMES["temperate"].imitates
    )


# ---- biomes --------------------------------------------------------------------------------


def _scenes(n=8, size=48, stream=0, **world):
    return [generate_scene(1, i, WorldConfig(size=size, **world), stream=stream) for i in range(n)]


def _band(scenes, name):
    return np.stack([s.s2[s.s2_bands.index(name)] for s in scenes]) / 1e4


def _shares(scenes):
    lc = np.stack([s.landcover for s in scenes])
    return np.bincount(lc.ravel(), minlength=len(LANDCOVER_CLASSES)) / lc.size


@pytest.fixture(scope="module")
def biome_scenes():
    return {b: _scenes(biome=b) for b in ("temperate", "boreal", "arid", "tropical")}


def test_biomes_move_class_priors(biome_scenes):
    share = {b: _shares(s) for b, s in biome_scenes.items()}
    t = share["temperate"]
    assert share["boreal"][TREE] > t[TREE] + 0.1 and share["boreal"][WETLAND] > t[WETLAND]
    assert share["boreal"][CROP] < t[CROP] / 2
    assert share["arid"][BARE] > t[BARE] + 0.25 and share["arid"][TREE] < t[TREE] / 3
    assert share["tropical"][TREE] > t[TREE] + 0.15
    for b, scenes in biome_scenes.items():
        lo, hi = BIOMES[b].lat_range
        assert all(lo <= s.lat <= hi for s in scenes)
        assert all(s.extras["biome"] == b for s in scenes)


def test_biomes_move_spectra(biome_scenes):
    def tree_nir(b):
        scenes = biome_scenes[b]
        lc = np.stack([s.landcover for s in scenes])
        return _band(scenes, "B8A")[lc == TREE].mean()

    def ndvi(b):
        red, nir = _band(biome_scenes[b], "B04"), _band(biome_scenes[b], "B8A")
        return ((nir - red) / (nir + red)).mean()

    def red(b):
        return _band(biome_scenes[b], "B04").mean()

    assert tree_nir("boreal") < 0.85 * tree_nir("temperate")  # needle canopies
    assert ndvi("arid") < ndvi("temperate") - 0.1 < ndvi("tropical") - 0.1
    assert red("arid") > 1.3 * red("temperate")  # sand everywhere
    soil = ENDMEMBERS.index("soil")
    temperate, arid, boreal = (
        world_spectra(
            BIOMES[b].vegetation_shift,
            BIOMES[b].red_edge_shift_nm,
            BIOMES[b].soil_brightness,
            BIOMES[b].soil_redness,
        )[soil]
        for b in ("temperate", "arid", "boreal")
    )
    assert (arid > temperate).all() and (boreal < temperate).all()  # sand bright, podzol dark


def test_a_temperate_classifier_loses_accuracy_on_boreal_and_arid_which_target_data_recovers():
    # The Gaussian maximum-likelihood classifier on per-pixel log reflectance, fitted on a
    # world's train stream and scored on a test stream; the oracle is fitted on the target's.
    def pixels(stream, **world):
        scenes = _scenes(n=6, size=32, stream=stream, **world)
        x = np.concatenate([np.log(s.s2.reshape(12, -1).T / 1e4) for s in scenes])
        y = np.concatenate([s.landcover.ravel() for s in scenes])
        return x, y

    def fit(x, y):
        model = {}
        for k in np.unique(y):
            xk = x[y == k]
            if len(xk) >= 20:
                cov = np.cov(xk.T) + 1e-4 * np.eye(x.shape[1])
                model[k] = (xk.mean(0), np.linalg.inv(cov), np.linalg.slogdet(cov)[1], len(xk))
        return model

    def accuracy(model, x, y):
        keys = np.array(list(model))
        total = sum(v[3] for v in model.values())
        log_likelihood = np.stack(
            [
                -0.5 * np.einsum("ni,ij,nj->n", x - m, p, x - m) - 0.5 * logdet + np.log(n / total)
                for m, p, logdet, n in model.values()
            ],
            axis=1,
        )
        return float((keys[log_likelihood.argmax(1)] == y).mean())

    for biome in ("boreal", "arid"):
        test = pixels(2, biome=biome)
        source_only = accuracy(fit(*pixels(0)), *test)
        target = accuracy(fit(*pixels(0, biome=biome)), *test)
        assert target > source_only + 0.08 and target > 0.8, (biome, source_only, target)


# ---- explicit knobs ---------------------------------------------------------------------------


def test_vegetation_shift_moves_the_nir_plateau_only():
    def tree_bands(shift):
        scenes = _scenes(n=4, size=32, vegetation_shift=shift)
        lc = np.stack([s.landcover for s in scenes])
        return _band(scenes, "B04")[lc == TREE], _band(scenes, "B8A")[lc == TREE]

    (red_lo, nir_lo), (red_0, nir_0), (red_hi, nir_hi) = map(tree_bands, (-0.3, 0.0, 0.3))
    np.testing.assert_array_equal(red_lo, red_0)  # the visible does not move
    np.testing.assert_array_equal(red_hi, red_0)
    assert nir_lo.mean() < 0.85 * nir_0.mean() and nir_hi.mean() > 1.15 * nir_0.mean()


def test_soil_brightness_brightens_bare_ground_and_nothing_moves_the_land_cover():
    dark, bright = _scenes(n=4, size=32), _scenes(n=4, size=32, soil_brightness=1.5)
    for a, b in zip(dark, bright, strict=True):
        np.testing.assert_array_equal(a.landcover, b.landcover)
    lc = np.stack([s.landcover for s in dark])
    soil = np.isin(lc, (BARE, CROP))
    ratio = _band(bright, "B11")[soil].mean() / _band(dark, "B11")[soil].mean()
    assert ratio > 1.2
    for a, b in zip(dark, bright, strict=True):
        np.testing.assert_array_equal(a.s1, b.s1)  # radar does not see soil colour


def _vv_over(scenes, classes, step=0):
    vals = [s.s1[step, 0][np.isin(s.landcover, classes) & (s.flood == 0)] for s in scenes]
    return np.concatenate(vals)


def test_soil_moisture_raises_soil_sigma0_by_the_set_decibels():
    dry, wet = _scenes(n=4, size=32), _scenes(n=4, size=32, soil_moisture_db=3.0)
    ratio = _vv_over(wet, (GRASS, CROP, BARE)) / _vv_over(dry, (GRASS, CROP, BARE))
    np.testing.assert_allclose(10 * np.log10(ratio), 3.0, atol=1e-3)
    np.testing.assert_array_equal(_vv_over(wet, (TREE, BUILT)), _vv_over(dry, (TREE, BUILT)))


def test_fewer_looks_make_sar_speckle_stronger():
    def cv(looks):
        scenes = _scenes(n=4, size=32, speckle_looks=looks)
        # Speckle over homogeneous ground: each pixel against its own value without speckle is
        # unknown, so measure the spread of the ratio of two pre-event dates of grassland.
        cvs = []
        for s in scenes:
            m = (s.landcover == GRASS) & (s.valid == 1)
            if m.sum() > 20:
                r = s.s1[0, 0][m] / s.s1[1, 0][m]
                cvs.append(r.std() / r.mean())
        return float(np.mean(cvs))

    c1, c4, c20 = cv(1.0), cv(4.4), cv(20.0)
    assert c1 > 1.3 * c4 > 1.3 * 1.3 * c20, (c1, c4, c20)


def test_phenology_shift_moves_greenness_on_a_fixed_date():
    def green(shift):
        scenes = _scenes(n=6, size=32, season="spring", phenology_shift_days=shift)
        lc = np.stack([s.landcover for s in scenes])
        red, nir = _band(scenes, "B04"), _band(scenes, "B8A")
        ndvi = (nir - red) / (nir + red)
        return ndvi[lc == GRASS].mean(), ndvi[lc == CROP].mean()

    (g0, c0), (g60, c60), (g120, _) = map(green, (0.0, 60.0, 120.0))
    # In spring, before the peak: a later peak leaves grass less green.
    assert g0 > g60 + 0.02 > g120 + 0.04, (g0, g60, g120)
    assert not np.isclose(c0, c60)  # crop calendars move with it


@pytest.mark.parametrize("season", list(SEASON_DAYS))
def test_the_s2_date_falls_in_the_season(season):
    start, end = SEASON_DAYS[season]
    for s in _scenes(n=12, size=16, season=season):
        doy = s.s2_date.timetuple().tm_yday
        assert start <= doy < end or start <= doy + 365 < end, (season, s.s2_date)
        assert f"Seen in {season}" in s.caption
        assert s.s1_dates[0] < s.s1_dates[1] < s.s1_dates[2]


# ---- flood types ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flood_scenes():
    return {
        ft: _scenes(n=12, size=40, flood_type=ft, flood_probability=1.0)
        for ft in ("rural", "urban")
    }


def test_urban_floods_reach_built_up_and_rural_floods_do_not(flood_scenes):
    def share_on(ft, classes):
        flood = np.concatenate([s.flood.ravel() == 2 for s in flood_scenes[ft]])
        lc = np.concatenate([s.landcover.ravel() for s in flood_scenes[ft]])
        assert flood.sum() > 500
        return np.isin(lc[flood], classes).mean()

    assert share_on("rural", (BUILT,)) == 0.0
    assert share_on("rural", (CROP, GRASS, SHRUB, WETLAND)) > 0.7
    assert share_on("urban", (BUILT,)) > 0.1
    assert share_on("urban", (BUILT, TREE)) > share_on("rural", (BUILT, TREE)) + 0.2
    assert all(s.extras["towns"] == 0 for s in flood_scenes["rural"])


def test_a_change_detector_tuned_on_rural_floods_misses_urban_ones(flood_scenes):
    # Flood = VV darkens by more than 3 dB from the last pre-event date (the rural signature).
    def recall(ft):
        hit = total = 0
        for s in flood_scenes[ft]:
            flood = s.flood == 2
            drop = 10 * np.log10(s.s1[2, 0][flood] / s.s1[1, 0][flood])
            hit += (drop < -3.0).sum()
            total += flood.sum()
        return hit / total

    assert recall("rural") > 0.7
    assert recall("urban") < recall("rural") - 0.2, (recall("rural"), recall("urban"))


# ---- Landsat 8/9 ------------------------------------------------------------------------------


def test_landsat_sees_the_same_ground_as_sentinel_2():
    for s in _scenes(n=4, size=48):
        assert s.landsat.shape == (7, 48, 48) and s.landsat.dtype == np.float32
        assert s.landsat_bands == tuple(b.name for b in get_bands("landsat-8-9")[:7])
        assert s.landsat.min() >= 1 and np.array_equal(s.landsat, np.round(s.landsat))
        # 30 m: constant over 3 x 3 blocks of the 10 m grid.
        assert np.array_equal(s.landsat, _block_mean(s.landsat, 3))
        reflectance = s.landsat * 2.75e-5 - 0.2
        s2 = _block_mean(s.s2 / 1e4, 3)
        for landsat_band, s2_band in ((3, "B04"), (4, "B8A")):
            ratio = reflectance[landsat_band].mean() / s2[s.s2_bands.index(s2_band)].mean()
            assert abs(ratio - 1) < 0.04, (landsat_band, ratio)
        corr = np.corrcoef(reflectance[4].ravel(), s2[s.s2_bands.index("B8A")].ravel())[0, 1]
        assert corr > 0.9


def test_landsat_has_the_clouds_of_sentinel_2():
    s = next(
        s
        for s in _scenes(n=8, size=32, cloud_cover=0.5)
        if (s.cloud_mask == 1).mean() > 0.1 and (s.cloud_mask == 0).mean() > 0.1
    )
    blue = s.landsat[1] * 2.75e-5 - 0.2
    assert blue[s.cloud_mask == 1].mean() > 2 * blue[s.cloud_mask == 0].mean()
    s2_blue = _block_mean(s.s2[[s.s2_bands.index("B02")]] / 1e4, 3)[0]
    assert np.corrcoef(blue.ravel(), s2_blue.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("name", ["landsat-8-9", "landsat-8"])
def test_landsat_samples(name):
    ds = SyntheticCopernicus("landcover", name, n=2, size=32)
    sample = ds[0]
    assert sample["sensor"] == "landsat-8-9"
    assert sample["bands"] == ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
    assert sample["image"].shape == (7, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["gsd"] == 30.0 and "units" not in sample
    scene = ds.scene(0)
    assert torch.equal(sample["image"], torch.from_numpy(scene.landsat))
    s2 = SyntheticCopernicus("landcover", n=2, size=32)[0]
    assert sample["time"] == s2["time"] and torch.equal(sample["mask"], s2["mask"])
    sub = SyntheticCopernicus("none", "landsat-8-9", n=1, size=32, bands=["nir", "red"])[0]
    assert sub["bands"] == ("B5", "B4") and torch.equal(sub["image"], sample["image"][[4, 3]])
    # No published statistics: the Normaliser estimates them from the data.
    norm = Normaliser()
    assert norm.needs_fit("landsat-8-9", sample["bands"])
    norm.fit("landsat-8-9", sample["bands"], [ds[i]["image"] for i in range(2)])
    x = norm(sample["image"], "landsat-8-9", sample["bands"])
    assert torch.isfinite(x).all() and x.abs().mean() < 3
    with pytest.raises(UserInputError, match="does not make B10"):
        SyntheticCopernicus("none", "landsat-8-9", bands=["B10"])


# ---- the world option ---------------------------------------------------------------------------


def test_world_option_reaches_the_scenes():
    ds = SyntheticCopernicus("landcover", n=2, size=16, world={"biome": "arid", "season": "summer"})
    assert ds.config.biome == "arid" and ds.config.season == "summer"
    assert ds.scene(0).extras["biome"] == "arid"
    opened = open_split(
        "synthetic", None, "test", {"n": 2, "size": 16, "world": {"flood_type": "urban"}}
    )
    assert opened.config.flood_type == "urban" and opened.split == "test"
    # every WorldConfig field but the grid, the clouds, the flood rate and the S2 level shifts
    grid = {"size", "gsd", "cloud_cover", "flood_probability", "s2_level"}
    assert set(WORLD_SHIFT_FIELDS) == {f.name for f in fields(WorldConfig)} - grid


@pytest.mark.parametrize(
    ("world", "match"),
    [
        ({"biome": "desert"}, "biome must be one of: temperate, boreal"),
        ({"climate": "arid"}, "unknown world setting 'climate'; expected some of: biome"),
        ({"size": 32}, "unknown world setting 'size'"),
        ({"season": "monsoon"}, "season must be one of: any, winter"),
        ({"flood_type": "coastal"}, "flood_type must be one of: any, rural, urban"),
        ({"speckle_looks": 0}, r"speckle_looks must be in \[1, 1000\]"),
        ({"vegetation_shift": "high"}, "vegetation_shift must be a number"),
        ({"soil_brightness": True}, "soil_brightness must be a number"),
        ({"phenology_shift_days": float("nan")}, "phenology_shift_days must be in"),
        ({"soil_moisture_db": 40}, "soil_moisture_db must be in"),
        (["biome"], "world must be a mapping"),
    ],
)
def test_bad_world_settings_are_one_line_errors(world, match):
    with pytest.raises(UserInputError, match=match) as info:
        SyntheticCopernicus(n=1, size=16, world=world)
    assert "\n" not in str(info.value)
