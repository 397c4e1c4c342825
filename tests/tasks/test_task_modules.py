"""Task LightningModules: each task trains and tests through Lightning, protocols freeze what
they should, ignore pixels and NaN targets count nowhere."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder
from thinkingearth.models.baselines import Backbone, UNet, build_baseline
from thinkingearth.pretrain.transforms import Normaliser
from thinkingearth.tasks import (
    ChangeTask,
    ClassificationTask,
    EncoderBackbone,
    RegressionTask,
    SegmentationTask,
)
from thinkingearth.tasks.protocols import FeatureCache, TaskModule
from thinkingearth.tasks.regression import target_stats


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the tensors here are tiny, and two threads per op on a shared
    2-core machine spend more time waiting for each other than computing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _samples(task: str, sensor: str, n: int = 4, size: int = 32) -> list[dict[str, Any]]:
    ds = SyntheticCopernicus(task, sensor, n=n, size=size)  # type: ignore[arg-type]
    norm = Normaliser()
    out = []
    for i in range(n):
        s = dict(ds[i])
        s["image"] = norm(s["image"], s["sensor"], s["bands"])
        s["key"] = f"train:{i}"
        out.append(s)
    return out


def _encoder_backbone() -> EncoderBackbone:
    return EncoderBackbone(create_encoder("thinkingearth_vit_tiny", depth=2), patch_size=8)


def _fit_and_test(module: TaskModule, samples: list[dict[str, Any]]) -> dict[str, float]:
    loader = DataLoader(samples, batch_size=2, shuffle=False, collate_fn=collate)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert module.val_results  # validation_step ran and its metrics were logged
    trainer.test(module, dataloaders=loader, verbose=False)
    return module.test_results


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_multilabel_linear_probe_trains_the_head_only() -> None:
    L.seed_everything(0, verbose=False)
    backbone = _encoder_backbone()
    before = _snapshot(backbone)
    task = ClassificationTask(backbone, 9, multilabel=True, protocol="linear-probe", lr=1e-2)
    head_before = _snapshot(task.head)
    results = _fit_and_test(task, _samples("multilabel", "sentinel-2-l2a"))
    assert {"map", "map_micro", "oa", "f1_macro", "f1/0"} <= set(results)
    assert not _changed(before, backbone)  # frozen: not one weight moved
    assert _changed(head_before, task.head)
    assert not backbone.training  # a frozen backbone stays in eval mode


def test_single_label_classification_finetune_moves_the_backbone() -> None:
    samples = _samples("multilabel", "sentinel-2-l2a")
    for i, s in enumerate(samples):
        s["label"] = torch.tensor(i % 3)
    backbone = build_baseline("wrn-eca", "classification", 12, 3)
    assert isinstance(backbone, Backbone)
    before = _snapshot(backbone)
    task = ClassificationTask(backbone, 3, class_names=("a", "b", "c"))
    results = _fit_and_test(task, samples)
    assert {"oa", "f1_macro", "f1/a", "recall/c"} <= set(results)
    assert _changed(before, backbone)


@pytest.mark.parametrize("protocol", ["linear-probe", "frozen-upernet", "finetune"])
def test_segmentation_protocols(protocol: str) -> None:
    L.seed_everything(0, verbose=False)
    backbone = _encoder_backbone()
    before = _snapshot(backbone)
    task = SegmentationTask(backbone, 9, protocol=protocol, decoder_channels=16)  # type: ignore[arg-type]
    assert task.head is not None
    assert task.head.kind == ("linear" if protocol == "linear-probe" else "upernet")
    results = _fit_and_test(task, _samples("landcover", "sentinel-2-l2a"))
    assert {"miou", "oa", "iou/0", "f1_macro"} <= set(results)
    assert _changed(before, backbone) == (protocol == "finetune")
    trainable = {id(p) for p in task.trainable_parameters()}
    assert any(id(p) in trainable for p in backbone.parameters()) == (protocol == "finetune")


def test_segmentation_with_a_unet_and_an_all_ignored_batch() -> None:
    samples = _samples("landcover", "sentinel-2-l2a")
    task = SegmentationTask(UNet(12, 9, widths=(8, 16)), 9, ignore_index=255)
    results = _fit_and_test(task, samples)
    assert 0.0 <= results["miou"] <= 1.0
    batch = collate(samples[:2])
    batch["mask"] = torch.full_like(batch["mask"], 255)
    loss, _, _ = task.step(batch)
    assert loss.item() == 0.0
    loss.backward()  # no signal, but a valid graph


@pytest.mark.parametrize(
    ("fusion", "protocol"), [("diff", "frozen-upernet"), ("concat", "linear-probe")]
)
def test_change_detection_with_a_shared_encoder(fusion: str, protocol: str) -> None:
    L.seed_everything(0, verbose=False)
    samples = _samples("flood", "sentinel-1-grd")
    assert samples[0]["image"].shape == (3, 2, 32, 32)
    task = ChangeTask(
        _encoder_backbone(),
        fusion=fusion,  # type: ignore[arg-type]
        protocol=protocol,  # type: ignore[arg-type]
        decoder_channels=16,
    )
    results = _fit_and_test(task, samples)
    assert {"miou", "water_f1", "iou/flood", "f1/permanent_water"} <= set(results)


def test_change_detection_with_baselines_and_bad_input() -> None:
    samples = _samples("flood", "sentinel-1-grd")
    net = build_baseline("siamese-diff", "change", 2, 3, time_steps=3, unet_widths=(8, 16))
    results = _fit_and_test(ChangeTask(net), samples)
    assert math.isfinite(results["miou"])
    task = ChangeTask(_encoder_backbone(), decoder_channels=16)
    batch = collate(samples[:2])
    batch["image"] = batch["image"][:, 0]
    with pytest.raises(ValueError, match=r"image series \[B, T, C, H, W\] with T >= 2"):
        task.step(batch)
    with pytest.raises(ValueError, match="flood metrics need"):
        ChangeTask(_encoder_backbone(), num_classes=2, ignore_index=None)


def test_change_step_batches_carry_the_time_of_their_acquisition() -> None:
    seen: list[torch.Tensor] = []

    class Spy(Backbone):
        embed_dim = 4
        level_channels = (4,) * 4
        level_strides = (8,) * 4

        def levels(self, image, batch=None):  # type: ignore[no-untyped-def]
            seen.append(batch["time"])
            return [torch.zeros(image.shape[0], 4, 4, 4, requires_grad=True)] * 4

    samples = _samples("flood", "sentinel-1-grd", n=2)
    batch = collate(samples)
    ChangeTask(Spy(), decoder_channels=8).step(batch)
    assert [t.tolist() for t in seen] == [batch["time"][:, t].tolist() for t in range(3)]


def test_regression_ignores_nan_targets() -> None:
    samples = _samples("biomass", "sentinel-2-l2a")
    mean, std = target_stats([s["target"] for s in samples])
    for s in samples:
        s["target"][:, :16] = math.nan  # half of every target unknown
    task = RegressionTask(
        _encoder_backbone(), target_mean=mean, target_std=std, decoder_channels=16
    )
    results = _fit_and_test(task, samples)
    assert math.isfinite(results["rmse"]) and math.isfinite(results["mae"])
    batch = collate(samples[:2])
    batch["target"] = torch.full_like(batch["target"], math.nan)
    loss, preds, _ = task.step(batch)
    assert loss.item() == 0.0 and torch.isfinite(preds).all()
    assert task(collate(samples[:2])).shape == (2, 1, 32, 32)


def test_regression_target_stats_and_bad_settings() -> None:
    mean, std = target_stats([torch.tensor([1.0, 3.0, math.nan])])
    assert (mean, std) == (2.0, 1.0)
    with pytest.raises(UserInputError, match="no finite regression target"):
        target_stats([torch.tensor([math.nan])])
    with pytest.raises(UserInputError, match="std > 0"):
        RegressionTask(UNet(12, 1, widths=(8, 16)), target_std=0.0)
    with pytest.raises(ValueError, match="needs 1 output"):
        RegressionTask(UNet(12, 2, widths=(8, 16)))


def test_dense_models_have_no_frozen_protocol_and_no_pooled_features() -> None:
    with pytest.raises(UserInputError, match="no frozen-encoder protocol"):
        SegmentationTask(UNet(12, 9, widths=(8, 16)), 9, protocol="frozen-upernet")
    with pytest.raises(UserInputError, match="gives no pooled features"):
        ClassificationTask(UNet(12, 9, widths=(8, 16)), 9)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="unknown protocol"):
        SegmentationTask(_encoder_backbone(), 9, protocol="zero-shot")  # type: ignore[arg-type]


def test_encoder_backbone_reads_bands_and_sensor_from_the_batch() -> None:
    backbone = _encoder_backbone()
    batch = collate(_samples("landcover", "sentinel-2-l2a", n=2))
    assert backbone.pooled(batch["image"], batch).shape == (2, 192)
    maps = backbone.levels(batch["image"], batch)
    assert [tuple(m.shape) for m in maps] == [(2, 192, 4, 4)] * 4
    batch["sensor"] = ["sentinel-2-l2a", "sentinel-2-l1c"]
    with pytest.raises(UserInputError, match="mixes sensors"):
        backbone.pooled(batch["image"], batch)


def test_feature_cache_computes_each_sample_once() -> None:
    calls: list[int] = []

    class Counting(Backbone):
        embed_dim = 3
        level_channels = (3,)
        level_strides = (1,)

        def pooled(self, image, batch=None):  # type: ignore[no-untyped-def]
            calls.append(image.shape[0])
            return image.mean(dim=(2, 3))

        def levels(self, image, batch=None):  # type: ignore[no-untyped-def]
            calls.append(image.shape[0])
            return [image]

    cache = FeatureCache(Counting())
    image = torch.randn(2, 3, 4, 4)
    batch = {"key": ["a", "b"]}
    first = cache.pooled(image, batch)
    again = cache.pooled(torch.zeros_like(image), batch)  # served from the cache
    assert torch.equal(first, again) and calls == [2]
    assert torch.equal(cache.levels(image, batch)[0], cache.levels(image * 0, batch)[0])
    assert calls == [2, 2]
    cache.enabled = False
    cache.pooled(image, batch)
    assert calls == [2, 2, 2]
