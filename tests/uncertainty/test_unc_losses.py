"""Heteroscedastic losses against written-out references: the plain losses at zero noise, a
hand-computed sampled example, a quadrature reference the estimator converges to, chunking,
ignored pixels, numerical range and gradients; the Gaussian NLL against its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thinkingearth.errors import UserInputError
from thinkingearth.uncertainty import losses
from thinkingearth.uncertainty.losses import (
    gaussian_nll,
    sampled_probabilities,
    sampled_sigmoid_bce,
    sampled_softmax_nll,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _documented_draws(seed: int, samples: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The draws the module documents: per-sample seeds from the generator, one randn each."""
    seeds = torch.randint(0, 2**63 - 1, (samples,), generator=_gen(seed)).tolist()
    return [torch.randn(shape, generator=_gen(s)) for s in seeds]


# -- zero noise: exactly the deterministic losses ---------------------------------------------


def test_zero_scale_is_plain_cross_entropy_for_items_and_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    target = torch.tensor([0, 3, 1, 2, 3])
    got = sampled_softmax_nll(logits, torch.zeros_like(logits), target, samples=7)
    assert torch.allclose(got, F.cross_entropy(logits, target), atol=1e-6)

    seg = torch.randn(2, 3, 4, 5)
    mask = torch.randint(0, 3, (2, 4, 5))
    mask[0, :2] = 255
    got = sampled_softmax_nll(
        seg, torch.zeros_like(seg), mask, samples=3, temperature=2.0, ignore_index=255
    )
    assert torch.allclose(got, F.cross_entropy(seg / 2.0, mask, ignore_index=255), atol=1e-6)


def test_zero_scale_is_plain_bce() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 6) * 3
    target = (torch.rand(4, 6) > 0.5).float()
    got = sampled_sigmoid_bce(logits, torch.zeros_like(logits), target, samples=5, temperature=0.5)
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(logits / 0.5, target), atol=1e-6)


# -- a sampled example written out by hand -------------------------------------------------------


def test_two_class_example_with_fixed_draws_matches_hand_computation() -> None:
    logits = torch.tensor([[1.0, 0.0]])
    scale = torch.tensor([[0.5, 2.0]])
    temperature, samples = 0.7, 3
    got = sampled_softmax_nll(
        logits,
        scale,
        torch.tensor([1]),
        samples=samples,
        temperature=temperature,
        generator=_gen(7),
    )
    probs = []
    for eps in _documented_draws(7, samples, (1, 2)):
        z0 = (1.0 + 0.5 * float(eps[0, 0])) / temperature
        z1 = (0.0 + 2.0 * float(eps[0, 1])) / temperature
        probs.append(math.exp(z1) / (math.exp(z0) + math.exp(z1)))
    expected = -math.log(sum(probs) / samples)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_two_label_sigmoid_example_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    scale = torch.tensor([[1.5, 0.3]])
    target = torch.tensor([[0.0, 1.0]])
    samples = 4
    got = sampled_sigmoid_bce(logits, scale, target, samples=samples, generator=_gen(3))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    draws = _documented_draws(3, samples, (1, 2))
    p0 = sum(sig(2.0 + 1.5 * float(e[0, 0])) for e in draws) / samples
    p1 = sum(sig(-1.0 + 0.3 * float(e[0, 1])) for e in draws) / samples
    expected = (-math.log(1 - p0) - math.log(p1)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-5)


# -- convergence to the integral -----------------------------------------------------------------


def _quadrature_nll_two_classes(z: tuple[float, float], s: tuple[float, float], t: float) -> float:
    """-log E[softmax((z + s eps)/T)[0]] for K = 2 by Gauss-Hermite quadrature.

    p0 = sigmoid((z0 - z1 + s0 e0 - s1 e1) / T), and z0 - z1 + s0 e0 - s1 e1 ~ N(mu, var).
    """
    mu, sd = z[0] - z[1], math.sqrt(s[0] ** 2 + s[1] ** 2)
    nodes, weights = np.polynomial.hermite.hermgauss(120)
    x = mu + math.sqrt(2) * sd * nodes
    p0 = float(np.sum(weights / (1 + np.exp(-x / t))) / math.sqrt(math.pi))
    return -math.log(p0)


def test_sampled_estimator_converges_to_the_quadrature_reference() -> None:
    z, s, t = (0.3, -0.5), (1.0, 2.0), 1.5
    reference = _quadrature_nll_two_classes(z, s, t)
    logits, scale, target = torch.tensor([z]), torch.tensor([s]), torch.tensor([0])

    def error(samples: int, seed: int) -> float:
        got = sampled_softmax_nll(
            logits, scale, target, samples=samples, temperature=t, chunk=512, generator=_gen(seed)
        )
        return abs(got.item() - reference)

    few = np.mean([error(10, seed) for seed in range(4)])
    many = np.mean([error(10_000, seed) for seed in range(4)])
    assert many < few / 5
    # std of the mean of 10k sigmoids <= 0.5/100; in -log space divided by p0 ~ 0.45
    assert many < 0.015
    # the noise matters here: the deterministic loss is far from the reference
    assert abs(-math.log(1 / (1 + math.exp(-(z[0] - z[1]) / t))) - reference) > 0.04


