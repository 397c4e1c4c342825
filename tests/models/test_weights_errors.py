"""Bad encoder files are one-line CheckpointFormatErrors: truncated safetensors, and a training
checkpoint given where an encoder is expected (which names OUT/encoder.safetensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from thinkingearth.cli import main
from thinkingearth.models import create_encoder, load, save
from thinkingearth.models.weights import CheckpointFormatError


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    encoder = create_encoder("thinkingearth_vit_tiny", depth=1, embed_dim=32, num_heads=2)
    return save(encoder, tmp_path_factory.mktemp("enc") / "encoder")


@pytest.mark.parametrize("keep", [0.5, 0.99, 16, 4])
def test_truncated_safetensors_is_a_checkpoint_format_error(
    saved: Path, tmp_path: Path, keep: float
) -> None:
    data = saved.read_bytes()
    size = int(len(data) * keep) if keep < 1 else int(keep)
    cut = tmp_path / "encoder.safetensors"
    cut.write_bytes(data[:size])
    (tmp_path / "encoder.json").write_bytes(saved.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointFormatError) as caught:
        load(cut)
    message = str(caught.value)
    assert "\n" not in message and str(cut) in message and "truncated" in message


def test_truncated_encoder_on_the_command_line_is_one_line(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "encoder.safetensors"
    cut.write_bytes(saved.read_bytes()[:1000])
    (tmp_path / "encoder.json").write_bytes(saved.with_suffix(".json").read_bytes())
    argv = ["finetune", "--config", "synthetic-flood", "--encoder", str(cut), "--max-steps", "1"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("thinkingearth: error")]
    assert "Traceback" not in err and len(errors) == 1
    assert "encoder.safetensors" in errors[0] and "truncated" in errors[0]


def test_a_training_checkpoint_names_the_encoder_file(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    ckpt = folder / "step-00000004.ckpt"
    torch.save(  # what Lightning writes (weights_only-readable)
        {
            "pytorch-lightning_version": "2.6.0",
            "global_step": 4,
            "state_dict": {"encoder.cls_token": torch.zeros(1, 1, 32)},
            "loops": {},
        },
        ckpt,
    )
    with pytest.raises(CheckpointFormatError) as caught:
        load(ckpt)
    message = str(caught.value)
    assert "\n" not in message and "training checkpoint" in message
    assert str(tmp_path / "run" / "encoder.safetensors") in message


def test_an_unreadable_ckpt_says_the_same(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointFormatError, match=r"OUT/encoder\.safetensors"):
        load(ckpt)
