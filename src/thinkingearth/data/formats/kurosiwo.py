"""Kuro Siwo: multi-temporal Sentinel-1 GRD flood mapping, in its published on-disk layout.

This module holds the three things the toolkit needs to use Kuro Siwo:

* :data:`SPLITS`, the published event-based (activation id) train/val/test split;
* :func:`write_kurosiwo_tile`, which writes one labelled tile exactly as the published data lays it
  out (the synthetic world generator uses it, so do the tests);
* :class:`KuroSiwo`, a torchgeo-style :class:`torch.utils.data.Dataset` that reads that layout into
  Samples (see :mod:`thinkingearth.data.sample`), plus :func:`build_index`/:func:`write_index` for an
  optional JSON tile index.

The published gzip pickle indexes (``KuroV2_grid_dict*.gz``) are never opened: unpickling a file
runs whatever code it names. Tiles are found by walking the folders, or from a JSON index that
:func:`write_index` writes.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import affine
import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from torch.utils.data import Dataset

from thinkingearth.data.raster import write_geotiff
from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.fileio import atomic_dir, atomic_file

__all__ = [
    "INDEX_NAME",
    "SCENES",
    "SPLITS",
    "KuroSiwo",
    "KuroSiwoSAR",
    "build_index",
    "build_unlabelled_index",
    "write_index",
    "write_kurosiwo_tile",
]

#: Published event-based split: activation ids per split (``configs/train/data_config.json`` of
#: Orion-AI-Lab/KuroSiwo).
SPLITS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "train": (
            130, 470, 555, 118, 174, 324, 421, 554, 427, 518, 502, 498, 497, 496, 492, 147, 267,
            273, 275, 417, 567, 1111011, 1111004, 1111009, 1111010, 1111006, 1111005,
        ),
        "val": (514, 559, 279, 520, 437, 1111003, 1111008),
        "test": (321, 561, 445, 562, 411, 1111002, 277, 1111007, 205, 1111013),
    }
)  # fmt: skip

#: Acquisitions of a tile, oldest first: two pre-event ("slave") scenes, then the post-event
#: ("master") scene. This is the time order of :attr:`KuroSiwo` images.
SCENES: tuple[str, ...] = ("SL2", "SL1", "MS1")

#: Name of the optional JSON tile index in the dataset root.
INDEX_NAME = "kurosiwo_index.json"

_POLS: tuple[str, ...] = ("IVV", "IVH")  # file product names for the VV and VH bands
_BANDS: tuple[str, ...] = ("VV", "VH")
_SENSOR = "sentinel-1-grd"
_MASKS: tuple[str, ...] = ("MLU", "MNA")
_REQUIRED: tuple[str, ...] = tuple(f"{s}_{p}" for s in SCENES for p in _POLS) + tuple(
    f"MK0_{m}" for m in _MASKS
)
_DEM = "MK0_DEM"
_SAR_NODATA = 0.0
_MLU_NODATA = 3
_MNA_NODATA = 0
_DEM_NODATA = float("nan")
_INDEX_VERSION = 1
_TILE_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]*")
_RESERVED_INFO = frozenset({"actid", "aoiid", "grid_id", "sources", "datasets"})
_WEB_MERCATOR_RADIUS = 6378137.0


# --------------------------------------------------------------------------------------- writer


def _file_stem(product: str, actid: int, aoi: int, day: date) -> str:
    """Published file stem ``{PTYPE}{RANK}_{PNAME}_{actid}_{aoi:02d}_{YYYYMMDD}``."""
    return f"{product}_{actid}_{aoi:02d}_{day:%Y%m%d}"


def _parse_day(value: Any, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise UserInputError(f"{what} must be an ISO date YYYY-MM-DD, got {value!r}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in info.json")


def _apply(transform: affine.Affine, col: float, row: float) -> tuple[float, float]:
    """Map pixel (col, row) to CRS coordinates (explicit, so any affine version works)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * col + b * row + c, d * col + e * row + f


def _polygon_wkt(transform: affine.Affine, width: int, height: int) -> str:
    corners = [
        _apply(transform, c, r) for c, r in ((0, 0), (width, 0), (width, height), (0, height))
    ]
    corners.append(corners[0])
    return "POLYGON ((" + ", ".join(f"{x!r} {y!r}" for x, y in corners) + "))"


def _percent(mask: np.ndarray) -> float:
    return round(100.0 * float(mask.mean()), 4) if mask.size else 0.0


