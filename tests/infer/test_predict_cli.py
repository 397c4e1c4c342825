"""``thinkingearth predict``: one scene end to end, and one-line user errors with exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from infer_helpers import OUTPUT_FILES, PlantedScene, digest, iou, listing

from thinkingearth.cli import main


def test_predict_flood_writes_a_cog_and_a_quicklook(
    planted: PlantedScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "flood.tif"
    argv = ["predict", "--task", "flood", "--pre", str(planted.pre), "--pre2", str(planted.pre2)]
    argv += ["--post", str(planted.post), "--model", "threshold", "--out", str(out)]
    assert main([*argv, "--tile", "128", "--overlap", "16"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "flood" in captured.out
    assert sorted(p.name for p in out.parent.iterdir()) == list(OUTPUT_FILES)
    with rasterio.open(out) as dst:
        assert iou(dst.read(1) == 2, planted.truth == 2) > 0.85


def test_predict_decides_sar_units_per_file_and_refuses_contradicting_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from infer_helpers import write_raster

    db = -12.0 + np.random.default_rng(0).normal(0, 3, size=(2, 64, 64)).astype(np.float32)
    image = write_raster(tmp_path / "db.tif", db, nodata=None)
    water = ["predict", "--task", "water", "--image", str(image)]
    assert main([*water, "--out", str(tmp_path / "w.tif")]) == 0  # --sar-units auto
    err = capsys.readouterr().err
    assert err.count("SAR units of --image db.tif: decibels, detected from the values") == 1
    assert "warning" not in err
    with rasterio.open(tmp_path / "w.tif") as dst:
        assert (dst.read(1) != 255).all()  # every pixel mapped, not 2 % of them
    for units in ("dB", "DB", "db"):
        assert main([*water, "--sar-units", units, "--out", str(tmp_path / f"w_{units}.tif")]) == 0
        assert "warning" not in capsys.readouterr().err
    out = tmp_path / "linear.tif"
    assert main([*water, "--sar-units", "linear", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "look like decibels" in err and "pass --sar-units db (or auto)" in err
    assert err.count("\n") == 0 and "Traceback" not in err and not out.exists()


def test_user_errors_are_one_line_exit_2_and_leave_nothing(
    planted: PlantedScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pre, post = str(planted.pre), str(planted.post)
    out = str(tmp_path / "o" / "x.tif")
    flood = ["predict", "--task", "flood", "--pre", pre, "--post", post]
    cases = [
        ([*flood, "--out", out, "--weights", "w.safetensors"], "missing w.json"),
        ([*flood, "--out", post], "is also an input"),
        (
            ["predict", "--task", "landcover", "--image", post, "--out", out],
            "needs trained --weights",
        ),
        (["predict", "--task", "floods", "--image", post, "--out", out], "unknown task 'floods'"),
        (["predict", "--task", "flood", "--post", post, "--out", out], "needs --pre"),
        (["predict", "--task", "water", "--out", out], "needs --image"),
        ([*flood, "--out", out, "--bands", "VV"], "has 2 band(s) but --bands names 1"),
        ([*flood, "--out", out, "--bands", "VV,XX"], "'XX'"),
        ([*flood, "--out", out, "--bands", "VH,VV"], "'VH' but the file describes it as 'VV'"),
        ([*flood, "--out", out, "--sar-units", "dB2"], "unknown --sar-units"),
        ([*flood, "--out", out, "--model", "unet"], "unknown --model 'unet'"),
        ([*flood, "--image", post, "--out", out], "not --image"),
        ([*flood, "--out", out, "--tile", "16", "--overlap", "16"], "overlap in [0, tile)"),
    ]
    before = listing(tmp_path)
    digests = {p: digest(p) for p in (planted.pre, planted.post)}
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err, (argv, err)
        assert err.count("\n") == 0 and "Traceback" not in err
        assert listing(tmp_path) == before
    assert all(digest(p) == d for p, d in digests.items())


def test_an_existing_uncertainty_file_is_not_replaced_silently(
    planted: PlantedScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "flood.tif"
    beside = tmp_path / "flood_uncertainty.tif"
    beside.write_bytes(b"someone else's file")
    argv = ["predict", "--task", "flood", "--pre", str(planted.pre), "--post", str(planted.post)]
    argv += ["--model", "threshold", "--out", str(out), "--no-quicklook"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "flood_uncertainty.tif" in err and "--overwrite" in err and "\n" not in err
    assert beside.read_bytes() == b"someone else's file" and not out.exists()
    assert main([*argv, "--overwrite"]) == 0
    with rasterio.open(beside) as dst:
        assert dst.descriptions == ("entropy",)
