"""Semantic segmentation: UPerNet (or a per-pixel linear probe) over encoder levels.

:class:`SegmentationTask` trains a dense head (:class:`~thinkingearth.models.heads.DenseHead`:
UPerNet, Xiao et al. 2018, over four levels of the backbone, with the ViT neck for single-scale
encoders; or the per-pixel linear probe) with cross-entropy that skips the ignore index. A
:class:`~thinkingearth.models.baselines.DenseModel` (U-Net) is trained as it is. Metrics come
from :func:`thinkingearth.tasks.metrics.segmentation_metrics` (overall accuracy, mIoU, macro F1,
per-class IoU/F1/precision/recall).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection

from thinkingearth.models.baselines import Backbone, DenseModel
from thinkingearth.models.heads import DenseHead, DenseHeadKind
from thinkingearth.tasks.metrics import segmentation_metrics
from thinkingearth.tasks.protocols import Protocol, TaskModule, output_size

__all__ = ["SegmentationTask", "head_for"]


def head_for(protocol: Protocol) -> DenseHeadKind:
    """The dense head a protocol trains: ``linear`` for the linear probe, else ``upernet``."""
    return "linear" if protocol == "linear-probe" else "upernet"


class SegmentationTask(TaskModule):
    """Semantic segmentation of single images (a LightningModule).

    Args:
        backbone: A :class:`~thinkingearth.models.baselines.Backbone` with dense levels, or a
            :class:`~thinkingearth.models.baselines.DenseModel` (trained as is).
        num_classes: Classes per pixel.
        ignore_index: Mask value that counts nowhere (loss and metrics); ``None`` if none.
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        head: Dense head (default: by protocol, see :func:`head_for`).
        decoder_channels: UPerNet width.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: Share of steps with linear warm-up.
        class_names: Names for per-class metrics.
        metrics: Metric collection to use instead of
            :func:`~thinkingearth.tasks.metrics.segmentation_metrics` (a factory is called once
            for validation and once for test).
    """

    def __init__(
        self,
        backbone: Backbone | DenseModel,
        num_classes: int,
        *,
        ignore_index: int | None = None,
        protocol: Protocol = "finetune",
        head: DenseHeadKind | None = None,
        decoder_channels: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        class_names: Sequence[str] | None = None,
        metrics: Any = None,
    ) -> None:
        """Build the head and the metrics."""
        super().__init__(backbone, protocol, lr, weight_decay, warmup, class_names)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.head: DenseHead | None = None
        if isinstance(backbone, DenseModel):
            if backbone.num_outputs != self.head_outputs(self.num_classes):
                raise ValueError(
                    f"{type(backbone).__name__} has {backbone.num_outputs} outputs; the task has "
                    f"{self.num_classes} classes ({self.head_outputs(self.num_classes)} outputs)"
                )
        else:
            if not backbone.level_channels:
                raise ValueError(f"{type(backbone).__name__} has no dense feature levels")
            self.head = DenseHead(
                self.head_channels(backbone.level_channels),
                backbone.level_strides,
                self.head_outputs(self.num_classes),
                kind=head or head_for(self.protocol),
                channels=decoder_channels,
            )
        factory = metrics or (
            lambda: segmentation_metrics(self.num_classes, ignore_index, class_names)
        )
        self.val_metrics: MetricCollection = factory()
        self.test_metrics: MetricCollection = factory()

    def head_channels(self, level_channels: Sequence[int]) -> tuple[int, ...]:
        """Channels the head receives per level (fusion may change them)."""
        return tuple(level_channels)

    def logits(self, image: Tensor, batch: Mapping[str, Any], size: Sequence[int]) -> Tensor:
        """Dense logits ``[B, K, *size]``."""
        if isinstance(self.backbone, DenseModel):
            out = self.backbone(image, batch)
            if tuple(out.shape[-2:]) != tuple(size):
                out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
            return out
        assert self.head is not None
        return self.head(self.head_input(self.backbone_call("levels", image, batch)), size)

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """Logits ``[B, K, H, W]`` at the image size."""
        image = batch["image"]
        return self.logits(image, batch, image.shape[-2:])

    def predictive(self, batch: Mapping[str, Any], sample: int) -> Tensor:
        """Class probabilities ``[B, K, H, W]`` at the mask's size (else the image's)."""
        size = output_size(batch, "mask")
        return self.logits(batch["image"], batch, size).softmax(dim=1)

    def step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Cross-entropy (ignore index skipped), logits and mask."""
        mask = batch["mask"].long()
        if mask.ndim != 3:
            raise ValueError(f"masks must be [B, H, W] class ids; got {tuple(mask.shape)}")
        logits = self.logits(batch["image"], batch, mask.shape[-2:])
        ignore = -100 if self.ignore_index is None else self.ignore_index
        if (mask != ignore).any():
            loss = F.cross_entropy(logits, mask, ignore_index=ignore)
        else:  # every pixel ignored: no signal, keep the graph
            loss = logits.sum() * 0.0
        return loss, logits.detach(), mask
