"""Domain generalisation without target data: source batches made less alike to each other.

:func:`augment_batch` perturbs a collated, normalised batch (the ``adapt:`` section's
``band_dropout``, ``spectral_jitter`` and ``metadata_dropout``); the adaptation module
(:mod:`thinkingearth.adapt.methods`) applies it to every source batch in training, for any
method, ``none`` included. Validation and test batches are never augmented.

* **band dropout**: each band is dropped with probability ``p``; at least one band stays.
  ``mode="drop"`` (the any-sensor encoder, which takes any band subset): the channels and their
  names in ``bands`` leave the batch, one draw per batch (a batch shares one band set).
  ``mode="zero"`` (fixed-band networks, which need every channel): the channel is set to 0, per
  sample, which in normalised units is the band's mean;
* **spectral jitter**: every sample's band ``c`` is multiplied by ``g ~ N(1, σ)`` (one gain per
  sample and band, the same at every time step). The gain acts on normalised values, so it
  scales each band's contrast about its mean rather than its reflectance;
* **metadata dropout**: with probability ``p`` per sample, ``lon``, ``lat``, ``time`` and
  ``gsd`` all become NaN, which the encoder reads as unknown (a learned token per field,
  :class:`~thinkingearth.models.metadata.MetadataEncoder`), as for a sample that never had them.

An augmented batch loses its ``key`` entry, so a frozen-feature cache computes it afresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from thinkingearth.tasks.variants import AdaptSection

__all__ = ["METADATA_FIELDS", "BandMode", "augment_batch"]

#: The metadata fields metadata dropout removes.
METADATA_FIELDS: tuple[str, ...] = ("lon", "lat", "time", "gsd")
BandMode = Literal["drop", "zero"]


def _band_names(values: Any, channels: int) -> tuple[str, ...] | None:
    if isinstance(values, list | tuple) and values and all(isinstance(v, str) for v in values):
        names = tuple(values)
    elif isinstance(values, list | tuple) and values and isinstance(values[0], list | tuple):
        names = tuple(values[0])
    else:
        return None
    return names if len(names) == channels else None


def _keep_one(drop: Tensor, generator: torch.Generator) -> Tensor:
    """``drop`` ``[..., C]`` with one random band kept wherever every band was dropped."""
    flat = drop.reshape(-1, drop.shape[-1]).clone()
    for row in torch.nonzero(flat.all(dim=1)).flatten().tolist():
        keep = int(torch.randint(flat.shape[1], (1,), generator=generator))
        flat[row, keep] = False
    return flat.reshape(drop.shape)


def augment_batch(
    batch: Mapping[str, Any],
    section: AdaptSection,
    generator: torch.Generator,
    *,
    mode: BandMode = "drop",
) -> dict[str, Any]:
    """A copy of ``batch`` with band dropout, spectral jitter and metadata dropout applied.

    Args:
        batch: A collated batch (``image`` ``[B, C, H, W]`` or ``[B, T, C, H, W]``, ``bands``,
            metadata ``[B]`` / ``[B, T]``), normalised.
        section: The rates (``band_dropout``, ``spectral_jitter``, ``metadata_dropout``).
        generator: The random draws (CPU generator; seeded by the caller).
        mode: ``drop`` removes dropped bands (any-sensor encoder), ``zero`` zeroes them
            (fixed-band networks).

    Returns:
        A new dict (the input is not changed); without ``key`` if anything was changed.
    """
    if not section.augments:
        return dict(batch)
    out = dict(batch)
    out.pop("key", None)
    image: Tensor = batch["image"]
    channels = int(image.shape[-3])
    b = int(image.shape[0])
    if section.band_dropout > 0 and channels > 1:
        p = section.band_dropout
        if mode == "drop":
            drop = torch.rand(channels, generator=generator) < p
            drop = _keep_one(drop, generator)
            kept = torch.nonzero(~drop).flatten()
            if bool(drop.any()):
                names = _band_names(batch.get("bands"), channels)
                if names is None:
                    raise ValueError(
                        f"band dropout needs the batch's {channels} band names in 'bands'"
                    )
                image = image.index_select(-3, kept.to(image.device))
                chosen = tuple(names[i] for i in kept.tolist())
                out["bands"] = [chosen] * b
        elif mode == "zero":
            drop = _keep_one(torch.rand(b, channels, generator=generator) < p, generator)
            keep = (~drop).to(image.dtype).to(image.device)
            keep = keep.reshape(b, *([1] * (image.ndim - 4)), channels, 1, 1)
            image = image * keep
        else:
            raise ValueError(f"unknown band dropout mode {mode!r}; expected 'drop' or 'zero'")
    if section.spectral_jitter > 0:
        c = int(image.shape[-3])
        gain = 1.0 + section.spectral_jitter * torch.randn(b, c, generator=generator)
        gain = gain.to(image.dtype).to(image.device)
        image = image * gain.reshape(b, *([1] * (image.ndim - 4)), c, 1, 1)
    out["image"] = image
    if section.metadata_dropout > 0:
        dropped = torch.rand(b, generator=generator) < section.metadata_dropout
        for name in METADATA_FIELDS:
            value = batch.get(name)
            if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == b:
                value = value.to(torch.float64).clone()
                value[dropped.to(value.device)] = math.nan
                out[name] = value
            elif value is None:
                out[name] = torch.full((b,), math.nan, dtype=torch.float64)
    return out
