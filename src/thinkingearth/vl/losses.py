"""Image-text contrastive losses: CLIP's softmax InfoNCE and SigLIP's pairwise sigmoid.

Both take L2-normalised image and text embeddings ``[N, D]`` whose row ``i`` is a matching pair
(every other row of the other modality is a negative) and the learned temperature as
``logit_scale``, the log of the inverse temperature (CLIP's parametrisation: ``exp`` of it
multiplies the cosine similarities).

* :func:`clip_loss` (Radford et al. 2021): the mean of the image-to-text and text-to-image
  cross-entropies of the softmax over each row / column of the similarity matrix. The scale is
  capped at 100 as in CLIP, so the logits cannot grow without bound.
* :func:`siglip_loss` (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"): every
  pair ``(i, j)`` is an independent binary problem, positive on the diagonal, with logit
  ``exp(logit_scale) * <x_i, y_j> + logit_bias``; the loss is the sum of the ``N^2`` binary
  log-losses divided by ``N`` (the paper's normalisation by the batch size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from thinkingearth.errors import UserInputError

__all__ = ["MAX_LOGIT_SCALE", "clip_loss", "siglip_loss"]

#: CLIP caps the inverse temperature at 100.
MAX_LOGIT_SCALE: float = math.log(100.0)


def _check(image: Tensor, text: Tensor) -> None:
    if image.ndim != 2 or text.ndim != 2 or image.shape != text.shape:
        raise UserInputError(
            f"image and text embeddings must both be [N, D] with the same shape, got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    if image.shape[0] == 0:
        raise UserInputError("the contrastive loss needs at least one image-text pair")


def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric softmax InfoNCE of matching rows (CLIP).

    Args:
        image: ``[N, D]`` image embeddings (L2-normalised).
        text: ``[N, D]`` text embeddings of the same pairs (L2-normalised).
        logit_scale: Scalar, log of the inverse temperature (capped at ``log(100)``).

    Returns:
        Scalar loss: ``(CE(logits, diag) + CE(logits^T, diag)) / 2`` with
        ``logits = exp(logit_scale) * image @ text^T``.
    """
    _check(image, text)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * image @ text.t()
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """Pairwise sigmoid loss (SigLIP).

    Args:
        image: ``[N, D]`` image embeddings (L2-normalised).
        text: ``[N, D]`` text embeddings of the same pairs (L2-normalised).
        logit_scale: Scalar, log of the inverse temperature (the paper's ``t'``; ``t = exp t'``).
        logit_bias: Scalar bias ``b`` of every logit.

    Returns:
        Scalar loss ``-(1/N) sum_ij log sigmoid(z_ij * (t <x_i, y_j> + b))`` with ``z_ij = 1`` for
        ``i = j``, else ``-1``.
    """
    _check(image, text)
    logits = logit_scale.exp() * image @ text.t() + logit_bias
    n = image.shape[0]
    signs = 2.0 * torch.eye(n, device=image.device, dtype=logits.dtype) - 1.0
    return -F.logsigmoid(signs * logits).sum() / n
