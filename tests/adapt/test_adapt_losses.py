"""Adaptation losses against written-out references on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from thinkingearth.adapt.losses import (
    PSEUDO_IGNORE,
    DomainDiscriminator,
    coral_loss,
    entropy,
    grad_reverse,
    grl_coefficient,
    mmd_loss,
    pseudo_labels,
)


@pytest.mark.parametrize("coefficient", [1.0, 0.3, 2.5])
def test_gradient_reversal_flips_the_sign_times_the_coefficient(coefficient: float) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(4, 3)
    y = grad_reverse(x, coefficient)
    assert torch.equal(y, x)  # identity forward
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -coefficient * weights)


def test_grl_schedule() -> None:
    assert grl_coefficient(0.0) == 0.0
    assert grl_coefficient(0.5, maximum=2.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-5)) - 1))
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coefficient(3.0) == grl_coefficient(1.0)  # progress is clipped


def test_coral_matches_the_written_out_formula() -> None:
    source = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]])
    target = torch.tensor([[0.5, 0.0], [1.0, 4.0], [2.0, 1.0], [0.0, 3.0]])

    def covariance(x: list[list[float]]) -> list[list[float]]:
        n, d = len(x), len(x[0])
        mean = [sum(row[j] for row in x) / n for j in range(d)]
        return [
            [sum((row[a] - mean[a]) * (row[b] - mean[b]) for row in x) / (n - 1) for b in range(d)]
            for a in range(d)
        ]

    cs, ct = covariance(source.tolist()), covariance(target.tolist())
    d = 2
    expected = sum((cs[a][b] - ct[a][b]) ** 2 for a in range(d) for b in range(d)) / (4 * d * d)
    assert float(coral_loss(source, target)) == pytest.approx(expected, rel=1e-6)


def test_coral_is_zero_for_equal_covariances_whatever_the_means() -> None:
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    assert float(coral_loss(x, x + 7.0)) == pytest.approx(0.0, abs=1e-10)
    assert float(coral_loss(x, -x)) == pytest.approx(0.0, abs=1e-10)  # same covariance
    assert float(coral_loss(x, 2 * x)) > 0.01


def test_mmd_zero_for_identical_sets_and_grows_with_the_shift() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    y = torch.randn(32, 4, generator=g)
    assert float(mmd_loss(x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    same = float(mmd_loss(x, y))
    shifted = [float(mmd_loss(x, y + s)) for s in (0.5, 1.0, 2.0)]
    assert same < shifted[0] < shifted[1] < shifted[2]
    assert shifted[1] > 5 * same  # a 1-sigma shift stands well above the finite-sample bias


def test_mmd_matches_the_written_out_kernel_sum() -> None:
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    points = [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0)]
    d2 = [[(a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 for b in points] for a in points]
    gamma = sum(map(sum, d2)) / (3 * 3 - 3)

    def k(i: int, j: int) -> float:
        return sum(math.exp(-d2[i][j] / (m * gamma)) for m in (0.5, 2.0))

    expected = (
        sum(k(i, j) for i in (0, 1) for j in (0, 1)) / 4 + k(2, 2) - 2 * (k(0, 2) + k(1, 2)) / 2
    )
    assert float(mmd_loss(s, t, bandwidths=(0.5, 2.0))) == pytest.approx(expected, rel=1e-6)


def test_entropy() -> None:
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    torch.testing.assert_close(entropy(p), torch.tensor([math.log(2), 0.0]))
    q = torch.tensor([[0.5, 1.0]])  # two labels: one maximally unsure, one sure
    torch.testing.assert_close(entropy(q, multilabel=True), torch.tensor([math.log(2)]))


def test_pseudo_labels_keep_only_confident_pixels() -> None:
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, 0] = 10.0  # confident class 1
    logits[0, 2, 1, 1] = 10.0  # confident class 2
    logits[0, 0, 0, 1] = 0.5  # unsure
    labels = pseudo_labels(logits, 0.9, "segmentation")
    assert labels.tolist() == [[[1, PSEUDO_IGNORE], [PSEUDO_IGNORE, 2]]]
    multi = pseudo_labels(torch.tensor([[5.0, -5.0, 0.1]]), 0.9, "multilabel")
    assert multi.tolist() == [[1, 0, PSEUDO_IGNORE]]
    scenes = pseudo_labels(torch.tensor([[4.0, 0.0], [0.2, 0.0]]), 0.9, "classification")
    assert scenes.tolist() == [0, PSEUDO_IGNORE]


def test_domain_discriminator_shapes() -> None:
    net = DomainDiscriminator(6, hidden=8)
    assert net(torch.randn(5, 6)).shape == (5,)
    with pytest.raises(ValueError, match=r"expects features \[B, 6\]"):
        net(torch.randn(5, 7))
