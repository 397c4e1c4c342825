"""``predict --uncertainty total|split``: the entropy and its aleatoric and epistemic parts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import LAND_DB, WATER_DB, speckled, write_raster
from torch import Tensor

from thinkingearth.cli import main
from thinkingearth.data.scene import Acquisition
from thinkingearth.data.transforms import Normaliser
from thinkingearth.errors import UserInputError
from thinkingearth.infer import SceneModel, predict_scene
from thinkingearth.infer.model import WATER_CLASSES, WATER_COLOURS
from thinkingearth.infer.task_model import TaskNetwork, load_task
from thinkingearth.models.weights import create_encoder
from thinkingearth.tasks.checkpoint import save_task
from thinkingearth.tasks.protocols import EncoderBackbone
from thinkingearth.tasks.segmentation import SegmentationTask

SPLIT = ("entropy", "aleatoric", "epistemic")
#: The writer keeps 10 mantissa bits (writers.quantize): relative error at most 2^-11 per value.
RTOL = 2e-3
#: Class probabilities of the fake ensemble's members: they agree on the left half of each tile
#: and disagree on the right half.
SURE = (0.8, 0.2)


def _entropy(p: tuple[float, ...]) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def _encoder() -> EncoderBackbone:
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=48, depth=2, num_heads=3, patch_size=8, img_size=48
    )
    return EncoderBackbone(encoder)


class TwoMembers(SegmentationTask):
    """A plain segmentation module whose two weight samples disagree on the right half.

    Member 0 predicts :data:`SURE` everywhere; member 1 the same on the left half of the tile
    and the classes swapped on the right half. Nothing of the network is used.
    """

    def predictive_samples(self, batch: Mapping[str, Any]) -> Tensor:
        image = batch["image"]
        b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
        sure = torch.tensor(SURE).view(1, 2, 1, 1).expand(b, 2, h, w)
        other = sure.clone()
        other[..., w // 2 :] = sure.flip(1)[..., w // 2 :]
        return torch.stack([sure, other])


def _water_scene(folder: Path, shape: tuple[int, int] = (40, 64)) -> Path:
    """A linear-sigma0 S1 image, water on its left third, no data (0) in its top-left corner."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = shape
    db = np.empty((2, h, w))
    for band in range(2):
        db[band] = LAND_DB[band]
        db[band, :, : w // 3] = WATER_DB[band]
    image = speckled(db, np.random.default_rng(0))
    image[:, :6, :9] = 0.0
    return write_raster(folder / "s1.tif", image)


def _nodata(image: Path) -> np.ndarray:
    with rasterio.open(image) as src:
        return (src.read() == 0).any(axis=0)


def _read(path: Path) -> tuple[np.ndarray, tuple[str | None, ...], dict[str, str], tuple[str, ...]]:
    with rasterio.open(path) as src:
        assert src.dtypes == ("float32",) * src.count
        assert all(math.isnan(v) for v in src.nodatavals)
        return src.read(), tuple(src.descriptions), src.tags(), tuple(src.units)


def _uncertainty(out: Path) -> Path:
    return out.with_name(f"{out.stem}_uncertainty{out.suffix}")


def _two_member_model(tile: int, overlap: int) -> SceneModel:
    module = TwoMembers(_encoder(), 2, decoder_channels=8).eval()
    common = (module, Normaliser(), "sentinel-1-grd", ("VV", "VH"), False)
    return SceneModel(
        network=TaskNetwork(*common),
        split_network=TaskNetwork(*common, split=True),
        task="water",
        classes=WATER_CLASSES,
        colours=WATER_COLOURS,
        sensor="sentinel-1-grd",
        bands=("VV", "VH"),
        tile=tile,
        overlap=overlap,
        sar_units="linear",
        outputs="probabilities",
        fill=(math.nan, math.nan),
        name="two-members",
        uncertainty_method="ensemble",
        weight_samples=2,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain (deterministic) water segmentation checkpoint, 2 classes, tile 64."""
    torch.manual_seed(0)
    module = SegmentationTask(_encoder(), 2, decoder_channels=16).eval()
    path = tmp_path_factory.mktemp("ckpt") / "water"
    save_task(
        module,
        path,
        task="water",
        classes=WATER_CLASSES,
        sensor="sentinel-1-grd",
        bands=("VV", "VH"),
        normaliser=Normaliser(),
        tile=64,
    )
    return path.with_suffix(".safetensors")


def test_split_of_disagreeing_samples_sums_to_the_entropy(tmp_path: Path) -> None:
    image = _water_scene(tmp_path / "scene")
    out = tmp_path / "water.tif"
    # One tile of 64 px: the whole 40 × 64 scene (rows padded), its halves the tile's.
    model = _two_member_model(tile=64, overlap=8)
    result = predict_scene(
        model, [Acquisition.from_path("--image", image)], out, uncertainty="SPLIT"
    )
    assert result.uncertainty_bands == SPLIT
    bands, descriptions, tags, units = _read(_uncertainty(out))
    assert bands.shape == (3, 40, 64) and descriptions == SPLIT and units == ("nats",) * 3
    entropy, aleatoric, epistemic = bands
    nodata = _nodata(image)
    assert nodata.any() and np.isnan(bands[:, nodata]).all()
    valid = ~nodata
    assert np.isfinite(bands[:, valid]).all() and (bands[:, valid] >= 0).all()
    np.testing.assert_allclose(entropy[valid], (aleatoric + epistemic)[valid], rtol=RTOL)
    # The members agree on the left (no epistemic uncertainty), disagree on the right (mean
    # 0.5/0.5: ln 2 in total).
    left, right = valid.copy(), valid.copy()
    left[:, 32:] = False
    right[:, :32] = False
    np.testing.assert_allclose(aleatoric[valid], _entropy(SURE), rtol=RTOL)
    np.testing.assert_allclose(entropy[left], _entropy(SURE), rtol=RTOL)
    assert (epistemic[left] < 1e-6).all()  # float rounding of equal entropies at most
    np.testing.assert_allclose(entropy[right], math.log(2), rtol=RTOL)
    np.testing.assert_allclose(epistemic[right], math.log(2) - _entropy(SURE), rtol=5 * RTOL)
    assert tags["UNCERTAINTY_METHOD"] == "ensemble (2 weight samples per prediction)"
    assert tags["BAND_2"].startswith("aleatoric: expected entropy") and "nats" in tags["BAND_2"]
    assert tags["BAND_3"].startswith("epistemic: mutual information") and "nats" in tags["BAND_3"]
    # The class map is as with --uncertainty total: uint8, one band, its palette.
    with rasterio.open(out) as dst:
        assert dst.count == 1 and dst.dtypes == ("uint8",) and dst.colormap(1)[1]
        classes = dst.read(1)
    assert (classes[valid] == 0).all() and (classes[nodata] == 255).all()  # land: 0.8 everywhere
    total = tmp_path / "total.tif"
    predict_scene(model, [Acquisition.from_path("--image", image)], total, quicklook=False)
    t_bands, t_descriptions, t_tags, _ = _read(_uncertainty(total))
    assert t_descriptions == ("entropy",) and "BAND_2" not in t_tags
    np.testing.assert_array_equal(t_bands[0], entropy)  # total: the same first band


def test_split_over_overlapping_tiles_keeps_the_sum_and_no_data(tmp_path: Path) -> None:
    image = _water_scene(tmp_path / "scene", shape=(70, 90))
    out = tmp_path / "water.tif"
    model = _two_member_model(tile=32, overlap=8)
    predict_scene(model, [Acquisition.from_path("--image", image)], out, uncertainty="split")
    bands, descriptions, _, _ = _read(_uncertainty(out))
    assert descriptions == SPLIT
    nodata = _nodata(image)
    assert np.isnan(bands[:, nodata]).all() and np.isfinite(bands[:, ~nodata]).all()
    entropy, aleatoric, epistemic = bands[:, ~nodata]
    np.testing.assert_allclose(entropy, aleatoric + epistemic, rtol=RTOL, atol=1e-6)
    assert (epistemic >= 0).all() and epistemic.max() > 0.1  # right halves of the tiles
    np.testing.assert_allclose(aleatoric, _entropy(SURE), rtol=RTOL)  # every member's entropy


def test_a_deterministic_checkpoint_splits_with_no_epistemic_part(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _water_scene(tmp_path / "scene", shape=(70, 90))
    out = tmp_path / "split.tif"
    argv = ["predict", "--task", "water", "--image", str(image), "--weights", str(checkpoint)]
    argv += ["--tile", "48", "--overlap", "8", "--no-quicklook"]
    assert main([*argv, "--uncertainty", "split", "--out", str(out)]) == 0
    bands, descriptions, tags, _ = _read(_uncertainty(out))
    assert descriptions == SPLIT
    nodata = _nodata(image)
    assert np.isnan(bands[:, nodata]).all() and np.isfinite(bands[:, ~nodata]).all()
    entropy, aleatoric, epistemic = bands
    assert (epistemic[~nodata] == 0).all()
    np.testing.assert_array_equal(aleatoric, entropy)  # NaN where no data in both
    assert entropy[~nodata].max() > 0
    assert tags["UNCERTAINTY_METHOD"] == "none (one weight sample)"
    for band in ("BAND_2", "BAND_3"):
        assert "one weight sample: epistemic uncertainty not modelled" in tags[band]
    # --uncertainty total (the default): one band, the same entropy, the same class map.
    total = tmp_path / "total.tif"
    assert main([*argv, "--out", str(total)]) == 0
    t_bands, t_descriptions, t_tags, _ = _read(_uncertainty(total))
    assert t_bands.shape[0] == 1 and t_descriptions == ("entropy",)
    assert "BAND_2" not in t_tags and t_tags["BAND_1"].startswith("entropy: predictive entropy")
    np.testing.assert_array_equal(t_bands[0], entropy)
    with rasterio.open(out) as a, rasterio.open(total) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    capsys.readouterr()


def test_task_network_mean_is_the_module_softmax_for_one_sample(checkpoint: Path) -> None:
    model = load_task(checkpoint)
    assert model.uncertainty_method == "none" and model.weight_samples == 1
    assert model.split_network is not None
    x = torch.rand(2, 1, 2, 32, 32) * 0.2
    network = model.network
    assert isinstance(network, TaskNetwork)
    with torch.no_grad():
        probs = network(x)
        split = model.split_network(x)
        image = network.normaliser(x, "sentinel-1-grd", ("VV", "VH"))[:, -1]
        batch = {"image": image, "bands": ["VV", "VH"], "sensor": "sentinel-1-grd"}
        logits = network.module(batch)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1), rtol=0, atol=0)
    assert split.shape == (2, 3, 32, 32)
    torch.testing.assert_close(split[:, :2], probs, rtol=0, atol=0)
    expected = -(probs * probs.log()).sum(dim=1)
    torch.testing.assert_close(split[:, 2], expected, rtol=1e-5, atol=1e-6)


def test_split_without_trained_weights_and_bad_values_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _water_scene(tmp_path / "scene")
    out = tmp_path / "o" / "w.tif"
    water = ["predict", "--task", "water", "--image", str(image), "--out", str(out)]
    cases = [
        (["--model", "threshold", "--uncertainty", "split"], "trained --weights"),
        (["--uncertainty", "Split"], "trained --weights"),  # threshold by default for water
        (["--uncertainty", "both"], "unknown --uncertainty 'both'; expected one of: total, split"),
    ]
    for extra, message in cases:
        assert main([*water, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0 and "Traceback" not in err, err
        assert not out.parent.exists() or not any(out.parent.iterdir())
    assert main([*water, "--uncertainty", "TOTAL", "--no-quicklook"]) == 0
    _, descriptions, _, _ = _read(_uncertainty(out))
    assert descriptions == ("entropy",)


def test_predict_scene_refuses_split_for_a_model_without_weight_samples(tmp_path: Path) -> None:
    from thinkingearth.infer import threshold_model

    image = _water_scene(tmp_path / "scene")
    out = tmp_path / "w.tif"
    with pytest.raises(UserInputError, match="trained --weights"):
        predict_scene(
            threshold_model("water"),
            [Acquisition.from_path("--image", image)],
            out,
            uncertainty="split",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_many_scenes_pass_the_split_through(tmp_path: Path) -> None:
    from thinkingearth.infer.batch import plan_jobs, predict_many

    scenes = [
        (name, [Acquisition.from_path("--image", _water_scene(tmp_path / name))])
        for name in ("a", "b")
    ]
    jobs = plan_jobs(scenes, tmp_path / "maps")
    model = _two_member_model(tile=64, overlap=8)
    with pytest.raises(UserInputError, match="unknown uncertainty 'both'"):
        predict_many(jobs, model, processes=False, workers=1, uncertainty="both")  # type: ignore[arg-type]
    result = predict_many(
        jobs, model, processes=False, workers=1, quicklook=False, uncertainty="split"
    )
    assert sorted(result.done) == ["a", "b"] and not result.failed
    for job in jobs:
        bands, descriptions, _, _ = _read(_uncertainty(job.out))
        assert descriptions == SPLIT
        assert np.nanmax(bands[2]) > 0.1  # the members' disagreement, as epistemic
