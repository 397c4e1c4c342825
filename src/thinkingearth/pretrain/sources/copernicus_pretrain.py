"""Source ``copernicus-pretrain``: the Copernicus-Pretrain WebDataset shards (Wang et al. 2025).

The published layout (Hugging Face ``wangyi111/Copernicus-Pretrain``, the one torchgeo's
:class:`torchgeo.datasets.CopernicusPretrain` streams): ``.tar`` shards (``example-000000.tar``
...; ``data.root`` and its subfolders are searched) of one sample per 0.25 degree ERA5 grid
cell, each of the members ``<grid>.s1_grd.pth`` ``[P, T, 2, 264, 264]`` (local patches, times,
VV/VH in dB), ``<grid>.s2_toa.pth`` ``[P, T, 13, 264, 264]`` (L1C digital numbers, int16),
``<grid>.s3_olci.pth`` ``[T, 21, 96, 96]``, ``<grid>.s5p_{co,no2,o3,so2}.pth``
``[T, 1, 28, 28]``, ``<grid>.dem.pth`` ``[960, 960]`` and ``<grid>.json``, whose entry per
modality names each image ``<grid>_<lon>_<lat>/<local>_<lon>_<lat>/<YYYYMMDD>`` (S1/S2, per
patch and time), ``<grid>_<lon>_<lat>/<YYYYMMDD>`` (S3, S5P) or ``<grid>_<lon>_<lat>`` (DEM).
Grid cells may lack modalities (the ``union`` shards); a sensor reads the cells that have it.

torchgeo's class is an unseeded stream (``random`` picks the patch and time; it needs the
``webdataset`` package); here the shards are indexed once (member offsets, with :mod:`tarfile`)
and read at random, so sample ``i`` is a pure function of ``(seed, i)``: the local patch of
rank ``floor(u * P)`` and the acquisition of rank ``floor(u * T)`` in time. Tensors are read
with ``torch.load(weights_only=True)``: tensors only, never arbitrary pickled objects. A shard
that cannot be read is left out with a note naming it.

Samples: windows of ``data.size`` pixels; ``lon``/``lat`` from the metadata's coordinates
(taken as the centre of the patch or grid cell, moved to the window's centre), ``gsd`` from
the published resolutions (S1/S2 10 m, S3 300 m, S5P 1 km, DEM 30 m), ``time`` from the
metadata's date (the DEM has none); Sentinel-1 in linear sigma0. No labels, no CRS.

Pairs for ``cross_sensor``: the same grid cell; for Sentinel-1 with Sentinel-2, the same local
patch (the same local id) at the same rank in time.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.pretrain.sources.base import (
    Draw,
    SensorReader,
    cut_window,
    db_to_linear,
    pick,
    shifted_lonlat,
)
from thinkingearth.sensors import get_sensor

__all__ = ["CopernicusPretrainReader", "copernicus_pairs", "index_shards", "open_copernicus"]

# WebDataset's split of a member name into sample key and extension (at the basename's first dot).
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
_PLACE = re.compile(r"^(?P<id>[^_/]+)_(?P<lon>-?\d+(?:\.\d+)?)_(?P<lat>-?\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class _Member:
    shard: Path
    offset: int
    size: int


@dataclass(frozen=True)
class _Modality:
    key: str  # member extension without .pth and JSON entry
    local: bool  # [P, T, C, H, W] with local patches (else [T, C, H, W], or [H, W] for the DEM)
    gsd: float  # metres
    db: bool  # SAR in decibels


def index_shards(root: Path, notes: list[str]) -> dict[str, dict[str, _Member]]:
    """Members of every ``.tar`` shard under ``root``: sample key -> extension -> member.

    A shard :mod:`tarfile` cannot read is left out with a note naming it.
    """
    shards = sorted(p for p in root.rglob("*.tar") if p.is_file())
    if not shards:
        raise DataLayoutError(
            f"no Copernicus-Pretrain shards (*.tar) under data.root {root}; expected the "
            "WebDataset shards example-000000.tar ..."
        )
    samples: dict[str, dict[str, _Member]] = {}
    for shard in shards:
        found: dict[str, dict[str, _Member]] = {}
        try:
            with tarfile.open(shard, mode="r:") as tar:
                for info in tar:
                    match = _MEMBER.match(info.name)
                    if info.isfile() and match:
                        key = f"{shard.relative_to(root).as_posix()}:{match.group(1)}"
                        member = _Member(shard, info.offset_data, info.size)
                        found.setdefault(key, {})[match.group(2)] = member
        except (tarfile.TarError, OSError) as exc:
            notes.append(f"copernicus-pretrain: left out unreadable shard {shard} ({exc})")
            continue
        samples.update(found)
    return samples


def _read(member: _Member) -> bytes:
    with open(member.shard, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise DataLayoutError(f"Copernicus-Pretrain shard {member.shard} is truncated")
    return data


def _tensor(member: _Member) -> torch.Tensor:
    try:
        value = torch.load(io.BytesIO(_read(member)), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises pickle and runtime errors of many kinds
        raise DataLayoutError(
            f"cannot read a tensor from Copernicus-Pretrain shard {member.shard}: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from None
    if not isinstance(value, torch.Tensor):
        raise DataLayoutError(
            f"Copernicus-Pretrain shard {member.shard} holds a {type(value).__name__}, not a tensor"
        )
    return value


def _place(text: str) -> tuple[str, float, float]:
    """``(id, lon, lat)`` of a ``<id>_<lon>_<lat>`` name; NaN where it is not one."""
    match = _PLACE.match(text)
    if match is None:
        return text, math.nan, math.nan
    return match.group("id"), float(match.group("lon")), float(match.group("lat"))


def _day(text: str) -> float:
    try:
        return to_days(datetime.strptime(text, "%Y%m%d"))
    except ValueError:
        return math.nan


class CopernicusPretrainReader(SensorReader):
    """One sensor's grid cells of the Copernicus-Pretrain shards (see the module docstring).

    Args:
        root: The folder of the shards.
        sensor: ``sentinel-1-grd``, ``sentinel-2-l1c``, ``sentinel-3-olci``, ``sentinel-5p``
            or ``copernicus-dem``.
        bands: Registry band names to read (Sentinel-5P: one gas; default NO2); ``None`` =
            every band of the modality.
        size: Window side in pixels.
        samples: Shard index shared with another reader (for pairs); built if ``None``.
    """

    source = "copernicus-pretrain"
    #: Each sensor's modality: member name, local patches, metres per pixel, SAR in dB.
    MODALITIES: ClassVar[dict[str, _Modality]] = {
        "sentinel-1-grd": _Modality("s1_grd", True, 10.0, True),
        "sentinel-2-l1c": _Modality("s2_toa", True, 10.0, False),
        "sentinel-3-olci": _Modality("s3_olci", False, 300.0, False),
        "sentinel-5p": _Modality("s5p_{gas}", False, 1000.0, False),
        "copernicus-dem": _Modality("dem", False, 30.0, False),
    }
    #: Band order of each modality's channels (as the collection scripts write them).
    CHANNELS: ClassVar[dict[str, tuple[str, ...]]] = {
        "sentinel-1-grd": ("VV", "VH"),
        "sentinel-2-l1c": get_sensor("sentinel-2-l1c").band_names,
        "sentinel-3-olci": get_sensor("sentinel-3-olci").band_names,
        "copernicus-dem": ("DEM",),
    }

    def __init__(
        self,
        root: str | Path,
        sensor: str,
        bands: tuple[str, ...] | None,
        size: int,
        samples: dict[str, dict[str, _Member]] | None = None,
    ) -> None:
        """Index the shards and keep the grid cells that have this sensor."""
        spec = get_sensor(sensor)
        if spec.name not in self.MODALITIES:
            raise UserInputError(
                f"Copernicus-Pretrain has no {spec.name}; expected one of: "
                + ", ".join(self.MODALITIES)
            )
        self.sensor = spec.name
        self.size = int(size)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataLayoutError(f"data.root {self.root} is not a folder of shards")
        self.notes = []
        modality = self.MODALITIES[spec.name]
        if spec.name == "sentinel-5p":
            gases = bands or ("NO2",)
            if len(gases) != 1:
                raise UserInputError(
                    "Copernicus-Pretrain holds each Sentinel-5P gas with its own dates: give one "
                    f"of CO, NO2, O3, SO2, got {list(gases)}"
                )
            gas = spec.band(gases[0]).name
            if gas not in ("CO", "NO2", "O3", "SO2"):
                raise UserInputError(f"Copernicus-Pretrain has no Sentinel-5P {gas}")
            modality = _Modality(modality.key.format(gas=gas.lower()), False, modality.gsd, False)
            channels: tuple[str, ...] = (gas,)
        else:
            channels = self.CHANNELS[spec.name]
        self.modality = modality
        wanted = channels if bands is None else tuple(spec.band(b).name for b in bands)
        for band in wanted:
            if band not in channels:
                raise DataLayoutError(
                    f"Copernicus-Pretrain {modality.key} has no {band}; it has {', '.join(channels)}"
                )
        self.bands = wanted
        self._channels = [channels.index(b) for b in wanted]
        self.samples = index_shards(self.root, self.notes) if samples is None else samples
        ext = f"{modality.key}.pth"
        self.keys = sorted(k for k, m in self.samples.items() if ext in m and "json" in m)
        if not self.keys:
            raise DataLayoutError(
                f"no grid cell in the Copernicus-Pretrain shards under {self.root} has "
                f"{ext} and its json"
            )
        side = tuple(_tensor(self.samples[self.keys[0]][ext]).shape[-2:])
        if min(side) < self.size:
            raise DataLayoutError(
                f"Copernicus-Pretrain {modality.key} images are {side[0]}x{side[1]} px, smaller "
                f"than data.size {self.size}; lower data.size"
            )
        self.notes.append(
            f"copernicus-pretrain {modality.key} ({self.sensor}): {len(self.keys)} grid cells "
            f"of {len(self.samples)}, windows of {self.size} of {side[0]} px"
        )

    def __len__(self) -> int:
        return len(self.keys)

    def name(self, item: int) -> str:
        return self.keys[item]

    def metadata(self, item: int) -> Any:
        """The grid cell's JSON entry of this modality."""
        members = self.samples[self.keys[item]]
        try:
            meta = json.loads(_read(members["json"]))
        except ValueError as exc:
            raise DataLayoutError(
                f"Copernicus-Pretrain {self.keys[item]}.json is not valid JSON: {exc}"
            ) from None
        return meta.get(self.modality.key, []) if isinstance(meta, dict) else []

    def local_ids(self, item: int) -> list[str]:
        """The local patch id of each patch of a cell (S1/S2), from the metadata."""
        meta = self.metadata(item)
        ids = []
        for patch in meta:
            first = patch[0] if isinstance(patch, list) and patch else ""
            parts = str(first).split("/")
            ids.append(_place(parts[1])[0] if len(parts) > 2 else "")
        return ids

    def read(self, item: int, choice: Draw, patch: int | None = None) -> dict[str, Any]:
        """The drawn window of the drawn (or given) patch and time of grid cell ``item``."""
        key = self.keys[item]
        tensor = _tensor(self.samples[key][f"{self.modality.key}.pth"])
        meta = self.metadata(item)
        names: Iterable[Any] = meta
        if self.modality.local:
            if tensor.ndim != 5:
                raise DataLayoutError(
                    f"Copernicus-Pretrain {key}.{self.modality.key}.pth is "
                    f"{tuple(tensor.shape)}; expected [patches, times, C, H, W]"
                )
            p = pick(tensor.shape[0], choice.patch) if patch is None else patch
            tensor = tensor[p]
            names = meta[p] if p < len(meta) else []
        elif self.sensor == "copernicus-dem":
            tensor = tensor.reshape(1, 1, *tensor.shape[-2:])
        if tensor.ndim != 4:
            raise DataLayoutError(
                f"Copernicus-Pretrain {key}.{self.modality.key}.pth has shape "
                f"{tuple(tensor.shape)}; expected [times, C, H, W]"
            )
        names = list(names)
        times = [
            _day(str(n).split("/")[-1]) if self.sensor != "copernicus-dem" else math.nan
            for n in names
        ]
        times += [math.nan] * (tensor.shape[0] - len(times))
        order = sorted(range(tensor.shape[0]), key=lambda t: (math.isnan(times[t]), times[t], t))
        t = order[pick(len(order), choice.time)]
        image = tensor[t].to(torch.float32).numpy()[self._channels]
        if image.shape[-1] < self.size or image.shape[-2] < self.size:
            raise DataLayoutError(
                f"Copernicus-Pretrain {self.modality.key} images are "
                f"{image.shape[-2]}x{image.shape[-1]} px, smaller than data.size {self.size}; "
                "lower data.size"
            )
        height, width = image.shape[-2:]
        window, row, col = cut_window(image, self.size, choice.row, choice.col)
        name = str(names[t]) if t < len(names) else str(names[0]) if names else ""
        parts = name.split("/")
        where = parts[1] if self.modality.local and len(parts) > 2 else parts[0]
        _, lon, lat = _place(where)
        gsd = self.modality.gsd
        east = (col + self.size / 2.0 - width / 2.0) * gsd
        north = -(row + self.size / 2.0 - height / 2.0) * gsd
        lon, lat = shifted_lonlat(lon, lat, east, north)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(window)),
            "bands": self.bands,
            "sensor": self.sensor,
            "time": times[t],
            "lon": lon,
            "lat": lat,
            "gsd": gsd,
            "name": f"{key}/{name}",
        }
        if self.modality.db:  # Earth Engine's S1 GRD is dB; pretraining reads linear sigma0
            sample["image"] = torch.from_numpy(db_to_linear(np.ascontiguousarray(window)))
            sample["units"] = "linear"
        return sample


