"""What every supervised training run shares: normalised data and the task module of a kind.

``thinkingearth bench`` (many runs under one protocol) and ``thinkingearth finetune`` (one run
that ends in a saved model) train the same way, so both use these pieces:

* :class:`NormalisedDataset`: a reader's Samples with ``image`` normalised by the one
  :class:`~thinkingearth.data.transforms.Normaliser` of the toolkit, and a ``key`` per sample
  (for frozen-feature caches);
* :func:`fit_normaliser`: the normaliser of a split, with statistics estimated on its first
  samples where the sensor registry publishes none;
* :func:`build_task_module`: the :class:`~thinkingearth.tasks.protocols.TaskModule` of a task
  kind (classification, multi-label, segmentation, change detection, regression) around a
  network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from thinkingearth.data.transforms import Normaliser
from thinkingearth.models.baselines import Backbone, DenseModel, TaskKind
from thinkingearth.models.heads import DenseHeadKind
from thinkingearth.tasks.metrics import KURO_SIWO_IGNORE_INDEX
from thinkingearth.tasks.protocols import TaskModule, check_protocol
from thinkingearth.tasks.variants import UncertaintyHead, get_uncertainty_builder

__all__ = [
    "CLASSIFICATION_KINDS",
    "NormalisedDataset",
    "build_task_module",
    "fit_normaliser",
    "plain_task_arguments",
    "target_stats_of",
]

#: Task kinds whose labels are per scene (``label``), not per pixel (``mask``, ``target``).
CLASSIFICATION_KINDS: tuple[str, ...] = ("classification", "multilabel")


class NormalisedDataset(Dataset[dict[str, Any]]):
    """Samples of a split with ``image`` normalised and a ``key`` naming the sample.

    Args:
        raw: The reader's dataset of Samples in stored units.
        normaliser: The normalisation (SAR in the Sample's ``units``; see
            :class:`~thinkingearth.data.transforms.Normaliser`).
        split: Split name, the prefix of ``key``.
        cache: Keep normalised samples in memory (small data sets).
    """

    def __init__(
        self, raw: Dataset[dict[str, Any]], normaliser: Normaliser, split: str, cache: bool
    ) -> None:
        """Wrap the dataset."""
        self.raw = raw
        self.normaliser = normaliser
        self.split = split
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.raw)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = dict(self.raw[index])
        sample["image"] = self.normaliser(
            sample["image"], sample["sensor"], sample["bands"], units=sample.get("units")
        )
        sample["key"] = f"{self.split}:{index}"
        if self._cache is not None:
            self._cache[index] = sample
        return sample


def _images(dataset: Dataset[dict[str, Any]], count: int) -> Iterable[torch.Tensor]:
    for i in range(min(count, len(dataset))):  # type: ignore[arg-type]
        image = dataset[i]["image"]
        yield from image.reshape(-1, *image.shape[-3:])


def fit_normaliser(train: Dataset[dict[str, Any]], samples: int = 32) -> Normaliser:
    """The normaliser of a training split (statistics estimated where none are published).

    Args:
        train: Raw training Samples (one sensor and band set).
        samples: How many of the first samples estimate statistics when needed.
    """
    first = train[0]
    sensor, bands = first["sensor"], tuple(first["bands"])
    normaliser = Normaliser()
    if normaliser.needs_fit(sensor, bands):
        normaliser.fit(sensor, bands, _images(train, samples))
    return normaliser


def target_stats_of(dataset: Dataset[dict[str, Any]], limit: int = 1024) -> tuple[float, float]:
    """Mean and standard deviation of the regression targets of the first ``limit`` samples."""
    from thinkingearth.tasks.regression import target_stats

    n = min(limit, len(dataset))  # type: ignore[arg-type]
    return target_stats([dataset[i]["target"] for i in range(n)])


def build_task_module(
    kind: TaskKind,
    net: Backbone | DenseModel,
    *,
    num_classes: int,
    protocol: str,
    lr: float,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    decoder_channels: int = 128,
    weight_decay: float = 0.05,
    warmup: float = 0.05,
    fusion: Literal["diff", "concat"] = "diff",
    target_stats: tuple[float, float] = (0.0, 1.0),
    head: DenseHeadKind | None = None,
    uncertainty: UncertaintyHead | None = None,
) -> TaskModule:
    """The task module of ``kind`` around ``net``.

    Change detection with Kuro Siwo's classes (3, ignore index 3) reports the flood metrics
    (water F1, flood IoU/F1); other class sets report segmentation metrics.

    With an uncertainty method other than ``none``, the module comes from that method's builder
    (:func:`thinkingearth.tasks.variants.get_uncertainty_builder`), called as
    ``builder(kind, net, head=uncertainty, **every other keyword argument here)``, where
    ``head`` is the :class:`UncertaintyHead` and the dense head kind is passed as
    ``dense_head``.

    Args:
        kind: ``classification``, ``multilabel``, ``segmentation``, ``change`` or ``regression``.
        net: The backbone (the task adds its head) or a complete dense model.
        num_classes: Classes or labels (ignored for regression).
        protocol: ``linear-probe``, ``frozen-upernet`` or ``finetune``.
        lr: Peak learning rate.
        class_names: Names for per-class metrics.
        ignore_index: Mask value ignored by loss and metrics.
        decoder_channels: UPerNet width.
        weight_decay: AdamW weight decay.
        warmup: Share of steps with linear warm-up.
        fusion: How change detection fuses pre- and post-event features.
        target_stats: Mean and standard deviation of regression targets.
        head: Dense head kind (default: by protocol, see
            :func:`thinkingearth.tasks.segmentation.head_for`).
        uncertainty: How the module estimates uncertainty (``None``: the plain module).

    Raises:
        UserInputError: For an unknown protocol, or an uncertainty method that is not installed
            or does not support this kind or network.
    """
    p = check_protocol(protocol)
    arguments: dict[str, Any] = dict(
        num_classes=num_classes,
        protocol=p,
        lr=lr,
        class_names=class_names,
        ignore_index=ignore_index,
        decoder_channels=decoder_channels,
        weight_decay=weight_decay,
        warmup=warmup,
        fusion=fusion,
        target_stats=target_stats,
        dense_head=head,
    )
    if uncertainty is not None and not uncertainty.plain:
        builder = get_uncertainty_builder(uncertainty.uncertainty)
        module = builder(kind, net, head=uncertainty, **arguments)
        if not isinstance(module, TaskModule):
            raise TypeError(
                f"the {uncertainty.uncertainty} builder returned {type(module).__name__}, "
                "not a TaskModule"
            )
        if module.uncertainty_head != uncertainty:
            raise TypeError(
                f"the {uncertainty.uncertainty} builder must set module.uncertainty_head to the "
                "head it was given (checkpoints store it)"
            )
        return module
    if kind in CLASSIFICATION_KINDS and not isinstance(net, Backbone):
        raise TypeError(f"{type(net).__name__} gives no pooled features for {kind}")
    cls, args, options = plain_task_arguments(kind, **arguments)
    return cls(net, *args, **options)


def plain_task_arguments(
    kind: str,
    *,
    num_classes: int,
    protocol: str,
    lr: float,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    decoder_channels: int = 128,
    weight_decay: float = 0.05,
    warmup: float = 0.05,
    fusion: Literal["diff", "concat"] = "diff",
    target_stats: tuple[float, float] = (0.0, 1.0),
    dense_head: DenseHeadKind | None = None,
) -> tuple[type[TaskModule], tuple[Any, ...], dict[str, Any]]:
    """The plain task class of ``kind`` and its arguments after the backbone.

    The one mapping from :func:`build_task_module`'s arguments to a task class's constructor:
    uncertainty variants (subclasses of these classes) are built from it too, so they are built
    exactly like the plain module of the kind. Arguments as :func:`build_task_module` (the dense
    head kind as ``dense_head``).

    Returns:
        ``(class, positional arguments, keyword arguments)``: ``class(net, *args, **kwargs)``.
    """
    from thinkingearth.tasks.change import ChangeTask
    from thinkingearth.tasks.classification import ClassificationTask
    from thinkingearth.tasks.regression import RegressionTask
    from thinkingearth.tasks.segmentation import SegmentationTask

    names = tuple(class_names) if class_names else None
    common: dict[str, Any] = dict(
        protocol=check_protocol(protocol), lr=lr, weight_decay=weight_decay, warmup=warmup
    )
    if kind in CLASSIFICATION_KINDS:
        options = dict(multilabel=kind == "multilabel", class_names=names, **common)
        return ClassificationTask, (num_classes,), options
    if kind == "segmentation":
        options = dict(
            ignore_index=ignore_index,
            decoder_channels=decoder_channels,
            class_names=names,
            head=dense_head,
            **common,
        )
        return SegmentationTask, (num_classes,), options
    if kind == "change":
        flood = num_classes == 3 and ignore_index == KURO_SIWO_IGNORE_INDEX
        options = dict(
            ignore_index=ignore_index,
            fusion=fusion,
            decoder_channels=decoder_channels,
            class_names=names,
            metrics="flood" if flood else "segmentation",
            head=dense_head,
            **common,
        )
        return ChangeTask, (num_classes,), options
    if kind == "regression":
        mean, std = target_stats
        options = dict(
            target_mean=mean,
            target_std=std,
            decoder_channels=decoder_channels,
            head=dense_head,
            **common,
        )
        return RegressionTask, (), options
    raise ValueError(f"unknown task kind {kind!r}")
