"""Source ``folder``: any folder of GeoTIFFs, seeded windows, metadata per file, bad inputs."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import affine
import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch import Callback
from sources_fakes import geotiff

from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.pretrain import run_pretrain
from thinkingearth.pretrain.data import PretrainDataModule
from thinkingearth.pretrain.sources import open_pair, open_sensor
from thinkingearth.pretrain.sources.base import has_valid_pixel
from thinkingearth.pretrain.transforms import Normaliser

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _s2(rng: np.random.Generator, h: int = 64, w: int = 64, count: int = 12) -> np.ndarray:
    return rng.integers(100, 5000, (count, h, w), dtype=np.uint16)


def _folder_config(tiny, entries, recipe="mae", trainer=None, seed=0, **data):
    data = {"source": "folder", "size": 32, "batch_size": 4, "sensors": entries, **data}
    return tiny(recipe=recipe, seed=seed, data=data, trainer=trainer or {})


@pytest.fixture
def s2_folder(tmp_path: Path) -> Path:
    """Two S2 L2A files: one with band descriptions and a date tag, one named by its date."""
    rng = np.random.default_rng(0)
    root = tmp_path / "s2"
    geotiff(
        root / "a" / "tile.tif",
        _s2(rng),
        descriptions=S2_BANDS,
        datetime_tag="2021:06:15 10:30:00",
    )
    geotiff(
        root / "b" / "S2B_MSIL2A_20210701T103021_T33UUP.tif",
        _s2(rng, 96, 64),
        transform=affine.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5300000.0),
    )
    (root / ".hidden").mkdir()
    geotiff(root / ".hidden" / "skip.tif", _s2(rng, count=3))  # hidden: never read
    return root


def test_windows_bands_metadata_and_determinism(tiny, s2_folder: Path) -> None:
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(s2_folder)}])
    samples = open_sensor(config, "sentinel-2-l2a")
    # n unset: windows that tile each file without overlap, 2x2 + 3x2
    assert len(samples) == 4 + 6
    assert samples.bands == S2_BANDS
    names = [samples[i]["name"] for i in range(len(samples))]
    assert names.count("a/tile.tif") == 4
    first = samples[0]
    assert first["image"].shape == (12, 32, 32) and first["image"].dtype == torch.float32
    assert first["sensor"] == "sentinel-2-l2a" and first["crs"] == "EPSG:32633"
    assert first["gsd"] == pytest.approx(10.0)
    assert first["time"] == pytest.approx(to_days(datetime(2021, 6, 15, 10, 30)))
    # the window's centre, in UTM 33N: 100 km west of its central meridian (15 E)
    t = first["transform"]
    assert t[0] == 10.0 and (t[2] - 400000.0) % 10 == 0 and 400000 <= t[2] <= 400320
    assert 13.5 < first["lon"] < 13.8 and 47.0 < first["lat"] < 48.5
    dated = next(samples[i] for i in range(len(samples)) if samples[i]["name"].startswith("b/"))
    assert dated["time"] == pytest.approx(to_days(datetime(2021, 7, 1)))
    assert dated["lon"] == pytest.approx(15.0, abs=0.01)
    # the pixels are the file's, at the window's place
    with rasterio.open(s2_folder / "a" / "tile.tif") as ds:
        with_tag = ds.read().astype(np.float32)
    row = round((5300000.0 - t[5]) / 10)
    col = round((t[2] - 400000.0) / 10)
    assert torch.equal(
        first["image"], torch.from_numpy(with_tag[:, row : row + 32, col : col + 32])
    )
    # a pure function of (seed, index): again equal, another seed differs
    again = open_sensor(config, "sentinel-2-l2a")
    for i in range(len(samples)):
        assert torch.equal(samples[i]["image"], again[i]["image"])
    reseeded = open_sensor(
        _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(s2_folder)}], seed=7), "s2"
    )
    assert any(reseeded[i]["transform"] != samples[i]["transform"] for i in range(len(samples)))


def test_n_draws_a_subset_or_repeats_with_other_windows(tiny, s2_folder: Path) -> None:
    entry = {"sensor": "sentinel-2-l2a", "root": str(s2_folder)}
    few = open_sensor(_folder_config(tiny, [{**entry, "n": 3}]), "sentinel-2-l2a")
    assert len(few) == 3
    many = open_sensor(_folder_config(tiny, [{**entry, "n": 25}]), "sentinel-2-l2a")
    assert len(many) == 25
    windows = {(many[i]["name"], many[i]["transform"]) for i in range(25)}
    assert len(windows) > 10  # repeats of a file read other windows


def test_band_names_from_count_or_bands_key_and_subsets(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "l1c"
    geotiff(root / "full.tif", _s2(rng, count=13))  # no descriptions, the L1C band count
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l1c", "root": str(root)}])
    assert open_sensor(config, "sentinel-2-l1c").bands[-3:] == ("B10", "B11", "B12")
    # a subset of the run, in the order asked
    entry = {"sensor": "sentinel-2-l1c", "root": str(root), "bands": ["B04", "B03", "B02"]}
    subset = open_sensor(_folder_config(tiny, [entry]), "sentinel-2-l1c")
    with rasterio.open(root / "full.tif") as ds:
        source = ds.read().astype(np.float32)
    sample = subset[0]
    t = sample["transform"]
    row, col = round((5300000.0 - t[5]) / 10), round((t[2] - 400000.0) / 10)
    assert torch.equal(
        sample["image"], torch.from_numpy(source[[3, 2, 1], row : row + 32, col : col + 32])
    )
    # four bands without descriptions: named by bands:
    four = tmp_path / "rgbn"
    geotiff(four / "x.tif", _s2(rng, count=4))
    entry = {"sensor": "sentinel-2-l2a", "root": str(four), "bands": ["B02", "B03", "B04", "B08"]}
    assert open_sensor(_folder_config(tiny, [entry]), "s2").bands == ("B02", "B03", "B04", "B08")


def test_bad_inputs_are_one_line_errors(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)

    def build(root: Path, **entry) -> None:
        config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(root), **entry}])
        open_sensor(config, "sentinel-2-l2a")

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no rasters")
    with pytest.raises(DataLayoutError, match=r"no GeoTIFF \(\.tif, \.tiff\) files under") as exc:
        build(empty)
    _one_line(exc)
    with pytest.raises(DataLayoutError, match="does not exist") as exc:
        build(tmp_path / "missing")
    _one_line(exc)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(DataLayoutError, match=r"no readable raster under .*broken\.tif") as exc:
        build(junk)
    _one_line(exc)
    odd = tmp_path / "odd"
    geotiff(odd / "five.tif", _s2(rng, count=5))
    with pytest.raises(
        DataLayoutError,
        match=r"five\.tif has 5 band\(s\) with no band descriptions, and sentinel-2-l2a has 12: "
        r"set data\.sensors\[0\]\.bands to its 5 band names",
    ) as exc:
        build(odd)
    _one_line(exc)
    with pytest.raises(DataLayoutError, match=r"data\.sensors\[0\]\.bands names 3") as exc:
        build(odd, bands=["B02", "B03", "B04"])
    _one_line(exc)
    radar = tmp_path / "radar"
    geotiff(radar / "s1.tif", _s2(rng, count=2), descriptions=("VV", "VH"))
    with pytest.raises(
        DataLayoutError, match=r"band descriptions \(VV, VH\) that name no sentinel-2-l2a band"
    ) as exc:
        build(radar)
    _one_line(exc)
    small = tmp_path / "small"
    geotiff(small / "tiny.tif", _s2(rng, 20, 40))
    with pytest.raises(
        DataLayoutError, match=r"smaller than data.size 32 px \(the largest, tiny\.tif, is 20x40\)"
    ) as exc:
        build(small)
    _one_line(exc)
    # with usable files beside them, unreadable and small files are left out and reported
    geotiff(small / "big.tif", _s2(rng))
    (small / "broken.tif").write_bytes(b"garbage" * 20)
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(small)}])
    samples = open_sensor(config, "sentinel-2-l2a")
    notes = " | ".join(samples.reader.notes)
    assert "left out 1 unreadable file(s), e.g. broken.tif" in notes
    assert "left out 1 file(s) smaller than data.size 32 px, e.g. tiny.tif (20x40)" in notes
    assert {samples[i]["name"] for i in range(len(samples))} == {"big.tif"}


def test_config_errors_name_the_key(tiny, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"data\.sensors\[0\]\.root is missing") as exc:
        _folder_config(tiny, [{"sensor": "sentinel-2-l2a"}])
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"unknown key 'data\.sensors\[0\]\.rooot'") as exc:
        _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "rooot": "x"}])
    _one_line(exc)
    with pytest.raises(UserInputError, match=r"data\.root is not read by source folder") as exc:
        _folder_config(tiny, [{"sensor": "s2", "root": "x"}], root="y")
    with pytest.raises(UserInputError, match=r"data\.sensors\[0\]\.root is only read by source"):
        tiny(data={"sensors": [{"sensor": "s2", "root": "x"}]})
    with pytest.raises(UserInputError, match=r"data\.sensors\[0\]\.units is only read by source"):
        tiny(data={"sensors": [{"sensor": "s1", "units": "db"}]})
    with pytest.raises(UserInputError, match="softcon targets need multi-hot labels") as exc:
        tiny(
            recipe="softcon", data={"source": "folder", "sensors": [{"sensor": "s2", "root": "x"}]}
        )
    _one_line(exc)


def test_nodata_is_nan_and_empty_windows_are_skipped_and_counted(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = _s2(rng, 64, 128).astype(np.int16)
    image[:, :, :96] = -9999  # three quarters of the file is no data
    image[0, 5, 100] = -9999  # one no-data pixel among valid ones
    root = tmp_path / "nodata"
    geotiff(root / "half.tif", image, nodata=-9999, descriptions=S2_BANDS)
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(root), "n": 40}])
    samples = open_sensor(config, "sentinel-2-l2a")
    skipped = 0
    for i in range(len(samples)):
        sample = samples[i]
        assert has_valid_pixel(sample)
        skipped += sample["nodata_windows"]
        assert not (sample["image"] == -9999).any()
    assert skipped > 0  # windows entirely in the no-data part were drawn and skipped
    # a window over the lone no-data pixel keeps it as NaN
    nan_seen = False
    for i in range(len(samples)):
        s = samples[i]
        col = round((s["transform"][2] - 400000.0) / 10)
        row = round((5300000.0 - s["transform"][5]) / 10)
        if row <= 5 < row + 32 and col <= 100 < col + 32:
            assert math.isnan(float(s["image"][0, 5 - row, 100 - col]))
            nan_seen = True
    assert nan_seen
    # a file with no valid pixel at all: a clear error, not an endless search
    dead = tmp_path / "dead"
    geotiff(dead / "all.tif", np.full((12, 32, 32), -9999, np.int16), nodata=-9999)
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(dead)}])
    with pytest.raises(DataLayoutError, match="no valid pixel in 100 windows of 32 px") as exc:
        open_sensor(config, "sentinel-2-l2a")[0]
    _one_line(exc)


def test_mixed_crs_folder_has_metadata_per_file(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "mixed"
    geotiff(root / "utm.tif", _s2(rng))  # UTM 33N, near 12.3 E 47.8 N
    geotiff(
        root / "geo.tif",
        _s2(rng),
        crs="EPSG:4326",
        transform=affine.Affine(0.0001, 0.0, -3.5, 0.0, -0.0001, 40.4),
    )
    geotiff(root / "nocrs.tif", _s2(rng), crs=None, transform=affine.Affine.identity())
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(root)}])
    samples = open_sensor(config, "sentinel-2-l2a")
    note = samples.reader.notes[-1]
    assert "2 CRSs (EPSG:32633, EPSG:4326; metadata per file)" in note
    assert "1 without a CRS" in note
    by_name = {samples[i]["name"]: samples[i] for i in range(len(samples))}
    geo = by_name["geo.tif"]
    assert -3.5 < geo["lon"] < -3.49 and 40.39 < geo["lat"] < 40.4
    # 0.0001 degree pixels at 40.4 N: about 11.1 m north and 8.5 m east
    assert geo["gsd"] == pytest.approx(math.sqrt(11.1 * 8.49), rel=0.01)
    assert by_name["utm.tif"]["gsd"] == pytest.approx(10.0)
    blind = by_name["nocrs.tif"]
    assert math.isnan(blind["lon"]) and math.isnan(blind["gsd"]) and blind["crs"] == ""


def test_sar_units_detected_stated_and_converted(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    db = rng.uniform(-25.0, -5.0, (2, 64, 64)).astype(np.float32)
    root = tmp_path / "s1db"
    geotiff(root / "s1.tif", db, descriptions=("VV", "VH"), nodata=float("nan"))
    config = _folder_config(tiny, [{"sensor": "sentinel-1-grd", "root": str(root)}])
    samples = open_sensor(config, "sentinel-1-grd")
    assert "SAR db: 1" in samples.reader.notes[-1]
    sample = samples[0]
    assert sample["units"] == "linear"
    t = sample["transform"]
    row, col = round((5300000.0 - t[5]) / 10), round((t[2] - 400000.0) / 10)
    expected = 10.0 ** (db[:, row : row + 32, col : col + 32] / 10.0)
    assert torch.allclose(sample["image"], torch.from_numpy(expected), rtol=1e-5)
    # stated units that the values contradict
    entry = {"sensor": "sentinel-1-grd", "root": str(root), "units": "linear"}
    with pytest.raises(DataLayoutError, match="units says linear but its values look like") as exc:
        open_sensor(_folder_config(tiny, [entry]), "sentinel-1-grd")
    _one_line(exc)
    # values that fit neither: digital numbers
    amplitude = tmp_path / "amplitude"
    geotiff(amplitude / "dn.tif", rng.integers(50, 900, (2, 64, 64)).astype(np.float32))
    entry = {"sensor": "sentinel-1-grd", "root": str(amplitude)}
    with pytest.raises(DataLayoutError, match=r"set data\.sensors\[0\]\.units to linear or db"):
        open_sensor(_folder_config(tiny, [entry]), "sentinel-1-grd")
    entry["units"] = "linear"  # stated: trusted where the values cannot tell
    assert open_sensor(_folder_config(tiny, [entry]), "sentinel-1-grd")[0]["units"] == "linear"


def test_folder_pairs_share_grids(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    s2, s1 = tmp_path / "s2", tmp_path / "s1"
    for k in range(3):
        transform = affine.Affine(10.0, 0.0, 400000.0 + 640 * k, 0.0, -10.0, 5300000.0)
        geotiff(s2 / f"scene{k}.tif", _s2(rng), transform=transform)
        if k < 2:
            sigma0 = rng.lognormal(-2.5, 0.5, (2, 64, 64)).astype(np.float32)
            geotiff(s1 / f"s1_{k}.tif", sigma0, transform=transform, descriptions=("VV", "VH"))
    entries = [{"sensor": "s2", "root": str(s2)}, {"sensor": "s1", "root": str(s1)}]
    config = _folder_config(tiny, entries, "cross_sensor", pair=["s2", "s1"], batch_size=2)
    pairs = open_pair(config)
    assert len(pairs) == 2 * 4  # two paired files, four windows each
    for i in range(len(pairs)):
        item = pairs[i]
        assert item["a"]["sensor"] == "sentinel-2-l2a" and item["b"]["sensor"] == "sentinel-1-grd"
        assert item["a"]["transform"] == item["b"]["transform"]  # the same ground
        assert item["a"]["name"].replace("scene", "") == item["b"]["name"].replace("s1_", "")
    assert any("1 sentinel-2-l2a file(s) without a partner left out" in n for n in pairs.a.notes)
    lonely = tmp_path / "elsewhere"
    geotiff(
        lonely / "x.tif",
        rng.lognormal(-2.5, 0.5, (2, 64, 64)).astype(np.float32),
        transform=affine.Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0),
        descriptions=("VV", "VH"),
    )
    entries[1]["root"] = str(lonely)
    config = _folder_config(tiny, entries, "cross_sensor", pair=["s2", "s1"], batch_size=2)
    with pytest.raises(DataLayoutError, match="shares its grid") as exc:
        open_pair(config)
    _one_line(exc)


class _StopAt(Callback):
    """Stop training after ``step`` optimiser steps, as an interruption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.mark.slow
