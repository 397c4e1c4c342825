"""``predict --weights`` gives the model what it was trained with: location, gsd, dates."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import affine
import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import from_origin, read_prediction, write_raster
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from torch import Tensor

from thinkingearth.cli import main
from thinkingearth.data.scene import (
    Acquisition,
    Grid,
    SceneStack,
    date_in_name,
    iter_windows,
    parse_date,
)
from thinkingearth.data.synthetic import FLOOD_CLASSES
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.infer import SceneModel, predict_scene
from thinkingearth.infer.batch import SceneJob, predict_many, run_job
from thinkingearth.infer.model import WATER_CLASSES, WATER_COLOURS
from thinkingearth.infer.task_model import load_task
from thinkingearth.models.weights import create_encoder
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.checkpoint import save_task
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

SIZE = 48
S1 = "sentinel-1-grd"
BANDS = ("VV", "VH")
#: UTM 33N: easting 500 km is the zone's central meridian, 15° E; northing 4430 km ≈ 40° N.
UTM_ORIGIN = from_origin(500_000.0 - SIZE * 5.0, 4_430_000.0, 10.0, 10.0)


def _days(*when: int) -> float:
    return (datetime(*when, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() / 86400


def _sar(path: Path, seed: int, **kw: object) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.gamma(4.0, 0.05 / 4.0, size=(2, SIZE, SIZE)).astype(np.float32)
    data[:, : SIZE // 2] *= 0.1  # a dark (water-like) half, so the classes are not constant
    kw.setdefault("transform", UTM_ORIGIN)
    return write_raster(path, data, nodata=None, **kw)  # type: ignore[arg-type]


def _tag(path: Path, value: str) -> Path:
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME=value)
    return path


def _backbone(seed: int) -> EncoderBackbone:
    torch.manual_seed(seed)
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=SIZE
    )
    # Metadata must matter for the equality to mean anything: large random projections and
    # unknown-field tokens (some start at zero).
    assert encoder.meta is not None
    with torch.no_grad():
        for parameter in encoder.meta.parameters():
            parameter.normal_(0.0, 1.0)
    return EncoderBackbone(encoder, use_meta=True)


@pytest.fixture(scope="module")
def water_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegmentationTask]:
    module = SegmentationTask(_backbone(0), 2, decoder_channels=16).eval()
    path = tmp_path_factory.mktemp("ckpt") / "water_meta"
    save_task(
        module,
        path,
        task="water",
        classes=WATER_CLASSES,
        sensor=S1,
        bands=BANDS,
        normaliser=Normaliser(),
        tile=SIZE,
    )
    return path.with_suffix(".safetensors"), module


@pytest.fixture(scope="module")
def flood_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ChangeTask]:
    module = ChangeTask(_backbone(1), 3, decoder_channels=16, class_names=FLOOD_CLASSES).eval()
    path = tmp_path_factory.mktemp("ckpt") / "flood_meta"
    save_task(
        module,
        path,
        task="flood",
        classes=FLOOD_CLASSES,
        sensor=S1,
        bands=BANDS,
        normaliser=Normaliser(),
        tile=SIZE,
        acquisitions=3,
    )
    return path.with_suffix(".safetensors"), module


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read().astype(np.float32)


def _centre_lonlat(path: Path) -> tuple[float, float]:
    with rasterio.open(path) as src:
        t = src.transform
        x = t.c + t.a * src.width / 2.0 + t.b * src.height / 2.0
        y = t.f + t.d * src.width / 2.0 + t.e * src.height / 2.0
        lon, lat = warp_transform(src.crs, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def _forward(module: torch.nn.Module, x: np.ndarray, **meta: object) -> np.ndarray:
    """Direct forward of raw tiles ``[T, C, H, W]`` (one sample) with the given metadata."""
    image = Normaliser()(torch.from_numpy(x)[None], S1, BANDS)
    if image.shape[1] == 1:
        image = image[:, 0]
    batch: dict[str, object] = {"image": image, "bands": list(BANDS), "sensor": S1}
    for key, value in meta.items():
        batch[key] = torch.tensor([value], dtype=torch.float64)
    with torch.no_grad():
        return torch.softmax(module(batch).float(), dim=1)[0].numpy()


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=0)


def _output(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_prediction(path)


# --- the network gets what a direct forward with that metadata gets ---------------------------


def test_weights_with_metadata_predict_like_a_forward_with_that_metadata(
    water_ckpt: tuple[Path, SegmentationTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, module = water_ckpt
    assert load_task(weights).metadata
    image = _tag(_sar(tmp_path / "scene.tif", 0), "2023:01:15 10:30:00")
    out = tmp_path / "water.tif"
    argv = ["predict", "--task", "water", "--image", str(image), "--weights", str(weights)]
    assert main([*argv, "--out", str(out)]) == 0  # tile = image size: one tile, no blending
    err = capsys.readouterr().err
    assert "2023-01-15 (TIFFTAG_DATETIME of scene.tif)" in err and "gsd 10.00 m" in err
    classes, entropy = _output(out)
    lon, lat = _centre_lonlat(image)
    assert abs(lon - 15.0) < 0.01 and abs(lat - 40.0) < 0.05  # the file is where we put it
    x = _read(image)[None]
    when = _days(2023, 1, 15, 10, 30)
    probs = _forward(module, x, lon=lon, lat=lat, gsd=10.0, time=when)
    assert np.array_equal(classes, probs.argmax(0).astype(np.float32))
    np.testing.assert_allclose(entropy, _entropy(probs), rtol=1e-3)
    assert 0 < (classes == 1).mean() < 1
    # Without metadata, or with another date or place, the same module predicts otherwise: the
    # equality above can fail.
    for other in (
        _forward(module, x),
        _forward(module, x, lon=lon, lat=lat, gsd=10.0, time=when + 200.0),
        _forward(module, x, lon=lon + 1.0, lat=lat, gsd=10.0, time=when),
        _forward(module, x, lon=lon, lat=lat, gsd=20.0, time=when),
    ):
        assert np.abs(_entropy(other) - entropy).max() > 0.02  # the entropy's rounding: < 6e-4
    # --date wins over the tag, and reaches the model.
    dated = tmp_path / "dated.tif"
    assert main([*argv, "--out", str(dated), "--date", "2023-08-03"]) == 0
    probs = _forward(module, x, lon=lon, lat=lat, gsd=10.0, time=_days(2023, 8, 3))
    np.testing.assert_allclose(_output(dated)[1], _entropy(probs), rtol=1e-3)


def test_change_weights_get_one_date_per_acquisition(
    flood_ckpt: tuple[Path, ChangeTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, module = flood_ckpt
    pre2 = _sar(tmp_path / "pre2.tif", 1)
    pre = _tag(_sar(tmp_path / "pre.tif", 2), "2023:01:03 05:41:17")
    post = _sar(tmp_path / "S1A_IW_GRDH_1SDV_20230115T054117_20230115T054142_046789.tif", 3)
    out = tmp_path / "flood.tif"
    argv = ["predict", "--task", "flood", "--pre2", str(pre2), "--pre", str(pre)]
    argv += ["--post", str(post), "--weights", str(weights), "--out", str(out)]
    assert main([*argv, "--pre2-date", "2022-12-22"]) == 0
    err = capsys.readouterr().err
    assert "--pre2 2022-12-22 (given)" in err and "--post 2023-01-15 (file name" in err
    with rasterio.open(out) as dst:
        assert dst.tags()["ACQUISITION_DATES"] == (
            "--pre2=2022-12-22;--pre=2023-01-03;--post=2023-01-15"
        )
    lon, lat = _centre_lonlat(post)
    x = np.stack([_read(p) for p in (pre2, pre, post)])
    times = [_days(2022, 12, 22), _days(2023, 1, 3, 5, 41, 17), _days(2023, 1, 15)]
    image = Normaliser()(torch.from_numpy(x)[None], S1, BANDS)
    batch = {
        "image": image,
        "bands": list(BANDS),
        "sensor": S1,
        "lon": torch.tensor([lon], dtype=torch.float64),
        "lat": torch.tensor([lat], dtype=torch.float64),
        "gsd": torch.tensor([10.0], dtype=torch.float64),
        "time": torch.tensor([times], dtype=torch.float64),
    }
    with torch.no_grad():
        probs = torch.softmax(module(batch).float(), dim=1)[0].numpy()
        others = []
        # what a predictor would give that dropped the dates, or gave every step the post date
        for wrong in ([math.nan] * 3, [times[-1]] * 3):
            batch["time"] = torch.tensor([wrong], dtype=torch.float64)
            others.append(torch.softmax(module(batch).float(), dim=1)[0].numpy())
    classes, entropy = _output(out)
    assert np.array_equal(classes, probs.argmax(0).astype(np.float32))
    np.testing.assert_allclose(entropy, _entropy(probs), rtol=1e-3)
    for other in others:  # (the diff fusion cancels much of a date shared by every step)
        assert (
            np.abs(_entropy(other) - entropy).max() > 0.005
        )  # 10x the entropy's rounding  # each step gets its own date


# --- what the predictor hands a metadata network -------------------------------------------------


class _Spy:
    """A metadata network that records what it is given and answers uniform probabilities."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], dict[str, Tensor]]] = []

    def __call__(self, x: Tensor, meta: dict[str, Tensor]) -> Tensor:
        self.calls.append((tuple(x.shape), {k: v.clone() for k, v in meta.items()}))
        b, _, _, h, w = x.shape
        return torch.full((b, 2, h, w), 0.5)

    def joined(self, key: str) -> np.ndarray:
        return torch.cat([meta[key] for _, meta in self.calls]).numpy()


