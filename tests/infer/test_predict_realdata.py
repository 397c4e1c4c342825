"""The predictor on real Sentinel files from ``../shared/realdata`` (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import read_prediction
from torch import nn

from thinkingearth.cli import main
from thinkingearth.data.scene import Acquisition, SceneInputError
from thinkingearth.infer import SceneModel, predict_scene
from thinkingearth.infer.model import TASK_CLASSES
from thinkingearth.sensors import get_sensor

S2_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def test_water_on_the_sen1floods11_chip(
    realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = realdata / "sen1floods11"
    s1 = next((folder / "S1").glob("*_S1Hand.tif"))
    label = next((folder / "Labels").glob("*_LabelHand.tif"))
    out = tmp_path / "water.tif"
    argv = ["predict", "--task", "water", "--image", str(s1), "--sar-units", "db"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    with rasterio.open(s1) as src, rasterio.open(out) as dst, rasterio.open(label) as lab:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 4326
        assert dst.transform == src.transform and dst.shape == src.shape
        pred, truth = dst.read(1), lab.read(1)
        missing = ~np.isfinite(src.read()).all(axis=0)
    assert np.array_equal(pred == 255, missing)
    scored = (truth != -1) & (pred != 255)  # the hand label marks no data with -1
    p, t = pred[scored] == 1, truth[scored] == 1
    f1 = 2 * (p & t).sum() / (p.sum() + t.sum())
    assert f1 >= 0.65, f1  # the README's reference: Otsu on VV dB gives 0.72


class _TinySegmenter(nn.Module):
    """A randomly initialised per-pixel network over one date of 13 bands."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(bands, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, -1])


def test_landcover_on_the_s2_scene_needs_bands(realdata: Path, tmp_path: Path) -> None:
    scene = next((realdata / "s2-scene").glob("*.tif"))
    sensor = get_sensor("sentinel-2-l1c")
    mean, std = sensor.normalisation(S2_ORDER)
    classes, colours = TASK_CLASSES["landcover"]
    torch.manual_seed(0)
    model = SceneModel(
        network=_TinySegmenter(13, len(classes)),
        task="landcover",
        classes=classes,
        colours=colours,
        sensor="sentinel-2-l1c",
        bands=S2_ORDER,
        tile=128,
        overlap=16,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        name="random",
    )
    out = tmp_path / "landcover.tif"
    with pytest.raises(SceneInputError, match="no band descriptions; pass --bands with its 13"):
        predict_scene(model, [Acquisition.from_path("--image", scene)], out)
    assert not out.exists()
    result = predict_scene(model, [Acquisition.from_path("--image", scene, S2_ORDER)], out)
    assert result.tiles == 9  # 264 px is not a multiple of the 128 px tile
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32760 and dst.transform == src.transform
        assert dst.shape == (264, 264) == src.shape
        nodata = (src.read() == 0).any(axis=0)
    classes_map, entropy = read_prediction(out)
    assert np.array_equal(classes_map == 255, nodata)
    valid = ~nodata
    assert np.isin(classes_map[valid], np.arange(len(classes))).all()
    assert (entropy[valid] > 0).all() and (entropy[valid] <= np.log(len(classes)) + 1e-5).all()
    assert out.with_suffix(".png").exists()
