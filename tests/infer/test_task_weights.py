"""Trained task checkpoints: ``save_task`` → ``thinkingearth predict --weights``."""

from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import read_prediction

from thinkingearth.cli import main
from thinkingearth.data.export import export_world
from thinkingearth.data.synthetic import FLOOD_CLASSES, LANDCOVER_CLASSES
from thinkingearth.data.transforms import Normaliser
from thinkingearth.models.weights import create_encoder
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.checkpoint import save_task
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

SIZE = 96


def _encoder() -> EncoderBackbone:
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=48
    )
    return EncoderBackbone(encoder)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    export_world(root / "native", "native", n=1, size=SIZE)
    return root / "native" / "scene_00000"


def _read(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    with rasterio.open(path) as src:
        return src.read().astype(np.float32), tuple(src.descriptions)


@pytest.fixture(scope="module")
def landcover(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.manual_seed(0)
    _, bands = _read(scene / "s2.tif")
    module = SegmentationTask(_encoder(), len(LANDCOVER_CLASSES), decoder_channels=16).eval()
    path = tmp_path_factory.mktemp("ckpt") / "landcover"
    save_task(
        module,
        path,
        task="landcover",
        classes=LANDCOVER_CLASSES,
        sensor="sentinel-2-l2a",
        bands=bands,
        normaliser=Normaliser(),
        tile=SIZE,
    )
    return path.with_suffix(".safetensors"), module


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.manual_seed(1)
    module = ChangeTask(_encoder(), 3, decoder_channels=16, class_names=FLOOD_CLASSES).eval()
    path = tmp_path_factory.mktemp("ckpt") / "flood"
    save_task(
        module,
        path,
        task="flood",
        classes=FLOOD_CLASSES,
        sensor="sentinel-1-grd",
        bands=("VV", "VH"),
        normaliser=Normaliser(),
        tile=SIZE,
        acquisitions=3,
    )
    return path.with_suffix(".safetensors"), module


def _check_output(out: Path, reference: Path, k: int) -> np.ndarray:
    with rasterio.open(out) as dst, rasterio.open(reference) as src:
        assert dst.crs == src.crs and dst.transform == src.transform
    classes, entropy = read_prediction(out)
    assert set(np.unique(classes).tolist()) <= set(range(k)) | {255}
    assert (entropy[classes != 255] >= 0).all()
    return classes


def _direct(
    module: torch.nn.Module, x: np.ndarray, sensor: str, bands: tuple[str, ...]
) -> np.ndarray:
    image = Normaliser()(torch.from_numpy(x)[None], sensor, bands)
    with torch.no_grad():
        logits = module({"image": image, "bands": list(bands), "sensor": sensor})
    return logits.argmax(1)[0].numpy()


def test_landcover_weights_predict_like_the_module(
    scene: Path, landcover: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    weights, module = landcover
    image = scene / "s2.tif"
    out = tmp_path / "lc.tif"
    argv = ["predict", "--task", "landcover", "--image", str(image), "--weights", str(weights)]
    assert main([*argv, "--out", str(out)]) == 0
    classes = _check_output(out, image, len(LANDCOVER_CLASSES))
    x, bands = _read(image)
    expected = _direct(module, x, "sentinel-2-l2a", bands)  # one tile = the whole scene
    valid = classes != 255
    assert valid.mean() > 0.5
    assert (classes[valid] == expected[valid]).mean() > 0.99
    tiled = tmp_path / "lc_tiled.tif"
    assert main([*argv, "--out", str(tiled), "--tile", "48", "--overlap", "8"]) == 0
    _check_output(tiled, image, len(LANDCOVER_CLASSES))


def test_maps_record_the_weights_checksum_and_the_command(
    scene: Path,
    landcover: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights, _ = landcover
    out = tmp_path / "lc.tif"
    argv = ["predict", "--task", "landcover", "--image", str(scene / "s2.tif")]
    argv += ["--weights", str(weights), "--out", str(out), "--no-quicklook"]
    monkeypatch.setattr(sys, "argv", ["thinkingearth", *argv])
    assert main(argv) == 0
    for path in (out, tmp_path / "lc_uncertainty.tif"):
        with rasterio.open(path) as dst:
            tags = dst.tags()
        assert tags["WEIGHTS"] == "landcover.safetensors"
        assert tags["WEIGHTS_SHA256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert tags["COMMAND"] == shlex.join(["thinkingearth", *argv])
        assert tags["CLASSES"].split(";")[:2] == [
            f"0={LANDCOVER_CLASSES[0]}",
            f"1={LANDCOVER_CLASSES[1]}",
        ]
        assert tags["TIFFTAG_SOFTWARE"].startswith("thinkingearth ")


def test_flood_weights_predict_like_the_module(
    scene: Path, flood: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    weights, module = flood
    pre2, pre, post = (scene / f"s1_{n}.tif" for n in ("sl2", "sl1", "ms1"))
    out = tmp_path / "flood.tif"
    argv = ["predict", "--task", "flood", "--pre2", str(pre2), "--pre", str(pre)]
    argv += ["--post", str(post), "--weights", str(weights), "--out", str(out)]
    assert main(argv) == 0
    classes = _check_output(out, post, 3)
    x = np.stack([_read(p)[0] for p in (pre2, pre, post)])
    expected = _direct(module, x, "sentinel-1-grd", ("VV", "VH"))
    valid = classes != 255
    assert valid.mean() > 0.5
    assert (classes[valid] == expected[valid]).mean() > 0.99


@pytest.fixture(scope="module")
def flood_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A change model trained on two acquisitions (pre, post)."""
    torch.manual_seed(2)
    module = ChangeTask(_encoder(), 3, decoder_channels=16, class_names=FLOOD_CLASSES).eval()
    path = tmp_path_factory.mktemp("ckpt") / "flood_two"
    save_task(
        module,
        path,
        task="flood",
        classes=FLOOD_CLASSES,
        sensor="sentinel-1-grd",
        bands=("VV", "VH"),
        normaliser=Normaliser(),
        tile=SIZE,
        acquisitions=2,
    )
    return path.with_suffix(".safetensors")


def test_a_checkpoint_takes_the_acquisitions_it_was_trained_with(
    scene: Path,
    flood: tuple[Path, torch.nn.Module],
    flood_two: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pre2, pre, post = (str(scene / f"s1_{n}.tif") for n in ("sl2", "sl1", "ms1"))
    out = tmp_path / "flood.tif"
    two = ["predict", "--task", "flood", "--pre", pre, "--post", post, "--out", str(out)]
    three = [*two, "--pre2", pre2]
    _one_line_error(
        [*two, "--weights", str(flood[0])],
        capsys,
        "takes 3 input image(s) (--pre2, --pre, --post); got 2 (--pre, --post)",
    )
    _one_line_error(
        [*three, "--weights", str(flood_two)],
        capsys,
        "takes 2 input image(s) (--pre, --post); got 3 (--pre2, --pre, --post)",
    )
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert main([*two, "--weights", str(flood_two)]) == 0  # the right number works
    _check_output(out, Path(post), 3)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert err.count("\n") == 0 and "Traceback" not in err


def test_weights_errors_are_one_line(
    scene: Path,
    landcover: tuple[Path, torch.nn.Module],
    flood: tuple[Path, torch.nn.Module],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    post = str(scene / "s1_ms1.tif")
    out = str(tmp_path / "x.tif")
    flood_argv = ["predict", "--task", "flood", "--pre", str(scene / "s1_sl1.tif")]
    flood_argv += ["--post", post, "--out", out]
    _one_line_error(
        [*flood_argv, "--weights", str(landcover[0])], capsys, "holds a landcover model"
    )
    lc_on_s1 = ["predict", "--task", "landcover", "--image", post, "--out", out]
    _one_line_error(
        [*lc_on_s1, "--weights", str(landcover[0])],
        capsys,
        "has 2 band(s) (VV, VH: sentinel-1-grd bands) but the model needs 12 sentinel-2-l2a",
    )
    broken = tmp_path / "broken"
    data = flood[0].read_bytes()
    broken.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    broken.with_suffix(".json").write_text(flood[0].with_suffix(".json").read_text())
    _one_line_error(
        [*flood_argv, "--weights", str(broken.with_suffix(".safetensors"))],
        capsys,
        "not a readable safetensors file",
    )
    step = tmp_path / "run" / "checkpoints" / "step-00000004.ckpt"
    _one_line_error(  # a finetune run's resume checkpoint given for its model
        [*flood_argv, "--weights", str(step)], capsys, str(tmp_path / "run" / "model.safetensors")
    )
    foreign = tmp_path / "foreign"
    foreign.with_suffix(".safetensors").write_bytes(data)
    foreign.with_suffix(".json").write_text('{"format": "something"}')
    _one_line_error(
        [*flood_argv, "--weights", str(foreign.with_suffix(".json"))], capsys, "expected a task"
    )
    assert not Path(out).exists()
