"""Task metrics checked against hand-computed values, ignore pixels and NaN targets included."""

from __future__ import annotations

import math

import pytest
import torch

from thinkingearth.errors import UserInputError
from thinkingearth.tasks.metrics import (
    KURO_SIWO_CLASSES,
    MaskedRMSE,
    MergedF1Score,
    classification_metrics,
    compute,
    flood_metrics,
    multilabel_map,
    regression_metrics,
    segmentation_metrics,
    to_dict,
)


def _logits(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot scores with the class dimension second."""
    onehot = torch.nn.functional.one_hot(ids.clamp(max=num_classes - 1), num_classes).float()
    return onehot.movedim(-1, 1)


def test_multiclass_classification_with_ignore_index() -> None:
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    preds = torch.tensor(
        [0, 1, 1, 1, 0, 2]
    )  # the last pixel is ignored: its wrong 2 counts nowhere
    metrics = classification_metrics(3, ignore_index=255, class_names=("a", "b", "c"))
    metrics.update(preds, target)
    values = compute(metrics)
    assert values["oa"] == pytest.approx(3 / 5)
    assert values["f1_micro"] == pytest.approx(3 / 5)
    assert values["f1/a"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert values["f1/b"] == pytest.approx(0.8)  # tp 2, fp 1
    assert values["f1/c"] == 0.0  # its only target was predicted 0
    assert values["precision/b"] == pytest.approx(2 / 3) and values["recall/b"] == 1.0
    assert values["precision/c"] == 0.0 and values["recall/a"] == pytest.approx(0.5)
    assert values["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    again = classification_metrics(3, ignore_index=255, class_names=("a", "b", "c"))
    again.update(_logits(preds, 3), target)  # scores give the same numbers
    assert compute(again) == pytest.approx(values)


def test_multilabel_map_and_f1() -> None:
    target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = torch.tensor([[0.9, 0.2], [0.3, 0.8], [0.6, 0.4], [0.1, 0.7]])
    metrics = classification_metrics(2, multilabel=True, class_names=("crops", "water"))
    metrics.update(scores, target)
    values = compute(metrics)
    # label 0 ranks both positives first: AP 1; label 1 ranks P, N, P, N: AP (1 + 2/3) / 2.
    assert values["map"] == pytest.approx((1.0 + 5 / 6) / 2)
    assert values["f1/crops"] == 1.0 and values["f1/water"] == pytest.approx(0.5)
    assert values["f1_macro"] == pytest.approx(0.75)
    assert values["f1_micro"] == pytest.approx(6 / 8)  # tp 3, fp 1, fn 1
    assert values["oa"] == pytest.approx(6 / 8)  # 6 of 8 (sample, label) decisions right
    # An ignored label entry (the false positive of sample 3) counts nowhere.
    target[3, 1] = 255
    ignoring = classification_metrics(2, multilabel=True, ignore_index=255)
    ignoring.update(scores, target)
    values = compute(ignoring)
    assert values["map"] == pytest.approx(1.0)  # label 1 now ranks P, P, N
    assert values["f1/1"] == pytest.approx(2 / 3)  # tp 1, fn 1; keys use indices without names


def test_segmentation_with_ignore_pixels_and_absent_class() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 255, 2]]])
    preds = torch.tensor([[[0, 1, 1], [1, 3, 0]]])  # the 3 sits on an ignored pixel
    metrics = segmentation_metrics(4, ignore_index=255, class_names=("a", "b", "c", "d"))
    metrics.update(_logits(preds, 4), target)
    values = compute(metrics)
    assert values["oa"] == pytest.approx(3 / 5)
    assert values["iou/a"] == pytest.approx(1 / 3)  # tp 1, fp 1 (the 2), fn 1
    assert values["iou/b"] == pytest.approx(2 / 3)  # tp 2, fp 1
    assert values["iou/c"] == 0.0
    assert values["iou/d"] == 0.0  # absent from targets and (valid) predictions ...
    assert values["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3)  # ... and from the mean
    assert values["f1/b"] == pytest.approx(0.8) and values["f1_macro"] == pytest.approx(
        (0.5 + 0.8 + 0.0) / 3
    )


def test_flood_metrics_merge_water_and_ignore_invalid() -> None:
    target = torch.tensor([[0, 2, 2, 3], [1, 0, 1, 0]])
    preds = torch.tensor([[0, 1, 2, 2], [0, 0, 1, 2]])
    metrics = flood_metrics()
    assert metrics.class_names == KURO_SIWO_CLASSES
    metrics.update(preds, target)
    values = compute(metrics)
    assert values["oa"] == pytest.approx(4 / 7)
    # water = {1, 2}: predicted at (0,1) (0,2) (1,2) (1,3), true at (0,1) (0,2) (1,0) (1,2)
    assert values["water_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert values["iou/flood"] == pytest.approx(1 / 3)
    assert values["iou/permanent_water"] == pytest.approx(1 / 3)
    assert values["iou/no_water"] == pytest.approx(2 / 4)
    assert values["f1/flood"] == pytest.approx(0.5)
    # Batches accumulate, and scores work as well as ids.
    metrics.reset()
    metrics.update(_logits(preds[:1], 3), target[:1])
    metrics.update(_logits(preds[1:], 3), target[1:])
    assert compute(metrics) == pytest.approx(values)


def test_merged_f1_edge_cases() -> None:
    metric = MergedF1Score(positive=(1, 2), ignore_index=3)
    metric.update(torch.tensor([0, 3, 0]), torch.tensor([0, 3, 3]))
    assert float(metric.compute()) == 0.0  # nothing positive anywhere
    with pytest.raises(UserInputError):
        MergedF1Score(positive=())
    with pytest.raises(ValueError, match="class ids shaped like target"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([0, 1]))


def test_regression_ignores_nan_targets() -> None:
    metrics = regression_metrics()
    metrics.update(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, math.nan, 5.0, 2.0]))
    values = compute(metrics)
    assert values == pytest.approx({"rmse": math.sqrt(8 / 3), "mae": 4 / 3})
    # [N, 1, H, W] predictions against [N, H, W] targets, accumulated over a second batch.
    metrics.update(
        torch.full((1, 1, 2, 2), 10.0), torch.tensor([[[7.0, math.inf], [math.nan, 10.0]]])
    )
    assert compute(metrics) == pytest.approx({"rmse": math.sqrt(17 / 5), "mae": 7 / 5})
    empty = MaskedRMSE()
    empty.update(torch.ones(3), torch.full((3,), math.nan))
    assert math.isnan(float(empty.compute()))
    with pytest.raises(ValueError, match="differ in shape"):
        empty.update(torch.ones(2), torch.ones(3))


def test_to_dict_and_prefixes() -> None:
    values = {"miou": torch.tensor(0.5), "iou": torch.tensor([0.25, 0.75]), "n": 3.0}
    assert to_dict(values, ("No Water", "permanent  water")) == {
        "miou": 0.5,
        "iou/no_water": 0.25,
        "iou/permanent_water": 0.75,
        "n": 3.0,
    }
    assert to_dict(values, ("only one",))["iou/1"] == 0.75  # names that do not fit: indices
    metrics = segmentation_metrics(2, ignore_index=None, class_names=("land", "water")).clone(
        prefix="val/"
    )
    metrics.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    values = compute(metrics)
    assert values["val/iou/water"] == pytest.approx(0.5) and values["val/oa"] == pytest.approx(
        2 / 3
    )


def test_factory_arguments_are_checked() -> None:
    with pytest.raises(UserInputError, match="at least 2"):
        classification_metrics(1)
    with pytest.raises(UserInputError, match="2 class names for 3 classes"):
        segmentation_metrics(3, 255, ("a", "b"))
    with pytest.raises(UserInputError, match="ignore_index"):
        segmentation_metrics(3, 2.5)  # type: ignore[arg-type]


def test_map_leaves_out_labels_absent_from_the_targets_and_counts_them() -> None:
    # Label "snow" has no positive sample: its AP is undefined. torchmetrics' macro average
    # counts it as 0 ((1 + 5/6 + 0) / 3); the one definition leaves it out and says so.
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = torch.tensor([[0.9, 0.2, 0.3], [0.3, 0.8, 0.1], [0.6, 0.4, 0.7], [0.1, 0.7, 0.2]])
    metrics = classification_metrics(3, multilabel=True, class_names=("crops", "water", "snow"))
    metrics.update(scores[:2], target[:2])  # batches accumulate: the count is over the split
    metrics.update(scores[2:], target[2:])
    values = compute(metrics)
    assert values["map"] == pytest.approx((1.0 + 5 / 6) / 2)
    assert values["map_classes_absent"] == 1
    assert multilabel_map(scores, target) == (pytest.approx((1.0 + 5 / 6) / 2), 1)
    # Every label present: nothing left out; the prefix of a cloned collection applies.
    present = classification_metrics(2, multilabel=True).clone(prefix="val/")
    present.update(scores[:, :2], target[:, :2])
    values = compute(present)
    assert values["val/map"] == pytest.approx((1.0 + 5 / 6) / 2)
    assert values["val/map_classes_absent"] == 0
    # A label whose only positive is ignored is absent too; no label present gives NaN.
    ignored = target.clone()
    ignored[0, 0] = ignored[2, 0] = 255
    value, absent = multilabel_map(scores, ignored, ignore_index=255)
    assert absent == 2 and value == pytest.approx(5 / 6)
    value, absent = multilabel_map(scores, torch.zeros_like(target))
    assert absent == 3 and math.isnan(value)
