"""Tests for the Copernicus-Bench adapter: tiny fake data in each torchgeo dataset's real layout.

The layouts follow torchgeo 0.8's ``tests/data/copernicus/*/data.py`` and dataset sources; the
flood_s1 tiles are written by the toolkit's own Kuro Siwo writer, which checks that the two agree.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import affine
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from thinkingearth.data.formats.copernicusbench import (
    IGNORE_INDEX,
    OLCI_RADIANCE_SCALE,
    TASKS,
    CopernicusBench,
)
from thinkingearth.data.formats.kurosiwo import write_kurosiwo_tile
from thinkingearth.data.sample import collate, to_days
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.sensors import get_sensor

SIZE = 8
SPLITS = ("train", "val", "test")
UTM = affine.Affine(10.0, 0.0, 392950.0, 0.0, -10.0, 3783700.0)  # EPSG:32632
DEG = affine.Affine(0.0027, 0.0, 142.5, 0.0, -0.0027, -30.25)  # EPSG:4326, ~300 m
DEG_100M = affine.Affine(0.0009, 0.0, 142.5, 0.0, -0.0009, -30.25)  # the 100 m label grids
LAEA = affine.Affine(1113.2, 0.0, 3307317.2, 0.0, -1113.2, 3575598.4)  # EPSG:3035

CLOUD_S2 = "ROI_00002__20200422T141729_20200422T142243_T19GDN"
CLOUD_S3 = (
    "S3A_OL_1_EFR____20200703T154217_20200703T154517_20200704T201053_0179_060_111_2160_LN1_O_"
    "NT_002_01_01.tif"
)
BEN_S1 = (
    "S1A_IW_GRDH_1SDV_20180420T063852/S1A_IW_GRDH_1SDV_20180420T063852_29UPU_77_6/"
    "S1A_IW_GRDH_1SDV_20180420T063852_29UPU_77_6_allbands.tif"
)
BEN_S2 = (
    "S2B_MSIL2A_20180421T114349_N9999_R123_T29UPU/S2B_MSIL2A_20180421T114349_N9999_R123_T29UPU_"
    "77_06/S2B_MSIL2A_20180421T114349_N9999_R123_T29UPU_77_06_allbands.tif"
)
BEN_LABELS = [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
LC100_PID = "0200599_-70.25_-55.25"
LC100_FILES = ("S3A_20190507T135736_20190507T135744.tif", "S3B_20190810T135525_20190810T135539.tif")
LC100_CODES = (0, 20, 30, 40, 50, 60, 70, 80, 90, 100, 111, 112, 113, 114, 115, 116, 121, 122,
               123, 124, 125, 126, 200)  # fmt: skip
BIOMASS_PID = "S30E140_ESACCI-BIOMASS-L4-AGB-MERGED-100m-2020-fv4.0_02_11"
BIOMASS_FILES = (
    "S3A_20200319T233546_20200319T233846.tif",
    "S3B_20200514T234457_20200514T234757.tif",
)
AQ_PID = "EEA_1kmgrid_2021_{}_avg_34_13"
AQ_SEASONS = (
    "2021-01-01_2021-04-01.tif",
    "2021-04-01_2021-07-01.tif",
    "2021-07-01_2021-10-01.tif",
    "2021-10-01_2021-12-31.tif",
)
DFC_FILE = "ROIs0000_test_dfc_0_p609.tif"
FLOOD_TILE = "e2eb30d2c5eb52669c5e6a9db8973835"
FLOOD_DATES = {"SL2": "2017-04-10", "SL1": "2017-04-22", "MS1": "2017-05-04"}


# ------------------------------------------------------------------------------ fake writers


def _tif(
    path: Path,
    data: np.ndarray,
    crs: str = "EPSG:4326",
    transform: affine.Affine = DEG,
) -> None:
    data = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _bands(count: int, dtype: str = "float32", size: int = SIZE) -> np.ndarray:
    """Band k (0-based) is filled with k + 1, so band order is checkable."""
    return np.stack([np.full((size, size), k + 1) for k in range(count)]).astype(dtype)


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_cloud_s2(root: Path) -> None:
    d = root / "cloud_s2"
    _tif(d / "s2_toa" / f"{CLOUD_S2}.tif", _bands(13, "uint16"), "EPSG:32632", UTM)
    mask = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 4).astype("uint8")
    _tif(d / "cloud" / f"{CLOUD_S2}.tif", mask, "EPSG:32632", UTM)
    for split in SPLITS:
        _lines(d / f"{split}.csv", [CLOUD_S2])


def write_cloud_s3(root: Path) -> None:
    d = root / "cloud_s3"
    _tif(d / "s3_olci" / CLOUD_S3, _bands(21))
    multi = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 6).astype("uint8")
    _tif(d / "cloud_multi" / CLOUD_S3, multi)
    _tif(d / "cloud_binary" / CLOUD_S3, (multi % 3).astype("uint8"))
    for split in SPLITS:
        _lines(d / f"{split}.csv", [CLOUD_S3])


def write_eurosat(root: Path, sensor: str) -> None:
    d = root / f"eurosat_{sensor}"
    data = _bands(2) if sensor == "s1" else _bands(13, "uint16")
    _tif(d / "all_imgs" / "Residential" / "Residential_2029.tif", data, "EPSG:32632", UTM)
    _tif(d / "all_imgs" / "Forest" / "Forest_17.tif", data, "EPSG:32632", UTM)
    _lines(d / "eurosat-train.txt", ["Residential_2029.jpg", "Forest_17.jpg"])
    for split in ("val", "test"):
        _lines(d / f"eurosat-{split}.txt", ["Forest_17.jpg"])


def write_bigearthnet(root: Path) -> None:
    d = root / "bigearthnet_s1s2"
    _tif(d / "BigEarthNet-S1-5%" / BEN_S1, _bands(2), "EPSG:32632", UTM)
    _tif(d / "BigEarthNet-S2-5%" / BEN_S2, _bands(12, "uint16"), "EPSG:32632", UTM)
    header = ",".join(str(i) for i in range(21))
    row = ",".join([BEN_S1, BEN_S2, *map(str, BEN_LABELS)])
    for split in SPLITS:
        _lines(d / f"multilabel-{split}.csv", [header, row])


def write_lc100(root: Path) -> None:
    d = root / "lc100_s3"
    for file in LC100_FILES:
        _tif(d / "s3_olci" / LC100_PID / file, _bands(21))
    mask = np.resize(np.array(LC100_CODES, dtype="uint8"), (3 * SIZE, 3 * SIZE))
    _tif(d / "lc100" / f"{LC100_PID}.tif", mask, transform=DEG_100M)
    labels = [1 if i in (2, 7, 22) else 0 for i in range(23)]
    for split in SPLITS:
        _lines(d / f"multilabel-{split}.csv", [",".join(str(i) for i in range(24))])
        with open(d / f"multilabel-{split}.csv", "a", encoding="utf-8") as f:
            f.write(",".join([LC100_PID, *map(str, labels)]) + "\n")
        _lines(d / f"static_fnames-{split}.csv", [f"{LC100_PID},{LC100_FILES[0]}"])


def write_dfc2020(root: Path) -> None:
    d = root / "dfc2020_s1s2"
    _tif(d / "s1" / DFC_FILE.replace("dfc", "s1"), _bands(2, "float64"), "EPSG:32632", UTM)
    _tif(d / "s2" / DFC_FILE.replace("dfc", "s2"), _bands(13, "uint16"), "EPSG:32632", UTM)
    mask = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 11).astype("int32")
    _tif(d / "dfc" / DFC_FILE, mask, "EPSG:32632", UTM)
    for split in SPLITS:
        _lines(d / f"dfc-{split}-new.csv", [DFC_FILE])


def write_flood(root: Path) -> None:
    d = root / "flood_s1"
    rng = np.random.default_rng(0)
    sar = {s: rng.uniform(0.01, 0.5, (2, SIZE, SIZE)).astype(np.float32) for s in FLOOD_DATES}
    mlu = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 4).astype(np.uint8)
    write_kurosiwo_tile(
        d,
        actid=1111013,
        aoi=1,
        tile=FLOOD_TILE,
        sar=sar,
        mlu=mlu,
        mna=np.ones((SIZE, SIZE), np.uint8),
        transform=affine.Affine(10.0, 0.0, -10003405.0, 0.0, -10.0, 4730925.0),
        dates=FLOOD_DATES,
    )
    info = json.loads((d / "data" / "1111013" / "01" / FLOOD_TILE / "info.json").read_text())
    grid = {FLOOD_TILE: {"path": f"1111013/01/{FLOOD_TILE}", "info": info}}
    for split in SPLITS:
        (d / f"grid_dict_{split}.json").write_text(json.dumps(grid), encoding="utf-8")


def write_biomass(root: Path) -> None:
    d = root / "biomass_s3"
    for file in BIOMASS_FILES:
        _tif(d / "s3_olci" / BIOMASS_PID / file, _bands(21))
    target = np.arange(9 * SIZE * SIZE, dtype="float32").reshape(3 * SIZE, 3 * SIZE)
    target[0, 0] = np.nan
    _tif(d / "biomass" / f"{BIOMASS_PID}.tif", target, transform=DEG_100M)
    for split in SPLITS:
        _lines(d / f"static_fnames-{split}.csv", [f"{BIOMASS_PID},{BIOMASS_FILES[1]}"])


def write_airquality(root: Path) -> None:
    for gas in ("no2", "o3"):
        d = root / "airquality_s5p" / gas
        pid = AQ_PID.format(gas)
        image = np.full((SIZE, SIZE), 5e-5, np.float32)
        _tif(d / "s5p_annual" / pid / "2021-01-01_2021-12-31.tif", image, "EPSG:3035", LAEA)
        for file in AQ_SEASONS:
            _tif(d / "s5p_seasonal" / pid / file, image, "EPSG:3035", LAEA)
        label = np.full((SIZE, SIZE), 20.0, np.float32)
        label[0, 0], label[0, 1] = -np.inf, -3.4e38  # fill values of the EEA grids
        _tif(d / "label_annual" / f"{pid}.tif", label, "EPSG:3035", LAEA)
        for split in SPLITS:
            _lines(d / f"{split}.csv", [pid])


WRITERS = (
    write_cloud_s2,
    write_cloud_s3,
    lambda root: write_eurosat(root, "s1"),
    lambda root: write_eurosat(root, "s2"),
    write_bigearthnet,
    write_lc100,
    write_dfc2020,
    write_flood,
    write_biomass,
    write_airquality,
)
#: Every task but lcz_s2 (HDF5 without coordinates: see test_lcz_s2_from_hdf5).
FAKED = tuple(name for name in TASKS if name != "lcz_s2")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("copernicusbench")
    for write in WRITERS:
        write(path)
    return path


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def _days(stamp: str, half_second: bool = True) -> float:
    """torchgeo's time of a ``YYYYmmddTHHMMSS`` name: the middle of that second, in days."""
    when = to_days(datetime.strptime(stamp, "%Y%m%dT%H%M%S"))
    return when + (0.5 / 86400.0 if half_second else 0.0)


