"""Maps QGIS opens ready to read: typed bands, colours, class names, provenance, valid COGs, PNG."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import affine
import matplotlib.image
import numpy as np
import pytest
import rasterio
from infer_helpers import (
    OUTPUT_FILES,
    PlantedScene,
    listing,
    make_planted,
    read_prediction,
    write_raster,
)
from matplotlib.colors import to_rgb, to_rgba
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rio_cogeo.cogeo import cog_validate

from thinkingearth.data.scene import Acquisition, Grid
from thinkingearth.infer import predict_scene, threshold_model
from thinkingearth.infer.writers import (
    NODATA_COLOUR,
    UNCERTAINTY_CMAP,
    RowWriter,
    write_cog,
    write_quicklook,
)
from thinkingearth.viz import FLOOD_COLOURS, backdrop_rgb

FLOOD = ("no water", "permanent water", "flood")


@pytest.fixture(scope="module")
def flood_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlantedScene, Path]:
    """The threshold model's flood map of a planted scene, with every file beside it."""
    root = tmp_path_factory.mktemp("writers")
    planted = make_planted(root / "scene")
    out = root / "maps" / "flood.tif"
    inputs = [
        Acquisition.from_path("--pre", planted.pre),
        Acquisition.from_path("--post", planted.post),
    ]
    predict_scene(threshold_model("flood", tile=128, overlap=16), inputs, out)
    return planted, out


def _rgba(colour: str) -> tuple[int, int, int, int]:
    return tuple(round(255 * c) for c in to_rgba(colour))  # type: ignore[return-value]


def test_the_class_map_is_uint8_with_a_colour_table_class_names_and_provenance(
    flood_map: tuple[PlantedScene, Path],
) -> None:
    planted, out = flood_map
    assert listing(out.parent) == sorted(OUTPUT_FILES)
    with rasterio.open(out) as dst:
        assert dst.count == 1 and dst.dtypes == ("uint8",) and dst.nodata == 255
        assert dst.descriptions == ("class",)
        assert dst.colorinterp == (ColorInterp.palette,)
        colormap = dst.colormap(1)
        tags = dst.tags()
    for k, colour in enumerate(FLOOD_COLOURS[:3]):
        assert colormap[k] == _rgba(colour)
    assert tags["CLASSES"] == "0=no water;1=permanent water;2=flood"
    assert tags["MODEL"] == "threshold" and tags["TASK"] == "flood"
    assert tags["UNCERTAINTY"] == "flood_uncertainty.tif"
    assert tags["COMMAND"] and tags["TIFFTAG_SOFTWARE"].startswith("thinkingearth ")
    assert float(tags["WATER_THRESHOLD_VV_DB"]) < -9  # the model's own parameters ride along
    classes, _ = read_prediction(out)
    assert np.array_equal(classes == 255, planted.truth == 255)
    # The class names as GDAL category names, in GDAL's own sidecar for a GeoTIFF.
    pam = ET.parse(out.with_name("flood.tif.aux.xml")).getroot()
    assert pam.tag == "PAMDataset"
    band = pam.find("PAMRasterBand")
    assert band is not None and band.get("band") == "1"
    assert [c.text for c in band.iterfind("CategoryNames/Category")] == list(FLOOD)


def test_the_qgis_styles_name_and_colour_the_classes_and_ramp_the_uncertainty(
    flood_map: tuple[PlantedScene, Path],
) -> None:
    _, out = flood_map
    text = out.with_name("flood.qml").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    renderer = ET.fromstring(text.split("\n", 1)[1]).find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        (str(k), name, colour)
        for k, (name, colour) in enumerate(zip(FLOOD, FLOOD_COLOURS[:3], strict=True))
    ]
    text = out.with_name("flood_uncertainty.qml").read_text(encoding="utf-8")
    renderer = ET.fromstring(text.split("\n", 1)[1]).find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandpseudocolor"
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None and float(shader.get("minimumValue", "nan")) == 0.0
    assert math.isclose(float(shader.get("maximumValue", "nan")), math.log(3), rel_tol=1e-5)
    assert renderer.findtext("minMaxOrigin/limits") == "None"  # the fixed range, not the data's


def test_the_uncertainty_is_float32_with_nan_nodata_and_band_descriptions(
    flood_map: tuple[PlantedScene, Path],
) -> None:
    planted, out = flood_map
    with rasterio.open(out.with_name("flood_uncertainty.tif")) as dst:
        assert dst.count == 1 and dst.dtypes == ("float32",) and math.isnan(dst.nodata)
        assert dst.descriptions == ("entropy",) and dst.units == ("nats",)
        tags = dst.tags()
        entropy = dst.read(1)
    assert tags["CLASS_MAP"] == "flood.tif" and tags["CLASSES"].startswith("0=no water")
    assert "nats" in tags["BAND_1"] and tags["COMMAND"]
    nodata = planted.truth == 255
    assert np.array_equal(np.isnan(entropy), nodata)
    assert (entropy[~nodata] >= 0).all() and (entropy[~nodata] <= math.log(3) + 1e-5).all()
    assert (entropy[~nodata] == 0).any() or entropy[~nodata].min() < 0.05  # certain pixels exist


