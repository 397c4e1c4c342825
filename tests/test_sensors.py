"""Tests for the sensor registry, spot-checked against ESA/USGS published values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from thinkingearth.errors import UnknownBandError, UnknownSensorError, UserInputError
from thinkingearth.sensors import (
    SENSORS,
    SSL4EO_S12_S1_DB_STATS,
    AmbiguousBandError,
    Band,
    Sensor,
    find_variable,
    get_bands,
    get_sensor,
    radar_wavelength_nm,
    resolve_band,
    sensors_with,
)

CANONICAL = (
    "sentinel-1-grd",
    "sentinel-1-slc",
    "sentinel-2-l1c",
    "sentinel-2-l2a",
    "sentinel-3-olci",
    "sentinel-5p",
    "copernicus-dem",
    "landsat-8-9",
)


def test_registry_names_and_band_counts() -> None:
    assert tuple(SENSORS) == CANONICAL
    counts = {name: len(s.bands) for name, s in SENSORS.items()}
    assert counts == {
        "sentinel-1-grd": 2,
        "sentinel-1-slc": 4,
        "sentinel-2-l1c": 13,
        "sentinel-2-l2a": 12,
        "sentinel-3-olci": 21,
        "sentinel-5p": 7,
        "copernicus-dem": 1,
        "landsat-8-9": 11,
    }
    with pytest.raises(TypeError):
        SENSORS["x"] = SENSORS["sentinel-5p"]  # type: ignore[index]


def test_sentinel2_published_values() -> None:
    s2 = get_sensor("sentinel-2-l2a")
    b04 = s2.band("B04")
    assert 660 < b04.wavelength_nm < 670 and b04.gsd_m == 10
    b8a = s2.band("B8A")
    assert b8a.wavelength_nm == pytest.approx(865, abs=1) and b8a.gsd_m == 20
    assert s2.band("B01").gsd_m == 60 and s2.band("B12").wavelength_nm == pytest.approx(2202.4)
    assert all(b.dtype == "uint16" and b.scale == 1e-4 and b.nodata == 0 for b in s2.bands)
    assert all(b.is_spectral and not b.is_sar and b.has_stats for b in s2.bands)
    # B10 (cirrus) only exists in L1C; the spectral tables are otherwise shared.
    assert "B10" in get_sensor("s2-l1c").band_names
    assert not s2.has_band("B10")
    with pytest.raises(UnknownBandError):
        s2.band("B10")
    l1c = get_sensor("s2-l1c")
    for band in s2.bands:
        assert l1c.band(band.name).wavelength_nm == band.wavelength_nm
    assert "1000" in s2.description  # processing-baseline 04.00 offset is documented


def test_olci_sentinel1_s5p_dem_landsat_values() -> None:
    olci = get_sensor("olci")
    assert olci.band("Oa17").wavelength_nm == 865 and olci.band("Oa17").bandwidth_nm == 20
    assert olci.band("Oa01").wavelength_nm == 400 and olci.band("Oa21").wavelength_nm == 1020
    assert all(b.gsd_m == 300 for b in olci.bands)

    s1 = get_sensor("s1")
    assert s1.kind == "sar" and s1.frequency_ghz == 5.405
    vv = s1.band("VV")
    assert vv.wavelength_nm == pytest.approx(5.5465e7, rel=1e-4)
    assert vv.wavelength_nm == pytest.approx(radar_wavelength_nm(5.405))
    assert vv.is_sar and not vv.is_spectral and vv.component == "intensity"
    assert vv.gsd_m == 10 and vv.nodata == 0 and vv.bandwidth_nm is None
    slc = get_sensor("s1-slc")
    assert slc.band("VV-amp").name == "VV_amplitude"
    assert slc.band("vh_phase").units == "rad" and slc.band("VH_phase").component == "phase"

    s5p = get_sensor("s5p")
    assert s5p.band_names == ("NO2", "CO", "O3", "SO2", "CH4", "HCHO", "AER_AI")
    assert all(b.wavelength_nm is None and not b.is_spectral for b in s5p.bands)
    assert s5p.band("NO2").units == "mol/m^2" and s5p.band("CH4").units == "ppb"
    assert s5p.band("NO2").gsd_m == 5500

    dem = get_sensor("glo-30").band("elevation")
    assert dem.name == "DEM" and dem.units == "m" and dem.gsd_m == 30
    assert dem.variable == "Copernicus DEM elevation" and not dem.is_spectral

    landsat = get_sensor("landsat-9")
    assert landsat.band("red").name == "B4" and landsat.band("B4").wavelength_nm == 654.5
    assert landsat.band("pan").gsd_m == 15 and landsat.band("B10").gsd_m == 100
    sr = landsat.band("SR_B5")
    assert (sr.name, sr.scale, sr.offset, sr.dtype) == ("B5", 2.75e-5, -0.2, "uint16")


@pytest.mark.parametrize("alias", ["S2", "sentinel-2", "SENTINEL_2_L2A", " s2-L2A "])
def test_sensor_aliases_case_insensitive(alias: str) -> None:
    assert get_sensor(alias) is SENSORS["sentinel-2-l2a"]


@pytest.mark.parametrize(
    ("sensor", "alias", "canonical"),
    [
        ("s2", "b4", "B04"),
        ("s2", "RED", "B04"),
        ("s2", "b8a", "B8A"),
        ("s2", "nir08", "B8A"),
        ("s2", "nir", "B08"),
        ("s2", "swir16", "B11"),
        ("s2-l1c", "Cirrus", "B10"),
        ("s1", "vh", "VH"),
        ("s1-slc", "vv-AMP", "VV_amplitude"),
        ("s3", "oa17", "Oa17"),
        ("s5p", "aer_ai", "AER_AI"),
        ("landsat", "lwir11", "B10"),
    ],
)
def test_band_aliases_case_insensitive(sensor: str, alias: str, canonical: str) -> None:
    assert get_sensor(sensor).band(alias).name == canonical


def test_select_any_subset_any_order() -> None:
    s2 = get_sensor("s2")
    assert [b.name for b in s2.select(["red", "B02", "b3"])] == ["B04", "B02", "B03"]
    assert [b.name for b in s2.select(["B12", "B01"])] == ["B12", "B01"]
    assert s2.select(None) == s2.bands
    assert [b.name for b in s2.select("nir")] == ["B08"]
    assert s2.indices(["B8A", "B01"]) == (8, 0)
    assert get_bands("sentinel-1", ["VH", "VV"]) == tuple(reversed(get_sensor("s1").bands))


@pytest.mark.parametrize("names", [["B04", "B04"], ["B4", "red"], ["B02", "blue", "B03"]])
def test_select_duplicates_error(names: list[str]) -> None:
    with pytest.raises(UserInputError, match=r"B0[24] of sentinel-2-l2a selected twice") as err:
        get_bands("s2", names)
    assert "\n" not in str(err.value)


def test_select_empty_error() -> None:
    with pytest.raises(UserInputError):
        get_bands("s2", [])


def test_unknown_sensor_message_is_one_line_listing_choices() -> None:
    with pytest.raises(UnknownSensorError) as err:
        get_sensor("sentinel-9")
    msg = str(err.value)
    assert "\n" not in msg and "'sentinel-9'" in msg
    assert all(name in msg for name in CANONICAL)
    assert isinstance(err.value, UserInputError) and isinstance(err.value, ValueError)


def test_unknown_band_message_is_one_line_listing_choices() -> None:
    with pytest.raises(UnknownBandError) as err:
        get_bands("sentinel-2-l2a", ["B04", "B13"])
    msg = str(err.value)
    assert msg.startswith("unknown band 'B13' for sentinel-2-l2a; expected one of: B01, B02,")
    assert "\n" not in msg and "B8A" in msg and "B10" not in msg
    with pytest.raises(UnknownBandError) as err:
        get_sensor("s1").band("HH\nHV")
    assert "\n" not in str(err.value)


def test_normalisation_shapes_and_order() -> None:
    s2 = get_sensor("s2")
    mean, std = s2.normalisation()
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (12,)
    assert np.all(std > 0)
    sub_mean, sub_std = s2.normalisation(["B04", "B02"])
    assert sub_mean.shape == (2,)
    np.testing.assert_array_equal(sub_mean, mean[[3, 1]])
    np.testing.assert_array_equal(sub_std, std[[3, 1]])
    # SSL4EO-S12 L1C B10 (cirrus) is tiny compared with the land bands.
    l1c_mean, _ = get_sensor("s2-l1c").normalisation(["B10", "B04"])
    assert l1c_mean[0] < 100 < l1c_mean[1]


def test_normalisation_error_names_bands_without_stats() -> None:
    with pytest.raises(UserInputError) as err:
        get_sensor("s1").normalisation(["VH"])
    msg = str(err.value)
    assert "VH" in msg and "sentinel-1-grd" in msg and "\n" not in msg
    assert set(SSL4EO_S12_S1_DB_STATS) == {"VV", "VH"}


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("Sentinel-5P NO2", "NO2"),
        ("sentinel-5p no2", "NO2"),
        ("NO2", "NO2"),
        ("ch4", "CH4"),
        ("Sentinel-5P UV aerosol index", "AER_AI"),
        ("Sentinel-5P AER_AI", "AER_AI"),
        ("Copernicus DEM elevation", "DEM"),
        ("dem", "DEM"),
    ],
)
def test_find_variable(query: str, name: str) -> None:
    band = find_variable(query)
    assert band.name == name and band.variable is not None and not band.is_spectral


def test_find_variable_unknown() -> None:
    with pytest.raises(UserInputError) as err:
        find_variable("Sentinel-5P BrO")
    msg = str(err.value)
    assert "Sentinel-5P NO2" in msg and "Copernicus DEM elevation" in msg and "\n" not in msg
    with pytest.raises(UserInputError):
        find_variable("B04")  # spectral bands are not variables


def test_every_band_is_well_formed() -> None:
    for sensor in SENSORS.values():
        assert len(set(sensor.band_names)) == len(sensor.bands)
        for band in sensor.bands:
            assert math.isfinite(band.gsd_m) and band.gsd_m > 0
            np.dtype(band.dtype)
            assert band.units
            if sensor.kind == "optical":
                assert band.is_spectral and band.bandwidth_nm is not None
            if sensor.kind == "sar":
                assert band.is_sar and band.polarisation in ("VV", "VH")
            if sensor.kind in ("atmosphere", "elevation"):
                assert band.variable is not None and band.wavelength_nm is None


def test_dataclasses_are_frozen_and_validated() -> None:
    band = get_sensor("s2").band("B04")
    with pytest.raises(dataclasses.FrozenInstanceError):
        band.gsd_m = 20.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="names both"):
        Sensor("bad", (Band("A", aliases=("x",)), Band("B", aliases=("X",))))
    with pytest.raises(ValueError):
        Band("A", mean=1.0)
    custom = Sensor("toy", [Band("A", wavelength_nm=500.0, mean=1.0, std=2.0)])
    assert custom.bands[0].is_spectral and custom.normalisation()[1].tolist() == [2.0]


@pytest.mark.parametrize(
    ("name", "band", "sensors"),
    [
        ("VV", "VV", ("sentinel-1-grd",)),
        ("sigma0_vh", "VH", ("sentinel-1-grd",)),
        ("vv-amp", "VV_amplitude", ("sentinel-1-slc",)),
        ("B8A", "B8A", ("sentinel-2-l1c", "sentinel-2-l2a")),
        ("b12", "B12", ("sentinel-2-l1c", "sentinel-2-l2a")),
        ("rededge1", "B05", ("sentinel-2-l1c", "sentinel-2-l2a")),
        ("Oa17", "Oa17", ("sentinel-3-olci",)),
        ("NO2", "NO2", ("sentinel-5p",)),
        ("sentinel-2-l2a:B04", "B04", ("sentinel-2-l2a",)),
        ("landsat:red", "B4", ("landsat-8-9",)),
        ("B04", "B04", ("sentinel-2-l1c", "sentinel-2-l2a")),
        ("SR_B4", "B4", ("landsat-8-9",)),
    ],
)
def test_band_names_resolve_without_their_sensor(
    name: str, band: str, sensors: tuple[str, ...]
) -> None:
    resolved = resolve_band(name)
    assert resolved.band.name == band and resolved.sensors == sensors
    assert resolved.sensor == sensors[0]


def test_only_a_real_ambiguity_asks_for_the_sensor() -> None:
    # "B04" is Sentinel-2's name only (USGS never zero-pads Landsat's), and both Sentinel-2
    # levels agree on it; "B4" is also Landsat 8-9's red (654.5 nm, 37 nm wide), which is not
    # Sentinel-2's (664.6 nm, 31 nm wide).
    assert resolve_band("B04").sensors == ("sentinel-2-l1c", "sentinel-2-l2a")
    assert resolve_band("B02").band.wavelength_nm == 492.4
    with pytest.raises(AmbiguousBandError) as info:
        resolve_band("B4")
    message = str(info.value)
    assert "sentinel-2-l1c, sentinel-2-l2a B04 (664.6 nm, 31 nm wide)" in message
    assert "landsat-8-9 B4 (654.5 nm, 37 nm wide)" in message
    assert "e.g. 'sentinel-2-l1c:B4'" in message and "\n" not in message
    assert isinstance(info.value, UserInputError)
    # Among the sensors that share the band, the name needs nothing more.
    assert resolve_band("B04", ["s2-l1c", "s2-l2a"]).sensors == ("sentinel-2-l1c", "sentinel-2-l2a")
    assert resolve_band("B10", ["sentinel-2-l1c"]).band.wavelength_nm == 1373.5
    with pytest.raises(AmbiguousBandError, match="B10"):
        resolve_band("B10")  # Sentinel-2 cirrus or Landsat TIRS 1


def test_unknown_unqualified_band_names() -> None:
    with pytest.raises(UnknownBandError, match="'XX': no sensor has a band of that name"):
        resolve_band("XX")
    with pytest.raises(UnknownBandError, match="unknown band 'B10' for sentinel-2-l2a"):
        resolve_band("B10", ["sentinel-2-l2a"])
    with pytest.raises(UnknownSensorError):
        resolve_band("sentinel-9:B04")


def test_sensors_with_every_named_band() -> None:
    l1c_names = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    assert [s.name for s in sensors_with(l1c_names)] == ["sentinel-2-l1c"]
    assert [s.name for s in sensors_with(["B02", "B8A"])] == ["sentinel-2-l1c", "sentinel-2-l2a"]
    assert sensors_with(["VV", "B02"]) == ()