#: task -> expected time in days (torchgeo: the middle of the date or date range in the name).
EXPECTED_TIME: dict[str, float] = {
    "cloud_s2": _days("20200422T141729"),
    "cloud_s3": _days("20200703T154217"),
    "bigearthnet_s1": _days("20180420T063852"),
    "bigearthnet_s2": _days("20180421T114349"),
    "lc100cls_s3": _days("20190507T135736"),
    "lc100seg_s3": _days("20190507T135736"),
    "biomass_s3": _days("20200514T234457"),
    # the whole of 2021: 2021-01-01T00:00 to 2021-12-31T23:59:59.999999
    "aq_no2_s5p": (to_days(datetime(2021, 1, 1)) + to_days(datetime(2022, 1, 1))) / 2,
    "aq_o3_s5p": (to_days(datetime(2021, 1, 1)) + to_days(datetime(2022, 1, 1))) / 2,
}
TIME_TOLERANCE = 1e-3  # days; torchgeo keeps seconds since 1970 as float32 (64 s steps)


# ------------------------------------------------------------------------------------- tests


def test_task_table() -> None:
    assert len(TASKS) == 15
    families = {get_sensor(t.sensor).kind for t in TASKS.values()}
    assert families == {"sar", "optical", "atmosphere"}
    for task in TASKS.values():
        assert get_sensor(task.sensor).name == task.sensor
        if task.kind in ("classification", "multilabel", "segmentation"):
            assert task.classes, task.name
        assert task.gsd > 0 and (task.modes or not task.mode_classes)
    assert set(OLCI_RADIANCE_SCALE) == set(get_sensor("sentinel-3-olci").band_names)