def test_both_outputs_are_valid_cogs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.gamma(4.4, 0.05 / 4.4, size=(2, 1100, 900)).astype(np.float32)
    data[:, :200, :300] = 0.0  # no data
    image = write_raster(tmp_path / "s1.tif", data)
    out = tmp_path / "water.tif"
    predict_scene(
        threshold_model("water"), [Acquisition.from_path("--image", image)], out, quicklook=False
    )
    for path in (out, tmp_path / "water_uncertainty.tif"):
        valid, errors, warnings = cog_validate(str(path), strict=True)
        assert valid and not errors and not warnings, (path.name, errors, warnings)
        with rasterio.open(path) as dst:
            assert dst.overviews(1) == [2, 4] and dst.block_shapes[0] == (512, 512)


def _libgdal() -> ctypes.CDLL | None:
    """The GDAL library rasterio runs on (its wheel's copy, else the system's), or ``None``."""
    folder = Path(rasterio.__file__).parent
    candidates = [
        *sorted((folder.parent / "rasterio.libs").glob("libgdal*")),
        *sorted((folder / ".dylibs").glob("libgdal*")),
    ]
    name = ctypes.util.find_library("gdal")
    for candidate in [*map(str, candidates), *([name] if name else [])]:
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    return None


def test_gdal_itself_reads_the_class_names(flood_map: tuple[PlantedScene, Path]) -> None:
    # What QGIS calls to label a colour table (QgsGdalProviderBase::colorTable).
    lib = _libgdal()
    if lib is None:
        pytest.skip("cannot locate the GDAL library rasterio uses")
    _, out = flood_map
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALGetGeoTransform.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    handle = lib.GDALOpen(os.fsencode(out), 0)
    assert handle
    try:
        # GDAL's GeoTIFF driver reads the .aux.xml with the georeferencing, which every client
        # (QGIS, gdalinfo) asks for first.
        assert lib.GDALGetGeoTransform(handle, (ctypes.c_double * 6)()) == 0
        names = lib.GDALGetRasterCategoryNames(lib.GDALGetRasterBand(handle, 1))
        found = []
        while names and names[len(found)]:
            found.append(names[len(found)].decode())
    finally:
        lib.GDALClose(handle)
    assert found == list(FLOOD)


def _panels(png: np.ndarray, n: int) -> list[np.ndarray]:
    """The ``n`` image panels of a quicklook, left to right: the columns of long opaque runs."""
    rgb = png[..., :3]
    white = (rgb > 0.97).all(axis=-1)
    columns = (~white).mean(axis=0) > 0.5  # columns mostly covered by an image
    edges = np.flatnonzero(np.diff(np.r_[0, columns.astype(int), 0]))
    spans = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a > 50]
    assert len(spans) >= n, spans
    rows = (~white[:, spans[0][0] : spans[0][1]]).mean(axis=1) > 0.5
    top, bottom = np.flatnonzero(rows)[[0, -1]]
    return [rgb[top : bottom + 1, a:b] for a, b in spans[:n]]


def _share(panel: np.ndarray, colour: str, tol: float = 0.02) -> float:
    return float((np.abs(panel - np.asarray(to_rgb(colour))) < tol).all(axis=-1).mean())


def test_the_quicklook_shows_the_input_classes_and_uncertainty(
    flood_map: tuple[PlantedScene, Path],
) -> None:
    _, out = flood_map
    png = matplotlib.image.imread(out.with_name("flood.png"))
    height, width = png.shape[:2]
    assert 1000 <= width <= 1500 and 350 <= height <= 600  # three panels side by side
    backdrop, overlay, uncertainty = _panels(png, 3)
    grey = backdrop.mean(axis=-1)
    assert grey.std() > 0.15  # the SAR input: dark water, bright speckled land
    assert _share(backdrop, NODATA_COLOUR) > 0.01  # the corner without data
    # Classes over the input: the flood colour, blended with the dark water below it.
    flood_rgb = np.asarray(to_rgb(FLOOD_COLOURS[2]))
    blue_green = (overlay[..., 2] > 0.3) & (overlay[..., 1] > 0.3) & (overlay[..., 0] < 0.2)
    assert blue_green.mean() > 0.05 and flood_rgb[0] < 0.2
    assert _share(uncertainty, NODATA_COLOUR) > 0.01


