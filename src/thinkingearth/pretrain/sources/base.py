"""What every real pretraining source shares: readers, seeded windows, pairs and no-data skips.

A source is a :class:`SensorReader` per sensor: it knows the items of its data set (a file, a
patch, a tile acquisition, a grid cell) and reads a window of ``size`` pixels of one item as a
Sample (see :mod:`thinkingearth.data.sample`), with ``NaN`` where there is no data and SAR in
linear sigma0 (``units: "linear"``, what the pretraining normalisation reads).

:class:`WindowSamples` turns a reader into the map-style dataset the grouped batch sampler
draws from: sample ``i`` is a pure function of ``(seed, i)`` (which item, which acquisition,
which window), so a resumed run reads exactly what the uninterrupted run would have read.
:class:`PairSamples` does the same for co-registered items of two sensors, which share one
draw, so their windows cover the same ground.

A window with no valid pixel (every pixel non-finite or the registry's no-data value in some
band) is skipped: the next draw of the same sample is tried, and after
:data:`TRIES_PER_ITEM` draws the neighbouring items. Every sample says in ``nodata_windows`` how
many windows it skipped; :class:`~thinkingearth.pretrain.data.PretrainDataModule` sums them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import affine
import numpy as np
import torch
from rasterio.crs import CRS
from torch import Tensor
from torch.utils.data import Dataset

from thinkingearth.data.scene import Grid
from thinkingearth.errors import DataLayoutError
from thinkingearth.sensors import get_sensor

__all__ = [
    "MAX_ATTEMPTS",
    "TRIES_PER_ITEM",
    "Draw",
    "PairSamples",
    "SensorReader",
    "WindowSamples",
    "cut_window",
    "db_to_linear",
    "draw",
    "grid_metadata",
    "has_valid_pixel",
    "place",
    "plan_items",
    "shifted_lonlat",
]

#: Draws of one item before a sample moves on to the neighbouring items.
TRIES_PER_ITEM = 10
#: Draws of one sample before it gives up (no valid pixel anywhere near it).
MAX_ATTEMPTS = 100
#: Mean Earth radius (IUGG), metres: shifts a patch centre to a window centre.
_EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Draw:
    """The random choices of one sample, each uniform in ``[0, 1)``.

    Attributes:
        time: Which acquisition of the item, by rank in time (pairs: the same rank).
        patch: Which local patch of an item that has several (Copernicus-Pretrain S1/S2).
        row: Where the window starts among the free rows.
        col: Where the window starts among the free columns.
    """

    time: float
    patch: float
    row: float
    col: float


def draw(seed: int, index: int, attempt: int = 0) -> Draw:
    """The draw of sample ``index`` (its ``attempt``-th, after skipped windows) of a run."""
    u = np.random.default_rng([int(seed), int(index), int(attempt), 0x5A3D]).random(4)
    return Draw(float(u[0]), float(u[1]), float(u[2]), float(u[3]))


def place(free: int, fraction: float) -> int:
    """An offset in ``0 .. free`` for a uniform ``fraction`` in ``[0, 1)``."""
    return min(int(free), int(fraction * (int(free) + 1)))


def pick(count: int, fraction: float) -> int:
    """One of ``count`` choices for a uniform ``fraction``."""
    return min(count - 1, int(fraction * count))


def plan_items(slots: int, n: int | None, seed: int) -> np.ndarray:
    """The slot each sample of a pass reads.

    ``n`` ``None`` reads every slot once; fewer draws a seeded subset (kept in slot order);
    more repeats the slots (each repeat is another sample, so another window).
    """
    if slots <= 0:
        return np.zeros(0, dtype=np.int64)
    if n is None or n == slots:
        return np.arange(slots, dtype=np.int64)
    if n < slots:
        chosen = np.random.default_rng([int(seed), slots, 0x9A7E]).permutation(slots)[:n]
        return np.sort(chosen).astype(np.int64)
    return np.arange(n, dtype=np.int64) % slots


def db_to_linear(values: np.ndarray) -> np.ndarray:
    """Backscatter in decibels as linear sigma0 (NaN stays NaN)."""
    return np.power(np.float32(10.0), values / np.float32(10.0), dtype=np.float32)


def has_valid_pixel(sample: dict[str, Any]) -> bool:
    """Whether some pixel is finite and not the registry's no-data value in every band."""
    image: Tensor = sample["image"]
    spec = get_sensor(sample["sensor"])
    valid = torch.isfinite(image).all(dim=0)
    for c, name in enumerate(sample["bands"]):
        nodata = spec.band(name).nodata
        if nodata is not None and not math.isnan(nodata):
            valid &= image[c] != nodata
    return bool(valid.any())