@pytest.mark.parametrize("name", FAKED)
def test_every_task_yields_samples(root: Path, name: str) -> None:
    task = TASKS[name]
    ds = CopernicusBench(name, root, split="train")  # type: ignore[arg-type]
    assert len(ds) >= 1 and ds.sensor == task.sensor
    sample = ds[0]
    image = sample["image"]
    assert image.dtype == torch.float32
    assert image.shape[-3] == len(sample["bands"]) == len(ds.bands)
    sensor = get_sensor(task.sensor)
    assert all(sensor.band(b).name == b for b in sample["bands"])  # registry names only
    assert sample["sensor"] == task.sensor and sample["task"] == name
    assert sample["gsd"] == task.gsd
    # Sentinel-1 says its units: dB as EuroSAT-SAR, BigEarthNet v2 and SEN12MS store it,
    # linear sigma0 as Kuro Siwo does; other sensors carry none.
    expected_units = {"eurosat_s1": "db", "bigearthnet_s1": "db", "dfc2020_s1": "db"}
    expected_units["flood_s1"] = "linear"
    assert sample.get("units") == expected_units.get(name), name
    if task.kind == "classification":
        assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0
    elif task.kind == "multilabel":
        label = sample["label"]
        assert label.dtype == torch.int64 and label.shape == (len(ds.classes),)
    elif task.kind == "segmentation":
        mask = sample["mask"]
        assert mask.dtype == torch.int64 and mask.ndim == 2
        valid = mask[mask != ds.ignore_index] if ds.ignore_index is not None else mask
        assert int(valid.min()) >= 0 and int(valid.max()) < len(ds.classes)
    else:
        assert sample["target"].dtype == torch.float32 and sample["target"].ndim == 2
    assert not math.isnan(sample["lon"]) and not math.isnan(sample["lat"])
    time = sample["time"]
    if name in EXPECTED_TIME:
        assert time == pytest.approx(EXPECTED_TIME[name], abs=TIME_TOLERANCE)
    elif name == "flood_s1":
        assert time.dtype == torch.float64 and time.shape == (2,)
    else:  # eurosat, dfc2020: no date in the file names
        assert math.isnan(time)
    batch = collate([sample, ds[0]])
    assert batch["image"].shape[0] == 2 and batch["lon"].dtype == torch.float64


