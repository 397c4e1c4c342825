"""Aleatoric and epistemic uncertainty, separated.

For a model that gives ``S`` predictive distributions per input (MC-dropout passes, ensemble
members, or ``S = 1`` for a single heteroscedastic/deterministic model), the total predictive
entropy splits exactly into two non-negative parts (Depeweg et al. 2018; Smith & Gal 2018):

``H[1/S Σ_s p_s]  =  1/S Σ_s H[p_s]  +  (H[1/S Σ_s p_s] − 1/S Σ_s H[p_s])``
``    total       =    aleatoric      +    epistemic (mutual information)``

Aleatoric is the noise each sample already expects (a heteroscedastic head puts its label noise
here); epistemic is the disagreement between samples. For multi-label outputs every label is an
independent Bernoulli event and the entropies are summed over labels. For regression the law of
total variance does the same: ``Var = E_s[σ²_s] + Var_s[μ_s]``.

All entropies are in nats, with ``0 · log 0 = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["binary_entropy", "entropy", "split_entropy", "split_variance"]


def _float(t: Tensor) -> Tensor:
    t = torch.as_tensor(t)
    return (
        t if t.is_floating_point() and t.dtype not in (torch.float16, torch.bfloat16) else t.float()
    )


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy ``-Σ p log p`` over ``dim``, in nats (``0 · log 0 = 0``).

    Args:
        probs: probabilities summing to 1 over ``dim``.
        dim: the class dimension.

    Returns:
        ``probs`` without ``dim``.
    """
    p = _float(probs)
    return -torch.special.xlogy(p, p).sum(dim)


def binary_entropy(probs: Tensor) -> Tensor:
    """Elementwise Bernoulli entropy ``-p log p - (1-p) log(1-p)``, in nats."""
    p = _float(probs)
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def split_entropy(
    samples: Tensor, dim: int = 2, *, multilabel: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Split the predictive entropy of sampled distributions into aleatoric and epistemic parts.

    Args:
        samples: ``[S, B, K, ...]`` predictive distributions per weight sample (class
            probabilities summing to 1 over ``dim``; per-label probabilities when
            ``multilabel``).
        dim: the class/label dimension of ``samples`` (not 0, the sample dimension).
        multilabel: treat each of the K entries as an independent binary event and sum the
            Bernoulli entropies over them.

    Returns:
        ``(total, aleatoric, epistemic)``, each ``samples`` without dimensions 0 and ``dim``
        (``[B, ...]``): ``total = H[mean_s p_s]``, ``aleatoric = mean_s H[p_s]``,
        ``epistemic = total - aleatoric``. Both parts are >= 0 and sum to ``total``; round-off
        that would make the mutual information negative is absorbed into ``aleatoric``.
    """
    p = _float(samples)
    if p.dim() < 2:
        raise ValueError(f"samples must be [S, B, K, ...]; got shape {tuple(p.shape)}")
    if dim in (0, -p.dim()) or not -p.dim() <= dim < p.dim():
        raise ValueError(f"class dimension {dim} is not a non-sample dimension of {tuple(p.shape)}")
    class_dim = dim if dim < 0 else dim - 1  # the class dimension once the samples are averaged
    mean = p.mean(0)
    if multilabel:
        total = binary_entropy(mean).sum(class_dim)
        aleatoric = binary_entropy(p).sum(dim).mean(0)
    else:
        total = entropy(mean, class_dim)
        aleatoric = entropy(p, dim).mean(0)
    aleatoric = torch.minimum(aleatoric, total)
    return total, aleatoric, total - aleatoric


def split_variance(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The law of total variance over weight samples.

    Args:
        means: ``[S, ...]`` predicted means ``μ_s``.
        variances: ``[S, ...]`` predicted variances ``σ²_s`` (zeros for a deterministic model).

    Returns:
        ``(total, aleatoric, epistemic)``, each ``[...]``: ``aleatoric = mean_s σ²_s``,
        ``epistemic = Var_s μ_s`` (population variance over the S samples, 0 for S = 1),
        ``total = aleatoric + epistemic``.
    """
    mu, var = _float(means), _float(variances)
    if mu.shape != var.shape or mu.dim() < 1:
        raise ValueError(
            f"means and variances must share one [S, ...] shape; got {tuple(mu.shape)}, "
            f"{tuple(var.shape)}"
        )
    aleatoric = var.mean(0)
    epistemic = mu.var(0, correction=0)
    return aleatoric + epistemic, aleatoric, epistemic
