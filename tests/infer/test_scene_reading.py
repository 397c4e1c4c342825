"""Windowed scene reading: tiling, band names, alignment, nodata, units and bad files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from infer_helpers import ORIGIN, UTM, from_origin, make_planted, write_raster
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from thinkingearth.data.scene import (
    Acquisition,
    SarUnitsError,
    SceneInputError,
    SceneStack,
    SourceFile,
    convert_sar,
    iter_windows,
    tile_starts,
)
from thinkingearth.errors import UnknownBandError, UserInputError


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(300, 64, 16), (264, 256, 32), (64, 64, 8), (50, 64, 8), (1000, 100, 0)],
)
def test_tiles_cover_the_grid_with_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    assert all(b > a for a, b in itertools.pairwise(starts))
    windows = list(iter_windows((length, length + 7), tile, overlap))
    covered = np.zeros((length, length + 7), dtype=int)
    for w in windows:
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert covered.min() >= 1
    with pytest.raises(UserInputError, match="overlap"):
        tile_starts(100, 32, 32)


def test_band_names_come_from_descriptions_or_from_bands(tmp_path: Path) -> None:
    data = np.stack([np.full((40, 50), 0.1, np.float32), np.full((40, 50), 0.01, np.float32)])
    described = write_raster(tmp_path / "described.tif", data)
    plain = write_raster(tmp_path / "plain.tif", data, descriptions=None)
    with SceneStack([Acquisition.from_path("--image", described)], sensor="s1", bands=["VH"]) as s:
        x, valid = s.read(Window(0, 0, 50, 40))
    assert x.shape == (1, 1, 40, 50) and valid.all() and np.allclose(x, 0.01)
    with pytest.raises(SceneInputError, match="no band descriptions; pass --bands with its 2"):
        SceneStack([Acquisition.from_path("--image", plain)], sensor="s1", bands=["VV"])
    named = Acquisition.from_path("--image", plain, ["sigma0_vh", "VV"])  # aliases work
    with SceneStack([named], sensor="s1", bands=["VV", "VH"], to_units="db") as s:
        x, _ = s.read(Window(0, 0, 50, 40))
    assert np.allclose(x[0, 0], -20.0, atol=1e-4) and np.allclose(x[0, 1], -10.0, atol=1e-4)
    with pytest.raises(SceneInputError, match="has 2 band\\(s\\) but --bands names 1"):
        SceneStack([Acquisition.from_path("--image", plain, ["VV"])], sensor="s1", bands=["VV"])
    with pytest.raises(UnknownBandError, match=r"'HH' of --image .* expected names from: VV, VH"):
        SceneStack(
            [Acquisition.from_path("--image", plain, ["VV", "HH"])], sensor="s1", bands=["VV"]
        )


def test_single_band_file_where_two_are_needed(tmp_path: Path) -> None:
    one = write_raster(
        tmp_path / "vv.tif", np.full((1, 30, 30), 0.1, np.float32), descriptions=("VV",)
    )
    with pytest.raises(
        SceneInputError, match=r"has 1 band\(s\) \(VV\) but the model needs 2: VV, VH"
    ) as info:
        SceneStack([Acquisition.from_path("--post", one)], sensor="s1", bands=["VV", "VH"])
    # A Kuro Siwo tile keeps VV and VH in two files: the message says how to join them.
    assert "rio stack VV.tif VH.tif -o post.tif, then --bands VV,VH" in str(info.value)


def test_bands_from_several_files_as_stac_assets_serve_them(tmp_path: Path) -> None:
    vv = write_raster(tmp_path / "vv.tif", np.full((1, 30, 30), 0.1, np.float32), descriptions=None)
    vh = write_raster(
        tmp_path / "vh.tif", np.full((1, 30, 30), 0.01, np.float32), descriptions=None
    )
    acq = Acquisition("--image", (SourceFile(vh, ("VH",)), SourceFile(vv, ("VV",))))
    with SceneStack([acq], sensor="s1", bands=["VV", "VH"], to_units="db") as s:
        x, _ = s.read(Window(0, 0, 30, 30))
    assert np.allclose(x[0, :, 0, 0], [-10.0, -20.0], atol=1e-4)


def _field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth positive field of UTM coordinates (linear sigma0-like)."""
    return (
        0.05 + 0.04 * np.sin((x - 500_000.0) / 300.0) * np.cos((5_000_000.0 - y) / 400.0)
    ).astype(np.float32)


