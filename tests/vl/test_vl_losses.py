"""CLIP and SigLIP losses against references written out by hand (loops and numbers)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from thinkingearth.errors import UserInputError
from thinkingearth.vl.losses import clip_loss, siglip_loss


def _clip_reference(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE with explicit loops over rows and columns."""
    n = image.shape[0]
    sim = [
        [
            scale * sum(float(image[i, d] * text[j, d]) for d in range(image.shape[1]))
            for j in range(n)
        ]
        for i in range(n)
    ]
    image_to_text = 0.0
    for i in range(n):
        denominator = sum(math.exp(sim[i][j]) for j in range(n))
        image_to_text += -math.log(math.exp(sim[i][i]) / denominator)
    text_to_image = 0.0
    for j in range(n):
        denominator = sum(math.exp(sim[i][j]) for i in range(n))
        text_to_image += -math.log(math.exp(sim[j][j]) / denominator)
    return 0.5 * (image_to_text / n + text_to_image / n)


def _siglip_reference(image: torch.Tensor, text: torch.Tensor, t: float, b: float) -> float:
    """Zhai et al. 2023, algorithm 1, pair by pair."""
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            logit = t * sum(float(image[i, d] * text[j, d]) for d in range(image.shape[1])) + b
            label = 1.0 if i == j else -1.0
            total += math.log(1.0 + math.exp(-label * logit))  # -log sigmoid(label * logit)
    return total / n


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)


def test_clip_loss_numbers_by_hand() -> None:
    # Two orthonormal pairs, scale 1: logits are the identity; each row's softmax gives the
    # match e / (e + 1), so every cross-entropy is log(1 + 1/e).
    eye = torch.eye(2, dtype=torch.float64)
    loss = clip_loss(eye, eye, torch.tensor(0.0, dtype=torch.float64))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)
    # Texts swapped: every row's match has logit 0 against 1 for the wrong one.
    loss = clip_loss(eye, eye.flip(0), torch.tensor(0.0, dtype=torch.float64))
    assert float(loss) == pytest.approx(math.log(1 + math.e), abs=1e-12)


def test_clip_loss_matches_loop_reference() -> None:
    image, text = _unit(5, 3, 0), _unit(5, 3, 1)
    for log_scale in (0.0, math.log(1 / 0.07)):
        got = clip_loss(image, text, torch.tensor(log_scale, dtype=torch.float64))
        assert float(got) == pytest.approx(
            _clip_reference(image, text, math.exp(log_scale)), rel=1e-10
        )


def test_clip_loss_caps_the_scale_at_100() -> None:
    image, text = _unit(4, 3, 2), _unit(4, 3, 3)
    capped = clip_loss(image, text, torch.tensor(math.log(1000.0), dtype=torch.float64))
    assert float(capped) == pytest.approx(_clip_reference(image, text, 100.0), rel=1e-10)


def test_clip_loss_is_symmetric_in_image_and_text() -> None:
    image, text = _unit(4, 3, 4), _unit(4, 3, 5)
    scale = torch.tensor(1.5, dtype=torch.float64)
    assert float(clip_loss(image, text, scale)) == pytest.approx(
        float(clip_loss(text, image, scale))
    )


def test_siglip_loss_numbers_by_hand() -> None:
    # Identity logits (t = 1, b = 0): two positives at logit 1 cost log(1 + e^-1) each, two
    # negatives at logit 0 cost log 2 each; divided by N = 2.
    eye = torch.eye(2, dtype=torch.float64)
    loss = siglip_loss(
        eye, eye, torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    )
    expected = (2 * math.log(1 + math.exp(-1)) + 2 * math.log(2)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(1.0064089, abs=1e-6)


def test_siglip_loss_matches_loop_reference() -> None:
    image, text = _unit(4, 3, 6), _unit(4, 3, 7)
    for log_t, b in ((math.log(10.0), -10.0), (0.3, 0.5)):
        got = siglip_loss(
            image,
            text,
            torch.tensor(log_t, dtype=torch.float64),
            torch.tensor(b, dtype=torch.float64),
        )
        assert float(got) == pytest.approx(
            _siglip_reference(image, text, math.exp(log_t), b), rel=1e-10
        )


def test_losses_reward_matching_pairs_and_train_scale_and_bias() -> None:
    image = _unit(6, 8, 8).float()
    matched, shuffled = image.clone(), image.roll(1, dims=0)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    assert clip_loss(image, matched, scale) < clip_loss(image, shuffled, scale)
    assert siglip_loss(image, matched, scale, bias) < siglip_loss(image, shuffled, scale, bias)
    siglip_loss(image, matched, scale, bias).backward()
    assert scale.grad is not None and bias.grad is not None and float(bias.grad) != 0.0


def test_losses_refuse_mismatched_shapes() -> None:
    with pytest.raises(UserInputError, match=r"same shape"):
        clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(0.0))
    with pytest.raises(UserInputError, match=r"at least one"):
        siglip_loss(torch.zeros(0, 4), torch.zeros(0, 4), torch.tensor(0.0), torch.tensor(0.0))