# -- chunking, layout, ignored pixels -------------------------------------------------------------


def test_chunk_size_does_not_change_loss_or_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "SMALL_PASS_ELEMENTS", 0)  # really run chunk draws per pass
    torch.manual_seed(2)
    base = torch.randn(2, 3, 4, 4)
    raw_scale = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    results = []
    for chunk in (1, 5, 12):
        logits = base.clone().requires_grad_()
        pre = raw_scale.clone().requires_grad_()
        loss = sampled_softmax_nll(
            logits, F.softplus(pre), target, samples=12, chunk=chunk, generator=_gen(11)
        )
        loss.backward()
        results.append((loss.detach(), logits.grad, pre.grad))
    for loss, g_logits, g_scale in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-6)
        assert torch.allclose(g_logits, results[0][1], atol=1e-6)
        assert torch.allclose(g_scale, results[0][2], atol=1e-6)


def test_passes_hold_chunk_draws_on_maps_and_all_draws_on_small_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []
    original = losses._chunk_logsumexp

    def record(logits, scale, target, seeds, *rest):  # type: ignore[no-untyped-def]
        sizes.append(len(seeds))
        return original(logits, scale, target, seeds, *rest)

    monkeypatch.setattr(losses, "_chunk_logsumexp", record)
    big = torch.zeros(1, 4, 256, 128)  # 131072 logits: 8 draws fit the small-pass budget, < 16
    sampled_softmax_nll(big, big + 1, torch.zeros(1, 256, 128), samples=40, chunk=16)
    assert sizes == [16, 16, 8]
    sizes.clear()
    small = torch.zeros(2, 3)
    sampled_softmax_nll(small, small + 1, torch.zeros(2), samples=100, chunk=16)
    assert sizes == [100]


def test_memory_kept_for_backward_does_not_grow_with_the_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(losses, "SMALL_PASS_ELEMENTS", 0)
    logits = torch.randn(1, 4, 64, 64, requires_grad=True)
    scale = torch.rand(1, 4, 64, 64, requires_grad=True)
    target = torch.randint(0, 4, (1, 64, 64))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = sampled_softmax_nll(logits, scale, target, samples=256, chunk=16)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    one_chunk_of_noisy_logits = 16 * logits.numel() * 4
    # without checkpointing, 256 draws would keep >= 256 x 4 x 64 x 64 floats (16 MiB)
    assert sum(storages.values()) < one_chunk_of_noisy_logits


def test_dense_maps_equal_the_same_pixels_as_items() -> None:
    torch.manual_seed(3)
    seg = torch.randn(2, 4, 3, 5)
    scale = torch.rand(2, 4, 3, 5)
    mask = torch.randint(0, 4, (2, 3, 5))
    dense = sampled_softmax_nll(seg, scale, mask, samples=9, generator=_gen(5))
    items = sampled_softmax_nll(
        seg.movedim(1, -1).reshape(-1, 4),
        scale.movedim(1, -1).reshape(-1, 4),
        mask.reshape(-1),
        samples=9,
        generator=_gen(5),
    )
    assert torch.allclose(dense, items, atol=1e-6)


def test_ignored_pixels_count_nowhere_and_all_ignored_keeps_the_graph() -> None:
    torch.manual_seed(4)
    seg = torch.randn(1, 3, 4, 4)
    scale = torch.rand(1, 3, 4, 4)
    mask = torch.randint(0, 3, (1, 4, 4))
    mask[0, 0] = 255
    clean = sampled_softmax_nll(seg, scale, mask, samples=8, ignore_index=255, generator=_gen(1))
    poisoned = seg.clone()
    poisoned[0, :, 0] = float("nan")  # garbage where the labels are ignored
    again = sampled_softmax_nll(
        poisoned, scale, mask, samples=8, ignore_index=255, generator=_gen(1)
    )
    assert torch.isfinite(again) and torch.allclose(clean, again)

    logits = seg.clone().requires_grad_()
    pre = scale.clone().requires_grad_()
    zero = sampled_softmax_nll(logits, pre, torch.full((1, 4, 4), 255), samples=8, ignore_index=255)
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.count_nonzero(logits.grad) == 0 and torch.count_nonzero(pre.grad) == 0


def test_extreme_logits_give_large_finite_losses() -> None:
    logits = torch.tensor([[60.0, -60.0]])
    loss = sampled_softmax_nll(logits, torch.full_like(logits, 0.1), torch.tensor([1]), samples=50)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(120.0, rel=0.02)
    bce = sampled_sigmoid_bce(
        torch.tensor([[40.0]]), torch.tensor([[0.1]]), torch.tensor([[0.0]]), samples=50
    )
    assert torch.isfinite(bce) and bce.item() == pytest.approx(40.0, rel=0.02)


