"""Uncertainty modules survive a task checkpoint: saved with ``save_task``, rebuilt through
``build_task_module`` from the stored head, they predict exactly as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.data.transforms import Normaliser
from thinkingearth.models import create_encoder
from thinkingearth.models.baselines import build_baseline
from thinkingearth.tasks.checkpoint import load_task_module, save_task
from thinkingearth.tasks.protocols import EncoderBackbone, TaskModule
from thinkingearth.tasks.regression import target_stats
from thinkingearth.tasks.training import build_task_module
from thinkingearth.tasks.variants import UncertaintyHead, register_uncertainty
from thinkingearth.uncertainty import heads

SIZE = 32
BANDS = ("B02", "B03", "B04")
METHODS = ("heteroscedastic", "mc_dropout", "ensemble")


@pytest.fixture(autouse=True, scope="module")
def _one_thread_and_these_builders() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in METHODS:
        register_uncertainty(name, getattr(heads, name)())
    yield
    for name in METHODS:
        register_uncertainty(name, None)
    torch.set_num_threads(before)


def _batch(task: str, sensor: str, bands: tuple[str, ...] | None) -> dict[str, Any]:
    ds = SyntheticCopernicus(task, sensor, n=2, size=SIZE)  # type: ignore[arg-type]
    norm = Normaliser()
    out = []
    for i in range(2):
        s = dict(ds[i])
        if bands is not None:
            keep = [list(s["bands"]).index(b) for b in bands]
            s["image"], s["bands"] = s["image"][..., keep, :, :], bands
        s["image"] = norm(s["image"], s["sensor"], s["bands"])
        out.append(s)
    return collate(out)


def _round_trip(
    module: TaskModule, path: Path, *, classes: int, sensor: str, bands: tuple[str, ...], **kw: Any
) -> TaskModule:
    save_task(
        module.eval(),
        path,
        task="trained",
        classes=[f"c{i}" for i in range(classes)],
        sensor=sensor,
        bands=list(bands),
        normaliser=Normaliser(),
        tile=SIZE,
        **kw,
    )
    header = json.loads(path.with_name(path.name + ".json").read_text())
    assert header["uncertainty"] == module.uncertainty_head.to_dict()
    loaded = load_task_module(path).module
    assert type(loaded) is type(module)
    assert loaded.uncertainty_head == module.uncertainty_head
    return loaded


def _same_predictions(a: TaskModule, b: TaskModule, batch: dict[str, Any]) -> None:
    a.eval(), b.eval()
    torch.manual_seed(7)  # MC dropout draws its masks from the global generator
    first = a.predictive_samples(batch)
    torch.manual_seed(7)
    second = b.predictive_samples(batch)
    assert torch.equal(first, second)
    assert torch.equal(a.step(batch)[1], b.step(batch)[1])
    assert torch.equal(a(batch), b(batch))


def _encoder() -> EncoderBackbone:
    return EncoderBackbone(
        create_encoder("thinkingearth_vit_tiny", depth=2, embed_dim=48), patch_size=8
    )


@pytest.mark.parametrize("method", METHODS)
def test_segmentation_round_trip(method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    batch = _batch("landcover", "sentinel-2-l2a", BANDS)
    head = UncertaintyHead(method, samples=8, mc_samples=3, members=2)  # type: ignore[arg-type]
    module = build_task_module(
        "segmentation",
        _encoder(),
        num_classes=9,
        protocol="finetune",
        lr=1e-3,
        decoder_channels=32,
        uncertainty=head,
    )
    loaded = _round_trip(
        module, tmp_path / "model", classes=9, sensor="sentinel-2-l2a", bands=BANDS
    )
    _same_predictions(module, loaded, batch)


@pytest.mark.parametrize("method", METHODS)
def test_change_with_concat_fusion_round_trip(method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    batch = _batch("flood", "sentinel-1-grd", None)
    head = UncertaintyHead(method, samples=8, mc_samples=3, members=2)  # type: ignore[arg-type]
    module = build_task_module(
        "change",
        _encoder(),
        num_classes=3,
        protocol="linear-probe",
        lr=1e-3,
        ignore_index=3,
        fusion="concat",
        uncertainty=head,
    )
    loaded = _round_trip(
        module, tmp_path / "model", classes=3, sensor="sentinel-1-grd", bands=("VV", "VH")
    )
    _same_predictions(module, loaded, batch)


@pytest.mark.parametrize("method", METHODS)
def test_regression_round_trip_keeps_the_target_statistics(method: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    batch = _batch("biomass", "sentinel-2-l2a", BANDS)
    stats = target_stats(list(batch["target"]))
    head = UncertaintyHead(method, samples=8, mc_samples=3, members=2)  # type: ignore[arg-type]
    module = build_task_module(
        "regression",
        _encoder(),
        num_classes=1,
        protocol="finetune",
        lr=1e-3,
        target_stats=stats,
        decoder_channels=32,
        uncertainty=head,
    )
    loaded = _round_trip(
        module, tmp_path / "model", classes=0, sensor="sentinel-2-l2a", bands=BANDS
    )
    assert (loaded.target_mean, loaded.target_std) == stats  # type: ignore[attr-defined]
    _same_predictions(module, loaded, batch)


def test_an_ensemble_of_baselines_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    batch = _batch("landcover", "sentinel-2-l2a", BANDS)
    unet = build_baseline("unet", "segmentation", 3, 9, unet_widths=(8, 16))
    head = UncertaintyHead("ensemble", members=2)
    module = build_task_module(
        "segmentation", unet, num_classes=9, protocol="finetune", lr=1e-3, uncertainty=head
    )
    loaded = _round_trip(
        module,
        tmp_path / "model",
        classes=9,
        sensor="sentinel-2-l2a",
        bands=BANDS,
        baseline={"name": "unet", "in_channels": 3, "unet_widths": [8, 16]},
    )
    _same_predictions(module, loaded, batch)
