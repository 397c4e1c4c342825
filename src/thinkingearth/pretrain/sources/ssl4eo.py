"""Source ``ssl4eo-s12``: SSL4EO-S12 (Wang et al. 2023), Sentinel-1 GRD and Sentinel-2 L1C/L2A.

The layout is torchgeo's :class:`torchgeo.datasets.SSL4EOS12` (the published archives,
extracted): ``data.root/{s1,s2c,s2a}/<location:07d>/<acquisition>/<band>.tif``, four seasonal
acquisitions per location, ``s1`` VV and VH (GEE ``COPERNICUS/S1_GRD``, decibels), ``s2c``
the 13 L1C bands and ``s2a`` the 12 L2A bands (digital numbers), every band read onto the
264 px 10 m grid as torchgeo reads it (nearest neighbour). torchgeo's class checks the layout
and gives the band lists and the date patterns of the acquisition folders; the acquisition is
read here, because torchgeo picks seasons with the unseeded global :mod:`random` and drops the
CRS: a sample is the acquisition of rank ``floor(u * T)`` in time of its location (``u`` drawn
per ``(seed, sample)``), so runs resume exactly and Sentinel-1/Sentinel-2 pairs take the same
season. Samples carry ``lon``/``lat`` of the window centre from the files' CRS, ``gsd``,
``crs``, ``transform`` and ``time``; Sentinel-1 in linear sigma0. No labels.

Pairs for ``cross_sensor``: the same location of ``s1`` and ``s2c``/``s2a`` (one window of
both covers the same ground).
"""

from __future__ import annotations

import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import affine
import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError

from thinkingearth.data.sample import to_days
from thinkingearth.data.scene import Grid
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.pretrain.sources.base import (
    Draw,
    SensorReader,
    cut_window,
    db_to_linear,
    grid_metadata,
    pick,
)
from thinkingearth.sensors import get_sensor

__all__ = ["SSL4EOReader", "open_ssl4eo", "ssl4eo_pairs"]

_LOCATION = re.compile(r"^\d{7}$")


