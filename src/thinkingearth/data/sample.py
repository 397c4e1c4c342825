"""The Sample contract: the only shape that crosses module boundaries.

A Sample is a plain ``dict`` (torchgeo-compatible) with

* ``image``: float32 tensor ``[C, H, W]``, or ``[T, C, H, W]`` for a time series;
* ``bands``: tuple of band names from the sensor registry, one per channel;
* ``sensor``: the sensor's registry name;
* optional ``mask`` (int64 ``[H, W]``), ``label`` (int64 scalar or multi-hot ``[K]``) and
  ``target`` (float32, regression; NaN where unknown);
* metadata ``lon``, ``lat`` (degrees), ``time`` (days since 1970-01-01, float; for a time series
  one value per step), ``gsd`` (metres). Missing metadata is NaN for that sample only;
* georeferenced samples also carry ``crs`` (WKT or EPSG string) and ``transform`` (a 6-tuple in
  GDAL/affine order ``a, b, c, d, e, f``).

:func:`collate` stacks a list of Samples into a batch with the same keys: tensors are stacked,
metadata becomes float64 tensors ``[B]`` (``[B, T]`` for per-step times) with NaN kept per sample,
and strings and georeferencing become lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
from torch import Tensor

__all__ = ["METADATA_KEYS", "Sample", "collate", "collate_sides", "to_days"]

#: Metadata keys every Sample may carry; a missing one is NaN for that sample.
METADATA_KEYS: tuple[str, ...] = ("lon", "lat", "time", "gsd")

_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


class Sample(TypedDict):
    """One sample; see the module docstring for the meaning of each key."""

    image: Tensor
    bands: tuple[str, ...]
    sensor: str
    mask: NotRequired[Tensor]
    label: NotRequired[Tensor]
    target: NotRequired[Tensor]
    lon: NotRequired[float]
    lat: NotRequired[float]
    time: NotRequired[float | Tensor]
    gsd: NotRequired[float]
    crs: NotRequired[str]
    transform: NotRequired[tuple[float, ...]]
    caption: NotRequired[str]


def to_days(value: Any) -> float:
    """Convert a time to days since 1970-01-01 (float); ``None`` becomes NaN.

    Accepts a number (already days), ``numpy.datetime64``, ``datetime`` or ``date``.
    """
    if value is None:
        return math.nan
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return math.nan
        seconds = (value.astype("datetime64[s]") - _EPOCH).astype(np.int64)
        return float(seconds) / 86400.0
    if isinstance(value, datetime | date):
        return to_days(np.datetime64(value, "s"))
    return float(value)


def _metadata_value(sample: Mapping[str, Any], key: str) -> Tensor:
    value = sample.get(key)
    if key == "time":
        if isinstance(value, Tensor):
            return value.to(torch.float64)
        if isinstance(value, np.ndarray) and value.ndim > 0:
            return torch.tensor([to_days(v) for v in value.ravel()], dtype=torch.float64)
        if isinstance(value, Sequence) and not isinstance(value, str):
            return torch.tensor([to_days(v) for v in value], dtype=torch.float64)
        return torch.tensor(to_days(value), dtype=torch.float64)
    if value is None:
        return torch.tensor(math.nan, dtype=torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def _stack_times(times: list[Tensor]) -> Tensor:
    """Stack per-sample times; pad series of different lengths with NaN."""
    if all(t.ndim == 0 for t in times):
        return torch.stack(times)
    length = max(t.numel() for t in times)
    out = torch.full((len(times), length), math.nan, dtype=torch.float64)
    for i, t in enumerate(times):
        flat = t.reshape(-1)
        out[i, : flat.numel()] = flat
    return out


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate Samples into a batch, keeping metadata per sample (NaN where a sample lacks it).

    Args:
        samples: Samples with the same tensor shapes for ``image`` (and ``mask``/``label``/
            ``target`` where present).

    Returns:
        A batch dict: stacked tensors, ``[B]`` float64 metadata (``[B, T]`` for time series), and
        lists for strings, band tuples and georeferencing.

    Raises:
        ValueError: if the samples are empty or their images differ in shape.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"cannot collate images of different shapes: {sorted(shapes)}")
    batch: dict[str, Any] = {}
    keys = {k for s in samples for k in s}
    for key in sorted(keys):
        if key in METADATA_KEYS:
            values = [_metadata_value(s, key) for s in samples]
            batch[key] = _stack_times(values) if key == "time" else torch.stack(values)
            continue
        values = [s.get(key) for s in samples]
        if all(isinstance(v, Tensor) for v in values):
            batch[key] = torch.stack(values)  # type: ignore[arg-type]
        else:
            batch[key] = values
    for key in METADATA_KEYS:
        if key not in batch:
            batch[key] = torch.full((len(samples),), math.nan, dtype=torch.float64)
    return batch


def collate_sides(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate items made of several Samples, ``{side: Sample | None}``, side by side.

    Two co-registered sensors (``{"a", "b"}``, cross-sensor pretraining) or source and target
    batches (``{"source", "target"}``, domain adaptation) each become one batch of
    :func:`collate`; a side that is ``None`` in every item is ``None`` in the batch.

    Raises:
        ValueError: if there are no items, the items name different sides, or a side is
            ``None`` in some items only.
    """
    if not items:
        raise ValueError("collate_sides needs at least one item")
    sides = list(items[0])
    if any(list(item) != sides for item in items):
        raise ValueError("every item must name the same sides")
    batch: dict[str, Any] = {}
    for side in sides:
        values = [item[side] for item in items]
        if all(v is None for v in values):
            batch[side] = None
        elif any(v is None for v in values):
            raise ValueError(f"side {side!r} is missing in some items only")
        else:
            batch[side] = collate(values)
    return batch