def cut_window(
    image: np.ndarray, size: int, row_fraction: float, col_fraction: float
) -> tuple[np.ndarray, int, int]:
    """The ``size`` x ``size`` window of ``image`` ``[C, H, W]`` at the drawn place.

    Returns:
        The window (a copy) and its top row and left column.
    """
    height, width = image.shape[-2:]
    row = place(height - size, row_fraction)
    col = place(width - size, col_fraction)
    return np.ascontiguousarray(image[..., row : row + size, col : col + size]), row, col


def grid_metadata(grid: Grid | None, row: int, col: int, size: int) -> dict[str, Any]:
    """``lon``/``lat`` of a window's centre, its ``gsd``, ``crs`` and ``transform``.

    Args:
        grid: The item's pixel grid (its CRS may be ``None``: then lon, lat and gsd are NaN).
        row: Top row of the window.
        col: Left column of the window.
        size: Window side in pixels.
    """
    if grid is None:
        return {"lon": math.nan, "lat": math.nan, "gsd": math.nan}
    transform = grid.transform @ affine.Affine.translation(col, row)
    out: dict[str, Any] = {
        "lon": math.nan,
        "lat": math.nan,
        "gsd": math.nan,
        "crs": grid.crs.to_string() if grid.crs is not None else "",
        "transform": tuple(float(v) for v in tuple(transform)[:6]),
    }
    if grid.crs is None:
        return out
    lon, lat = grid.lonlat(np.array([col + size / 2.0]), np.array([row + size / 2.0]))
    out["lon"], out["lat"] = float(lon[0]), float(lat[0])
    out["gsd"] = float(grid.gsd_metres(out["lat"] if math.isfinite(out["lat"]) else 0.0))
    return out