def test_s1_tasks_in_db_are_in_the_suite_and_normalised_from_db(root: Path) -> None:
    from thinkingearth.bench.suites import get_suite
    from thinkingearth.data.transforms import Normaliser
    from thinkingearth.sensors import SSL4EO_S12_S1_DB_STATS
    from thinkingearth.tasks.training import NormalisedDataset

    names = {task.name for task in get_suite("copernicus-bench", data_root=root).tasks}
    assert {"eurosat_s1", "bigearthnet_s1", "dfc2020_s1", "flood_s1"} <= names
    raw = CopernicusBench("eurosat_s1", root)  # VV stored as 1 dB, VH as 2 dB
    image = NormalisedDataset(raw, Normaliser(), "train", cache=False)[0]["image"]
    for channel, (band, stored_db) in enumerate((("VV", 1.0), ("VH", 2.0))):
        mean, std = SSL4EO_S12_S1_DB_STATS[band]
        # dB taken as dB: not as linear sigma0 (which would be 10 log10(1) = 0 dB for VV)
        assert torch.allclose(image[channel], torch.tensor((stored_db - mean) / std), atol=1e-5)


def test_time_is_days_not_seconds(root: Path) -> None:
    sample = CopernicusBench("cloud_s2", root)[0]
    assert 18000 < sample["time"] < 19000  # 2020 in days since 1970 (seconds would be ~1.6e9)
    flood = CopernicusBench("flood_s1", root, mode=2)[0]
    expected = [to_days(datetime.fromisoformat(FLOOD_DATES[s])) + 0.5 for s in FLOOD_DATES]
    assert flood["time"].tolist() == pytest.approx(expected, abs=TIME_TOLERANCE)
    assert flood["image"].shape == (3, 2, SIZE, SIZE)  # SL2, SL1, MS1 x VV, VH


