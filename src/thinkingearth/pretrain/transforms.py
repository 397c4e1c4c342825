"""Normalisation and augmentations shared by every pretraining recipe.

:class:`~thinkingearth.data.transforms.Normaliser` (re-exported here) is the one normalisation
of the toolkit, chosen per sensor (registry statistics, SAR in dB, or statistics of the data).

:class:`Augmenter` draws, per batch and seeded by ``(seed, step, rank)``, a random resized crop per
sample whose metadata follows the crop (the centre's lon/lat moves to the crop centre, ``gsd`` scales
with the zoom so the encoder's patch area stays true, a georeferencing ``transform`` is updated),
random horizontal/vertical flips, and a random subset of 75-100 % of the bands for the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import roi_align

from thinkingearth.data.transforms import Normaliser, NormMode
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import get_sensor

__all__ = [
    "EARTH_RADIUS_M",
    "Augmenter",
    "CropParams",
    "NormMode",
    "Normaliser",
    "View",
    "choose_bands",
    "crop_metadata",
    "flip_transform",
    "resized_crop",
    "sample_crops",
]

#: Mean Earth radius (IUGG), metres: converts crop offsets to degrees.
EARTH_RADIUS_M: float = 6_371_008.8


# ----------------------------------------------------------------------------------------------
# Augmentations
# ----------------------------------------------------------------------------------------------


@dataclass
class CropParams:
    """Geometry drawn for one batch: crop boxes and flips per sample.

    Attributes:
        boxes: ``[B, 4]`` float ``(top, left, height, width)`` in source pixels.
        hflip: ``[B]`` bool, mirror left-right after cropping.
        vflip: ``[B]`` bool, mirror top-bottom after cropping.
        out_size: Output pixels per side.
        src_size: ``(H, W)`` of the source images.
    """

    boxes: Tensor
    hflip: Tensor
    vflip: Tensor
    out_size: int
    src_size: tuple[int, int]


@dataclass
class View:
    """One augmented, normalised view of a batch (all samples share one sensor and band set).

    Attributes:
        image: ``[B, C, H, W]`` normalised image with the kept bands.
        bands: Band names of ``image``'s channels.
        sensor: Canonical sensor name.
        meta: ``lon``, ``lat``, ``time``, ``gsd`` float64 ``[B]`` following the crop.
        full_image: The same view before band dropping (for a distillation teacher).
        full_bands: Band names of ``full_image``.
        labels: Multi-hot land-cover ``[B, K]`` if the batch has them.
        transform: Georeferencing 6-tuples following the crop, if the batch has them.
    """

    image: Tensor
    bands: tuple[str, ...]
    sensor: str
    meta: dict[str, Tensor]
    full_image: Tensor
    full_bands: tuple[str, ...]
    labels: Tensor | None = None
    transform: list[tuple[float, ...]] | None = field(default=None)


def sample_crops(
    batch: int,
    src_size: tuple[int, int],
    out_size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flips: bool,
    generator: torch.Generator,
) -> CropParams:
    """Draw random resized crops (area share in ``scale``, aspect ratio in ``ratio``) and flips.

    Follows torchvision's ``RandomResizedCrop`` sampling (log-uniform ratio, up to 10 tries, then
    the largest centred crop within the ratio range), vectorised over the batch.
    """
    h, w = src_size
    area = float(h * w)
    boxes = torch.empty(batch, 4, dtype=torch.float64)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for i in range(batch):
        for _ in range(10):
            u = torch.rand(3, generator=generator, dtype=torch.float64)
            target = area * (scale[0] + (scale[1] - scale[0]) * float(u[0]))
            aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(u[1]))
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                pos = torch.rand(2, generator=generator, dtype=torch.float64)
                top = math.floor(float(pos[0]) * (h - ch + 1))
                left = math.floor(float(pos[1]) * (w - cw + 1))
                boxes[i] = torch.tensor([top, left, ch, cw], dtype=torch.float64)
                break
        else:
            in_ratio = w / h
            if in_ratio < ratio[0]:
                cw, ch = w, round(w / ratio[0])
            elif in_ratio > ratio[1]:
                ch, cw = h, round(h * ratio[1])
            else:
                cw, ch = w, h
            boxes[i] = torch.tensor([(h - ch) // 2, (w - cw) // 2, ch, cw], dtype=torch.float64)
    if flips:
        flags = torch.rand(batch, 2, generator=generator) < 0.5
    else:
        flags = torch.zeros(batch, 2, dtype=torch.bool)
    return CropParams(boxes, flags[:, 0].clone(), flags[:, 1].clone(), out_size, (h, w))


def resized_crop(image: Tensor, params: CropParams) -> Tensor:
    """Crop ``image`` ``[B, C, H, W]`` to the boxes, resample to ``out_size`` and flip.

    Resampling is bilinear with area averaging when shrinking (``roi_align``, adaptive
    sampling), so zoomed-out crops are not aliased.
    """
    b = image.shape[0]
    top, left, ch, cw = params.boxes.to(image.device, torch.float32).unbind(1)
    rois = torch.stack(
        (torch.arange(b, device=image.device, dtype=torch.float32), left, top, left + cw, top + ch),
        dim=1,
    )
    size = (params.out_size, params.out_size)
    out = roi_align(
        image, rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True
    )
    hflip = params.hflip.to(image.device).reshape(b, 1, 1, 1)
    vflip = params.vflip.to(image.device).reshape(b, 1, 1, 1)
    out = torch.where(hflip, out.flip(-1), out)
    return torch.where(vflip, out.flip(-2), out)


def crop_metadata(meta: Mapping[str, Tensor], params: CropParams) -> dict[str, Tensor]:
    """Move ``lon``/``lat`` to each crop's centre and scale ``gsd`` by the zoom.

    The source sample's ``lon``/``lat`` is its centre and ``gsd`` its pixel size in metres; the
    crop centre's offset in metres is converted to degrees on a sphere (local equirectangular
    approximation, exact enough for patches up to tens of kilometres). The new ``gsd`` is the
    geometric mean of the two axes' pixel sizes, so the ground area of a patch stays true
    (``gsd`` feeds the encoder's patch-area code). NaN metadata stays NaN. Flips change neither.
    """
    h, w = params.src_size
    top, left, ch, cw = params.boxes.to(torch.float64).unbind(1)
    out = {k: v.clone() for k, v in meta.items()}
    gsd = meta["gsd"].to(torch.float64).cpu()
    lat = meta["lat"].to(torch.float64).cpu()
    lon = meta["lon"].to(torch.float64).cpu()
    dy = (top + ch / 2 - h / 2) * gsd  # metres south of the source centre
    dx = (left + cw / 2 - w / 2) * gsd  # metres east
    new_lat = lat - torch.rad2deg(dy / EARTH_RADIUS_M)
    cos = torch.cos(torch.deg2rad(lat)).clamp_min(1e-6)
    new_lon = lon + torch.rad2deg(dx / (EARTH_RADIUS_M * cos))
    new_lon = torch.remainder(new_lon + 180.0, 360.0) - 180.0
    zoom = torch.sqrt(ch * cw) / params.out_size
    device = meta["gsd"].device
    out["lat"] = torch.where(torch.isfinite(dy), new_lat, lat).to(device)
    out["lon"] = torch.where(torch.isfinite(dx), new_lon, lon).to(device)
    out["gsd"] = (gsd * zoom).to(device)
    return out


def flip_transform(
    transform: Sequence[float], box: Sequence[float], out_size: int, hflip: bool, vflip: bool
) -> tuple[float, ...]:
    """The affine ``(a, b, c, d, e, f)`` of a crop ``box`` (top, left, h, w) resampled and flipped."""
    a, b, c, d, e, f = (float(v) for v in transform)
    top, left, ch, cw = (float(v) for v in box)
    sx, sy = cw / out_size, ch / out_size
    c, f = a * left + b * top + c, d * left + e * top + f
    a, d, b, e = a * sx, d * sx, b * sy, e * sy
    if hflip:
        c, f = c + a * out_size, f + d * out_size
        a, d = -a, -d
    if vflip:
        c, f = c + b * out_size, f + e * out_size
        b, e = -b, -e
    return (a, b, c, d, e, f)


def choose_bands(
    n_bands: int, fraction: tuple[float, float], generator: torch.Generator
) -> list[int]:
    """A random subset (kept in order) of ``ceil(low * n) .. ceil(high * n)`` of ``n_bands`` bands."""
    low = max(1, math.ceil(fraction[0] * n_bands - 1e-9))
    high = max(low, min(n_bands, math.ceil(fraction[1] * n_bands - 1e-9)))
    k = int(torch.randint(low, high + 1, (1,), generator=generator))
    keep = torch.randperm(n_bands, generator=generator)[:k]
    return sorted(int(i) for i in keep)


class Augmenter:
    """Normalise and augment batches into :class:`View` objects (the one path of every recipe).

    Args:
        normaliser: The per-sensor normalisation.
        out_size: Output pixels per side.
        scale: Crop area range (share of the source).
        ratio: Crop aspect-ratio range.
        flips: Random flips.
        band_fraction: Share-of-bands range kept per view.
    """

    def __init__(
        self,
        normaliser: Normaliser,
        out_size: int,
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (0.75, 4 / 3),
        flips: bool = True,
        band_fraction: tuple[float, float] = (0.75, 1.0),
    ) -> None:
        """Store the settings."""
        self.normaliser = normaliser
        self.out_size = out_size
        self.scale = scale
        self.ratio = ratio
        self.flips = flips
        self.band_fraction = band_fraction

    def geometry(self, batch: Mapping[str, Any], generator: torch.Generator) -> CropParams:
        """Draw crop boxes and flips for a collated batch."""
        image: Tensor = batch["image"]
        return sample_crops(
            image.shape[0],
            (int(image.shape[-2]), int(image.shape[-1])),
            self.out_size,
            self.scale,
            self.ratio,
            self.flips,
            generator,
        )

    def view(
        self,
        batch: Mapping[str, Any],
        generator: torch.Generator,
        params: CropParams | None = None,
        drop_bands: bool = True,
    ) -> View:
        """One augmented view of a one-sensor collated batch.

        Args:
            batch: A collated batch (``image`` ``[B, C, H, W]``, ``bands``, ``sensor``, metadata).
            generator: The seeded generator of this step.
            params: Crop geometry to reuse (cross-sensor pairs share it); drawn if ``None``.
            drop_bands: Draw a random band subset (else keep all bands).
        """
        sensors = set(batch["sensor"])
        if len(sensors) != 1:
            raise ValueError(f"a batch must hold one sensor, got {sorted(sensors)}")
        sensor = get_sensor(next(iter(sensors))).name
        band_sets = {tuple(b) for b in batch["bands"]}
        if len(band_sets) != 1:
            raise ValueError("a batch must hold one band set")
        bands = next(iter(band_sets))
        image: Tensor = batch["image"]
        if image.ndim != 4:
            raise UserInputError(
                f"pretraining takes single-date images [B, C, H, W], got {tuple(image.shape)}"
            )
        if params is None:
            params = self.geometry(batch, generator)
        x = resized_crop(self.normaliser(image, sensor, bands), params)
        meta = crop_metadata({k: batch[k] for k in ("lon", "lat", "time", "gsd")}, params)
        keep = list(range(len(bands)))
        if drop_bands:
            keep = choose_bands(len(bands), self.band_fraction, generator)
        transform = None
        if "transform" in batch and batch["transform"] is not None:
            transform = [
                flip_transform(t, box.tolist(), params.out_size, bool(hf), bool(vf))
                for t, box, hf, vf in zip(
                    batch["transform"], params.boxes, params.hflip, params.vflip, strict=True
                )
            ]
        labels = batch.get("labels")
        return View(
            image=x[:, keep],
            bands=tuple(bands[i] for i in keep),
            sensor=sensor,
            meta=meta,
            full_image=x,
            full_bands=tuple(bands),
            labels=labels if isinstance(labels, Tensor) else None,
            transform=transform,
        )
