"""Source ``folder``: any folder tree of GeoTIFF/COG files of one sensor ("my own region").

Each ``data.sensors`` entry names its ``root``; every ``.tif``/``.tiff`` file under it (hidden
files and folders left out) is one item. Samples are random windows of ``data.size`` pixels,
seeded per ``(seed, sample)``, read window by window (a file is never read whole).

* **Bands**: named by the file's band descriptions when they name bands of the sensor (other
  descriptions are bands the run ignores), else the sensor's full band list when the file has
  that many bands, else the entry's ``bands:`` (one name per file band, in file order). A file
  none of these name is a one-line error. The run reads the entry's ``bands:`` (each file must
  have them all), or else the bands every file has.
* **No data**: each band's nodata value and non-finite values become NaN; a window with no
  valid pixel is skipped (counted, see :mod:`~thinkingearth.pretrain.sources.base`).
* **Where and when**, per file (a folder may mix CRSs): ``lon``/``lat`` of the window centre
  and ``gsd`` from the file's grid (:class:`~thinkingearth.data.scene.Grid`), ``crs`` and the
  window's ``transform``; ``time`` from the ``TIFFTAG_DATETIME`` tag, else the first date in the
  file name, else in its folder names under ``root``, else NaN. A file without a CRS keeps NaN
  lon/lat/gsd.
* **SAR units**: SAR intensity is read in the units the entry states (``units: linear`` or
  ``db``), or, with ``auto``, the units its values show (:func:`thinkingearth.data.scene.detect_sar_units`);
  values that contradict stated units, or fit neither, are a one-line error. Samples carry
  linear sigma0.
* Files smaller than ``data.size`` and unreadable files are left out and reported; a folder
  with nothing usable is a one-line error.

Two ``folder`` entries pair for ``cross_sensor`` through files that share a grid (same CRS,
transform and size): the same window of both is read.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from thinkingearth.data.scene import Grid, date_in_name, detect_sar_units, tiff_datetime
from thinkingearth.errors import DataLayoutError
from thinkingearth.pretrain.config import PretrainConfig, SensorSource
from thinkingearth.pretrain.sources.base import (
    Draw,
    SensorReader,
    db_to_linear,
    grid_metadata,
    place,
)
from thinkingearth.sensors import Sensor, get_sensor

__all__ = ["RASTER_SUFFIXES", "FolderReader", "folder_pairs", "open_folder"]

#: File name endings of the rasters a folder source reads.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
#: Pixels per side of the decimated read that tells SAR units apart.
_UNITS_SAMPLE = 256


@dataclass(frozen=True)
class _File:
    path: Path
    name: str  # relative to root
    indexes: tuple[int, ...]  # 1-based file band of each run band
    nodata: tuple[float | None, ...]  # nodata value of each run band
    height: int
    width: int
    grid: Grid | None  # None: no CRS
    time: float
    units: Literal["linear", "db"] | None  # SAR units of the values; None: not SAR
    windows: int


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _file_bands(
    ds: Any, sensor: Sensor, given: tuple[str, ...] | None
) -> tuple[tuple[str | None, ...], str] | None:
    """Registry names of a file's bands (``None`` for bands the sensor lacks) and their origin."""
    descriptions = tuple((d or "").strip() for d in ds.descriptions)
    named = [sensor.band(d).name if d and sensor.has_band(d) else None for d in descriptions]
    if any(named):
        return tuple(named), "band descriptions"
    if ds.count == len(sensor.band_names):
        return tuple(sensor.band_names), f"the {sensor.name} band order"
    if given is not None and len(given) == ds.count:
        return tuple(sensor.band(b).name for b in given), "bands:"
    return None


def _date_of(path: Path, root: Path, ds: Any) -> float:
    days = tiff_datetime(ds)
    if days is None:
        days = date_in_name(path.name)
    if days is None:
        for part in reversed(path.relative_to(root).parts[:-1]):
            days = date_in_name(part)
            if days is not None:
                break
    return math.nan if days is None else float(days)