def test_band_names_order_and_selection(root: Path) -> None:
    s2 = CopernicusBench("eurosat_s2", root)[0]
    assert s2["bands"][-1] == "B8A" and s2["image"][-1, 0, 0] == 13  # stored last, read last
    picked = CopernicusBench("eurosat_s2", root, bands=("nir08", "red", "B01"))
    assert picked.bands == ("B8A", "B04", "B01")
    assert picked[0]["image"][:, 0, 0].tolist() == [13.0, 4.0, 1.0]
    olci = CopernicusBench("cloud_s3", root, bands=("Oa21", "Oa08_reflectance"))
    assert olci.bands == ("Oa21", "Oa08") and olci[0]["image"][:, 0, 0].tolist() == [21.0, 8.0]
    assert CopernicusBench("aq_o3_s5p", root).bands == ("O3",)
    assert CopernicusBench("dfc2020_s1", root).bands == ("VV", "VH")
    assert len(CopernicusBench("bigearthnet_s2", root).bands) == 12
    with pytest.raises(UnknownBandError) as err:
        CopernicusBench("aq_no2_s5p", root, bands=("O3",))  # a registry band the task lacks
    assert _one_line(err) == "Copernicus-Bench aq_no2_s5p has no band O3; expected some of: NO2"
    with pytest.raises(UnknownBandError):
        CopernicusBench("bigearthnet_s2", root, bands=("B10",))  # L2A: no B10 at all


def test_labels_and_masks(root: Path) -> None:
    eurosat = CopernicusBench("eurosat_s1", root)
    assert [int(eurosat[i]["label"]) for i in range(2)] == [
        eurosat.classes.index("Residential"),
        eurosat.classes.index("Forest"),
    ]
    ben = CopernicusBench("bigearthnet_s1", root)[0]
    assert ben["label"].tolist() == BEN_LABELS
    lc100 = CopernicusBench("lc100cls_s3", root)[0]
    assert lc100["label"].nonzero().flatten().tolist() == [2, 7, 22]
    seg = CopernicusBench("lc100seg_s3", root)[0]
    assert seg["mask"].shape == (3 * SIZE, 3 * SIZE)  # the 100 m LC100 grid, 3x the image
    assert seg["mask"].flatten()[:23].tolist() == list(range(23))  # torchgeo's class_map