def test_mismatched_input_is_reprojected_to_the_reference_grid(tmp_path: Path) -> None:
    h, w = 120, 150
    rows, cols = np.mgrid[0:h, 0:w]
    xs = ORIGIN.c + (cols + 0.5) * ORIGIN.a
    ys = ORIGIN.f + (rows + 0.5) * ORIGIN.e
    post = write_raster(tmp_path / "post.tif", np.stack([_field(xs, ys)] * 2))
    # The pre-event image: geographic coordinates, another pixel size, covering only the west.
    lon0, lat0 = warp_transform(UTM, "EPSG:4326", [500_000.0 - 200.0], [5_000_000.0 + 200.0])
    lon1, lat1 = warp_transform(UTM, "EPSG:4326", [500_000.0 + 900.0], [5_000_000.0 - 1_400.0])
    step = 6e-5  # about 5 m
    gw, gh = int((lon1[0] - lon0[0]) / step), int((lat0[0] - lat1[0]) / step)
    geo = from_origin(lon0[0], lat0[0], step, step)
    grow, gcol = np.mgrid[0:gh, 0:gw]
    lons = geo.c + (gcol + 0.5) * geo.a
    lats = geo.f + (grow + 0.5) * geo.e
    ux, uy = warp_transform("EPSG:4326", UTM, lons.ravel(), lats.ravel())
    values = _field(np.asarray(ux), np.asarray(uy)).reshape(gh, gw)
    pre = write_raster(
        tmp_path / "pre_4326.tif", np.stack([values] * 2), crs="EPSG:4326", transform=geo
    )
    acqs = [Acquisition.from_path("--pre", pre), Acquisition.from_path("--post", post)]
    with SceneStack(acqs, sensor="s1", bands=["VV"]) as s:
        assert s.grid.crs.to_string() == UTM and s.grid.shape == (h, w)
        x, valid = s.read(Window(0, 0, w, h))
    inside = xs < 500_000.0 + 850.0
    assert valid[inside].mean() > 0.98 and not valid[xs > 500_000.0 + 950.0].any()
    both = valid & inside
    assert np.abs(x[0, 0][both] - x[1, 0][both]).max() < 0.004  # pre matches post where covered


def test_inputs_that_do_not_overlap_are_an_error(tmp_path: Path) -> None:
    data = np.full((2, 40, 40), 0.1, np.float32)
    a = write_raster(tmp_path / "a.tif", data)
    b = write_raster(
        tmp_path / "b.tif", data, transform=from_origin(600_000.0, 5_000_000.0, 10.0, 10.0)
    )
    with pytest.raises(SceneInputError, match="does not overlap"):
        SceneStack(
            [Acquisition.from_path("--pre", b), Acquisition.from_path("--post", a)],
            sensor="s1",
            bands=["VV"],
        )


def test_missing_corrupt_and_truncated_files_are_one_line_errors(tmp_path: Path) -> None:
    good = make_planted(tmp_path / "s", shape=(200, 200)).post
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"not a tiff" * 50)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = [
        (tmp_path / "absent.tif", "does not exist"),
        (corrupt, "cannot read --post"),
        (truncated, "truncated"),
    ]
    for path, message in cases:
        with pytest.raises(SceneInputError, match=message) as info:
            SceneStack([Acquisition.from_path("--post", path)], sensor="s1", bands=["VV"])
        assert "\n" not in str(info.value)


