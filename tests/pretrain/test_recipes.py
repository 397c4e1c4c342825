"""Every recipe trains; MAE's dynamic decoder reconstructs whatever bands come in."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from thinkingearth.data.sample import collate
from thinkingearth.models import create_encoder, load, save
from thinkingearth.pretrain import run_pretrain
from thinkingearth.pretrain.data import PretrainDataModule
from thinkingearth.pretrain.modules import MAEPretrain, build_module
from thinkingearth.pretrain.teacher import Teacher
from thinkingearth.pretrain.transforms import Normaliser


def _first_batch(module: PretrainDataModule):
    module.build()
    loader = module.train_dataloader()
    return next(iter(loader))


class _PoolNet(nn.Module):
    """A non-encoder teacher: any torch module returning feature maps."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, kernel_size=4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "recipe", ["mae", "softcon", "supcon", "simclr", "cross_sensor", "distill"]
)
def test_each_recipe_computes_a_finite_loss_with_gradients(tiny, recipe):
    extra: dict = {"recipe": recipe}
    if recipe == "cross_sensor":
        extra["data"] = {"pair": ["sentinel-1-grd", "sentinel-2-l2a"]}
    if recipe == "distill":
        extra["distill"] = {"teacher_bands": ["B04", "B03", "B02"], "sensors": ["s2"]}
        extra["data"] = {"sensors": [{"sensor": "s2", "n": 16}]}
    config = tiny(**extra)
    normaliser = Normaliser()
    data = PretrainDataModule(config, normaliser)
    batch = _first_batch(data)
    teacher = Teacher(_PoolNet(3), ["B04", "B03", "B02"]) if recipe == "distill" else None
    module = build_module(config, normaliser, teacher)
    loss, parts = module.compute_losses(batch)
    assert torch.isfinite(loss) and parts
    loss.backward()
    grads = [p.grad for p in module.encoder.blocks.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_dynamic_decoder_reconstructs_any_bands_of_any_sensor(tiny):
    config = tiny()
    normaliser = Normaliser()
    module = MAEPretrain(config, normaliser)
    cases = [
        ("sentinel-2-l2a", ("B02", "B8A", "B12")),
        ("sentinel-2-l2a", ("B04",)),
        ("sentinel-1-grd", ("VH", "VV")),
        ("copernicus-dem", ("DEM",)),
        ("sentinel-3-olci", ("Oa08", "Oa17")),
    ]
    latent = torch.randn(2, 1 + 4, config.mae.decoder_dim * 0 + module.encoder.embed_dim)
    ids_restore = torch.arange(16).repeat(2, 1)
    outputs = []
    for sensor, bands in cases:
        pred = module.decoder(latent, ids_restore, (4, 4), sensor, bands)
        assert pred.shape == (2, 16, len(bands), 64)
        outputs.append(pred)
    # Different bands get different output layers.
    assert not torch.allclose(outputs[2][:, :, 0], outputs[2][:, :, 1])


def test_mae_overfits_one_batch(tiny):
    config = tiny(optim={"lr": 3e-3, "warmup_steps": 0})
    normaliser = Normaliser()
    batch = _first_batch(PretrainDataModule(config, normaliser))
    module = MAEPretrain(config, normaliser)
    optimiser = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # the same step (same mask and crop) every time
        loss, _ = module.compute_losses(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


def test_run_mae_with_distillation_writes_a_loadable_encoder_and_logs(tiny, tmp_path):
    teacher = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=24, depth=1, num_heads=2, hyper_dim=16, patch_size=8
    )
    save(teacher, tmp_path / "teacher")
    config = tiny(
        distill={"teacher": {"checkpoint": str(tmp_path / "teacher.safetensors")}, "weight": 0.5}
    )
    result = run_pretrain(config, tmp_path / "run", log=None)
    out = tmp_path / "run"
    assert result.steps == 4 and result.encoder == out / "encoder.safetensors"
    encoder = load(result.encoder)
    assert encoder.config.embed_dim == 32
    image = torch.randn(2, 2, 32, 32)
    assert encoder(image, bands=["VV", "VH"], sensor="s1").shape == (2, 32)
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [
        "step-00000002.ckpt",
        "step-00000004.ckpt",
    ]
    with open(out / "logs" / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert {"train/loss", "train/lr", "train/mae", "train/distill"} <= set(rows[0])
    assert any(r["train/mae/sentinel-1-grd"] for r in rows)
    assert any(r["train/mae/sentinel-2-l2a"] for r in rows)
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["recipe"] == "mae"
    assert (out / "config.yaml").is_file() and (out / "normalisation.json").is_file()


def test_distill_teacher_from_a_factory(tiny, tmp_path):
    config = tiny(
        recipe="distill",
        data={"sensors": [{"sensor": "s2", "n": 16}]},
        distill={
            "teacher": {
                "factory": "torch.nn:Conv2d",
                "kwargs": {"in_channels": 3, "out_channels": 5, "kernel_size": 8, "stride": 8},
            },
            "teacher_bands": ["B04", "B03", "B02"],
        },
        trainer={"max_steps": 2},
    )
    result = run_pretrain(config, tmp_path / "run", log=None)
    assert result.steps == 2 and result.final_loss is not None


def test_any_band_subset_batch_trains(tiny):
    config = tiny(data={"sensors": [{"sensor": "s2", "bands": ["B08", "B04"], "n": 16}]})
    normaliser = Normaliser()
    batch = _first_batch(PretrainDataModule(config, normaliser))
    assert batch["bands"][0] == ("B08", "B04")
    loss, parts = MAEPretrain(config, normaliser).compute_losses(batch)
    assert torch.isfinite(loss) and "mae/sentinel-2-l2a" in parts
    assert collate  # the batch came through the shared collate
