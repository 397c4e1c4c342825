"""VLModel: one model for every sensor, raw Samples, dense maps, and its files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from vl_helpers import tiny_vl_model

from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.errors import UserInputError
from thinkingearth.models.weights import CheckpointFormatError
from thinkingearth.vl.model import VLModel, load_vl_model, save_vl_model

SENSORS = (
    "sentinel-2-l2a",
    "sentinel-1-grd",
    "sentinel-3-olci",
    "sentinel-5p",
    "copernicus-dem",
)


def _samples(sensor: str, n: int = 2, size: int = 32) -> list[dict]:
    data = SyntheticCopernicus("none", sensor, "val", n=n, size=size, seed=3)
    return [data[i] for i in range(n)]


def test_encodings_are_unit_vectors_in_the_text_space() -> None:
    model = tiny_vl_model()
    assert model.embed_dim == 384
    image = torch.randn(3, 4, 32, 32)
    z = model.encode_image(image, ["B02", "B03", "B04", "B08"], sensor="sentinel-2-l2a")
    assert z.shape == (3, 384)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    dense = model.encode_image_dense(image, ["B02", "B03", "B04", "B08"], sensor="sentinel-2-l2a")
    assert dense.shape == (3, 384, 4, 4)
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(3, 4, 4))
    t = model.encode_text(["a lake", "a town"])
    assert t.shape == (2, 384)
    # the frozen text encoder is not part of the model's weights or checkpoints
    assert not any(k.startswith("text") for k in model.state_dict())


def test_one_model_serves_s1_s2_s3_s5p_and_dem() -> None:
    model = tiny_vl_model()
    samples = [s for sensor in SENSORS for s in _samples(sensor)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # S3/S5P/DEM statistics estimated from the samples
        z = model.encode_samples(samples)
    assert z.shape == (len(samples), 384)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(samples)))
    # Input order is kept although samples are grouped by sensor: one at a time gives the rows.
    shuffled = samples[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z_reversed = model.encode_samples(shuffled)
    torch.testing.assert_close(z_reversed, z.flip(0), rtol=1e-4, atol=1e-5)
    # different sensors of one place are different inputs, not one collapsed vector
    assert float((z[0] - z[2]).abs().max()) > 1e-3


def test_encode_samples_normalises_from_the_sample_units() -> None:
    model = tiny_vl_model()
    linear = _samples("sentinel-1-grd", n=1)[0]
    # 0 sigma0 is Sentinel-1's no-data value in linear units but a real value in dB
    linear["image"] = linear["image"].clamp_min(1e-4)
    in_db = dict(linear, image=10 * torch.log10(linear["image"].clamp_min(1e-6)), units="db")
    z = model.encode_samples([linear, in_db])
    torch.testing.assert_close(z[0], z[1], rtol=1e-4, atol=1e-4)
    wrong = dict(in_db, units="linear")  # dB values read as linear sigma0: another input
    assert float((model.encode_samples([wrong])[0] - z[0]).abs().max()) > 1e-3


def test_encode_samples_warns_about_unaligned_bands_and_missing_stats() -> None:
    model = tiny_vl_model(sensors={"sentinel-2-l2a": ["B02", "B03", "B04"]})
    s2 = _samples("sentinel-2-l2a", n=1)
    with pytest.warns(UserWarning, match=r"never aligned with text"):
        model.encode_samples(s2)
    assert model.unaligned_bands("sentinel-2-l2a", ["B04", "B08"]) == ["B08"]
    assert model.unaligned_bands("sentinel-1-grd", ["VV"]) == ["VV"]
    with pytest.warns(UserWarning) as caught:
        model.encode_samples(_samples("copernicus-dem"))
    messages = [str(w.message) for w in caught]
    assert any("estimated them from the 2 given" in m for m in messages), messages
    assert any("DEM were never aligned with text" in m for m in messages), messages


def test_encode_samples_refuses_time_series_and_non_samples() -> None:
    model = tiny_vl_model()
    series = SyntheticCopernicus("flood", "sentinel-1-grd", "val", n=1, size=32)[0]
    with pytest.raises(UserInputError, match=r"one image \[C, H, W\] per sample"):
        model.encode_samples([series])
    with pytest.raises(UserInputError, match=r"lacks image, sensor or bands"):
        model.encode_samples([{"image": torch.zeros(3, 8, 8)}])
    assert model.encode_samples([]).shape == (0, 384)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = tiny_vl_model(loss="siglip", sensors={"sentinel-1-grd": ["VV", "VH"]})
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    model.normaliser.fit("copernicus-dem", ["DEM"], [torch.rand(1, 8, 8) * 100])
    path = save_vl_model(model, tmp_path / "vl_model")
    assert path == tmp_path / "vl_model.safetensors"
    header = json.loads((tmp_path / "vl_model.json").read_text())
    assert header["format"] == "thinkingearth.vl_model"
    assert header["text"] == {
        "spec": "minilm",
        "name": "all-MiniLM-L6-v2",
        "dim": 384,
        "trainable": False,
    }
    assert header["sensors"] == {"sentinel-1-grd": ["VV", "VH"]}
    assert header["loss"] == "siglip" and header["logit_bias"] == -10.0
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.sha256 == header["weights_sha256"] == digest
    for where in (tmp_path, path, tmp_path / "vl_model.json", tmp_path / "vl_model"):
        loaded = load_vl_model(where)
        assert isinstance(loaded, VLModel) and loaded.sha256 == digest
    assert float(loaded.logit_scale.detach()) == 2.5
    assert loaded.normaliser.stats == model.normaliser.stats
    assert loaded.describe()["sensors"] == {"sentinel-1-grd": ["VV", "VH"]}
    samples = _samples("sentinel-1-grd")
    torch.testing.assert_close(loaded.encode_samples(samples), model.encode_samples(samples))


def test_tuned_text_weights_live_in_the_model_file(tmp_path: Path, tiny_st: Path) -> None:
    model = tiny_vl_model(f"sentence-transformers:{tiny_st}", trainable=True)
    assert any(k.startswith("text_tower.") for k in model.state_dict())
    with torch.no_grad():
        for parameter in model.text.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_vl_model(model, tmp_path / "m")
    loaded = load_vl_model(tmp_path / "m.safetensors")
    assert loaded.text.trainable
    fresh = tiny_vl_model(f"sentence-transformers:{tiny_st}", trainable=True)
    texts = ["a lake", "a flooded town"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(texts), model.eval().encode_text(texts))
        assert float((fresh.encode_text(texts) - loaded.encode_text(texts)).abs().max()) > 1e-3


def test_loading_a_text_encoder_draws_no_bar_unless_verbose(
    tiny_st: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thinkingearth.output import use_verbosity
    from thinkingearth.vl.text import load_text_encoder

    spec = f"sentence-transformers:{tiny_st}"  # trainable: loaded afresh, never cached
    for level in ("quiet", "normal"):
        with use_verbosity(level):  # type: ignore[arg-type]
            load_text_encoder(spec, trainable=True)
        assert "Loading weights" not in capsys.readouterr().err, level
    with use_verbosity("verbose"):
        load_text_encoder(spec, trainable=True)
    assert "Loading weights" in capsys.readouterr().err


def test_bad_model_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"does not exist"):
        load_vl_model(tmp_path)
    step = tmp_path / "run" / "checkpoints" / "step-00000100.ckpt"
    with pytest.raises(CheckpointFormatError, match=r"training checkpoint") as info:
        load_vl_model(step)  # what a VL pretrain run leaves besides its model
    assert str(tmp_path / "run" / "vl_model.safetensors") in str(info.value)
    model = tiny_vl_model()
    save_vl_model(model, tmp_path / "vl_model")
    other = tmp_path / "other"
    other.mkdir()
    tensors = (tmp_path / "vl_model.safetensors").read_bytes()
    (other / "vl_model.json").write_text((tmp_path / "vl_model.json").read_text())
    (other / "vl_model.safetensors").write_bytes(tensors[:-10] + b"0123456789")
    with pytest.raises(UserInputError, match=r"different saves") as info:
        load_vl_model(other)
    assert "\n" not in str(info.value)
    # a truncated copy (an interrupted download) says so, not "another save"
    (other / "vl_model.safetensors").write_bytes(tensors[: len(tensors) // 2])
    with pytest.raises(CheckpointFormatError, match=r"truncated or damaged") as info:
        load_vl_model(other)
    assert "\n" not in str(info.value) and "different saves" not in str(info.value)
    (other / "vl_model.json").write_text("{not json")
    with pytest.raises(UserInputError, match=r"not a readable JSON"):
        load_vl_model(other)
    (other / "vl_model.json").write_text(json.dumps({"format": "thinkingearth.encoder"}))
    with pytest.raises(UserInputError, match=r"expected format 'thinkingearth.vl_model'"):
        load_vl_model(other)
    header = json.loads((tmp_path / "vl_model.json").read_text())
    header.pop("weights_sha256")
    (other / "vl_model.json").write_text(json.dumps(header))
    (other / "vl_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match=r"not a readable safetensors"):
        load_vl_model(other)
