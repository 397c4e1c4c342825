"""Losses for models that predict their own label noise.

* :func:`sampled_softmax_nll` — heteroscedastic single-label classification (Kendall & Gal 2017;
  Collier et al. 2021): the network gives logits ``z`` and a per-class noise scale ``σ``; the
  predictive distribution is the softmax of noisy logits averaged over Gaussian draws,
  ``p̄ = 1/S Σ_s softmax((z + σ·ε_s) / T)``, ``ε_s ~ N(0, I)``, and the loss is ``-log p̄[y]``.
  Works per item (``[B, K]``) and per pixel (``[B, K, H, W]``, any number of spatial dimensions).
* :func:`sampled_sigmoid_bce` — the same for independent labels (multi-label): per-label binary
  cross-entropy of ``p̄ = 1/S Σ_s sigmoid((z + σ·ε_s) / T)``.
* :func:`sampled_probabilities` — the predictive mean ``p̄`` itself, for prediction.
* :func:`gaussian_nll` — heteroscedastic regression: Gaussian negative log-likelihood of a
  predicted mean and variance over the finite targets (NaN = unknown).

Numerics. ``log p̄`` is computed as ``logsumexp_s log_softmax(·)_s − log S`` (``logsigmoid`` for
the sigmoid), never as the log of an averaged probability, so confident wrong predictions give
large finite losses instead of ``inf``. Half-precision inputs are computed in float32.

Memory. Samples are processed ``chunk`` at a time; while gradients are recorded each chunk runs
under activation checkpointing, so the autograd graph keeps only the per-chunk
``logsumexp`` of the target's log-probability (``[N]`` per chunk, N = items or pixels) and
recomputes the ``chunk × N × K`` noisy logits in the backward pass. Peak memory is therefore
about ``chunk × N × K`` floats whatever the number of samples, which is what makes hundreds of
samples affordable on segmentation maps. When ``chunk × N × K`` is small (per-image
classification) more draws go into one pass, up to :data:`SMALL_PASS_ELEMENTS` noisy logits, so
that hundreds of samples cost a few kernel calls rather than one per chunk of 16 (the result does
not change: see Randomness).

Randomness. ``samples`` 63-bit seeds are drawn from ``generator`` (the global torch generator
when ``None``, so ``lightning.seed_everything`` makes training reproducible); sample ``s`` uses
``ε_s = torch.randn(shape, generator=torch.Generator(device).manual_seed(seed_s))``. Each draw
thus depends only on its own seed, and the result does not depend on ``chunk``; recomputation
under checkpointing reproduces the same draws exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from thinkingearth.errors import UserInputError

__all__ = [
    "gaussian_nll",
    "sampled_probabilities",
    "sampled_sigmoid_bce",
    "sampled_softmax_nll",
]

Activation = Literal["softmax", "sigmoid"]

# Noisy logits one pass may hold when ``chunk`` draws would hold fewer (4 MiB of float32): a
# classification batch does all its draws in one pass, a segmentation map keeps ``chunk``.
SMALL_PASS_ELEMENTS = 2**20


def _check_sampling(samples: int, temperature: float, chunk: int) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"noisy-logit samples must be an integer >= 1; got {samples!r}")
    if not temperature > 0:
        raise UserInputError(f"softmax/sigmoid temperature must be > 0; got {temperature!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserInputError(f"sample chunk must be an integer >= 1; got {chunk!r}")


def _draw_seeds(samples: int, generator: torch.Generator | None) -> list[int]:
    """One independent 63-bit seed per noise sample, from ``generator`` (or the global RNG)."""
    device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2**63 - 1, (samples,), generator=generator, device=device)
    return seeds.tolist()


def _working(t: Tensor) -> Tensor:
    """Half-precision inputs are computed in float32 (logsumexp over hundreds of samples)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _noise(shape: torch.Size, seeds: Sequence[int], like: Tensor) -> Tensor:
    """``[len(seeds), *shape]`` standard normal draws, draw ``s`` seeded by ``seeds[s]`` alone."""
    gen = torch.Generator(device=like.device)
    draws = []
    for seed in seeds:
        gen.manual_seed(int(seed))
        draws.append(torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype))
    return torch.stack(draws)


def _chunk_logsumexp(
    logits: Tensor,
    scale: Tensor,
    target: Tensor | None,
    seeds: list[int],
    temperature: float,
    activation: Activation,
    negative: bool,
) -> Tensor:
    """``logsumexp`` over this chunk's samples of the log-probabilities.

    softmax: ``logits`` ``[N, K]``; the log-softmax over K, gathered at ``target`` (``[N]``) when
    given, else all K kept. sigmoid: elementwise ``logsigmoid(±z)`` (``negative`` picks
    ``log(1 - sigmoid)``).
    """
    eps = _noise(logits.shape, seeds, logits)
    noisy = (logits.unsqueeze(0) + scale.unsqueeze(0) * eps) / temperature
    if activation == "softmax":
        logp = torch.log_softmax(noisy, dim=-1)
        if target is not None:
            logp = logp.gather(-1, target.view(1, -1, 1).expand(len(seeds), -1, 1)).squeeze(-1)
    else:
        logp = F.logsigmoid(-noisy if negative else noisy)
    return torch.logsumexp(logp, dim=0)


