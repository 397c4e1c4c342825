"""Adaptation methods on real task modules: DANN, CORAL, MMD and self-training train end to end
through Lightning, AdaBN's statistics are the target's, TENT moves only normalisation
parameters and lowers the target entropy, and the one-line refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from thinkingearth.adapt.data import SourceTargetPairs, collate_pairs
from thinkingearth.adapt.losses import entropy
from thinkingearth.adapt.methods import AdaptedModule, feature_site
from thinkingearth.data.sample import collate
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder
from thinkingearth.models.baselines import Backbone, build_baseline
from thinkingearth.tasks import ClassificationTask, EncoderBackbone, SegmentationTask
from thinkingearth.tasks.regression import RegressionTask
from thinkingearth.tasks.variants import (
    ADAPT_METHODS,
    AdaptSection,
    adaptation_methods,
    get_adaptation,
    register_adaptation,
)

BANDS = ("B02", "B03", "B04", "B08")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sample(i: int, shift: float = 0.0, size: int = 16, label: bool = True) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    image = torch.randn(len(BANDS), size, size, generator=g) + shift
    out: dict[str, Any] = {
        "image": image,
        "bands": BANDS,
        "sensor": "sentinel-2-l2a",
        "lon": 10.0 + i,
        "lat": 45.0,
        "time": 19000.0 + i,
        "gsd": 10.0,
    }
    if label:
        out["label"] = torch.tensor(i % 3)
        out["mask"] = (image[0] > shift).long() + (image[1] > shift).long()
    return out


def _encoder_backbone() -> EncoderBackbone:
    encoder = create_encoder("thinkingearth_vit_tiny", depth=2, embed_dim=48)
    return EncoderBackbone(encoder, patch_size=8)


def _trainer(steps: int = 3) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _pairs(n: int = 6) -> DataLoader:
    source = [_sample(i) for i in range(n)]
    target = [_sample(100 + i, shift=1.5, label=False) for i in range(n)]
    return DataLoader(
        SourceTargetPairs(source, target, seed=0), batch_size=3, collate_fn=collate_pairs
    )


def _target_loader(n: int = 6, size: int = 16) -> DataLoader:
    target = [_sample(100 + i, shift=1.5, label=False, size=size) for i in range(n)]
    return DataLoader(target, batch_size=3, collate_fn=collate)


def test_methods_are_installed_entry_points() -> None:
    assert adaptation_methods() == ["none", *sorted(set(ADAPT_METHODS) - {"none"})]
    for name in ADAPT_METHODS:
        method = get_adaptation(name)
        assert method.name == name
        assert method.during_training == (name in ("dann", "deep_coral", "mmd", "self_training"))
    with pytest.raises(UserInputError, match="no adaptation method 'nope'; installed: adabn"):
        get_adaptation("nope")


def test_registered_adaptation_takes_precedence() -> None:
    from thinkingearth.adapt.methods import Method

    mine = Method("dann", True)
    register_adaptation("dann", lambda: mine)
    try:
        assert get_adaptation("dann") is mine
        register_adaptation("extra", lambda: Method("extra", False))
        assert "extra" in adaptation_methods()
    finally:
        register_adaptation("dann", None)
        register_adaptation("extra", None)
    assert get_adaptation("dann") is not mine
    assert "extra" not in adaptation_methods()


def test_dann_trains_end_to_end_and_saves_only_the_task(tmp_path: Any) -> None:
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(_encoder_backbone(), 3, protocol="finetune", lr=1e-3)
    section = AdaptSection(method="dann", weight=1.0)
    module = get_adaptation("dann").wrap(task, section)
    assert isinstance(module, AdaptedModule) and module.task is task
    assert module.adapter is not None
    discriminator = {k: v.clone() for k, v in module.adapter.state_dict().items()}
    encoder = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    val = DataLoader([_sample(i) for i in range(4)], batch_size=2, collate_fn=collate)
    trainer = _trainer(3)
    trainer.fit(module, train_dataloaders=_pairs(), val_dataloaders=val)
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/task_loss", "train/adapt_loss"} <= set(metrics)
    # total = task + domain loss (DANN's weight sits in the reversal coefficient)
    total = float(metrics["train/task_loss"] + metrics["train/adapt_loss"])
    assert float(metrics["train/loss"]) == pytest.approx(total, rel=1e-5)
    assert float(metrics["train/adapt_loss"]) > 0
    assert any(not torch.equal(discriminator[k], v) for k, v in module.adapter.state_dict().items())
    assert any(not torch.equal(encoder[k], v) for k, v in task.backbone.state_dict().items())
    assert task.val_results and "oa" in task.val_results
    trainer.test(module, dataloaders=val, verbose=False)
    assert "oa" in task.test_results
    keys = set(module.task.state_dict())
    assert keys and not any(k.startswith("adapter") for k in keys)
    assert set(module.state_dict()) == {f"task.{k}" for k in keys} | {
        f"adapter.{k}" for k in module.adapter.state_dict()
    }


@pytest.mark.parametrize("method", ["deep_coral", "mmd", "self_training"])
def test_alignment_methods_train_frozen_upernet_decoder(method: str) -> None:
    L.seed_everything(0, verbose=False)
    backbone = _encoder_backbone()
    task = SegmentationTask(backbone, 3, protocol="frozen-upernet", decoder_channels=16)
    section = AdaptSection(method=method, weight=2.0, threshold=0.34)  # type: ignore[arg-type]
    module = get_adaptation(method).wrap(task, section)
    if method != "self_training":
        assert module.site is not None and module.site.dim == 16
    encoder = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainer = _trainer(2)
    trainer.fit(module, train_dataloaders=_pairs())
    metrics = trainer.callback_metrics
    adapt = float(metrics["train/adapt_loss"])
    assert adapt > 0
    expected = float(metrics["train/task_loss"]) + 2.0 * adapt
    assert float(metrics["train/loss"]) == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(encoder[k], v) for k, v in backbone.state_dict().items())


def test_target_batches_leave_batchnorm_running_stats_alone() -> None:
    L.seed_everything(0, verbose=False)
    task = SegmentationTask(_encoder_backbone(), 3, protocol="frozen-upernet", decoder_channels=16)
    module = AdaptedModule(task, AdaptSection(method="mmd"), "mmd")
    batch = next(iter(_pairs()))
    source_only = SegmentationTask(
        _encoder_backbone(), 3, protocol="frozen-upernet", decoder_channels=16
    )
    source_only.load_state_dict(task.state_dict())
    module.train()
    source_only.train()
    module.training_step(batch, 0)
    source_only.step(batch["source"])
    for (name, a), b in zip(
        task.state_dict().items(), source_only.state_dict().values(), strict=True
    ):
        if "running" in name or "num_batches" in name:
            assert torch.equal(a, b), name


def test_augmentation_only_for_method_none() -> None:
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(_encoder_backbone(), 3, protocol="finetune")
    section = AdaptSection(band_dropout=0.5, metadata_dropout=1.0)
    module = get_adaptation("none").wrap(task, section)
    seen: list[dict[str, Any]] = []
    step = task.step
    task.step = lambda batch: (seen.append(batch), step(batch))[1]  # type: ignore[method-assign]
    loader = DataLoader([_sample(i) for i in range(4)], batch_size=2, collate_fn=collate)
    _trainer(2).fit(module, train_dataloaders=loader)
    assert len(seen) == 2
    for batch in seen:
        assert torch.isnan(batch["lon"]).all() and torch.isnan(batch["time"]).all()
        assert 1 <= batch["image"].shape[1] == len(batch["bands"][0]) <= len(BANDS)


def test_adabn_on_a_frozen_resnet_averages_the_target_batches() -> None:
    L.seed_everything(0, verbose=False)
    backbone = build_baseline("resnet18", "classification", len(BANDS), 3)
    assert isinstance(backbone, Backbone)
    task = ClassificationTask(backbone, 3, protocol="linear-probe")
    target = _target_loader(n=4, size=32)
    target = DataLoader(target.dataset, batch_size=2, collate_fn=collate)
    stem = backbone.net.conv1  # type: ignore[attr-defined]
    norm = backbone.net.bn1  # type: ignore[attr-defined]
    with torch.no_grad():
        maps = [stem(batch["image"]) for batch in target]
    get_adaptation("adabn").after_training(task, AdaptSection(method="adabn", steps=0), target)
    # cumulative average over the two target batches: mean of batch means and of the
    # (unbiased) batch variances, per channel
    mean = torch.stack([m.mean(dim=(0, 2, 3)) for m in maps]).mean(dim=0)
    var = torch.stack([m.var(dim=(0, 2, 3), unbiased=True) for m in maps]).mean(dim=0)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
    assert int(norm.num_batches_tracked) == 2
    assert norm.momentum == 0.1  # restored
    assert all(
        int(m.num_batches_tracked) == 2 for m in task.modules() if isinstance(m, nn.BatchNorm2d)
    )


def test_adabn_statistics_equal_one_target_batch_exactly() -> None:
    L.seed_everything(0, verbose=False)
    task = SegmentationTask(_encoder_backbone(), 3, protocol="linear-probe")
    target = _target_loader(n=3)
    batch = next(iter(target))
    get_adaptation("adabn").after_training(task, AdaptSection(method="adabn"), target)
    task.eval()
    with torch.no_grad():
        deepest = task.backbone.levels(batch["image"], batch)[-1]
    norm = task.head.decoder.norm
    mean = deepest.mean(dim=(0, 2, 3))
    var = deepest.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)


def test_tent_changes_only_norm_params_and_lowers_entropy() -> None:
    L.seed_everything(0, verbose=False)
    task = SegmentationTask(_encoder_backbone(), 3, protocol="finetune", decoder_channels=16)
    target = _target_loader(n=3)
    batch = next(iter(target))

    def target_entropy() -> float:
        task.eval()
        with torch.no_grad():
            return float(entropy(task(batch).softmax(dim=1)).mean())

    before_entropy = target_entropy()
    before = {k: v.clone() for k, v in task.named_parameters()}
    flags = {k: v.requires_grad for k, v in task.named_parameters()}
    section = AdaptSection(method="tent", steps=10, lr=1e-2)
    get_adaptation("tent").after_training(task, section, target)
    norms = {
        f"{name}.{p}" if name else p
        for name, m in task.named_modules()
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm | nn.BatchNorm1d)
        for p, _ in m.named_parameters(recurse=False)
    }
    changed = {k for k, v in task.named_parameters() if not torch.equal(before[k], v)}
    assert changed and changed <= norms
    assert any(k.startswith("backbone.") for k in changed)  # the encoder's LayerNorms (finetune)
    assert {k: v.requires_grad for k, v in task.named_parameters()} == flags
    assert target_entropy() < before_entropy


def test_self_training_refuses_regression_and_tent_too() -> None:
    task = RegressionTask(_encoder_backbone(), protocol="frozen-upernet", decoder_channels=16)
    with pytest.raises(UserInputError, match=r"^self_training needs class probabilities"):
        get_adaptation("self_training").wrap(task, AdaptSection(method="self_training"))
    with pytest.raises(UserInputError, match=r"^tent minimises the entropy"):
        get_adaptation("tent").after_training(task, AdaptSection(method="tent"), _target_loader())


def test_alignment_refusals_are_one_line() -> None:
    unet = build_baseline("unet", "segmentation", len(BANDS), 3)
    task = SegmentationTask(unet, 3)
    with pytest.raises(UserInputError, match="complete network without a separate head") as info:
        get_adaptation("dann").wrap(task, AdaptSection(method="dann"))
    assert "\n" not in str(info.value)
    probe = ClassificationTask(_encoder_backbone(), 3, protocol="linear-probe")
    with pytest.raises(UserInputError, match="frozen encoder's features under a linear head"):
        feature_site(probe, "deep_coral")
    with pytest.raises(UserInputError, match="use protocol frozen-upernet or finetune"):
        feature_site(SegmentationTask(_encoder_backbone(), 3, protocol="linear-probe"), "mmd")


def test_adabn_without_batchnorm_is_one_line() -> None:
    task = SegmentationTask(_encoder_backbone(), 3, protocol="finetune", decoder_channels=16)
    for m in list(task.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
                setattr(m, name, nn.Identity())
    with pytest.raises(
        UserInputError, match=r"^adabn re-estimates BatchNorm statistics; .* has no"
    ):
        get_adaptation("adabn").wrap(task, AdaptSection(method="adabn"))


def test_tent_on_linear_probe_has_nothing_to_train() -> None:
    task = ClassificationTask(_encoder_backbone(), 3, protocol="linear-probe")
    with pytest.raises(UserInputError, match="use frozen-upernet or finetune"):
        get_adaptation("tent").wrap(task, AdaptSection(method="tent"))


def _series_sample(i: int, shift: float = 0.0, label: bool = True) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    image = torch.randn(2, len(BANDS), 16, 16, generator=g) + shift
    out: dict[str, Any] = {
        "image": image,
        "bands": BANDS,
        "sensor": "sentinel-2-l2a",
        "time": [19000.0, 19012.0],
    }
    if label:
        out["mask"] = torch.randint(0, 4, (16, 16), generator=g)
    return out


def _expected_self_training(module: AdaptedModule, target: dict[str, Any]) -> torch.Tensor:
    """Cross-entropy on the current model's own confident predictions, written out."""
    from thinkingearth.adapt.methods import _keep_running_stats

    with torch.no_grad(), _keep_running_stats(module.task):
        logits = module.task(target)
    if module.kind == "multilabel":
        p = logits.sigmoid()
        keep = torch.maximum(p, 1 - p) >= module.section.threshold
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits[keep], (p >= 0.5).float()[keep]
        )
    p = logits.softmax(dim=1)
    confidence, labels = p.max(dim=1)
    keep = confidence >= module.section.threshold
    picked = -torch.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return picked[keep].mean()


