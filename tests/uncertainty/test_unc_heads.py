"""Uncertainty heads (heteroscedastic, MC dropout, deep ensembles): shapes, losses, what they
learn, and that they train under Lightning like the plain task modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import LANDCOVER_CLASSES, SyntheticCopernicus
from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder
from thinkingearth.models.baselines import Backbone, build_baseline
from thinkingearth.pretrain.transforms import Normaliser
from thinkingearth.tasks.protocols import EncoderBackbone, TaskModule
from thinkingearth.tasks.regression import target_stats
from thinkingearth.tasks.training import build_task_module
from thinkingearth.tasks.variants import UncertaintyHead, register_uncertainty
from thinkingearth.uncertainty import heads
from thinkingearth.uncertainty.heads import SCALE_FLOOR, EnsembleTask

SIZE = 32
METHODS = ("heteroscedastic", "mc_dropout", "ensemble")
#: kind -> (synthetic task, sensor)
DATA = {
    "classification": ("multilabel", "sentinel-2-l2a"),
    "multilabel": ("multilabel", "sentinel-2-l2a"),
    "segmentation": ("landcover", "sentinel-2-l2a"),
    "change": ("flood", "sentinel-1-grd"),
    "regression": ("biomass", "sentinel-2-l2a"),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread_and_these_builders() -> Iterator[None]:
    """One intra-op thread (tiny tensors on a shared machine), and this package's builders
    registered in-process whether or not the entry points are installed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in METHODS:
        register_uncertainty(name, getattr(heads, name)())
    yield
    for name in METHODS:
        register_uncertainty(name, None)
    torch.set_num_threads(before)


def _samples(kind: str, n: int = 2) -> list[dict[str, Any]]:
    task, sensor = DATA[kind]
    ds = SyntheticCopernicus(task, sensor, n=n, size=SIZE)  # type: ignore[arg-type]
    norm = Normaliser()
    out = []
    for i in range(n):
        s = dict(ds[i])
        s["image"] = norm(s["image"], s["sensor"], s["bands"])
        s["key"] = f"train:{i}"
        if kind == "classification":  # one class per image: the dominant land cover
            s["label"] = s["label"].argmax()
        out.append(s)
    return out


def _classes(kind: str) -> int:
    if kind in ("classification", "multilabel", "segmentation"):
        return len(LANDCOVER_CLASSES)
    return 3 if kind == "change" else 1


def _encoder() -> EncoderBackbone:
    return EncoderBackbone(
        create_encoder("thinkingearth_vit_tiny", depth=2, embed_dim=48), patch_size=8
    )


def _build(
    kind: str,
    head: UncertaintyHead,
    net: Any = None,
    samples: list[dict[str, Any]] | None = None,
    **options: Any,
) -> TaskModule:
    stats = (0.0, 1.0)
    if kind == "regression" and samples is not None:
        stats = target_stats([s["target"] for s in samples])
    return build_task_module(
        kind,  # type: ignore[arg-type]
        net if net is not None else _encoder(),
        num_classes=_classes(kind),
        protocol=options.pop("protocol", "finetune"),
        lr=options.pop("lr", 1e-3),
        ignore_index=3 if kind == "change" else options.pop("ignore_index", None),
        target_stats=stats,
        uncertainty=head,
        **options,
    )


def _head(method: str, **values: Any) -> UncertaintyHead:
    small = {"samples": 8, "mc_samples": 4, "members": 3}
    return UncertaintyHead(method, **{**small, **values})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(DATA))