def _log_mean_probability(
    logits: Tensor,
    scale: Tensor,
    target: Tensor | None,
    *,
    samples: int,
    temperature: float,
    activation: Activation,
    chunk: int,
    generator: torch.Generator | None,
    negative: bool = False,
    seeds: list[int] | None = None,
) -> Tensor:
    """``log(1/S Σ_s p_s)``, chunked; checkpointed per chunk when gradients are recorded."""
    if seeds is None:
        seeds = _draw_seeds(samples, generator)
    record = torch.is_grad_enabled() and (logits.requires_grad or scale.requires_grad)
    chunk = max(chunk, SMALL_PASS_ELEMENTS // max(logits.numel(), 1))
    parts = []
    for start in range(0, samples, chunk):
        args = (
            logits,
            scale,
            target,
            seeds[start : start + chunk],
            temperature,
            activation,
            negative,
        )
        if record:
            parts.append(
                checkpoint(_chunk_logsumexp, *args, use_reentrant=False, preserve_rng_state=False)
            )
        else:
            parts.append(_chunk_logsumexp(*args))
    stacked = torch.stack(parts)
    return torch.logsumexp(stacked, dim=0) - math.log(samples)


def _classes_last(logits: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, K, *spatial]`` -> ``[N, K]`` (class dimension last); ``scale`` broadcast to it."""
    if logits.dim() < 2:
        raise ValueError(f"logits must be [B, K, *spatial]; got shape {tuple(logits.shape)}")
    scale = torch.broadcast_to(scale, logits.shape)
    k = logits.shape[1]
    return logits.movedim(1, -1).reshape(-1, k), scale.movedim(1, -1).reshape(-1, k)


def _zero_keeping_graph(*tensors: Tensor) -> Tensor:
    """A scalar 0 connected to the graph of ``tensors`` (an empty sum: no NaN can leak in)."""
    total = tensors[0].flatten()[:0].sum()
    for t in tensors[1:]:
        total = total + t.flatten()[:0].sum()
    return total


def sampled_softmax_nll(
    logits: Tensor,
    scale: Tensor,
    target: Tensor,
    *,
    samples: int,
    temperature: float = 1.0,
    ignore_index: int | None = None,
    chunk: int = 16,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Heteroscedastic softmax cross-entropy: ``-mean log(1/S Σ_s softmax((z + σ ε_s)/T)[y])``.

    Args:
        logits: ``[B, K]`` or ``[B, K, *spatial]`` class scores ``z``.
        scale: per-class noise standard deviation ``σ`` (> 0, e.g. a softplus output), the
            shape of ``logits`` or broadcastable to it (e.g. ``[B, 1, H, W]`` for one scale per
            pixel).
        target: ``[B]`` or ``[B, *spatial]`` class ids.
        samples: noise draws ``S``.
        temperature: softmax temperature ``T`` applied to the noisy logits.
        ignore_index: target value that counts nowhere.
        chunk: draws processed at a time (bounds memory, not the result); more when they fit
            in :data:`SMALL_PASS_ELEMENTS`.
        generator: source of the per-draw seeds; the global torch generator when ``None``.

    Returns:
        The mean over non-ignored items/pixels, a scalar; ``0`` connected to the graph when all
        are ignored. ``scale = 0`` gives exactly the plain cross-entropy.
    """
    _check_sampling(samples, temperature, chunk)
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must be logits' shape without the class dimension "
            f"{tuple(logits.shape[:1] + logits.shape[2:])}; got {tuple(target.shape)}"
        )
    flat_logits, flat_scale = _classes_last(_working(logits), _working(scale))
    flat_target = target.reshape(-1).long()
    if ignore_index is not None:
        keep = flat_target != ignore_index
        flat_logits, flat_scale, flat_target = (
            flat_logits[keep],
            flat_scale[keep],
            flat_target[keep],
        )
    if flat_target.numel() == 0:
        return _zero_keeping_graph(logits, scale)
    log_p = _log_mean_probability(
        flat_logits,
        flat_scale,
        flat_target,
        samples=samples,
        temperature=temperature,
        activation="softmax",
        chunk=chunk,
        generator=generator,
    )
    return -log_p.mean()