@pytest.mark.parametrize("kind", ["multilabel", "change"])
def test_self_training_loss_uses_only_confident_predictions(kind: str) -> None:
    L.seed_everything(0, verbose=False)
    if kind == "multilabel":
        task = ClassificationTask(_encoder_backbone(), 3, multilabel=True, protocol="finetune")
        source = [_sample(i) for i in range(3)]
        for s in source:
            s["label"] = torch.tensor([1, 0, 1])
        target = [_sample(50 + i, shift=1.0, label=False) for i in range(3)]
        threshold = 0.5005
    else:
        from thinkingearth.tasks.change import ChangeTask

        task = ChangeTask(_encoder_backbone(), protocol="frozen-upernet", decoder_channels=16)
        for m in task.modules():  # UPerNet's dropout would make the two forwards differ
            if isinstance(m, nn.Dropout2d):
                m.p = 0.0
        source = [_series_sample(i) for i in range(3)]
        target = [_series_sample(50 + i, shift=1.0, label=False) for i in range(3)]
        threshold = 0.34
    module = AdaptedModule(
        task, AdaptSection(method="self_training", threshold=threshold), "self_training"
    )
    pair = collate_pairs([{"source": s, "target": t} for s, t in zip(source, target, strict=True)])
    module.train()
    expected = _expected_self_training(module, pair["target"])
    task_loss = float(task.step(pair["source"])[0].detach())
    with pytest.warns(UserWarning, match="self.log"):
        loss = module.training_step(pair, 0)
    assert float(expected) > 0
    assert float(loss.detach()) == pytest.approx(task_loss + float(expected), rel=1e-4)
    # nothing is confident at threshold 1: no pseudo-label loss
    strict = AdaptedModule(
        task, AdaptSection(method="self_training", threshold=1.0), "self_training"
    )
    with pytest.warns(UserWarning, match="self.log"):
        assert float(strict.training_step(pair, 0).detach()) == pytest.approx(task_loss, rel=1e-4)


