"""Tests that say whether predicted uncertainty is worth trusting.

* :func:`reliability` / :func:`expected_calibration_error` — equal-width confidence bins on
  [0, 1]; bin ``b`` holds ``edges[b] <= confidence < edges[b+1]``, the last bin includes 1.0.
  ECE is ``Σ_b (n_b / N) |accuracy_b − confidence_b|`` (Guo et al. 2017) and is always reported
  with its bin count (ECE depends on it).
* :func:`negative_log_likelihood`, :func:`brier_score` — proper scores of the predicted
  distribution; multi-label: every (item, label) is a binary event.
* :func:`discard_curve` — selective prediction: drop the most uncertain fraction of items and
  score the rest (accuracy, higher is better; RMSE, lower is better), beside the same curve for
  dropping items at random; its area (the mean over the fractions) summarises it.
* :func:`spearman` — rank correlation of uncertainty with error.

Inputs may be torch tensors or numpy arrays; results are Python floats and float64 numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata

from thinkingearth.errors import UserInputError

__all__ = [
    "DiscardCurve",
    "Reliability",
    "brier_score",
    "discard_curve",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability",
    "spearman",
]

# The NLL of a prediction that gave its target probability 0 (float underflow) would be infinite;
# probabilities are floored here, capping one prediction's NLL at -log(1e-12) ≈ 27.6 nats.
PROBABILITY_FLOOR = 1e-12

DiscardMetric = Literal["accuracy", "rmse"]


def _array(x: Any, dtype: type = np.float64) -> np.ndarray:
    """A numpy copy of ``x`` (torch tensors detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if dtype is np.float64:
            x = x.double()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _paired(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _array(a).reshape(-1), _array(b).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {x.size} vs {y.size}")
    return x, y


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per equal-width confidence bin, what was claimed and what held.

    Attributes:
        edges: ``bins + 1`` bin edges from 0 to 1.
        accuracy: per bin, the share of correct predictions (NaN for an empty bin).
        confidence: per bin, the mean confidence (NaN for an empty bin).
        counts: per bin, the number of predictions.
        ece: expected calibration error, ``Σ_b (counts_b / N) |accuracy_b − confidence_b|``.
        bins: the number of bins.
    """

    edges: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    counts: np.ndarray
    ece: float
    bins: int


def reliability(confidence: Any, correct: Any, bins: int = 15) -> Reliability:
    """Bin predictions by confidence and compare mean confidence with accuracy per bin.

    Args:
        confidence: ``[N]`` confidences in [0, 1] (e.g. the maximum class probability).
        correct: ``[N]`` 1 where the prediction was right, 0 where wrong (bool accepted).
        bins: number of equal-width bins on [0, 1].

    Returns:
        The :class:`Reliability` diagram with its ECE.

    Raises:
        UserInputError: ``bins`` < 1, or more bins than predictions.
    """
    conf, right = _paired(confidence, correct, ("confidence", "correct"))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise UserInputError(f"ECE needs a whole number of bins >= 1; got {bins!r}")
    bins = int(bins)
    if bins > conf.size:
        raise UserInputError(
            f"ECE with {bins} bins needs at least {bins} predictions; got {conf.size}"
        )
    if not np.all((conf >= 0) & (conf <= 1)):
        raise ValueError("confidences must be finite and within [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    right_sum = np.bincount(index, weights=right, minlength=bins)
    filled = counts > 0
    mean_conf = np.full(bins, np.nan)
    accuracy = np.full(bins, np.nan)
    mean_conf[filled] = conf_sum[filled] / counts[filled]
    accuracy[filled] = right_sum[filled] / counts[filled]
    gaps = np.abs(accuracy[filled] - mean_conf[filled])
    ece = float(np.sum(counts[filled] / conf.size * gaps))
    return Reliability(edges, accuracy, mean_conf, counts, ece, bins)


def expected_calibration_error(confidence: Any, correct: Any, bins: int = 15) -> float:
    """Expected calibration error over ``bins`` equal-width confidence bins (see :func:`reliability`)."""
    return reliability(confidence, correct, bins).ece


def _check_probs(p: np.ndarray) -> None:
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must be finite and within [0, 1]")


def negative_log_likelihood(probs: Any, target: Any, *, multilabel: bool = False) -> float:
    """Mean negative log-likelihood of the targets, in nats.

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), or per-label probabilities when
            ``multilabel``.
        target: ``[N]`` class ids, or ``[N, K]`` 0/1 labels when ``multilabel``.
        multilabel: each (item, label) is a binary event; the mean is over all of them.

    Returns:
        The mean of ``-log p[target]`` (binary: ``-y log p - (1 - y) log(1 - p)``), with
        probabilities floored at :data:`PROBABILITY_FLOOR`.
    """
    p = _array(probs)
    _check_probs(p)
    if multilabel:
        y = _array(target)
        if y.shape != p.shape:
            raise ValueError(f"multi-label targets {y.shape} do not match probabilities {p.shape}")
        floor = PROBABILITY_FLOOR
        nll = -(y * np.log(np.maximum(p, floor)) + (1 - y) * np.log(np.maximum(1 - p, floor)))
        return float(nll.mean())
    t = _array(target, np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"probabilities must be [N, K] for {t.size} targets; got {p.shape}")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise ValueError(f"targets must be class ids in 0..{p.shape[1] - 1}")
    picked = p[np.arange(t.size), t]
    return float(-np.log(np.maximum(picked, PROBABILITY_FLOOR)).mean())


def brier_score(probs: Any, target: Any, *, multilabel: bool = False) -> float:
    """Brier score: the mean over items of ``Σ_k (p_k − y_k)²`` (0 perfect, 2 worst).

    Args:
        probs: ``[N, K]`` class probabilities, or per-label probabilities when ``multilabel``.
        target: ``[N]`` class ids (one-hot ``y``), or ``[N, K]`` 0/1 labels when ``multilabel``.
        multilabel: each (item, label) is a binary event scored ``(p − y)²``; the mean is over
            all of them (0 perfect, 1 worst).
    """
    p = _array(probs)
    _check_probs(p)
    if multilabel:
        y = _array(target)
        if y.shape != p.shape:
            raise ValueError(f"multi-label targets {y.shape} do not match probabilities {p.shape}")
        return float(((p - y) ** 2).mean())
    t = _array(target, np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"probabilities must be [N, K] for {t.size} targets; got {p.shape}")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise ValueError(f"targets must be class ids in 0..{p.shape[1] - 1}")
    onehot = np.zeros_like(p)
    onehot[np.arange(t.size), t] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class DiscardCurve:
    """Performance after discarding the most uncertain predictions, beside discarding at random.

    Attributes:
        fractions: the discarded fractions (e.g. 0, 0.05, ..., 0.5).
        values: the metric on the kept items, per fraction, dropping the most uncertain.
        random_values: the same dropping random items (mean over repeats).
        auc: the curve's mean over the fraction range (trapezoid area / span).
        random_auc: the same for the random line.
        metric: ``accuracy`` or ``rmse``.
        higher_is_better: True for accuracy, False for RMSE.
    """

    fractions: np.ndarray
    values: np.ndarray
    random_values: np.ndarray
    auc: float
    random_auc: float
    metric: str
    higher_is_better: bool


def _kept_score(score: np.ndarray, metric: DiscardMetric) -> float:
    if score.size == 0:
        return math.nan
    if metric == "accuracy":
        return float(score.mean())
    return float(np.sqrt(np.mean(score**2)))


def _area(fractions: np.ndarray, values: np.ndarray) -> float:
    if fractions.size == 1:
        return float(values[0])
    span = float(fractions[-1] - fractions[0])
    area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(fractions))  # trapezoid rule
    return float(area / span)


def discard_curve(
    uncertainty: Any,
    score: Any,
    *,
    metric: DiscardMetric,
    fractions: Any = None,
    seed: int = 0,
    random_repeats: int = 10,
) -> DiscardCurve:
    """The discard test: score what is left after dropping the most uncertain predictions.

    For each fraction ``f``, the ``round(f · N)`` items with the highest uncertainty are dropped
    (ties in uncertainty are broken at random with ``seed``, so a model whose uncertainty is
    constant gets the random line, not the order of the data) and ``metric`` is computed over the
    rest. Useful uncertainty makes accuracy rise (RMSE fall) faster than the random line.

    Args:
        uncertainty: ``[N]`` per-item uncertainty (higher = less sure), finite.
        score: ``[N]`` per-item correctness (1/0, or a share in [0, 1]) for ``accuracy``; the
            per-item error (prediction − target, sign irrelevant) for ``rmse``.
        metric: ``accuracy`` (mean of ``score``) or ``rmse`` (root mean square of ``score``).
        fractions: increasing discarded fractions in [0, 1); default ``0, 0.05, ..., 0.5``.
        seed: seeds the tie-breaking and the random line.
        random_repeats: random discards averaged for the random line.

    Returns:
        The :class:`DiscardCurve`.
    """
    if metric not in ("accuracy", "rmse"):
        raise UserInputError(f"discard metric must be accuracy or rmse; got {metric!r}")
    unc, sc = _paired(uncertainty, score, ("uncertainty", "score"))
    if unc.size == 0:
        raise UserInputError("a discard curve needs at least one prediction; got 0")
    if not np.all(np.isfinite(unc)) or not np.all(np.isfinite(sc)):
        raise ValueError("uncertainty and score must be finite")
    frac = np.linspace(0, 0.5, 11) if fractions is None else _array(fractions).reshape(-1)
    if frac.size == 0 or np.any((frac < 0) | (frac >= 1)) or np.any(np.diff(frac) <= 0):
        raise UserInputError(
            f"discard fractions must increase within [0, 1); got {np.round(frac, 4).tolist()}"
        )
    if random_repeats < 1:
        raise UserInputError(f"random_repeats must be >= 1; got {random_repeats}")
    n = unc.size
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(n)
    # most uncertain first; the shuffle first and a stable sort break ties at random
    order = shuffle[np.argsort(-unc[shuffle], kind="stable")]
    drops = np.floor(frac * n + 0.5).astype(np.int64)
    values = np.array([_kept_score(sc[order[k:]], metric) for k in drops])
    random_values = np.zeros(frac.size)
    for _ in range(random_repeats):
        perm = rng.permutation(n)
        random_values += np.array([_kept_score(sc[perm[k:]], metric) for k in drops])
    random_values /= random_repeats
    return DiscardCurve(
        fractions=frac,
        values=values,
        random_values=random_values,
        auc=_area(frac, values),
        random_auc=_area(frac, random_values),
        metric=metric,
        higher_is_better=metric == "accuracy",
    )


def spearman(uncertainty: Any, error: Any) -> float:
    """Spearman rank correlation of uncertainty with error (ties get average ranks).

    Returns:
        A value in [-1, 1]; NaN when either input is constant or has fewer than two items.
    """
    unc, err = _paired(uncertainty, error, ("uncertainty", "error"))
    if unc.size < 2:
        return math.nan
    ru, re = rankdata(unc), rankdata(err)
    ru, re = ru - ru.mean(), re - re.mean()
    denom = math.sqrt(float(np.dot(ru, ru)) * float(np.dot(re, re)))
    if denom == 0:
        return math.nan
    return float(np.dot(ru, re) / denom)