def shifted_lonlat(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    """A point ``east_m`` metres east and ``north_m`` north of ``(lon, lat)`` (spherical Earth)."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return math.nan, math.nan
    dlat = math.degrees(north_m / _EARTH_RADIUS_M)
    cos_lat = math.cos(math.radians(lat))
    dlon = math.degrees(east_m / (_EARTH_RADIUS_M * cos_lat)) if cos_lat > 1e-9 else 0.0
    return lon + dlon, lat + dlat


def grid_of(crs: str | CRS | None, transform: Sequence[float], width: int, height: int) -> Grid:
    """A :class:`~thinkingearth.data.scene.Grid` from a Sample's ``crs`` and ``transform``."""
    parsed = CRS.from_user_input(crs) if crs else None
    return Grid(parsed, affine.Affine(*tuple(transform)[:6]), int(width), int(height))  # type: ignore[arg-type]


class SensorReader(ABC):
    """One sensor's items of a real source.

    Attributes:
        source: The source's name (``folder``, ``bigearthnet``, ...).
        sensor: Canonical registry name of the sensor.
        bands: Registry band names of every sample, in channel order.
        size: Window side in pixels.
        notes: What the reader found and did, one line each (the run logs them).
    """

    source: str
    sensor: str
    bands: tuple[str, ...]
    size: int
    notes: list[str]

    @abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    def weight(self, item: int) -> int:
        """Samples per pass of ``item`` when ``n`` is not given (1; a file: its windows)."""
        return 1

    @abstractmethod
    def name(self, item: int) -> str:
        """What messages call ``item`` (a file or patch name)."""

    @abstractmethod
    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        """The window of ``item`` that ``choice`` picks, as a Sample (NaN = no data)."""


def _slots(reader: SensorReader, items: Sequence[int]) -> np.ndarray:
    """Cumulative slot counts of ``items`` (each weighs :meth:`SensorReader.weight`)."""
    return np.cumsum([max(1, reader.weight(i)) for i in items], dtype=np.int64)


class WindowSamples(Dataset[dict[str, Any]]):
    """One sensor's samples of a real source, seeded per ``(seed, index)``.

    Args:
        reader: The sensor's reader.
        seed: The run's seed.
        n: Samples per pass (``None``: every item's weight in windows, see
            :meth:`SensorReader.weight`).
    """

    def __init__(self, reader: SensorReader, seed: int, n: int | None = None) -> None:
        """Plan which item each sample reads."""
        self.reader = reader
        self.seed = int(seed)
        self.sensor = reader.sensor
        self.bands = reader.bands
        self._ends = _slots(reader, range(len(reader)))
        slots = int(self._ends[-1]) if len(self._ends) else 0
        self.plan = plan_items(slots, n, self.seed)

    def __len__(self) -> int:
        return len(self.plan)

    def item(self, index: int) -> int:
        """The item sample ``index`` reads first."""
        return int(np.searchsorted(self._ends, self.plan[index], side="right"))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        first = self.item(index)
        count = len(self.reader)
        for attempt in range(MAX_ATTEMPTS):
            item = (first + attempt // TRIES_PER_ITEM) % count
            sample = self.reader.read(item, draw(self.seed, index, attempt))
            if has_valid_pixel(sample):
                sample["nodata_windows"] = attempt
                return sample
        raise DataLayoutError(
            f"{self.reader.source} {self.sensor}: no valid pixel in {MAX_ATTEMPTS} windows of "
            f"{self.reader.size} px from {self.reader.name(first)} on; every pixel there is "
            "no data"
        )


class PairSamples(Dataset[dict[str, Any]]):
    """Co-registered samples of two sensors, ``{"a": Sample, "b": Sample}``, one draw for both.

    Args:
        a: The first sensor's reader.
        b: The second sensor's reader.
        pairs: ``(item of a, item of b)`` showing the same place.
        seed: The run's seed.
        n: Pairs per pass (``None``: every pair, weighted as ``a`` weighs its item).
    """

    def __init__(
        self,
        a: SensorReader,
        b: SensorReader,
        pairs: Sequence[tuple[int, int]],
        seed: int,
        n: int | None = None,
    ) -> None:
        """Plan which pair each sample reads."""
        self.a, self.b = a, b
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        self.seed = int(seed)
        self._ends = _slots(a, [i for i, _ in self.pairs])
        slots = int(self._ends[-1]) if len(self._ends) else 0
        self.plan = plan_items(slots, n, self.seed)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        first = int(np.searchsorted(self._ends, self.plan[index], side="right"))
        for attempt in range(MAX_ATTEMPTS):
            i, j = self.pairs[(first + attempt // TRIES_PER_ITEM) % len(self.pairs)]
            choice = draw(self.seed, index, attempt)
            a, b = self.a.read(i, choice), self.b.read(j, choice)
            if has_valid_pixel(a) and has_valid_pixel(b):
                a["nodata_windows"] = b["nodata_windows"] = attempt
                return {"a": a, "b": b}
        i, j = self.pairs[first]
        raise DataLayoutError(
            f"{self.a.source} pairs: no window of {self.a.size} px with valid pixels in both "
            f"{self.a.name(i)} and {self.b.name(j)} (and their neighbours) in {MAX_ATTEMPTS} draws"
        )

    def part(self, key: str) -> _PairPart:
        """One side of the pairs (``"a"`` or ``"b"``) as a dataset of its samples."""
        return _PairPart(self, key)


class _PairPart(Dataset[dict[str, Any]]):
    """One sensor's side of :class:`PairSamples` (for statistics of the sensor)."""

    def __init__(self, pairs: PairSamples, key: str) -> None:
        self.pairs, self.key = pairs, key
        reader = pairs.a if key == "a" else pairs.b
        self.sensor, self.bands = reader.sensor, reader.bands

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.pairs[index][self.key]