def test_benchmark_remapping_and_raw_labels(root: Path) -> None:
    raw = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 6
    multi = CopernicusBench("cloud_s3", root)
    assert multi.ignore_index == IGNORE_INDEX and len(multi.classes) == 5
    mask = multi[0]["mask"].numpy()
    np.testing.assert_array_equal(mask, np.where(raw == 0, IGNORE_INDEX, raw - 1))
    binary = CopernicusBench("cloud_s3", root, mode="binary")
    assert binary.classes == ("Clear", "Cloud")
    np.testing.assert_array_equal(
        binary[0]["mask"].numpy(), np.where(raw % 3 == 0, IGNORE_INDEX, raw % 3 - 1)
    )
    untouched = CopernicusBench("cloud_s3", root, raw_labels=True)
    assert untouched.ignore_index is None and untouched.classes[0] == "Invalid"
    np.testing.assert_array_equal(untouched[0]["mask"].numpy(), raw)
    raw_binary = CopernicusBench("cloud_s3", root, mode="binary", raw_labels=True)
    assert raw_binary.classes == ("Invalid", "Clear", "Cloud")

    dfc = CopernicusBench("dfc2020_s2", root)
    codes = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 11
    lut = {0: 255, 1: 0, 2: 1, 3: 255, 4: 2, 5: 3, 6: 4, 7: 5, 8: 255, 9: 6, 10: 7}
    np.testing.assert_array_equal(dfc[0]["mask"].numpy(), np.vectorize(lut.get)(codes))
    assert dfc.classes[0] == "Forest" and len(dfc.classes) == 8

    flood = CopernicusBench("flood_s1", root)
    assert flood.ignore_index == 3 and flood.classes[2] == "Floods"
    np.testing.assert_array_equal(
        flood[0]["mask"].numpy(), np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 4
    )


def test_regression_targets_and_modes(root: Path) -> None:
    biomass = CopernicusBench("biomass_s3", root)[0]
    target = biomass["target"]
    assert target.shape == (3 * SIZE, 3 * SIZE) and math.isnan(target[0, 0])
    assert float(target[0, 1]) == 1.0
    series = CopernicusBench("lc100cls_s3", root, mode="time-series")[0]
    assert series["image"].shape == (2, 21, SIZE, SIZE)
    assert series["time"].shape == (2,) and series["time"].dtype == torch.float64
    assert series["time"][0] == pytest.approx(_days("20190507T135736"), abs=TIME_TOLERANCE)
    assert series["time"][1] == pytest.approx(_days("20190810T135525"), abs=TIME_TOLERANCE)
    aq = CopernicusBench("aq_no2_s5p", root, mode="seasonal")[0]
    assert aq["image"].shape == (4, 1, SIZE, SIZE) and aq["time"].shape == (4,)
    spring = (to_days(datetime(2021, 4, 1)) + to_days(datetime(2021, 7, 2))) / 2
    assert float(aq["time"][1]) == pytest.approx(spring, abs=TIME_TOLERANCE)
    annual = CopernicusBench("aq_o3_s5p", root)[0]["target"]
    assert math.isnan(annual[0, 0]) and math.isnan(annual[0, 1])  # -inf and -3.4e38 fills
    assert int(annual.isnan().sum()) == 2 and float(annual[1, 1]) == 20.0


def test_benchmark_root_with_hub_folders(root: Path, tmp_path: Path) -> None:
    hub = tmp_path / "copernicusbench"
    shutil.copytree(root / "cloud_s2", hub / "l1_cloud_s2" / "cloud_s2")
    shutil.copytree(root / "airquality_s5p", hub / "l3_airquality_s5p" / "airquality_s5p")
    ds = CopernicusBench("cloud_s2", hub, split="val")
    assert ds.root == hub / "l1_cloud_s2" and len(ds) == 1
    assert CopernicusBench("aq_o3_s5p", hub).root == hub / "l3_airquality_s5p"


