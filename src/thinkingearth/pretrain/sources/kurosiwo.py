"""Source ``kurosiwo``: Kuro Siwo's Sentinel-1 GRD, labelled tiles and the unlabelled SAR set.

Read through :class:`thinkingearth.data.formats.kurosiwo.KuroSiwoSAR`: ``data.root`` holds
``data/<actid>/<aoi>/<tile>/``; the labelled tiles (areas ``01``...) and the unlabelled tiles
Kuro Siwo publishes for pretraining (areas ``00``) of the events of ``data.split`` (the
published event split; ``null``: every event on disk). Each acquisition of a tile (SL2, SL1,
MS1) is one item, a single-date ``[2, H, W]`` VV/VH image in linear sigma0 (no data, 0 in the
files, becomes NaN) with its own date; tiles are 224 px in EPSG:3857. No labels.

With ``data.kurosiwo_captioned: true`` (for ``recipe: image_text``) the items are only the
post-event acquisitions (MS1) of the labelled tiles, the ones Kuro Siwo's flood mask labels:
each sample also carries ``flood_mask``, int64 ``[size, size]``, the tile's mask cut to the
sample's window (0 no water, 1 permanent water, 2 flood, 3 ignored: MNA != 1 or MLU nodata),
which ``image_text`` words with :func:`thinkingearth.vl.captions.flood_caption` (pretraining
never imports ``vl``). The pre-event acquisitions (SL2, SL1) and the unlabelled tiles (areas
``00``) have no label and are left out.
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
_LABELLED_SCENE = "MS1"  # the acquisition the flood mask labels (post-event)


class KuroSiwoReader(SensorReader):
    """Every acquisition of Kuro Siwo's tiles as an item (see the module docstring).

    Args:
        root: The folder that contains ``data/``.
        bands: Registry band names of Sentinel-1 GRD to read; ``None`` = VV and VH.
        split: Event split, or ``None`` for every event.
        size: Window side in pixels.
        captioned: Only the labelled tiles' MS1, each window with its ``flood_mask`` (see
            the module docstring).
    """

    source = "kurosiwo"

    def __init__(
        self,
        root: str | Path,
        bands: tuple[str, ...] | None,
        split: str | None,
        size: int,
        captioned: bool = False,
    ) -> None:
        """Index the tiles and their acquisitions."""
        spec = get_sensor("sentinel-1-grd")
        self.sensor = spec.name
        self.size = int(size)
        self.captioned = bool(captioned)
        # Captions need the flood mask, which only the labelled tiles have.
        try:
            self.dataset = KuroSiwoSAR(
                root,
                split=split,  # type: ignore[arg-type]
                unlabelled=not self.captioned,
            )
        except DataLayoutError as error:
            if not self.captioned:
                raise
            raise DataLayoutError(
                f"{error} (data.kurosiwo_captioned reads the labelled tiles only, areas 01...)"
            ) from error
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
            if not self.captioned or scene == _LABELLED_SCENE
        ]
        first = self.dataset.read_scene(*self.items[0])["image"]
        height, width = first.shape[-2:]
        if height < self.size or width < self.size:
            raise DataLayoutError(
                f"Kuro Siwo tiles are {height}x{width} px, smaller than data.size {self.size}; "
                "lower data.size"
            )
        which = "every event" if split is None else f"split {split}"
        if self.captioned:
            self.notes = [
                f"kurosiwo {self.sensor}: {self.dataset.labelled_tiles} labelled tile(s) "
                f"({which}), their {len(self.items)} post-event (MS1) acquisitions with their "
                f"windows' flood masks (pre-event acquisitions and unlabelled tiles left out), "
                f"windows of {self.size} of {height} px"
            ]
        else:
            self.notes = [
                f"kurosiwo {self.sensor}: {self.dataset.labelled_tiles} labelled and "
                f"{self.dataset.unlabelled_tiles} unlabelled tile(s) ({which}), "
                f"{len(self.items)} acquisitions, windows of {self.size} of {height} px"
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
        if self.captioned:
            sample["flood_mask"] = self._mask_window(tile, row, col, (height, width))
        return sample

    def _mask_window(self, tile: int, row: int, col: int, shape: tuple[int, int]) -> torch.Tensor:
        """The flood mask of ``tile`` over the window at ``row``, ``col`` (a copy)."""
        mask = self.dataset.read_mask(tile)
        if tuple(mask.shape) != shape:
            raise DataLayoutError(
                f"Kuro Siwo tile {self.dataset.records[tile]['path']} has a flood mask of size "
                f"{tuple(mask.shape)} and {_LABELLED_SCENE} of size {shape}"
            )
        return mask[row : row + self.size, col : col + self.size].clone()


def open_kurosiwo(config: PretrainConfig, sensor: str) -> KuroSiwoReader:
    """The Kuro Siwo reader for ``config`` (Sentinel-1 GRD only)."""
    d = config.data
    assert d.root is not None
    return KuroSiwoReader(
        d.root, config.source_for(sensor).bands, d.split, d.size, captioned=d.kurosiwo_captioned
    )
