"""Is the uncertainty worth trusting? Calibration, likelihood and discard tests on a test split.

:func:`evaluate_uncertainty` runs a task module's predictive distributions
(:meth:`~thinkingearth.tasks.protocols.TaskModule.predictive_samples`, ``[S, B, K, ...]``) over a
loader and scores them against the **clean** targets: a batch from
:class:`~thinkingearth.uncertainty.noise.NoisyLabels` carries the clean labels under
``label_clean`` / ``mask_clean`` / ``target_clean`` beside the noisy ones, and those are used;
otherwise ``label`` / ``mask`` / ``target``. Ignored pixels and NaN targets count nowhere.

The metrics (keys of ``bench``'s ``results.csv`` and of ``finetune``'s ``metrics.json``):

* classification, segmentation, change (an item is an image or a pixel): ``ece`` over
  ``ece_bins`` equal-width confidence bins (confidence = largest class probability, correct =
  argmax equals the target), ``nll`` (nats), ``brier`` (sum over classes), the discard test
  (``discard_auc``: accuracy after discarding the most uncertain 0-50 % by total entropy,
  averaged over the fractions; ``discard_auc_random``: the same discarding at random),
  ``unc_err_spearman`` (rank correlation of total entropy with the error indicator), and the
  means of total entropy, aleatoric entropy (expected entropy) and epistemic entropy (mutual
  information): ``entropy_mean``, ``aleatoric_mean``, ``epistemic_mean``;
* multi-label: every (image, label) is a binary event for ``ece`` (confidence ``max(p, 1-p)``,
  correct: ``p > 0.5`` equals the label); an image's uncertainty is its summed Bernoulli
  entropy and its discard score the share of its labels right;
* regression: ``nll`` (Gaussian, moment-matched: the mean of the sampled means and the total
  variance), ``discard_auc`` (RMSE after discarding by total standard deviation; lower is
  better), ``discard_auc_random``, ``unc_err_spearman`` (standard deviation against absolute
  error), ``coverage90`` (share of targets within mean ± 1.645 std) and the law-of-total-variance
  split: ``aleatoric_mean`` (mean predicted variance), ``epistemic_mean`` (variance of the
  sampled means), in squared target units. A model that predicts no variance anywhere (a
  plain regression head: one weight sample, no variance output) has no predictive
  distribution to score: its ``nll`` and ``coverage90`` are NaN rather than the huge numbers a
  variance floor would make of them.

Memory stays bounded however many pixels a test split has: ``nll``, ``brier``, ``coverage90``
and the entropy means are exact running sums over every valid item, while the statistics that
need all items at once (reliability bins, discard curves, rank correlation) use a seeded
uniform random subset of at most ``max_items`` items, kept as a bottom-k sample of random keys
(each batch merges into it; no map is ever kept whole).

:func:`test_evaluation` is the ``finetune`` plugin (entry point
``thinkingearth.test_evaluations: uncertainty``): it writes ``reliability.png`` and
``discard.png`` into the run folder and a ``## Uncertainty`` report section.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import TaskKind
from thinkingearth.tasks.variants import TestEvaluation
from thinkingearth.uncertainty.calibration import (
    DiscardCurve,
    Reliability,
    brier_score,
    discard_curve,
    negative_log_likelihood,
    reliability,
    spearman,
)
from thinkingearth.uncertainty.decompose import split_entropy, split_variance

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "UncertaintyEvaluation",
    "evaluate_uncertainty",
    "test_evaluation",
]

#: Metric keys of classification, multi-label, segmentation and change detection, in order.
CLASSIFICATION_METRICS: tuple[str, ...] = (
    "ece",
    "ece_bins",
    "nll",
    "brier",
    "discard_auc",
    "discard_auc_random",
    "unc_err_spearman",
    "entropy_mean",
    "aleatoric_mean",
    "epistemic_mean",
)
#: Metric keys of regression, in order.
REGRESSION_METRICS: tuple[str, ...] = (
    "nll",
    "discard_auc",
    "discard_auc_random",
    "unc_err_spearman",
    "coverage90",
    "aleatoric_mean",
    "epistemic_mean",
)

#: Half-width of the central 90 % interval of a standard normal.
Z90 = 1.6448536269514722
#: Variance floor of the Gaussian NLL (target units squared; a deterministic model's variance is 0).
VARIANCE_FLOOR = 1e-6

_TARGET_KEYS: dict[str, str] = {
    "classification": "label",
    "multilabel": "label",
    "segmentation": "mask",
    "change": "mask",
    "regression": "target",
}
_KINDS = tuple(_TARGET_KEYS)


@dataclass
class UncertaintyEvaluation:
    """The uncertainty evaluation of one model on one test split.

    Attributes:
        metrics: Metric values by key (:data:`CLASSIFICATION_METRICS` or
            :data:`REGRESSION_METRICS`).
        reliability: Per-bin accuracy and confidence (``None`` for regression).
        discard: The discard curve and its random-discard line.
        items: Valid items scored: images (classification, multi-label) or pixels with a known
            target (dense kinds); the running means (``nll``, ``brier``, entropies,
            ``coverage90``) are over all of them.
        kept: Items in the random subset behind the reliability bins, the discard curve and
            the rank correlation (``min(items, max_items)``; multi-label reliability bins hold
            each kept image's labels).
        kind: The task kind evaluated.
    """

    metrics: dict[str, float]
    reliability: Reliability | None
    discard: DiscardCurve
    items: int = 0
    kept: int = 0
    kind: str = "classification"


# ---------------------------------------------------------------------------- sampling


class _Reservoir:
    """A uniform random subset of at most ``capacity`` items, whatever arrives in how many parts.

    Every item gets an independent uniform key; the subset is the ``capacity`` smallest keys seen
    (bottom-k sampling), which is a uniform sample without replacement of all items so far.
    """

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.generator = generator
        self.keys = torch.empty(0)
        self.fields: dict[str, Tensor] = {}

    def add(self, fields: Mapping[str, Tensor]) -> None:
        n = next(iter(fields.values())).shape[0]
        if n == 0:
            return
        keys = torch.rand(n, generator=self.generator)
        new = {k: v.detach().cpu() for k, v in fields.items()}
        if self.keys.numel() >= self.capacity:  # only keys below the current k-th can enter
            entering = keys < self.keys.max()
            keys = keys[entering]
            new = {k: v[entering] for k, v in new.items()}
            if keys.numel() == 0:
                return
        keys = torch.cat([self.keys, keys])
        merged = {k: torch.cat([self.fields[k], v]) if self.fields else v for k, v in new.items()}
        if keys.numel() > self.capacity:
            keep = torch.topk(keys, self.capacity, largest=False).indices
            keys = keys[keep]
            merged = {k: v[keep] for k, v in merged.items()}
        self.keys, self.fields = keys, merged

    def __len__(self) -> int:
        return int(self.keys.numel())


# ---------------------------------------------------------------------------- collection


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _clean_target(batch: Mapping[str, Any], kind: str) -> Tensor:
    key = _TARGET_KEYS[kind]
    target = batch.get(f"{key}_clean", batch.get(key))
    if not isinstance(target, Tensor):
        raise UserInputError(f"{kind} evaluation needs each test batch to carry '{key}'")
    return target


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


@dataclass
class _Sums:
    """Running sums over every valid item (exact means however many there are)."""

    items: int = 0
    values: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, total: float) -> None:
        self.values[name] = self.values.get(name, 0.0) + float(total)

    def mean(self, name: str) -> float:
        return self.values.get(name, math.nan) / self.items if self.items else math.nan


def _module_device(module: Any) -> torch.device:
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
        for b in module.buffers():
            return b.device
    return torch.device("cpu")


def _single_label(
    probs: Tensor, target: Tensor, ignore_index: int | None, sums: _Sums, kept: _Reservoir
) -> None:
    """One batch of classification / segmentation / change predictions ``[S, B, K, *sp]``."""
    k = probs.shape[2]
    mean = probs.mean(0)
    if tuple(target.shape) != (mean.shape[0], *mean.shape[2:]):
        raise ValueError(
            f"targets {tuple(target.shape)} do not match predictions {tuple(mean.shape)} "
            "([B, K, *spatial])"
        )
    total, aleatoric, epistemic = split_entropy(probs, dim=2)
    flat = mean.movedim(1, -1).reshape(-1, k)
    target = target.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        valid = target != ignore_index
    flat, target = flat[valid], target[valid]
    if target.numel() == 0:
        return
    bad = (target < 0) | (target >= k)
    if bad.any():
        raise UserInputError(
            f"a test target holds class {int(target[bad][0])}, outside 0..{k - 1}"
            + (f" and not the ignore index {ignore_index}" if ignore_index is not None else "")
        )
    n = int(target.numel())
    probs_np, target_np = _numpy(flat), target.cpu().numpy()
    sums.items += n
    sums.add("nll", negative_log_likelihood(probs_np, target_np) * n)
    sums.add("brier", brier_score(probs_np, target_np) * n)
    total, aleatoric, epistemic = (u.reshape(-1)[valid] for u in (total, aleatoric, epistemic))
    sums.add("entropy", total.double().sum())
    sums.add("aleatoric", aleatoric.double().sum())
    sums.add("epistemic", epistemic.double().sum())
    confidence, predicted = flat.max(dim=1)
    kept.add(
        {
            "confidence": confidence.float(),
            "correct": (predicted == target).float(),
            "uncertainty": total.float(),
        }
    )


def _multilabel(probs: Tensor, target: Tensor, sums: _Sums, kept: _Reservoir) -> None:
    """One batch of multi-label predictions ``[S, B, K]``."""
    mean = probs.mean(0)
    if tuple(target.shape) != tuple(mean.shape):
        raise ValueError(
            f"multi-label targets {tuple(target.shape)} do not match predictions "
            f"{tuple(mean.shape)} ([B, K])"
        )
    total, aleatoric, epistemic = split_entropy(probs, dim=2, multilabel=True)
    target = target.float()
    n = int(target.shape[0])
    if n == 0:
        return
    probs_np, target_np = _numpy(mean), target.cpu().numpy()
    sums.items += n
    sums.add("nll", negative_log_likelihood(probs_np, target_np, multilabel=True) * n)
    sums.add("brier", brier_score(probs_np, target_np, multilabel=True) * n)
    sums.add("entropy", total.double().sum())
    sums.add("aleatoric", aleatoric.double().sum())
    sums.add("epistemic", epistemic.double().sum())
    kept.add({"probs": mean.float(), "target": target, "uncertainty": total.float()})


def _regression(probs: Tensor, target: Tensor, sums: _Sums, kept: _Reservoir) -> None:
    """One batch of regression predictions ``[S, B, 2, H, W]`` (mean, variance)."""
    if probs.ndim < 3 or probs.shape[2] != 2:
        raise ValueError(
            f"regression predictive samples must be [S, B, 2, ...]; got {tuple(probs.shape)}"
        )
    if target.ndim == probs.ndim - 1 and target.shape[1] == 1:
        target = target[:, 0]
    means, variances = probs[:, :, 0], probs[:, :, 1]
    if tuple(target.shape) != tuple(means.shape[1:]):
        raise ValueError(
            f"regression targets {tuple(target.shape)} do not match predictions "
            f"{tuple(means.shape[1:])}"
        )
    total, aleatoric, epistemic = split_variance(means, variances)
    mean = means.mean(0)
    valid = torch.isfinite(target)
    if not valid.any():
        return
    y = target[valid].double()
    mu = mean[valid].double()
    var = total[valid].double()
    n = int(y.numel())
    floored = var.clamp_min(VARIANCE_FLOOR)
    nll = 0.5 * (torch.log(2 * math.pi * floored) + (y - mu) ** 2 / floored)
    error = (y - mu).abs()
    std = var.clamp_min(0).sqrt()
    sums.items += n
    sums.add("nll", nll.sum())
    sums.add("coverage90", (error <= Z90 * std).double().sum())
    sums.add("with_variance", (var > 0).double().sum())
    sums.add("aleatoric", aleatoric[valid].double().sum())
    sums.add("epistemic", epistemic[valid].double().sum())
    kept.add({"uncertainty": std.float(), "error": error.float()})


@dataclass
class _Collected:
    kind: str
    sums: _Sums
    kept: dict[str, Tensor]

    @property
    def kept_count(self) -> int:
        return int(next(iter(self.kept.values())).shape[0]) if self.kept else 0

    @property
    def calibration_events(self) -> int:
        """Predictions the reliability bins are filled with (multi-label: image-label pairs)."""
        if self.kind == "multilabel" and self.kept:
            return int(self.kept["probs"].numel())
        return self.kept_count


def _collect(
    module: Any,
    loader: Iterable[Mapping[str, Any]],
    kind: str,
    *,
    ignore_index: int | None,
    device: torch.device,
    max_items: int,
    seed: int,
) -> _Collected:
    if kind not in _KINDS:
        raise UserInputError(f"unknown task kind {kind!r}; expected one of: {', '.join(_KINDS)}")
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise UserInputError(f"max_items must be an integer >= 1; got {max_items!r}")
    generator = torch.Generator().manual_seed(int(seed))
    sums = _Sums()
    kept = _Reservoir(max_items, generator)
    is_module = isinstance(module, nn.Module)
    was_training = bool(module.training) if is_module else False
    before = _module_device(module)
    if is_module:
        module.to(device)
        module.eval()
    try:
        with torch.no_grad():
            for raw in loader:
                batch = _to_device(raw, device)
                target = _clean_target(batch, kind)
                probs = module.predictive_samples(batch).float()
                if kind == "regression":
                    _regression(probs, target, sums, kept)
                elif kind == "multilabel":
                    _multilabel(probs, target, sums, kept)
                else:
                    _single_label(probs, target, ignore_index, sums, kept)
    finally:
        if is_module:
            module.to(before)
            module.train(was_training)
    if sums.items == 0:
        raise UserInputError(
            "no test item with a known target to evaluate uncertainty on "
            "(every pixel ignored or every target NaN)"
        )
    return _Collected(kind, sums, kept.fields)


# ---------------------------------------------------------------------------- scoring


def _score(collected: _Collected, bins: int, seed: int) -> UncertaintyEvaluation:
    kind, sums, kept = collected.kind, collected.sums, collected.kept
    uncertainty = kept["uncertainty"].double().numpy()
    metrics: dict[str, float] = {}
    rel: Reliability | None = None
    if kind == "regression":
        error = kept["error"].double().numpy()
        curve = discard_curve(uncertainty, error, metric="rmse", seed=seed)
        probabilistic = sums.values.get("with_variance", 0.0) > 0
        metrics["nll"] = sums.mean("nll") if probabilistic else math.nan
        metrics["discard_auc"] = float(curve.auc)
        metrics["discard_auc_random"] = float(curve.random_auc)
        metrics["unc_err_spearman"] = float(spearman(uncertainty, error))
        metrics["coverage90"] = sums.mean("coverage90") if probabilistic else math.nan
        metrics["aleatoric_mean"] = sums.mean("aleatoric")
        metrics["epistemic_mean"] = sums.mean("epistemic")
        return UncertaintyEvaluation(metrics, None, curve, sums.items, collected.kept_count, kind)
    if kind == "multilabel":
        probs = kept["probs"].double()
        truth = kept["target"].double() > 0.5
        predicted = probs > 0.5
        right = (predicted == truth).double()
        confidence = torch.maximum(probs, 1 - probs).reshape(-1).numpy()
        correct = right.reshape(-1).numpy()
        score = right.mean(dim=1).numpy()  # per image: share of its labels right
    else:
        confidence = kept["confidence"].double().numpy()
        correct = kept["correct"].double().numpy()
        score = correct
    rel = reliability(confidence, correct, bins)
    curve = discard_curve(uncertainty, score, metric="accuracy", seed=seed)
    metrics["ece"] = float(rel.ece)
    metrics["ece_bins"] = int(rel.bins)
    metrics["nll"] = sums.mean("nll")
    metrics["brier"] = sums.mean("brier")
    metrics["discard_auc"] = float(curve.auc)
    metrics["discard_auc_random"] = float(curve.random_auc)
    metrics["unc_err_spearman"] = float(spearman(uncertainty, 1.0 - score))
    metrics["entropy_mean"] = sums.mean("entropy")
    metrics["aleatoric_mean"] = sums.mean("aleatoric")
    metrics["epistemic_mean"] = sums.mean("epistemic")
    return UncertaintyEvaluation(metrics, rel, curve, sums.items, collected.kept_count, kind)


def evaluate_uncertainty(
    module: Any,
    loader: Iterable[Mapping[str, Any]],
    kind: TaskKind,
    *,
    ignore_index: int | None = None,
    bins: int = 15,
    device: str | torch.device = "cpu",
    max_items: int = 200_000,
    seed: int = 0,
) -> UncertaintyEvaluation:
    """Score a module's predictive uncertainty on the clean targets of a loader.

    Args:
        module: Anything with ``predictive_samples(batch) -> [S, B, K, ...]`` (every
            :class:`~thinkingearth.tasks.protocols.TaskModule`); an ``nn.Module`` is moved to
            ``device`` and put in eval mode for the evaluation, then restored.
        loader: Batches (collated Samples) with ``label`` / ``mask`` / ``target``, or their
            ``*_clean`` versions, which are preferred.
        kind: ``classification``, ``multilabel``, ``segmentation``, ``change`` or
            ``regression``.
        ignore_index: Mask value that counts nowhere (dense single-label kinds).
        bins: Equal-width confidence bins of the ECE and reliability diagram.
        device: Where the predictions are computed.
        max_items: Most items (pixels) in the random subset behind the reliability bins,
            discard curve and rank correlation.
        seed: Seed of that subset and of the random-discard line.

    Returns:
        The metrics (see the module docstring), the reliability bins (``None`` for regression)
        and the discard curve.

    Raises:
        UserInputError: Unknown kind, no valid target at all, a class outside the model's
            classes, or more bins than kept predictions (one line each).
    """
    collected = _collect(
        module,
        loader,
        kind,
        ignore_index=ignore_index,
        device=torch.device(device),
        max_items=max_items,
        seed=seed,
    )
    return _score(collected, bins, seed)


# ---------------------------------------------------------------------------- finetune plugin

_DESCRIPTIONS: dict[str, str] = {
    "ece": "expected calibration error (equal-width confidence bins) ↓",
    "ece_bins": "bins of the ECE",
    "nll": "negative log-likelihood per {item} (nats) ↓",
    "brier": "Brier score ({brier}) ↓",
    "discard_auc": "discard test: mean {metric} after discarding the most uncertain 0-50 % {arrow}",
    "discard_auc_random": "the same, discarding at random (the line to beat)",
    "unc_err_spearman": "Spearman correlation of {uncertainty} with {error} ↑",
    "entropy_mean": "mean total predictive entropy (nats{per})",
    "aleatoric_mean": "mean aleatoric part ({unit})",
    "epistemic_mean": "mean epistemic part ({unit})",
    "coverage90": "share of targets within mean ± 1.645 std (0.9 if calibrated)",
}


def _description(key: str, kind: str, curve: DiscardCurve) -> str:
    regression, multilabel = kind == "regression", kind == "multilabel"
    words = {
        "item": "pixel (Gaussian)"
        if regression
        else "image-label pair"
        if multilabel
        else "image"
        if kind == "classification"
        else "pixel",
        "brier": "mean over image-label pairs of (p - y)²"
        if multilabel
        else "sum over classes of (p - y)², mean over items",
        "metric": curve.metric,
        "arrow": "↑" if curve.higher_is_better else "↓",
        "uncertainty": "predicted std" if regression else "total entropy",
        "error": "absolute error"
        if regression
        else "the share of labels wrong"
        if multilabel
        else "misclassification",
        "per": ", summed over labels" if multilabel else "",
        "unit": "variance, target units²"
        if regression
        else "nats, summed over labels"
        if multilabel
        else "nats",
    }
    return _DESCRIPTIONS.get(key, "").format(**words)


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def _method(module: Any) -> tuple[str, str]:
    """The uncertainty method's name and a short description of its settings."""
    head = getattr(module, "uncertainty_head", None)
    name = str(getattr(head, "uncertainty", "none")) if head is not None else "none"
    details = {
        "none": "deterministic",
        "heteroscedastic": f"{getattr(head, 'samples', '?')} noisy-logit samples, temperature "
        f"{getattr(head, 'temperature', '?')}",
        "mc_dropout": f"{getattr(head, 'mc_samples', '?')} dropout passes, rate "
        f"{getattr(head, 'dropout', '?')}",
        "ensemble": f"{getattr(head, 'members', '?')} members",
    }
    return name, details.get(name, "")


def test_evaluation(
    module: Any,
    loader: Iterable[Mapping[str, Any]],
    kind: TaskKind,
    *,
    ignore_index: int | None,
    out: Path,
) -> TestEvaluation:
    """The ``finetune`` plugin: uncertainty metrics, figures and a report section.

    Writes ``out/reliability.png`` (not for regression) and ``out/discard.png`` atomically. The
    ECE uses 15 bins, fewer when the test split has fewer predictions (the count is stated in
    the metrics, ``ece_bins``, and the report).

    Args:
        module: The trained task module (evaluated on the device it is on).
        loader: The test split's batches.
        kind: The task kind.
        ignore_index: Mask value that counts nowhere.
        out: The run folder.
    """
    from thinkingearth.uncertainty.plots import discard_png, reliability_png

    out = Path(out)
    collected = _collect(
        module,
        loader,
        kind,
        ignore_index=ignore_index,
        device=_module_device(module),
        max_items=200_000,
        seed=0,
    )
    bins = max(1, min(15, collected.calibration_events))
    evaluation = _score(collected, bins, seed=0)
    method, details = _method(module)
    files: list[Path] = []
    images: list[str] = []
    if evaluation.reliability is not None:
        path = reliability_png(
            evaluation.reliability, out / "reliability.png", f"reliability ({method}, test)"
        )
        files.append(path)
        images.append(f"![reliability diagram]({path.name})")
    path = discard_png(
        {method: evaluation.discard}, out / "discard.png", f"discard test ({method})"
    )
    files.append(path)
    images.append(f"![discard test]({path.name})")

    what = (
        f"{evaluation.items} test images"
        if kind in ("classification", "multilabel")
        else f"{evaluation.items} test pixels"
    )
    lines = [
        "## Uncertainty",
        "",
        f"- method: `{method}` ({details}); scored on the clean test targets, {what}"
        + (
            f"; reliability, discard and correlation on a random {evaluation.kept} of them"
            if evaluation.kept < evaluation.items
            else ""
        ),
    ]
    if evaluation.reliability is not None:
        lines.append(f"- ECE over {evaluation.reliability.bins} equal-width confidence bins")
    lines += ["", "| metric | value | meaning |", "|---|---|---|"]
    for key, value in evaluation.metrics.items():
        text = _description(key, kind, evaluation.discard)
        lines.append(f"| {key} | {_fmt(value)} | {text} |")
    lines += ["", *[f"{image}\n" for image in images]]
    return TestEvaluation(dict(evaluation.metrics), "\n".join(lines), tuple(files))


test_evaluation.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