def test_nodata_nan_and_non_positive_linear_values_are_invalid(tmp_path: Path) -> None:
    data = np.full((2, 20, 20), 0.1, np.float32)
    data[0, 0, 0] = 0.0  # the file's nodata
    data[1, 1, 1] = np.nan
    data[0, 2, 2] = -1.0  # not a linear sigma0
    path = write_raster(tmp_path / "s1.tif", data)
    with SceneStack([Acquisition.from_path("--image", path)], sensor="s1", bands=["VV", "VH"]) as s:
        x, valid = s.read(Window(0, 0, 20, 20))
    assert not valid[0, 0] and not valid[1, 1] and not valid[2, 2] and valid.sum() == 397
    assert np.isfinite(x).all() and (x[:, :, ~valid] == 0).all()


def test_stated_sar_units_the_values_contradict_are_an_error(tmp_path: Path) -> None:
    linear = np.random.default_rng(0).gamma(4.4, 0.02, size=(2, 40, 40)).astype(np.float32)
    lin_path = write_raster(tmp_path / "lin.tif", linear)
    db_path = write_raster(tmp_path / "db.tif", 10 * np.log10(linear), nodata=None)
    for path, units, looks in [
        (lin_path, "linear", None),
        (db_path, "db", None),
        (db_path, "dB", None),
        (db_path, "linear", "look like decibels"),
        (lin_path, "DB", "look like linear sigma0"),
    ]:
        acq = [Acquisition.from_path("--image", path)]
        if looks is None:
            with SceneStack(acq, sensor="s1", bands=["VV"], units=units) as s:
                assert s.file_units[0].source == "given"
            continue
        with pytest.raises(SarUnitsError, match=looks) as info:
            SceneStack(acq, sensor="s1", bands=["VV"], units=units)
        assert "\n" not in str(info.value) and "--sar-units" in str(info.value)


def test_decimated_read_averages_blocks(tmp_path: Path) -> None:
    data = np.tile(np.arange(100, dtype=np.float32)[None, None, :] + 1, (2, 80, 1))
    path = write_raster(tmp_path / "ramp.tif", data)
    # Values 1-100 fit neither unit: they must be stated.
    with pytest.raises(SarUnitsError, match=r"cannot tell .* pass --sar-units linear or db"):
        SceneStack([Acquisition.from_path("--image", path)], sensor="s1", bands=["VV"])
    acq = Acquisition.from_path("--image", path)
    with SceneStack([acq], sensor="s1", bands=["VV"], units="linear") as s:
        x, valid = s.read_decimated(max_side=25)
    assert x.shape == (1, 1, 20, 25) and valid.all()
    assert np.allclose(x[0, 0, 0], np.arange(25) * 4 + 2.5)


def test_convert_sar_round_trip() -> None:
    values = np.array([1e-3, 0.1, 1.0], dtype=np.float32)
    db = convert_sar(values.copy(), "linear", "db")
    assert np.allclose(db, [-30.0, -10.0, 0.0], atol=1e-5)
    assert np.allclose(convert_sar(db, "db", "linear"), values, rtol=1e-5)


def test_grids_that_differ_in_the_last_digits_are_the_same_grid() -> None:
    from rasterio.crs import CRS

    from thinkingearth.data.scene import Grid

    crs = CRS.from_epsg(4326)
    step = 8.983152841195215e-05
    base = Grid(crs, from_origin(-0.7818936232976315, 38.12881257139627, step, step), 512, 512)
    # The Sen1Floods11 label's transform differs from its image's in the 15th digit.
    label = Grid(
        crs,
        from_origin(
            -0.7818936232976315, 38.12881257139627, 8.983152841195184e-05, 8.983152841195184e-05
        ),
        512,
        512,
    )
    assert base.same_as(label)
    shifted = Grid(
        crs, from_origin(-0.7818936232976315 + step / 2, 38.12881257139627, step, step), 512, 512
    )
    coarser = Grid(
        crs,
        from_origin(-0.7818936232976315, 38.12881257139627, step * 1.001, step * 1.001),
        512,
        512,
    )
    assert not base.same_as(shifted) and not base.same_as(coarser)
    assert not base.same_as(Grid(CRS.from_epsg(3857), base.transform, 512, 512))
