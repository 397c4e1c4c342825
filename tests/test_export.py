"""The synthetic world on disk: round trips through the real layouts' readers, atomic output."""

import json

import numpy as np
import pytest
import rasterio
import torch

from thinkingearth.data import export as export_module
from thinkingearth.data.export import _EXPORT_STREAM, corine_labels, export_world, split_of
from thinkingearth.data.formats.bigearthnet import BigEarthNet, labels_to_multi_hot
from thinkingearth.data.formats.kurosiwo import SPLITS, KuroSiwo
from thinkingearth.data.synthetic import WorldConfig, generate_scene
from thinkingearth.errors import UserInputError


def _scene(i, size):
    return generate_scene(0, i, WorldConfig(size=size), stream=_EXPORT_STREAM)


def test_kurosiwo_round_trip(tmp_path):
    root = export_world(tmp_path / "ks", "kurosiwo", n=10, size=32)
    counts = {split: len(KuroSiwo(root, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 1, "test": 2}
    ds = KuroSiwo(root, "test")
    sample = ds[0]
    index = (
        int(json.loads((root / sample["path"] / "info.json").read_text())["thinkingearth"]["index"])
        if "path" in sample
        else None
    )
    # Find the exported scene behind the sample by its SAR values.
    scenes = {i: _scene(i, 32) for i in range(10) if split_of(i) == "test"}
    match = [i for i, s in scenes.items() if np.array_equal(s.s1, sample["image"].numpy())]
    assert len(match) == 1 and (index is None or index == match[0])
    scene = scenes[match[0]]
    assert sample["image"].shape == (3, 2, 32, 32)
    expected = scene.flood.astype(np.int64)
    expected[scene.valid == 0] = 3
    assert torch.equal(sample["mask"], torch.from_numpy(expected))
    assert sample["crs"].upper().endswith("3857")
    assert abs(sample["lon"] - scene.lon) < 0.01 and abs(sample["lat"] - scene.lat) < 0.01
    assert int(sample["actid"]) in SPLITS["test"]
    days = [(d - scene.s1_dates[0]).days for d in scene.s1_dates]
    assert (sample["time"] - sample["time"][0]).tolist() == days


def test_bigearthnet_round_trip_s2_and_s1(tmp_path):
    root = export_world(tmp_path / "ben", "bigearthnet", n=10, size=60)
    s2 = BigEarthNet(root, "train", num_classes=43)
    s1 = BigEarthNet(root, "train", sensor="s1")
    assert len(s2) == 7 and len(s1) == 7
    sample = s2[0]
    assert sample["image"].shape == (12, 60, 60)
    scene = next(
        _scene(i, 60)
        for i in range(10)
        if np.array_equal(_scene(i, 60).s2[1], sample["image"][1].numpy())
    )
    assert torch.equal(sample["label"], labels_to_multi_hot(corine_labels(scene), 43))
    assert sample["crs"].startswith("EPSG:32")
    assert abs(sample["lon"] - scene.lon) < 0.01
    assert s1[0]["image"].shape == (2, 60, 60)
    vv_db = s1[0]["image"][0]
    assert -40 < float(vv_db.mean()) < 5  # dB as BigEarthNet-S1 stores


def test_native_scene_keeps_bands_crs_and_values(tmp_path):
    root = export_world(tmp_path / "native", "native", n=2, size=40)
    folder = root / "scene_00001"
    scene = _scene(1, 40)
    with rasterio.open(folder / "s2.tif") as src:
        assert src.descriptions == scene.s2_bands
        assert src.crs.to_epsg() // 100 in (326, 327)
        np.testing.assert_array_equal(src.read(), scene.s2.astype(np.uint16))
    with rasterio.open(folder / "s1_ms1.tif") as src:
        assert src.descriptions == ("VV", "VH") and src.nodata == 0
        np.testing.assert_array_equal(src.read(), scene.s1[2])
    meta = json.loads((folder / "scene.json").read_text())
    assert (
        meta["caption"] == scene.caption
        and meta["s1_dates"]["MS1"] == scene.s1_dates[2].isoformat()
    )


def test_corine_labels_are_bigearthnet_names():
    for i in range(10):
        labels = corine_labels(_scene(i, 48))
        assert labels and labels_to_multi_hot(labels, 43).sum() == len(labels)


def test_bad_input_and_no_half_written_output(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="unknown format"):
        export_world(tmp_path / "a", "geojson", n=1)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="positive"):
        export_world(tmp_path / "a", "native", n=0)
    with pytest.raises(UserInputError, match="divisible by 6"):
        export_world(tmp_path / "a", "bigearthnet", n=1, size=50)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(UserInputError, match="not empty"):
        export_world(tmp_path / "full", "native", n=1, size=16)
    assert (tmp_path / "full" / "x").read_text() == "keep"
    (tmp_path / "file").write_text("")
    with pytest.raises(UserInputError, match="not a folder"):
        export_world(tmp_path / "file" / "out", "native", n=1, size=16)

    calls = {"n": 0}
    real = export_module._write_native

    def crash_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(*args)

    monkeypatch.setattr(export_module, "_write_native", crash_on_second)
    with pytest.raises(RuntimeError):
        export_world(tmp_path / "partial", "native", n=3, size=16)
    assert list(tmp_path.glob("*partial*")) == []
