"""Source ``kurosiwo``: Kuro Siwo's Sentinel-1 GRD, labelled tiles and the unlabelled SAR set.

Read through :class:`thinkingearth.data.formats.kurosiwo.KuroSiwoSAR`: ``data.root`` holds
``data/<actid>/<aoi>/<tile>/``; the labelled tiles (areas ``01``...) and the unlabelled tiles
Kuro Siwo publishes for pretraining (areas ``00``) of the events of ``data.split`` (the
published event split; ``null``: every event on disk). Each acquisition of a tile (SL2, SL1,
MS1) is one item, a single-date ``[2, H, W]`` VV/VH image in linear sigma0 (no data, 0 in the
files, becomes NaN) with its own date; tiles are 224 px in EPSG:3857. No labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinkingearth.data.formats.kurosiwo import KuroSiwoSAR
from thinkingearth.errors import DataLayoutError
from thinkingearth.pretrain.config import PretrainConfig
from thinkingearth.pretrain.sources.base import (
    Draw,
    SensorReader,
    cut_window,
    grid_metadata,
    grid_of,
)
from thinkingearth.sensors import get_sensor

__all__ = ["KuroSiwoReader", "open_kurosiwo"]

_NODATA = 0.0  # Kuro Siwo's SAR nodata (linear sigma0 is positive)


class KuroSiwoReader(SensorReader):
    """Every acquisition of Kuro Siwo's tiles as an item (see the module docstring).

    Args:
        root: The folder that contains ``data/``.
        bands: Registry band names of Sentinel-1 GRD to read; ``None`` = VV and VH.
        split: Event split, or ``None`` for every event.
        size: Window side in pixels.
    """

    source = "kurosiwo"

    def __init__(
        self, root: str | Path, bands: tuple[str, ...] | None, split: str | None, size: int
    ) -> None:
        """Index the tiles and their acquisitions."""
        spec = get_sensor("sentinel-1-grd")
        self.sensor = spec.name
        self.size = int(size)
        self.dataset = KuroSiwoSAR(root, split=split)  # type: ignore[arg-type]
        stored = tuple(spec.band(b).name for b in self.dataset.bands)
        self.bands = stored if bands is None else tuple(spec.band(b).name for b in bands)
        for band in self.bands:
            if band not in stored:
                raise DataLayoutError(f"Kuro Siwo has no {band}; its bands are {', '.join(stored)}")
        self._channels = [stored.index(b) for b in self.bands]
        self.items = [
            (tile, scene)
            for tile in range(len(self.dataset))
            for scene in self.dataset.scenes(tile)
        ]
        first = self.dataset.read_scene(*self.items[0])["image"]
        height, width = first.shape[-2:]
        if height < self.size or width < self.size:
            raise DataLayoutError(
                f"Kuro Siwo tiles are {height}x{width} px, smaller than data.size {self.size}; "
                "lower data.size"
            )
        which = "every event" if split is None else f"split {split}"
        self.notes = [
            f"kurosiwo {self.sensor}: {self.dataset.labelled_tiles} labelled and "
            f"{self.dataset.unlabelled_tiles} unlabelled tile(s) ({which}), {len(self.items)} "
            f"acquisitions, windows of {self.size} of {height} px"
        ]

    def __len__(self) -> int:
        return len(self.items)

    def name(self, item: int) -> str:
        tile, scene = self.items[item]
        return f"{self.dataset.records[tile]['path']} {scene}"

    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        """The drawn window of one acquisition: linear sigma0, no data as NaN."""
        tile, scene = self.items[item]
        acquisition = self.dataset.read_scene(tile, scene)
        image = acquisition["image"].numpy()[self._channels]
        height, width = image.shape[-2:]
        window, row, col = cut_window(image, self.size, choice.row, choice.col)
        window[window == np.float32(_NODATA)] = np.nan
        sample: dict[str, Any] = {
            "image": torch.from_numpy(window),
            "bands": self.bands,
            "sensor": self.sensor,
            "units": "linear",
            "time": acquisition["time"],
            "name": self.name(item),
        }
        grid = grid_of(acquisition["crs"] or None, acquisition["transform"], width, height)
        sample.update(grid_metadata(grid if acquisition["crs"] else None, row, col, self.size))
        return sample


def open_kurosiwo(config: PretrainConfig, sensor: str) -> KuroSiwoReader:
    """The Kuro Siwo reader for ``config`` (Sentinel-1 GRD only)."""
    d = config.data
    assert d.root is not None
    return KuroSiwoReader(d.root, config.source_for(sensor).bands, d.split, d.size)
