"""Windowed reading of GeoTIFF/COG scenes: band names, alignment, nodata, units and tiling.

A scene is one or more *acquisitions* (e.g. pre-event and post-event Sentinel-1), each made of
one multi-band file or of several files holding some bands each (as STAC items serve them).
:class:`SceneStack` opens them, works out which file band is which registry band, puts every
acquisition on one reference grid (the first file of the reference acquisition: the post-event
image, or the only image) and reads any window of that grid as ``[T, C, h, w]`` float32 with a
validity mask. It never reads a whole scene at full resolution.

* **Band names** come from the file's band descriptions, or from names the caller gives (the
  CLI's ``--bands``, one per file band, in file order), and are matched by name against the
  sensor registry: the bands the model needs are read, the others are ignored (a 13-band L1C
  file feeds a 12-band model). A band the model's sensor lacks is resolved across the registry
  (:func:`~thinkingearth.sensors.resolve_band` among the sensors that have every band of the
  file); when the file's bands are those of another product (B10 of Sentinel-2 L1C given to an
  L2A model) a :class:`SensorMismatchWarning` says so. ``--bands`` that contradict the file's
  descriptions, names no sensor has, a file without descriptions (and no ``--bands``), or a
  file lacking a band the model needs are one-line :class:`SceneInputError` s.
* **Alignment**: a file on another grid (CRS, resolution or extent) is reprojected on read with a
  :class:`rasterio.vrt.WarpedVRT` (bilinear, nodata-aware); ground outside its footprint is no
  data. Files that do not overlap the reference grid are an error.
* **No data**: a pixel is invalid when any band of any acquisition is the file's nodata value,
  is not finite, lies outside a reprojected file's footprint, or (for SAR in linear units) is not
  positive. Invalid pixels are filled with 0 in the returned arrays; callers use the mask.
* **SAR units**: each file holds linear sigma0 or decibels. ``units="auto"`` decides per file
  from its values (:func:`detect_sar_units`: values below -1 cannot be linear sigma0; linear
  sigma0 is mostly below 1); stated units that the values contradict are a one-line
  :class:`SarUnitsError`, values that fit neither need the units stated. What was decided is in
  :attr:`SceneStack.notes` (one line per file); values are converted to what the model wants
  (``to_units``).
* **Reflectance scale**: :meth:`SceneStack.check_scale` warns (:class:`ReflectanceScaleWarning`)
  when Sentinel-2 values are about 10^4 off what the model's normalisation expects: reflectance
  0-1 where it expects stored digital numbers (reflectance x 10000, as the registry's SSL4EO-S12
  statistics are), or the reverse.
* **Tiling**: :func:`tile_starts` and :func:`iter_windows` lay tiles with overlap over a grid in
  row-major order; the last tile of a row or column is shifted back to end at the scene's edge,
  and a scene smaller than a tile gets one tile of its own size.
* **Where and when**: :meth:`Grid.lonlat` gives WGS84 longitude and latitude of grid positions,
  :meth:`Grid.gsd_metres` the ground sample distance in metres (a projected CRS: the pixel size
  in its linear units, converted to metres, as the dataset readers give it in training; a
  geographic CRS: the pixel's sides in degrees turned into metres on the WGS84 ellipsoid at the
  given latitude). :attr:`SceneStack.times` holds each acquisition's date: the one the caller
  gives (:attr:`Acquisition.time`, the CLI's ``--date`` flags), else the GeoTIFF tag
  ``TIFFTAG_DATETIME``, else the first ISO date (``YYYY-MM-DD`` or ``YYYYMMDD``) in a file name,
  else unknown (NaN).

Read errors of corrupt or truncated files become :class:`SceneInputError` naming the file.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

import affine
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from thinkingearth.errors import UnknownBandError, UserInputError
from thinkingearth.sensors import (
    SENSORS,
    AmbiguousBandError,
    ResolvedBand,
    Sensor,
    get_sensor,
    resolve_band,
    sensors_with,
)

__all__ = [
    "SAR_UNITS",
    "SAR_UNITS_OPTIONS",
    "Acquisition",
    "AcquisitionTime",
    "FileUnits",
    "Grid",
    "ReflectanceScaleWarning",
    "SarUnits",
    "SarUnitsError",
    "SarUnitsEvidence",
    "SarUnitsOption",
    "SceneInputError",
    "SceneStack",
    "SensorMismatchWarning",
    "SourceFile",
    "convert_sar",
    "date_in_name",
    "detect_sar_units",
    "iter_windows",
    "parse_date",
    "parse_sar_units",
    "tiff_datetime",
    "tile_starts",
]

SarUnits = Literal["linear", "db"]
SAR_UNITS: tuple[str, ...] = get_args(SarUnits)
#: What a caller may state: the units, or ``auto`` to decide per file from the values.
SarUnitsOption = Literal["auto", "linear", "db"]
SAR_UNITS_OPTIONS: tuple[str, ...] = get_args(SarUnitsOption)
_UNIT_WORDS = {"linear": "linear sigma0", "db": "decibels"}

#: Linear sigma0 below this (−100 dB) is treated as zero when converting to decibels.
_MIN_LINEAR = 1e-10


class SceneInputError(UserInputError):
    """An input scene the predictor cannot use: unreadable, misnamed bands, no overlap."""


class SarUnitsError(SceneInputError):
    """SAR values that contradict the stated units, or whose units cannot be told from them."""


class SensorMismatchWarning(UserWarning):
    """A file whose bands are another product's than the model's (L1C given to an L2A model)."""


class ReflectanceScaleWarning(UserWarning):
    """Optical values about 10^4 off the scale the model's normalisation expects."""