def test_dataloader_and_iteration(root: Path) -> None:
    ds = CopernicusBench("eurosat_s2", root, transforms=lambda s: {**s, "image": s["image"] / 2})
    assert len(list(ds)) == 2  # IndexError ends plain iteration
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert batch["image"].shape == (2, 13, SIZE, SIZE) and float(batch["image"].max()) == 6.5
    assert batch["time"].isnan().all() and batch["label"].dtype == torch.int64
    with pytest.raises(IndexError):
        ds[2]


def test_argument_errors(root: Path) -> None:
    with pytest.raises(UserInputError) as err:
        CopernicusBench("clouds2", root)  # type: ignore[arg-type]
    assert "unknown Copernicus-Bench task 'clouds2'" in _one_line(err)
    assert "cloud_s2" in _one_line(err) and not isinstance(err.value, DataLayoutError)
    with pytest.raises(UserInputError, match="train, val, test"):
        CopernicusBench("cloud_s2", root, split="validation")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match=re.escape("choose one of 1, 2")):
        CopernicusBench("flood_s1", root, mode=3)
    with pytest.raises(UserInputError, match="has no mode"):
        CopernicusBench("cloud_s2", root, mode="static")


def write_lcz(root: Path, labels: tuple[int, ...] = (16, 0, 9)) -> None:
    """torchgeo's CopernicusBenchLCZS2 layout: ``lcz_{split}.h5`` in the root, as So2Sat LCZ42
    stores it: ``sen2`` float64 ``[N, H, W, 10]`` (channels last) and ``label`` float64 one-hot
    ``[N, 17]``. Band ``c`` of sample ``i`` holds ``i + (c + 1) / 100``."""
    import h5py

    n = len(labels)
    bands = (np.arange(10) + 1) / 100.0
    sen2 = np.arange(n, dtype=np.float64)[:, None, None, None] + bands
    sen2 = np.broadcast_to(sen2, (n, SIZE, SIZE, 10)).copy()
    onehot = np.eye(17, dtype=np.float64)[list(labels)]
    for split in SPLITS:
        with h5py.File(root / f"lcz_{split}.h5", "w") as f:
            f.create_dataset("sen2", data=sen2)
            f.create_dataset("label", data=onehot)


def test_lcz_s2_from_hdf5(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    write_lcz(tmp_path)
    ds = CopernicusBench("lcz_s2", tmp_path, split="val")
    assert len(ds) == 3 and ds.sensor == "sentinel-2-l1c" and ds.classes == TASKS["lcz_s2"].classes
    registry = get_sensor("sentinel-2-l1c")
    expected_bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert ds.bands == expected_bands
    assert all(registry.band(b).name == b for b in ds.bands)
    sample = ds[1]
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (10, SIZE, SIZE)  # channels first
    assert sample["bands"] == expected_bands
    np.testing.assert_allclose(image[:, 3, 5].numpy(), 1 + (np.arange(10) + 1) / 100, rtol=1e-6)
    labels = [int(ds[i]["label"]) for i in range(len(ds))]
    assert labels == [16, 0, 9] and all(0 <= k < len(ds.classes) for k in labels)
    assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0
    assert ds.classes[16] == "Water" and sample["gsd"] == 10.0 and sample["task"] == "lcz_s2"
    for key in ("lon", "lat", "time"):  # So2Sat patches carry no coordinates or dates
        assert math.isnan(sample[key])
    picked = CopernicusBench("lcz_s2", tmp_path, bands=("nir08", "red"))
    assert picked.bands == ("B8A", "B04")
    assert picked[0]["image"][:, 0, 0].tolist() == pytest.approx([0.08, 0.03])
    with pytest.raises(UnknownBandError, match="has no band B01"):
        CopernicusBench("lcz_s2", tmp_path, bands=("B01",))
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 10, SIZE, SIZE) and batch["lon"].isnan().all()

    hub = tmp_path / "bench"
    shutil.copytree(tmp_path, hub / "l3_lcz_s2", ignore=shutil.ignore_patterns("bench"))
    assert CopernicusBench("lcz_s2", hub, split="test").root == hub / "l3_lcz_s2"


