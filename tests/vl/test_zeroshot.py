"""Zero-shot classification and maps: prompt-ensemble heads, dense logits, the streaming
predictor writing a COG from a tiny GeoTIFF, and the ``zeroshot`` command's errors.

The text side is a tiny hashing bag-of-words encoder (no MiniLM load: these tests are about the
zero-shot machinery, not the language model). The map tests plant a model whose per-patch
embedding is the "water" class embedding where band B02 is bright and "forest" where it is
dark, so the map's truth is known.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from torch import Tensor, nn

from thinkingearth.cli import main
from thinkingearth.data.scene import Acquisition
from thinkingearth.errors import UserInputError
from thinkingearth.infer.predictor import predict_scene
from thinkingearth.infer.writers import uncertainty_path
from thinkingearth.models import create_encoder
from thinkingearth.vl.model import VLModel, save_vl_model
from thinkingearth.vl.prompts import class_embeddings
from thinkingearth.vl.zeroshot import (
    UnalignedInputWarning,
    ZeroShotClassifier,
    image_sensor_bands,
    parse_classnames,
    zeroshot_scene_model,
)

S2 = "sentinel-2-l2a"
BANDS = ("B02", "B03", "B04", "B08")


class HashText(nn.Module):
    """A deterministic bag-of-words text encoder: each word adds to one hashed dimension."""

    name = "hash-bow"
    dim = 32
    spec = "hash-bow"
    trainable = False

    def encode(self, texts: Sequence[str]) -> Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in text.lower().replace(".", " ").split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return F.normalize(out, dim=-1)


def _encoder() -> Any:
    torch.manual_seed(0)
    return create_encoder(
        "thinkingearth_vit_tiny", depth=2, embed_dim=48, num_heads=3, img_size=32, patch_size=8
    )


def _model(sensors: dict[str, list[str]] | None = None) -> VLModel:
    return VLModel(_encoder(), HashText(), sensors=sensors or {S2: list(BANDS)}).eval()


class PlantedVL(VLModel):
    """Per-patch embedding: the first class's embedding where B02 (normalised) is above 0, the
    second's elsewhere; pooled: the majority of its patches."""

    classes: tuple[str, str] = ("water", "forest")

    def encode_image_dense(self, image: Tensor, bands: Sequence[str], **_: Any) -> Tensor:
        weights = class_embeddings(self, self.classes)
        bright = F.avg_pool2d(image[:, :1], 8) > 0  # [B, 1, h, w]
        chosen = torch.where(
            bright, weights[0][None, :, None, None], weights[1][None, :, None, None]
        )
        return F.normalize(chosen, dim=1)

    def encode_image(self, image: Tensor, bands: Sequence[str], **kw: Any) -> Tensor:
        return F.normalize(self.encode_image_dense(image, bands, **kw).mean(dim=(2, 3)), dim=-1)


def _write(path: Path, data: np.ndarray, descriptions: Sequence[str]) -> Path:
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs="EPSG:32633",
        transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0),
        nodata=0,
    ) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions, start=1):
            dst.set_band_description(i, name)
    return path