def parse_sar_units(value: str, what: str = "--sar-units") -> SarUnitsOption:
    """``auto``, ``linear`` or ``db``, case-insensitively (``dB``, ``DB``, ``Linear``).

    Raises:
        UserInputError: anything else, one line naming ``what`` and the choices.
    """
    text = str(value).strip().lower()
    if text not in SAR_UNITS_OPTIONS:
        raise UserInputError(
            f"unknown {what} {value!r}; expected one of: {', '.join(SAR_UNITS_OPTIONS)}"
        )
    return text  # type: ignore[return-value]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_error(path: Path, exc: BaseException) -> SceneInputError:
    detail = exc.__cause__ if exc.__cause__ is not None else exc
    return SceneInputError(
        f"cannot read {path}: corrupt or truncated raster ({_one_line(str(detail))[:200]})"
    )


# --- dates ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Years accepted from file names: other 8-digit runs (orbit numbers, ids) are not dates.
_NAME_YEARS = (1950, 2100)
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})(-?)(\d{2})\2(\d{2})(?!\d)")


def _days(when: datetime) -> float:
    """Days since 1970-01-01 UTC; a naive time is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH).total_seconds() / 86400.0


def parse_date(text: str, what: str = "--date") -> float:
    """A date (or date and time) in ISO 8601 as days since 1970-01-01 UTC.

    Accepts ``YYYY-MM-DD``, ``YYYYMMDD`` and ``YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM]`` (no zone: UTC).

    Raises:
        UserInputError: anything else, one line naming ``what``.
    """
    value = str(text).strip()
    try:
        if not re.fullmatch(r"\d{4}-?\d{2}-?\d{2}([T ].+)?", value):
            raise ValueError(value)
        return _days(datetime.fromisoformat(value))
    except ValueError:
        raise UserInputError(
            f"{what} {text!r} is not a date; expected YYYY-MM-DD (or YYYY-MM-DDTHH:MM:SS, UTC)"
        ) from None


def tiff_datetime(dataset: Any) -> float | None:
    """The GeoTIFF tag ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``, UTC) in days, if readable."""
    try:
        value = dataset.tags().get("TIFFTAG_DATETIME")
    except RasterioError:
        return None
    if not value:
        return None
    try:
        return _days(datetime.strptime(str(value).strip(), "%Y:%m:%d %H:%M:%S"))
    except ValueError:
        return None


def date_in_name(name: str) -> float | None:
    """The first calendar date ``YYYY-MM-DD`` or ``YYYYMMDD`` in a file name (00:00 UTC), in days.

    Sentinel product names start with the sensing date (``S1A_IW_GRDH_1SDV_20230115T054117_…``),
    so the first date is the acquisition's; later ones (processing dates) are ignored. Runs of
    digits that are not a valid date in 1950–2100 do not count.
    """
    for match in _NAME_DATE.finditer(name):
        year, month, day = int(match.group(1)), int(match.group(3)), int(match.group(4))
        if not _NAME_YEARS[0] <= year <= _NAME_YEARS[1]:
            continue
        try:
            return _days(datetime(year, month, day, tzinfo=UTC))
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class AcquisitionTime:
    """When an acquisition was taken, and where that came from.

    Attributes:
        days: days since 1970-01-01 UTC; NaN when unknown.
        source: where it was read, e.g. ``--post-date``, ``TIFFTAG_DATETIME of post.tif``,
            ``file name of S1A_…_20230115.tif``, or ``unknown``.
    """

    days: float
    source: str

    @property
    def known(self) -> bool:
        """Whether the date is known."""
        return not math.isnan(self.days)

    def iso(self) -> str:
        """The date as ``YYYY-MM-DD`` (``unknown`` when unknown)."""
        if not self.known:
            return "unknown"
        return datetime.fromtimestamp(self.days * 86400.0, tz=UTC).strftime("%Y-%m-%d")


# --- ground geometry ------------------------------------------------------------------------

#: WGS84 semi-major axis (m) and first eccentricity squared.
_WGS84_A = 6378137.0
_WGS84_E2 = (1.0 / 298.257223563) * (2.0 - 1.0 / 298.257223563)


def _metres_per_radian(lat_degrees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(east, north)`` metres per radian of longitude / latitude on WGS84 at a latitude.

    East: the prime-vertical radius times ``cos(lat)``; north: the meridional radius.
    """
    phi = np.radians(lat_degrees)
    w2 = 1.0 - _WGS84_E2 * np.sin(phi) ** 2
    prime_vertical = _WGS84_A / np.sqrt(w2)
    meridional = _WGS84_A * (1.0 - _WGS84_E2) / w2**1.5
    return prime_vertical * np.cos(phi), meridional


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform (pixel corner), width and height."""

    crs: CRS
    transform: affine.Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, int(dataset.width), int(dataset.height))

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS, whatever the signs of the pixel size."""
        t = self.transform
        xs = [t.c, t.c + t.a * self.width + t.b * self.height]
        ys = [t.f, t.f + t.d * self.width + t.e * self.height]
        return min(xs), min(ys), max(xs), max(ys)

    def lonlat(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 longitude and latitude (degrees) of pixel positions of this grid.

        Args:
            cols: column positions in pixels (fractional; 0 is the left edge of the first
                column, so ``col_off + width / 2`` is a window's centre).
            rows: row positions, likewise.

        Returns:
            float64 ``(lon, lat)`` arrays of the inputs' shape; NaN where the CRS cannot be
            transformed to WGS84.
        """
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        t = self.transform
        xs = t.a * cols + t.b * rows + t.c
        ys = t.d * cols + t.e * rows + t.f
        if xs.size == 0:
            return xs.copy(), ys.copy()
        try:
            lon, lat = warp_transform(self.crs, "EPSG:4326", xs.ravel(), ys.ravel())
        except (RasterioError, CRSError, ValueError):
            nan = np.full(xs.shape, math.nan)
            return nan, nan.copy()
        lon_a = np.asarray(lon, dtype=np.float64).reshape(xs.shape)
        lat_a = np.asarray(lat, dtype=np.float64).reshape(xs.shape)
        bad = ~(np.isfinite(lon_a) & np.isfinite(lat_a))
        lon_a[bad] = math.nan
        lat_a[bad] = math.nan
        return lon_a, lat_a

    def gsd_metres(self, lat: np.ndarray | float) -> np.ndarray:
        """Ground sample distance in metres: the square root of one pixel's area.

        * Projected CRS: the pixel's area from the transform in the CRS's linear unit, converted
          to metres (``US survey foot``, …). This is map units, as the dataset readers give
          ``gsd`` in training (a Web Mercator pixel of 10 map metres is 10 m here).
        * Geographic CRS: the pixel's sides (angular units, e.g. 0.0001°) become metres on the
          WGS84 ellipsoid at latitude ``lat``: east by the prime-vertical radius × cos(lat),
          north by the meridional radius (exact for a small pixel; other datums differ by less
          than 1e-4).

        The square root of the area gives one number for non-square or rotated pixels that keeps
        the ground area of a patch (the quantity the encoder's metadata encodes).

        Args:
            lat: WGS84 latitude(s) in degrees (only used for geographic CRSs).

        Returns:
            float64 array of ``lat``'s shape; NaN where the CRS's units are unknown.
        """
        lat = np.asarray(lat, dtype=np.float64)
        t = self.transform
        try:
            if self.crs.is_geographic:
                radians = float(self.crs.units_factor[1])  # radians per angular unit
                east, north = _metres_per_radian(lat)
                # column step (t.a, t.d) and row step (t.b, t.e) in (lon, lat) units
                ex, nx = t.a * radians * east, t.d * radians * north
                ey, ny = t.b * radians * east, t.e * radians * north
                area = np.abs(ex * ny - ey * nx)
            else:
                metres = float(self.crs.linear_units_factor[1])
                area = np.full(lat.shape, abs(t.a * t.e - t.b * t.d) * metres**2)
        except (CRSError, RasterioError, ValueError, TypeError, IndexError):
            return np.full(lat.shape, math.nan)
        return np.sqrt(area)

    def same_as(self, other: Grid) -> bool:
        """True when both grids have the same CRS and shape and their pixels line up.

        Pixels line up when the origins differ by less than 1 % of a pixel and the pixel sizes
        so little that the far corner moves by less than 1 % of a pixel; real files of one grid
        often differ in the last digits of their transforms.
        """
        if self.shape != other.shape or self.crs != other.crs:
            return False
        a, b = self.transform, other.transform
        size = max(abs(a.a), abs(a.b), abs(a.d), abs(a.e))
        if size == 0:
            return False
        scale_tol = 0.01 * size / max(self.width, self.height)
        for x, y, tol in zip(a[:6], b[:6], (scale_tol, scale_tol, 0.01 * size) * 2, strict=True):
            if abs(x - y) > tol:
                return False
        return True


@dataclass(frozen=True)
class SourceFile:
    """One raster file of an acquisition.

    Attributes:
        path: the GeoTIFF/COG (or any raster GDAL reads).
        bands: registry names of the file's bands, in file order; ``None`` takes them from the
            file's band descriptions.
    """

    path: Path
    bands: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Acquisition:
    """One acquisition of a scene (one date), from one file or several.

    Attributes:
        name: what messages call it, e.g. ``"--post"``.
        sources: the files; together they must hold every band the model needs.
        time: when it was taken, days since 1970-01-01 UTC, as the caller states it (the CLI's
            ``--date`` flags, :func:`parse_date`); ``None`` reads it from the files
            (:attr:`SceneStack.times`).
    """

    name: str
    sources: tuple[SourceFile, ...]
    time: float | None = None

    @classmethod
    def from_path(
        cls,
        name: str,
        path: str | Path,
        bands: Sequence[str] | None = None,
        time: float | None = None,
    ) -> Acquisition:
        """An acquisition from one file, with optional explicit band names and date (days)."""
        return cls(name, (SourceFile(Path(path), None if bands is None else tuple(bands)),), time)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The files of this acquisition."""
        return tuple(s.path for s in self.sources)


def convert_sar(values: np.ndarray, units: SarUnits, to_units: SarUnits) -> np.ndarray:
    """Convert SAR intensity between linear sigma0 and decibels (``10 log10``), in place if float.

    Linear values at or below zero become −100 dB; callers mask them as invalid.
    """
    if units == to_units:
        return values
    if to_units == "db":
        np.maximum(values, _MIN_LINEAR, out=values)
        np.log10(values, out=values)
        values *= 10.0
        return values
    values /= 10.0
    np.power(10.0, values, out=values)
    return values


#: Linear sigma0 is never below this; decibels mostly are (-1 dB is sigma0 0.79).
_DB_ONLY_BELOW = -1.0


@dataclass(frozen=True)
class SarUnitsEvidence:
    """What SAR values say about their units (:func:`detect_sar_units`).

    Attributes:
        units: ``"db"``, ``"linear"``, or ``None`` when the values fit neither clearly.
        count: finite values looked at.
        below: share of values below -1, which linear sigma0 never is (thermal-noise removal
            leaves small negatives at most).
        median: median value.
    """

    units: SarUnits | None
    count: int
    below: float
    median: float

    def summary(self) -> str:
        """The evidence in words, e.g. ``97% of values below -1, median -12.4``."""
        if self.count == 0:
            return "no valid values"
        return f"{self.below:.0%} of values below -1, median {self.median:.3g}"


def detect_sar_units(values: np.ndarray) -> SarUnitsEvidence:
    """Tell linear sigma0 from decibels by the values (non-finite ones are ignored).

    Decibels: more than 5 % of the values below -1 (linear sigma0 cannot be). Linear sigma0:
    fewer than 1 % below -1 and a median in ``[0, 1)`` (sigma0 of land and water is mostly
    0.001-0.5; a median at or above 1, i.e. 0 dB, is rare even in cities). Anything else (a
    median of 1 or more with nothing negative: amplitudes, digital numbers) is ``None``.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return SarUnitsEvidence(None, 0, math.nan, math.nan)
    below = float((flat < _DB_ONLY_BELOW).mean())
    median = float(np.median(flat))
    units: SarUnits | None = None
    if below > 0.05:
        units = "db"
    elif below < 0.01 and 0.0 <= median < 1.0:
        units = "linear"
    return SarUnitsEvidence(units, int(flat.size), below, median)


@dataclass(frozen=True)
class FileUnits:
    """The SAR units of one input file and how they were decided.

    Attributes:
        path: the file.
        what: the acquisition it belongs to, e.g. ``"--post"``.
        units: the units its values are read in.
        source: ``"given"`` (stated by the caller and not contradicted by the values),
            ``"detected"`` (``auto``, from the values) or ``"no data"`` (``auto`` on a file with no
            valid value to look at: nothing to convert).
        evidence: what the values said.
    """

    path: Path
    what: str
    units: SarUnits
    source: Literal["given", "detected", "no data"]
    evidence: SarUnitsEvidence

    def describe(self) -> str:
        """One log line, e.g. ``SAR units of --post post.tif: decibels, detected (…)``."""
        head = f"SAR units of {self.what} {self.path.name}: "
        if self.source == "no data":
            return head + "no valid values to tell them from"
        how = "detected from the values" if self.source == "detected" else "as given"
        return f"{head}{_UNIT_WORDS[self.units]}, {how} ({self.evidence.summary()})"


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px with at least ``overlap`` px overlap over ``length``.

    Tiles step by ``tile - overlap``; the last one is shifted back to end at ``length`` (so it
    may overlap its neighbour by more). A ``length`` shorter than ``tile`` gets one tile at 0.

    Raises:
        UserInputError: a non-positive tile or an overlap outside ``[0, tile)``.
    """
    if tile <= 0:
        raise UserInputError(f"tile size must be a positive number of pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise UserInputError(f"overlap must be in [0, tile={tile}) pixels, got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def iter_windows(shape: tuple[int, int], tile: int, overlap: int) -> Iterator[Window]:
    """Tile windows over a ``(height, width)`` grid in row-major order (see :func:`tile_starts`).

    Windows are ``min(tile, height)`` × ``min(tile, width)`` pixels.
    """
    height, width = shape
    th, tw = min(tile, height), min(tile, width)
    cols = tile_starts(width, tile, overlap)
    for row in tile_starts(height, tile, overlap):
        for col in cols:
            yield Window(col, row, tw, th)


def _file_size_ok(dataset: Any, path: Path) -> bool:
    """False when a GeoTIFF's last block of a band lies past the end of the file (truncated)."""
    if dataset.driver != "GTiff":
        return True
    try:
        size = os.path.getsize(path)
        rows = math.ceil(dataset.height / dataset.block_shapes[0][0])
        cols = math.ceil(dataset.width / dataset.block_shapes[0][1])
        for band in range(1, dataset.count + 1):
            for r, c in ((rows - 1, cols - 1), (0, 0)):
                offset = dataset.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=band)
                nbytes = dataset.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=band)
                if offset and nbytes and int(offset) + int(nbytes) > size:
                    return False
    except (RasterioError, OSError, ValueError):
        return True
    return True


def open_raster(path: Path, what: str) -> Any:
    """Open a raster read-only; a missing, unreadable or truncated file is a one-line error."""
    if not path.exists():
        raise SceneInputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise SceneInputError(f"{what} {path} is a folder; expected a GeoTIFF")
    try:
        dataset = rasterio.open(path)
    except RasterioError as exc:
        raise SceneInputError(
            f"cannot read {what} {path}: not a readable raster ({_one_line(str(exc))[:200]})"
        ) from None
    if dataset.crs is None or dataset.transform == affine.Affine.identity():
        dataset.close()
        raise SceneInputError(f"{what} {path} has no georeferencing (CRS and transform)")
    if not _file_size_ok(dataset, path):
        dataset.close()
        raise SceneInputError(f"cannot read {what} {path}: the file is truncated")
    return dataset


def _example_bands(sensor: Sensor, count: int) -> str:
    """Band names to suggest for a file of ``count`` bands and a model of ``sensor``."""
    if count != len(sensor.bands):
        # A product that has every band of the model's sensor, and as many as the file.
        for other in sensors_with(sensor.band_names):
            if len(other.bands) == count:
                return ",".join(other.band_names)
    names = list(sensor.band_names[:count])
    return ",".join(names) if len(names) == count else ",".join(names) + ",…"


def _meanings(name: str, sensor: Sensor) -> set[tuple[float | str | None, ...]]:
    """What a band name can mean physically: its band in ``sensor``, else in any sensor."""
    if sensor.has_band(name):
        return {sensor.band(name).identity}
    return {s.band(name).identity for s in sensors_with([name])}


@dataclass(frozen=True)
class FileBands:
    """Which band of a file is which, for a model of one sensor (:func:`match_bands`).

    Attributes:
        labels: each file band as the file (or ``--bands``) names it; ``""`` for no name.
        names: the model sensor's canonical name of each file band; ``None`` for a band the
            sensor lacks (ignored: another sensor's, no registry band, or unnamed).
        foreign: the file bands that are another sensor's, resolved where the name is
            unambiguous among :attr:`products` (``None`` where it is not).
        unknown: labels that are no band of any sensor (ignored).
        products: the sensors that have every band the file names, in registry order (empty
            when none has them all, e.g. a stack of Sentinel-1 and Sentinel-2).
        origin: ``"--bands"`` or ``"band description"``.
    """

    labels: tuple[str, ...]
    names: tuple[str | None, ...]
    foreign: tuple[tuple[str, ResolvedBand | None], ...]
    unknown: tuple[str, ...]
    products: tuple[str, ...]
    origin: str

    @property
    def ignored(self) -> tuple[str, ...]:
        """Labels of the file bands the model's sensor lacks (``""`` for unnamed ones)."""
        return tuple(
            label for label, name in zip(self.labels, self.names, strict=True) if name is None
        )


def match_bands(dataset: Any, source: SourceFile, sensor: Sensor, what: str) -> FileBands:
    """Name each band of a file from ``source.bands`` or the file's descriptions.

    Names the model's sensor has become its canonical names; other names are resolved across
    the registry (:func:`~thinkingearth.sensors.resolve_band`, among the sensors having every
    band the file names) and ignored, as are descriptions that are no band at all.

    Raises:
        SceneInputError: ``source.bands`` does not name every file band, or contradicts the
            file's descriptions; the file has no descriptions and no ``source.bands``; a band
            is named twice.
        UnknownBandError: a ``source.bands`` name that no sensor has (the message lists the
            model sensor's names).
    """
    path = source.path
    descriptions = tuple((d or "").strip() for d in dataset.descriptions)
    if source.bands is not None:
        given = tuple(str(b).strip() for b in source.bands)
        if len(given) != dataset.count:
            raise SceneInputError(
                f"{what} {path} has {dataset.count} band(s) but --bands names {len(given)} "
                f"({', '.join(given)}); name each band of the file in order"
            )
        for i, (name, described) in enumerate(zip(given, descriptions, strict=True), start=1):
            if not sensors_with([name]):
                raise UnknownBandError(
                    f"--bands {name!r} of {what} {path} is not a {sensor.name} band (nor any "
                    f"sensor's); expected names from: {', '.join(sensor.band_names)}"
                )
            mine, theirs = _meanings(name, sensor), _meanings(described, sensor)
            if described and mine and theirs and not mine & theirs:
                raise SceneInputError(
                    f"--bands names band {i} of {what} {path} {name!r} but the file describes "
                    f"it as {described!r}; drop --bands to read the bands by their "
                    f"descriptions ({', '.join(d or '?' for d in descriptions)})"
                )
        labels, origin = given, "--bands"
    else:
        if not any(descriptions):
            raise SceneInputError(
                f"{what} {path} has no band descriptions; pass --bands with its {dataset.count} "
                f"band name(s) in order (the model takes {sensor.name} bands), e.g. --bands "
                f"{_example_bands(sensor, dataset.count)}"
            )
        labels, origin = descriptions, "band description"
    # The products that have every band the file names (no-band labels left out).
    products = tuple(s.name for s in sensors_with([n for n in labels if n and sensors_with([n])]))
    names: list[str | None] = []
    foreign: list[tuple[str, ResolvedBand | None]] = []
    unknown: list[str] = []
    for label in labels:
        if label and sensor.has_band(label):
            canonical = sensor.band(label).name
            if canonical in names:
                raise SceneInputError(f"{what} {path} names band {canonical} twice ({origin})")
            names.append(canonical)
            continue
        names.append(None)
        if not label:
            continue
        try:
            foreign.append((label, resolve_band(label, products or None)))
        except AmbiguousBandError:
            foreign.append((label, None))
        except UnknownBandError:
            unknown.append(label)
    return FileBands(
        labels=tuple(labels),
        names=tuple(names),
        foreign=tuple(foreign),
        unknown=tuple(unknown),
        products=products,
        origin=origin,
    )


#: Fewer valid values than this in the middle of a file: look at the whole file, decimated.
_MIN_SAMPLE = 256


def _sample_values(reader: _Reader, side: int = 512) -> np.ndarray:
    """Valid values of a file's bands: a window in its middle, else the whole file decimated.

    Read from the file itself (not a reprojection), as stored; no-data and non-finite values are
    left out.
    """
    dataset = reader.base
    height, width = int(dataset.height), int(dataset.width)

    def valid_values(data: np.ndarray) -> np.ndarray:
        keep = np.isfinite(data)
        if reader.nodata is not None and not math.isnan(reader.nodata):
            keep &= data != np.float32(reader.nodata)
        return data[keep]

    h, w = min(side, height), min(side, width)
    window = Window((width - w) // 2, (height - h) // 2, w, h)
    try:
        values = valid_values(dataset.read(reader.indexes, window=window, out_dtype="float32"))
        if values.size < _MIN_SAMPLE and (h, w) != (height, width):
            scale = max(1.0, max(height, width) / side)
            shape = (len(reader.indexes), max(1, int(height / scale)), max(1, int(width / scale)))
            values = valid_values(
                dataset.read(
                    reader.indexes,
                    out_shape=shape,
                    resampling=Resampling.nearest,
                    out_dtype="float32",
                )
            )
    except RasterioError as exc:
        raise _read_error(reader.path, exc) from None
    return values


def _acquisition_time(acq: Acquisition, files: Sequence[tuple[SourceFile, Any]]) -> AcquisitionTime:
    """The date of an acquisition: given, else a file's TIFFTAG_DATETIME, else a file name."""
    if acq.time is not None and not math.isnan(acq.time):
        return AcquisitionTime(float(acq.time), "given")
    for source, dataset in files:
        days = tiff_datetime(dataset)
        if days is not None:
            return AcquisitionTime(days, f"TIFFTAG_DATETIME of {source.path.name}")
    for source, _ in files:
        days = date_in_name(source.path.name)
        if days is not None:
            return AcquisitionTime(days, f"file name {source.path.name}")
    return AcquisitionTime(math.nan, "unknown")


@dataclass
class _Reader:
    """One open file of an acquisition and where its bands go."""

    path: Path
    base: Any  # the opened file
    dataset: Any  # the file itself, or a WarpedVRT onto the reference grid
    indexes: list[int]  # 1-based file band of each channel read from this file
    channels: list[int]  # position of each of those in the model's band order
    nodata: float | None
    alpha: int | None  # 1-based alpha band of a WarpedVRT of a file without nodata
    units: SarUnits | None = None  # SAR units of the file's values (None: not SAR)


class SceneStack:
    """Acquisitions of one scene on one grid, read window by window as ``[T, C, h, w]``.

    Args:
        acquisitions: the acquisitions in time order (oldest first).
        sensor: registry name of the sensor of every file.
        bands: the bands the model needs, in the model's order (registry names or aliases).
        reference: index of the acquisition whose first file defines the output grid
            (default: the last one, i.e. the post-event image).
        units: SAR units of the files, case-insensitive: ``"auto"`` decides per file from its
            values (:func:`detect_sar_units`), ``"linear"`` or ``"db"`` states them (values
            that contradict it are an error). Ignored for non-SAR sensors.
        to_units: SAR units the arrays are returned in (default: the stated units; with
            ``"auto"``, linear).
        resampling: resampling for reprojected files.

    Attributes:
        grid: the reference grid (the output's).
        times: the date of each acquisition (:class:`AcquisitionTime`): given, else the first
            file with a ``TIFFTAG_DATETIME`` tag, else the first file name holding a date, else
            unknown.
        file_units: the SAR units of each SAR file read and how they were decided.
        file_bands: per acquisition, per file, which file band is which
            (:class:`FileBands`).
        notes: what a log should say once: each SAR file's units, and the bands ignored.

    Raises:
        SceneInputError: a missing, corrupt or truncated file, band names that cannot be worked
            out or that contradict the file's descriptions, a file lacking a needed band, or a
            file that does not overlap the reference.
        SarUnitsError: SAR values that contradict the stated units, or (``"auto"``) whose
            units the values do not tell.
        UnknownBandError: a band name no sensor has.

    Warns:
        SensorMismatchWarning: a file whose bands are another product's (L1C given to an L2A
            model).
    """

    def __init__(
        self,
        acquisitions: Sequence[Acquisition],
        *,
        sensor: str,
        bands: Sequence[str],
        reference: int = -1,
        units: SarUnitsOption | str = "auto",
        to_units: SarUnits | str | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        if not acquisitions:
            raise SceneInputError("a scene needs at least one input image")
        self.units: SarUnitsOption = parse_sar_units(units, "SAR units")
        if to_units is None:
            self.to_units: SarUnits = "linear" if self.units == "auto" else self.units
        else:
            target = parse_sar_units(to_units, "SAR units")
            if target == "auto":
                raise UserInputError("to_units must be 'linear' or 'db', not 'auto'")
            self.to_units = target
        self.sensor = get_sensor(sensor)
        self.bands = tuple(b.name for b in self.sensor.select(list(bands)))
        self.is_sar = self.sensor.kind == "sar" and all(
            b.component == "intensity" for b in self.sensor.select(self.bands)
        )
        self.acquisitions = tuple(acquisitions)
        self.file_units: tuple[FileUnits, ...] = ()
        self.file_bands: tuple[tuple[FileBands, ...], ...] = ()
        self.notes: tuple[str, ...] = ()
        self._readers: list[list[_Reader]] = []
        self._datasets: list[Any] = []
        try:
            self._open(reference, resampling)
        except BaseException:
            self.close()
            raise

    # --- opening ----------------------------------------------------------------------------

    def _open(self, reference: int, resampling: Resampling) -> None:
        opened: list[list[tuple[SourceFile, Any]]] = []
        for acq in self.acquisitions:
            if not acq.sources:
                raise SceneInputError(f"{acq.name} has no files")
            files: list[tuple[SourceFile, Any]] = []
            opened.append(files)
            for source in acq.sources:
                dataset = open_raster(source.path, acq.name)
                self._datasets.append(dataset)
                files.append((source, dataset))
        self.times = tuple(
            _acquisition_time(acq, files)
            for acq, files in zip(self.acquisitions, opened, strict=True)
        )
        ref_acq = self.acquisitions[reference]
        ref_source, ref_ds = opened[reference][0]
        self.grid = Grid.of(ref_ds)
        self.reference_path = ref_source.path
        self.reference_nodata = ref_ds.nodata
        notes: list[str] = []
        file_bands: list[tuple[FileBands, ...]] = []
        for acq, files in zip(self.acquisitions, opened, strict=True):
            readers: list[_Reader] = []
            found: dict[str, tuple[int, int]] = {}
            matches = tuple(match_bands(ds, source, self.sensor, acq.name) for source, ds in files)
            file_bands.append(matches)
            for k, match in enumerate(matches):
                for i, name in enumerate(match.names, start=1):
                    if name is not None:
                        found.setdefault(name, (k, i))
            missing = [b for b in self.bands if b not in found]
            if missing:
                raise SceneInputError(self._missing_message(acq, matches))
            for k, ((source, ds), match) in enumerate(zip(files, matches, strict=True)):
                pairs = [(found[b][1], c) for c, b in enumerate(self.bands) if found[b][0] == k]
                self._check_product(acq, source, match)
                if pairs and match.ignored:
                    ignored = ", ".join(label or "unnamed" for label in match.ignored)
                    notes.append(
                        f"{acq.name} {source.path.name}: reading {len(pairs)} of its "
                        f"{len(match.names)} bands by {match.origin} (ignoring {ignored})"
                    )
                if not pairs:
                    continue
                readers.append(self._reader(source, ds, acq, pairs, ref_acq, resampling))
            self._readers.append(readers)
        self.file_bands = tuple(file_bands)
        self.file_units = tuple(self._decide_units())
        self.notes = tuple(u.describe() for u in self.file_units) + tuple(notes)

    def _missing_message(self, acq: Acquisition, matches: Sequence[FileBands]) -> str:
        labels = [
            name or label or "unnamed"
            for match in matches
            for label, name in zip(match.labels, match.names, strict=True)
        ]
        where = ", ".join(str(p) for p in acq.paths)
        products = set.intersection(*(set(m.products) for m in matches)) if matches else set()
        # Say what the file holds when it is plainly another sensor's (S1 given to an S2 model).
        holds = needs = ""
        if products and self.sensor.name not in products:
            holds = ": " + " or ".join(p for p in SENSORS if p in products) + " bands"
            needs = f" {self.sensor.name} bands"
        message = (
            f"{acq.name} {where} has {len(labels)} band(s) ({', '.join(labels)}{holds}) but the "
            f"model needs {len(self.bands)}{needs}: {', '.join(self.bands)}"
        )
        unnamed = any(not label for match in matches for label in match.labels)
        if unnamed or any(match.unknown for match in matches):
            message += "; name the file's bands in order with --bands"
        elif len(labels) < len(self.bands) and not holds:
            # Products that keep each band in its own file (a Kuro Siwo tile's IVV and IVH, a
            # GRD's measurement TIFFs) are stacked into one file first; rasterio ships the tool.
            stacked = acq.name.lstrip("-") + ".tif"
            message += (
                f"; bands kept in separate files go into one first, e.g. rio stack "
                f"{' '.join(f'{b}.tif' for b in self.bands)} -o {stacked}, then --bands "
                f"{','.join(self.bands)}"
            )
        return message

    def _check_product(self, acq: Acquisition, source: SourceFile, match: FileBands) -> None:
        """Warn when a file's bands are another product's than the model's sensor."""
        if not match.foreign or not match.products:
            return
        extra = ", ".join(label for label, _ in match.foreign)
        products = " or ".join(match.products)
        warnings.warn(
            f"{acq.name} {source.path} holds {products} data (it has {extra}, which "
            f"{self.sensor.name} lacks) but the model was trained on {self.sensor.name}; its "
            f"{len(self.bands)} bands are taken by name: expect less accurate predictions",
            SensorMismatchWarning,
            stacklevel=4,
        )

    def _decide_units(self) -> list[FileUnits]:
        """Decide (``auto``) or check (stated) the SAR units of every SAR file read."""
        decided: list[FileUnits] = []
        if not self.is_sar:
            return decided
        for acq, readers in zip(self.acquisitions, self._readers, strict=True):
            for reader in readers:
                evidence = detect_sar_units(_sample_values(reader))
                where = f"{acq.name} {reader.path}"
                if self.units == "auto":
                    if evidence.units is None and evidence.count > 0:
                        raise SarUnitsError(
                            f"cannot tell whether {where} holds linear sigma0 or decibels from "
                            f"its values ({evidence.summary()}); pass --sar-units linear or db"
                        )
                    units = evidence.units or self.to_units
                    source: Literal["given", "detected", "no data"] = (
                        "detected" if evidence.units else "no data"
                    )
                else:
                    units, source = self.units, "given"
                    if evidence.units is not None and evidence.units != units:
                        raise SarUnitsError(
                            f"{where} holds values that look like {_UNIT_WORDS[evidence.units]} "
                            f"({evidence.summary()}), not {_UNIT_WORDS[units]} as stated; pass "
                            f"--sar-units {evidence.units} (or auto)"
                        )
                reader.units = units
                decided.append(FileUnits(reader.path, acq.name, units, source, evidence))
        return decided

    def _reader(
        self,
        source: SourceFile,
        ds: Any,
        acq: Acquisition,
        pairs: list[tuple[int, int]],
        ref_acq: Acquisition,
        resampling: Resampling,
    ) -> _Reader:
        grid = Grid.of(ds)
        nodata = ds.nodata
        indexes = [i for i, _ in pairs]
        channels = [c for _, c in pairs]
        if grid.same_as(self.grid):
            return _Reader(source.path, ds, ds, indexes, channels, nodata, None)
        try:
            left, bottom, right, top = transform_bounds(
                grid.crs, self.grid.crs, *ds.bounds, densify_pts=21
            )
        except (RasterioError, ValueError):
            left = bottom = right = top = math.nan
        r_left, r_bottom, r_right, r_top = self.grid.bounds
        overlap = min(right, r_right) > max(left, r_left) and min(top, r_top) > max(
            bottom, r_bottom
        )
        if not overlap:
            raise SceneInputError(
                f"{acq.name} {source.path} does not overlap {ref_acq.name} "
                f"{self.reference_path}; expected images of the same ground"
            )
        vrt = WarpedVRT(
            ds,
            crs=self.grid.crs,
            transform=self.grid.transform,
            width=self.grid.width,
            height=self.grid.height,
            resampling=resampling,
            src_nodata=nodata,
            nodata=nodata,
            add_alpha=nodata is None,
            warp_mem_limit=64,
        )
        self._datasets.append(vrt)
        alpha = ds.count + 1 if nodata is None else None
        return _Reader(source.path, ds, vrt, indexes, channels, nodata, alpha)

    # --- reading ------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Number of acquisitions ``T``."""
        return len(self.acquisitions)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every input file."""
        return tuple(p for acq in self.acquisitions for p in acq.paths)

    def read(
        self,
        window: Window,
        out_shape: tuple[int, int] | None = None,
        *,
        convert: bool = True,
        raw: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read one window of the reference grid.

        Args:
            window: the window (inside the grid).
            out_shape: ``(h, w)`` to read at reduced resolution (average resampling, nodata
                aware, overviews used where the file has them); default: the window's size.
            convert: convert SAR values to ``to_units`` (``False`` keeps the file's units).
            raw: the file's values as they are: no unit conversion, and non-positive linear
                SAR values count as valid.

        Returns:
            ``(x, valid)``: float32 ``[T, C, h, w]`` with invalid pixels set to 0, and a bool
            ``[h, w]`` mask of pixels valid in every band of every acquisition.

        Raises:
            SceneInputError: a file that cannot be read (corrupt or truncated).
        """
        h, w = out_shape if out_shape is not None else (int(window.height), int(window.width))
        x = np.empty((self.steps, len(self.bands), h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        resampling = Resampling.average if out_shape is not None else Resampling.nearest
        for t, readers in enumerate(self._readers):
            for reader in readers:
                indexes = reader.indexes + ([reader.alpha] if reader.alpha else [])
                try:
                    data = reader.dataset.read(
                        indexes,
                        window=window,
                        out_shape=(len(indexes), h, w),
                        resampling=resampling,
                        out_dtype="float32",
                    )
                except RasterioError as exc:
                    raise _read_error(reader.path, exc) from None
                if reader.alpha:
                    valid &= data[-1] > 0
                    data = data[:-1]
                valid &= np.isfinite(data).all(axis=0)
                if reader.nodata is not None and not math.isnan(reader.nodata):
                    valid &= (data != np.float32(reader.nodata)).all(axis=0)
                if reader.units is not None and not raw:
                    if reader.units == "linear":
                        valid &= (data > 0).all(axis=0)
                    if convert:
                        convert_sar(data, reader.units, self.to_units)
                x[t, reader.channels] = data
        x[:, :, ~valid] = 0.0
        return x, valid

    def read_decimated(
        self, max_side: int = 1024, *, convert: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The whole scene at reduced resolution (at most ``max_side`` px a side), strip by strip.

        Each output pixel averages a block of the full-resolution grid (nodata excluded), so
        memory stays bounded by one strip of the output whatever the scene's size.

        Returns:
            ``(x, valid)`` as :meth:`read`, at the reduced size.
        """
        height, width = self.grid.shape
        factor = max(1, math.ceil(max(height, width) / max_side))
        oh, ow = math.ceil(height / factor), math.ceil(width / factor)
        x = np.zeros((self.steps, len(self.bands), oh, ow), dtype=np.float32)
        valid = np.zeros((oh, ow), dtype=bool)
        rows_per_strip = max(1, 256 // factor)
        for r0 in range(0, oh, rows_per_strip):
            r1 = min(oh, r0 + rows_per_strip)
            top = r0 * factor
            bottom = min(height, r1 * factor)
            window = Window(0, top, width, bottom - top)
            part, ok = self.read(window, out_shape=(r1 - r0, ow), convert=convert)
            x[:, :, r0:r1] = part
            valid[r0:r1] = ok
        return x, valid

    def check_scale(
        self, expected: Sequence[float] | None = None, sample_side: int = 512
    ) -> str | None:
        """Warn when optical values are about 10^4 off the scale the model expects.

        Sentinel-2 is stored as digital numbers, reflectance x 10000 (the registry's ``scale``
        1e-4), and the registry's SSL4EO-S12 statistics are in those numbers. Reflectance 0-1
        given where they are expected, or digital numbers where a model's own statistics are
        reflectance, collapses every pixel to nearly one normalised value. Compares the median
        of each band in a ``sample_side`` window in the middle of the scene with what the model
        expects; warns (:class:`ReflectanceScaleWarning`) when the typical ratio is beyond 100
        either way (half of the 10^4 in orders of magnitude).

        Args:
            expected: per band (in :attr:`bands` order), the typical stored value the model's
                normalisation expects (its mean); ``None``: the registry's statistics.
            sample_side: side of the window looked at.

        Returns:
            The warning's text, or ``None`` when the values fit (or cannot be compared: bands
            without a digital-number scale or statistics, no valid pixels).
        """
        bands = self.sensor.select(self.bands)
        means = [b.mean for b in bands] if expected is None else list(expected)
        if len(means) != len(bands):
            raise UserInputError(f"expected {len(bands)} values, one per band; got {len(means)}")
        # Bands stored as digital numbers of a reflectance (S2: x 1e4), with an expected level.
        levels = {
            c: float(mean)
            for c, (band, mean) in enumerate(zip(bands, means, strict=True))
            if band.units == "reflectance"
            and band.offset == 0.0
            and 0.0 < band.scale < 1.0
            and mean is not None
            and mean > 0
        }
        if not levels:
            return None
        height, width = self.grid.shape
        h, w = min(sample_side, height), min(sample_side, width)
        x, valid = self.read(Window((width - w) // 2, (height - h) // 2, w, h), raw=True)
        if not valid.any():
            return None
        observed: list[float] = []
        wanted: list[float] = []
        for c, level in levels.items():
            median = float(np.median(x[:, c][:, valid]))
            if median > 0:
                observed.append(median)
                wanted.append(level)
        if not observed:
            return None
        ratio = float(np.median(np.log10(np.asarray(observed) / np.asarray(wanted))))
        factor = 1.0 / bands[next(iter(levels))].scale
        seen, want = float(np.median(observed)), float(np.median(wanted))
        name = f"{self.sensor.name} values of {self.reference_path.name}"
        message = None
        if ratio <= -2.0:
            message = (
                f"{name} look like reflectance 0-1 (median {seen:.3g}) but the model's "
                f"normalisation expects digital numbers, reflectance x {factor:g} (about "
                f"{want:.4g}); multiply the input by {factor:g}"
            )
        elif ratio >= 2.0:
            message = (
                f"{name} look like digital numbers, reflectance x {factor:g} (median "
                f"{seen:.4g}), but the model's normalisation expects reflectance 0-1 (about "
                f"{want:.3g}); divide the input by {factor:g}"
            )
        if message is not None:
            warnings.warn(message, ReflectanceScaleWarning, stacklevel=2)
        return message

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every file."""
        for dataset in reversed(self._datasets):
            dataset.close()
        self._datasets = []
        self._readers = []

    def __enter__(self) -> SceneStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
