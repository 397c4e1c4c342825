"""Pixel-wise regression (above-ground biomass, NO2) with unknown (NaN) targets ignored.

:class:`RegressionTask` trains a dense head with one output per pixel (UPerNet, or the per-pixel
linear probe; a U-Net as it is) on standardised targets, ``(y - mean) / std`` with the training
split's statistics, with a mean-squared (or absolute) error over the finite targets only; NaN
marks pixels without a reference (no biomass plot, no air-quality station). Predictions are
scaled back to the target's units for the metrics
(:func:`thinkingearth.tasks.metrics.regression_metrics`: RMSE and MAE over finite targets).
The output is resized to the target's grid, which may differ from the image's (Copernicus-Bench
biomass: 96 px of Sentinel-3 against a 288 px target).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import Backbone, DenseModel
from thinkingearth.models.heads import DenseHead, DenseHeadKind
from thinkingearth.tasks.metrics import regression_metrics
from thinkingearth.tasks.protocols import Protocol, TaskModule, output_size
from thinkingearth.tasks.segmentation import head_for

__all__ = ["RegressionTask", "target_stats"]


def target_stats(targets: Sequence[Tensor]) -> tuple[float, float]:
    """Mean and standard deviation of the finite values of some targets.

    Raises:
        UserInputError: If no target value is finite.
    """
    total, square, count = 0.0, 0.0, 0
    for t in targets:
        values = t[torch.isfinite(t)].double()
        total += float(values.sum())
        square += float((values * values).sum())
        count += int(values.numel())
    if count == 0:
        raise UserInputError("no finite regression target in the training samples")
    mean = total / count
    std = math.sqrt(max(square / count - mean * mean, 0.0))
    return mean, (std if std > 0 else 1.0)


class RegressionTask(TaskModule):
    """Pixel-wise regression of one variable (a LightningModule).

    Args:
        backbone: A :class:`~thinkingearth.models.baselines.Backbone` with dense levels, or a
            :class:`~thinkingearth.models.baselines.DenseModel` with one output.
        target_mean: Mean of the training targets (their units).
        target_std: Standard deviation of the training targets.
        loss: ``"mse"`` or ``"l1"``, on standardised targets.
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        head: Dense head (default: by protocol).
        decoder_channels: UPerNet width.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: Share of steps with linear warm-up.
    """

    def __init__(
        self,
        backbone: Backbone | DenseModel,
        *,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        loss: Literal["mse", "l1"] = "mse",
        protocol: Protocol = "finetune",
        head: DenseHeadKind | None = None,
        decoder_channels: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
    ) -> None:
        """Build the head and the metrics."""
        super().__init__(backbone, protocol, lr, weight_decay, warmup, None)
        if loss not in ("mse", "l1"):
            raise UserInputError(f"unknown regression loss {loss!r}; expected 'mse' or 'l1'")
        if not (math.isfinite(target_std) and target_std > 0 and math.isfinite(target_mean)):
            raise UserInputError(
                f"target statistics must be finite with std > 0; got {target_mean}, {target_std}"
            )
        self.loss_name = loss
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.head: DenseHead | None = None
        if isinstance(backbone, DenseModel):
            if backbone.num_outputs != self.head_outputs(1):
                raise ValueError(
                    f"a regression DenseModel needs {self.head_outputs(1)} output(s); got "
                    f"{backbone.num_outputs}"
                )
        else:
            if not backbone.level_channels:
                raise ValueError(f"{type(backbone).__name__} has no dense feature levels")
            self.head = DenseHead(
                backbone.level_channels,
                backbone.level_strides,
                self.head_outputs(1),
                kind=head or head_for(self.protocol),
                channels=decoder_channels,
            )
        self.val_metrics = regression_metrics()
        self.test_metrics = regression_metrics()

    def standardised(self, image: Tensor, batch: Mapping[str, Any], size: Sequence[int]) -> Tensor:
        """Head outputs ``[B, head_outputs(1), *size]`` in standardised units (plain: the
        prediction, ``[B, 1, *size]``)."""
        if isinstance(self.backbone, DenseModel):
            out = self.backbone(image, batch)
        else:
            assert self.head is not None
            return self.head(self.head_input(self.backbone_call("levels", image, batch)), size)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
        return out

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """Predictions ``[B, 1, H, W]`` in the target's units, at the image size."""
        image = batch["image"]
        z = self.standardised(image, batch, image.shape[-2:])
        return z * self.target_std + self.target_mean

    def predictive(self, batch: Mapping[str, Any], sample: int) -> Tensor:
        """Mean and variance ``[B, 2, H, W]`` in target units at the target's size (else the
        image's); the variance is 0 (a deterministic prediction)."""
        z = self.standardised(batch["image"], batch, output_size(batch, "target"))
        mean = z * self.target_std + self.target_mean
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)

    def step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Loss over finite targets, predictions in target units, targets ``[B, 1, H, W]``."""
        target = batch["target"].float()
        if target.ndim == 3:
            target = target.unsqueeze(1)
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(
                f"pixel-wise targets must be [B, H, W] or [B, 1, H, W]; got {tuple(target.shape)}"
            )
        z = self.standardised(batch["image"], batch, target.shape[-2:])
        truth = (target - self.target_mean) / self.target_std
        valid = torch.isfinite(truth)
        if valid.any():
            error = z[valid] - truth[valid]
            loss = (error * error).mean() if self.loss_name == "mse" else error.abs().mean()
        else:  # nothing known in this batch: no signal, keep the graph
            loss = z.sum() * 0.0
        preds = z.detach() * self.target_std + self.target_mean
        return loss, preds, target
