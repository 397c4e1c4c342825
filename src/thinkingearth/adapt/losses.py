"""Losses of the domain-adaptation methods, on plain tensors.

* :func:`grad_reverse`: the identity forward, the gradient times ``-coefficient`` backward
  (gradient reversal layer, Ganin et al. 2016); :class:`DomainDiscriminator` is the small MLP
  that tells source features from target features behind it (DANN);
* :func:`coral_loss`: ``‖C_s − C_t‖²_F / (4 d²)`` with ``C`` the (n − 1)-normalised feature
  covariances (Deep CORAL, Sun & Saenko 2016);
* :func:`mmd_loss`: the biased estimate of the squared maximum mean discrepancy with a sum of
  Gaussian kernels (multi-kernel MMD, Long et al. 2015, as DAN's code sets the bandwidths);
* :func:`entropy`: the Shannon entropy of predicted probabilities (TENT, Wang et al. 2021);
* :func:`pseudo_labels`: confident predictions as labels, the rest :data:`PSEUDO_IGNORE`
  (self-training, Lee 2013).

References:
    Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky.
    "Domain-Adversarial Training of Neural Networks." JMLR 2016.
    Sun, Saenko. "Deep CORAL: Correlation Alignment for Deep Domain Adaptation." ECCV-W 2016.
    Long, Cao, Wang, Jordan. "Learning Transferable Features with Deep Adaptation Networks."
    ICML 2015.
    Wang, Shelhamer, Liu, Olshausen, Darrell. "Tent: Fully Test-Time Adaptation by Entropy
    Minimization." ICLR 2021.
    Lee. "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
    Neural Networks." ICML-W 2013.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "PSEUDO_IGNORE",
    "DomainDiscriminator",
    "GradientReversal",
    "PredictionKind",
    "coral_loss",
    "entropy",
    "grad_reverse",
    "grl_coefficient",
    "mmd_loss",
    "pseudo_labels",
]

#: Label of entries without a confident pseudo-label (cross-entropy's default ignore index).
PSEUDO_IGNORE = -100
#: How predictions are read: softmax over classes (dim 1), or a sigmoid per label.
PredictionKind = Literal["classification", "multilabel", "segmentation", "change"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = float(coefficient)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad, None


def grad_reverse(x: Tensor, coefficient: float = 1.0) -> Tensor:
    """``x`` unchanged; gradients flowing back through it are multiplied by ``-coefficient``."""
    return GradientReversal.apply(x, coefficient)


def grl_coefficient(progress: float, maximum: float = 1.0, gamma: float = 10.0) -> float:
    """DANN's schedule of the reversal coefficient: ``maximum · (2 / (1 + e^{−γ p}) − 1)``.

    It rises from 0 at the start (``p = 0``) towards ``maximum`` at the end (``p = 1``), so the
    discriminator's noisy early gradients barely reach the features (Ganin et al. 2016, γ = 10).
    """
    p = min(1.0, max(0.0, float(progress)))
    return float(maximum) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainDiscriminator(nn.Module):
    """Source-or-target classifier on features ``[B, D]`` → one logit per sample (DANN).

    Two hidden layers with BatchNorm and ReLU, as in Ganin et al. 2016's image experiments.

    Args:
        in_features: Width ``D`` of the features.
        hidden: Width of the hidden layers.
    """

    def __init__(self, in_features: int, hidden: int = 256) -> None:
        """Build the network."""
        super().__init__()
        self.in_features = int(in_features)
        self.net = nn.Sequential(
            nn.Linear(self.in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[B]`` (positive: target)."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"DomainDiscriminator expects features [B, {self.in_features}]; "
                f"got {tuple(features.shape)}"
            )
        return self.net(features).squeeze(1)


def _check_pair(source: Tensor, target: Tensor, where: str) -> None:
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"{where} expects features [n_s, D] and [n_t, D]; "
            f"got {tuple(source.shape)} and {tuple(target.shape)}"
        )


def _covariance(x: Tensor) -> Tensor:
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / max(1, x.shape[0] - 1)


def coral_loss(source: Tensor, target: Tensor) -> Tensor:
    """Deep CORAL: ``‖C_s − C_t‖²_F / (4 d²)`` (Sun & Saenko 2016).

    Args:
        source: Source features ``[n_s, d]``.
        target: Target features ``[n_t, d]``.

    Returns:
        A scalar; 0 when both sets have the same covariance (their means do not count). The
        covariances divide by ``n − 1`` (by 1 for a single sample, whose covariance is 0).
    """
    _check_pair(source, target, "coral_loss")
    d = source.shape[1]
    difference = _covariance(source.float()) - _covariance(target.float())
    return (difference * difference).sum() / (4.0 * d * d)


#: Bandwidth multipliers of :func:`mmd_loss` (DAN's five kernels: base × 2^k, k = −2 … 2).
MMD_BANDWIDTHS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def mmd_loss(
    source: Tensor, target: Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS
) -> Tensor:
    """Multi-kernel Gaussian MMD² (biased estimate; Long et al. 2015).

    ``MMD² = mean k(s, s') + mean k(t, t') − 2 mean k(s, t)`` with
    ``k(x, y) = Σ_m exp(−‖x − y‖² / (m · γ))``, ``m`` each of ``bandwidths`` and ``γ`` the mean
    squared distance between distinct points of both sets (detached), as in DAN's code.

    Args:
        source: Source features ``[n_s, d]``.
        target: Target features ``[n_t, d]``.
        bandwidths: Multipliers ``m`` of ``γ``, each ``> 0``.

    Returns:
        A scalar ``>= 0`` up to round-off; exactly 0 for identical sets.
    """
    _check_pair(source, target, "mmd_loss")
    if not bandwidths or any(not (b > 0) for b in bandwidths):
        raise ValueError(f"mmd_loss bandwidths must be > 0; got {tuple(bandwidths)}")
    points = torch.cat([source.float(), target.float()])
    distances = torch.cdist(points, points).pow(2)
    n = points.shape[0]
    gamma = distances.detach().sum() / max(1, n * n - n)
    gamma = gamma.clamp_min(1e-12)
    kernel = sum(torch.exp(-distances / (float(b) * gamma)) for b in bandwidths)
    ns = source.shape[0]
    k_ss = kernel[:ns, :ns].mean()
    k_tt = kernel[ns:, ns:].mean()
    k_st = kernel[:ns, ns:].mean()
    return k_ss + k_tt - 2.0 * k_st


def entropy(probabilities: Tensor, *, multilabel: bool = False, eps: float = 1e-8) -> Tensor:
    """Shannon entropy (nats) per prediction, over dim 1.

    Args:
        probabilities: ``[B, K, ...]`` class probabilities (they sum to 1 over ``K``), or
            per-label probabilities with ``multilabel``.
        multilabel: Sum the binary entropies of the labels instead.
        eps: Floor inside the logarithm.

    Returns:
        ``[B, ...]`` entropies.
    """
    p = probabilities.clamp(eps, 1.0)
    h = -(p * p.log())
    if multilabel:
        q = (1.0 - probabilities).clamp(eps, 1.0)
        h = h - q * q.log()
    return h.sum(dim=1)


def pseudo_labels(logits: Tensor, threshold: float, kind: PredictionKind) -> Tensor:
    """Confident predictions as labels; :data:`PSEUDO_IGNORE` where the model is unsure.

    Args:
        logits: ``[B, K]`` (classification, multi-label) or ``[B, K, H, W]`` (segmentation,
            change). Read without gradients.
        threshold: Probability a label needs: the softmax maximum (classes), or
            ``max(p, 1 − p)`` per label (multi-label).
        kind: How to read ``logits``.

    Returns:
        int64 class ids ``[B]`` / ``[B, H, W]``, or ``[B, K]`` 0/1 per label (multi-label), with
        :data:`PSEUDO_IGNORE` at every entry below ``threshold``.
    """
    logits = logits.detach()
    if kind == "multilabel":
        p = logits.sigmoid()
        labels = (p >= 0.5).long()
        confident = torch.maximum(p, 1.0 - p) >= threshold
    elif kind in ("classification", "segmentation", "change"):
        confidence, labels = logits.softmax(dim=1).max(dim=1)
        confident = confidence >= threshold
    else:
        raise ValueError(f"no pseudo-labels for {kind!r} predictions")
    return torch.where(confident, labels, torch.full_like(labels, PSEUDO_IGNORE))
