"""Losses of the pretraining recipes.

* :func:`contrastive_loss`: one soft-target InfoNCE for SoftCon, SupCon, SimCLR and cross-sensor
  contrastive learning. The ``2N`` embeddings of two views of ``N`` samples are compared with
  each other (cosine similarity / temperature, self-similarity excluded); each row's target is
  a distribution over the other ``2N - 1`` embeddings, and the loss is the cross-entropy between
  it and the softmax of the row.

  - ``simclr``: all target mass on the other view of the same sample: NT-Xent (Chen et al. 2020,
    "A Simple Framework for Contrastive Learning of Visual Representations"). With the views of
    two sensors of one place this is the cross-sensor InfoNCE.
  - ``supcon``: uniform mass on every embedding with the same (multi-hot) label vector, the
    other view included: SupCon's ``L_out`` (Khosla et al. 2020, "Supervised Contrastive
    Learning"); for multi-label data, "same label" means the same set of classes.
  - ``softcon``: mass proportional to the cosine similarity of the multi-hot land-cover vectors,
    with the other view of the same sample a full positive (similarity 1): SoftCon's soft
    contrastive objective (Wang et al. 2024, "Multi-label Guided Soft Contrastive Learning for
    Efficient Earth Observation Pretraining"), which aligns cross-scene similarities with label
    similarities instead of treating every other scene as a negative.

* :func:`masked_reconstruction_loss`: MAE's mean squared error on the masked patches, with the
  per-patch normalised-pixel target (He et al. 2022, "Masked Autoencoders Are Scalable Vision
  Learners"), per sample, so recipes can average it per sensor (:func:`mean_per_group`).
* :func:`cosine_distillation_loss`: ``1 - cos(student, teacher)``, the feature-distillation loss
  that Copernicus-FM (Wang et al. 2025, "Towards a Unified Copernicus Foundation Model for Earth
  Vision") combines with masked image modelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ContrastTargets",
    "contrastive_loss",
    "contrastive_targets",
    "cosine_distillation_loss",
    "masked_reconstruction_loss",
    "mean_per_group",
]

ContrastTargets = Literal["softcon", "supcon", "simclr"]


def contrastive_targets(
    n: int,
    kind: ContrastTargets,
    labels: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Row-normalised target matrix ``[2N, 2N]`` for embeddings ordered ``[view 1; view 2]``.

    Args:
        n: Number of samples ``N`` (each has two views).
        kind: ``simclr``, ``supcon`` or ``softcon`` (see the module docstring).
        labels: Multi-hot labels ``[N, K]`` (``supcon`` and ``softcon``).
        device: Device of the result.

    Returns:
        Non-negative ``[2N, 2N]`` with a zero diagonal and rows summing to 1.
    """
    index = torch.arange(2 * n, device=device)
    partner = (index + n) % (2 * n)
    eye = torch.eye(2 * n, dtype=torch.bool, device=device)
    if kind == "simclr":
        weights = torch.zeros(2 * n, 2 * n, device=device)
    else:
        if labels is None:
            raise ValueError(f"{kind} targets need multi-hot labels")
        y = torch.cat((labels, labels)).to(device=device, dtype=torch.float32)
        if kind == "supcon":
            weights = (torch.cdist(y, y, p=1) == 0).to(torch.float32)
        else:
            unit = F.normalize(y, dim=1)  # zero vectors stay zero: no similarity to anything
            weights = (unit @ unit.T).clamp(0.0, 1.0)
    weights = weights.masked_fill(eye, 0.0)
    weights[index, partner] = 1.0
    return weights / weights.sum(dim=1, keepdim=True)


def contrastive_loss(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    kind: ContrastTargets = "simclr",
    labels: Tensor | None = None,
) -> Tensor:
    """Soft-target InfoNCE between two views ``z1``, ``z2`` ``[N, D]`` (normalised inside).

    Args:
        z1: Projections of the first view (or sensor).
        z2: Projections of the second view, row ``i`` of the same sample as ``z1[i]``.
        temperature: Softmax temperature.
        kind: Target kind (``simclr`` = NT-Xent / InfoNCE, ``supcon``, ``softcon``).
        labels: Multi-hot labels ``[N, K]`` for ``supcon`` / ``softcon``.

    Returns:
        Scalar loss, the mean over the ``2N`` rows.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat((z1, z2)).float(), dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    targets = contrastive_targets(n, kind, labels, z.device)
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(eye, 0.0)
    return -(targets * log_prob).sum(dim=1).mean()


def masked_reconstruction_loss(
    pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True
) -> Tensor:
    """MAE loss per sample: mean squared error over the masked patches.

    Args:
        pred: ``[B, N, C, P]`` predicted pixels of each patch (``P = p*p``) and band.
        target: ``[B, N, C, P]`` the input's pixels.
        mask: ``[B, N]`` 1 where the patch was hidden from the encoder.
        norm_pix: Normalise each target patch of each band by its own mean and variance.

    Returns:
        ``[B]`` loss of each sample.
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=(-1, -2))  # [B, N]
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def cosine_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``1 - cos(student, teacher)`` averaged over rows (``[B, D]``, or ``[B, N, D]`` tokens)."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def mean_per_group(values: Tensor, groups: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean of ``values`` ``[B]`` per group (sensor), and the mean of the group means.

    Returns:
        ``(overall, {group: mean})``: every sensor counts equally in ``overall``, whatever its
        share of the batch.
    """
    means: dict[str, Tensor] = {}
    for name in dict.fromkeys(groups):
        keep = torch.tensor([g == name for g in groups], device=values.device)
        means[name] = values[keep].mean()
    return torch.stack(list(means.values())).mean(), means
