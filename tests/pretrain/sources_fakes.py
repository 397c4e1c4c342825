"""Tiny fake data in the real on-disk layouts of the pretraining sources (written by the tests).

* :func:`geotiff`: a GeoTIFF with optional nodata, band descriptions and date tag;
* :func:`bigearthnet_v1`: BigEarthNet v1 ``S2/`` and ``S1/`` patch folders (the writer of
  ``tests/data/bigearthnet/data.py``); each S1 JSON names its S2 patch;
* :func:`bigearthnet_v2`: reBEN's ``metadata.parquet`` and ``BigEarthNet-S2``/``-S1`` trees;
* :func:`kurosiwo`: labelled tiles (``tests/data/kurosiwo/data.py``) plus unlabelled ``00``
  tiles (SAR files only, no masks, no info.json);
* :func:`ssl4eo`: torchgeo's SSL4EO-S12 layout (as torchgeo's own test data writes it);
* :func:`copernicus_pretrain`: Copernicus-Pretrain WebDataset shards (as torchgeo's test data).
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import affine
import numpy as np
import rasterio
import torch
from rasterio.crs import CRS

from thinkingearth.data.formats.bigearthnet import S1_BANDS, S2_BANDS, write_bigearthnet_v1_patch

_DATA = Path(__file__).resolve().parents[1] / "data"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def geotiff(
    path: Path,
    array: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform: affine.Affine | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    datetime_tag: str | None = None,
) -> Path:
    """Write ``array`` ``[C, H, W]`` as a GeoTIFF (10 m UTM 33N pixels by default)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": array.dtype.name,
        "transform": transform or affine.Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 5300000.0),
    }
    if crs is not None:
        profile["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array)
        for i, name in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, name)
        if datetime_tag is not None:
            ds.update_tags(TIFFTAG_DATETIME=datetime_tag)
    return path


def bigearthnet_v1(root: Path, n_s2: int = 5, n_s1: int = 4, size: int = 36) -> list[dict]:
    """``root/S2`` and ``root/S1`` patch folders; S1 patch ``i`` covers S2 patch ``i``."""
    fake = _load("_fake_bigearthnet_sources", _DATA / "bigearthnet" / "data.py")
    s2 = fake.make_fake_bigearthnet_v1(root / "S2", n=n_s2, sensor="s2", size=size)
    fake.make_fake_bigearthnet_v1(root / "S1", n=n_s1, sensor="s1", size=size)
    for name in ("train.csv", "val.csv", "test.csv"):  # splits of the S2 names, in root
        (root / "S2" / name).rename(root / name)
        (root / "S1" / name).unlink()
    return s2


def bigearthnet_v2(root: Path, size: int = 12) -> list[dict[str, Any]]:
    """A reBEN tree of 3 S1/S2 pairs with ``metadata.parquet`` (19-class labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = []
    specs = [
        ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57", "train", ["Arable land"]),
        ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58", "train", ["Marine waters"]),
        ("S2B_MSIL2A_20180525T094029_N9999_R036_T35VLC_01_02", "test", ["Urban fabric"]),
    ]
    res = {"B01": 60, "B09": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
    for i, (patch_id, split, labels) in enumerate(specs):
        s1_name = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_{39 + i}"
        transform = affine.Affine(10, 0, 400000 + 10 * size * i, 0, -10, 5300000)
        bands = {
            b: rng.integers(1, 10000, (size * 10 // res.get(b, 10),) * 2, dtype=np.uint16)
            for b in S2_BANDS
        }
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0],
            patch_id,
            bands=bands,
            labels=[],
            transform=transform,
            crs="EPSG:32633",
            acquisition_date="2017-06-13 10:10:31",
        )
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0],
            s1_name,
            bands={b: rng.uniform(-25, -5, (size, size)).astype(np.float32) for b in S1_BANDS},
            labels=[],
            transform=transform,
            crs="EPSG:32633",
            acquisition_date="2017-06-13 16:50:43",
        )
        rows.append(
            {
                "patch_id": patch_id,
                "labels": labels,
                "split": split,
                "country": "Austria",
                "s1_name": s1_name,
                "s2v1_name": "",
                "contains_seasonal_snow": False,
                "contains_cloud_or_shadow": False,
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), root / "metadata.parquet")
    return rows


def kurosiwo(root: Path, size: int = 32, unlabelled: int = 2) -> dict[str, Any]:
    """Labelled tiles of event 130 (train) and 321 (test), plus unlabelled tiles of event 130.

    The unlabelled tiles hold the six SAR files only; the second one lacks SL2 (an acquisition
    that was not there).
    """
    fake = _load("_fake_kurosiwo_sources", _DATA / "kurosiwo" / "data.py")
    labelled = fake.make_fake_kurosiwo(root, n_tiles_per_event=1, events=(130, 321), size=size)
    rng = np.random.default_rng(1)
    folders = []
    for t in range(unlabelled):
        folder = root / "data" / "130" / "00" / f"{t:032x}"
        dates = {"SL2": "20191208", "SL1": "20191220", "MS1": "20200101"}
        for scene, day in dates.items():
            if t == 1 and scene == "SL2":
                continue
            for pol in ("IVV", "IVH"):
                sigma0 = rng.lognormal(-2.5, 0.6, (size, size)).astype(np.float32)
                sigma0[: size // 4] = 0.0  # nodata rows
                geotiff(
                    folder / f"{scene}_{pol}_130_00_{day}.tif",
                    sigma0,
                    crs="EPSG:3857",
                    transform=affine.Affine(
                        10.0, 0, -6679169.0 + 10 * size * t, 0, -10.0, -3503549.0
                    ),
                    nodata=0.0,
                )
        folders.append(folder)
    (root / "data" / "130" / "00" / ".unfinished").mkdir()  # a writer's hidden folder
    return {"labelled": labelled, "unlabelled": folders}


#: SSL4EO-S12 acquisition folders of two locations (torchgeo's test data names).
SSL4EO_S1 = {
    "0000000": [
        "S1A_IW_GRDH_1SDV_20200329T001515_20200329T001540_031883_03AE27_9BAF",
        "S1B_IW_GRDH_1SDV_20200627T001449_20200627T001514_022212_02A27E_2A09",
        "S1B_IW_GRDH_1SDV_20200928T120105_20200928T120130_023575_02CCB0_F035",
        "S1A_IW_GRDH_1SDV_20201230T001523_20201230T001548_035908_04349D_C91E",
    ],
    "0000001": [
        "S1B_IW_GRDH_1SDV_20201101T091054_20201101T091119_024069_02DC0F_F189",
        "S1B_IW_GRDH_1SDV_20210205T091050_20210205T091115_025469_0308CB_AA25",
        "S1B_IW_GRDH_1SDV_20210430T091051_20210430T091116_026694_03303D_69B6",
        "S1B_IW_GRDH_1SDV_20210804T091057_20210804T091122_028094_0359FE_6D9D",
    ],
}
SSL4EO_S2 = {
    "0000000": [
        "20200323T162931_20200323T163750_T15QXA",
        "20200621T162901_20200621T164746_T15QXA",
        "20200924T162929_20200924T164434_T15QXA",
        "20201228T163711_20201228T164519_T15QXA",
    ],
    "0000001": [
        "20201104T135121_20201104T135117_T21KXT",
        "20210123T135111_20210123T135113_T21KXT",
        "20210508T135109_20210508T135519_T21KXT",
        "20210811T135121_20210811T135115_T21KXT",
    ],
}
_S2C = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def ssl4eo(root: Path, size: int = 36) -> None:
    """``root/{s1,s2c,s2a}/<location>/<acquisition>/<band>.tif`` in EPSG:4326 (torchgeo's test).

    Each acquisition's pixels are its season number (1-4) plus a band offset, so a test can
    tell which season a sample comes from.
    """
    rng = np.random.default_rng(0)
    transform = affine.Affine(9.22e-05, 0.0, -91.8457, 0.0, -8.80e-05, 18.5881)
    layouts = {"s1": (SSL4EO_S1, ("VH", "VV")), "s2c": (SSL4EO_S2, _S2C)}
    layouts["s2a"] = (SSL4EO_S2, tuple(b for b in _S2C if b != "B10"))
    for split, (locations, bands) in layouts.items():
        for location, folders in locations.items():
            for season, name in enumerate(folders, start=1):
                for band in bands:
                    coarse = band in ("B1", "B9", "B10")
                    side = size // 6 if coarse else size
                    if split == "s1":  # dB, the season in the tens
                        values = -10.0 * season - rng.uniform(0, 1, (side, side))
                        array = values.astype(np.float32)
                    else:
                        array = np.full((side, side), 1000 * season, dtype=np.uint16)
                    t = transform if not coarse else transform @ affine.Affine.scale(6)
                    geotiff(
                        root / split / location / name / f"{band}.tif",
                        array,
                        crs="EPSG:4326",
                        transform=t,
                    )


def copernicus_pretrain(
    root: Path, grids: int = 3, corrupt: bool = False, side: int = 64
) -> list[str]:
    """Copernicus-Pretrain shards: ``grids`` cells in ``example-000000.tar`` (torchgeo's test).

    Cell ``g`` has 2 local patches x 2 times of S1/S2 (``side`` px; the archive's are 264) whose
    pixels are ``1000 + 100 * patch + time rank`` (S2; S1 in dB, ``-(10 + 100 * patch + time
    rank) / 10``), 2 times of S3/S5P and a 96 px DEM (the archive's: 960); the last cell has no
    S1. With ``corrupt``, ``example-000001.tar`` is not a tar.
    """
    root.mkdir(parents=True, exist_ok=True)
    keys = []
    with tarfile.open(root / "example-000000.tar", "w") as tar:
        for g in range(grids):
            key = f"07721{g:02d}"
            grid = f"{key}_{-96.0 + g:.2f}_44.00"
            local = [
                f"08658{g}{p}_{-95.9 + g + 0.01 * p:.2f}_{43.96 + 0.01 * p:.2f}" for p in range(2)
            ]
            dates = ["20221121", "20220322"]  # newest first: the reader sorts by time
            s2 = torch.zeros(2, 2, 13, side, side, dtype=torch.int16)
            s1 = torch.zeros(2, 2, 2, side, side)
            for p in range(2):
                for t, rank in enumerate((1, 0)):
                    s2[p, t] = 1000 + 100 * p + rank
                    s1[p, t] = -(10.0 + 100 * p + rank) / 10.0
            data = {
                "s2_toa.pth": s2,
                "s3_olci.pth": torch.rand(2, 21, 96, 96),
                "s5p_co.pth": torch.rand(2, 1, 28, 28),
                "s5p_no2.pth": torch.rand(2, 1, 28, 28),
                "s5p_o3.pth": torch.rand(2, 1, 28, 28),
                "s5p_so2.pth": torch.rand(2, 1, 28, 28),
                "dem.pth": torch.rand(96, 96) * 100,
            }
            meta: dict[str, Any] = {
                "s2_toa": [[f"{grid}/{loc}/{d}" for d in dates] for loc in local],
                "s3_olci": [f"{grid}/20210127", f"{grid}/20210227"],
                "s5p_co": [f"{grid}/20211201", f"{grid}/20211101"],
                "s5p_no2": [f"{grid}/20211201", f"{grid}/20211101"],
                "s5p_o3": [f"{grid}/20211201", f"{grid}/20211101"],
                "s5p_so2": [f"{grid}/20211201", f"{grid}/20211101"],
                "dem": [grid],
            }
            if g < grids - 1:
                data["s1_grd.pth"] = s1
                meta["s1_grd"] = [[f"{grid}/{loc}/{d}" for d in dates] for loc in local]
            for ext, tensor in data.items():
                buffer = io.BytesIO()
                torch.save(tensor, buffer)
                _add(tar, f"{key}.{ext}", buffer.getvalue())
            _add(tar, f"{key}.json", json.dumps(meta).encode())
            keys.append(key)
    if corrupt:
        (root / "example-000001.tar").write_bytes(b"this is not a tar file" * 40)
    return keys


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
