"""Windowed reading of GeoTIFF/COG scenes: band names, alignment, nodata, units and tiling.

A scene is one or more *acquisitions* (e.g. pre-event and post-event Sentinel-1), each made of
one multi-band file or of several files holding some bands each (as STAC items serve them).
:class:`SceneStack` opens them, works out which file band is which registry band, puts every
acquisition on one reference grid (the first file of the reference acquisition: the post-event
image, or the only image) and reads any window of that grid as ``[T, C, h, w]`` float32 with a
validity mask. It never reads a whole scene at full resolution.

* **Band names** come from the file's band descriptions, or from names the caller gives (the
  CLI's ``--bands``), and are checked against the sensor registry: an unknown name, a file
  without descriptions, or a file lacking a band the model needs is a one-line
  :class:`SceneInputError`.
* **Alignment**: a file on another grid (CRS, resolution or extent) is reprojected on read with a
  :class:`rasterio.vrt.WarpedVRT` (bilinear, nodata-aware); ground outside its footprint is no
  data. Files that do not overlap the reference grid are an error.
* **No data**: a pixel is invalid when any band of any acquisition is the file's nodata value,
  is not finite, lies outside a reprojected file's footprint, or (for SAR in linear units) is not
  positive. Invalid pixels are filled with 0 in the returned arrays; callers use the mask.
* **SAR units**: files hold linear sigma0 or decibels (``units``); values are converted to what
  the model wants (``to_units``). :meth:`SceneStack.check_units` warns with
  :class:`SarUnitsWarning` when the values look like the other unit.
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
from thinkingearth.sensors import Sensor, get_sensor

__all__ = [
    "Acquisition",
    "AcquisitionTime",
    "Grid",
    "SarUnits",
    "SarUnitsWarning",
    "SceneInputError",
    "SceneStack",
    "SourceFile",
    "convert_sar",
    "date_in_name",
    "iter_windows",
    "parse_date",
    "tiff_datetime",
    "tile_starts",
]

SarUnits = Literal["linear", "db"]
SAR_UNITS: tuple[str, ...] = get_args(SarUnits)

#: Linear sigma0 below this (−100 dB) is treated as zero when converting to decibels.
_MIN_LINEAR = 1e-10


class SceneInputError(UserInputError):
    """An input scene the predictor cannot use: unreadable, misnamed bands, no overlap."""


class SarUnitsWarning(UserWarning):
    """SAR values that look like decibels where linear sigma0 was declared, or the reverse."""


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
    names = list(sensor.band_names[:count])
    return ",".join(names) if names else "…"


def band_names_of(dataset: Any, source: SourceFile, sensor: Sensor, what: str) -> tuple[str, ...]:
    """Registry names of a file's bands, from ``source.bands`` or the file's descriptions.

    Raises:
        SceneInputError: the names do not match the band count, or the file has no descriptions.
        UnknownBandError: a name the sensor does not have (the message lists the valid ones).
    """
    path = source.path
    if source.bands is not None:
        given = source.bands
        if len(given) != dataset.count:
            raise SceneInputError(
                f"{what} {path} has {dataset.count} band(s) but --bands names {len(given)} "
                f"({', '.join(given)}); name each band of the file in order"
            )
        names: Sequence[str] = given
        origin = "--bands"
    else:
        descriptions = dataset.descriptions
        if any(not d for d in descriptions):
            raise SceneInputError(
                f"{what} {path} has no band descriptions; pass --bands with its {dataset.count} "
                f"{sensor.name} band name(s) in order, e.g. --bands "
                f"{_example_bands(sensor, dataset.count)}"
            )
        names = descriptions
        origin = "band description"
    resolved: list[str] = []
    for name in names:
        if not sensor.has_band(name):
            raise UnknownBandError(
                f"{origin} {name!r} of {what} {path} is not a {sensor.name} band; expected "
                f"names from: {', '.join(sensor.band_names)}"
            )
        canonical = sensor.band(name).name
        if canonical in resolved:
            raise SceneInputError(f"{what} {path} names band {canonical} twice ({origin})")
        resolved.append(canonical)
    return tuple(resolved)


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


class SceneStack:
    """Acquisitions of one scene on one grid, read window by window as ``[T, C, h, w]``.

    Args:
        acquisitions: the acquisitions in time order (oldest first).
        sensor: registry name of the sensor of every file.
        bands: the bands the model needs, in the model's order (registry names or aliases).
        reference: index of the acquisition whose first file defines the output grid
            (default: the last one, i.e. the post-event image).
        units: SAR units of the files (ignored for non-SAR sensors).
        to_units: SAR units the arrays are returned in (default: ``units``).
        resampling: resampling for reprojected files.

    Attributes:
        grid: the reference grid (the output's).
        times: the date of each acquisition (:class:`AcquisitionTime`): given, else the first
            file with a ``TIFFTAG_DATETIME`` tag, else the first file name holding a date, else
            unknown.

    Raises:
        SceneInputError: a missing, corrupt or truncated file, band names that cannot be worked
            out, a file lacking a needed band, or a file that does not overlap the reference.
        UnknownBandError: a band name the sensor does not have.
    """

    def __init__(
        self,
        acquisitions: Sequence[Acquisition],
        *,
        sensor: str,
        bands: Sequence[str],
        reference: int = -1,
        units: SarUnits = "linear",
        to_units: SarUnits | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> None:
        if not acquisitions:
            raise SceneInputError("a scene needs at least one input image")
        for value in (units, to_units):
            if value is not None and value not in SAR_UNITS:
                raise UserInputError(
                    f"unknown SAR units {value!r}; expected one of: {', '.join(SAR_UNITS)}"
                )
        self.sensor = get_sensor(sensor)
        self.bands = tuple(b.name for b in self.sensor.select(list(bands)))
        self.is_sar = self.sensor.kind == "sar" and all(
            b.component == "intensity" for b in self.sensor.select(self.bands)
        )
        self.units: SarUnits = units
        self.to_units: SarUnits = units if to_units is None else to_units
        self.acquisitions = tuple(acquisitions)
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
        for acq, files in zip(self.acquisitions, opened, strict=True):
            readers: list[_Reader] = []
            found: dict[str, tuple[int, int]] = {}
            for k, (source, ds) in enumerate(files):
                names = band_names_of(ds, source, self.sensor, acq.name)
                for i, name in enumerate(names, start=1):
                    found.setdefault(name, (k, i))
            missing = [b for b in self.bands if b not in found]
            if missing:
                have = sorted(found, key=self.sensor.band_names.index)
                where = ", ".join(str(p) for p in acq.paths)
                raise SceneInputError(
                    f"{acq.name} {where} has {len(have)} band(s) ({', '.join(have)}) but the "
                    f"model needs {len(self.bands)}: {', '.join(self.bands)}"
                )
            for k, (source, ds) in enumerate(files):
                pairs = [(found[b][1], c) for c, b in enumerate(self.bands) if found[b][0] == k]
                if not pairs:
                    continue
                readers.append(self._reader(source, ds, acq, pairs, ref_acq, resampling))
            self._readers.append(readers)

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
                if self.is_sar and self.units == "linear" and not raw:
                    valid &= (data > 0).all(axis=0)
                x[t, reader.channels] = data
        if self.is_sar and convert and not raw:
            convert_sar(x, self.units, self.to_units)
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

    def check_units(self, sample_side: int = 512) -> str | None:
        """Warn (:class:`SarUnitsWarning`) when SAR values look like the other unit.

        Looks at a ``sample_side`` window in the middle of the scene, in the files' own units:
        linear sigma0 is positive and mostly below 1; decibels are mostly negative.

        Returns:
            The warning's text, or ``None`` when the values fit the declared units.
        """
        if not self.is_sar:
            return None
        height, width = self.grid.shape
        h, w = min(sample_side, height), min(sample_side, width)
        window = Window((width - w) // 2, (height - h) // 2, w, h)
        x, valid = self.read(window, raw=True)
        values = x[:, :, valid]
        if values.size == 0:
            return None
        negative = float((values < 0).mean())
        median = float(np.median(values))
        message = None
        if self.units == "linear" and negative > 0.05:
            message = (
                f"{negative:.0%} of SAR values in {self.reference_path.name} are negative "
                f"(median {median:.3g}): they look like decibels; pass --sar-units db if so"
            )
        elif self.units == "db" and negative < 0.01 and median < 1.0:
            message = (
                f"SAR values in {self.reference_path.name} are positive with median "
                f"{median:.3g}: they look like linear sigma0; pass --sar-units linear if so"
            )
        if message is not None:
            warnings.warn(message, SarUnitsWarning, stacklevel=2)
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