def test_pretrain_on_a_folder_resumes_exactly_and_reports_skips(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    root = tmp_path / "s2"
    image = _s2(rng, 64, 96).astype(np.int16)
    image[:, :, :48] = -1  # half no data: some windows are skipped
    geotiff(root / "x.tif", image, nodata=-1, descriptions=S2_BANDS)
    entry = {"sensor": "sentinel-2-l2a", "root": str(root), "n": 16}
    config = _folder_config(tiny, [entry], trainer={"max_steps": 6, "checkpoint_every": 3})
    whole = run_pretrain(config, tmp_path / "whole", log=None)
    run_pretrain(config, tmp_path / "parts", callbacks=[_StopAt(3)], log=None)
    parts = run_pretrain(config, tmp_path / "parts", resume=True, log=None)
    assert parts.resumed_from == 3
    assert parts.final_loss == whole.final_loss
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "encoder.safetensors")
    b = load_file(tmp_path / "parts" / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["data"]["source"] == "folder"
    assert summary["data"]["nodata_windows_skipped"] > 0
    assert any("1 file(s) under" in note for note in summary["data"]["notes"])


def test_data_module_counts_skipped_windows(tiny, s2_folder: Path) -> None:
    config = _folder_config(tiny, [{"sensor": "sentinel-2-l2a", "root": str(s2_folder)}])
    module = PretrainDataModule(config, Normaliser())
    module.build()
    batch = next(iter(module.train_dataloader()))
    batch["nodata_windows"] = [2, 0, 1, 0]
    out = module.on_before_batch_transfer(batch, 0)
    assert "nodata_windows" not in out and module.nodata_windows == 3
    assert module.summary()["nodata_windows_skipped"] == 3
