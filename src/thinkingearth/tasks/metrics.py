"""Task metrics on torchmetrics: one ``MetricCollection`` per task kind, with the ignore index
honoured everywhere, and flat ``name/class`` dictionaries for reports.

Factories (each returns a :class:`torchmetrics.MetricCollection`; call ``update(preds, target)``
per batch and :func:`compute` at the end):

* :func:`classification_metrics`: ``oa`` (overall accuracy), ``f1_macro``, ``f1_micro`` and per-class
  ``f1``, ``precision``, ``recall``; multi-label adds ``map`` (macro mean average precision over
  the labels present in the targets, see below), ``map_classes_absent`` and ``map_micro``, and
  ``oa`` becomes the accuracy over all (sample, label) decisions;
* :func:`segmentation_metrics`: ``oa``, ``miou``, ``f1_macro`` and per-class ``iou``, ``f1``,
  ``precision``, ``recall`` over pixels;
* :func:`flood_metrics`: segmentation metrics for Kuro Siwo's classes (0 no water, 1 permanent
  water, 2 flood; 3 ignored) plus ``water_f1``, the F1 of water = permanent water ∪ flood against
  no water, the merged-water score Kuro Siwo reports beside the per-class ones;
* :func:`regression_metrics`: ``rmse`` and ``mae`` over the finite targets (NaN = unknown).

``preds`` may be class ids (``[N]``/``[N, H, W]``) or scores/logits with the class dimension
second (``[N, C]``/``[N, C, H, W]``; torchmetrics takes the argmax). Targets equal to the ignore
index count nowhere. Per-class values follow torchmetrics 1.x: a class absent from both targets and
predictions reads 0 but is left out of the macro averages (``miou``, ``f1_macro``).
:func:`to_dict` flattens per-class tensors to keys such as ``iou/flood`` (class names lower-case,
spaces as ``_``).

mAP has one definition in the project (:class:`MultilabelMAP`, :func:`multilabel_map`): the mean
of the per-label average precision over the labels with at least one positive (non-ignored)
target in the evaluated split. A label without positives has no defined AP (recall is 0/0);
torchmetrics' ``average="macro"`` counts it as 0, which punishes every model for the split
rather than for its predictions. Such labels are left out, and ``map_classes_absent`` says how
many were; with no label present ``map`` is NaN.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAccuracy,
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)

from thinkingearth.errors import UserInputError

__all__ = [
    "KURO_SIWO_CLASSES",
    "KURO_SIWO_IGNORE_INDEX",
    "AbsentLabels",
    "MaskedMAE",
    "MaskedRMSE",
    "MergedF1Score",
    "MultilabelMAP",
    "classification_metrics",
    "compute",
    "flood_metrics",
    "multilabel_map",
    "regression_metrics",
    "segmentation_metrics",
    "to_dict",
]

#: Kuro Siwo's mask classes (values 0, 1, 2).
KURO_SIWO_CLASSES: tuple[str, ...] = ("no water", "permanent water", "flood")
#: Kuro Siwo's invalid-pixel value.
KURO_SIWO_IGNORE_INDEX = 3


def _class_ids(preds: Tensor, target: Tensor) -> Tensor:
    """Class ids from ids or from scores with the class dimension second."""
    if preds.is_floating_point() and preds.ndim == target.ndim + 1:
        return preds.argmax(dim=1)
    if preds.shape != target.shape:
        raise ValueError(
            f"preds {tuple(preds.shape)} must be class ids shaped like target "
            f"{tuple(target.shape)} or scores [N, C, ...]"
        )
    return preds.long()


class MergedF1Score(Metric):
    """Binary F1 of a merged set of positive classes against all other classes.

    ``MergedF1Score(positive=(1, 2), ignore_index=3)`` is Kuro Siwo's water F1: permanent water
    and flood count as water, no water as negative, invalid pixels nowhere. An empty denominator
    (no positive target or prediction) gives 0, as torchmetrics does.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    tp: Tensor
    fp: Tensor
    fn: Tensor

    def __init__(
        self, positive: Sequence[int], ignore_index: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if len(positive) == 0:
            raise UserInputError("MergedF1Score needs at least one positive class")
        self.positive = tuple(int(c) for c in positive)
        self.ignore_index = ignore_index
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of predictions (ids or scores ``[N, C, ...]``) and targets (ids)."""
        ids = _class_ids(preds, target)
        positive = torch.tensor(self.positive, device=target.device)
        valid = (
            torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is None
            else target != self.ignore_index
        )
        pred_pos = torch.isin(ids, positive) & valid
        true_pos = torch.isin(target, positive) & valid
        self.tp += (pred_pos & true_pos).sum()
        self.fp += (pred_pos & ~true_pos).sum()
        self.fn += (~pred_pos & true_pos & valid).sum()

    def compute(self) -> Tensor:
        """F1 = 2 TP / (2 TP + FP + FN)."""
        denominator = 2 * self.tp + self.fp + self.fn
        if int(denominator) == 0:
            return torch.tensor(0.0)
        return 2 * self.tp.double() / denominator.double()


class _MaskedError(Metric):
    """Sum of a pointwise error over the targets that are finite."""

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def _error(diff: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch; a ``[N, 1, ...]`` prediction is matched to a ``[N, ...]`` target."""
        if preds.ndim == target.ndim + 1 and preds.shape[1] == 1:
            preds = preds[:, 0]
        if preds.shape != target.shape:
            raise ValueError(
                f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape"
            )
        valid = torch.isfinite(target)
        diff = preds[valid].double() - target[valid].double()
        self.total += self._error(diff).sum()
        self.count += int(valid.sum())


class MaskedRMSE(_MaskedError):
    """Root mean squared error over finite targets; NaN (or ±inf) targets are ignored."""

    @staticmethod
    def _error(diff: Tensor) -> Tensor:
        return diff * diff

    def compute(self) -> Tensor:
        """RMSE, NaN when no target was finite."""
        if int(self.count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return torch.sqrt(self.total / self.count)


class MaskedMAE(_MaskedError):
    """Mean absolute error over finite targets; NaN (or ±inf) targets are ignored."""

    @staticmethod
    def _error(diff: Tensor) -> Tensor:
        return diff.abs()

    def compute(self) -> Tensor:
        """MAE, NaN when no target was finite."""
        if int(self.count) == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return self.total / self.count


def _positives(target: Tensor, ignore_index: int | None) -> Tensor:
    """Positive targets per label ``[K]`` of a multi-hot ``[N, K]`` batch, ignored entries out."""
    positive = target == 1
    if ignore_index is not None:
        positive &= target != ignore_index
    return positive.reshape(-1, target.shape[-1]).sum(dim=0)


class AbsentLabels(Metric):
    """Number of labels with no positive (non-ignored) target: those :class:`MultilabelMAP`
    leaves out of its mean (``map_classes_absent``)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    positives: Tensor

    def __init__(self, num_labels: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        self.add_state(
            "positives",
            default=torch.zeros(self.num_labels, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count the positive targets of a batch (``preds`` is not used)."""
        if target.shape[-1] != self.num_labels:
            raise ValueError(
                f"target {tuple(target.shape)} must have {self.num_labels} labels last"
            )
        self.positives += _positives(target, self.ignore_index).to(self.positives.device)

    def compute(self) -> Tensor:
        """The number of labels without a positive target."""
        return (self.positives == 0).sum()


class MultilabelMAP(MultilabelAveragePrecision):
    """Macro mean average precision over the labels present in the targets (module docstring).

    torchmetrics' per-label average precision (exact, no thresholds), averaged over the labels
    with at least one positive non-ignored target; NaN when there is none.

    Args:
        num_labels: Number of labels.
        ignore_index: Target value that counts nowhere.
    """

    positives: Tensor

    def __init__(self, num_labels: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_labels=num_labels, average="none", ignore_index=ignore_index, **kwargs)
        self.add_state(
            "positives",
            default=torch.zeros(int(num_labels), dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add scores (probabilities or logits) ``[N, K]`` and multi-hot targets ``[N, K]``."""
        super().update(preds, target)
        self.positives += _positives(target, self.ignore_index).to(self.positives.device)

    def compute(self) -> Tensor:
        """The mean AP over the present labels."""
        present = self.positives > 0
        if not bool(present.any()):
            return torch.tensor(math.nan)
        with warnings.catch_warnings():
            # absent labels are left out below; torchmetrics' warning about them is moot
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            per_label = super().compute()
        return per_label[present].mean()


def multilabel_map(
    scores: Tensor, target: Tensor, ignore_index: int | None = None
) -> tuple[float, int]:
    """Macro mAP of one split, as ``classification_metrics(..., multilabel=True)`` reports it.

    Args:
        scores: Probabilities or logits ``[N, K]``.
        target: Multi-hot targets ``[N, K]``.
        ignore_index: Target value that counts nowhere.

    Returns:
        ``(map, labels left out)``: the mean AP over the labels with a positive target (NaN when
        none has one) and the number of labels without one.
    """
    metric = MultilabelMAP(int(target.shape[-1]), ignore_index=ignore_index)
    metric.update(scores, target)
    return float(metric.compute()), int((metric.positives == 0).sum())


def _check_classes(num_classes: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserInputError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if class_names is None:
        return tuple(str(i) for i in range(num_classes))
    names = tuple(class_names)
    if len(names) != num_classes:
        raise UserInputError(
            f"got {len(names)} class names for {num_classes} classes: {', '.join(names)}"
        )
    return names


def _check_ignore(ignore_index: int | None) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise UserInputError(f"ignore_index must be an integer or None, got {ignore_index!r}")


def _collection(metrics: dict[str, Metric], class_names: tuple[str, ...]) -> MetricCollection:
    collection = MetricCollection(metrics)
    collection.class_names = class_names
    return collection


def classification_metrics(
    num_classes: int,
    multilabel: bool = False,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
) -> MetricCollection:
    """Scene classification metrics (single- or multi-label).

    Args:
        num_classes: number of classes (labels, for multi-label).
        multilabel: targets are multi-hot ``[N, K]`` and preds scores/probabilities ``[N, K]``
            (thresholded at 0.5 for F1/precision/recall/accuracy; logits are passed through a
            sigmoid by torchmetrics).
        ignore_index: target value that counts nowhere.
        class_names: names for the per-class keys of :func:`compute`.

    Returns:
        ``oa``, ``f1_macro``, ``f1_micro``, per-class ``f1``, ``precision``, ``recall``; for
        multi-label also ``map`` (macro mAP over the labels present in the targets),
        ``map_classes_absent`` (how many labels that mean left out) and ``map_micro``.
    """
    names = _check_classes(num_classes, class_names)
    _check_ignore(ignore_index)
    common: dict[str, Any] = {"ignore_index": ignore_index}
    if multilabel:
        ml: dict[str, Any] = {"num_labels": num_classes, **common}
        metrics: dict[str, Metric] = {
            "map": MultilabelMAP(num_classes, ignore_index=ignore_index),
            "map_classes_absent": AbsentLabels(num_classes, ignore_index=ignore_index),
            "map_micro": MultilabelAveragePrecision(average="micro", **ml),
            "oa": MultilabelAccuracy(average="micro", **ml),
            "f1_macro": MultilabelF1Score(average="macro", **ml),
            "f1_micro": MultilabelF1Score(average="micro", **ml),
            "f1": MultilabelF1Score(average="none", **ml),
            "precision": MultilabelPrecision(average="none", **ml),
            "recall": MultilabelRecall(average="none", **ml),
        }
    else:
        mc: dict[str, Any] = {"num_classes": num_classes, **common}
        metrics = {
            "oa": MulticlassAccuracy(average="micro", **mc),
            "f1_macro": MulticlassF1Score(average="macro", **mc),
            "f1_micro": MulticlassF1Score(average="micro", **mc),
            "f1": MulticlassF1Score(average="none", **mc),
            "precision": MulticlassPrecision(average="none", **mc),
            "recall": MulticlassRecall(average="none", **mc),
        }
    return _collection(metrics, names)


def segmentation_metrics(
    num_classes: int,
    ignore_index: int | None,
    class_names: Sequence[str] | None = None,
) -> MetricCollection:
    """Semantic segmentation metrics over pixels.

    Args:
        num_classes: number of classes.
        ignore_index: mask value that counts nowhere (e.g. 255, or 3 for Kuro Siwo); ``None`` if
            every pixel is labelled.
        class_names: names for the per-class keys of :func:`compute`.

    Returns:
        ``oa``, ``miou``, ``f1_macro`` and per-class ``iou``, ``f1``, ``precision``, ``recall``.
    """
    names = _check_classes(num_classes, class_names)
    _check_ignore(ignore_index)
    mc: dict[str, Any] = {"num_classes": num_classes, "ignore_index": ignore_index}
    metrics: dict[str, Metric] = {
        "oa": MulticlassAccuracy(average="micro", **mc),
        "miou": MulticlassJaccardIndex(average="macro", **mc),
        "iou": MulticlassJaccardIndex(average="none", **mc),
        "f1_macro": MulticlassF1Score(average="macro", **mc),
        "f1": MulticlassF1Score(average="none", **mc),
        "precision": MulticlassPrecision(average="none", **mc),
        "recall": MulticlassRecall(average="none", **mc),
    }
    return _collection(metrics, names)


def flood_metrics() -> MetricCollection:
    """Kuro Siwo flood mapping metrics: segmentation metrics for 0 no water, 1 permanent water,
    2 flood (3 ignored) plus ``water_f1`` (permanent water ∪ flood against no water)."""
    collection = segmentation_metrics(3, KURO_SIWO_IGNORE_INDEX, KURO_SIWO_CLASSES)
    collection.add_metrics(
        {"water_f1": MergedF1Score(positive=(1, 2), ignore_index=KURO_SIWO_IGNORE_INDEX)}
    )
    return collection


def regression_metrics() -> MetricCollection:
    """Regression metrics over finite targets: ``rmse`` and ``mae`` (NaN targets ignored)."""
    return _collection({"rmse": MaskedRMSE(), "mae": MaskedMAE()}, ())


def _slug(name: str) -> str:
    return re.sub(r"\s+", "_", str(name).strip().lower())


def to_dict(
    values: Mapping[str, Tensor | float], class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Flatten computed metrics to ``{name: float}``.

    Scalars keep their key; a per-class vector ``iou`` becomes ``iou/<class>`` for each class
    (``class_names`` lower-cased with spaces as ``_``, or the class index when no names are given
    or their number differs).
    """
    names = tuple(class_names or ())
    out: dict[str, float] = {}
    for key, value in values.items():
        tensor = torch.as_tensor(value).detach().cpu()
        if tensor.ndim == 0:
            out[key] = float(tensor)
            continue
        flat = tensor.reshape(-1)
        labels = [_slug(n) for n in names] if len(names) == flat.numel() else None
        for i, item in enumerate(flat.tolist()):
            out[f"{key}/{labels[i] if labels else i}"] = float(item)
    return out


def compute(
    metrics: MetricCollection, class_names: Sequence[str] | None = None
) -> dict[str, float]:
    """``to_dict(metrics.compute())`` with the class names the factory attached (or these)."""
    names = class_names if class_names is not None else getattr(metrics, "class_names", None)
    return to_dict(metrics.compute(), names)
