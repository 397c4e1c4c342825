"""Our safetensors format round-trips exactly; unknown files fail with a clear error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from thinkingearth.errors import UserInputError
from thinkingearth.models import CheckpointFormatError, create_encoder, load, save


def test_round_trip_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_encoder("thinkingearth_vit_tiny", depth=2, img_size=32).eval()
    written = save(model, tmp_path / "tiny")
    assert written.name == "tiny.safetensors" and (tmp_path / "tiny.json").is_file()
    header = json.loads((tmp_path / "tiny.json").read_text())
    assert header["format"] == "thinkingearth.encoder" and header["config"]["embed_dim"] == 192
    for path in (written, tmp_path / "tiny.json"):
        loaded = load(path)
        assert loaded.config == model.config
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        image = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            args = dict(bands=["B04", "B03", "B02"], sensor="s2", meta=torch.rand(2, 4))
            assert torch.equal(model(image, **args), loaded(image, **args))


def test_round_trip_of_imported_model(small_cfm: tuple[nn.Module, Path], tmp_path: Path) -> None:
    reference, path = small_cfm
    language = torch.randn(2048)
    imported = load(path, language_table={"Sentinel 5P Ozone": language})
    save(imported, tmp_path / "cfm.safetensors")
    again = load(tmp_path / "cfm.safetensors")
    image = torch.randn(2, 1, 32, 32)
    meta = torch.tensor([[10.0, 50.0, 18_000.0, 1.0], [20.0, -10.0, 18_100.0, 1.0]])
    with torch.no_grad():
        expected = reference(image, meta, language_embed=language, input_mode="variable")
        got = again(image, variable="Sentinel-5P O3", meta=meta)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"encoder.weight": torch.zeros(2)}, "unknown checkpoint format"),
        ({"model": {"stem.conv": torch.zeros(1)}}, "unknown checkpoint format"),
        ([1, 2, 3], "unknown checkpoint format"),
    ],
)
def test_unknown_checkpoint_formats(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=match) as info:
        load(path)
    assert isinstance(info.value, UserInputError) and "\n" not in str(info.value)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"x": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointFormatError, match="weights_only=True"):
        load(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointFormatError, match="cannot read"):
        load(garbage)


def test_safetensors_without_json_and_missing_file(tmp_path: Path) -> None:
    model = create_encoder("thinkingearth_vit_tiny", depth=1, img_size=32)
    save(model, tmp_path / "m")
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointFormatError, match=r"\.json beside it"):
        load(tmp_path / "m.safetensors")
    with pytest.raises(UserInputError, match="does not exist"):
        load(tmp_path / "nothing.pth")


def test_int8_is_not_faked(tmp_path: Path) -> None:
    """precision="int8" really runs a quantised graph (more in test_speed_paths.py)."""
    pytest.importorskip("onnxruntime")
    # Seeded: how close int8 comes to fp32 depends on the draw (0.95-0.999 cosine over seeds);
    # unseeded, the test failed or passed by the order tests ran in.
    torch.manual_seed(0)
    model = create_encoder("thinkingearth_vit_tiny", depth=1, img_size=32)
    path = save(model, tmp_path / "m")
    encoder = load(path, precision="int8", cache_dir=tmp_path / "cache")
    assert encoder.precision == "int8"
    image = torch.randn(2, 2, 32, 32)
    with torch.inference_mode():
        got = encoder(image, ["sentinel-1-grd:VV", "sentinel-1-grd:VH"])
        exact = load(path)(image, ["sentinel-1-grd:VV", "sentinel-1-grd:VH"])
    assert [p.name for p in (tmp_path / "cache").glob("*.onnx")]  # a graph was built ...
    assert not torch.equal(got, exact)  # ... and it is not the fp32 model
    # Tiny random models quantise less well than trained ViT-B (>= 0.9999, benchmarks/): 0.984-0.992
    # over seeds with onnxruntime 1.32.
    assert torch.nn.functional.cosine_similarity(got, exact).min() > 0.98
    with pytest.raises(UserInputError, match="precision"):
        load(path, precision="fp16")  # type: ignore[arg-type]