# -- gradients: the noise scale learns where labels disagree -------------------------------------


def test_gradients_reach_logits_and_scale_with_the_right_sign() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)
    scale = torch.full((1, 3), 1.0, requires_grad=True)
    # correct and confident: extra noise can only hurt, so the loss grows with the scale
    sampled_softmax_nll(
        logits, scale, torch.tensor([0]), samples=1000, chunk=250, generator=_gen(0)
    ).backward()
    assert logits.grad[0, 0] < 0 and scale.grad.sum() > 0
    # confidently wrong (a noisy label): extra noise raises p[label], so the loss falls
    scale.grad = None
    logits.grad = None
    sampled_softmax_nll(
        logits, scale, torch.tensor([2]), samples=1000, chunk=250, generator=_gen(0)
    ).backward()
    assert logits.grad[0, 2] < 0 and scale.grad.sum() < 0

    ml_logits = torch.tensor([[3.0, -3.0]], requires_grad=True)
    ml_scale = torch.tensor([[1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0]])  # label 0 wrong, label 1 right
    sampled_sigmoid_bce(
        ml_logits, ml_scale, target, samples=1000, chunk=250, generator=_gen(0)
    ).backward()
    assert ml_logits.grad[0, 0] > 0 and ml_scale.grad[0, 0] < 0 and ml_scale.grad[0, 1] > 0


# -- predictive mean -------------------------------------------------------------------------------


def test_sampled_probabilities_are_the_loss_distribution() -> None:
    torch.manual_seed(5)
    logits = torch.randn(6, 4)
    scale = torch.rand(6, 4) * 2
    target = torch.randint(0, 4, (6,))
    probs = sampled_probabilities(logits, scale, samples=30, temperature=1.3, generator=_gen(9))
    assert probs.shape == logits.shape
    assert torch.allclose(probs.sum(1), torch.ones(6), atol=1e-6)
    loss = sampled_softmax_nll(
        logits, scale, target, samples=30, temperature=1.3, generator=_gen(9)
    )
    assert torch.allclose(-probs[torch.arange(6), target].log().mean(), loss, atol=1e-5)

    seg = torch.randn(2, 3, 4, 4)
    dense = sampled_probabilities(seg, torch.rand(2, 3, 4, 4), samples=5)
    assert dense.shape == seg.shape and torch.allclose(dense.sum(1), torch.ones(2, 4, 4))
    assert torch.allclose(
        sampled_probabilities(seg, torch.zeros_like(seg), samples=2), seg.softmax(1), atol=1e-6
    )
    ml = sampled_probabilities(
        logits, torch.zeros_like(logits), samples=2, temperature=2.0, activation="sigmoid"
    )
    assert torch.allclose(ml, torch.sigmoid(logits / 2.0), atol=1e-6)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    logits = torch.randn(3, 4).half()
    loss = sampled_softmax_nll(logits, torch.ones_like(logits), torch.tensor([0, 1, 2]), samples=4)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_sampling_arguments_are_one_line_errors() -> None:
    logits = torch.zeros(1, 2)
    for kwargs in ({"samples": 0}, {"samples": 4, "temperature": 0.0}, {"samples": 4, "chunk": 0}):
        with pytest.raises(UserInputError):
            sampled_softmax_nll(logits, logits, torch.tensor([0]), **kwargs)
    with pytest.raises(ValueError, match="target"):
        sampled_softmax_nll(logits, logits, torch.tensor([[0]]), samples=2)


# -- regression -----------------------------------------------------------------------------------


def test_gaussian_nll_is_the_closed_form_over_finite_targets() -> None:
    mean = torch.tensor([1.0, 2.0, -1.0, 0.5])
    var = torch.tensor([0.5, 2.0, 1.0, 4.0])
    target = torch.tensor([1.5, float("nan"), 0.0, float("inf")])
    got = gaussian_nll(mean, var, target)
    terms = [
        0.5 * (math.log(2 * math.pi * v) + (y - m) ** 2 / v)
        for m, v, y in ((1.0, 0.5, 1.5), (-1.0, 1.0, 0.0))
    ]
    assert got.item() == pytest.approx(sum(terms) / 2, rel=1e-6)


def test_gaussian_nll_with_no_finite_target_is_zero_with_a_graph() -> None:
    mean = torch.randn(2, 1, 3, 3, requires_grad=True)
    var = torch.rand(2, 1, 3, 3, requires_grad=True)
    loss = gaussian_nll(mean, var, torch.full((2, 1, 3, 3), float("nan")))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(mean.grad) == 0

    var2 = torch.tensor([1.0], requires_grad=True)
    gaussian_nll(torch.tensor([0.0]), var2, torch.tensor([3.0])).backward()
    # d/dv 0.5 (log v + r²/v) = 0.5 (1/v - r²/v²) = 0.5 (1 - 9) at v = 1
    assert var2.grad.item() == pytest.approx(-4.0)