def _units(
    ds: Any, indexes: tuple[int, ...], stated: str, path: Path, key: str
) -> Literal["linear", "db"]:
    """The SAR units of a file: stated (and not contradicted) or detected from its values."""
    scale = max(1.0, max(ds.height, ds.width) / _UNITS_SAMPLE)
    shape = (len(indexes), max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
    try:
        values = ds.read(
            list(indexes), out_shape=shape, resampling=Resampling.nearest, out_dtype="float32"
        )
    except RasterioError as exc:
        raise DataLayoutError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    for band, nodata in zip(range(len(indexes)), ds.nodatavals, strict=False):
        if nodata is not None and not math.isnan(nodata):
            values[band][values[band] == np.float32(nodata)] = np.nan
    evidence = detect_sar_units(values)
    if stated != "auto":
        if evidence.units is not None and evidence.units != stated:
            raise DataLayoutError(
                f"{path}: {key}.units says {stated} but its values look like "
                f"{'decibels' if evidence.units == 'db' else 'linear sigma0'} "
                f"({evidence.summary()}); fix {key}.units or the file"
            )
        return stated  # type: ignore[return-value]
    if evidence.units is None:
        raise DataLayoutError(
            f"{path}: cannot tell linear sigma0 from decibels by its values "
            f"({evidence.summary()}); set {key}.units to linear or db"
        )
    return evidence.units


class FolderReader(SensorReader):
    """The GeoTIFF/COG files of one ``data.sensors`` entry (see the module docstring).

    Args:
        entry: The sensor entry (``root``, ``bands``, ``units``).
        size: Window side in pixels.
        key: What messages call the entry, e.g. ``data.sensors[0]``.
    """

    source = "folder"

    def __init__(self, entry: SensorSource, size: int, key: str = "data.sensors[0]") -> None:
        """Index the files under ``entry.root``: bands, grids, dates and SAR units."""
        spec = get_sensor(entry.sensor)
        self.sensor = spec.name
        self.size = int(size)
        self.notes = []
        if entry.root is None:
            raise DataLayoutError(f"{key}.root is missing; source folder needs one per sensor")
        root = Path(entry.root)
        self.root = root
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise DataLayoutError(f"{key}.root {root} {what}; expected a folder of GeoTIFFs")
        given = None if entry.bands is None else tuple(spec.band(b).name for b in entry.bands)
        candidates = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in RASTER_SUFFIXES and p.is_file() and not _is_hidden(p, root)
        )
        if not candidates:
            raise DataLayoutError(
                f"no GeoTIFF ({', '.join(RASTER_SUFFIXES)}) files under {key}.root {root}"
            )
        opened: list[tuple[Path, tuple[str | None, ...], str, Any]] = []
        unreadable: list[tuple[Path, str]] = []
        unnamed: list[tuple[Path, int, tuple[str, ...]]] = []
        for path in candidates:
            try:
                ds = rasterio.open(path)
            except RasterioError as exc:
                unreadable.append((path, " ".join(str(exc).split())[:160]))
                continue
            with ds:
                naming = _file_bands(ds, spec, given)
                if naming is None:
                    described = tuple(d for d in ds.descriptions if d)
                    unnamed.append((path, ds.count, described))
                    continue
                opened.append((path, naming[0], naming[1], self._facts(ds)))
        if not opened and unreadable and not unnamed:
            path, why = unreadable[0]
            raise DataLayoutError(
                f"no readable raster under {key}.root {root}: {len(unreadable)} file(s), none "
                f"readable (e.g. {path.name}: {why})"
            )
        if unnamed:
            path, count, described = unnamed[0]
            more = f" (and {len(unnamed) - 1} more file(s) like it)" if len(unnamed) > 1 else ""
            if given is not None:
                fix = f"{key}.bands names {len(given)}"
            else:
                fix = f"set {key}.bands to its {count} band names in file order"
            what = (
                f"band descriptions ({', '.join(described)}) that name no {spec.name} band"
                if described
                else "no band descriptions"
            )
            raise DataLayoutError(
                f"{path} has {count} band(s) with {what}, and {spec.name} has "
                f"{len(spec.band_names)}: {fix}{more}"
            )
        if unreadable:
            self.notes.append(
                f"folder {self.sensor}: left out {len(unreadable)} unreadable file(s), e.g. "
                f"{unreadable[0][0].name} ({unreadable[0][1]})"
            )
        self.bands = self._run_bands(opened, given, key)
        self.files = self._files(opened, entry, key)

    @staticmethod
    def _facts(ds: Any) -> dict[str, Any]:
        """What indexing needs from an open file, kept after it is closed."""
        grid = Grid.of(ds) if ds.crs is not None else None
        return {"grid": grid, "nodata": ds.nodatavals, "shape": (ds.height, ds.width)}

    def _run_bands(
        self,
        opened: list[tuple[Path, tuple[str | None, ...], str, Any]],
        given: tuple[str, ...] | None,
        key: str,
    ) -> tuple[str, ...]:
        spec = get_sensor(self.sensor)
        if given is not None:
            for path, names, origin, _ in opened:
                missing = [b for b in given if b not in names]
                if missing:
                    raise DataLayoutError(
                        f"{path} has no band {', '.join(missing)} (its bands by {origin}: "
                        f"{', '.join(n or '?' for n in names)}); {key}.bands asks for them"
                    )
            return given
        common = set(spec.band_names)
        for _, names, _, _ in opened:
            common &= {n for n in names if n}
        bands = tuple(b for b in spec.band_names if b in common)
        if not bands:
            raise DataLayoutError(
                f"the files under {key}.root have no {spec.name} band in common; set "
                f"{key}.bands or split them into entries of one product"
            )
        widest = max(len([n for n in names if n]) for _, names, _, _ in opened)
        if len(bands) < widest:
            self.notes.append(
                f"folder {self.sensor}: reading the {len(bands)} band(s) every file has "
                f"({', '.join(bands)})"
            )
        return bands

    def _files(
        self,
        opened: list[tuple[Path, tuple[str | None, ...], str, Any]],
        entry: SensorSource,
        key: str,
    ) -> list[_File]:
        spec = get_sensor(self.sensor)
        sar = all(spec.band(b).is_sar and spec.band(b).component == "intensity" for b in self.bands)
        files: list[_File] = []
        small: list[tuple[Path, tuple[int, int]]] = []
        no_crs = 0
        crss: Counter[str] = Counter()
        for path, names, _, facts in opened:
            height, width = facts["shape"]
            if height < self.size or width < self.size:
                small.append((path, (height, width)))
                continue
            indexes = tuple(names.index(b) + 1 for b in self.bands)
            nodata = tuple(facts["nodata"][i - 1] for i in indexes)
            with rasterio.open(path) as ds:
                time = _date_of(path, self.root, ds)
                units = _units(ds, indexes, entry.units, path, key) if sar else None
            grid = facts["grid"]
            if grid is None:
                no_crs += 1
            else:
                crss[grid.crs.to_string()] += 1
            files.append(
                _File(
                    path=path,
                    name=path.relative_to(self.root).as_posix(),
                    indexes=indexes,
                    nodata=nodata,
                    height=height,
                    width=width,
                    grid=grid,
                    time=time,
                    units=units,
                    windows=max(1, (height // self.size) * (width // self.size)),
                )
            )
        if not files:
            path, (h, w) = max(small, key=lambda f: f[1][0] * f[1][1])
            raise DataLayoutError(
                f"every raster under {key}.root {self.root} is smaller than data.size "
                f"{self.size} px (the largest, {path.name}, is {h}x{w}); lower data.size"
            )
        if small:
            path, (h, w) = small[0]
            self.notes.append(
                f"folder {self.sensor}: left out {len(small)} file(s) smaller than data.size "
                f"{self.size} px, e.g. {path.name} ({h}x{w})"
            )
        undated = sum(1 for f in files if math.isnan(f.time))
        line = (
            f"folder {self.sensor}: {len(files)} file(s) under {self.root}, bands "
            f"{', '.join(self.bands)}, {sum(f.windows for f in files)} windows of {self.size} px"
        )
        if len(crss) > 1:
            line += f", {len(crss)} CRSs ({', '.join(sorted(crss))}; metadata per file)"
        if no_crs:
            line += f", {no_crs} without a CRS (lon, lat and gsd unknown)"
        if undated:
            line += f", {undated} without a date"
        if sar:
            line += ", SAR " + ", ".join(
                f"{u}: {c}" for u, c in Counter(f.units for f in files).items()
            )
        self.notes.append(line)
        return files

    def __len__(self) -> int:
        return len(self.files)

    def weight(self, item: int) -> int:
        """The windows of ``data.size`` that tile the file without overlap."""
        return self.files[item].windows

    def name(self, item: int) -> str:
        return str(self.files[item].path)

    def read(self, item: int, choice: Draw) -> dict[str, Any]:
        """The drawn window of file ``item``: no data as NaN, SAR as linear sigma0."""
        f = self.files[item]
        row = place(f.height - self.size, choice.row)
        col = place(f.width - self.size, choice.col)
        window = Window(col, row, self.size, self.size)
        try:
            with rasterio.open(f.path) as ds:
                data = ds.read(list(f.indexes), window=window, out_dtype="float32")
                pixel_transform = tuple(float(v) for v in tuple(ds.window_transform(window))[:6])
        except RasterioError as exc:
            raise DataLayoutError(
                f"cannot read {f.path}: {' '.join(str(exc).split())[:200]}"
            ) from None
        for c, nodata in enumerate(f.nodata):
            if nodata is not None and not math.isnan(nodata):
                data[c][data[c] == np.float32(nodata)] = np.nan
        sample: dict[str, Any] = {
            "image": torch.from_numpy(data),
            "bands": self.bands,
            "sensor": self.sensor,
            "time": f.time,
            "name": f.name,
        }
        if f.units is not None:
            if f.units == "db":
                sample["image"] = torch.from_numpy(db_to_linear(data))
            sample["units"] = "linear"
        if f.grid is not None:
            sample.update(grid_metadata(f.grid, row, col, self.size))
        else:  # a pixel grid without a CRS: where on Earth is unknown
            sample.update(
                {
                    "lon": math.nan,
                    "lat": math.nan,
                    "gsd": math.nan,
                    "crs": "",
                    "transform": pixel_transform,
                }
            )
        return sample


def open_folder(config: PretrainConfig, sensor: str) -> FolderReader:
    """The reader of ``sensor``'s ``data.sensors`` entry."""
    canonical = get_sensor(sensor).name
    for i, entry in enumerate(config.data.sensors):
        if get_sensor(entry.sensor).name == canonical:
            return FolderReader(entry, config.data.size, f"data.sensors[{i}]")
    raise DataLayoutError(f"source folder has no data.sensors entry for {canonical}")


def folder_pairs(a: FolderReader, b: FolderReader) -> list[tuple[int, int]]:
    """Files of ``a`` and ``b`` that share a grid (same CRS, transform and size).

    Raises:
        DataLayoutError: No file of ``a`` shares its grid with a file of ``b``.
    """
    by_shape: dict[tuple[int, int, str], list[int]] = {}
    for j, f in enumerate(b.files):
        if f.grid is not None:
            by_shape.setdefault((f.height, f.width, f.grid.crs.to_string()), []).append(j)
    pairs: list[tuple[int, int]] = []
    for i, f in enumerate(a.files):
        if f.grid is None:
            continue
        for j in by_shape.get((f.height, f.width, f.grid.crs.to_string()), []):
            other = b.files[j].grid
            if other is not None and f.grid.same_as(other):
                pairs.append((i, j))
                break
    if not pairs:
        raise DataLayoutError(
            f"no file under {a.root} shares its grid (CRS, transform and size) with a file under "
            f"{b.root}; cross_sensor pairs from source folder need co-registered files"
        )
    left = len(a.files) - len(pairs)
    if left:
        a.notes.append(
            f"folder pairs: {len(pairs)} {a.sensor}+{b.sensor} file pair(s) share a grid; "
            f"{left} {a.sensor} file(s) without a partner left out"
        )
    else:
        a.notes.append(
            f"folder pairs: {len(pairs)} {a.sensor}+{b.sensor} file pair(s) share a grid"
        )
    return pairs
