"""Calibration and discard tests against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from thinkingearth.errors import UserInputError
from thinkingearth.uncertainty.calibration import (
    brier_score,
    discard_curve,
    expected_calibration_error,
    negative_log_likelihood,
    reliability,
    spearman,
)

CONF = [0.9, 0.8, 0.3, 0.6]
RIGHT = [1, 0, 0, 1]


def test_ece_of_four_predictions_by_hand() -> None:
    # 2 bins: [0, .5) holds 0.3 (wrong): gap .3, weight 1/4; [.5, 1] holds .9 .8 .6 with 2 right:
    # accuracy 2/3, confidence 2.3/3, gap 0.1, weight 3/4  ->  0.075 + 0.075
    assert expected_calibration_error(CONF, RIGHT, bins=2) == pytest.approx(0.15)
    # 4 bins: .3 alone (gap .3), .6 alone right (gap .4), .8/.9 half right (gap .35, weight 1/2)
    rel = reliability(torch.tensor(CONF), torch.tensor(RIGHT, dtype=torch.bool), bins=4)
    assert rel.ece == pytest.approx(0.25 * 0.3 + 0.25 * 0.4 + 0.5 * 0.35)
    assert rel.bins == 4 and isinstance(rel.ece, float)
    np.testing.assert_allclose(rel.edges, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(rel.counts, [0, 1, 1, 2])
    np.testing.assert_allclose(rel.accuracy[1:], [0, 1, 0.5])
    np.testing.assert_allclose(rel.confidence[1:], [0.3, 0.6, 0.85])
    assert np.isnan(rel.accuracy[0]) and np.isnan(rel.confidence[0])  # empty bin


def test_bin_edges_are_left_closed_and_one_goes_in_the_last_bin() -> None:
    rel = reliability([0.0, 0.5, 1.0], [1, 1, 1], bins=2)
    np.testing.assert_array_equal(rel.counts, [1, 2])
    # 0 claimed but right (gap 1, weight 1/3); 0.5 and 1.0 right (gap .25, weight 2/3)
    assert rel.ece == pytest.approx(1 / 3 + 2 / 3 * 0.25)


def test_ece_agrees_with_torchmetrics_on_random_predictions() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 5, generator=gen) * 2, dim=1)
    target = torch.randint(0, 5, (500,), generator=gen)
    confidence, predicted = probs.max(1)
    ours = expected_calibration_error(confidence, predicted == target, bins=15)
    theirs = multiclass_calibration_error(probs, target, num_classes=5, n_bins=15, norm="l1")
    assert ours == pytest.approx(theirs.item(), abs=1e-6)


def test_more_bins_than_predictions_is_a_one_line_error() -> None:
    with pytest.raises(UserInputError) as error:
        expected_calibration_error(np.full(7, 0.5), np.ones(7), bins=20)
    assert str(error.value) == "ECE with 20 bins needs at least 20 predictions; got 7"
    with pytest.raises(UserInputError):
        reliability([0.5], [1], bins=0)
    with pytest.raises(ValueError, match="within"):
        reliability([1.5, 0.2], [1, 0], bins=1)


def test_nll_and_brier_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    target = np.array([0, 1])
    assert negative_log_likelihood(probs, target) == pytest.approx(
        -(math.log(0.7) + math.log(0.1)) / 2
    )
    # (.3² + .2² + .1²) = .14 and (.1² + .9² + .8²) = 1.46
    assert brier_score(torch.tensor(probs), torch.tensor(target)) == pytest.approx(0.8)
    # a zero probability on the target is floored, not infinite
    capped = negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1]))
    assert capped == pytest.approx(-math.log(1e-12))


def test_multilabel_scores_treat_each_label_as_a_binary_event() -> None:
    probs = np.array([[0.9, 0.2], [0.4, 0.0]])
    target = np.array([[1, 1], [0, 0]])
    expected_nll = -(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(1.0)) / 4
    assert negative_log_likelihood(probs, target, multilabel=True) == pytest.approx(expected_nll)
    expected_brier = (0.1**2 + 0.8**2 + 0.4**2 + 0.0) / 4
    assert brier_score(probs, target, multilabel=True) == pytest.approx(expected_brier)


def test_discard_curve_reaches_full_accuracy_when_the_uncertain_items_are_the_wrong_ones() -> None:
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=float)
    uncertainty = np.array([0.1, 0.2, 0.15, 0.3, 0.05, 0.25, 0.12, 0.9, 0.8, 0.95])
    curve = discard_curve(uncertainty, correct, metric="accuracy")
    np.testing.assert_allclose(curve.fractions, np.linspace(0, 0.5, 11))
    assert curve.values[0] == pytest.approx(0.7)  # nothing dropped
    assert curve.values[2] == pytest.approx(7 / 9)  # 10 %: the most uncertain (wrong) item gone
    assert curve.values[6] == pytest.approx(1.0)  # 30 %: all three wrong items gone
    assert np.all(curve.values[6:] == 1.0)
    assert curve.random_values[0] == pytest.approx(0.7)
    assert curve.auc > curve.random_auc and curve.higher_is_better
    assert curve.metric == "accuracy"
    # the area is the trapezoid mean over [0, 0.5]
    v = curve.values
    assert curve.auc == pytest.approx(float(np.sum((v[1:] + v[:-1]) / 2 * 0.05) / 0.5))


def test_rmse_discard_is_lower_is_better() -> None:
    error = np.array([3.0, -2.0, 1.0, 0.5, 0.5, -0.2, 0.1, 0.0, 0.3, -0.4])
    uncertainty = np.abs(error) + 0.01 * np.arange(10)
    curve = discard_curve(uncertainty, error, metric="rmse", fractions=[0.0, 0.1, 0.2])
    np.testing.assert_allclose(curve.values[0], math.sqrt(np.mean(error**2)))
    np.testing.assert_allclose(curve.values[1], math.sqrt(np.mean(error[1:] ** 2)))
    np.testing.assert_allclose(curve.values[2], math.sqrt(np.mean(error[2:] ** 2)))
    assert not curve.higher_is_better
    assert curve.auc < curve.random_auc


def test_constant_curve_area_is_the_constant_and_ties_are_not_the_data_order() -> None:
    rng = np.random.default_rng(0)
    flat = discard_curve(rng.random(50), np.ones(50), metric="accuracy")
    assert flat.auc == pytest.approx(1.0) and flat.random_auc == pytest.approx(1.0)
    # all wrong items first, uncertainty constant: dropping "the first 30 %" would be cheating
    correct = np.r_[np.zeros(300), np.ones(700)]
    tied = discard_curve(np.full(1000, 0.5), correct, metric="accuracy", fractions=[0.0, 0.3])
    assert tied.values[1] == pytest.approx(0.7, abs=0.05)


def test_bad_discard_arguments() -> None:
    with pytest.raises(UserInputError, match="fractions"):
        discard_curve([0.1, 0.2], [1, 0], metric="accuracy", fractions=[0.0, 1.0])
    with pytest.raises(UserInputError, match="metric"):
        discard_curve([0.1, 0.2], [1, 0], metric="f1")  # type: ignore[arg-type]


def test_spearman_by_hand() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2, 3, 4]), [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