def test_predictive_samples_and_step_shapes(kind: str, method: str) -> None:
    torch.manual_seed(0)
    samples = _samples(kind)
    batch = collate(samples)
    head = _head(method)
    module = _build(kind, head, samples=samples).eval()
    assert module.uncertainty_head == head
    s = {"heteroscedastic": 1, "mc_dropout": 4, "ensemble": 3}[method]
    k = _classes(kind)
    dense = (SIZE, SIZE) if kind in ("segmentation", "change", "regression") else ()
    probs = module.predictive_samples(batch)
    loss, preds, target = module.step(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert not module.training  # predictive_samples restored the mode it found
    if kind == "regression":
        assert probs.shape == (s, 2, 2, *dense)
        assert preds.shape == target.shape == (2, 1, *dense)
        variance = probs[:, :, 1]
        if method == "heteroscedastic":
            assert (variance > 0).all()
            # The variance comes back in target units: at least the floor times std².
            assert variance.min() >= heads.VARIANCE_FLOOR * module.target_std**2 * 0.999
        else:
            assert torch.equal(variance, torch.zeros_like(variance))
        if method != "mc_dropout":  # the metrics see the predictive mean
            torch.testing.assert_close(probs[:, :, :1].mean(0), preds)
        assert module(batch).shape == (2, 1, *dense)
        return
    assert probs.shape == (s, 2, k, *dense)
    assert ((probs >= 0) & (probs <= 1)).all()
    if kind != "multilabel":
        torch.testing.assert_close(probs.sum(2), torch.ones(s, 2, *dense))
    assert preds.shape == (2, k, *dense)
    # The metrics' predictions are those of the predictive distribution: log p̄ (single-label,
    # dense) or p̄ (multi-label); MC dropout reports its deterministic (dropout-off) forward.
    if method != "mc_dropout":
        mean = probs.mean(0)
        torch.testing.assert_close(preds if kind == "multilabel" else preds.exp(), mean)
    # forward gives scores whose softmax / sigmoid is the predictive probability.
    scores = module(batch)
    assert scores.shape == (2, k, *dense)
    if method != "mc_dropout" and kind != "regression":
        back = scores.sigmoid() if kind == "multilabel" else scores.softmax(1)
        torch.testing.assert_close(back, probs.mean(0), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- heteroscedastic


def _silence_scales(module: TaskModule, k: int) -> None:
    """Weights of the scale outputs 0 and bias -30: σ = softplus(-30) + floor ≈ the floor."""
    head = module.head  # type: ignore[attr-defined]
    layer = head.linear if hasattr(head, "linear") else head.decoder.classifier
    with torch.no_grad():
        layer.weight[k:].zero_()
        layer.bias[k:].fill_(-30.0)


def test_heteroscedastic_loss_with_no_noise_is_the_cross_entropy() -> None:
    torch.manual_seed(0)
    batch = collate(_samples("classification", n=4))
    module = _build("classification", _head("heteroscedastic", samples=16))
    _silence_scales(module, _classes("classification"))
    module.eval()
    loss, preds, _ = module.step(batch)
    logits, scale = module.logits_and_scale(batch)  # type: ignore[operator]
    assert torch.allclose(scale, torch.full_like(scale, SCALE_FLOOR), atol=1e-9)
    expected = F.cross_entropy(logits, batch["label"])
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(preds.exp(), logits.softmax(1), atol=1e-4, rtol=1e-3)


def test_heteroscedastic_segmentation_loss_with_no_noise_skips_the_ignore_index() -> None:
    torch.manual_seed(0)
    batch = collate(_samples("segmentation"))
    batch["mask"][:, :, : SIZE // 2] = 255  # half of every mask unlabelled
    module = _build("segmentation", _head("heteroscedastic"), ignore_index=255)
    _silence_scales(module, _classes("segmentation"))
    module.eval()
    loss, _, _ = module.step(batch)
    logits, _ = module.logits_and_scale(batch, (SIZE, SIZE))  # type: ignore[operator]
    expected = F.cross_entropy(logits, batch["mask"], ignore_index=255)
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-4)


def test_heteroscedastic_regression_is_the_gaussian_nll_over_finite_targets() -> None:
    torch.manual_seed(0)
    samples = _samples("regression")
    batch = collate(samples)
    batch["target"][:, :, : SIZE // 2] = float("nan")  # half of every target unknown
    module = _build("regression", _head("heteroscedastic"), samples=samples).eval()
    loss, preds, target = module.step(batch)
    mean, variance = module.mean_and_variance(batch, (SIZE, SIZE))  # type: ignore[operator]
    truth = (target - module.target_mean) / module.target_std  # type: ignore[operator]
    known = torch.isfinite(truth)
    m, v, y = mean[known], variance[known], truth[known]
    expected = 0.5 * (torch.log(2 * torch.pi * v) + (y - m) ** 2 / v).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(preds, mean * module.target_std + module.target_mean)  # type: ignore[operator]
    batch["target"][:] = float("nan")  # nothing known: no signal, but a graph to step through
    module.train()
    loss = module.step(batch)[0]
    assert loss.item() == 0.0 and loss.requires_grad


class _Features(Backbone):
    """Pooled features = the image itself (``[B, 2]``)."""

    embed_dim = 2

    def pooled(self, image: torch.Tensor, batch: Any = None) -> torch.Tensor:
        return image.flatten(1)


def test_heteroscedastic_classifier_learns_larger_scales_where_labels_are_noisy() -> None:
    # Two regions of input space, told apart by feature 0: in one the label is the sign of
    # feature 1, in the other 40 % of the labels are flipped. A linear head cannot lower its
    # confidence on one region through the logits alone; the noise scale can.
    g = torch.Generator().manual_seed(0)
    n = 256
    region = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # -1 noisy, +1 clean
    x1 = torch.randn(n, generator=g)
    label = (x1 > 0).long()
    flip = (region < 0) & (torch.rand(n, generator=g) < 0.4)
    label = torch.where(flip, 1 - label, label)
    batch = {"image": torch.stack([region, x1], 1), "label": label}
    torch.manual_seed(0)
    module = build_task_module(
        "classification",
        _Features(),
        num_classes=2,
        protocol="finetune",
        lr=0.05,
        uncertainty=_head("heteroscedastic", samples=32),
    )

    def scales() -> tuple[float, float]:
        module.eval()
        with torch.no_grad():
            s = module.logits_and_scale(batch)[1].mean(1)  # type: ignore[operator]
        return float(s[region < 0].mean()), float(s[region > 0].mean())

    noisy, clean = scales()
    assert noisy < 1.5 * clean  # untrained: no preference
    optimiser = torch.optim.Adam(module.parameters(), lr=0.05)
    module.train()
    for _ in range(40):
        loss, _, _ = module.step(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    noisy, clean = scales()
    assert noisy > 3.0 * clean, (noisy, clean)


def test_heteroscedastic_predictions_are_deterministic_in_eval_and_noisy_in_training() -> None:
    torch.manual_seed(0)
    batch = collate(_samples("classification", n=4))
    module = _build("classification", _head("heteroscedastic", samples=4))
    with torch.no_grad():
        # Make the noise large so that different draws visibly differ.
        module.head.linear.bias[_classes("classification") :].fill_(5.0)  # type: ignore[union-attr,index]
    module.eval()
    assert torch.equal(module(batch), module(batch))
    module.train()
    assert not torch.equal(module(batch), module(batch))


# ---------------------------------------------------------------------------- MC dropout


def test_mc_dropout_samples_differ_and_the_backbone_runs_once_per_batch() -> None:
    torch.manual_seed(0)
    batch = collate(_samples("change"))
    module = _build("change", _head("mc_dropout", mc_samples=5, dropout=0.5))
    calls: list[int] = []
    levels = module.backbone.levels

    def counted(image: torch.Tensor, batch: Any = None) -> list[torch.Tensor]:
        calls.append(1)
        return levels(image, batch)

    module.backbone.levels = counted  # type: ignore[method-assign]
    module.eval()
    probs = module.predictive_samples(batch)
    assert probs.shape == (5, 2, 3, SIZE, SIZE)
    assert len(calls) == batch["image"].shape[1]  # one backbone pass per acquisition, not 5×
    assert not all(torch.equal(probs[0], probs[s]) for s in range(1, 5))
    # The eval forward (metrics) is deterministic: dropout is off outside sampling.
    calls.clear()
    first, second = module(batch), module(batch)
    assert torch.equal(first, second)
    torch.testing.assert_close(module.step(batch)[1], first)
    assert not module.training


def test_mc_dropout_is_on_in_training_on_pooled_features() -> None:
    torch.manual_seed(0)
    module = _build("multilabel", _head("mc_dropout", dropout=0.5))
    features = torch.ones(64, 48)
    module.train()
    dropped = module.head_input(features)
    assert 0.3 < float((dropped == 0).float().mean()) < 0.7
    module.eval()
    assert torch.equal(module.head_input(features), features)


# ---------------------------------------------------------------------------- ensembles


def test_ensemble_members_differ_and_keep_the_encoder_weights() -> None:
    torch.manual_seed(0)
    net = _encoder()
    original = {k: v.clone() for k, v in net.state_dict().items()}
    batch = collate(_samples("segmentation"))
    module = _build("segmentation", _head("ensemble", members=3), net=net)
    assert isinstance(module, EnsembleTask) and len(module.members) == 3
    probs = module.eval().predictive_samples(batch)
    assert probs.shape == (3, 2, 9, SIZE, SIZE)
    assert not torch.allclose(probs[0], probs[1]) and not torch.allclose(probs[1], probs[2])
    for member in module.members:
        assert member.backbone is not net  # fine-tuned: a copy each, from the same weights
        state = member.backbone.state_dict()
        assert all(torch.equal(state[k], v) for k, v in original.items())
    # The members' heads differ (each its own initialisation).
    first, second = (m.head.decoder.classifier.weight for m in module.members[:2])  # type: ignore[union-attr]
    assert not torch.equal(first, second)


def test_a_frozen_ensemble_shares_its_frozen_encoder_and_trains_the_heads_only() -> None:
    torch.manual_seed(0)
    net = _encoder()
    module = _build("segmentation", _head("ensemble", members=3), net=net, protocol="linear-probe")
    assert all(m.backbone is net for m in module.members)  # type: ignore[attr-defined]
    assert not any(p.requires_grad for p in net.parameters())
    module.train()
    assert not net.training and all(m.training for m in module.members)  # type: ignore[attr-defined]
    trainable = {id(p) for p in module.trainable_parameters()}
    heads_params = {id(p) for m in module.members for p in m.head.parameters()}  # type: ignore[attr-defined,union-attr]
    assert trainable == heads_params and len(heads_params) > 0
    with pytest.raises(UserInputError, match="one network per member"):
        module.backbone = _encoder()  # e.g. the int8 predictor's swap: refused, not ignored


def test_ensemble_of_a_from_scratch_network_reinitialises_each_member_reproducibly() -> None:
    unet = build_baseline("unet", "segmentation", 4, 9, unet_widths=(8, 16))

    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        module = _build("segmentation", _head("ensemble", members=2), net=unet)
        assert module.members[0].backbone is not unet
        return [m.backbone.encoder.stages[0][0].weight.detach().clone() for m in module.members]  # type: ignore[union-attr,index]

    first = weights(1)
    assert not torch.equal(first[0], first[1])  # each member its own initialisation
    assert not any(torch.equal(w, unet.encoder.stages[0][0].weight) for w in first)  # type: ignore[index]
    again = weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded


# ---------------------------------------------------------------------------- unsupported


@pytest.mark.parametrize("method", ["heteroscedastic", "mc_dropout"])
def test_a_complete_network_without_a_head_is_refused_in_one_line(method: str) -> None:
    unet = build_baseline("unet", "segmentation", 4, 9, unet_widths=(8, 16))
    with pytest.raises(UserInputError, match=r"UNet is a complete network.*use ensemble") as info:
        _build("segmentation", _head(method), net=unet)
    assert "\n" not in str(info.value)


def test_an_ensemble_of_one_member_is_refused() -> None:
    with pytest.raises(UserInputError, match="at least 2 members"):
        UncertaintyHead("ensemble", members=1)
    member = _build("multilabel", UncertaintyHead())
    with pytest.raises(UserInputError, match="at least 2 members"):
        EnsembleTask("multilabel", [member], _head("ensemble"))


# ---------------------------------------------------------------------------- Lightning


def _fit(module: TaskModule, samples: list[dict[str, Any]]) -> dict[str, float]:
    loader = DataLoader(samples, batch_size=2, shuffle=False, collate_fn=collate)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert module.val_results
    trainer.test(module, dataloaders=loader, verbose=False)
    return module.test_results


@pytest.mark.parametrize(
    ("kind", "method", "metric"),
    [
        ("segmentation", "heteroscedastic", "miou"),
        ("regression", "heteroscedastic", "rmse"),
        ("multilabel", "mc_dropout", "map_micro"),
        ("change", "ensemble", "miou"),
    ],
)
def test_training_steps_run_under_lightning(kind: str, method: str, metric: str) -> None:
    torch.manual_seed(0)
    samples = _samples(kind, n=2)
    module = _build(kind, _head(method, members=2), samples=samples)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    results = _fit(module, samples)
    assert metric in results and results[metric] == results[metric]  # present, not NaN
    after = module.state_dict()
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )
