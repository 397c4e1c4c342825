"""Tests for the BigEarthNet writer and reader (fake data, plus the real patches in shared/)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import affine
import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

import thinkingearth.data.formats.bigearthnet as ben
from thinkingearth.data.formats.bigearthnet import (
    CLASS_43_TO_19,
    CLASSES_19,
    CLASSES_43,
    S1_BANDS,
    S2_BANDS,
    BigEarthNet,
    labels_to_multi_hot,
    write_bigearthnet_v1_patch,
)
from thinkingearth.data.sample import collate, to_days
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError

_spec = importlib.util.spec_from_file_location(
    "_fake_bigearthnet", Path(__file__).parent / "data" / "bigearthnet" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "bigearthnet-v1"


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def s2_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("ben_s2")
    return root, fake.make_fake_bigearthnet_v1(root, n=6, sensor="s2")


@pytest.fixture(scope="module")
def s1_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("ben_s1")
    return root, fake.make_fake_bigearthnet_v1(root, n=4, sensor="s1")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------ class tables


def test_class_tables() -> None:
    assert len(CLASSES_43) == len(set(CLASSES_43)) == 43
    assert len(CLASSES_19) == len(set(CLASSES_19)) == 19
    assert set(CLASS_43_TO_19) == set(CLASSES_43)
    assert set(CLASS_43_TO_19.values()) - {None} == set(CLASSES_19)
    dropped = sorted(k for k, v in CLASS_43_TO_19.items() if v is None)
    assert len(dropped) == 11
    assert {"Airports", "Bare rock", "Burnt areas", "Intertidal flats"} <= set(dropped)
    assert CLASS_43_TO_19["Transitional woodland/shrub"] == "Transitional woodland, shrub"
    assert CLASS_43_TO_19["Peatbogs"] == "Inland wetlands"
    assert CLASS_43_TO_19["Estuaries"] == "Marine waters"
    assert CLASS_43_TO_19["Rice fields"] == "Arable land"
    assert CLASS_43_TO_19["Olive groves"] == "Permanent crops"
    assert CLASS_43_TO_19["Sparsely vegetated areas"] == (
        "Natural grassland and sparsely vegetated areas"
    )


def test_labels_to_multi_hot() -> None:
    hot = labels_to_multi_hot(["Pastures", "Peatbogs", "Airports"], 19)
    assert hot.dtype == torch.int64 and hot.shape == (19,)
    assert hot.nonzero().flatten().tolist() == [4, 15]
    hot43 = labels_to_multi_hot(["Pastures", "Airports"], 43)
    assert hot43.nonzero().flatten().tolist() == [5, 17]
    with pytest.raises(UserInputError, match="Nope"):
        labels_to_multi_hot(["Nope"])


# ----------------------------------------------------------------------------------- writer


def test_writer_s2_layout_and_json(s2_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s2_root
    p = patches[0]
    folder = root / p["name"]
    assert sorted(f.name for f in folder.iterdir()) == sorted(
        [f"{p['name']}_{b}.tif" for b in S2_BANDS] + [f"{p['name']}_labels_metadata.json"]
    )
    meta = json.loads((folder / f"{p['name']}_labels_metadata.json").read_text())
    assert set(meta) == {"labels", "coordinates", "projection", "tile_source", "acquisition_date"}
    assert meta["labels"] == p["labels"]
    t = p["transform"]
    assert meta["coordinates"] == {"ulx": t.c, "uly": t.f, "lrx": t.c + 1200, "lry": t.f - 1200}
    assert meta["acquisition_date"] == p["acquisition_date"]
    assert "UTM zone 33N" in meta["projection"]
    for band, shape, res in (("B02", 120, 10), ("B05", 60, 20), ("B01", 20, 60)):
        with rasterio.open(folder / f"{p['name']}_{band}.tif") as ds:
            assert ds.shape == (shape, shape) and ds.dtypes[0] == "uint16"
            assert ds.transform == affine.Affine(res, 0, t.c, 0, -res, t.f)
            assert ds.crs.to_epsg() == 32633
    assert not [f for f in root.iterdir() if f.name.startswith(".")]


def test_writer_s1_json(s1_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s1_root
    p = patches[1]
    meta = json.loads((root / p["name"] / f"{p['name']}_labels_metadata.json").read_text())
    assert set(meta) == {
        "labels",
        "coordinates",
        "projection",
        "corresponding_s2_patch",
        "scene_source",
        "acquisition_time",
    }
    assert set(meta["coordinates"]) == {"ulx", "uly", "lrx", "lly"}
    assert meta["acquisition_time"] == p["acquisition_date"].replace(" ", "T")
    assert meta["corresponding_s2_patch"] == fake.patch_name(1, "s2")
    with rasterio.open(root / p["name"] / f"{p['name']}_VV.tif") as ds:
        assert ds.dtypes[0] == "float32" and ds.shape == (120, 120)


def _s2_bands(size: int = 12) -> dict[str, np.ndarray]:
    return {b: np.ones((size * 10 // ben._BAND_RES[b],) * 2, np.uint16) for b in S2_BANDS}


def _write(root: Path, name: str = "p", **kwargs: Any) -> Path:
    args: dict[str, Any] = {
        "bands": _s2_bands(),
        "labels": ["Pastures"],
        "transform": affine.Affine(10, 0, 500000, 0, -10, 5000000),
        "crs": "EPSG:32632",
        "acquisition_date": "2018-01-02 03:04:05",
    }
    args.update(kwargs)
    return write_bigearthnet_v1_patch(root, name, **args)


def test_writer_overwrite_is_atomic_replacement(tmp_path: Path) -> None:
    _write(tmp_path, labels=["Pastures"])
    with pytest.raises(UserInputError, match="already exists"):
        _write(tmp_path)
    folder = _write(tmp_path, labels=["Mixed forest"], overwrite=True)
    assert json.loads((folder / "p_labels_metadata.json").read_text())["labels"] == ["Mixed forest"]
    assert [f.name for f in tmp_path.iterdir()] == ["p"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bands": {"B02": np.ones((12, 12), np.uint16)}}, "needs all S2 bands"),
        ({"bands": {**_s2_bands(), "B05": np.ones((12, 12), np.uint16)}}, r"B05 \(20 m\)"),
        ({"bands": {**_s2_bands(), "B02": np.ones((12, 12), np.float32)}}, "integer DN"),
        ({"bands": {b: np.ones((10, 10), np.uint16) for b in S2_BANDS}}, "multiple of 6"),
        ({"labels": ["Pastures", "Moon dust"]}, "Moon dust"),
        ({"acquisition_date": "2018-01-02"}, "YYYY-MM-DD HH:MM:SS"),
        ({"crs": "EPSG:999999"}, "invalid CRS"),
        ({"extra_metadata": {"labels": []}}, "may not replace"),
    ],
)
def test_writer_errors(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UserInputError, match=match) as exc:
        _write(tmp_path, **kwargs)
    _one_line(exc)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- reader


def test_round_trip_s2(s2_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s2_root
    ds = BigEarthNet(root)
    assert len(ds) == 6 and ds.names == sorted(p["name"] for p in patches)
    by_name = {p["name"]: p for p in patches}
    for i in range(len(ds)):
        sample = ds[i]
        p = by_name[sample["name"]]
        image = sample["image"]
        assert image.shape == (12, 120, 120) and image.dtype == torch.float32
        assert sample["bands"] == S2_BANDS and sample["sensor"] == "sentinel-2-l2a"
        for band in ("B02", "B03", "B04", "B08"):
            expected = torch.from_numpy(p["bands"][band].astype(np.float32))
            assert torch.equal(image[S2_BANDS.index(band)], expected)
        for band in ("B01", "B05", "B12"):  # upsampled: same mean, within the value range
            channel = image[S2_BANDS.index(band)]
            source = p["bands"][band].astype(np.float64)
            assert channel.min() >= source.min() and channel.max() <= source.max()
            assert abs(channel.double().mean().item() - source.mean()) < 0.05 * source.mean()
        assert sample["label"].dtype == torch.int64 and sample["label"].shape == (19,)
        assert torch.equal(sample["label"], labels_to_multi_hot(p["labels"], 19))
        assert sample["crs"] == "EPSG:32633" and sample["gsd"] == 10.0
        assert sample["transform"] == tuple(p["transform"])[:6]
        expected_time = to_days(datetime.strptime(p["acquisition_date"], "%Y-%m-%d %H:%M:%S"))
        assert sample["time"] == pytest.approx(expected_time)
        assert 12.0 < sample["lon"] < 14.5 and 48.0 < sample["lat"] < 48.6


def test_labels_19_and_43(s2_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = s2_root
    ds19 = BigEarthNet(root, num_classes=19, bands=["B02"])
    ds43 = BigEarthNet(root, num_classes=43, bands=["B02"])
    # patch 0: Non-irrigated arable land + Pastures
    assert ds19[0]["label"].nonzero().flatten().tolist() == [2, 4]
    assert ds43[0]["label"].nonzero().flatten().tolist() == [11, 17]
    # patch 2: Airports + Bare rock -> nothing in the 19-class nomenclature
    i2 = ds19.names.index(fake.patch_name(2))
    assert ds19[i2]["label"].sum() == 0
    assert ds43[i2]["label"].nonzero().flatten().tolist() == [5, 30]
    # patch 3: two urban fabrics merge into one 19-class label; sea -> marine waters
    i3 = ds19.names.index(fake.patch_name(3))
    assert ds19[i3]["label"].nonzero().flatten().tolist() == [0, 18]
    assert ds19.classes == CLASSES_19 and ds43.classes == CLASSES_43


def test_bilinear_upsampling_is_pixel_aligned(tmp_path: Path) -> None:
    bands = _s2_bands(12)
    ramp = (100 + 10 * np.arange(6, dtype=np.uint16))[None, :].repeat(6, axis=0)
    bands["B05"] = ramp  # 20 m: 6x6, value linear in x
    _write(tmp_path, "ramp", bands=bands)
    image = BigEarthNet(tmp_path, bands=["B05", "B02"])[0]["image"]
    assert image.shape == (2, 12, 12)
    cols = np.arange(12)
    centres = (cols + 0.5) / 2 - 0.5  # 10 m pixel centres in 20 m pixel coordinates
    expected = 100 + 10 * np.clip(centres, 0, 5)
    np.testing.assert_allclose(image[0, 5].numpy(), expected, rtol=0, atol=1e-4)
    assert torch.equal(image[1], torch.ones(12, 12))


def test_band_subset_and_order(s2_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s2_root
    sample = BigEarthNet(root, bands=("B04", "B03", "B02"))[0]
    assert sample["bands"] == ("B04", "B03", "B02") and sample["image"].shape == (3, 120, 120)
    p = next(p for p in patches if p["name"] == sample["name"])
    assert torch.equal(sample["image"][0], torch.from_numpy(p["bands"]["B04"].astype(np.float32)))


def test_splits_from_csv(s2_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s2_root
    for split in ("train", "val", "test"):
        ds = BigEarthNet(root, split=split, bands=["B02"])
        assert ds.names == sorted(p["name"] for p in patches if p["split"] == split)
    assert len(BigEarthNet(root, split=None)) == 6


def test_split_csv_torchgeo_name_and_pairs(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    (root / "val.csv").unlink()
    (root / "bigearthnet-val.csv").write_text(f"{fake.patch_name(2)},S1A_whatever\n")
    assert BigEarthNet(root, split="val").names == [fake.patch_name(2)]


def test_snow_cloud_lists(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    (root / "patches_with_seasonal_snow.csv").write_text(f"{fake.patch_name(0)}\n")
    (root / "patches_with_cloud_and_shadow.csv").write_text(f"{fake.patch_name(5)}\nunrelated\n")
    assert len(BigEarthNet(root)) == 4
    assert fake.patch_name(0) not in BigEarthNet(root, split="train").names
    assert len(BigEarthNet(root, exclude_snow_cloud=False)) == 6


def test_s1_round_trip(s1_root: tuple[Path, list[dict[str, Any]]]) -> None:
    root, patches = s1_root
    ds = BigEarthNet(root, sensor="s1")
    assert len(ds) == 4
    sample = ds[1]
    p = next(p for p in patches if p["name"] == sample["name"])
    assert sample["image"].shape == (2, 120, 120) and sample["image"].dtype == torch.float32
    assert sample["bands"] == S1_BANDS and sample["sensor"] == "sentinel-1-grd"
    assert torch.equal(sample["image"][0], torch.from_numpy(p["bands"]["VV"]))
    assert torch.equal(sample["label"], labels_to_multi_hot(p["labels"]))
    expected_time = to_days(datetime.strptime(p["acquisition_date"], "%Y-%m-%d %H:%M:%S"))
    assert sample["time"] == pytest.approx(expected_time)
    assert BigEarthNet(root, sensor="s1", split="train").names == [
        fake.patch_name(0, "s1"),
        fake.patch_name(1, "s1"),
    ]


def test_s1_split_given_as_s2_names_or_pairs(tmp_path: Path, s1_root: tuple[Path, Any]) -> None:
    root = _copy(s1_root[0], tmp_path / "r")
    (root / "val.csv").write_text(f"{fake.patch_name(2, 's2')}\n")  # S2 name: via the JSON
    assert BigEarthNet(root, sensor="s1", split="val").names == [fake.patch_name(2, "s1")]
    (root / "test.csv").write_text(f"{fake.patch_name(3, 's2')},{fake.patch_name(3, 's1')}\n")
    assert BigEarthNet(root, sensor="s1", split="test").names == [fake.patch_name(3, "s1")]
    (root / "patches_with_seasonal_snow.csv").write_text(f"{fake.patch_name(0, 's2')}\n")
    assert fake.patch_name(0, "s1") not in BigEarthNet(root, sensor="s1").names


def test_archive_subfolders_for_both_sensors(
    tmp_path: Path, s2_root: tuple[Path, Any], s1_root: tuple[Path, Any]
) -> None:
    _copy(s2_root[0], tmp_path / "BigEarthNet-v1.0")
    _copy(s1_root[0], tmp_path / "BigEarthNet-S1-v1.0")
    shutil.copy(s2_root[0] / "train.csv", tmp_path / "train.csv")
    assert len(BigEarthNet(tmp_path)) == 6
    assert len(BigEarthNet(tmp_path, sensor="s1")) == 4
    assert len(BigEarthNet(tmp_path, split="train")) == 4


def test_mixed_folder_keeps_each_sensor(
    tmp_path: Path, s2_root: tuple[Path, Any], s1_root: tuple[Path, Any]
) -> None:
    root = _copy(s2_root[0], tmp_path / "mixed")
    for folder in s1_root[0].iterdir():
        if folder.is_dir():
            shutil.copytree(folder, root / folder.name)
    assert len(BigEarthNet(root)) == 6
    assert len(BigEarthNet(root, sensor="s1")) == 4


def test_dataloader_with_collate(s2_root: tuple[Path, Any]) -> None:
    ds = BigEarthNet(s2_root[0], split="train")
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 12, 120, 120)
    assert batch["label"].shape == (3, 19) and batch["label"].dtype == torch.int64
    assert batch["lon"].dtype == torch.float64 and batch["lon"].shape == (3,)
    assert batch["time"].shape == (3,) and not torch.isnan(batch["time"]).any()
    assert batch["gsd"].tolist() == [10.0] * 3
    assert batch["crs"] == ["EPSG:32633"] * 3 and len(batch["transform"]) == 3
    assert len(batch["name"]) == 3


def test_transforms_applied(s2_root: tuple[Path, Any]) -> None:
    def halve(sample: dict[str, Any]) -> dict[str, Any]:
        sample["image"] = sample["image"] / 2
        return sample

    plain = BigEarthNet(s2_root[0], bands=["B02"])[0]["image"]
    halved = BigEarthNet(s2_root[0], bands=["B02"], transforms=halve)[0]["image"]
    assert torch.equal(halved * 2, plain)


# ----------------------------------------------------------------------------------- errors


def test_error_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match="not found") as exc:
        BigEarthNet(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in _one_line(exc)


def test_error_no_patches(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(DataLayoutError, match="no BigEarthNet s2 patch folders") as exc:
        BigEarthNet(tmp_path)
    assert "_B02.tif" in _one_line(exc)


def test_error_missing_band_file(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    name = fake.patch_name(0)
    (root / name / f"{name}_B05.tif").unlink()
    ds = BigEarthNet(root)
    with pytest.raises(DataLayoutError) as exc:
        ds[0]
    message = _one_line(exc)
    assert f"{name}_B05.tif" in message and str(root / name) in message
    assert BigEarthNet(root, bands=["B02"])[0]["image"].shape == (1, 120, 120)


def test_error_missing_labels_json(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    name = fake.patch_name(1)
    (root / name / f"{name}_labels_metadata.json").unlink()
    ds = BigEarthNet(root)
    with pytest.raises(DataLayoutError) as exc:
        ds[ds.names.index(name)]
    message = _one_line(exc)
    assert f"{name}_labels_metadata.json" in message and str(root / name) in message


def test_error_unknown_label(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    name = fake.patch_name(0)
    path = root / name / f"{name}_labels_metadata.json"
    meta = json.loads(path.read_text())
    meta["labels"] = ["Pastures", "Glaciers and perpetual snow"]
    path.write_text(json.dumps(meta))
    with pytest.raises(DataLayoutError, match="Glaciers and perpetual snow") as exc:
        BigEarthNet(root)[0]
    assert str(path) in _one_line(exc)


def test_error_unknown_band(s2_root: tuple[Path, Any]) -> None:
    with pytest.raises(UnknownBandError, match="B10") as exc:
        BigEarthNet(s2_root[0], bands=["B02", "B10"])
    _one_line(exc)
    with pytest.raises(UnknownBandError, match="VV"):
        BigEarthNet(s2_root[0], bands=["VV"])


def test_error_missing_split_file(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    (root / "test.csv").unlink()
    with pytest.raises(DataLayoutError, match=r"test\.csv") as exc:
        BigEarthNet(root, split="test")
    assert str(root) in _one_line(exc)


def test_error_split_lists_absent_patch(tmp_path: Path, s2_root: tuple[Path, Any]) -> None:
    root = _copy(s2_root[0], tmp_path / "r")
    (root / "val.csv").write_text("S2A_MSIL2A_20170613T101031_99_99\n")
    with pytest.raises(DataLayoutError, match="S2A_MSIL2A_20170613T101031_99_99") as exc:
        BigEarthNet(root, split="val")
    _one_line(exc)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": 3}, "version"),
        ({"sensor": "s3"}, "sensor"),
        ({"num_classes": 10}, "num_classes"),
        ({"split": "validation"}, "split"),
        ({"bands": []}, "at least one band"),
        ({"version": 2, "num_classes": 43}, "19-class"),
    ],
)
def test_error_bad_arguments(s2_root: tuple[Path, Any], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UserInputError, match=match) as exc:
        BigEarthNet(s2_root[0], **kwargs)
    _one_line(exc)


# --------------------------------------------------------------------------------------- v2


def _make_v2(root: Path) -> list[dict[str, Any]]:
    """A tiny reBEN tree: BigEarthNet-S2/<tile>/<patch>/ and BigEarthNet-S1/<product>/<patch>/."""
    rows = []
    specs = [
        ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57", "train", ["Arable land"]),
        ("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58", "validation", ["Marine waters"]),
        (
            "S2B_MSIL2A_20180525T094029_N9999_R036_T35VLC_01_02",
            "test",
            ["Urban fabric", "Pastures"],
        ),
    ]
    for i, (patch_id, split, labels) in enumerate(specs):
        s1_name = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_{39 + i}"
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0],
            patch_id,
            bands=_s2_bands(12),
            labels=[],
            transform=affine.Affine(10, 0, 400000 + 120 * i, 0, -10, 5300000),
            crs="EPSG:32633",
            acquisition_date="2017-06-13 10:10:31",
        )
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0],
            s1_name,
            bands={b: np.full((12, 12), -10.0 - i, np.float32) for b in S1_BANDS},
            labels=[],
            transform=affine.Affine(10, 0, 400000 + 120 * i, 0, -10, 5300000),
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
    return rows


def _check_v2(root: Path) -> None:
    ds = BigEarthNet(root, version=2)
    assert len(ds) == 3
    sample = ds[0]
    assert sample["image"].shape == (12, 12, 12) and sample["label"].shape == (19,)
    assert sample["label"].nonzero().flatten().tolist() == [2]
    assert sample["time"] == pytest.approx(to_days(datetime(2017, 6, 13, 10, 10, 31)))
    assert 12.0 < sample["lon"] < 14.0 and 47.5 < sample["lat"] < 48.5
    val = BigEarthNet(root, version=2, split="val")
    assert val.names == ["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58"]
    assert val[0]["label"].nonzero().flatten().tolist() == [18]
    s1 = BigEarthNet(root, version=2, sensor="s1", split="test")
    sample = s1[0]
    assert sample["image"].shape == (2, 12, 12) and float(sample["image"][0, 0, 0]) == -12.0
    assert sample["label"].nonzero().flatten().tolist() == [0, 4]
    assert sample["time"] == pytest.approx(to_days(datetime(2017, 6, 13, 16, 50, 43)))


def test_v2_layout_with_metadata_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _make_v2(tmp_path)
    (tmp_path / "metadata.parquet").write_bytes(b"stub")
    monkeypatch.setattr(ben, "_read_parquet_rows", lambda path: [dict(r) for r in rows])
    _check_v2(tmp_path)
    rows[0]["contains_seasonal_snow"] = True
    assert len(BigEarthNet(tmp_path, version=2)) == 2
    assert len(BigEarthNet(tmp_path, version=2, exclude_snow_cloud=False)) == 3
    rows[1]["labels"] = ["Pastures", "Non-irrigated arable land"]  # a 43-class name in v2
    with pytest.raises(DataLayoutError, match="Non-irrigated arable land") as exc:
        BigEarthNet(tmp_path, version=2)
    _one_line(exc)


#: Column types of reBEN's metadata.parquet (BigEarthNet v2.0).
REBEN_SCHEMA = {
    "patch_id": "string",
    "labels": "list<string>",
    "split": "string",
    "country": "string",
    "s1_name": "string",
    "s2v1_name": "string",
    "contains_seasonal_snow": "bool",
    "contains_cloud_or_shadow": "bool",
}


def _write_parquet(rows: list[dict[str, Any]], path: Path, drop: str | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "list<string>": pa.list_(pa.string()), "bool": pa.bool_()}
    schema = pa.schema([(k, types[v]) for k, v in REBEN_SCHEMA.items() if k != drop])
    kept = [{k: v for k, v in row.items() if k != drop} for row in rows]
    pq.write_table(pa.Table.from_pylist(kept, schema=schema), path)


def test_v2_real_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = _make_v2(tmp_path)
    path = tmp_path / "metadata.parquet"
    _write_parquet(rows, path)
    assert pq.read_schema(path).names == list(REBEN_SCHEMA)
    _check_v2(tmp_path)
    rows[2]["contains_cloud_or_shadow"] = True
    _write_parquet(rows, path)
    assert BigEarthNet(tmp_path, version=2, split="test", exclude_snow_cloud=False).names == [
        rows[2]["patch_id"]
    ]
    with pytest.raises(DataLayoutError, match="no BigEarthNet v2 patches for split test"):
        BigEarthNet(tmp_path, version=2, split="test")
    _write_parquet(rows, path, drop="s1_name")
    assert len(BigEarthNet(tmp_path, version=2, exclude_snow_cloud=False)) == 3
    with pytest.raises(DataLayoutError, match="lacks the column s1_name") as exc:
        BigEarthNet(tmp_path, version=2, sensor="s1")
    _one_line(exc)


def test_v2_without_pyarrow_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_v2(tmp_path)
    (tmp_path / "metadata.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow... raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserInputError, match="pip install pyarrow") as exc:
        BigEarthNet(tmp_path, version=2)
    _one_line(exc)


def test_v2_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"metadata\.parquet") as exc:
        BigEarthNet(tmp_path, version=2)
    _one_line(exc)
    (tmp_path / "metadata.parquet").write_bytes(b"stub")
    with pytest.raises(DataLayoutError, match="BigEarthNet-S2/") as exc:
        BigEarthNet(tmp_path, version=2)
    _one_line(exc)


# -------------------------------------------------------------------------------- real data


def _real(sensor: str) -> Path:
    folder = REALDATA / sensor
    if not folder.is_dir():
        pytest.skip(f"real BigEarthNet patches not found at {folder} (shared/realdata is absent)")
    return folder


def test_real_s2_patches() -> None:
    root = _real("S2")
    ds = BigEarthNet(root)
    assert len(ds) == 11
    start, end = to_days(datetime(2017, 6, 1)), to_days(datetime(2018, 6, 1))
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (12, 120, 120) and sample["image"].dtype == torch.float32
        meta = json.loads(
            (root / sample["name"] / f"{sample['name']}_labels_metadata.json").read_text()
        )
        mapped = {CLASS_43_TO_19[n] for n in meta["labels"]} - {None}
        got = {CLASSES_19[k] for k in sample["label"].nonzero().flatten().tolist()}
        assert got == mapped
        assert -10.0 < sample["lon"] < 30.0 and 36.0 < sample["lat"] < 71.0
        assert start <= sample["time"] < end
        assert sample["crs"].startswith("EPSG:326")
        with rasterio.open(root / sample["name"] / f"{sample['name']}_B04.tif") as src:
            assert torch.equal(sample["image"][3], torch.from_numpy(src.read(1).astype(np.float32)))


def test_real_s2_spot_checks() -> None:
    root = _real("S2")
    ds = BigEarthNet(root)
    name = "S2A_MSIL2A_20170617T113321_4_55"  # Ireland (tile 29UPU): Pastures only
    sample = ds[ds.names.index(name)]
    labels = json.loads((root / name / f"{name}_labels_metadata.json").read_text())["labels"]
    assert labels == ["Pastures"]
    assert sample["label"].nonzero().flatten().tolist() == [CLASSES_19.index("Pastures")]
    assert -8.0 < sample["lon"] < -7.0 and 52.0 < sample["lat"] < 53.0
    assert sample["time"] == pytest.approx(to_days(datetime(2017, 6, 17, 11, 33, 21)))
    assert sample["transform"] == (10.0, 0.0, 604800.0, 0.0, -10.0, 5834040.0)
    name = "S2A_MSIL2A_20180510T94033_19_86"  # Finland (35WPN): conifers + peat bogs
    sample = BigEarthNet(root, num_classes=19)[ds.names.index(name)]
    assert sample["label"].nonzero().flatten().tolist() == [9, 15]
    assert 28.0 < sample["lon"] < 31.0 and 64.0 < sample["lat"] < 66.0
    name = "S2A_MSIL2A_20171221T112501_56_35"  # Portugal (29SND)
    sample = ds[ds.names.index(name)]
    assert -9.5 < sample["lon"] < -6.0 and 38.5 < sample["lat"] < 40.0


def test_real_s1_patches() -> None:
    root = _real("S1")
    ds = BigEarthNet(root, sensor="s1")
    assert len(ds) == 6
    start, end = to_days(datetime(2017, 1, 1)), to_days(datetime(2019, 1, 1))
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (2, 120, 120) and sample["sensor"] == "sentinel-1-grd"
        assert -40.0 < float(sample["image"].mean()) < 10.0  # dB
        assert -10.0 < sample["lon"] < 30.0 and 36.0 < sample["lat"] < 71.0
        assert start <= sample["time"] < end
    s1 = ds[ds.names.index("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55")]
    s2_root = _real("S2")
    s2 = BigEarthNet(s2_root, bands=["B02"])
    s2_sample = s2[s2.names.index("S2A_MSIL2A_20170617T113321_4_55")]
    assert math.isclose(s1["lon"], s2_sample["lon"]) and math.isclose(s1["lat"], s2_sample["lat"])
    assert torch.equal(s1["label"], s2_sample["label"])


def test_real_root_with_both_sensors_as_subfolders() -> None:
    _real("S2")
    assert len(BigEarthNet(REALDATA / "S2", bands=["B02"])) == 11
    # the S1 folder seen as S2 holds no S2 patches
    with pytest.raises(DataLayoutError, match="no BigEarthNet s2 patch folders"):
        BigEarthNet(REALDATA / "S1")


def test_real_root_holding_s1_and_s2_folders_is_recognised() -> None:
    _real("S2")
    _real("S1")
    s2 = BigEarthNet(REALDATA)  # REALDATA holds S1/ and S2/, as the shared README says
    assert len(s2) == 11 and s2[0]["image"].shape == (12, 120, 120)
    s1 = BigEarthNet(REALDATA, sensor="s1")
    assert len(s1) == 6 and s1[0]["sensor"] == "sentinel-1-grd"


def test_s1_s2_subfolders_and_a_non_patch_folder_refused_when_built(
    tmp_path: Path, s2_root: tuple[Path, Any], s1_root: tuple[Path, Any]
) -> None:
    _copy(s2_root[0], tmp_path / "both" / "S2")
    _copy(s1_root[0], tmp_path / "both" / "S1")
    assert len(BigEarthNet(tmp_path / "both")) == 6
    assert len(BigEarthNet(tmp_path / "both", sensor="s1")) == 4
    # a v2 (reBEN) root read as v1: refused when the reader is built, with a hint
    v2 = tmp_path / "v2"
    (v2 / "BigEarthNet-S2" / "T33UUP").mkdir(parents=True)
    (v2 / "metadata.parquet").write_bytes(b"")
    with pytest.raises(DataLayoutError) as exc:
        BigEarthNet(v2)
    message = _one_line(exc)
    assert "not a BigEarthNet s2 patch folder" in message and "S2/" in message
    assert "version=2" in message
    # a folder of unrelated folders: the same, before any sample is read
    (tmp_path / "other" / "photos").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match="not a BigEarthNet s2 patch folder"):
        BigEarthNet(tmp_path / "other")
