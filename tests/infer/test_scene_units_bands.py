"""Scene inputs say their own units and bands: SAR units per file, bands by name, S2 scale."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from infer_helpers import write_raster
from rasterio.windows import Window

from thinkingearth.data.scene import (
    Acquisition,
    ReflectanceScaleWarning,
    SarUnitsError,
    SceneInputError,
    SceneStack,
    SensorMismatchWarning,
    detect_sar_units,
    parse_sar_units,
)
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_sensor

L1C = get_sensor("sentinel-2-l1c")
L2A = get_sensor("sentinel-2-l2a")
#: Sen1Floods11's S2 band descriptions: 13 L1C bands, unpadded names.
S1F11 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def _linear(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.gamma(4.4, 0.02, size=shape).astype(np.float32)


# --- SAR units --------------------------------------------------------------------------------


def test_detector_tells_decibels_from_linear_sigma0() -> None:
    rng = np.random.default_rng(0)
    linear = _linear(rng, (2, 64, 64))
    assert detect_sar_units(linear).units == "linear"
    assert detect_sar_units(10 * np.log10(linear)).units == "db"
    # Thermal-noise removal leaves small negatives in linear sigma0: still linear.
    noisy = linear - 0.05
    assert (noisy < 0).mean() > 0.1 and detect_sar_units(noisy).units == "linear"
    # Digital numbers or amplitudes fit neither; no values say nothing.
    assert detect_sar_units(rng.uniform(50, 500, 1000)).units is None
    empty = detect_sar_units(np.array([np.nan, np.inf]))
    assert empty.units is None and empty.count == 0


def test_auto_decides_each_file_and_says_it_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pre = _linear(rng, (2, 50, 60))
    post = _linear(rng, (2, 50, 60))
    pre_path = write_raster(tmp_path / "pre_linear.tif", pre)
    post_path = write_raster(tmp_path / "post_db.tif", 10 * np.log10(post), nodata=None)
    acqs = [Acquisition.from_path("--pre", pre_path), Acquisition.from_path("--post", post_path)]
    with SceneStack(acqs, sensor="s1", bands=["VV", "VH"], to_units="db") as s:
        assert [(u.what, u.units, u.source) for u in s.file_units] == [
            ("--pre", "linear", "detected"),
            ("--post", "db", "detected"),
        ]
        assert len(s.notes) == 2
        assert s.notes[0].startswith("SAR units of --pre pre_linear.tif: linear sigma0, detected")
        assert s.notes[1].startswith("SAR units of --post post_db.tif: decibels, detected")
        x, valid = s.read(Window(0, 0, 60, 50))
    assert valid.all()
    np.testing.assert_allclose(x[0], 10 * np.log10(pre), atol=1e-4)
    np.testing.assert_allclose(x[1], 10 * np.log10(post), atol=1e-4)


def test_auto_units_of_files_that_are_mostly_no_data(tmp_path: Path) -> None:
    data = np.zeros((2, 600, 600), np.float32)  # nodata 0 in the whole middle
    data[:, :40, :40] = 10 * np.log10(_linear(np.random.default_rng(2), (2, 40, 40)))
    path = write_raster(tmp_path / "edge.tif", data)
    with SceneStack([Acquisition.from_path("--image", path)], sensor="s1", bands=["VV"]) as s:
        assert s.file_units[0].units == "db"  # found in the decimated whole file


def test_unit_names_are_case_insensitive() -> None:
    assert [parse_sar_units(u) for u in ("dB", "DB", "Linear", " auto ")] == [
        "db",
        "db",
        "linear",
        "auto",
    ]
    with pytest.raises(UserInputError, match="unknown --sar-units 'dB2'; expected one of: auto"):
        parse_sar_units("dB2")


# --- bands by name ----------------------------------------------------------------------------


def _s2_values(names: tuple[str, ...], shape: tuple[int, int]) -> np.ndarray:
    """DN-like values: band ``B04`` is 4000 + a ramp, so each band is recognisable."""
    ramp = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) % 97
    return np.stack([1000.0 * (L1C.bands.index(L1C.band(n)) + 1) + ramp for n in names]).astype(
        np.uint16
    )


def test_a_13_band_l1c_file_feeds_a_12_band_l2a_model_with_a_warning(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "l1c.tif", _s2_values(S1F11, (30, 40)), descriptions=S1F11)
    with (
        pytest.warns(
            SensorMismatchWarning,
            match=r"sentinel-2-l1c data \(it has B10, which sentinel-2-l2a lacks\)",
        ) as caught,
        SceneStack(
            [Acquisition.from_path("--image", path)], sensor="s2", bands=L2A.band_names
        ) as s,
    ):
        x, valid = s.read(Window(0, 0, 40, 30))
        notes = s.notes
    assert len(caught) == 1 and "trained on sentinel-2-l2a" in str(caught[0].message)
    assert notes == (
        "--image l1c.tif: reading 12 of its 13 bands by band description (ignoring B10)",
    )
    assert x.shape == (1, 12, 30, 40) and valid.all()
    expected = _s2_values(L2A.band_names, (30, 40)).astype(np.float32)
    np.testing.assert_array_equal(x[0], expected)


def test_bands_are_taken_by_name_in_any_file_order(tmp_path: Path) -> None:
    order = ("B12", "B02", "VV", "B8A", "B04", "cloud_mask", "B03")
    data = _s2_values(tuple("B01" if n in ("VV", "cloud_mask") else n for n in order), (20, 20))
    path = write_raster(tmp_path / "stack.tif", data, descriptions=order)
    bands = ("B02", "B03", "B04", "B8A", "B12")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an S1+S2 stack is no other product: no warning
        with SceneStack([Acquisition.from_path("--image", path)], sensor="s2", bands=bands) as s:
            x, _ = s.read(Window(0, 0, 20, 20))
            assert "ignoring VV, cloud_mask" in s.notes[0]
    np.testing.assert_array_equal(x[0], _s2_values(bands, (20, 20)).astype(np.float32))


def test_bands_that_contradict_the_descriptions_are_an_error(tmp_path: Path) -> None:
    described = ("B02", "B03", "B04")
    path = write_raster(
        tmp_path / "rgb.tif", _s2_values(described, (10, 10)), descriptions=described
    )
    bands = ("B02", "B03", "B04")
    agreeing = Acquisition.from_path("--image", path, ["blue", "green", "red"])  # aliases agree
    with SceneStack([agreeing], sensor="s2", bands=bands) as s:
        assert s.file_bands[0][0].names == bands
    swapped = Acquisition.from_path("--image", path, ["B04", "B03", "B02"])
    with pytest.raises(
        SceneInputError,
        match=r"--bands names band 1 of --image .*rgb.tif 'B04' but the file describes it as 'B02'",
    ) as info:
        SceneStack([swapped], sensor="s2", bands=bands)
    assert "\n" not in str(info.value)


def test_a_file_without_a_needed_band_names_what_it_has(tmp_path: Path) -> None:
    described = ("B02", "B03", "foo")
    path = write_raster(tmp_path / "two.tif", _s2_values(("B02", "B03", "B04"), (10, 10)),
                        descriptions=described)  # fmt: skip
    with pytest.raises(
        SceneInputError,
        match=r"has 3 band\(s\) \(B02, B03, foo\) but the model needs 3: B02, B03, B04; name the",
    ):
        SceneStack(
            [Acquisition.from_path("--image", path)], sensor="s2", bands=("B02", "B03", "B04")
        )


# --- Sentinel-2 scale -------------------------------------------------------------------------


def test_s2_values_10000_off_the_models_scale_warn_naming_it(tmp_path: Path) -> None:
    dn = _s2_values(L2A.band_names, (24, 24))
    dn_path = write_raster(tmp_path / "dn.tif", dn, descriptions=L2A.band_names)
    reflectance = write_raster(
        tmp_path / "refl.tif", dn.astype(np.float32) * 1e-4, descriptions=L2A.band_names
    )
    mean_dn, _ = L2A.normalisation()
    in_reflectance = tuple(float(m) * 1e-4 for m in mean_dn)
    for path, expected, message in [
        (dn_path, None, None),  # DN for the registry's DN statistics: right
        (reflectance, in_reflectance, None),  # reflectance for reflectance statistics: right
        (reflectance, None, "look like reflectance 0-1 .* multiply the input by 10000"),
        (dn_path, in_reflectance, "look like digital numbers, reflectance x 10000 .* divide"),
    ]:
        acq = [Acquisition.from_path("--image", path)]
        with (
            SceneStack(acq, sensor="s2", bands=L2A.band_names) as s,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            said = s.check_scale(expected)
        scale = [c for c in caught if issubclass(c.category, ReflectanceScaleWarning)]
        if message is None:
            assert said is None and not scale, (path, said)
        else:
            assert said is not None and len(scale) == 1
            assert re.search(message, said), said


def test_sar_units_error_when_auto_cannot_tell(tmp_path: Path) -> None:
    amplitude = np.random.default_rng(3).uniform(50, 500, size=(2, 30, 30)).astype(np.float32)
    path = write_raster(tmp_path / "amp.tif", amplitude)
    with pytest.raises(SarUnitsError, match=r"cannot tell whether --image .*amp.tif holds"):
        SceneStack([Acquisition.from_path("--image", path)], sensor="s1", bands=["VV"])