def sampled_sigmoid_bce(
    logits: Tensor,
    scale: Tensor,
    target: Tensor,
    *,
    samples: int,
    temperature: float = 1.0,
    chunk: int = 16,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Heteroscedastic multi-label loss: mean binary cross-entropy of the averaged sigmoid.

    For each label, ``p̄ = 1/S Σ_s sigmoid((z + σ ε_s)/T)`` and the loss is
    ``-(y log p̄ + (1 - y) log(1 - p̄))``; ``log p̄`` and ``log(1 - p̄)`` are each a
    ``logsumexp`` of ``logsigmoid(±·)`` over the same draws, so neither underflows.

    Args:
        logits: ``[B, K]`` label scores (any shape works: labels are independent).
        scale: noise standard deviation, ``logits``' shape or broadcastable to it.
        target: ``logits``' shape, 0/1 (soft targets in [0, 1] are accepted too).
        samples: noise draws ``S``.
        temperature: sigmoid temperature ``T``.
        chunk: draws processed at a time.
        generator: source of the per-draw seeds; the global torch generator when ``None``.

    Returns:
        The mean over all (item, label) entries, a scalar. ``scale = 0`` gives exactly
        ``binary_cross_entropy_with_logits(z / T, y)``.
    """
    _check_sampling(samples, temperature, chunk)
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have logits' shape {tuple(logits.shape)}; got {tuple(target.shape)}"
        )
    work_logits = _working(logits)
    work_scale = torch.broadcast_to(_working(scale), logits.shape)
    if work_logits.numel() == 0:
        return _zero_keeping_graph(logits, scale)
    seeds = _draw_seeds(samples, generator)
    common = {
        "samples": samples,
        "temperature": temperature,
        "activation": "sigmoid",
        "chunk": chunk,
        "generator": None,
        "seeds": seeds,
    }
    log_p = _log_mean_probability(work_logits, work_scale, None, negative=False, **common)
    log_not_p = _log_mean_probability(work_logits, work_scale, None, negative=True, **common)
    y = target.to(log_p.dtype)
    return -(y * log_p + (1 - y) * log_not_p).mean()


def sampled_probabilities(
    logits: Tensor,
    scale: Tensor,
    *,
    samples: int,
    temperature: float = 1.0,
    activation: Activation = "softmax",
    chunk: int = 16,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The predictive mean ``1/S Σ_s act((z + σ ε_s)/T)``, the shape of ``logits``.

    Args:
        logits: ``[B, K, *spatial]`` (softmax over dimension 1) or any shape (sigmoid).
        scale: noise standard deviation, ``logits``' shape or broadcastable to it.
        samples: noise draws ``S``.
        temperature: temperature ``T``.
        activation: ``softmax`` (classes sum to 1 over dimension 1) or ``sigmoid`` (per label).
        chunk: draws processed at a time.
        generator: source of the per-draw seeds; the global torch generator when ``None``.

    Returns:
        Probabilities in ``logits``' shape (float32 for half-precision inputs).
    """
    _check_sampling(samples, temperature, chunk)
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be softmax or sigmoid; got {activation!r}")
    work_logits, work_scale = _working(logits), _working(scale)
    if activation == "sigmoid":
        work_scale = torch.broadcast_to(work_scale, logits.shape)
        log_p = _log_mean_probability(
            work_logits,
            work_scale,
            None,
            samples=samples,
            temperature=temperature,
            activation="sigmoid",
            chunk=chunk,
            generator=generator,
        )
        return log_p.exp()
    flat_logits, flat_scale = _classes_last(work_logits, work_scale)
    log_p = _log_mean_probability(
        flat_logits,
        flat_scale,
        None,
        samples=samples,
        temperature=temperature,
        activation="softmax",
        chunk=chunk,
        generator=generator,
    )
    moved = work_logits.movedim(1, -1).shape
    return log_p.exp().reshape(moved).movedim(-1, 1)


def gaussian_nll(mean: Tensor, variance: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Gaussian negative log-likelihood over the finite targets (NaN/inf = unknown).

    ``torch.nn.GaussianNLLLoss(full=True, eps=eps, reduction="mean")``: the mean over finite
    targets of ``0.5 (log(2π σ²) + (y − μ)² / σ²)``, with ``σ²`` clamped below at ``eps`` (the
    clamp passes gradients through, as in torch).

    Args:
        mean: predicted mean ``μ``.
        variance: predicted variance ``σ²`` (>= 0), ``mean``'s shape.
        target: ``y``, ``mean``'s shape; non-finite entries are skipped.
        eps: variance floor.

    Returns:
        A scalar; ``0`` connected to the graph when no target is finite.
    """
    if not (mean.shape == variance.shape == target.shape):
        raise ValueError(
            "mean, variance and target must share one shape; got "
            f"{tuple(mean.shape)}, {tuple(variance.shape)}, {tuple(target.shape)}"
        )
    finite = torch.isfinite(target)
    if not bool(finite.any()):
        return _zero_keeping_graph(mean, variance)
    loss = torch.nn.GaussianNLLLoss(full=True, eps=eps, reduction="mean")
    return loss(mean[finite], target[finite].to(mean.dtype), variance[finite])