def _write_map(folder: Path, classes: np.ndarray, entropy: np.ndarray) -> tuple[Path, Path]:
    """A class map and its uncertainty written as the predictor writes them."""
    h, w = classes.shape
    grid = Grid(CRS.from_epsg(32633), affine.Affine(10, 0, 5e5, 0, -10, 5e6), w, h)
    streams = folder / "c_stream.tif", folder / "u_stream.tif"
    with RowWriter(*streams, grid, colours=FLOOD_COLOURS[:3]) as writer:
        writer.write(0, classes, entropy.copy())
    paths = folder / "c.tif", folder / "u.tif"
    for stream, path in zip(streams, paths, strict=True):
        write_cog(stream, path)
    return paths


def test_the_quicklook_tells_no_data_from_zero_uncertainty(tmp_path: Path) -> None:
    classes = np.zeros((200, 200), dtype=np.uint8)
    entropy = np.zeros((200, 200), dtype=np.float32)  # certain everywhere
    classes[:, :100] = 255  # no data on the left half
    entropy[:, :100] = np.nan
    c, u = _write_map(tmp_path, classes, entropy)
    png_path = tmp_path / "q.png"
    write_quicklook(c, u, png_path, classes=FLOOD, colours=FLOOD_COLOURS[:3])
    _, uncertainty = _panels(matplotlib.image.imread(png_path), 2)
    half = uncertainty.shape[1] // 2
    zero = matplotlib.colormaps[UNCERTAINTY_CMAP](0.0)
    zero_hex = "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in zero[:3]))
    assert _share(uncertainty[:, half + 5 :], zero_hex) > 0.95  # zero: the ramp's first colour
    assert _share(uncertainty[:, : half - 5], zero_hex) == 0.0  # no data: never that colour
    assert _share(uncertainty[:, : half - 5], NODATA_COLOUR) > 0.3  # but grey, hatched


def test_row_writer_types_and_nodata(tmp_path: Path) -> None:
    classes = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    entropy = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    c, u = _write_map(tmp_path, classes, entropy)
    with rasterio.open(c) as a, rasterio.open(u) as b:
        assert a.read(1).tolist() == classes.tolist() and a.dtypes == ("uint8",)
        values = b.read(1)
    assert np.isnan(values[1, 1]) and np.allclose(values[~np.isnan(values)], [0.0, 0.5, 1.0])
    grid = Grid(CRS.from_epsg(32633), affine.Affine(10, 0, 0, 0, -10, 0), 2, 2)
    with pytest.raises(ValueError, match="1 to 255 classes"):
        RowWriter(tmp_path / "x.tif", tmp_path / "y.tif", grid, colours=["#000000"] * 256)
    assert not (tmp_path / "x.tif").exists()


def test_backdrops_of_sar_and_optical_inputs() -> None:
    rng = np.random.default_rng(0)
    linear = rng.gamma(4.4, 0.05 / 4.4, size=(2, 30, 40)).astype(np.float32)
    valid = np.ones((30, 40), dtype=bool)
    valid[:5] = False
    from_linear, shows = backdrop_rgb(linear, ("VV", "VH"), valid, sar_units="linear")
    db = 10 * np.log10(linear)
    from_db, _ = backdrop_rgb(db, ("VV", "VH"), valid, sar_units="db")
    assert "false colour" in shows and from_linear.shape == (30, 40, 3)
    np.testing.assert_allclose(from_linear, from_db, atol=1e-5)  # the same picture in any unit
    assert (from_linear[:5] == 0).all() and from_linear[5:].std() > 0.02
    # Sentinel-2 in any band order: red from B04, whatever the scale.
    dn = np.zeros((3, 30, 40), dtype=np.float32)
    dn[0] = 500 + rng.normal(0, 50, (30, 40))
    dn[1] = 3000 + rng.normal(0, 50, (30, 40))  # B04: bright
    dn[2] = 500 + rng.normal(0, 50, (30, 40))
    s2_bands = ("B03", "B04", "B02")
    rgb, shows = backdrop_rgb(dn, s2_bands, valid)
    assert "true colour" in shows
    red, green, blue = (rgb[5:, :, i].mean() for i in range(3))
    assert red > 0.8 and green < 0.3 and blue < 0.3  # one stretch for all: red stays red
    rgb_reflectance, _ = backdrop_rgb(dn * 1e-4, s2_bands, valid)
    np.testing.assert_allclose(rgb, rgb_reflectance, atol=1e-4)
    grey, shows = backdrop_rgb(db[:1], ("VV",), valid, sar_units="db")
    assert shows == "VV dB (grey)" and np.array_equal(grey[..., 0], grey[..., 2])
