"""Entropy split into aleatoric + epistemic, and the law of total variance, against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from thinkingearth.uncertainty.decompose import (
    binary_entropy,
    entropy,
    split_entropy,
    split_variance,
)

LN2 = math.log(2)


def test_entropy_hand_values_and_zero_log_zero() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(entropy(probs), torch.tensor([LN2, 0.0, math.log(3)]), atol=1e-6)
    # class dimension second, as in segmentation maps
    dense = probs.T.reshape(1, 3, 3, 1)
    assert torch.allclose(entropy(dense, dim=1).flatten(), entropy(probs), atol=1e-6)
    bern = binary_entropy(torch.tensor([0.0, 0.5, 1.0, 0.1]))
    expected = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    assert torch.allclose(bern, torch.tensor([0.0, LN2, 0.0, expected]), atol=1e-6)


def test_identical_samples_have_no_epistemic_uncertainty() -> None:
    p = torch.tensor([0.7, 0.2, 0.1])
    samples = p.expand(5, 1, 3)  # [S, B, K]
    total, aleatoric, epistemic = split_entropy(samples)
    assert torch.allclose(total, entropy(p).reshape(1), atol=1e-6)
    assert torch.allclose(aleatoric, total, atol=1e-6)
    assert torch.all(epistemic == 0)


def test_disagreeing_confident_samples_are_purely_epistemic() -> None:
    samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two one-hot members that disagree
    total, aleatoric, epistemic = split_entropy(samples)
    assert aleatoric.item() == 0.0
    assert epistemic.item() == pytest.approx(LN2)
    assert total.item() == pytest.approx(LN2)


def test_split_sums_to_total_on_random_dense_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 4, 5, 3, generator=gen) * 3  # [S, B, K, H, W]
    samples = logits.softmax(dim=2)
    total, aleatoric, epistemic = split_entropy(samples, dim=2)
    assert total.shape == (2, 5, 3)
    assert torch.allclose(aleatoric + epistemic, total, atol=1e-6)
    assert torch.all(epistemic >= 0) and torch.all(aleatoric >= 0)
    assert torch.all(total <= math.log(4) + 1e-6)
    # written out: the entropy of the mean minus the mean entropy, at one pixel
    pix = samples[:, 1, :, 2, 0]
    h = lambda q: -(q * q.log()).sum().item()  # noqa: E731
    expected_ale = sum(h(pix[s]) for s in range(6)) / 6
    assert total[1, 2, 0].item() == pytest.approx(h(pix.mean(0)), rel=1e-5)
    assert aleatoric[1, 2, 0].item() == pytest.approx(expected_ale, rel=1e-5)
    # negative dimension means the same class axis
    assert torch.allclose(split_entropy(samples.movedim(2, -1), dim=-1)[0], total, atol=1e-6)


def test_multilabel_split_sums_bernoulli_entropies() -> None:
    samples = torch.tensor([[[0.5, 1.0]], [[0.5, 0.0]]])  # [S=2, B=1, K=2]
    total, aleatoric, epistemic = split_entropy(samples, multilabel=True)
    # label 0: both members say 0.5 (aleatoric ln2); label 1: members disagree 1 vs 0 (epistemic ln2)
    assert total.item() == pytest.approx(2 * LN2)
    assert aleatoric.item() == pytest.approx(LN2)
    assert epistemic.item() == pytest.approx(LN2)
    rand = torch.rand(7, 3, 5, generator=torch.Generator().manual_seed(1))
    t, a, e = split_entropy(rand, multilabel=True)
    assert torch.allclose(a + e, t, atol=1e-6) and torch.all(e >= 0)


def test_sample_dimension_cannot_be_the_class_dimension() -> None:
    with pytest.raises(ValueError, match="class dimension"):
        split_entropy(torch.rand(2, 3, 4), dim=0)


def test_split_variance_is_the_law_of_total_variance() -> None:
    means = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # [S=2, N=2]
    variances = torch.tensor([[0.5, 1.0], [1.5, 3.0]])
    total, aleatoric, epistemic = split_variance(means, variances)
    assert torch.allclose(aleatoric, torch.tensor([1.0, 2.0]))
    assert torch.allclose(epistemic, torch.tensor([1.0, 0.0]))  # population variance of (1, 3)
    assert torch.allclose(total, torch.tensor([2.0, 2.0]))
    # S = 1 (a single heteroscedastic model): everything is aleatoric
    t1, a1, e1 = split_variance(means[:1], variances[:1])
    assert torch.all(e1 == 0) and torch.equal(t1, a1)
    # against the variance of the mixture, estimated by sampling it
    gen = torch.Generator().manual_seed(2)
    mu, var = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([0.25, 1.0, 4.0])
    draws = mu[:, None] + var.sqrt()[:, None] * torch.randn(3, 200_000, generator=gen)
    t, _, _ = split_variance(mu[:, None], var[:, None])
    assert t.item() == pytest.approx(draws.flatten().var().item(), rel=0.02)