def test_optimiser_covers_the_adapter_with_the_task_schedule() -> None:
    L.seed_everything(0, verbose=False)
    task = ClassificationTask(_encoder_backbone(), 3, protocol="finetune", lr=2e-3, warmup=0.5)
    module = AdaptedModule(task, AdaptSection(method="dann"), "dann")
    trainer = _trainer(4)
    seen: list[tuple[float, float]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            seen.append((trainer.optimizers[0].param_groups[0]["lr"], module.progress()))

    trainer.callbacks.append(Record())
    trainer.fit(module, train_dataloaders=_pairs(n=12))
    optimiser = trainer.optimizers[0]
    params = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert module.adapter is not None
    assert {id(p) for p in module.adapter.parameters()} <= params
    assert {id(p) for p in task.trainable_parameters()} <= params
    # warm-up over 2 of 4 steps, then cosine: the TaskModule schedule
    lrs = [lr for lr, _ in seen]
    assert lrs == pytest.approx([1e-3, 2e-3, 2e-3, 1e-3])
    assert [p for _, p in seen] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_tasks_never_import_adapt() -> None:
    """Layering: sensors -> data -> models -> tasks -> adapt (read from the sources' imports)."""
    import ast
    from pathlib import Path

    import thinkingearth

    root = Path(thinkingearth.__file__).parent
    offenders = []
    for package in ("sensors.py", "data", "models", "tasks"):
        for path in (
            sorted((root / package).rglob("*.py"))
            if (root / package).is_dir()
            else [root / package]
        ):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if any(
                    n == "thinkingearth.adapt" or n.startswith("thinkingearth.adapt.")
                    for n in names
                ):
                    offenders.append(str(path.relative_to(root)))
    assert offenders == []