def _two_halves(
    path: Path, descriptions: Sequence[str] = BANDS, size: tuple[int, int] = (96, 160)
) -> Path:
    """Bright B02 (3000) in the left half, dark (300) in the right; other bands mid-grey."""
    h, w = size
    data = np.full((len(descriptions), h, w), 1500, dtype=np.uint16)
    data[0, :, : w // 2] = 3000
    data[0, :, w // 2 :] = 300
    return _write(path, data, descriptions)


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


def test_class_weights_are_the_prompt_ensemble_and_logits_scale_times_cosine() -> None:
    model = _model()
    templates = ("a satellite image of {}.", "a photo of {} from above.")
    head = ZeroShotClassifier(model, ["water", "tree cover", "cropland"], templates)
    text = HashText()
    for k, name in enumerate(["water", "tree cover", "cropland"]):
        per_template = text.encode([t.replace("{}", name) for t in templates])
        expected = F.normalize(per_template.mean(0), dim=0)
        assert torch.allclose(head.class_weights[k], expected, atol=1e-6)
    # an embedding equal to a class weight scores scale on it and less on the others
    logits = head.logits(head.class_weights)
    scale = float(model.logit_scale.detach().exp())
    assert torch.allclose(logits.diagonal(), torch.full((3,), scale), atol=1e-4)
    assert logits.argmax(1).tolist() == [0, 1, 2]
    image = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        direct = scale * model.encode_image(image, BANDS, sensor=S2) @ head.class_weights.T
        assert torch.allclose(head(image, BANDS, sensor=S2), direct, atol=1e-4)
    probs = head.probabilities(logits)
    assert torch.allclose(probs.sum(1), torch.ones(3))
    multi = head.probabilities(logits, multilabel=True)  # sigmoid(logit + bias), bias 0 (CLIP)
    assert torch.allclose(multi, torch.sigmoid(logits))


def test_dense_logits_follow_the_patches_and_are_upsampled_to_pixels() -> None:
    model = PlantedVL(_encoder(), HashText()).eval()
    head = ZeroShotClassifier(model, ["water", "forest"])
    image = torch.full((1, 4, 32, 48), -1.0)
    image[:, 0, :, :16] = 1.0  # the first two patch columns bright
    dense = head.dense(image, BANDS, sensor=S2)
    assert dense.shape == (1, 2, 32, 48)
    classes = dense.argmax(1)[0]
    assert (classes[:, :12] == 0).all() and (classes[:, 20:] == 1).all()
    coarse = head.dense(image, BANDS, sensor=S2, size=(4, 6))
    assert coarse.argmax(1)[0].tolist() == [[0, 0, 1, 1, 1, 1]] * 4
    # the pooled scene prediction: mostly dark patches -> forest
    assert head(image, BANDS, sensor=S2).argmax(1).item() == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [("water", "at least two"), ("water,,", "at least two"), ("water,Water", "twice")],
)
def test_class_lists_that_cannot_classify_are_refused(text: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_classnames(text)
    assert parse_classnames(" water , forest ") == ("water", "forest")


def test_templates_need_one_placeholder() -> None:
    with pytest.raises(UserInputError, match=r"\{\}"):
        ZeroShotClassifier(_model(), ["water", "forest"], ["a satellite image"])


# ----------------------------------------------------------------------------------------------
# Sensors and bands from the image; the unaligned-input warning
# ----------------------------------------------------------------------------------------------


def test_sensor_and_bands_come_from_the_file(tmp_path: Path) -> None:
    path = _two_halves(tmp_path / "s2.tif", ("B02", "B03", "B04", "B08", "B11", "cloud"), (8, 8))
    sensor, bands = image_sensor_bands(path, prefer=(S2,))
    assert sensor == S2 and bands == ("B02", "B03", "B04", "B08", "B11")
    sar = _write(tmp_path / "s1.tif", np.ones((2, 8, 8), dtype=np.float32), ("VV", "VH"))
    assert image_sensor_bands(sar) == ("sentinel-1-grd", ("VV", "VH"))
    odd = _write(tmp_path / "odd.tif", np.ones((2, 8, 8), dtype=np.float32), ("foo", "bar"))
    with pytest.raises(UserInputError, match="no sensor has every band"):
        image_sensor_bands(odd)


def test_warns_once_when_the_alignment_never_saw_the_bands_or_sensor() -> None:
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zeroshot_scene_model(model, ["water", "forest"], S2, BANDS)
    assert not [w for w in caught if issubclass(w.category, UnalignedInputWarning)]
    with pytest.warns(UnalignedInputWarning, match="never saw sentinel-2-l2a band.*B11"):
        zeroshot_scene_model(model, ["water", "forest"], S2, (*BANDS, "B11"))
    with pytest.warns(UnalignedInputWarning, match="never saw sentinel-1-grd"):
        zeroshot_scene_model(model, ["water", "forest"], "sentinel-1-grd", ("VV", "VH"))


# ----------------------------------------------------------------------------------------------
# Through the streaming predictor
# ----------------------------------------------------------------------------------------------


def test_zeroshot_map_through_the_predictor_is_a_cog_with_uncertainty(tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    image = _two_halves(tmp_path / "scene.tif")
    model = PlantedVL(_encoder(), HashText(), sensors={S2: list(BANDS)}).eval()
    scene = zeroshot_scene_model(model, ["water", "forest"], S2, BANDS, tile=64, overlap=16)
    assert scene.task == "zeroshot" and scene.classes == ("water", "forest")
    out = tmp_path / "map.tif"
    result = predict_scene(scene, [Acquisition.from_path("--image", image)], out)
    assert cog_validate(str(out))[0] and cog_validate(str(uncertainty_path(out)))[0]
    with rasterio.open(out) as src:
        classes = src.read(1)
        tags = src.tags()
        assert src.crs.to_epsg() == 32633 and src.transform == Affine(
            10, 0, 500_000, 0, -10, 5_000_000
        )
    assert tags["TASK"] == "zeroshot" and tags["CLASSES"] == "0=water;1=forest"
    assert "prompt" in tags["CLASSES_FROM"] and tags["INPUT_BANDS"] == ",".join(BANDS)
    # bright left half -> water, dark right half -> forest, away from the 8-px patch border
    assert (classes[:, :72] == 0).all() and (classes[:, 88:] == 1).all()
    assert result.class_fractions[0] == pytest.approx(0.5, abs=0.05)
    with rasterio.open(uncertainty_path(out)) as src:
        entropy = src.read(1)
    assert np.isfinite(entropy).all() and float(entropy.max()) <= np.log(2) + 1e-5
    # confident far from the border, least confident on it
    assert entropy[:, :64].mean() < entropy[:, 76:84].mean()
    assert out.with_suffix(".png").is_file()


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def saved_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny VL model saved as a pretrain run writes it; its text spec loads the hash encoder."""
    import thinkingearth.vl.model as vl_model

    real = vl_model.load_text_encoder

    def load(spec: str = "minilm", *, trainable: bool = False) -> Any:
        return HashText() if spec == "hash-bow" else real(spec, trainable=trainable)

    monkeypatch.setattr(vl_model, "load_text_encoder", load)
    folder = tmp_path / "vlrun"
    save_vl_model(_model(), folder / "vl_model")
    return folder


def test_cli_maps_a_scene_and_keeps_predicts_guarantees(
    saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _two_halves(tmp_path / "scene.tif", (*BANDS, "B11"), (40, 72))
    out = tmp_path / "zs.tif"
    args = ["zeroshot", "--weights", str(saved_model), "--image", str(image), "--out", str(out),
            "--classes", "water, forest,cropland", "--tile", "32", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["bands"] == [*BANDS, "B11"] and report["sensor"] == S2
    assert set(report["class_fractions"]) == {"water", "forest", "cropland"}
    assert sum(report["class_fractions"].values()) == pytest.approx(1.0)
    assert "never saw sentinel-2-l2a band(s) B11" in captured.err
    with rasterio.open(out) as src:
        assert src.tags()["TASK"] == "zeroshot" and len(src.tags()["WEIGHTS_SHA256"]) == 64
        assert src.shape == (40, 72)
    assert uncertainty_path(out).is_file() and out.with_suffix(".png").is_file()
    before = out.read_bytes()
    assert main(args) == 2  # an existing output is refused
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite", "--templates", "a satellite image of {}."]) == 0


def test_cli_bad_input_is_one_line_and_exit_2(
    saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _two_halves(tmp_path / "scene.tif", BANDS, (16, 16))
    odd = _write(tmp_path / "odd.tif", np.ones((2, 16, 16), dtype=np.float32), ("foo", "bar"))
    base = ["zeroshot", "--out", str(tmp_path / "o.tif")]
    cases = [
        (["--weights", str(saved_model), "--image", str(image), "--classes", "water"],
         "at least two class names"),
        (["--weights", str(tmp_path / "missing"), "--image", str(image), "--classes", "a,b"],
         "does not exist"),
        (["--weights", str(image), "--image", str(image), "--classes", "a,b"], "vision-language"),
        (["--weights", str(saved_model), "--image", str(odd), "--classes", "a,b"],
         "no sensor has every band"),
        (["--weights", str(saved_model), "--image", str(image), "--classes", "a,b",
          "--templates", "no placeholder"], "{}"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.tif").exists()
