"""Multi-temporal change detection as in Kuro Siwo: pre-event and post-event SAR, one map.

A sample is a time series ``[T, C, H, W]``: ``T - 1`` pre-event acquisitions, oldest first, and
the post-event one last (Kuro Siwo: SL2, SL1, MS1 of Sentinel-1 VV/VH; Bountos et al. 2024).
:class:`ChangeTask` encodes every acquisition with the one shared backbone (a Siamese encoder),
fuses the features per level (:class:`~thinkingearth.models.heads.ChangeFusion`: post − mean(pre),
or both concatenated) and decodes them with UPerNet (or the linear probe). Change networks that
take the series themselves (FC-Siam-diff/conc, early-fusion U-Net) are trained as they are.
The labels are Kuro Siwo's (0 no water, 1 permanent water, 2 flood; 3 ignored) and the metrics
:func:`thinkingearth.tasks.metrics.flood_metrics` (mIoU, per-class IoU/F1 and the water F1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import Tensor

from thinkingearth.models.baselines import Backbone, DenseModel
from thinkingearth.models.heads import ChangeFusion, DenseHeadKind, FusionMode
from thinkingearth.tasks.metrics import (
    KURO_SIWO_CLASSES,
    KURO_SIWO_IGNORE_INDEX,
    flood_metrics,
    segmentation_metrics,
)
from thinkingearth.tasks.protocols import Protocol
from thinkingearth.tasks.segmentation import SegmentationTask

__all__ = ["ChangeTask"]


def _step_batch(batch: Mapping[str, Any], t: int) -> dict[str, Any]:
    """The batch of acquisition ``t``: its time, and cache keys marked with the step."""
    out = dict(batch)
    time = batch.get("time")
    if isinstance(time, Tensor) and time.ndim == 2:
        out["time"] = time[:, t]
    if "key" in batch:
        out["key"] = [f"{k}@t{t}" for k in batch["key"]]
    return out


class ChangeTask(SegmentationTask):
    """Change detection from ``T`` acquisitions, the last post-event (a LightningModule).

    Args:
        backbone: A :class:`~thinkingearth.models.baselines.Backbone` shared by all acquisitions,
            or a :class:`~thinkingearth.models.baselines.DenseModel` taking ``[B, T, C, H, W]``.
        num_classes: Classes per pixel (Kuro Siwo: 3).
        ignore_index: Mask value that counts nowhere (Kuro Siwo: 3).
        fusion: ``"diff"`` (post − mean(pre) per level) or ``"concat"``.
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        head: Dense head (default: by protocol).
        decoder_channels: UPerNet width.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: Share of steps with linear warm-up.
        class_names: Names for per-class metrics.
        metrics: ``"flood"`` (Kuro Siwo metrics, needs 3 classes and ignore index 3) or
            ``"segmentation"``.
    """

    def __init__(
        self,
        backbone: Backbone | DenseModel,
        num_classes: int = 3,
        *,
        ignore_index: int | None = KURO_SIWO_IGNORE_INDEX,
        fusion: FusionMode = "diff",
        protocol: Protocol = "finetune",
        head: DenseHeadKind | None = None,
        decoder_channels: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        class_names: Sequence[str] | None = KURO_SIWO_CLASSES,
        metrics: Literal["flood", "segmentation"] = "flood",
    ) -> None:
        """Build fusion, head and metrics."""
        if metrics == "flood" and (num_classes != 3 or ignore_index != KURO_SIWO_IGNORE_INDEX):
            raise ValueError(
                "flood metrics need Kuro Siwo's 3 classes and ignore index 3; got "
                f"{num_classes} classes, ignore index {ignore_index}"
            )
        if metrics not in ("flood", "segmentation"):
            raise ValueError(f"unknown metrics {metrics!r}; expected 'flood' or 'segmentation'")
        self.fusion_mode: FusionMode = fusion  # read by head_channels() while the parent builds
        factory = (
            flood_metrics
            if metrics == "flood"
            else (lambda: segmentation_metrics(num_classes, ignore_index, class_names))
        )
        super().__init__(
            backbone,
            num_classes,
            ignore_index=ignore_index,
            protocol=protocol,
            head=head,
            decoder_channels=decoder_channels,
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            class_names=class_names,
            metrics=factory,
        )
        self.fusion = ChangeFusion(fusion)

    def head_channels(self, level_channels: Sequence[int]) -> tuple[int, ...]:
        """Fused widths (twice the backbone's for ``concat``)."""
        return ChangeFusion(self.fusion_mode).out_channels(level_channels)

    def logits(self, image: Tensor, batch: Mapping[str, Any], size: Sequence[int]) -> Tensor:
        """Dense logits ``[B, K, *size]`` of an image series ``[B, T, C, H, W]``."""
        if image.ndim != 5 or image.shape[1] < 2:
            raise ValueError(
                "change detection expects image series [B, T, C, H, W] with T >= 2 (pre-event "
                f"acquisitions first, post-event last); got {tuple(image.shape)}"
            )
        if isinstance(self.backbone, DenseModel):
            return super().logits(image, batch, size)
        assert self.head is not None
        steps = [
            self.backbone_call("levels", image[:, t], _step_batch(batch, t))
            for t in range(image.shape[1])
        ]
        return self.head(self.head_input(self.fusion(steps[:-1], steps[-1])), size)
