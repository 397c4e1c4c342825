"""``predict --device cpu|cuda|auto`` and ``--precision fp32|int8``."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from thinkingearth.cli import main
from thinkingearth.data.export import export_world
from thinkingearth.data.synthetic import FLOOD_CLASSES, LANDCOVER_CLASSES
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.infer import predictor
from thinkingearth.infer.predictor import resolve_device
from thinkingearth.infer.task_model import Int8EncoderBackbone, load_task
from thinkingearth.models.baselines import build_baseline
from thinkingearth.models.weights import create_encoder
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.checkpoint import save_task
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

SIZE = 96


def _has_onnxruntime() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


needs_onnx = pytest.mark.skipif(not _has_onnxruntime(), reason="needs thinkingearth[onnx]")


def _encoder(depth: int = 4) -> EncoderBackbone:
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=depth, num_heads=3, patch_size=8, img_size=48
    )
    return EncoderBackbone(encoder)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    export_world(root / "native", "native", n=1, size=SIZE)
    return root / "native" / "scene_00000"


def _bands(path: Path) -> tuple[str, ...]:
    with rasterio.open(path) as src:
        return tuple(src.descriptions)


@pytest.fixture(scope="module")
def landcover(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    module = SegmentationTask(_encoder(), len(LANDCOVER_CLASSES), decoder_channels=16).eval()
    path = tmp_path_factory.mktemp("ckpt") / "landcover"
    return save_task(
        module,
        path,
        task="landcover",
        classes=LANDCOVER_CLASSES,
        sensor="sentinel-2-l2a",
        bands=_bands(scene / "s2.tif"),
        normaliser=Normaliser(),
        tile=SIZE,
    )


@pytest.fixture(scope="module")
def unet(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    bands = _bands(scene / "s2.tif")
    args = {"name": "unet", "in_channels": len(bands), "unet_widths": (8, 16)}
    net = build_baseline(
        "unet", "segmentation", len(bands), len(LANDCOVER_CLASSES), unet_widths=(8, 16)
    )
    module = SegmentationTask(net, len(LANDCOVER_CLASSES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "unet"
    return save_task(
        module,
        path,
        task="landcover",
        classes=LANDCOVER_CLASSES,
        sensor="sentinel-2-l2a",
        bands=bands,
        normaliser=Normaliser(),
        tile=SIZE,
        baseline=args,
    )


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


# --- device -----------------------------------------------------------------------------------


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(UserInputError, match="PyTorch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(UserInputError, match="expected one of: cpu, cuda, auto"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", precision="int8") == torch.device("cpu")  # ONNX Runtime: CPU
    with pytest.raises(
        UserInputError, match="int8 precision runs the quantised encoder on the CPU"
    ):
        resolve_device("cuda", precision="int8")


def test_device_cuda_without_cuda_is_one_line(
    scene: Path,
    landcover: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "lc.tif"
    argv = ["predict", "--task", "landcover", "--image", str(scene / "s2.tif")]
    argv += ["--weights", str(landcover), "--out", str(out)]
    _one_line_error([*argv, "--device", "cuda"], capsys, "--device cuda, but PyTorch sees no CUDA")
    _one_line_error([*argv, "--device", "tpu"], capsys, "unknown device 'tpu'")
    _one_line_error([*argv, "--precision", "fp16"], capsys, "unknown --precision 'fp16'")
    flood = ["predict", "--task", "water", "--scenes", str(tmp_path), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _one_line_error([*flood, "--device", "cuda"], capsys, "--scenes runs on CPU Dask workers")
    assert not out.exists()


def test_predict_passes_the_device(
    scene: Path, landcover: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    real = predictor.predict_scene

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("device"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(predictor, "predict_scene", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["predict", "--task", "landcover", "--image", str(scene / "s2.tif")]
    argv += ["--weights", str(landcover), "--out", str(tmp_path / "lc.tif")]
    assert main(argv) == 0  # default auto: the CPU here
    assert seen == [torch.device("cpu")]


# --- precision --------------------------------------------------------------------------------


@needs_onnx
def test_int8_class_maps_agree_with_fp32(
    scene: Path, landcover: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", "--task", "landcover", "--image", str(scene / "s2.tif")]
    argv += ["--weights", str(landcover), "--tile", "48", "--overlap", "8", "--no-quicklook"]
    fp32, int8 = tmp_path / "fp32.tif", tmp_path / "int8.tif"
    assert main([*argv, "--out", str(fp32)]) == 0
    capsys.readouterr()
    cache = tmp_path / "cache"
    int8_argv = [*argv, "--precision", "int8", "--device", "cpu", "--int8-cache", str(cache)]
    assert main([*int8_argv, "--out", str(int8)]) == 0
    assert "on cpu, int8 encoder)" in capsys.readouterr().err  # it says what it runs
    # The quantised graph stays in the cache and a second run uses it instead of rebuilding.
    (graph,) = cache.glob("levels-*-int8pc.onnx")
    built = graph.stat().st_mtime_ns
    again = tmp_path / "int8-again.tif"
    assert main([*int8_argv, "--out", str(again)]) == 0
    assert list(cache.glob("*.onnx")) == [graph] and graph.stat().st_mtime_ns == built
    assert np.array_equal(_classes(again), _classes(int8))
    a, b = _classes(fp32), _classes(int8)
    valid = a != 255
    assert valid.mean() > 0.5 and np.array_equal(valid, b != 255)
    assert (a[valid] == b[valid]).mean() > 0.95
    with rasterio.open(int8) as src:
        assert src.tags()["PRECISION"].startswith("int8")
    with rasterio.open(fp32) as src:
        assert src.tags()["PRECISION"] == "fp32"


@needs_onnx
def test_int8_network_is_quantised_and_close(scene: Path, landcover: Path) -> None:
    exact, quantised = load_task(landcover), load_task(landcover, precision="int8")
    backbone = quantised.network.module.backbone  # type: ignore[union-attr]
    assert isinstance(backbone, Int8EncoderBackbone)
    with rasterio.open(scene / "s2.tif") as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None, None]  # [1, 1, C, H, W]
    with torch.inference_mode():
        p, q = exact.network(x), quantised.network(x)
    assert backbone.int8_levels.path is not None  # the int8 graph ran
    assert not torch.equal(p, q)  # quantised, not the fp32 modules again
    assert (p - q).abs().max().item() < 0.1
    assert (p.argmax(1) == q.argmax(1)).float().mean().item() > 0.95
    clone = pickle.loads(pickle.dumps(quantised))  # what --scenes sends to Dask workers
    with torch.inference_mode():
        assert torch.equal(clone.network(x), q)  # its graph rebuilt there, the same
    # With autograd (fine-tuning) the fp32 modules run.
    feats = backbone.levels(
        torch.randn(1, 12, 48, 48), {"bands": exact.bands, "sensor": exact.sensor}
    )
    assert feats[0].requires_grad


@needs_onnx
def test_int8_levels_match_forward_intermediates() -> None:
    from thinkingearth.models.int8 import Int8Levels

    torch.manual_seed(0)
    encoder = create_encoder("thinkingearth_vit_tiny", depth=3, img_size=32).eval()
    bands = ["sentinel-1-grd:VV", "sentinel-1-grd:VH"]
    image = torch.randn(2, 2, 32, 48)
    levels = Int8Levels(indices=(0, 0, -1, 1), norm=True)
    with torch.inference_mode():
        expected = encoder.forward_intermediates(image, bands, indices=[0, 0, 2, 1], norm=True)
        tokens, grid = encoder.embed(image, bands)
        got = levels(encoder, tokens, grid)
    assert levels.path is not None and levels.path.name.startswith("levels-")
    for a, b in zip(expected, got, strict=True):
        assert a.shape == b.shape == (2, encoder.embed_dim, 2, 3)
        cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))
        # the encoder's pooled int8 path gives 0.975 on this random-weight, random-input case
        assert cos.min().item() > 0.95
    assert torch.equal(got[0], got[1])
    for other in (copy.deepcopy(levels), pickle.loads(pickle.dumps(levels))):
        assert other.indices == levels.indices and other.norm and other.path is None


@needs_onnx
def test_int8_change_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = ChangeTask(_encoder(), 3, decoder_channels=16, class_names=FLOOD_CLASSES).eval()
    path = save_task(
        module,
        tmp_path / "flood",
        task="flood",
        classes=FLOOD_CLASSES,
        sensor="sentinel-1-grd",
        bands=("VV", "VH"),
        normaliser=Normaliser(),
        tile=48,
        acquisitions=3,
    )
    exact, quantised = load_task(path), load_task(path, precision="int8")
    x = torch.rand(2, 3, 2, 48, 48) * 0.2
    with torch.inference_mode():
        p, q = exact.network(x), quantised.network(x)
    assert not torch.equal(p, q)
    assert (p.argmax(1) == q.argmax(1)).float().mean().item() > 0.95


def test_int8_refused_where_the_model_has_no_int8_path(
    scene: Path,
    unet: Path,
    planted_flood: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "x.tif"
    argv = ["predict", "--task", "landcover", "--image", str(scene / "s2.tif"), "--out", str(out)]
    _one_line_error(
        [*argv, "--weights", str(unet), "--precision", "int8"], capsys, "UNet baseline; int8"
    )
    pre, post = planted_flood
    flood = ["predict", "--task", "flood", "--pre", str(pre), "--post", str(post)]
    _one_line_error(
        [*flood, "--out", str(out), "--precision", "int8"],
        capsys,
        "the threshold model has no network weights to quantise",
    )
    assert not out.exists()


@pytest.fixture
def planted_flood(scene: Path) -> tuple[Path, Path]:
    return scene / "s1_sl1.tif", scene / "s1_ms1.tif"