def write_kurosiwo_tile(
    root: str | Path,
    *,
    actid: int,
    aoi: int,
    tile: str,
    sar: Mapping[str, np.ndarray],
    mlu: np.ndarray,
    mna: np.ndarray,
    transform: affine.Affine,
    crs: str = "EPSG:3857",
    dates: Mapping[str, str],
    dem: np.ndarray | None = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write one labelled Kuro Siwo tile in the published layout.

    Writes ``root/data/<actid>/<aoi:02d>/<tile>/`` with ``SL2_IVV/IVH``, ``SL1_IVV/IVH``,
    ``MS1_IVV/IVH`` (float32 linear sigma0, nodata 0), ``MK0_MLU`` (uint8, nodata 3), ``MK0_MNA``
    (uint8, nodata 0), optional ``MK0_DEM`` (float32 metres, nodata NaN), each named
    ``{PRODUCT}_{actid}_{aoi:02d}_{YYYYMMDD}.tif`` (the ``MK0`` products carry the post-event date),
    and an ``info.json`` in the published schema (``grid_id``, ``actid``, ``aoiid``, ``flood_date``,
    ``geom``, ``revision``, ``version``, ``slavecov``, ``mastercov``, ``gvalid``, ``pcovered``,
    ``pwater``, ``pflood``, ``sources`` and ``datasets``), updated with ``info``.

    The tile is written into a hidden folder beside its final place and renamed into place only
    when complete, so an interrupted write never leaves a tile that :class:`KuroSiwo` would index.
    An existing tile of the same name is replaced.

    Args:
        root: dataset root (the folder that holds ``data/``).
        actid: activation (event) id.
        aoi: area-of-interest id, 1 or more (``00`` is the published unlabelled partition).
        tile: tile folder name; the published data use the 32-digit hex of the grid UUID.
        sar: ``"SL2"``, ``"SL1"``, ``"MS1"`` -> float32 ``[2, H, W]`` (VV, VH) linear sigma0,
            0 where there is no data.
        mlu: uint8 ``[H, W]`` labels: 0 no water, 1 permanent water, 2 flood, 3 invalid.
        mna: uint8 ``[H, W]``: 1 where the pixel is valid, else 0.
        transform: affine transform of the tile grid.
        crs: CRS of the tile grid (the published data use EPSG:3857).
        dates: ``"SL2"``, ``"SL1"``, ``"MS1"`` -> acquisition date ``YYYY-MM-DD``; must not
            decrease from SL2 to MS1.
        dem: optional float32 ``[H, W]`` elevation in metres (NaN where unknown).
        info: extra ``info.json`` fields; they override the computed ones (``flood_date``,
            ``pflood``, ...) but may not replace ``actid``, ``aoiid``, ``grid_id``, ``sources`` or
            ``datasets``.

    Returns:
        The tile folder.

    Raises:
        UserInputError: if an argument has the wrong shape, keys, values or type.
    """
    actid, aoi = int(actid), int(aoi)
    if actid < 0:
        raise UserInputError(f"Kuro Siwo actid must be non-negative, got {actid}")
    if aoi < 1:
        raise UserInputError(
            f"Kuro Siwo aoi must be 1 or more (00 is the unlabelled part), got {aoi}"
        )
    if not isinstance(tile, str) or not _TILE_NAME.fullmatch(tile):
        raise UserInputError(
            f"Kuro Siwo tile name must be letters, digits, '_' or '-', got {tile!r}"
        )
    if set(sar) != set(SCENES):
        raise UserInputError(
            f"sar must have exactly the keys {', '.join(SCENES)}, got {sorted(sar)}"
        )
    if set(dates) != set(SCENES):
        raise UserInputError(
            f"dates must have exactly the keys {', '.join(SCENES)}, got {sorted(dates)}"
        )
    mlu_arr = np.asarray(mlu)
    if mlu_arr.ndim != 2:
        raise UserInputError(f"mlu must be [H, W], got shape {mlu_arr.shape}")
    shape = mlu_arr.shape
    images: dict[str, np.ndarray] = {}
    for scene in SCENES:
        arr = np.asarray(sar[scene])
        if arr.shape != (2, *shape):
            raise UserInputError(
                f"sar[{scene!r}] must be [2, H, W] = {(2, *shape)} (VV, VH), got {arr.shape}"
            )
        images[scene] = arr.astype(np.float32, copy=False)
    if not np.isin(mlu_arr, (0, 1, 2, 3)).all():
        raise UserInputError("mlu values must be 0 (no water), 1 (permanent), 2 (flood) or 3")
    mna_arr = np.asarray(mna)
    if mna_arr.shape != shape:
        raise UserInputError(f"mna must have the shape of mlu {shape}, got {mna_arr.shape}")
    if not np.isin(mna_arr, (0, 1)).all():
        raise UserInputError("mna values must be 0 (invalid) or 1 (valid)")
    dem_arr = None
    if dem is not None:
        dem_arr = np.asarray(dem, dtype=np.float32)
        if dem_arr.shape != shape:
            raise UserInputError(f"dem must have the shape of mlu {shape}, got {dem_arr.shape}")
    days = {scene: _parse_day(dates[scene], f"dates[{scene!r}]") for scene in SCENES}
    if not days["SL2"] <= days["SL1"] <= days["MS1"]:
        raise UserInputError(
            "dates must be in time order SL2 <= SL1 <= MS1 (SL2 is the oldest pre-event scene), "
            f"got SL2={days['SL2']}, SL1={days['SL1']}, MS1={days['MS1']}"
        )
    extra = dict(info or {})
    reserved = sorted(_RESERVED_INFO.intersection(extra))
    if reserved:
        raise UserInputError(f"info may not replace the info.json fields {', '.join(reserved)}")
    if not isinstance(transform, affine.Affine):
        raise UserInputError(f"transform must be an affine.Affine, got {type(transform).__name__}")
    try:
        crs_text = CRS.from_user_input(crs).to_string()
    except Exception as err:  # rasterio raises CRSError, a ValueError subclass on some versions
        raise UserInputError(f"unknown CRS {crs!r}: {err}") from None

    master_day = days["MS1"]
    products: list[tuple[str, np.ndarray, float, date]] = []
    for scene in SCENES:
        for band, pol in enumerate(_POLS):
            products.append((f"{scene}_{pol}", images[scene][band], _SAR_NODATA, days[scene]))
    products.append(("MK0_MLU", mlu_arr.astype(np.uint8), _MLU_NODATA, master_day))
    products.append(("MK0_MNA", mna_arr.astype(np.uint8), _MNA_NODATA, master_day))
    if dem_arr is not None:
        products.append((_DEM, dem_arr, _DEM_NODATA, master_day))

    try:
        grid_id = str(uuid.UUID(hex=tile)) if len(tile) == 32 else tile
    except ValueError:
        grid_id = tile
    sources = {
        scene: {
            "source_date": days[scene].isoformat(),
            "s1_ids": [],
            "master": scene == "MS1",
            "crank": int(scene[-1]),
        }
        for scene in ("SL1", "SL2", "MS1")
    }
    datasets: dict[str, dict[str, Any]] = {}
    for product, array, nodata, day in products:
        stem = _file_stem(product, actid, aoi, day)
        datasets[stem] = {
            "name": stem,
            "ptype": product[:2],
            "pname": product[4:],
            "rank": int(product[2]),
            "master": product.startswith("MS"),
            "dtype": array.dtype.name,
            "nodata": None if math.isnan(nodata) else nodata,
            "source_date": day.isoformat(),
        }
    height, width = shape
    record: dict[str, Any] = {
        "grid_id": grid_id,
        "actid": actid,
        "aoiid": aoi,
        "flood_date": f"{master_day.isoformat()} 00:00:00",
        "geom": _polygon_wkt(transform, width, height),
        "revision": 1,
        "version": 1,
        "slavecov": 2,
        "mastercov": 1,
        "gvalid": True,
        "pcovered": _percent(mna_arr == 1),
        "pwater": _percent(mlu_arr == 1),
        "pflood": _percent(mlu_arr == 2),
        "sources": sources,
        "datasets": datasets,
    }
    record.update(extra)
    try:
        info_text = json.dumps(record, indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"info cannot be written as JSON: {err}") from None

    final = Path(root) / "data" / str(actid) / f"{aoi:02d}" / tile
    with atomic_dir(final, overwrite=True) as staging:
        for product, array, nodata, day in products:
            write_geotiff(
                staging / f"{_file_stem(product, actid, aoi, day)}.tif",
                array,
                transform=transform,
                crs=crs_text,
                nodata=nodata,
            )
        (staging / "info.json").write_text(info_text + "\n", encoding="utf-8")
    return final


# ---------------------------------------------------------------------------------------- index


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _date_from_stem(name: str) -> str | None:
    """The ``YYYYMMDD`` date at the end of a published file name, as ``YYYY-MM-DD``."""
    match = re.search(r"_(\d{8})\.tif$", name)
    if not match:
        return None
    digits = match.group(1)
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


def _index_tile(root: Path, folder: Path, actid: int, aoi: int) -> dict[str, Any]:
    info_path = folder / "info.json"
    if not info_path.is_file():
        raise DataLayoutError(f"Kuro Siwo tile {folder} is missing info.json")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataLayoutError(
            f"Kuro Siwo tile {folder} has an unreadable info.json: {err}"
        ) from None
    if not isinstance(info, dict):
        raise DataLayoutError(f"Kuro Siwo tile {folder} has an info.json that is not an object")
    files: dict[str, str] = {}
    for product in (*_REQUIRED, _DEM):
        matches = sorted(p.name for p in folder.glob(f"{product}_*.tif"))
        if not matches:
            if product == _DEM:
                continue
            raise DataLayoutError(f"Kuro Siwo tile {folder} is missing {product}_*.tif")
        if len(matches) > 1:
            raise DataLayoutError(
                f"Kuro Siwo tile {folder} has {len(matches)} files matching {product}_*.tif, "
                "expected one"
            )
        files[product] = matches[0]
    sources = info.get("sources") if isinstance(info.get("sources"), dict) else {}
    dates: dict[str, str | None] = {}
    for scene in SCENES:
        source = sources.get(scene)
        value = source.get("source_date") if isinstance(source, dict) else None
        dates[scene] = str(value) if value else _date_from_stem(files[f"{scene}_{_POLS[0]}"])
    return {
        "actid": actid,
        "aoi": aoi,
        "tile": folder.name,
        "path": folder.relative_to(root).as_posix(),
        "files": files,
        "dates": dates,
    }


def build_index(root: str | Path, *, events: Collection[int] | None = None) -> list[dict]:
    """Index the labelled tiles under ``root/data`` by walking ``data/<actid>/<aoi>/<tile>/``.

    Folders whose name starts with ``.`` (a writer's unfinished tile) and the unlabelled ``00``
    areas are skipped; other entries that are not ``<digits>/<digits>/`` folders are ignored.

    Args:
        root: dataset root (the folder that holds ``data/``).
        events: only index these activation ids (all when ``None``).

    Returns:
        One record per tile, sorted by (actid, aoi, tile): ``actid``, ``aoi``, ``tile``, ``path``
        (relative to ``root``), ``files`` (product -> file name, ``MK0_DEM`` when present) and
        ``dates`` (``SL2``/``SL1``/``MS1`` -> ISO date or ``None``).

    Raises:
        DataLayoutError: if ``root`` or ``root/data`` is missing, or a tile lacks a file.
    """
    root = _check_root(root)
    wanted = None if events is None else {int(e) for e in events}
    records: list[dict] = []
    event_dirs = [
        p
        for p in (root / "data").iterdir()
        if p.is_dir() and not _is_hidden(p) and p.name.isdigit()
    ]
    for event_dir in sorted(event_dirs, key=lambda p: int(p.name)):
        actid = int(event_dir.name)
        if wanted is not None and actid not in wanted:
            continue
        aoi_dirs = [
            p
            for p in event_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and int(p.name) != 0 and not _is_hidden(p)
        ]
        for aoi_dir in sorted(aoi_dirs, key=lambda p: int(p.name)):
            for folder in sorted(aoi_dir.iterdir(), key=lambda p: p.name):
                if folder.is_dir() and not _is_hidden(folder):
                    records.append(_index_tile(root, folder, actid, int(aoi_dir.name)))
    return records


def write_index(root: str | Path) -> Path:
    """Walk ``root/data`` and write the tile index ``root/kurosiwo_index.json`` (atomically).

    :class:`KuroSiwo` reads this index instead of walking the folders when it exists, so rewrite
    it after adding or removing tiles.

    Returns:
        The index file.
    """
    root = Path(root)
    records = build_index(root)
    path = root / INDEX_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(
            json.dumps({"version": _INDEX_VERSION, "tiles": records}, indent=1) + "\n",
            encoding="utf-8",
        )
    return path


def _read_index(root: Path, path: Path) -> list[dict]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataLayoutError(f"Kuro Siwo index {path} is unreadable: {err}") from None
    tiles = content.get("tiles") if isinstance(content, dict) else None
    if not isinstance(tiles, list):
        raise DataLayoutError(f"Kuro Siwo index {path} has no 'tiles' list; rebuild it")
    needed = {"actid", "aoi", "tile", "path", "files", "dates"}
    for record in tiles:
        if not isinstance(record, dict) or not needed <= record.keys():
            raise DataLayoutError(
                f"Kuro Siwo index {path} has a record without {', '.join(sorted(needed))}; "
                "rebuild it"
            )
        for product in _REQUIRED:
            if product not in record["files"]:
                raise DataLayoutError(
                    f"Kuro Siwo tile {root / record['path']} is missing {product}_*.tif "
                    f"(per index {path})"
                )
    return sorted(tiles, key=lambda r: (int(r["actid"]), int(r["aoi"]), str(r["tile"])))


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"Kuro Siwo root {root} does not exist or is not a folder")
    if not (root / "data").is_dir():
        raise DataLayoutError(
            f"Kuro Siwo root {root} has no data/ folder (expected {root / 'data'}/<actid>/<aoi>/<tile>/)"
        )
    return root


# --------------------------------------------------------------------------------------- reader


def _lonlat(crs: CRS | None, x: float, y: float) -> tuple[float, float]:
    if crs is None:
        return math.nan, math.nan
    epsg = crs.to_epsg()
    if epsg == 3857:
        lon = math.degrees(x / _WEB_MERCATOR_RADIUS)
        lat = math.degrees(2.0 * math.atan(math.exp(y / _WEB_MERCATOR_RADIUS)) - math.pi / 2.0)
        return lon, lat
    if epsg == 4326:
        return x, y
    from rasterio.warp import transform as warp_transform

    xs, ys = warp_transform(crs, "EPSG:4326", [x], [y])
    return float(xs[0]), float(ys[0])


class KuroSiwo(Dataset):
    """Kuro Siwo: a global multi-temporal Sentinel-1 dataset for rapid flood mapping.

    Kuro Siwo (Bountos et al., NeurIPS 2024 Datasets and Benchmarks) is a manually annotated flood
    dataset of Sentinel-1 GRD imagery over 43 flood events ("activations", mostly Copernicus EMS)
    worldwide. Each labelled tile has two pre-event acquisitions and one post-event acquisition.

    Dataset features:

    * 224 x 224 px tiles at 10 m in EPSG:3857 (pixel size in map units: Web Mercator metres, so
      the ground distance is ``gsd * cos(lat)``);
    * Sentinel-1 GRD VV and VH, float32 linear sigma0 (not dB), nodata 0;
    * three acquisitions per tile: ``SL2`` (oldest pre-event), ``SL1`` (pre-event), ``MS1``
      (post-event, the flood);
    * optional Copernicus DEM (``MK0_DEM``);
    * event-based train/val/test split of the activation ids (:data:`SPLITS`).

    Dataset format (``root`` is the folder that contains ``data/``)::

        root/data/<actid>/<aoi:02d>/<tile hex>/
            info.json                              grid_id, actid, aoiid, flood_date, geom,
                                                   pcovered, pwater, pflood,
                                                   sources: {SL2,SL1,MS1: {source_date, ...}},
                                                   datasets: {<file stem>: {...}}
            SL2_IVV_<actid>_<aoi>_<YYYYMMDD>.tif   and SL2_IVH_..., SL1_IVV/IVH_..., MS1_IVV/IVH_...
            MK0_MLU_<actid>_<aoi>_<YYYYMMDD>.tif   uint8 0 no water, 1 permanent water, 2 flood,
                                                   3 invalid (also the nodata)
            MK0_MNA_<actid>_<aoi>_<YYYYMMDD>.tif   uint8 1 valid
            MK0_DEM_<actid>_<aoi>_<YYYYMMDD>.tif   optional, float32 metres

    The unlabelled area ``00`` and folders whose name starts with ``.`` are skipped. Tiles are
    found by walking the folders (sorted, so the order is deterministic) or, when it exists, from
    the JSON index ``root/kurosiwo_index.json`` written by :func:`write_index`. The published
    gzip pickle indexes are never read.

    Each item is a Sample with ``image`` float32 ``[3, 2, H, W]`` (SL2, SL1, MS1 x VV, VH, linear
    sigma0 as stored; normalisation is a transform), ``mask`` int64 ``[H, W]`` (MLU with pixels
    where MNA != 1 or MLU is nodata set to :attr:`ignore_index`), ``bands``, ``sensor``,
    ``units`` (``"linear"``), ``time``
    (float64 ``[3]``, days since 1970-01-01 of SL2, SL1, MS1), ``lon``/``lat`` (tile centre, WGS84
    degrees), ``gsd`` (pixel size from the transform), ``crs``, ``transform``, ``actid``, ``aoi``,
    ``tile`` and, with ``return_dem``, ``dem`` float32 ``[1, H, W]``.

    If you use this dataset in your research, please cite:

    * https://proceedings.neurips.cc/paper_files/paper/2024/hash/43612b0662cb6a4986edf859fd6ebafe-Abstract-Datasets_and_Benchmarks_Track.html

    .. code-block:: bibtex

        @inproceedings{bountos2024kurosiwo,
          author    = {Bountos, Nikolaos Ioannis and Sdraka, Maria and Zavras, Angelos and
                       Karavias, Andreas and Karasante, Ilektra and Herekakis, Themistocles and
                       Thanasou, Angeliki and Michail, Dimitrios and Papoutsis, Ioannis},
          title     = {Kuro Siwo: 33 billion m$^2$ under the water. A global multi-temporal
                       satellite dataset for rapid flood mapping},
          booktitle = {Advances in Neural Information Processing Systems},
          volume    = {37},
          pages     = {38105--38121},
          year      = {2024},
        }
    """

    classes: tuple[str, ...] = ("no water", "permanent water", "flood")
    ignore_index: int = 3
    scenes: tuple[str, ...] = SCENES
    bands: tuple[str, ...] = _BANDS
    sensor: str = _SENSOR

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] | None = "train",
        events: Sequence[int] | None = None,
        exclude_events: Sequence[int] = (),
        return_dem: bool = False,
        transforms: Callable[[dict], dict] | None = None,
    ) -> None:
        """Index the tiles of the chosen events.

        Args:
            root: dataset root, the folder that contains ``data/``.
            split: ``"train"``, ``"val"`` or ``"test"`` (the published event split), or ``None``
                for every event on disk.
            events: explicit activation ids; overrides ``split``.
            exclude_events: activation ids to leave out (leave-events-out experiments).
            return_dem: also return ``dem`` (every tile must then have ``MK0_DEM``).
            transforms: function applied to each Sample.

        Raises:
            UserInputError: for an unknown split or an activation id that is not an integer.
            DataLayoutError: if the root, ``data/`` or a tile file is missing, or no tile belongs
                to the chosen events.
        """
        if split is not None and split not in SPLITS:
            raise UserInputError(
                f"unknown Kuro Siwo split {split!r}; choose one of {', '.join(SPLITS)} or None"
            )
        self.root = _check_root(root)
        self.split = split
        self.return_dem = bool(return_dem)
        self.transforms = transforms
        excluded = _as_ids(exclude_events, "exclude_events")
        if events is not None:
            chosen: set[int] | None = _as_ids(events, "events")
        elif split is not None:
            chosen = set(SPLITS[split])
        else:
            chosen = None
        if chosen is not None:
            chosen -= excluded

        index_path = self.root / INDEX_NAME
        if index_path.is_file():
            records = _read_index(self.root, index_path)
            if chosen is not None:
                records = [r for r in records if int(r["actid"]) in chosen]
        else:
            records = build_index(self.root, events=chosen)
        records = [r for r in records if int(r["actid"]) not in excluded]
        if not records:
            what = f"split {split!r}" if events is None and split is not None else "events"
            ids = "all" if chosen is None else ", ".join(str(e) for e in sorted(chosen)) or "none"
            raise DataLayoutError(
                f"Kuro Siwo root {self.root} has no tiles for {what} (activation ids {ids}) "
                f"under {self.root / 'data'}/<actid>/<aoi>/<tile>/"
            )
        if self.return_dem:
            for record in records:
                if _DEM not in record["files"]:
                    raise DataLayoutError(
                        f"Kuro Siwo tile {self.root / record['path']} is missing {_DEM}_*.tif "
                        "(needed for return_dem=True)"
                    )
        self.records: list[dict] = records
        self.events: tuple[int, ...] = tuple(sorted({int(r["actid"]) for r in records}))
        self._times = [
            torch.tensor([_days(r["dates"].get(s)) for s in SCENES], dtype=torch.float64)
            for r in records
        ]

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"tiles={len(self)}, events={len(self.events)})"
        )

    @staticmethod
    def _read(folder: Path, name: str) -> tuple[np.ndarray, CRS | None, affine.Affine, Any]:
        """Band 1 of ``folder/name`` with its CRS, transform and nodata value."""
        path = folder / name
        if not path.is_file():
            raise DataLayoutError(f"Kuro Siwo tile {folder} is missing {name}")
        with rasterio.open(path) as src:
            return src.read(1), src.crs, src.transform, src.nodata

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read one tile as a Sample (see the class docstring for its keys)."""
        record = self.records[index]
        folder = self.root / record["path"]
        files = record["files"]
        layers: list[np.ndarray] = []
        crs, transform = None, affine.identity
        for scene in SCENES:
            for pol in _POLS:
                array, crs, transform, _ = self._read(folder, files[f"{scene}_{pol}"])
                layers.append(array.astype(np.float32, copy=False))
        mlu, _, _, nodata = self._read(folder, files["MK0_MLU"])
        mna, _, _, _ = self._read(folder, files["MK0_MNA"])
        shapes = {a.shape for a in layers} | {mlu.shape, mna.shape}
        if len(shapes) != 1:
            raise DataLayoutError(
                f"Kuro Siwo tile {folder} has rasters of different sizes {sorted(shapes)}"
            )
        height, width = mlu.shape
        image = torch.from_numpy(np.stack(layers).reshape(len(SCENES), len(_POLS), height, width))

        mask = _label_mask(mlu, mna, nodata, self.ignore_index)

        centre_x, centre_y = _apply(transform, width / 2.0, height / 2.0)
        lon, lat = _lonlat(crs, centre_x, centre_y)
        sample: dict[str, Any] = {
            "image": image,
            "mask": torch.from_numpy(mask),
            "bands": self.bands,
            "sensor": self.sensor,
            "units": "linear",  # Kuro Siwo stores sigma0, not dB
            "time": self._times[index].clone(),
            "lon": lon,
            "lat": lat,
            "gsd": math.sqrt(abs(transform.a * transform.e - transform.b * transform.d)),
            "crs": crs.to_string() if crs is not None else "",
            "transform": tuple(float(v) for v in tuple(transform)[:6]),
            "actid": int(record["actid"]),
            "aoi": int(record["aoi"]),
            "tile": str(record["tile"]),
        }
        if self.return_dem:
            dem, _, _, _ = self._read(folder, files[_DEM])
            if dem.shape != (height, width):
                raise DataLayoutError(
                    f"Kuro Siwo tile {folder} has a DEM of size {dem.shape}, expected "
                    f"{(height, width)}"
                )
            sample["dem"] = torch.from_numpy(dem.astype(np.float32, copy=False)[None].copy())
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def _label_mask(mlu: np.ndarray, mna: np.ndarray, nodata: Any, ignore_index: int) -> np.ndarray:
    """MLU as int64 with pixels where MNA != 1, MLU is out of range or nodata set to ignore."""
    mask = mlu.astype(np.int64)
    invalid = (mna != 1) | (mask < 0) | (mask > ignore_index)
    if nodata is not None and not math.isnan(nodata):
        invalid |= mlu == nodata
    mask[invalid] = ignore_index
    return mask


def _as_ids(values: Iterable[Any], what: str) -> set[int]:
    if isinstance(values, str | bytes):
        raise UserInputError(f"{what} must be a sequence of activation ids, got {values!r}")
    ids: set[int] = set()
    for value in values:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise UserInputError(f"{what} must hold integer activation ids, got {value!r}")
        ids.add(int(value))
    return ids


def _days(value: str | None) -> float:
    if not value:
        return math.nan
    try:
        return to_days(datetime.fromisoformat(str(value)))
    except ValueError:
        return math.nan


# ------------------------------------------------------------------------- SAR for pretraining

#: Area of interest of the published unlabelled tiles.
UNLABELLED_AOI = 0


def _sar_files(folder: Path) -> dict[str, str]:
    """The ``{SL2,SL1,MS1}_{IVV,IVH}_*.tif`` files of a tile folder (one per product at most)."""
    files: dict[str, str] = {}
    for scene in SCENES:
        for pol in _POLS:
            product = f"{scene}_{pol}"
            matches = sorted(p.name for p in folder.glob(f"{product}_*.tif"))
            if len(matches) > 1:
                raise DataLayoutError(
                    f"Kuro Siwo tile {folder} has {len(matches)} files matching {product}_*.tif, "
                    "expected one"
                )
            if matches:
                files[product] = matches[0]
    return files


def _unlabelled_tile(root: Path, folder: Path, actid: int) -> dict[str, Any] | None:
    """The record of an unlabelled tile folder, or ``None`` when it holds no whole acquisition."""
    files = _sar_files(folder)
    scenes = tuple(s for s in SCENES if all(f"{s}_{p}" in files for p in _POLS))
    if not scenes:
        return None
    dates: dict[str, str | None] = {}
    info_path = folder / "info.json"
    sources: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataLayoutError(
                f"Kuro Siwo tile {folder} has an unreadable info.json: {err}"
            ) from None
        if isinstance(info, dict) and isinstance(info.get("sources"), dict):
            sources = info["sources"]
    for scene in scenes:
        source = sources.get(scene)
        value = source.get("source_date") if isinstance(source, dict) else None
        dates[scene] = str(value) if value else _date_from_stem(files[f"{scene}_{_POLS[0]}"])
    return {
        "actid": actid,
        "aoi": UNLABELLED_AOI,
        "tile": folder.name,
        "path": folder.relative_to(root).as_posix(),
        "files": files,
        "dates": dates,
        "scenes": list(scenes),
    }


def build_unlabelled_index(
    root: str | Path, *, events: Collection[int] | None = None
) -> list[dict]:
    """Index the unlabelled tiles, ``root/data/<actid>/00/<tile>/``.

    Kuro Siwo publishes, beside its labelled tiles, unlabelled Sentinel-1 tiles for
    self-supervised pretraining in the area of interest ``00`` of each activation: the same
    ``{SL2,SL1,MS1}_{IVV,IVH}_<actid>_00_<YYYYMMDD>.tif`` files as a labelled tile (float32
    linear sigma0, nodata 0), without the ``MK0`` masks; ``info.json`` may be there (its
    ``sources`` dates are used) or not (dates from the file names). This is the layout Kuro
    Siwo's own pretraining loader (``SSLDataset`` in Orion-AI-Lab/KuroSiwo) walks. A tile with
    at least one whole acquisition (VV and VH) is indexed with the acquisitions it has; folders
    whose name starts with ``.`` are skipped.

    Returns:
        One record per tile, sorted by (actid, tile): ``actid``, ``aoi`` (0), ``tile``, ``path``,
        ``files`` (product -> file name), ``dates`` and ``scenes`` (the acquisitions present).

    Raises:
        DataLayoutError: if ``root`` or ``root/data`` is missing.
    """
    root = _check_root(root)
    wanted = None if events is None else {int(e) for e in events}
    records: list[dict] = []
    event_dirs = [
        p
        for p in (root / "data").iterdir()
        if p.is_dir() and not _is_hidden(p) and p.name.isdigit()
    ]
    for event_dir in sorted(event_dirs, key=lambda p: int(p.name)):
        actid = int(event_dir.name)
        if wanted is not None and actid not in wanted:
            continue
        aoi_dir = event_dir / f"{UNLABELLED_AOI:02d}"
        if not aoi_dir.is_dir():
            continue
        for folder in sorted(aoi_dir.iterdir(), key=lambda p: p.name):
            if folder.is_dir() and not _is_hidden(folder):
                record = _unlabelled_tile(root, folder, actid)
                if record is not None:
                    records.append(record)
    return records


class KuroSiwoSAR(Dataset):
    """Kuro Siwo's Sentinel-1 acquisitions without labels, for pretraining.

    Every tile of the chosen events: the labelled tiles (as :class:`KuroSiwo` finds them, from
    ``kurosiwo_index.json`` when it exists) and the unlabelled tiles of the areas ``00``
    (:func:`build_unlabelled_index`). Item ``i`` is a tile: ``image`` float32 ``[T, 2, H, W]``
    of the acquisitions it has (oldest first; a labelled tile has SL2, SL1, MS1), linear sigma0
    as stored (0 = no data), ``time`` float64 ``[T]``, ``scenes``, ``bands`` (VV, VH),
    ``sensor``, ``units`` (``"linear"``), ``lon``/``lat`` of the tile centre, ``gsd``, ``crs``,
    ``transform``, ``actid``, ``aoi`` and ``tile``; no mask. :meth:`read_scene` reads one
    acquisition only; :meth:`read_mask` the flood mask of a labelled tile (its MS1's label).

    Args:
        root: dataset root, the folder that contains ``data/``.
        split: the published event split, or ``None`` for every event on disk.
        events: explicit activation ids; overrides ``split``.
        labelled: include the labelled tiles.
        unlabelled: include the unlabelled tiles.

    Raises:
        UserInputError: for an unknown split or nothing to include.
        DataLayoutError: if the root or a tile file is missing, or no tile is found.
    """

    bands: tuple[str, ...] = _BANDS
    sensor: str = _SENSOR

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] | None = "train",
        events: Sequence[int] | None = None,
        labelled: bool = True,
        unlabelled: bool = True,
    ) -> None:
        """Index the tiles of the chosen events."""
        if split is not None and split not in SPLITS:
            raise UserInputError(
                f"unknown Kuro Siwo split {split!r}; choose one of {', '.join(SPLITS)} or None"
            )
        if not (labelled or unlabelled):
            raise UserInputError("KuroSiwoSAR needs labelled or unlabelled tiles (or both)")
        self.root = _check_root(root)
        chosen: set[int] | None = None
        if events is not None:
            chosen = _as_ids(events, "events")
        elif split is not None:
            chosen = set(SPLITS[split])
        records: list[dict] = []
        if labelled:
            index_path = self.root / INDEX_NAME
            if index_path.is_file():
                found = _read_index(self.root, index_path)
                if chosen is not None:
                    found = [r for r in found if int(r["actid"]) in chosen]
            else:
                found = build_index(self.root, events=chosen)
            records += [{**r, "scenes": list(SCENES)} for r in found]
        self.labelled_tiles = len(records)
        if unlabelled:
            records += build_unlabelled_index(self.root, events=chosen)
        self.unlabelled_tiles = len(records) - self.labelled_tiles
        if not records:
            ids = "all" if chosen is None else ", ".join(str(e) for e in sorted(chosen)) or "none"
            raise DataLayoutError(
                f"Kuro Siwo root {self.root} has no tiles for activation ids {ids} under "
                f"{self.root / 'data'}/<actid>/<aoi>/<tile>/"
            )
        self.records: list[dict] = records

    def __len__(self) -> int:
        """Number of tiles."""
        return len(self.records)

    def scenes(self, index: int) -> tuple[str, ...]:
        """The acquisitions tile ``index`` has, oldest first."""
        return tuple(self.records[index]["scenes"])

    def read_scene(self, index: int, scene: str) -> dict[str, Any]:
        """One acquisition of tile ``index`` as a Sample: ``image`` float32 ``[2, H, W]``."""
        record = self.records[index]
        if scene not in record["scenes"]:
            raise UserInputError(
                f"Kuro Siwo tile {record['path']} has no {scene}; it has "
                f"{', '.join(record['scenes'])}"
            )
        folder = self.root / record["path"]
        layers = []
        crs, transform = None, affine.identity
        for pol in _POLS:
            array, crs, transform, _ = KuroSiwo._read(folder, record["files"][f"{scene}_{pol}"])
            layers.append(array.astype(np.float32, copy=False))
        if layers[0].shape != layers[1].shape:
            raise DataLayoutError(
                f"Kuro Siwo tile {folder} has {scene} rasters of different sizes "
                f"{layers[0].shape} and {layers[1].shape}"
            )
        height, width = layers[0].shape
        centre_x, centre_y = _apply(transform, width / 2.0, height / 2.0)
        lon, lat = _lonlat(crs, centre_x, centre_y)
        return {
            "image": torch.from_numpy(np.stack(layers)),
            "bands": self.bands,
            "sensor": self.sensor,
            "units": "linear",  # Kuro Siwo stores sigma0, not dB
            "time": _days(record["dates"].get(scene)),
            "lon": lon,
            "lat": lat,
            "gsd": math.sqrt(abs(transform.a * transform.e - transform.b * transform.d)),
            "crs": crs.to_string() if crs is not None else "",
            "transform": tuple(float(v) for v in tuple(transform)[:6]),
            "actid": int(record["actid"]),
            "aoi": int(record["aoi"]),
            "tile": str(record["tile"]),
            "scene": scene,
        }

    def labelled(self, index: int) -> bool:
        """Whether tile ``index`` is a labelled tile (it has the ``MK0`` flood mask)."""
        return index < self.labelled_tiles

    def read_mask(self, index: int) -> torch.Tensor:
        """The flood mask of labelled tile ``index``, as :class:`KuroSiwo` reads it.

        int64 ``[H, W]``: 0 no water, 1 permanent water, 2 flood, 3 (:attr:`KuroSiwo.ignore_index`)
        where MNA != 1 or MLU is nodata or out of range. It labels the post-event acquisition
        (MS1) on the grid of the tile's SAR.

        Raises:
            UserInputError: tile ``index`` is unlabelled (an area ``00`` tile has no mask).
            DataLayoutError: a mask file is missing or its size differs from the SAR's.
        """
        record = self.records[index]
        if not self.labelled(index):
            raise UserInputError(
                f"Kuro Siwo tile {record['path']} is unlabelled (area 00); it has no flood mask"
            )
        folder = self.root / record["path"]
        mlu, _, _, nodata = KuroSiwo._read(folder, record["files"]["MK0_MLU"])
        mna, _, _, _ = KuroSiwo._read(folder, record["files"]["MK0_MNA"])
        if mlu.shape != mna.shape:
            raise DataLayoutError(
                f"Kuro Siwo tile {folder} has MK0_MLU of size {mlu.shape} and MK0_MNA of size "
                f"{mna.shape}"
            )
        return torch.from_numpy(_label_mask(mlu, mna, nodata, KuroSiwo.ignore_index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Every acquisition of tile ``index``, stacked ``[T, 2, H, W]`` (see the class)."""
        parts = [self.read_scene(index, scene) for scene in self.scenes(index)]
        sample = dict(parts[0])
        sample.pop("scene")
        sample["image"] = torch.stack([p["image"] for p in parts])
        sample["time"] = torch.tensor([p["time"] for p in parts], dtype=torch.float64)
        sample["scenes"] = self.scenes(index)
        return sample
