"""Scene classification, single- and multi-label, on pooled features.

:class:`ClassificationTask` puts a :class:`~thinkingearth.models.heads.LinearHead` on a
backbone's pooled features (``[B, D]``) and trains it with cross-entropy (one class per image,
``label`` an int64 class id) or per-label binary cross-entropy (multi-label, ``label`` a
multi-hot int64 ``[K]``, e.g. BigEarthNet; Sumbul et al. 2019). Metrics come from
:func:`thinkingearth.tasks.metrics.classification_metrics` (overall accuracy, macro/micro F1,
per-class F1/precision/recall; for multi-label also macro and micro mAP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from thinkingearth.errors import UserInputError
from thinkingearth.models.baselines import Backbone
from thinkingearth.models.heads import LinearHead
from thinkingearth.tasks.metrics import classification_metrics
from thinkingearth.tasks.protocols import Protocol, TaskModule

__all__ = ["ClassificationTask"]


class ClassificationTask(TaskModule):
    """Single- or multi-label scene classification (a LightningModule).

    Args:
        backbone: A :class:`~thinkingearth.models.baselines.Backbone` (pooled features).
        num_classes: Classes (or labels, for multi-label).
        multilabel: Multi-hot targets and a sigmoid per label instead of a softmax.
        protocol: ``linear-probe`` (frozen backbone, linear head) or ``finetune``;
            ``frozen-upernet`` trains the same linear head on the frozen backbone (a scene
            classifier has no decoder; the benchmark runs ``linear-probe`` for it).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: Share of steps with linear warm-up.
        class_names: Names for per-class metrics.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        multilabel: bool = False,
        protocol: Protocol = "finetune",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup: float = 0.05,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Build the head and the metrics."""
        if not isinstance(backbone, Backbone):
            raise UserInputError(
                f"{type(backbone).__name__} gives no pooled features; scene classification "
                "needs a backbone"
            )
        super().__init__(backbone, protocol, lr, weight_decay, warmup, class_names)
        self.num_classes = int(num_classes)
        self.multilabel = bool(multilabel)
        self.head = LinearHead(backbone.embed_dim, self.head_outputs(self.num_classes))
        self.val_metrics = classification_metrics(self.num_classes, self.multilabel)
        self.test_metrics = classification_metrics(self.num_classes, self.multilabel)

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        """Logits ``[B, K]`` of a batch."""
        features = self.backbone_call("pooled", batch["image"], batch)
        return self.head(self.head_input(features))

    def predictive(self, batch: Mapping[str, Any], sample: int) -> Tensor:
        """Class probabilities ``[B, K]`` (softmax; sigmoid per label for multi-label)."""
        logits = self(batch)
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)

    def step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, scores (probabilities for multi-label, logits otherwise) and targets."""
        logits = self(batch)
        target = batch["label"]
        if self.multilabel:
            if target.ndim != 2 or target.shape[1] != self.num_classes:
                raise ValueError(
                    f"multi-label targets must be multi-hot [B, {self.num_classes}]; "
                    f"got {tuple(target.shape)}"
                )
            loss = F.binary_cross_entropy_with_logits(logits, target.float())
            return loss, logits.sigmoid(), target.long()
        if target.ndim != 1:
            raise ValueError(f"class targets must be ids [B]; got {tuple(target.shape)}")
        return F.cross_entropy(logits, target.long()), logits, target.long()
