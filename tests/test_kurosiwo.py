"""Tests for the Kuro Siwo writer, index and reader."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import pickle
import shutil
from pathlib import Path

import affine
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from thinkingearth.data.formats import kurosiwo as ks
from thinkingearth.data.formats.kurosiwo import (
    INDEX_NAME,
    SPLITS,
    KuroSiwo,
    build_index,
    write_index,
    write_kurosiwo_tile,
)
from thinkingearth.data.sample import collate, to_days
from thinkingearth.errors import DataLayoutError, UserInputError

_spec = importlib.util.spec_from_file_location(
    "kurosiwo_fake_data", Path(__file__).parent / "data" / "kurosiwo" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

TRAIN, VAL, TEST = 130, 514, 321
SIZE = 16
TILE = "0123456789abcdef0123456789abcdef"
# Web Mercator of roughly lon 23.7, lat 38.0 (Athens); 10 m pixels.
TRANSFORM = affine.Affine(10.0, 0.0, 2638000.0, 0.0, -10.0, 4579000.0)
DATES = {"SL2": "2020-08-22", "SL1": "2020-09-03", "MS1": "2020-09-15"}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kurosiwo")
    fake.make_fake_kurosiwo(root, n_tiles_per_event=2, events=(TRAIN, 118, VAL, TEST), size=SIZE)
    return root


def _tile_arrays(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    sar = {
        s: rng.uniform(0.01, 0.5, (2, SIZE, SIZE)).astype(np.float32) for s in ("SL2", "SL1", "MS1")
    }
    mna = np.ones((SIZE, SIZE), np.uint8)
    mna[0, :] = 0
    for arr in sar.values():
        arr[:, 0, :] = 0.0
    mlu = rng.integers(0, 3, (SIZE, SIZE), dtype=np.uint8)
    mlu[5, 5] = 3
    dem = rng.normal(50.0, 5.0, (SIZE, SIZE)).astype(np.float32)
    return {"sar": sar, "mlu": mlu, "mna": mna, "dem": dem}


def _write(root: Path, actid: int = TRAIN, tile: str = TILE, **overrides) -> Path:
    arrays = _tile_arrays()
    kwargs = {
        "actid": actid,
        "aoi": 2,
        "tile": tile,
        "sar": arrays["sar"],
        "mlu": arrays["mlu"],
        "mna": arrays["mna"],
        "transform": TRANSFORM,
        "dates": DATES,
        "dem": arrays["dem"],
    }
    kwargs.update(overrides)
    return write_kurosiwo_tile(root, **kwargs)


# ---------------------------------------------------------------------------------- the writer


def test_writer_uses_published_names_and_info_schema(tmp_path: Path) -> None:
    folder = _write(tmp_path, info={"pflood": 12.5, "note": np.float32(1.5)})
    assert folder == tmp_path / "data" / "130" / "02" / TILE
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            "MK0_DEM_130_02_20200915.tif",
            "MK0_MLU_130_02_20200915.tif",
            "MK0_MNA_130_02_20200915.tif",
            "MS1_IVH_130_02_20200915.tif",
            "MS1_IVV_130_02_20200915.tif",
            "SL1_IVH_130_02_20200903.tif",
            "SL1_IVV_130_02_20200903.tif",
            "SL2_IVH_130_02_20200822.tif",
            "SL2_IVV_130_02_20200822.tif",
            "info.json",
        ]
    )
    info = json.loads((folder / "info.json").read_text())
    assert info["grid_id"] == "01234567-89ab-cdef-0123-456789abcdef"
    assert (info["actid"], info["aoiid"]) == (130, 2)
    assert info["flood_date"] == "2020-09-15 00:00:00"
    assert info["geom"].startswith("POLYGON ((")
    assert info["pflood"] == 12.5 and info["note"] == 1.5  # extra keys override / are added
    assert info["pcovered"] == pytest.approx(100.0 * (SIZE - 1) / SIZE)
    assert {k: v["source_date"] for k, v in info["sources"].items()} == DATES
    assert info["sources"]["MS1"]["master"] is True and info["sources"]["SL2"]["crank"] == 2
    assert set(info["datasets"]) == {n[:-4] for n in names if n.endswith(".tif")}
    assert info["datasets"]["MK0_MLU_130_02_20200915"]["nodata"] == 3
    with rasterio.open(folder / "MS1_IVV_130_02_20200915.tif") as src:
        assert (src.dtypes[0], src.nodata, src.crs.to_epsg()) == ("float32", 0.0, 3857)
    with rasterio.open(folder / "MK0_MLU_130_02_20200915.tif") as src:
        assert (src.dtypes[0], src.nodata) == ("uint8", 3.0)
    with rasterio.open(folder / "MK0_MNA_130_02_20200915.tif") as src:
        assert (src.dtypes[0], src.nodata) == ("uint8", 0.0)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_writer_replaces_a_tile_and_rejects_bad_input(tmp_path: Path) -> None:
    _write(tmp_path)
    folder = _write(tmp_path, dem=None)
    assert not list(folder.glob("MK0_DEM_*"))
    assert sorted(p.name for p in folder.parent.iterdir()) == [TILE]
    bad_sar = {**_tile_arrays()["sar"], "SL1": np.zeros((2, SIZE, SIZE + 1), np.float32)}
    cases = [
        {"sar": bad_sar},
        {"sar": {"SL1": bad_sar["SL2"], "MS1": bad_sar["MS1"]}},
        {"mlu": np.full((SIZE, SIZE), 7, np.uint8)},
        {"mna": np.zeros((SIZE, 2), np.uint8)},
        {"dates": {**DATES, "SL2": "2020-10-01"}},
        {"dates": {**DATES, "MS1": "15/09/2020"}},
        {"tile": "../evil"},
        {"aoi": 0},
        {"info": {"sources": {}}},
    ]
    for overrides in cases:
        with pytest.raises(UserInputError):
            _write(tmp_path, **overrides)


def test_interrupted_write_leaves_no_tile(tmp_path: Path, monkeypatch) -> None:
    real = ks.write_geotiff
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(ks, "write_geotiff", flaky)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, tile="deadbeef")
    parent = tmp_path / "data" / "130" / "02"
    assert list(parent.iterdir()) == []
    # A writer killed mid-way leaves only a hidden staging folder, which is never indexed.
    monkeypatch.setattr(ks, "write_geotiff", real)
    _write(tmp_path)
    staging = parent / ".cafe.tmp-1234abcd"
    staging.mkdir()
    (staging / "info.json").write_text("{}")
    assert [r["tile"] for r in build_index(tmp_path)] == [TILE]


# ---------------------------------------------------------------------------------- the reader


def test_round_trip(tmp_path: Path) -> None:
    arrays = _tile_arrays()
    _write(tmp_path)
    ds = KuroSiwo(tmp_path, split="train", return_dem=True)
    assert len(ds) == 1
    sample = ds[0]
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (3, 2, SIZE, SIZE)
    for t, scene in enumerate(("SL2", "SL1", "MS1")):
        for b in range(2):  # VV, VH
            np.testing.assert_array_equal(image[t, b].numpy(), arrays["sar"][scene][b])
    assert sample["bands"] == ("VV", "VH") and sample["sensor"] == "sentinel-1-grd"
    assert sample["units"] == "linear"  # Kuro Siwo stores sigma0, not dB
    mask = sample["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
    expected = arrays["mlu"].astype(np.int64)
    expected[arrays["mna"] != 1] = 3
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert (mask[0] == 3).all() and mask[5, 5] == 3 and set(mask.unique().tolist()) == {0, 1, 2, 3}
    time = sample["time"]
    assert time.dtype == torch.float64 and time.shape == (3,)
    assert time.tolist() == [to_days(np.datetime64(DATES[s])) for s in ("SL2", "SL1", "MS1")]
    assert bool((time.diff() > 0).all())
    assert sample["crs"] == "EPSG:3857"
    assert sample["transform"] == tuple(TRANSFORM)[:6]
    assert sample["gsd"] == pytest.approx(10.0)
    assert 23.6 < sample["lon"] < 23.8 and 37.9 < sample["lat"] < 38.1
    assert (sample["actid"], sample["aoi"], sample["tile"]) == (TRAIN, 2, TILE)
    dem = sample["dem"]
    assert dem.dtype == torch.float32 and dem.shape == (1, SIZE, SIZE)
    np.testing.assert_array_equal(dem[0].numpy(), arrays["dem"])
    assert "dem" not in KuroSiwo(tmp_path)[0]


def test_mlu_nodata_is_ignored_even_where_mna_is_valid(tmp_path: Path) -> None:
    mlu = np.zeros((SIZE, SIZE), np.uint8)
    mlu[2, 3] = 3
    _write(tmp_path, mlu=mlu, mna=np.ones((SIZE, SIZE), np.uint8))
    mask = KuroSiwo(tmp_path)[0]["mask"]
    assert mask[2, 3] == KuroSiwo.ignore_index and int((mask == 3).sum()) == 1


def test_splits_choose_only_their_events(fake_root: Path) -> None:
    assert set(SPLITS) == {"train", "val", "test"}
    assert len(SPLITS["train"]) == 27 and len(SPLITS["val"]) == 7 and len(SPLITS["test"]) == 10
    train, val, test = (set(SPLITS[k]) for k in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    for split, events in (("train", {TRAIN, 118}), ("val", {VAL}), ("test", {TEST})):
        ds = KuroSiwo(fake_root, split=split)
        assert {ds[i]["actid"] for i in range(len(ds))} == events
        assert set(ds.events) == events and len(ds) == 2 * len(events)
    assert len(KuroSiwo(fake_root, split=None)) == 8


def test_order_is_sorted_and_deterministic(fake_root: Path) -> None:
    keys = [(r["actid"], r["aoi"], r["tile"]) for r in KuroSiwo(fake_root, split=None).records]
    assert keys == sorted(keys)
    assert keys == [(r["actid"], r["aoi"], r["tile"]) for r in build_index(fake_root)]


def test_leave_events_out_and_events_override(fake_root: Path) -> None:
    ds = KuroSiwo(fake_root, split="train", exclude_events=[118])
    assert ds.events == (TRAIN,) and len(ds) == 2
    ds = KuroSiwo(fake_root, split="train", events=[TEST, VAL])
    assert ds.events == (TEST, VAL) and len(ds) == 4
    ds = KuroSiwo(fake_root, split=None, exclude_events=(TRAIN, VAL))
    assert ds.events == (118, TEST)
    with pytest.raises(DataLayoutError, match="no tiles"):
        KuroSiwo(fake_root, split="val", exclude_events=[VAL])
    with pytest.raises(UserInputError, match="integer activation ids"):
        KuroSiwo(fake_root, events=[1.5])


def test_json_index(fake_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)
    path = write_index(root)
    assert path == root / INDEX_NAME
    walked = KuroSiwo(root, split=None, exclude_events=[TEST])
    content = json.loads(path.read_text())
    assert content["tiles"] == build_index(root)
    # The index is used as written: a tile that is not in it is not seen.
    _write(root, actid=TRAIN, tile="feedface")
    indexed = KuroSiwo(root, split=None, exclude_events=[TEST])
    assert indexed.records == walked.records
    torch.testing.assert_close(indexed[0]["image"], walked[0]["image"])
    path.write_text("{not json")
    with pytest.raises(DataLayoutError, match=INDEX_NAME):
        KuroSiwo(root)


def test_dataloader_batches_with_collate(fake_root: Path) -> None:
    ds = KuroSiwo(fake_root, split="train", transforms=lambda s: {**s, "image": s["image"] * 2})
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 3, 2, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (3, SIZE, SIZE) and batch["mask"].dtype == torch.int64
    assert batch["time"].shape == (3, 3) and batch["time"].dtype == torch.float64
    for key in ("lon", "lat", "gsd"):
        assert batch[key].shape == (3,) and not torch.isnan(batch[key]).any()
    assert batch["sensor"] == ["sentinel-1-grd"] * 3 and len(batch["transform"]) == 3
    assert batch["actid"] == [118, 118, TRAIN]


def test_no_pickle_is_ever_loaded(fake_root: Path, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)

    class Bomb:
        def __reduce__(self):
            return (_explode, ())

    payload = pickle.dumps(Bomb())
    (root / "pickle").mkdir()
    with gzip.open(root / "pickle" / "KuroV2_grid_dict.gz", "wb") as fh:
        fh.write(payload)
    (root / "KuroV2_grid_dict_test_0_100.gz").write_bytes(gzip.compress(payload))
    (root / "stats.pkl").write_bytes(payload)
    (root / "data" / str(TRAIN) / "grid_dict.pkl").write_bytes(payload)

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    ds = KuroSiwo(root, split=None)
    assert len(ds) == 8
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape[0] == 8


def _explode():
    raise AssertionError("a pickle was unpickled")


# ------------------------------------------------------------------------------------- errors


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_errors_name_what_is_missing_and_where(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(tmp_path / "nowhere")
    assert f"Kuro Siwo root {tmp_path / 'nowhere'} does not exist" in _one_line(err)

    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(tmp_path)
    assert f"has no data/ folder (expected {tmp_path / 'data'}" in _one_line(err)

    with pytest.raises(UserInputError) as err:
        KuroSiwo(fake_root, split="training")  # type: ignore[arg-type]
    assert not isinstance(err.value, DataLayoutError)
    assert "'training'" in _one_line(err) and "train, val, test" in _one_line(err)

    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)
    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(root, events=[999])
    assert "no tiles for events (activation ids 999)" in _one_line(err)

    folder = build_index(root)[0]["path"]
    tile = root / folder
    (next(tile.glob("MS1_IVV_*.tif"))).unlink()
    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(root, split="train")
    assert _one_line(err) == f"Kuro Siwo tile {tile} is missing MS1_IVV_*.tif"
    # A broken tile of another event does not stop the other splits from loading.
    assert len(KuroSiwo(root, split="test")) == 2

    (tile / "info.json").unlink()
    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(root, split="train")
    assert _one_line(err) == f"Kuro Siwo tile {tile} is missing info.json"
    shutil.rmtree(tile)

    dem_tile = root / build_index(root, events=[VAL])[0]["path"]
    next(dem_tile.glob("MK0_DEM_*.tif")).unlink()
    assert len(KuroSiwo(root, split="val")) == 2
    with pytest.raises(DataLayoutError) as err:
        KuroSiwo(root, split="val", return_dem=True)
    assert f"Kuro Siwo tile {dem_tile} is missing MK0_DEM_*.tif" in _one_line(err)

    # A file removed after indexing is reported when the tile is read.
    ds = KuroSiwo(root, split="test")
    path = root / ds.records[0]["path"]
    victim = next(path.glob("MK0_MNA_*.tif"))
    victim.unlink()
    with pytest.raises(DataLayoutError) as err:
        ds[0]
    assert _one_line(err) == f"Kuro Siwo tile {path} is missing {victim.name}"


def test_unlabelled_area_and_stray_entries_are_skipped(fake_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(fake_root, root)
    (root / "data" / str(TRAIN) / "00" / "ab" / "ab12").mkdir(parents=True)
    (root / "data" / str(TRAIN) / "catalogue.gkpg").write_text("")
    (root / "data" / ".ipynb_checkpoints").mkdir()
    assert len(KuroSiwo(root, split="train")) == 4


def test_lonlat_of_web_mercator_centre() -> None:
    from rasterio.crs import CRS

    lon, lat = ks._lonlat(CRS.from_epsg(3857), 0.0, 0.0)
    assert (lon, lat) == (0.0, 0.0)
    lon, lat = ks._lonlat(CRS.from_epsg(3857), *fake._web_mercator(12.5, -41.9))
    assert lon == pytest.approx(12.5) and lat == pytest.approx(-41.9)
    lon, lat = ks._lonlat(CRS.from_epsg(32633), 500000.0, 0.0)
    assert lon == pytest.approx(15.0) and lat == pytest.approx(0.0, abs=1e-9)
    assert all(math.isnan(v) for v in ks._lonlat(None, 0.0, 0.0))
