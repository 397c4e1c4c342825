"""Tests for the EuroSAT-MS reader, on tiny files written in the real layout."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from torch.utils.data import DataLoader

from thinkingearth.data.formats.eurosat import BASE_DIR, CLASSES, FILE_BANDS, EuroSATMS
from thinkingearth.data.sample import collate
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.sensors import get_sensor

_spec = importlib.util.spec_from_file_location(
    "_fake_eurosat", Path(__file__).parent / "data" / "eurosat" / "data.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eurosat")
    fake.make_fake_eurosat(path)
    return path


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_layout_facts() -> None:
    assert len(CLASSES) == 10 and list(CLASSES) == sorted(CLASSES)
    assert len(FILE_BANDS) == 13 and FILE_BANDS[-1] == "B8A" and FILE_BANDS[8] == "B09"
    assert set(FILE_BANDS) == set(get_sensor("sentinel-2-l1c").band_names)


def test_round_trip_in_canonical_band_order(root: Path) -> None:
    ds = EuroSATMS(root, split="train")
    assert len(ds) == 3
    assert [p.stem for p in ds.files] == ["AnnualCrop_1", "Forest_1", "SeaLake_3"]
    sample = ds[1]
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (13, 64, 64)
    assert sample["bands"] == get_sensor("sentinel-2-l1c").band_names
    assert sample["sensor"] == "sentinel-2-l1c"
    stored = fake.band_values(1).astype(np.float32)  # Forest_1
    for channel, band in enumerate(sample["bands"]):
        np.testing.assert_array_equal(image[channel].numpy(), stored[FILE_BANDS.index(band)])
    # B8A is the 13th stored band but the 9th canonical one.
    assert image[8, 0, 0] == 1301 and image[9, 0, 0] == 901
    label = sample["label"]
    assert label.dtype == torch.int64 and label.ndim == 0 and int(label) == CLASSES.index("Forest")
    assert int(ds[2]["label"]) == 9 and sample["name"] == "Forest_1"


def test_georeferencing_metadata(root: Path) -> None:
    sample = EuroSATMS(root, split="train")[0]
    a, _, c, _, e, f = sample["transform"]
    assert sample["crs"] == "EPSG:32635"
    xs, ys = rasterio.warp.transform("EPSG:32635", "EPSG:4326", [c + 32 * a], [f + 32 * e])
    assert sample["lon"] == pytest.approx(xs[0]) and sample["lat"] == pytest.approx(ys[0])
    assert 27.0 < sample["lon"] < 30.0 and 43.0 < sample["lat"] < 45.0
    assert sample["gsd"] == pytest.approx(10.0, abs=0.01)
    assert math.isnan(sample["time"])


def test_band_subset_by_alias(root: Path) -> None:
    ds = EuroSATMS(root, split="test", bands=("red", "B8A", "nir", "B10"))
    assert ds.bands == ("B04", "B8A", "B08", "B10")
    sample = ds[0]  # Highway_7
    assert sample["image"].shape == (4, 64, 64)
    assert sample["image"][:, 0, 0].tolist() == [407.0, 1307.0, 807.0, 1007.0]
    with pytest.raises(UnknownBandError):
        EuroSATMS(root, bands=("B13",))


def test_splits_and_all(root: Path) -> None:
    sizes = {s: len(EuroSATMS(root, split=s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 1, "test": 2}
    everything = EuroSATMS(root, split=None)
    assert len(everything) == 6
    assert [p.parent.name for p in everything.files] == sorted(
        p.parent.name for p in everything.files
    )


def test_class_folders_directly_in_root(root: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    shutil.copytree(root / BASE_DIR, flat)
    ds = EuroSATMS(flat, split=None)
    assert len(ds) == 6 and ds.image_dir == flat


def test_dataloader_collate(root: Path) -> None:
    ds = EuroSATMS(root, split="train", transforms=lambda s: {**s, "image": s["image"] / 1e4})
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 13, 64, 64) and float(batch["image"].max()) < 0.2
    assert batch["label"].tolist() == [0, 1, 9]
    assert batch["time"].isnan().all() and not batch["lon"].isnan().any()


def test_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError) as err:
        EuroSATMS(tmp_path / "nowhere")
    assert f"EuroSAT root {tmp_path / 'nowhere'} does not exist" in _one_line(err)

    with pytest.raises(DataLayoutError) as err:
        EuroSATMS(tmp_path)
    assert f"(expected {tmp_path / BASE_DIR}/<Class>/<Class>_<n>.tif)" in _one_line(err)

    with pytest.raises(UserInputError) as err:
        EuroSATMS(root, split="training")  # type: ignore[arg-type]
    assert not isinstance(err.value, DataLayoutError) and "train, val, test" in _one_line(err)

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "eurosat-val.txt").unlink()
    with pytest.raises(DataLayoutError) as err:
        EuroSATMS(copy, split="val")
    assert _one_line(err) == f"EuroSAT split file eurosat-val.txt not found in {copy}"

    victim = copy / BASE_DIR / "Highway" / "Highway_7.tif"
    victim.unlink()
    with pytest.raises(DataLayoutError) as err:
        EuroSATMS(copy, split="test")
    assert f"1 patch(es) not on disk, e.g. {victim}" in _one_line(err)

    (copy / "eurosat-train.txt").write_text("Desert_1.jpg\n")
    with pytest.raises(DataLayoutError, match="class 'Desert'"):
        EuroSATMS(copy, split="train")

    bad = copy / BASE_DIR / "Forest" / "Forest_1.tif"
    with rasterio.open(bad, "r+") as dst:
        profile = dst.profile
    profile.update(count=3)
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(np.zeros((3, 64, 64), np.uint16))
    ds = EuroSATMS(copy, split=None)
    with pytest.raises(DataLayoutError) as err:
        ds[ds.files.index(bad)]
    assert f"EuroSAT patch {bad} has 3 bands, expected 13" in _one_line(err)
