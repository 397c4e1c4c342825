"""The shipped real-data configs and sources on the real Sentinel samples (skipped without them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from thinkingearth.pretrain import load_config, run_pretrain
from thinkingearth.pretrain.sources import open_pair, open_sensor

#: What makes a shipped config run on the few real samples for 2 steps.
REAL_OVERRIDES = {
    "softcon-bigearthnet": lambda r: {
        "data": {"root": str(r / "bigearthnet-v1"), "split": None, "batch_size": 4}
    },
    "cross-sensor-bigearthnet": lambda r: {
        "data": {"root": str(r / "bigearthnet-v1"), "split": None, "batch_size": 3}
    },
    "mae-folder": lambda r: {
        "data": {
            "sensors": [
                {"sensor": "sentinel-2-l1c", "root": str(r / "s2-scene")},
                {"sensor": "sentinel-1-grd", "root": str(r / "sen1floods11" / "S1")},
            ],
            "batch_size": 4,
        }
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_OVERRIDES))
def test_shipped_config_runs_two_steps_on_real_data(
    name: str, realdata: Path, tmp_path: Path
) -> None:
    overrides = REAL_OVERRIDES[name](realdata)
    overrides["trainer"] = {"progress_bar": False, "accelerator": "cpu"}
    config = load_config(name, overrides)
    result = run_pretrain(config, tmp_path / name, max_steps=2, log=None)
    assert result.steps == 2 and result.final_loss is not None
    assert math.isfinite(result.final_loss)
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["data"]["source"] == config.data.source and summary["data"]["notes"]


def test_real_bigearthnet_pairs_and_labels(realdata: Path, tiny) -> None:
    root = realdata / "bigearthnet-v1"
    config = tiny(
        recipe="cross_sensor",
        data={
            "source": "bigearthnet",
            "root": str(root),
            "split": None,
            "size": 32,
            "batch_size": 3,
            "pair": ["s1", "s2"],
            "sensors": [{"sensor": "s1"}, {"sensor": "s2"}],
        },
    )
    pairs = open_pair(config)
    assert len(pairs) == 3  # README: 3 of the 6 S1 patches share ground with S2 patches
    ends = {pairs[i]["a"]["name"].rsplit("_", 2)[-2:][0] for i in range(3)}
    assert ends == {"4", "36", "56"}
    for i in range(3):
        a, b = pairs[i]["a"], pairs[i]["b"]
        assert a["transform"] == b["transform"] and a["crs"] == b["crs"]
        assert bool((a["image"] > 0).all())  # dB stored, linear sigma0 served
        assert a["labels"].sum() > 0


def test_real_folder_pairs_and_mixed_crs(realdata: Path, tiny, tmp_path: Path) -> None:
    chip = realdata / "sen1floods11"
    config = tiny(
        recipe="cross_sensor",
        data={
            "source": "folder",
            "size": 64,
            "batch_size": 2,
            "pair": ["sentinel-1-grd", "sentinel-2-l1c"],
            "sensors": [
                {"sensor": "sentinel-1-grd", "root": str(chip / "S1")},
                {"sensor": "sentinel-2-l1c", "root": str(chip / "S2")},
            ],
        },
        augment={"crop_size": 32},
    )
    pairs = open_pair(config)  # the chip's S1 and S2 share one grid
    assert len(pairs) == 64  # 512 px: 8 x 8 windows of 64
    item = pairs[0]
    assert item["a"]["transform"] == item["b"]["transform"]
    # one folder, two CRSs: the southern-hemisphere UTM scene and the EPSG:4326 chip
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    scene = next((realdata / "s2-scene").glob("*.tif"))
    (mixed / scene.name).symlink_to(scene)
    (mixed / "chip.tif").symlink_to(chip / "S2" / "Spain_7370579_S2Hand.tif")
    config = tiny(
        data={
            "source": "folder",
            "size": 64,
            "sensors": [{"sensor": "sentinel-2-l1c", "root": str(mixed)}],
        },
        augment={"crop_size": 32},
    )
    samples = open_sensor(config, "sentinel-2-l1c")
    assert "2 CRSs (EPSG:32760, EPSG:4326" in samples.reader.notes[-1]
    by_file = {samples[i]["name"]: samples[i] for i in range(len(samples))}
    assert by_file[scene.name]["lat"] < -30 and by_file["chip.tif"]["lat"] > 30
    assert by_file[scene.name]["time"] == pytest.approx(18537.0)  # 2020-10-02 from the name