class SSL4EOReader(SensorReader):
    """One sensor's SSL4EO-S12 locations (see the module docstring).

    Args:
        root: The folder that holds ``s1/``, ``s2c/``, ``s2a/``.
        sensor: ``sentinel-1-grd``, ``sentinel-2-l1c`` or ``sentinel-2-l2a``.
        bands: Registry band names to read; ``None`` = every band of the archive.
        size: Window side in pixels (at most 264).
    """

    source = "ssl4eo-s12"
    #: torchgeo's split of each sensor.
    SPLITS: ClassVar[dict[str, str]] = {
        "sentinel-1-grd": "s1",
        "sentinel-2-l1c": "s2c",
        "sentinel-2-l2a": "s2a",
    }

    def __init__(
        self, root: str | Path, sensor: str, bands: tuple[str, ...] | None, size: int
    ) -> None:
        """Check the layout with torchgeo and list the locations."""
        from torchgeo.datasets import SSL4EOS12, DatasetNotFoundError

        spec = get_sensor(sensor)
        if spec.name not in self.SPLITS:
            raise UserInputError(
                f"SSL4EO-S12 has no {spec.name}; expected one of: {', '.join(self.SPLITS)}"
            )
        self.sensor = spec.name
        self.size = int(size)
        self.root = Path(root)
        self.split = self.SPLITS[spec.name]
        try:
            SSL4EOS12(str(self.root), split=self.split)  # type: ignore[arg-type]
        except DatasetNotFoundError:
            raise DataLayoutError(
                f"no SSL4EO-S12 {self.split} data in {self.root} (expected "
                f"{self.root / self.split}/<location:07d>/<acquisition>/<band>.tif, as torchgeo's "
                "SSL4EOS12 finds it)"
            ) from None
        metadata = SSL4EOS12.metadata[self.split]
        self.grid_size = int(SSL4EOS12.size)
        self._date = re.compile(metadata["filename_regex"])
        stored = {spec.band(b).name: b for b in metadata["bands"]}
        wanted = tuple(stored) if bands is None else tuple(spec.band(b).name for b in bands)
        for band in wanted:
            if band not in stored:
                raise DataLayoutError(
                    f"SSL4EO-S12 {self.split} has no {band}; it has {', '.join(stored)}"
                )
        self.bands = wanted
        self._files = [f"{stored[b]}.tif" for b in wanted]
        folder = self.root / self.split
        self.locations = sorted(
            e.name for e in os.scandir(folder) if e.is_dir() and _LOCATION.match(e.name)
        )
        if self.grid_size < self.size:
            raise DataLayoutError(
                f"SSL4EO-S12 patches are {self.grid_size} px, smaller than data.size {self.size}"
            )
        self.notes = [
            f"ssl4eo-s12 {self.split} ({self.sensor}): {len(self.locations)} locations, "
            f"windows of {self.size} of {self.grid_size} px"
        ]

    def __len__(self) -> int:
        return len(self.locations)

    def name(self, item: int) -> str:
        return f"{self.split}/{self.locations[item]}"

    def acquisitions(self, item: int) -> list[tuple[float, str]]:
        """``(days since 1970, folder name)`` of a location's acquisitions, oldest first."""
        folder = self.root / self.split / self.locations[item]
        found = []
        for entry in os.scandir(folder):
            match = self._date.match(entry.name)
            if entry.is_dir() and match:
                when = datetime.strptime(match.group("date"), "%Y%m%dT%H%M%S")
                found.append((to_days(when), entry.name))
        if not found:
            raise DataLayoutError(f"SSL4EO-S12 location {folder} has no acquisition folder")
        return sorted(found)

    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        """The drawn window of the drawn acquisition of location ``item``."""
        acquisitions = self.acquisitions(item)
        time, name = acquisitions[pick(len(acquisitions), choice.time)]
        folder = self.root / self.split / self.locations[item] / name
        shape = (1, self.grid_size, self.grid_size)
        layers = []
        grid: Grid | None = None
        for filename in self._files:
            path = folder / filename
            try:
                with rasterio.open(path) as ds:
                    layers.append(ds.read(out_shape=shape, out_dtype="float32")[0])
                    if grid is None and ds.crs is not None:
                        left, bottom, right, top = ds.bounds
                        transform = affine.Affine(
                            (right - left) / self.grid_size, 0.0, left,
                            0.0, (bottom - top) / self.grid_size, top,
                        )  # fmt: skip
                        grid = Grid(ds.crs, transform, self.grid_size, self.grid_size)
                    nodata = ds.nodata
            except RasterioError as exc:
                raise DataLayoutError(
                    f"cannot read SSL4EO-S12 file {path}: {' '.join(str(exc).split())[:200]}"
                ) from None
            if nodata is not None and not math.isnan(nodata):
                layers[-1][layers[-1] == np.float32(nodata)] = np.nan
        image = np.stack(layers)
        window, row, col = cut_window(image, self.size, choice.row, choice.col)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(window),
            "bands": self.bands,
            "sensor": self.sensor,
            "time": time,
            "name": f"{self.name(item)}/{name}",
        }
        if self.split == "s1":  # stored in dB (Earth Engine); pretraining reads linear sigma0
            sample["image"] = torch.from_numpy(db_to_linear(window))
            sample["units"] = "linear"
        sample.update(grid_metadata(grid, row, col, self.size))
        return sample


def open_ssl4eo(config: PretrainConfig, sensor: str) -> SSL4EOReader:
    """The SSL4EO-S12 reader of ``sensor`` for ``config``."""
    d = config.data
    assert d.root is not None
    return SSL4EOReader(d.root, sensor, config.source_for(sensor).bands, d.size)


def ssl4eo_pairs(a: SSL4EOReader, b: SSL4EOReader) -> list[tuple[int, int]]:
    """The locations both readers have, as ``(item of a, item of b)``.

    Raises:
        DataLayoutError: The two sensors share no location.
    """
    index = {name: j for j, name in enumerate(b.locations)}
    pairs = [(i, index[name]) for i, name in enumerate(a.locations) if name in index]
    if not pairs:
        raise DataLayoutError(
            f"SSL4EO-S12 {a.split} and {b.split} in {a.root} share no location folder"
        )
    a.notes.append(f"ssl4eo-s12 pairs: {len(pairs)} locations with both {a.split} and {b.split}")
    return pairs