def open_copernicus(
    config: PretrainConfig, sensor: str, samples: dict[str, dict[str, _Member]] | None = None
) -> CopernicusPretrainReader:
    """The Copernicus-Pretrain reader of ``sensor`` for ``config``."""
    d = config.data
    assert d.root is not None
    return CopernicusPretrainReader(
        d.root, sensor, config.source_for(sensor).bands, d.size, samples
    )


class _MatchedPatch(SensorReader):
    """A Copernicus-Pretrain reader whose local patch follows its partner's (same local id)."""

    def __init__(self, reader: CopernicusPretrainReader, partner: CopernicusPretrainReader) -> None:
        self.reader, self.partner = reader, partner
        self._partner_item = {key: i for i, key in enumerate(partner.keys)}
        self.source, self.sensor = reader.source, reader.sensor
        self.bands, self.size, self.notes = reader.bands, reader.size, reader.notes

    def __len__(self) -> int:
        return len(self.reader)

    def name(self, item: int) -> str:
        return self.reader.name(item)

    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        theirs = self.partner.local_ids(self._partner_item[self.reader.keys[item]])
        mine = self.reader.local_ids(item)
        wanted = theirs[pick(len(theirs), choice.patch)] if theirs else ""
        patch = mine.index(wanted) if wanted in mine else None
        return self.reader.read(item, choice, patch)


def copernicus_pairs(
    a: CopernicusPretrainReader, b: CopernicusPretrainReader
) -> tuple[SensorReader, SensorReader, list[tuple[int, int]]]:
    """Readers and ``(item of a, item of b)`` of the grid cells that have both sensors.

    For Sentinel-1 with Sentinel-2, ``b`` reads the local patch ``a`` draws (same local id).

    Raises:
        DataLayoutError: No grid cell has both sensors.
    """
    index = {key: j for j, key in enumerate(b.keys)}
    pairs = [(i, index[key]) for i, key in enumerate(a.keys) if key in index]
    if not pairs:
        raise DataLayoutError(
            f"no Copernicus-Pretrain grid cell under {a.root} has both {a.modality.key} and "
            f"{b.modality.key}"
        )
    a.notes.append(
        f"copernicus-pretrain pairs: {len(pairs)} grid cells with {a.modality.key} and "
        f"{b.modality.key}"
    )
    second: SensorReader = b
    if a.modality.local and b.modality.local:
        second = _MatchedPatch(b, a)
    return a, second, pairs
