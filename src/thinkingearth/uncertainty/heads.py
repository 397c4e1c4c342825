"""Task modules that estimate their own uncertainty: heteroscedastic heads, MC dropout, ensembles.

Each method is a builder found by name through the ``thinkingearth.uncertainty`` entry points
(:mod:`thinkingearth.tasks.variants`); :func:`thinkingearth.tasks.training.build_task_module`
calls it as ``builder(kind, net, head=UncertaintyHead, **its other keyword arguments)``. Every
module it returns is a :class:`~thinkingearth.tasks.protocols.TaskModule` that trains with the
same Lightning loops as the plain ones, reports the same metrics from :meth:`step`, and gives
:meth:`~thinkingearth.tasks.protocols.TaskModule.predictive_samples` ``[S, B, K, *spatial]``:

* ``heteroscedastic`` (Kendall & Gal 2017; Collier et al. 2021, a diagonal per-class scale):
  the head predicts ``K`` logits ``z`` and ``K`` noise scales ``σ = softplus(·) + 1e-3``; the
  predictive distribution is ``p̄ = 1/S Σ_s softmax((z + σ ε_s) / T)`` (a sigmoid per label for
  multi-label), trained by its negative log-likelihood
  (:func:`~thinkingearth.uncertainty.losses.sampled_softmax_nll`,
  :func:`~thinkingearth.uncertainty.losses.sampled_sigmoid_bce`; ``S = head.samples``,
  ``T = head.temperature``), per pixel for segmentation and change detection (memory bounded by
  the losses' chunking: about ``16 × pixels × K`` floats whatever ``S``). Regression: the head
  predicts a mean and a variance (``softplus(·) + 1e-4``, standardised units) trained with the
  Gaussian NLL over finite targets (:func:`~thinkingearth.uncertainty.losses.gaussian_nll`).
  One predictive entry (``S = 1``) that already averages the noise. In eval mode the noise
  draws are seeded (seed 0), so a prediction is a deterministic function of the input.
* ``mc_dropout`` (Gal & Ghahramani 2016): dropout at rate ``head.dropout`` on the head's inputs
  (pooled features; channel dropout on every feature level for dense heads), on in training and
  kept on for ``head.mc_samples`` predictive samples, which run the backbone once per batch and
  the head ``S`` times. :meth:`step` (metrics) is the deterministic eval forward.
* ``ensemble`` (Lakshminarayanan et al. 2017): ``head.members`` complete plain task modules,
  each on its own copy of the network (a frozen encoder, which never changes, is one object
  shared by all), trained together in one fit on the mean of their losses.
  The any-sensor encoder keeps its (pretrained) weights in every member, whose diversity then
  comes from the fresh head; a supervised baseline (a from-scratch network such as the U-Net) is
  re-initialised in every member with its own seed. :meth:`step` reports the member-averaged
  probabilities; ``S = members``. Frozen protocols keep every member's backbone frozen.

For every method :meth:`forward` returns scores whose softmax (sigmoid for multi-label) is the
predictive probability (log ``p̄``, or logit ``p̄``), as the plain modules' logits do, and the
predictive mean for regression, so code that applies a softmax to a plain module's output (the
scene predictor) reads these modules unchanged.

Heteroscedastic heads and MC dropout act on a separate head; a complete network with no head
(the U-Net and Siamese baselines) is refused in one line pointing at ``ensemble``.

References:
    Kendall, Gal. "What Uncertainties Do We Need in Bayesian Deep Learning for Computer
    Vision?" NeurIPS 2017.
    Collier, Mustafa, Kokiopoulou, Jenatton, Berent. "Correlated Input-Dependent Label Noise in
    Large-Scale Image Classification." CVPR 2021.
    Gal, Ghahramani. "Dropout as a Bayesian Approximation: Representing Model Uncertainty in
    Deep Learning." ICML 2016.
    Lakshminarayanan, Pritzel, Blundell. "Simple and Scalable Predictive Uncertainty Estimation
    using Deep Ensembles." NeurIPS 2017.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import Backbone, DenseModel, TaskKind, WideResNetECA
from thinkingearth.models.encoder import Encoder
from thinkingearth.tasks.change import ChangeTask
from thinkingearth.tasks.classification import ClassificationTask
from thinkingearth.tasks.protocols import EncoderBackbone, FeatureCache, TaskModule, output_size
from thinkingearth.tasks.regression import RegressionTask
from thinkingearth.tasks.segmentation import SegmentationTask
from thinkingearth.tasks.training import (
    build_task_module,
    plain_task_arguments,
)
from thinkingearth.tasks.variants import TaskBuilder, UncertaintyHead
from thinkingearth.uncertainty.losses import (
    gaussian_nll,
    sampled_probabilities,
    sampled_sigmoid_bce,
    sampled_softmax_nll,
)

__all__ = [
    "SCALE_FLOOR",
    "VARIANCE_FLOOR",
    "EnsembleTask",
    "HeteroscedasticChange",
    "HeteroscedasticClassification",
    "HeteroscedasticRegression",
    "HeteroscedasticSegmentation",
    "McDropoutChange",
    "McDropoutClassification",
    "McDropoutRegression",
    "McDropoutSegmentation",
    "build_ensemble",
    "build_heteroscedastic",
    "build_mc_dropout",
    "ensemble",
    "heteroscedastic",
    "mc_dropout",
]

Batch = Mapping[str, Any]

#: Smallest heteroscedastic noise scale (logit units): softplus alone reaches 0 only at -inf.
SCALE_FLOOR = 1e-3
#: Smallest predicted regression variance, in standardised units (keeps the NLL finite).
VARIANCE_FLOOR = 1e-4
#: Seed of the noise draws of heteroscedastic predictions in eval mode (deterministic outputs).
EVAL_SEED = 0


def _tiny(t: Tensor) -> float:
    return float(torch.finfo(t.dtype).tiny)


def _log(p: Tensor) -> Tensor:
    """``log p`` with exact zeros mapped to the smallest normal number (no ``-inf`` scores)."""
    return p.clamp_min(_tiny(p)).log()


def _logit(p: Tensor) -> Tensor:
    """``log p - log(1 - p)``: scores whose sigmoid is ``p``."""
    return _log(p) - _log(1.0 - p)


def _scores(probs: Tensor, multilabel: bool) -> Tensor:
    """Scores whose softmax (sigmoid per label when ``multilabel``) gives back ``probs``."""
    return _logit(probs) if multilabel else _log(probs)


def _check_classes(target: Tensor, num_classes: int, multilabel: bool) -> None:
    """The plain classifier's shape checks of ``label`` (same messages)."""
    if multilabel:
        if target.ndim != 2 or target.shape[1] != num_classes:
            raise ValueError(
                f"multi-label targets must be multi-hot [B, {num_classes}]; "
                f"got {tuple(target.shape)}"
            )
    elif target.ndim != 1:
        raise ValueError(f"class targets must be ids [B]; got {tuple(target.shape)}")


