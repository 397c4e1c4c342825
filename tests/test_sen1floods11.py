"""Tests for the Sen1Floods11 reader: fake chips in both layouts, and the real chip in shared/."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from thinkingearth.data.formats.sen1floods11 import IGNORE_INDEX, SPLIT_FILES, Sen1Floods11
from thinkingearth.data.sample import collate, to_days
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.sensors import get_sensor
from thinkingearth.tasks.metrics import compute, segmentation_metrics

_spec = importlib.util.spec_from_file_location(
    "_fake_sen1floods11", Path(__file__).parent / "data" / "sen1floods11" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

SIZE = fake.SIZE
HAND = Path("v1.1", "data", "flood_events", "HandLabeled")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sen1floods11")
    fake.make_fake_sen1floods11(path)
    return path


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sen1floods11_flat")
    fake.make_fake_sen1floods11(path, layout="flat")
    return path


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def _expected_mask(chip: str) -> np.ndarray:
    mask = fake.arrays(chip)["label"].astype(np.int64)
    mask[mask == -1] = IGNORE_INDEX
    return mask


def test_s1_round_trip(root: Path) -> None:
    ds = Sen1Floods11(root, split="train")
    assert ds.chips == ["Ghana_5079", "India_1068"]
    sample = ds[0]
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(image.numpy(), fake.arrays("Ghana_5079")["s1"])  # NaN kept
    assert sample["bands"] == ("VV", "VH") and sample["sensor"] == "sentinel-1-grd"
    mask = sample["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(mask.numpy(), _expected_mask("Ghana_5079"))
    assert set(mask.unique().tolist()) == {0, 1, IGNORE_INDEX} and (mask[0] == 255).all()
    assert sample["time"] == to_days(date(2018, 9, 18))
    assert sample["lon"] == pytest.approx(-1.5 + 8 * fake.PIXEL_DEG)
    assert sample["lat"] == pytest.approx(9.4 - 8 * fake.PIXEL_DEG)
    assert sample["crs"] == "EPSG:4326" and sample["gsd"] == 10.0
    assert (
        sample["transform"][0] == pytest.approx(fake.PIXEL_DEG) and sample["chip"] == "Ghana_5079"
    )


def test_s2_bands_follow_the_file_descriptions(root: Path) -> None:
    ds = Sen1Floods11(root, split="train", sensor="s2")
    sample = ds[1]
    assert sample["bands"] == get_sensor("sentinel-2-l1c").band_names
    assert sample["sensor"] == "sentinel-2-l1c" and sample["image"].shape == (13, SIZE, SIZE)
    np.testing.assert_array_equal(sample["image"].numpy(), fake.arrays("India_1068")["s2"])
    assert sample["time"] == to_days(date(2016, 8, 12))
    subset = Sen1Floods11(root, split="val", sensor="s2", bands=("B8A", "red", "B12"))
    assert subset.bands == ("B8A", "B04", "B12")
    stored = fake.arrays("Sri-Lanka_2011")["s2"]
    np.testing.assert_array_equal(subset[0]["image"].numpy(), stored[[8, 3, 12]])
    with pytest.raises(UnknownBandError):
        Sen1Floods11(root, sensor="s1", bands=("HH",))


def test_event_dates_from_metadata(root: Path) -> None:
    val = Sen1Floods11(root, split="val")[0]  # Sri-Lanka: a hyphenated location
    assert val["time"] == to_days(date(2017, 5, 30))
    test = Sen1Floods11(root, split="test", sensor="s2")
    assert test.chips == ["USA_9921", "Mekong_3300"]
    assert math.isnan(test[0]["time"])  # no USA event in this metadata
    assert test[1]["time"] == to_days(date(2018, 8, 4))  # Mekong chips: the Cambodia event
    bolivia = Sen1Floods11(root, split="bolivia")
    assert bolivia.chips == ["Bolivia_103757"] and bolivia[0]["time"] == to_days(date(2018, 2, 15))


def test_all_chips_and_version_folder_as_root(root: Path) -> None:
    everything = Sen1Floods11(root, split=None)
    assert everything.chips == sorted(fake.CHIPS)
    inner = Sen1Floods11(root / "v1.1", split="test")
    assert inner.chips == ["USA_9921", "Mekong_3300"]
    assert set(SPLIT_FILES) == {"train", "val", "test", "bolivia"}


def test_flat_layout(flat: Path, tmp_path: Path) -> None:
    ds = Sen1Floods11(flat, split=None, sensor="s2")
    assert ds.chips == sorted(fake.CHIPS) and ds.image_dir == flat / "S2"
    assert ds[ds.chips.index("Ghana_5079")]["time"] == to_days(date(2018, 9, 19))
    with pytest.raises(DataLayoutError) as err:
        Sen1Floods11(flat, split="train")
    expected = flat / "splits" / "flood_handlabeled" / "flood_train_data.csv"
    assert (
        _one_line(err)
        == f"Sen1Floods11 split file flood_train_data.csv not found (expected {expected})"
    )
    copy = tmp_path / "flat"
    shutil.copytree(flat, copy)
    (copy / "flood_train_data.csv").write_text("India_1068_S1Hand.tif,India_1068_LabelHand.tif\n")
    assert Sen1Floods11(copy, split="train").chips == ["India_1068"]


def test_dataloader_collate(root: Path) -> None:
    ds = Sen1Floods11(
        root, split=None, transforms=lambda s: {**s, "image": s["image"].nan_to_num()}
    )
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate)))
    assert batch["image"].shape == (6, 2, SIZE, SIZE) and not batch["image"].isnan().any()
    assert batch["mask"].shape == (6, SIZE, SIZE) and batch["mask"].dtype == torch.int64
    assert batch["time"].shape == (6,) and int(batch["time"].isnan().sum()) == 1  # USA
    assert batch["chip"] == sorted(fake.CHIPS)


def test_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError) as err:
        Sen1Floods11(tmp_path / "nowhere")
    assert (
        _one_line(err)
        == f"Sen1Floods11 root {tmp_path / 'nowhere'} does not exist or is not a folder"
    )

    with pytest.raises(DataLayoutError) as err:
        Sen1Floods11(tmp_path)
    assert f"(expected {tmp_path / 'data' / 'flood_events' / 'HandLabeled'}/" in _one_line(err)

    with pytest.raises(UserInputError) as err:
        Sen1Floods11(root, split="valid")  # type: ignore[arg-type]
    assert not isinstance(err.value, DataLayoutError) and "train, val, test, bolivia" in _one_line(
        err
    )
    with pytest.raises(UserInputError, match="'s1' or 's2'"):
        Sen1Floods11(root, sensor="s3")  # type: ignore[arg-type]

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victim = copy / HAND / "S2Hand" / "India_1068_S2Hand.tif"
    victim.unlink()
    assert len(Sen1Floods11(copy, split="train", sensor="s1")) == 2
    with pytest.raises(DataLayoutError) as err:
        Sen1Floods11(copy, split="train", sensor="s2")
    assert _one_line(err) == (
        f"Sen1Floods11 chip India_1068 is missing India_1068_S2Hand.tif in {victim.parent}"
    )

    split_csv = copy / "v1.1" / "splits" / "flood_handlabeled" / "flood_test_data.csv"
    split_csv.write_text("USA_9921.tif\n")
    with pytest.raises(
        DataLayoutError, match=re.escape("expected <chip>_S1Hand.tif,<chip>_LabelHand.tif")
    ):
        Sen1Floods11(copy, split="test")

    (copy / "v1.1" / "Sen1Floods11_Metadata.geojson").write_text("{broken")
    with pytest.raises(
        DataLayoutError, match=re.escape("Sen1Floods11_Metadata.geojson is unreadable")
    ):
        Sen1Floods11(copy, split="val")

    other = tmp_path / "other"
    shutil.copytree(root, other)
    label = other / HAND / "LabelHand" / "Ghana_5079_LabelHand.tif"
    with rasterio.open(label) as src:
        profile = src.profile
    profile.update(width=SIZE - 1)
    with rasterio.open(label, "w", **profile) as dst:
        dst.write(np.zeros((1, SIZE, SIZE - 1), np.int16))
    ds = Sen1Floods11(other, split="train")
    with pytest.raises(
        DataLayoutError, match=re.escape("Ghana_5079: label Ghana_5079_LabelHand.tif is")
    ):
        ds[0]


# ------------------------------------------------------------------------ the real chip


def test_real_chip(realdata: Path) -> None:
    folder = realdata / "sen1floods11"
    if not folder.is_dir():
        pytest.skip(f"no Sen1Floods11 chip in {realdata}")
    s1 = Sen1Floods11(folder, split=None, sensor="s1")
    s2 = Sen1Floods11(folder, split=None, sensor="s2")
    assert s1.chips == s2.chips == ["Spain_7370579"]
    a, b = s1[0], s2[0]
    assert a["image"].shape == (2, 512, 512) and b["image"].shape == (13, 512, 512)
    assert a["bands"] == ("VV", "VH") and b["bands"] == get_sensor("sentinel-2-l1c").band_names
    assert -40.0 < float(a["image"].nanmean()) < 0.0  # dB, not linear sigma0
    with rasterio.open(folder / "Labels" / "Spain_7370579_LabelHand.tif") as src:
        raw = src.read(1)
    assert torch.equal(a["mask"], b["mask"])
    assert int((a["mask"] == IGNORE_INDEX).sum()) == int((raw == -1).sum())
    assert set(a["mask"].unique().tolist()) <= {0, 1, IGNORE_INDEX}
    assert a["time"] == to_days(date(2019, 9, 17)) and b["time"] == to_days(date(2019, 9, 18))
    assert -0.8 < a["lon"] < -0.7 and 38.0 < a["lat"] < 38.2 and a["crs"] == "EPSG:4326"
    # README reference figure: NDWI > 0 on S2 scores water F1 0.81 against the hand label.
    green, nir = (b["image"][b["bands"].index(n)] for n in ("B03", "B08"))
    ndwi = (green - nir) / (green + nir).clamp(min=1.0)
    metrics = segmentation_metrics(2, IGNORE_INDEX, Sen1Floods11.classes)
    metrics.update((ndwi > 0).long()[None], b["mask"][None])
    assert compute(metrics)["f1/water"] == pytest.approx(0.81, abs=0.01)
    # The metadata file beside the chip folders is found in the flat layout.
    meta = json.loads((folder / "Sen1Floods11_Metadata.geojson").read_text())
    assert any(f["properties"]["location"] == "Spain" for f in meta["features"])