def test_lcz_missing_file_or_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataLayoutError, match=re.escape("split file lcz_train.h5 not found")):
        CopernicusBench("lcz_s2", tmp_path)
    (tmp_path / "lcz_train.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataLayoutError) as err:
        CopernicusBench("lcz_s2", tmp_path)
    assert f"cannot read {tmp_path / 'lcz_train.h5'}:" in _one_line(err)

    real_find_spec = importlib.util.find_spec

    def no_h5py(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "h5py" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", no_h5py)
    with pytest.raises(UserInputError) as err:
        CopernicusBench("lcz_s2", tmp_path)
    assert "needs the Python package h5py: pip install h5py" in _one_line(err)


def test_layout_errors_name_the_file_and_where(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError) as err:
        CopernicusBench("cloud_s2", tmp_path / "nowhere")
    assert _one_line(err) == (
        f"Copernicus-Bench root {tmp_path / 'nowhere'} does not exist or is not a folder"
    )
    with pytest.raises(DataLayoutError) as err:
        CopernicusBench("biomass_s3", tmp_path, split="test")
    expected = tmp_path / "biomass_s3" / "static_fnames-test.csv"
    assert _one_line(err) == (
        "Copernicus-Bench biomass_s3: split file biomass_s3/static_fnames-test.csv not found in "
        f"{tmp_path} (expected {expected}; extract biomass_s3.zip there)"
    )

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "cloud_s3" / "cloud_binary")
    assert len(CopernicusBench("cloud_s3", copy)) == 1  # multi mode does not need it
    with pytest.raises(DataLayoutError) as err:
        CopernicusBench("cloud_s3", copy, mode="binary")
    assert _one_line(err) == (
        f"Copernicus-Bench cloud_s3: folder cloud_binary/ not found in {copy / 'cloud_s3'}"
    )

    (copy / "lc100_s3" / "static_fnames-val.csv").unlink()
    assert len(CopernicusBench("lc100cls_s3", copy, split="val", mode="time-series")) == 1
    with pytest.raises(DataLayoutError, match=re.escape("file static_fnames-val.csv not found")):
        CopernicusBench("lc100seg_s3", copy, split="val")

    (copy / "flood_s1" / "grid_dict_val.json").write_text("{not json")
    with pytest.raises(DataLayoutError) as err:
        CopernicusBench("flood_s1", copy, split="val")
    assert f"cannot read {copy / 'flood_s1' / 'grid_dict_val.json'}:" in _one_line(err)

    victim = copy / "cloud_s2" / "s2_toa" / f"{CLOUD_S2}.tif"
    victim.unlink()
    ds = CopernicusBench("cloud_s2", copy)
    with pytest.raises(DataLayoutError) as err:
        ds[0]
    assert _one_line(err).startswith("Copernicus-Bench cloud_s2 sample 0:")
    assert str(victim) in _one_line(err)

    tile = copy / "flood_s1" / "data" / "1111013" / "01" / FLOOD_TILE
    next(tile.glob("SL1_IVH_*.tif")).unlink()
    flood = CopernicusBench("flood_s1", copy)
    with pytest.raises(DataLayoutError) as err:
        flood[0]
    assert f"(tile {tile} needs SL1/MS1" in _one_line(err)


def test_never_downloads_or_extracts(root: Path, tmp_path: Path, monkeypatch: Any) -> None:
    import torchgeo.datasets.copernicus.base as base

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torchgeo was asked to download or extract")

    for name in ("download_and_extract_archive", "extract_archive"):
        monkeypatch.setattr(base, name, refuse)
    (tmp_path / "eurosat_s1.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    with pytest.raises(DataLayoutError, match=re.escape("extract eurosat_s1.zip there")):
        CopernicusBench("eurosat_s1", tmp_path)
    assert not (tmp_path / "eurosat_s1").exists()
    assert len(CopernicusBench("eurosat_s1", root)) == 2