def _regression_target(batch: Batch) -> Tensor:
    """``batch["target"]`` as ``[B, 1, H, W]`` float (the plain module's checks)."""
    target = batch["target"].float()
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if target.ndim != 4 or target.shape[1] != 1:
        raise ValueError(
            f"pixel-wise targets must be [B, H, W] or [B, 1, H, W]; got {tuple(target.shape)}"
        )
    return target


def _dense_mask(batch: Batch) -> Tensor:
    mask = batch["mask"].long()
    if mask.ndim != 3:
        raise ValueError(f"masks must be [B, H, W] class ids; got {tuple(mask.shape)}")
    return mask


def _log_train_loss(module: TaskModule, loss: Tensor, batch: Batch) -> Tensor:
    module.log("train/loss", loss, prog_bar=False, batch_size=int(batch["image"].shape[0]))
    return loss


def _needs_head(method: str, net: Backbone | DenseModel) -> None:
    """Heteroscedastic heads and MC dropout change the head; a complete network has none."""
    if isinstance(net, DenseModel):
        raise UserInputError(
            f"head.uncertainty {method} needs a backbone with a separate head; "
            f"{type(net).__name__} is a complete network without one: use ensemble"
        )


# ============================================================================== heteroscedastic


class _Heteroscedastic:
    """What every heteroscedastic module shares: twice the head outputs, the noise generator."""

    uncertainty_head: UncertaintyHead
    training: bool

    def head_outputs(self, outputs: int) -> int:
        """Logits and scales (classes), or mean and variance (regression)."""
        return 2 * outputs

    def noise_generator(self) -> torch.Generator | None:
        """Training: the global generator (``seed_everything`` governs it); eval: seeded draws,
        so predictions and validation metrics are deterministic functions of the input."""
        if self.training:
            return None
        return torch.Generator().manual_seed(EVAL_SEED)

    def split_scale(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, 2K, ...]`` head output -> logits ``[B, K, ...]``, scales ``σ > 0``."""
        logits, raw = out.chunk(2, dim=1)
        return logits, F.softplus(raw) + SCALE_FLOOR

    def mean_probabilities(self, logits: Tensor, scale: Tensor, multilabel: bool) -> Tensor:
        """``p̄`` over ``head.samples`` noise draws at ``head.temperature``."""
        head = self.uncertainty_head
        return sampled_probabilities(
            logits,
            scale,
            samples=head.samples,
            temperature=head.temperature,
            activation="sigmoid" if multilabel else "softmax",
            generator=self.noise_generator(),
        )


class HeteroscedasticClassification(_Heteroscedastic, ClassificationTask):
    """Single- or multi-label classification with a per-class noise scale (Collier et al.).

    Args:
        *args: As :class:`~thinkingearth.tasks.classification.ClassificationTask`.
        uncertainty: The uncertainty settings (``samples``, ``temperature``).
        **kwargs: As :class:`~thinkingearth.tasks.classification.ClassificationTask`.
    """

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain classifier with a head of ``2K`` outputs."""
        self.uncertainty_head = uncertainty
        super().__init__(*args, **kwargs)

    def logits_and_scale(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Logits ``[B, K]`` and noise scales ``[B, K]``."""
        return self.split_scale(ClassificationTask.forward(self, batch))

    def loss(self, logits: Tensor, scale: Tensor, target: Tensor) -> Tensor:
        """Sampled softmax NLL, or the sampled sigmoid BCE for multi-label."""
        head = self.uncertainty_head
        fn = sampled_sigmoid_bce if self.multilabel else sampled_softmax_nll
        target = target.float() if self.multilabel else target.long()
        return fn(
            logits,
            scale,
            target,
            samples=head.samples,
            temperature=head.temperature,
            generator=self.noise_generator(),
        )

    def forward(self, batch: Batch) -> Tensor:
        """Scores ``[B, K]``: log ``p̄`` (logit ``p̄`` for multi-label)."""
        probs = self.mean_probabilities(*self.logits_and_scale(batch), self.multilabel)
        return _scores(probs, self.multilabel)

    def predictive(self, batch: Batch, sample: int) -> Tensor:
        """The noise-averaged probabilities ``[B, K]``."""
        return self.mean_probabilities(*self.logits_and_scale(batch), self.multilabel)

    def step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, scores for the metrics (log ``p̄``; ``p̄`` for multi-label) and targets."""
        target = batch["label"]
        _check_classes(target, self.num_classes, self.multilabel)
        logits, scale = self.logits_and_scale(batch)
        loss = self.loss(logits, scale, target)
        with torch.no_grad():
            probs = self.mean_probabilities(logits, scale, self.multilabel)
        preds = probs if self.multilabel else _log(probs)
        return loss, preds, target.long()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The loss only (no predictive mean to compute); logs ``train/loss``."""
        target = batch["label"]
        _check_classes(target, self.num_classes, self.multilabel)
        return _log_train_loss(self, self.loss(*self.logits_and_scale(batch), target), batch)


class _HeteroscedasticDense(_Heteroscedastic):
    """Per-pixel heteroscedastic softmax for segmentation and change detection."""

    ignore_index: int | None
    logits: Any  # the plain task class's raw head output ``[B, 2K, *size]`` (after this in MRO)

    def logits_and_scale(self, batch: Batch, size: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Logits and scales ``[B, K, *size]``."""
        return self.split_scale(self.logits(batch["image"], batch, size))

    def loss(self, logits: Tensor, scale: Tensor, mask: Tensor) -> Tensor:
        """Sampled softmax NLL per pixel, the ignore index skipped (chunked: memory bounded)."""
        head = self.uncertainty_head
        return sampled_softmax_nll(
            logits,
            scale,
            mask,
            samples=head.samples,
            temperature=head.temperature,
            ignore_index=self.ignore_index,
            generator=self.noise_generator(),
        )

    def forward(self, batch: Batch) -> Tensor:
        """Scores ``[B, K, H, W]`` at the image size: log ``p̄``."""
        image = batch["image"]
        return _log(self.mean_probabilities(*self.logits_and_scale(batch, image.shape[-2:]), False))

    def predictive(self, batch: Batch, sample: int) -> Tensor:
        """The noise-averaged class probabilities ``[B, K, H, W]`` at the mask's size."""
        size = output_size(batch, "mask")
        return self.mean_probabilities(*self.logits_and_scale(batch, size), False)

    def step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Sampled NLL (ignore index skipped), log ``p̄`` for the metrics, and the mask."""
        mask = _dense_mask(batch)
        logits, scale = self.logits_and_scale(batch, mask.shape[-2:])
        loss = self.loss(logits, scale, mask)
        with torch.no_grad():
            preds = _log(self.mean_probabilities(logits, scale, False))
        return loss, preds, mask

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The loss only; logs ``train/loss``."""
        mask = _dense_mask(batch)
        loss = self.loss(*self.logits_and_scale(batch, mask.shape[-2:]), mask)
        return _log_train_loss(self, loss, batch)  # type: ignore[arg-type]


class HeteroscedasticSegmentation(_HeteroscedasticDense, SegmentationTask):
    """Segmentation with a per-pixel, per-class noise scale.

    Args:
        *args: As :class:`~thinkingearth.tasks.segmentation.SegmentationTask`.
        uncertainty: The uncertainty settings (``samples``, ``temperature``).
        **kwargs: As :class:`~thinkingearth.tasks.segmentation.SegmentationTask`.
    """

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module with a head of ``2K`` outputs."""
        self.uncertainty_head = uncertainty
        super().__init__(*args, **kwargs)


class HeteroscedasticChange(_HeteroscedasticDense, ChangeTask):
    """Change detection with a per-pixel, per-class noise scale.

    Args:
        *args: As :class:`~thinkingearth.tasks.change.ChangeTask`.
        uncertainty: The uncertainty settings (``samples``, ``temperature``).
        **kwargs: As :class:`~thinkingearth.tasks.change.ChangeTask`.
    """

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module with a head of ``2K`` outputs."""
        self.uncertainty_head = uncertainty
        super().__init__(*args, **kwargs)


class HeteroscedasticRegression(_Heteroscedastic, RegressionTask):
    """Pixel-wise regression of a mean and a variance, trained with the Gaussian NLL.

    The loss is the Gaussian NLL in standardised units whatever ``loss`` says (``mse``/``l1``
    are the deterministic module's). Predicted variances are ``softplus(·) + 1e-4`` in
    standardised units; :meth:`predictive` gives them in the target's (``× std²``).

    Args:
        *args: As :class:`~thinkingearth.tasks.regression.RegressionTask`.
        uncertainty: The uncertainty settings.
        **kwargs: As :class:`~thinkingearth.tasks.regression.RegressionTask`.
    """

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module with a head of 2 outputs (mean, variance)."""
        self.uncertainty_head = uncertainty
        super().__init__(*args, **kwargs)

    def mean_and_variance(self, batch: Batch, size: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Mean and variance ``[B, 1, *size]`` in standardised units."""
        out = self.standardised(batch["image"], batch, size)
        mean, raw = out.chunk(2, dim=1)
        return mean, F.softplus(raw) + VARIANCE_FLOOR

    def forward(self, batch: Batch) -> Tensor:
        """The predicted mean ``[B, 1, H, W]`` in the target's units, at the image size."""
        mean, _ = self.mean_and_variance(batch, batch["image"].shape[-2:])
        return mean * self.target_std + self.target_mean

    def predictive(self, batch: Batch, sample: int) -> Tensor:
        """Mean and variance ``[B, 2, H, W]`` in the target's units, at the target's size."""
        mean, variance = self.mean_and_variance(batch, output_size(batch, "target"))
        return torch.cat(
            [mean * self.target_std + self.target_mean, variance * self.target_std**2], dim=1
        )

    def _loss(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        target = _regression_target(batch)
        mean, variance = self.mean_and_variance(batch, target.shape[-2:])
        truth = (target - self.target_mean) / self.target_std
        return gaussian_nll(mean, variance, truth), mean, target

    def step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Gaussian NLL over finite targets, the mean in target units, targets ``[B,1,H,W]``."""
        loss, mean, target = self._loss(batch)
        return loss, mean.detach() * self.target_std + self.target_mean, target

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """The loss only; logs ``train/loss``."""
        return _log_train_loss(self, self._loss(batch)[0], batch)


_HETEROSCEDASTIC: dict[type[TaskModule], type[TaskModule]] = {
    ClassificationTask: HeteroscedasticClassification,
    SegmentationTask: HeteroscedasticSegmentation,
    ChangeTask: HeteroscedasticChange,
    RegressionTask: HeteroscedasticRegression,
}


def build_heteroscedastic(
    kind: TaskKind, net: Backbone | DenseModel, *, head: UncertaintyHead, **kwargs: Any
) -> TaskModule:
    """The heteroscedastic task module of ``kind`` on ``net`` (a builder: see the module doc).

    Raises:
        UserInputError: For a complete network without a separate head (use ``ensemble``).
    """
    _needs_head("heteroscedastic", net)
    plain, args, options = plain_task_arguments(kind, **kwargs)
    cls = _HETEROSCEDASTIC[plain]
    return cls(net, *args, uncertainty=head, **options)


# ================================================================================ MC dropout


class _McDropout:
    """Dropout on the head's inputs, kept on while drawing predictive samples.

    The backbone's outputs are remembered while :meth:`predictive_samples` runs, so the backbone
    runs once per batch and only the head runs ``mc_samples`` times.
    """

    uncertainty_head: UncertaintyHead
    training: bool
    _sampling: bool
    _features: dict[tuple[Any, ...], Any] | None

    def _setup(self, head: UncertaintyHead) -> None:
        self.uncertainty_head = head
        self._sampling = False
        self._features = None

    def head_input(self, features: Any) -> Any:
        """Dropout (rate ``head.dropout``) on pooled features, channel dropout on each level;
        active in training and while drawing predictive samples, off otherwise."""
        active = self.training or self._sampling
        p = self.uncertainty_head.dropout
        if isinstance(features, Tensor):
            return F.dropout(features, p, training=active)
        return [F.dropout2d(f, p, training=active) for f in features]

    def backbone_call(self, fn: str, image: Tensor, batch: Batch | None) -> Any:
        """The backbone's output, remembered per input tensor while sampling."""
        if self._features is None:
            return super().backbone_call(fn, image, batch)  # type: ignore[misc]
        key = (fn, image.data_ptr(), tuple(image.shape), tuple(image.stride()))
        if key not in self._features:
            self._features[key] = super().backbone_call(fn, image, batch)  # type: ignore[misc]
        return self._features[key]

    def predictive_sample_count(self) -> int:
        """``head.mc_samples``."""
        return self.uncertainty_head.mc_samples

    def predictive_samples(self, batch: Batch) -> Tensor:
        """``mc_samples`` predictive distributions with the head's input dropout on."""
        self._sampling, self._features = True, {}
        try:
            return super().predictive_samples(batch)  # type: ignore[misc]
        finally:
            self._sampling, self._features = False, None


class McDropoutClassification(_McDropout, ClassificationTask):
    """Classification with MC dropout on the pooled features (args as the plain class)."""

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module."""
        self._setup(uncertainty)
        super().__init__(*args, **kwargs)


class McDropoutSegmentation(_McDropout, SegmentationTask):
    """Segmentation with MC channel dropout on the feature levels (args as the plain class)."""

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module."""
        self._setup(uncertainty)
        super().__init__(*args, **kwargs)


class McDropoutChange(_McDropout, ChangeTask):
    """Change detection with MC channel dropout on the fused levels (args as the plain class)."""

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module."""
        self._setup(uncertainty)
        super().__init__(*args, **kwargs)


class McDropoutRegression(_McDropout, RegressionTask):
    """Regression with MC channel dropout on the feature levels (args as the plain class).

    Each predictive sample has variance 0; the spread of the means is the epistemic part.
    """

    def __init__(self, *args: Any, uncertainty: UncertaintyHead, **kwargs: Any) -> None:
        """Build the plain module."""
        self._setup(uncertainty)
        super().__init__(*args, **kwargs)


_MC_DROPOUT: dict[type[TaskModule], type[TaskModule]] = {
    ClassificationTask: McDropoutClassification,
    SegmentationTask: McDropoutSegmentation,
    ChangeTask: McDropoutChange,
    RegressionTask: McDropoutRegression,
}


def build_mc_dropout(
    kind: TaskKind, net: Backbone | DenseModel, *, head: UncertaintyHead, **kwargs: Any
) -> TaskModule:
    """The MC-dropout task module of ``kind`` on ``net`` (a builder: see the module doc).

    Raises:
        UserInputError: For a complete network without a separate head (use ``ensemble``).
    """
    _needs_head("mc_dropout", net)
    plain, args, options = plain_task_arguments(kind, **kwargs)
    cls = _MC_DROPOUT[plain]
    return cls(net, *args, uncertainty=head, **options)


# ================================================================================== ensemble


def _keeps_weights(net: nn.Module) -> bool:
    """The any-sensor encoder keeps its (pretrained) weights; baselines are from scratch."""
    inner = net.backbone if isinstance(net, FeatureCache) else net
    return isinstance(inner, EncoderBackbone)


def _reinitialise(net: nn.Module, seed: int) -> None:
    """Fresh random weights for every layer of ``net`` from ``seed`` (CPU generator only).

    Every layer's own ``reset_parameters`` runs first, then what the network's constructor
    applies on top, as at construction: the ``init_weights`` of timm's ResNet and ViT, and the
    Wide-ResNet's He-normal (fan-out) convolutions.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        for module in net.modules():
            init = getattr(module, "init_weights", None)
            if callable(init):
                init()
            if isinstance(module, WideResNetECA):  # as WideResNetECA.__init__ does
                for conv in module.modules():
                    if isinstance(conv, nn.Conv2d):
                        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def _share_language_tables(source: nn.Module, copy_: nn.Module) -> None:
    """Let the copied encoders read the original's language table (one dict), so a table given
    to the original after construction (a checkpoint's, unpacked on load) reaches every member."""
    for a, b in zip(source.modules(), copy_.modules(), strict=True):
        if isinstance(a, Encoder) and isinstance(b, Encoder):
            b.language_table = a.language_table


class EnsembleTask(TaskModule):
    """A deep ensemble: complete plain task modules trained together on the mean of their losses.

    Args:
        kind: The task kind of every member.
        members: Two or more plain task modules of that kind (each with its own network).
        head: The uncertainty settings (``members`` of them).

    Attributes:
        members: The member modules.
        task_kind: The task kind (what a checkpoint stores; the members are plain modules).
        backbone: The first member's network; ``head``: its head (what a checkpoint describes).
    """

    def __init__(self, kind: str, members: Sequence[TaskModule], head: UncertaintyHead) -> None:
        """Keep the members; metrics and protocol are the first member's."""
        if len(members) < 2:
            raise UserInputError(f"an ensemble needs at least 2 members; got {len(members)}")
        first = members[0]
        super().__init__(
            first.backbone,
            first.protocol,
            first.lr,
            first.weight_decay,
            first.warmup,
            first.class_names,
        )
        del self._modules["backbone"]  # the members own their networks (see `backbone`)
        self.uncertainty_head = head
        self.task_kind = kind
        self.members = nn.ModuleList(members)
        self.multilabel = kind == "multilabel"
        for name in ("num_classes", "ignore_index", "fusion_mode", "target_mean", "target_std"):
            if hasattr(first, name):
                setattr(self, name, getattr(first, name))
        self.val_metrics = copy.deepcopy(first.val_metrics)
        self.test_metrics = copy.deepcopy(first.test_metrics)

    @property
    def backbone(self) -> Backbone | DenseModel:  # type: ignore[override]
        """The first member's network (what a checkpoint describes; every member has one)."""
        return self.members[0].backbone

    @property
    def head(self) -> nn.Module | None:
        """The first member's head (its kind and width describe every member's)."""
        return getattr(self.members[0], "head", None)

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse to replace ``backbone`` once built: each member owns its own."""
        if name == "backbone" and "members" in self._modules:
            raise UserInputError(
                "an ensemble has one network per member; its backbone cannot be replaced "
                "(int8 precision is not available for ensembles: use fp32)"
            )
        super().__setattr__(name, value)

    def _average(self, per_member: list[Tensor]) -> Tensor:
        return torch.stack(per_member).mean(dim=0)

    def forward(self, batch: Batch) -> Tensor:
        """Scores of the member-averaged probabilities (log ``p̄``; logit ``p̄`` for multi-label),
        or the mean of the members' means for regression."""
        if self.task_kind == "regression":
            return self._average([m(batch) for m in self.members])
        outputs = [m(batch) for m in self.members]
        if self.multilabel:
            return _logit(self._average([o.sigmoid() for o in outputs]))
        return _log(self._average([o.softmax(dim=1) for o in outputs]))

    def predictive_sample_count(self) -> int:
        """One predictive sample per member."""
        return len(self.members)

    def predictive(self, batch: Batch, sample: int) -> Tensor:
        """Member ``sample``'s predictive distribution."""
        return self.members[sample].predictive(batch, 0)

    def step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Mean of the member losses; the metrics' predictions of the member-averaged
        probabilities (log ``p̄``; ``p̄`` for multi-label; the mean for regression)."""
        results = [m.step(batch) for m in self.members]
        loss = torch.stack([r[0] for r in results]).mean()
        preds = [r[1].detach() for r in results]
        target = results[0][2]
        if self.task_kind == "regression" or self.multilabel:  # means; probabilities
            return loss, self._average(preds), target
        return loss, _log(self._average([p.softmax(dim=1) for p in preds])), target


def build_ensemble(
    kind: TaskKind, net: Backbone | DenseModel, *, head: UncertaintyHead, **kwargs: Any
) -> EnsembleTask:
    """A deep ensemble of ``head.members`` plain task modules of ``kind`` (see the module doc).

    Each member is built by :func:`~thinkingearth.tasks.training.build_task_module` on
    ``copy.deepcopy(net)``; a supervised baseline is re-initialised per member with a seed drawn
    from the global generator (so ``seed_everything`` makes the ensemble reproducible), the
    any-sensor encoder keeps its weights and its language table is shared. Under a frozen
    protocol the encoder (unchanged by training) is one object shared by every member.
    """
    options = dict(kwargs)
    dense_head = options.pop("dense_head", None)
    keep = _keeps_weights(net)
    # A frozen encoder is the same in every member and never changes: one object serves them all
    # (one feature cache, one copy in memory; the checkpoint stores it under each member's name).
    share = keep and options.get("protocol", "finetune") != "finetune"
    base = int(torch.randint(0, 2**31 - 1, (1,)))
    members = []
    for i in range(head.members):
        member_net = net if share else copy.deepcopy(net)
        if keep and not share:
            _share_language_tables(net, member_net)
        elif not keep:
            _reinitialise(member_net, base + i)
        members.append(build_task_module(kind, member_net, head=dense_head, **options))
    return EnsembleTask(kind, members, head)


# ============================================================================= entry points


def heteroscedastic() -> TaskBuilder:
    """Entry point ``heteroscedastic``: the builder of heteroscedastic task modules."""
    return build_heteroscedastic


def mc_dropout() -> TaskBuilder:
    """Entry point ``mc_dropout``: the builder of MC-dropout task modules."""
    return build_mc_dropout


def ensemble() -> TaskBuilder:
    """Entry point ``ensemble``: the builder of deep ensembles."""
    return build_ensemble