def _spy_model(spy: _Spy, steps: int = 1, **kw: object) -> SceneModel:
    fields: dict[str, object] = {
        "network": spy,
        "task": "water" if steps == 1 else "flood",
        "classes": WATER_CLASSES,
        "colours": WATER_COLOURS,
        "sensor": S1,
        "bands": BANDS,
        "steps": (steps,),
        "tile": 48,
        "overlap": 8,
        "outputs": "probabilities",
        "batch_size": 4,
        "name": "spy",
        "metadata": True,
    }
    fields.update(kw)
    return SceneModel(**fields)  # type: ignore[arg-type]


def test_each_tile_gets_its_centre_gsd_and_the_dates(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.gamma(4.0, 0.01, size=(2, 100, 100)).astype(np.float32)
    image = write_raster(tmp_path / "big_2021-06-30.tif", data, nodata=None, transform=UTM_ORIGIN)
    spy = _Spy()
    lines: list[str] = []
    predict_scene(
        _spy_model(spy),
        [Acquisition.from_path("--image", image)],
        tmp_path / "o.tif",
        quicklook=False,
        log=lines.append,
    )
    windows = list(iter_windows((100, 100), 48, 8))
    assert len(windows) == 9 and [c[0][0] for c in spy.calls] == [4, 4, 1]
    for _, meta in spy.calls:
        assert all(v.dtype == torch.float64 for v in meta.values())
        assert meta["time"].shape == (meta["lon"].shape[0], 1)
    xs = [UTM_ORIGIN.c + 10.0 * (w.col_off + 24) for w in windows]
    ys = [UTM_ORIGIN.f - 10.0 * (w.row_off + 24) for w in windows]
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", xs, ys)
    np.testing.assert_allclose(spy.joined("lon"), lon, atol=1e-9)
    np.testing.assert_allclose(spy.joined("lat"), lat, atol=1e-9)
    assert len(set(np.round(spy.joined("lon"), 6))) == 3  # three tile columns, three longitudes
    np.testing.assert_allclose(spy.joined("gsd"), 10.0)
    np.testing.assert_allclose(spy.joined("time"), _days(2021, 6, 30))
    assert sum("model metadata" in line for line in lines) == 1


def test_geographic_crs_gsd_is_metres_at_the_tile_latitude(tmp_path: Path) -> None:
    # 0.0001° pixels at 40° N: 8.54 m east-west, 11.10 m north-south (WGS84 ellipsoid).
    grid = Grid(CRS.from_epsg(4326), from_origin(10.0, 40.0024, 1e-4, 1e-4), 48, 48)
    gsd = float(grid.gsd_metres(40.0))
    assert 8.5 < gsd < 11.0
    # Independent check: a small spherical-Earth estimate agrees within the ellipsoid's 0.5 %.
    r = 6_371_008.8
    sphere = math.sqrt(
        math.radians(1e-4) * r * math.cos(math.radians(40.0)) * math.radians(1e-4) * r
    )
    assert abs(gsd / sphere - 1.0) < 0.005
    assert abs(gsd - math.sqrt(8.539 * 11.103)) < 0.01
    assert float(grid.gsd_metres(60.0)) < gsd < float(grid.gsd_metres(0.0))  # shrinks poleward
    # And through the predictor: a lon/lat GeoTIFF gives the tile's centre and its gsd.
    data = np.full((2, 48, 48), 0.05, dtype=np.float32)
    image = write_raster(
        tmp_path / "geo.tif", data, crs="EPSG:4326", transform=grid.transform, nodata=None
    )
    spy = _Spy()
    predict_scene(
        _spy_model(spy),
        [Acquisition.from_path("--image", image)],
        tmp_path / "o.tif",
        quicklook=False,
    )
    np.testing.assert_allclose(spy.joined("lon"), [10.0024], atol=1e-9)
    np.testing.assert_allclose(spy.joined("lat"), [40.0], atol=1e-9)
    np.testing.assert_allclose(spy.joined("gsd"), [gsd], rtol=1e-6)


def test_projected_gsd_uses_the_crs_linear_unit() -> None:
    feet = Grid(CRS.from_epsg(2263), from_origin(1e6, 2e5, 10.0, 10.0), 10, 10)  # US survey feet
    assert abs(float(feet.gsd_metres(40.7)) - 3.048006) < 1e-5
    rotated = Grid(CRS.from_epsg(32633), affine.Affine(6.0, 8.0, 0.0, 8.0, -6.0, 0.0), 10, 10)
    assert abs(float(rotated.gsd_metres(0.0)) - 10.0) < 1e-9


# --- dates ------------------------------------------------------------------------------------


def test_dates_parse_from_flags_tags_and_file_names(tmp_path: Path) -> None:
    assert parse_date("2023-01-15") == _days(2023, 1, 15)
    assert parse_date("20230115") == _days(2023, 1, 15)
    assert parse_date("2023-01-15T12:00:00Z") == _days(2023, 1, 15, 12)
    assert parse_date("2023-01-15T14:00:00+02:00") == _days(2023, 1, 15, 12)
    for bad in ("15/01/2023", "2023-13-01", "yesterday", "2023-02-30", ""):
        with pytest.raises(UserInputError, match="is not a date; expected YYYY-MM-DD"):
            parse_date(bad, "--date")
    name = "S2A_MSIL2A_20230115T101031_N0509_R022_T33UUP_20230116T120000.tif"
    assert date_in_name(name) == _days(2023, 1, 15)  # the first date: sensing, not processing
    assert date_in_name("flood_2022-09-01_post.tif") == _days(2022, 9, 1)
    assert date_in_name("orbit_12345678.tif") is None  # not a calendar date
    assert date_in_name("tile_000123456_2019-02-29.tif") is None  # 2019 has no 29 February
    assert date_in_name("pre.tif") is None
    tagged = _tag(_sar(tmp_path / "named_20200101.tif", 0), "2021:03:04 06:00:00")
    bad_tag = _tag(_sar(tmp_path / "x_20200101.tif", 0), "not a date")
    plain = _sar(tmp_path / "plain.tif", 0)
    acqs = [
        Acquisition.from_path("--a", tagged),  # the tag wins over the name
        Acquisition.from_path("--b", bad_tag),  # an unreadable tag: the name
        Acquisition.from_path("--c", plain),  # nothing: unknown
        Acquisition.from_path("--d", tagged, time=_days(2024, 5, 6)),  # given wins over all
    ]
    with SceneStack(acqs, sensor=S1, bands=BANDS) as stack:
        times = stack.times
    assert [t.days for t in times[:2]] == [_days(2021, 3, 4, 6), _days(2020, 1, 1)]
    assert math.isnan(times[2].days) and times[2].source == "unknown"
    assert times[3].days == _days(2024, 5, 6) and times[3].source == "given"
    assert times[0].source == "TIFFTAG_DATETIME of named_20200101.tif"


def test_a_missing_date_is_said_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.gamma(4.0, 0.01, size=(2, 100, 100)).astype(np.float32)
    files = [write_raster(tmp_path / f"{n}.tif", data, nodata=None) for n in ("a", "b", "c")]
    spy = _Spy()
    lines: list[str] = []
    inputs = [
        Acquisition.from_path(o, f)
        for o, f in zip(("--pre2", "--pre", "--post"), files, strict=True)
    ]
    result = predict_scene(
        _spy_model(spy, steps=3), inputs, tmp_path / "o.tif", quicklook=False, log=lines.append
    )
    assert len(spy.calls) == 3  # nine tiles in three batches
    missing = [line for line in lines if "no acquisition date" in line]
    assert len(missing) == 1 and all(o in missing[0] for o in ("--pre2", "--pre", "--post"))
    assert np.isnan(spy.joined("time")).all() and spy.joined("time").shape == (9, 3)
    assert result.missing_dates == ("--pre2", "--pre", "--post")
    # The many-scene path says it in the scene's line.
    status, _, detail = run_job(
        SceneJob("s", tuple(inputs), tmp_path / "s.tif"),
        _spy_model(_Spy(), steps=3),
        "linear",
        False,
        False,
        None,
    )
    assert status == "done" and "no acquisition date for --pre2, --pre, --post" in detail


def test_models_without_metadata_are_called_with_tiles_only(tmp_path: Path) -> None:
    image = _sar(tmp_path / "img_20230101.tif", 0)
    seen: list[int] = []

    def network(x: Tensor) -> Tensor:  # takes one argument: a second would be a TypeError
        seen.append(x.shape[0])
        return torch.full((x.shape[0], 2, x.shape[3], x.shape[4]), 0.5)

    lines: list[str] = []
    model = _spy_model(_Spy(), network=network, metadata=False)
    predict_scene(
        model,
        [Acquisition.from_path("--image", image)],
        tmp_path / "o.tif",
        quicklook=False,
        log=lines.append,
    )
    # The SAR units said once, "predicting …" and "wrote …": no metadata lines.
    assert seen == [1] and len(lines) == 3 and lines[0].startswith("SAR units of --image")
    assert not any(line.startswith(("model metadata", "no acquisition date")) for line in lines)


# --- CLI errors -------------------------------------------------------------------------------


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert err.count("\n") == 0 and "Traceback" not in err


def test_date_flags_are_checked_in_one_line(
    water_ckpt: tuple[Path, SegmentationTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(_sar(tmp_path / "scene.tif", 0))
    out = tmp_path / "o.tif"
    water = ["predict", "--task", "water", "--image", image, "--out", str(out)]
    water += ["--weights", str(water_ckpt[0])]
    _one_line_error([*water, "--date", "2023-31-01"], capsys, "--date '2023-31-01' is not a date")
    _one_line_error([*water, "--pre-date", "2023-01-01"], capsys, "takes --date, not --pre-date")
    flood = ["predict", "--task", "flood", "--pre", image, "--post", image, "--out", str(out)]
    _one_line_error([*flood, "--date", "2023-01-01"], capsys, "--task flood takes --pre-date")
    _one_line_error([*flood, "--pre2-date", "2023-01-01"], capsys, "give --pre2")
    _one_line_error([*flood, "--post-date", "15.01.2023"], capsys, "--post-date '15.01.2023'")
    scenes = ["predict", "--task", "water", "--scenes", str(tmp_path), "--out", str(out)]
    _one_line_error([*scenes, "--date", "2023-01-01"], capsys, "not --scenes")
    assert not out.exists()


def test_many_scenes_check_the_acquisitions_before_writing(
    flood_ckpt: tuple[Path, ChangeTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_task(flood_ckpt[0])
    assert model.steps == (3,)
    folder = tmp_path / "scenes"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for f in ("pre", "post"):
            _sar(folder / name / f"{f}.tif", 0)
    out = tmp_path / "maps"
    jobs = [
        SceneJob(
            n,
            tuple(
                Acquisition.from_path(o, folder / n / f"{f}.tif")
                for o, f in (("--pre", "pre"), ("--post", "post"))
            ),
            out / f"{n}.tif",
        )
        for n in ("a", "b")
    ]
    with pytest.raises(UserInputError, match=r"scene a: .*takes 3 input image\(s\) \(--pre2"):
        predict_many(jobs, model, processes=False, workers=1)
    assert not out.exists()
    argv = ["predict", "--task", "flood", "--scenes", str(folder), "--pre", "pre.tif"]
    argv += ["--post", "post.tif", "--weights", str(flood_ckpt[0]), "--out", str(out)]
    _one_line_error(argv, capsys, "(--pre2, --pre, --post); got 2 (--pre, --post)")
    assert not out.exists()
