"""The demo's flood-map stage: a predicted map of a synthetic scene, scored in the report."""

from __future__ import annotations

from pathlib import Path

import rasterio

from thinkingearth.demo import STAGES, DemoContext


def test_demo_ends_with_a_predicted_flood_map(tmp_path: Path) -> None:
    names = [name for name, _ in STAGES]
    assert names[-1] == "flood map"
    stage = dict(STAGES)["flood map"]
    ctx = DemoContext(out=tmp_path, seed=0, quick=True)
    text = stage(ctx)
    assert "![predicted flood map](flood_prediction.png)" in text
    assert "| water (permanent + flood) |" in text and "| flood |" in text
    assert (tmp_path / "flood_prediction.png").stat().st_size > 10_000
    assert (tmp_path / "flood_map.png").exists()
    with rasterio.open(tmp_path / "flood_map.tif") as dst:
        assert dst.count == 1 and dst.nodata == 255 and dst.dtypes == ("uint8",)
    with rasterio.open(tmp_path / "flood_map_uncertainty.tif") as dst:
        assert dst.descriptions == ("entropy",) and dst.dtypes == ("float32",)
