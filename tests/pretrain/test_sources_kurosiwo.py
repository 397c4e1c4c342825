"""Kuro Siwo's unlabelled SAR set (areas ``00``): the format reader added for pretraining."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from sources_fakes import geotiff
from sources_fakes import kurosiwo as make_kurosiwo

from thinkingearth.data.formats.kurosiwo import (
    KuroSiwo,
    KuroSiwoSAR,
    build_unlabelled_index,
    write_index,
)
from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UserInputError


def test_unlabelled_index_and_reader(tmp_path: Path) -> None:
    made = make_kurosiwo(tmp_path, size=32)
    records = build_unlabelled_index(tmp_path)
    assert [r["tile"] for r in records] == [f.name for f in made["unlabelled"]]
    assert records[0]["scenes"] == ["SL2", "SL1", "MS1"]
    assert records[1]["scenes"] == ["SL1", "MS1"]  # no SL2 files there
    assert records[0]["aoi"] == 0 and records[0]["dates"]["SL1"] == "2019-12-20"
    assert build_unlabelled_index(tmp_path, events=[321]) == []
    # the labelled reader still leaves the unlabelled areas out
    assert all(r["aoi"] != 0 for r in KuroSiwo(tmp_path, split=None).records)

    sar = KuroSiwoSAR(tmp_path, split=None)
    assert (sar.labelled_tiles, sar.unlabelled_tiles, len(sar)) == (2, 2, 4)
    tile = sar[3]  # the second unlabelled tile: SL1 and MS1
    assert tile["image"].shape == (2, 2, 32, 32) and tile["scenes"] == ("SL1", "MS1")
    assert tile["time"].tolist() == [to_days(datetime(2019, 12, 20)), to_days(datetime(2020, 1, 1))]
    assert tile["units"] == "linear" and tile["aoi"] == 0 and "mask" not in tile
    assert tile["crs"] == "EPSG:3857" and -61 < tile["lon"] < -59 and -31 < tile["lat"] < -29
    scene = sar.read_scene(3, "MS1")
    assert torch.equal(scene["image"], tile["image"][1])
    assert scene["time"] == to_days(datetime(2020, 1, 1))
    assert float(scene["image"][0, 0, 0]) == 0.0  # no data as stored
    with pytest.raises(UserInputError, match="has no SL2; it has SL1, MS1"):
        sar.read_scene(3, "SL2")
    labelled = sar[0]
    assert labelled["image"].shape == (3, 2, 32, 32) and labelled["aoi"] == 1
    # the event split and the choice of parts
    assert len(KuroSiwoSAR(tmp_path, split="train")) == 3
    assert len(KuroSiwoSAR(tmp_path, split="test")) == 1
    assert len(KuroSiwoSAR(tmp_path, split=None, labelled=False)) == 2
    assert len(KuroSiwoSAR(tmp_path, split=None, unlabelled=False)) == 2
    # the JSON index of the labelled tiles is honoured
    write_index(tmp_path)
    assert KuroSiwoSAR(tmp_path, split=None).labelled_tiles == 2


def test_unlabelled_layout_problems(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "518" / "00" / "abc"
    rng = np.random.default_rng(0)
    sigma0 = rng.lognormal(-2.5, 0.5, (16, 16)).astype(np.float32)
    geotiff(folder / "MS1_IVV_518_00_20210103.tif", sigma0, crs="EPSG:3857", nodata=0.0)
    # only VV of the post-event scene: no whole acquisition, so no tile
    assert build_unlabelled_index(tmp_path) == []
    with pytest.raises(DataLayoutError, match="has no tiles for activation ids all") as exc:
        KuroSiwoSAR(tmp_path, split=None)
    assert "\n" not in str(exc.value)
    geotiff(folder / "MS1_IVH_518_00_20210103.tif", sigma0, crs="EPSG:3857", nodata=0.0)
    (record,) = build_unlabelled_index(tmp_path)
    assert record["scenes"] == ["MS1"] and record["dates"]["MS1"] == "2021-01-03"
    assert math.isfinite(KuroSiwoSAR(tmp_path, split=None)[0]["time"][0])
    geotiff(folder / "MS1_IVH_518_00_20210104.tif", sigma0, crs="EPSG:3857", nodata=0.0)
    with pytest.raises(DataLayoutError, match=r"2 files matching MS1_IVH_\*\.tif, expected one"):
        build_unlabelled_index(tmp_path)
    with pytest.raises(DataLayoutError, match="has no data/ folder"):
        build_unlabelled_index(tmp_path / "data")
    with pytest.raises(UserInputError, match="needs labelled or unlabelled tiles"):
        KuroSiwoSAR(tmp_path, labelled=False, unlabelled=False)
