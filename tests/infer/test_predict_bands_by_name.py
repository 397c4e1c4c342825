"""``predict --weights`` takes the bands a checkpoint needs from the file by name.

On real Sentinel-2 files from ``../shared/realdata`` (skipped where absent): a 12-band L2A model
maps Sen1Floods11's 13-band L1C chip by its band descriptions, ignoring B10, and says that the
input is L1C; the 13-band S2 scene without descriptions takes ``--bands``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from thinkingearth.cli import main
from thinkingearth.data.transforms import Normaliser
from thinkingearth.infer.model import WATER_CLASSES
from thinkingearth.models.weights import create_encoder
from thinkingearth.sensors import get_sensor
from thinkingearth.tasks.checkpoint import save_task
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

L2A_BANDS = get_sensor("sentinel-2-l2a").band_names  # 12 bands, no B10
S2_SCENE_ORDER = "B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12"


@pytest.fixture(scope="module")
def l2a_water(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny water model on the 12 Sentinel-2 L2A bands, saved as finetune saves it."""
    torch.manual_seed(0)
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=48
    )
    module = SegmentationTask(EncoderBackbone(encoder), 2, decoder_channels=16).eval()
    path = tmp_path_factory.mktemp("ckpt") / "water_l2a"
    save_task(
        module,
        path,
        task="water",
        classes=WATER_CLASSES,
        sensor="sentinel-2-l2a",
        bands=L2A_BANDS,
        normaliser=Normaliser(),
        tile=128,
    )
    return path.with_suffix(".safetensors")


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as dst:
        return dst.read(1)


def test_a_12_band_l2a_model_maps_the_13_band_l1c_sen1floods11_chip(
    realdata: Path, l2a_water: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = realdata / "sen1floods11" / "S2"
    if not folder.is_dir():
        pytest.skip(f"no Sen1Floods11 S2 chip in {folder}")
    chip = next(folder.glob("*_S2Hand.tif"))
    out = tmp_path / "water.tif"
    argv = ["predict", "--task", "water", "--weights", str(l2a_water), "--no-quicklook"]
    assert main([*argv, "--image", str(chip), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("thinkingearth: warning:") == 1, err  # L1C given to an L2A model
    assert "holds sentinel-2-l1c data (it has B10, which sentinel-2-l2a lacks)" in err
    assert "trained on sentinel-2-l2a" in err
    assert "reading 12 of its 13 bands by band description (ignoring B10)" in err
    assert "look like" not in err  # DN for the registry's DN statistics: no scale warning

    # The same bands in another order, B10 dropped, named B01..B12: the same map, bit for bit.
    with rasterio.open(chip) as src:
        profile = src.profile
        l1c = get_sensor("sentinel-2-l1c")
        by_name = {l1c.band(d).name: src.read(i) for i, d in enumerate(src.descriptions, start=1)}
    order = list(reversed(L2A_BANDS))
    profile.update(count=len(order))
    l2a_like = tmp_path / "l2a_like.tif"
    with rasterio.open(l2a_like, "w", **profile) as dst:
        for i, name in enumerate(order, start=1):
            dst.write(by_name[name], i)
            dst.set_band_description(i, name)
    again = tmp_path / "water_l2a_like.tif"
    assert main([*argv, "--image", str(l2a_like), "--out", str(again)]) == 0
    assert "warning" not in capsys.readouterr().err
    first, second = _classes(out), _classes(again)
    assert (first != 255).mean() > 0.9
    np.testing.assert_array_equal(first, second)


def test_the_s2_scene_without_descriptions_takes_bands(
    realdata: Path, l2a_water: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = realdata / "s2-scene"
    if not folder.is_dir():
        pytest.skip(f"no Sentinel-2 scene in {folder}")
    scene = next(folder.glob("*.tif"))
    out = tmp_path / "water.tif"
    argv = ["predict", "--task", "water", "--weights", str(l2a_water), "--no-quicklook"]
    argv += ["--image", str(scene), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no band descriptions; pass --bands with its 13" in err
    assert "e.g. --bands B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B10,B11,B12" in err  # L1C's
    assert main([*argv, "--bands", S2_SCENE_ORDER]) == 0
    err = capsys.readouterr().err
    assert "reading 12 of its 13 bands by --bands (ignoring B10)" in err
    assert "holds sentinel-2-l1c data" in err
    assert _classes(out).shape == (264, 264)
