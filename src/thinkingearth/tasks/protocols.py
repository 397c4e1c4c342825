"""Evaluation protocols: what is frozen, which head is trained, and on how many labels.

Protocols (:data:`PROTOCOLS`), as in the foundation-model benchmarks (GEO-Bench, PANGAEA,
Copernicus-Bench):

* ``linear-probe``: the encoder is frozen; a linear layer is trained on its pooled features
  (classification) or per pixel on its last feature map (dense tasks);
* ``frozen-upernet``: the encoder is frozen; a UPerNet decoder is trained on four of its levels
  (dense tasks; for scene classification the head is the linear layer, as there is no decoder);
* ``finetune``: every weight is trained, encoder and head. Supervised baselines trained from
  scratch always use this protocol.

A frozen encoder stays in eval mode (its BatchNorm statistics and dropout too) and runs without
gradients. Label fractions train on a seeded random subset of the training split
(:func:`label_fraction_indices`).

This module also holds what every task module shares (:class:`TaskModule`): the protocol, the
optimiser (AdamW with linear warm-up then cosine decay, over the trainable parameters only),
metric logging at the end of validation and test epochs, and the predictive distributions
(:meth:`TaskModule.predictive_samples`) that uncertainty estimates are computed from; and
:class:`EncoderBackbone`, which presents the any-sensor encoder to task heads like any other
:class:`Backbone`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import Backbone, DenseModel, level_indices
from thinkingearth.models.encoder import Encoder
from thinkingearth.tasks.metrics import to_dict
from thinkingearth.tasks.variants import UncertaintyHead

__all__ = [
    "PROTOCOLS",
    "EncoderBackbone",
    "FeatureCache",
    "Protocol",
    "TaskModule",
    "check_protocol",
    "label_fraction_indices",
    "output_size",
    "warmup_cosine_optimizer",
]

Protocol = Literal["linear-probe", "frozen-upernet", "finetune"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
Batch = Mapping[str, Any]


def check_protocol(protocol: str) -> Protocol:
    """Return ``protocol`` if known.

    Raises:
        UserInputError: Listing the protocols.
    """
    if protocol not in PROTOCOLS:
        raise UserInputError(
            f"unknown protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)}"
        )
    return protocol  # type: ignore[return-value]


def label_fraction_indices(n: int, fraction: float, seed: int, minimum: int = 2) -> list[int]:
    """Indices of a seeded random subset of ``ceil(fraction * n)`` training samples.

    Args:
        n: Size of the training split.
        fraction: Share of labels in ``(0, 1]``; 1 keeps every sample.
        seed: Seed of the draw (each seed of a benchmark draws its own subset).
        minimum: Fewest samples kept (a batch of one breaks BatchNorm).

    Returns:
        Sorted indices.

    Raises:
        UserInputError: For a fraction outside ``(0, 1]`` or an empty split.
    """
    if not (isinstance(fraction, int | float) and 0.0 < fraction <= 1.0):
        raise UserInputError(f"label fraction must be in (0, 1]; got {fraction!r}")
    if n <= 0:
        raise UserInputError("the training split is empty")
    if fraction >= 1.0:
        return list(range(n))
    k = min(n, max(minimum, math.ceil(fraction * n)))
    generator = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=generator)[:k].tolist())


def warmup_cosine_optimizer(
    params: Sequence[nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    warmup: float,
    total_steps: int,
) -> dict[str, Any]:
    """AdamW with linear warm-up then cosine decay to 0, stepped per optimisation step.

    What :meth:`TaskModule.configure_optimizers` returns, reusable by modules that train a task
    module together with parameters of their own (domain adaptation). Weight decay applies to
    matrices and kernels only (``ndim > 1``), not to biases and normalisation parameters.

    Args:
        params: The parameters to train.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay of the matrices and kernels.
        warmup: Share of the steps with a linear warm-up.
        total_steps: Planned optimisation steps (at least 1 is assumed).

    Returns:
        Lightning's ``{"optimizer": ..., "lr_scheduler": {"scheduler": ..., "interval": "step"}}``.
    """
    params = list(params)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    total = max(1, int(total_steps))
    warm = max(1, int(warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
    }


def _batch_bands(values: Any) -> tuple[str, ...]:
    """The band names of a batch: one sequence of names, or one per sample (all equal)."""
    if isinstance(values, list | tuple) and all(isinstance(v, str) for v in values):
        return tuple(values)
    if isinstance(values, list | tuple) and values:
        first = tuple(values[0])
        if any(tuple(v) != first for v in values[1:]):
            raise UserInputError(f"a batch mixes band sets: {sorted({tuple(v) for v in values})}")
        return first
    raise UserInputError(f"cannot read band names from the batch: {values!r}")


def _batch_sensor(values: Any) -> str:
    """The sensor of a batch: one name, or one per sample (all equal)."""
    if isinstance(values, str):
        return values
    if isinstance(values, list | tuple) and values and all(isinstance(v, str) for v in values):
        if len(set(values)) > 1:
            raise UserInputError(f"a batch mixes sensors: {sorted(set(values))}")
        return values[0]
    raise UserInputError(f"cannot read the sensor from the batch: {values!r}")


class EncoderBackbone(Backbone):
    """The any-sensor encoder as a :class:`Backbone`: bands, sensor and metadata from the batch.

    Args:
        encoder: The encoder (:func:`thinkingearth.models.create_encoder` or ``load``).
        patch_size: Patch size to run at (default: the encoder's own; kernels are resized).
        indices: Blocks read for dense heads (default: four evenly spaced, the last included).
        use_meta: Pass ``lon``/``lat``/``time``/``gsd`` of the batch to the encoder.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        patch_size: int | None = None,
        indices: Sequence[int] | None = None,
        use_meta: bool = True,
    ) -> None:
        """Wrap the encoder."""
        super().__init__()
        self.encoder = encoder
        self.patch_size = int(patch_size or encoder.config.patch_size)
        depth = len(encoder.blocks)
        self.indices = tuple(indices) if indices is not None else level_indices(depth)
        self.use_meta = use_meta
        d = encoder.embed_dim
        self.embed_dim = d
        self.level_channels = (d,) * len(self.indices)
        self.level_strides = (self.patch_size,) * len(self.indices)

    def _inputs(self, batch: Batch | None) -> dict[str, Any]:
        if batch is None or "bands" not in batch or "sensor" not in batch:
            raise UserInputError("the encoder needs the batch's 'bands' and 'sensor'")
        return {
            "bands": list(_batch_bands(batch["bands"])),
            "sensor": _batch_sensor(batch["sensor"]),
            "meta": batch if self.use_meta else None,
            "patch_size": self.patch_size,
        }

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Pooled features ``[B, D]``."""
        return self.encoder(image, **self._inputs(batch))

    def levels(self, image: Tensor, batch: Batch | None = None) -> list[Tensor]:
        """Patch-token maps ``[B, D, h, w]`` after the chosen blocks."""
        return self.encoder.forward_intermediates(
            image, indices=self.indices, **self._inputs(batch)
        )


class FeatureCache(Backbone):
    """Remember a frozen backbone's outputs per sample, keyed by the batch's ``key`` entry.

    A frozen backbone without augmentation gives the same features for a sample every epoch,
    so they are computed once (the usual way to run linear probes). A batch with any unknown key
    is computed whole. Set :attr:`enabled` to ``False`` to time the real forward pass.

    Args:
        backbone: The frozen backbone.
    """

    def __init__(self, backbone: Backbone) -> None:
        """Wrap the backbone."""
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.embed_dim
        self.level_channels = backbone.level_channels
        self.level_strides = backbone.level_strides
        self.enabled = True
        self._pooled: dict[str, Tensor] = {}
        self._levels: dict[str, list[Tensor]] = {}

    def clear(self) -> None:
        """Forget every stored feature."""
        self._pooled.clear()
        self._levels.clear()

    def _keys(self, batch: Batch | None) -> list[str] | None:
        if not self.enabled or batch is None or "key" not in batch:
            return None
        return [str(k) for k in batch["key"]]

    def pooled(self, image: Tensor, batch: Batch | None = None) -> Tensor:
        """Pooled features, from the cache where every sample of the batch is in it."""
        keys = self._keys(batch)
        if keys is None:
            return self.backbone.pooled(image, batch)
        if not all(k in self._pooled for k in keys):
            out = self.backbone.pooled(image, batch).detach()
            self._pooled.update(zip(keys, out, strict=True))
            return out
        return torch.stack([self._pooled[k] for k in keys])

    def levels(self, image: Tensor, batch: Batch | None = None) -> list[Tensor]:
        """Feature maps, from the cache where every sample of the batch is in it."""
        keys = self._keys(batch)
        if keys is None:
            return self.backbone.levels(image, batch)
        if not all(k in self._levels for k in keys):
            out = [m.detach() for m in self.backbone.levels(image, batch)]
            for i, key in enumerate(keys):
                self._levels[key] = [m[i] for m in out]
            return out
        per = [self._levels[k] for k in keys]
        return [torch.stack([p[level] for p in per]) for level in range(len(per[0]))]


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


class TaskModule(L.LightningModule):
    """What every task shares: protocol, optimiser, schedule and metric logging.

    Args:
        backbone: A :class:`Backbone` (the task adds a head) or a :class:`DenseModel`.
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup: Share of the steps with a linear warm-up (then cosine decay to 0).
        class_names: Names for per-class metric keys.

    Attributes:
        test_results: Flat metric values of the last test epoch (``{"miou": ..., "iou/flood":
            ...}``).
        val_results: Same for the last validation epoch.
        uncertainty_head: How the module estimates uncertainty; the plain modules of
            :mod:`thinkingearth.tasks` are ``UncertaintyHead()`` (deterministic), variants from
            :mod:`thinkingearth.uncertainty` set their own.

    Hooks for variants (subclasses that estimate uncertainty override these rather than the
    constructors): :meth:`head_outputs` (channels the head builds), :meth:`head_input` (what the
    head receives), :meth:`predictive` and :meth:`predictive_sample_count` (what
    :meth:`predictive_samples` stacks).
    """

    #: The plain module's head: deterministic (an instance attribute in variants).
    uncertainty_head: UncertaintyHead = UncertaintyHead()

    def __init__(
        self,
        backbone: Backbone | DenseModel,
        protocol: Protocol = "finetune",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Apply the protocol to the backbone."""
        super().__init__()
        self.protocol = check_protocol(protocol)
        if isinstance(backbone, DenseModel) and self.protocol != "finetune":
            raise UserInputError(
                f"{type(backbone).__name__} is a complete supervised model trained from scratch; "
                f"it has no frozen-encoder protocol ({self.protocol}); use finetune"
            )
        if not isinstance(backbone, Backbone | DenseModel):
            raise TypeError(f"expected a Backbone or DenseModel, got {type(backbone).__name__}")
        self.backbone = backbone
        self.frozen = self.protocol != "finetune"
        if self.frozen:
            _freeze(backbone)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup = float(warmup)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.val_metrics: MetricCollection
        self.test_metrics: MetricCollection
        self.test_results: dict[str, float] = {}
        self.val_results: dict[str, float] = {}

    # ------------------------------------------------------------------ protocol

    def train(self, mode: bool = True) -> TaskModule:
        """Switch mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def backbone_call(self, fn: str, image: Tensor, batch: Batch | None) -> Any:
        """Call ``backbone.<fn>(image, batch)``, without gradients when frozen."""
        method = getattr(self.backbone, fn)
        if self.frozen:
            with torch.no_grad():
                return method(image, batch)
        return method(image, batch)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the protocol trains."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        """AdamW over the trainable parameters; linear warm-up, then cosine decay per step."""
        return warmup_cosine_optimizer(
            self.trainable_parameters(),
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup=self.warmup,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )

    # ------------------------------------------------------------------ hooks for variants

    def head_outputs(self, outputs: int) -> int:
        """Output channels the head builds for ``outputs`` task outputs.

        ``outputs`` is the number of classes (labels; 1 for regression). Called from the
        constructor, after :class:`TaskModule` is initialised and before the head is built, so
        an override may read only attributes set before that (class attributes, or instance
        attributes assigned before ``super().__init__``). A heteroscedastic head returns
        ``2 * outputs`` (logits and scales; mean and variance). A complete
        :class:`~thinkingearth.models.baselines.DenseModel` must have this many outputs.
        """
        return outputs

    def head_input(self, features: Any) -> Any:
        """What the head receives, given the backbone's output (identity here).

        ``features`` is the pooled ``[B, D]`` tensor (classification) or the list of level maps
        ``[B, C_i, h_i, w_i]`` (dense tasks; for change detection the fused maps). Not called
        for a complete :class:`~thinkingearth.models.baselines.DenseModel` (it has no separate
        head). MC dropout applies its dropout here.
        """
        return features

    def predictive_sample_count(self) -> int:
        """How many weight samples :meth:`predictive_samples` draws (1: deterministic)."""
        return 1

    def predictive(self, batch: Batch, sample: int) -> Tensor:
        """The predictive distribution of weight sample ``sample`` (``0 <= sample < S``).

        Shapes and meaning as one entry of :meth:`predictive_samples`; called in eval mode
        without gradients.
        """
        raise NotImplementedError

    def predictive_samples(self, batch: Batch) -> Tensor:
        """Predictive distributions per weight sample, ``[S, B, K, *spatial]``.

        Computed without gradients in eval mode (the mode is restored afterwards):

        * classification, segmentation, change: class probabilities (they sum to 1 over ``K``);
        * multi-label: per-label probabilities (sigmoid), ``[S, B, K]``;
        * regression: ``[S, B, 2, H, W]``, channel 0 the mean and channel 1 the variance in the
          target's units (variance 0 for a deterministic model).

        Dense outputs are at the size of ``batch["mask"]`` (regression: ``batch["target"]``)
        when the batch has it, else at the image size. ``S`` is
        :meth:`predictive_sample_count` (1 for the plain modules, whose one entry is their
        deterministic prediction).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return torch.stack(
                    [self.predictive(batch, s) for s in range(self.predictive_sample_count())]
                )
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ steps

    def step(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(loss, predictions for the metrics, targets for the metrics)``."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One optimisation step; logs ``train/loss``."""
        loss, _, _ = self.step(batch)
        self.log("train/loss", loss, prog_bar=False, batch_size=_batch_size(batch))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate validation metrics; logs ``val/loss``."""
        loss, preds, target = self.step(batch)
        self.val_metrics.update(preds, target)
        self.log("val/loss", loss, batch_size=_batch_size(batch))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate test metrics; logs ``test/loss``."""
        loss, preds, target = self.step(batch)
        self.test_metrics.update(preds, target)
        self.log("test/loss", loss, batch_size=_batch_size(batch))

    def _finish(self, metrics: MetricCollection, prefix: str) -> dict[str, float]:
        values = to_dict(metrics.compute(), self.class_names)
        metrics.reset()
        self.log_dict({f"{prefix}/{k}": float(v) for k, v in values.items()})
        return values

    def on_validation_epoch_end(self) -> None:
        """Log every validation metric (``val/<name>``)."""
        self.val_results = self._finish(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        """Log every test metric (``test/<name>``) and keep them in :attr:`test_results`."""
        self.test_results = self._finish(self.test_metrics, "test")


def output_size(batch: Batch, key: str) -> tuple[int, int]:
    """The grid of a dense prediction: that of ``batch[key]`` (mask, target) if present, else
    the image's."""
    value = batch.get(key)
    if isinstance(value, Tensor) and value.ndim >= 2:
        return (int(value.shape[-2]), int(value.shape[-1]))
    image = batch["image"]
    return (int(image.shape[-2]), int(image.shape[-1]))


def _batch_size(batch: Batch) -> int:
    return int(batch["image"].shape[0])
