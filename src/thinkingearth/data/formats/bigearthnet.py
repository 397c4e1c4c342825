"""BigEarthNet (v1 and v2/reBEN): class nomenclatures, a v1 patch writer and a torch reader.

Layout facts (read from the real archives):

* **v1 S2** (``BigEarthNet-v1.0/``): one folder per patch, ``<patch>/<patch>_<BAND>.tif`` for the
  12 L2A bands ``B01 … B12`` without ``B10`` (single-band uint16 GeoTIFFs in UTM at native
  resolution: 120×120 px for the 10 m bands, 60×60 for 20 m, 20×20 for 60 m) and
  ``<patch>_labels_metadata.json`` with the keys ``labels`` (43-class CORINE names),
  ``coordinates`` (``ulx``, ``uly``, ``lrx``, ``lry``), ``projection`` (WKT), ``tile_source``
  (the L1C product) and ``acquisition_date`` (``"YYYY-MM-DD HH:MM:SS"``).
* **v1 S1** (``BigEarthNet-S1-v1.0/``): the same folder layout with ``VV`` and ``VH`` (float32,
  backscatter in dB, 120×120 px) and a JSON whose keys differ: ``labels``, ``coordinates``
  (``ulx``, ``uly``, ``lrx`` and — a quirk of the archive — ``lly`` instead of ``lry``),
  ``projection``, ``corresponding_s2_patch``, ``scene_source`` and ``acquisition_time``
  (``"YYYY-MM-DDTHH:MM:SS"``).
* **v2 / reBEN**: ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<BAND>.tif`` where ``<tile>`` is
  the patch id without its last two ``_`` fields, ``BigEarthNet-S1/<product>/<s1_name>/…`` where
  ``<product>`` is the S1 name without its last three fields, and one ``metadata.parquet`` with
  the columns ``patch_id``, ``labels`` (19-class names), ``split`` (``train``/``validation``/
  ``test``), ``country``, ``s1_name``, ``s2v1_name``, ``contains_seasonal_snow`` and
  ``contains_cloud_or_shadow``. Reading it needs ``pyarrow``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import affine
import numpy as np
import rasterio
import rasterio.warp
import torch
import torch.nn.functional as F
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from torch import Tensor
from torch.utils.data import Dataset

from thinkingearth.data.raster import write_geotiff
from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.fileio import atomic_dir

__all__ = [
    "CLASSES_19",
    "CLASSES_43",
    "CLASS_43_TO_19",
    "S1_BANDS",
    "S2_BANDS",
    "SENSOR_NAMES",
    "BigEarthNet",
    "labels_to_multi_hot",
    "write_bigearthnet_v1_patch",
]

#: The 43 CORINE Land Cover level-3 classes of BigEarthNet v1, exactly as in the labels JSON,
#: in the order of the official ``label_indices.json`` (CLC code order).
CLASSES_43: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

#: The 19-class nomenclature of Sumbul et al. (2021), in its official order; v2 labels use it.
CLASSES_19: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

# 19-class index -> the 43-class names it merges; the 11 classes absent here map to nothing.
_MERGES: tuple[tuple[str, ...], ...] = (
    ("Continuous urban fabric", "Discontinuous urban fabric"),
    ("Industrial or commercial units",),
    ("Non-irrigated arable land", "Permanently irrigated land", "Rice fields"),
    (
        "Vineyards",
        "Fruit trees and berry plantations",
        "Olive groves",
        "Annual crops associated with permanent crops",
    ),
    ("Pastures",),
    ("Complex cultivation patterns",),
    ("Land principally occupied by agriculture, with significant areas of natural vegetation",),
    ("Agro-forestry areas",),
    ("Broad-leaved forest",),
    ("Coniferous forest",),
    ("Mixed forest",),
    ("Natural grassland", "Sparsely vegetated areas"),
    ("Moors and heathland", "Sclerophyllous vegetation"),
    ("Transitional woodland/shrub",),
    ("Beaches, dunes, sands",),
    ("Inland marshes", "Peatbogs"),
    ("Salt marshes", "Salines"),
    ("Water courses", "Water bodies"),
    ("Coastal lagoons", "Estuaries", "Sea and ocean"),
)

#: 43-class name -> 19-class name, or ``None`` for the 11 classes the 19-class nomenclature drops
#: (road/rail, port areas, airports, mineral extraction, dump and construction sites, green urban
#: areas, sport and leisure, bare rock, burnt areas, intertidal flats).
CLASS_43_TO_19: dict[str, str | None] = {
    name: next((CLASSES_19[i] for i, group in enumerate(_MERGES) if name in group), None)
    for name in CLASSES_43
}

#: Sentinel-2 L2A bands of BigEarthNet (no B10), in archive order.
S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
)
#: Sentinel-1 GRD polarisations of BigEarthNet-S1.
S1_BANDS: tuple[str, ...] = ("VV", "VH")

#: Reader ``sensor`` argument -> sensor registry name.
SENSOR_NAMES: dict[str, str] = {"s2": "sentinel-2-l2a", "s1": "sentinel-1-grd"}

# Native pixel size (m) of each band in the archive.
_BAND_RES: dict[str, int] = {
    **dict.fromkeys(("B02", "B03", "B04", "B08"), 10),
    **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12"), 20),
    **dict.fromkeys(("B01", "B09"), 60),
    **dict.fromkeys(S1_BANDS, 10),
}
_GRID_RES = 10.0
_SENSOR_BANDS = {"s2": S2_BANDS, "s1": S1_BANDS}
_REFERENCE_BAND = {"s2": "B02", "s1": "VV"}
# The archives' folder names, and the short ones of a root holding both sensors (S2/, S1/).
_V1_DIRS = {
    "s2": ("BigEarthNet-v1.0", "BigEarthNet-S2-v1.0", "S2"),
    "s1": ("BigEarthNet-S1-v1.0", "S1"),
}
_V2_DIRS = {"s2": "BigEarthNet-S2", "s1": "BigEarthNet-S1"}
# Real archive names; used only to skip the other sensor's patches in a mixed folder.
_NAME_RE = {"s2": re.compile(r"^S2[AB]_MSIL2A_"), "s1": re.compile(r"^S1[AB]_")}
_NAME_TIME_RE = re.compile(r"_(\d{8})T(\d{4,6})(?:_|$)")
_LABELS_SUFFIX = "_labels_metadata.json"
_SNOW_CLOUD_CSVS = ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv")
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_CLASS_INDEX = {
    43: {name: i for i, name in enumerate(CLASSES_43)},
    19: {name: i for i, name in enumerate(CLASSES_19)},
}


def labels_to_multi_hot(labels: Iterable[str], num_classes: Literal[19, 43] = 19) -> Tensor:
    """Encode 43-class CORINE names as an int64 multi-hot vector of 19 or 43 classes.

    Names of the 11 classes the 19-class nomenclature drops set no bit, so a patch with only
    those labels gets an all-zero 19-class vector.

    Raises:
        UserInputError: for a name that is not one of the 43 classes, or a bad ``num_classes``.
    """
    if num_classes not in (19, 43):
        raise UserInputError(f"num_classes must be 19 or 43, got {num_classes!r}")
    out = torch.zeros(num_classes, dtype=torch.int64)
    for name in labels:
        if name not in CLASS_43_TO_19:
            raise UserInputError(
                f"unknown BigEarthNet label {name!r}: not one of the 43 CORINE classes"
            )
        target = name if num_classes == 43 else CLASS_43_TO_19[name]
        if target is not None:
            out[_CLASS_INDEX[num_classes][target]] = 1
    return out


# --------------------------------------------------------------------------------------- writer


def _scaled(transform: affine.Affine, factor: float) -> affine.Affine:
    """``transform`` with pixels ``factor`` times larger (same origin)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return affine.Affine(a * factor, b * factor, c, d * factor, e * factor, f)


def _apply(transform: affine.Affine, col: float, row: float) -> tuple[float, float]:
    """Map pixel coordinates (col, row) to CRS coordinates."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * col + b * row + c, d * col + e * row + f


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def write_bigearthnet_v1_patch(
    root: str | Path,
    name: str,
    *,
    bands: Mapping[str, np.ndarray],
    labels: Sequence[str],
    transform: affine.Affine,
    crs: str,
    acquisition_date: str,
    extra_metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one patch in the BigEarthNet v1 layout, atomically.

    Writes ``<root>/<name>/<name>_<BAND>.tif`` (one single-band, uncompressed GeoTIFF per band,
    as in the archive) and ``<name>_labels_metadata.json`` in the real v1 schema: for S2 the keys
    ``labels``, ``coordinates`` (``ulx``/``uly``/``lrx``/``lry``), ``projection``, ``tile_source``
    and ``acquisition_date``; for S1 ``labels``, ``coordinates`` (``ulx``/``uly``/``lrx``/``lly``,
    the archive's spelling), ``projection``, ``corresponding_s2_patch``, ``scene_source`` and
    ``acquisition_time`` (ISO ``T`` form). ``tile_source``, ``scene_source`` and
    ``corresponding_s2_patch`` are empty strings unless given in ``extra_metadata``. The patch is
    written into a hidden temporary folder beside it and renamed into place.

    Args:
        root: folder that holds the patch folders.
        name: patch name (folder and file prefix).
        bands: either all 12 S2 bands ``B01 … B12`` (no ``B10``) as integer DN (stored uint16) at
            native resolution — 10 m bands ``H×W``, 20 m ``H/2×W/2``, 60 m ``H/6×W/6`` — or the
            two S1 bands ``VV``, ``VH`` (stored float32, dB) of equal shape.
        labels: 43-class CORINE names.
        transform: affine transform of the 10 m grid (scaled for the 20 m and 60 m bands).
        crs: CRS as an EPSG string or WKT.
        acquisition_date: ``"YYYY-MM-DD HH:MM:SS"``.
        extra_metadata: further JSON keys (e.g. ``tile_source``); may not replace ``labels``,
            ``coordinates``, ``projection`` or the acquisition time.
        overwrite: replace an existing patch folder instead of raising.

    Returns:
        The patch folder.

    Raises:
        UserInputError: for bad bands, shapes, labels, CRS, date or name, or an existing patch.
    """
    root = Path(root)
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise UserInputError(f"invalid BigEarthNet patch name {name!r}")
    sensor = _writer_sensor(bands)
    arrays = _check_writer_bands(bands, sensor)
    for label in labels:
        if label not in CLASS_43_TO_19:
            raise UserInputError(
                f"unknown BigEarthNet label {label!r} for patch {name}: not one of the 43 CORINE classes"
            )
    try:
        when = datetime.strptime(acquisition_date, _DATE_FORMAT)
    except (TypeError, ValueError):
        raise UserInputError(
            f"acquisition_date must be 'YYYY-MM-DD HH:MM:SS', got {acquisition_date!r}"
        ) from None
    try:
        crs_obj = CRS.from_user_input(crs)
    except CRSError as exc:
        raise UserInputError(f"invalid CRS {crs!r} for BigEarthNet patch {name}: {exc}") from None
    transform = affine.Affine(*tuple(transform)[:6])

    ref = _REFERENCE_BAND[sensor]
    height, width = arrays[ref].shape
    lr_x, lr_y = _apply(transform, width, height)
    corner_y = "lry" if sensor == "s2" else "lly"
    metadata: dict[str, Any] = {
        "labels": list(labels),
        "coordinates": {
            "ulx": _json_number(transform.c),
            "uly": _json_number(transform.f),
            "lrx": _json_number(lr_x),
            corner_y: _json_number(lr_y),
        },
        "projection": crs_obj.to_wkt(),
    }
    if sensor == "s2":
        metadata["tile_source"] = ""
        metadata["acquisition_date"] = when.strftime(_DATE_FORMAT)
        time_key = "acquisition_date"
    else:
        metadata["corresponding_s2_patch"] = ""
        metadata["scene_source"] = ""
        metadata["acquisition_time"] = when.strftime("%Y-%m-%dT%H:%M:%S")
        time_key = "acquisition_time"
    for key, value in (extra_metadata or {}).items():
        if key in ("labels", "coordinates", "projection", time_key):
            raise UserInputError(f"extra_metadata may not replace the BigEarthNet key {key!r}")
        metadata[key] = value

    final = root / name
    if final.exists() and not overwrite:
        raise UserInputError(f"BigEarthNet patch folder already exists: {final}")
    with atomic_dir(final, overwrite=True) as tmp:
        for band, array in arrays.items():
            write_geotiff(
                tmp / f"{name}_{band}.tif",
                array,
                transform=_scaled(transform, _BAND_RES[band] / _GRID_RES),
                crs=crs_obj,
                compress=None,  # the archive ships uncompressed single-band GeoTIFFs
            )
        with open(tmp / f"{name}{_LABELS_SUFFIX}", "w", encoding="utf-8") as f:
            json.dump(metadata, f)
    return final


def _writer_sensor(bands: Mapping[str, np.ndarray]) -> str:
    keys = set(bands)
    if keys == set(S2_BANDS):
        return "s2"
    if keys == set(S1_BANDS):
        return "s1"
    raise UserInputError(
        "BigEarthNet v1 patch needs all S2 bands "
        f"{', '.join(S2_BANDS)} or the S1 bands VV, VH; got {', '.join(sorted(keys)) or 'none'}"
    )


def _check_writer_bands(bands: Mapping[str, np.ndarray], sensor: str) -> dict[str, np.ndarray]:
    ref = np.asarray(bands[_REFERENCE_BAND[sensor]])
    if ref.ndim != 2:
        raise UserInputError(f"band {_REFERENCE_BAND[sensor]} must be 2-D, got shape {ref.shape}")
    height, width = ref.shape
    if sensor == "s2" and (height % 6 or width % 6):
        raise UserInputError(
            f"S2 10 m bands must be a multiple of 6 px on each side (60 m bands are 1/6), got {height}x{width}"
        )
    out: dict[str, np.ndarray] = {}
    for band in _SENSOR_BANDS[sensor]:
        array = np.asarray(bands[band])
        factor = _BAND_RES[band] // 10
        expected = (height // factor, width // factor)
        if array.shape != expected:
            raise UserInputError(
                f"band {band} ({_BAND_RES[band]} m) must have shape {expected}, got {array.shape}"
            )
        if sensor == "s2":
            if not np.issubdtype(array.dtype, np.integer):
                raise UserInputError(
                    f"S2 band {band} must hold integer DN (uint16), got {array.dtype}"
                )
            if array.size and (array.min() < 0 or array.max() > np.iinfo(np.uint16).max):
                raise UserInputError(f"S2 band {band} has values outside the uint16 range")
            out[band] = array.astype(np.uint16, copy=False)
        else:
            out[band] = array.astype(np.float32, copy=False)
    return out


# --------------------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class _Patch:
    name: str
    folder: Path
    labels: tuple[str, ...] | None = None  # v2: 19-class names from metadata.parquet
    country: str | None = None  # v2: the country column of metadata.parquet


def _read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserInputError(
            f"reading BigEarthNet v2 metadata {path} needs pyarrow: pip install pyarrow"
        ) from None
    wanted = (
        "patch_id",
        "labels",
        "split",
        "country",
        "s1_name",
        "contains_seasonal_snow",
        "contains_cloud_or_shadow",
    )
    columns = [c for c in wanted if c in pq.read_schema(path).names]
    return pq.read_table(path, columns=columns).to_pylist()


class BigEarthNet(Dataset):
    """BigEarthNet multi-label scene classification (v1 S2/S1 and v2 reBEN).

    `BigEarthNet <https://bigearth.net/>`__ pairs Sentinel-1 and Sentinel-2 patches of
    1.2 km × 1.2 km over ten European countries with multi-labels from the CORINE Land Cover map.

    Dataset features:

    * v1: 590,326 patches from 125 S2 tiles (L2A, sen2cor) acquired June 2017 – May 2018, and the
      matching BigEarthNet-S1 patches; 43 CORINE 2018 level-3 classes, or the 19-class
      nomenclature of Sumbul et al. (2021) (:data:`CLASSES_19`, mapping :data:`CLASS_43_TO_19`);
    * v2 (reBEN): 549,488 S1/S2 pairs, S2 re-processed with a newer sen2cor, 19-class labels from
      CLC 2018 and geographic train/validation/test splits;
    * S2: 12 bands B01 … B12 without B10, 10/20/60 m (120/60/20 px), uint16 DN; S1: VV and VH
      backscatter in dB (float32), 120 px at 10 m.

    Dataset format:

    * v1: ``root`` holds patch folders ``<patch>/<patch>_<BAND>.tif`` plus
      ``<patch>_labels_metadata.json``, either directly or in ``BigEarthNet-v1.0/`` or ``S2/``
      (S2) / ``BigEarthNet-S1-v1.0/`` or ``S1/`` (S1). A folder that is not a patch (no
      reference band file and no labels JSON) is refused when the reader is built, with what
      was expected. Splits come from the official ``train.csv``, ``val.csv``,
      ``test.csv`` (also accepted as ``bigearthnet-<split>.csv``) in ``root``: one patch name per
      line, or ``S2,S1`` name pairs as in BigEarthNet-MM; an S1 reader given S2 names matches them
      through each S1 JSON's ``corresponding_s2_patch``. ``patches_with_seasonal_snow.csv`` and
      ``patches_with_cloud_and_shadow.csv`` (S2 names), when present, remove those patches (the
      "recommended" subset) unless ``exclude_snow_cloud=False``;
    * v2: ``root`` holds ``metadata.parquet`` and ``BigEarthNet-S2/<tile>/<patch>/…`` or
      ``BigEarthNet-S1/<product>/<patch>/…``; split ``"val"`` selects the file's ``validation``
      rows; reading the parquet needs ``pyarrow``.

    Each sample is a :class:`~thinkingearth.data.sample.Sample` with ``image`` float32
    ``[C, H, W]`` on the 10 m grid (120×120 in the archive) in stored units (DN for S2, dB for
    S1). Bands stored at 20 m and 60 m are upsampled with bilinear interpolation
    (``torch.nn.functional.interpolate``, ``align_corners=False``, so pixel areas stay aligned;
    the same choice as torchgeo, but without rounding to integers); 10 m bands are returned
    exactly. ``label`` is an int64 multi-hot vector of 19 or 43 classes; a v1 patch whose labels
    are all among the 11 classes the 19-class nomenclature drops keeps an all-zero 19-class label
    (57 patches of v1 are like that; the official 19-class splits leave them out). Metadata: ``lon``/``lat`` of the patch centre in WGS84, ``time`` (days since
    1970-01-01 of the acquisition; v2 takes it from the patch name), ``gsd`` 10.0, ``crs``,
    ``transform`` of the 10 m grid and the patch ``name``; v2 samples also carry ``country``
    (from ``metadata.parquet``), which :attr:`patch_countries` lists without reading images and
    ``countries=`` selects (leave-countries-out splits, :mod:`thinkingearth.data.domains`).

    If you use this dataset in your research, please cite:

    .. code-block:: bibtex

        @inproceedings{sumbul2019bigearthnet,
          title={{BigEarthNet}: A Large-Scale Benchmark Archive for Remote Sensing Image
                 Understanding},
          author={Sumbul, Gencer and Charfuelan, Marcela and Demir, Beg{\\"u}m and Markl, Volker},
          booktitle={IGARSS 2019 - 2019 IEEE International Geoscience and Remote Sensing
                     Symposium},
          pages={5901--5904},
          year={2019},
          doi={10.1109/IGARSS.2019.8900532}
        }

        @article{sumbul2021bigearthnetmm,
          title={{BigEarthNet-MM}: A Large-Scale, Multimodal, Multilabel Benchmark Archive for
                 Remote Sensing Image Classification and Retrieval},
          author={Sumbul, Gencer and de Wall, Arne and Kreuziger, Tristan and Marcelino, Filipe
                  and Costa, Hugo and Benevides, Pedro and Caetano, M{\\'a}rio and Demir,
                  Beg{\\"u}m and Markl, Volker},
          journal={IEEE Geoscience and Remote Sensing Magazine},
          volume={9},
          number={3},
          pages={174--180},
          year={2021},
          doi={10.1109/MGRS.2021.3089174}
        }

        @article{clasen2024reben,
          title={{reBEN}: Refined {BigEarthNet} Dataset for Remote Sensing Image Analysis},
          author={Clasen, Kai Norman and Hackel, Leonard and Burgert, Tom and Sumbul, Gencer and
                  Demir, Beg{\\"u}m and Markl, Volker},
          journal={arXiv preprint arXiv:2407.03653},
          year={2024}
        }
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] | None = None,
        version: Literal[1, 2] = 1,
        sensor: Literal["s2", "s1"] = "s2",
        num_classes: Literal[19, 43] = 19,
        bands: Sequence[str] | None = None,
        transforms: Callable[[dict], dict] | None = None,
        *,
        exclude_snow_cloud: bool = True,
        countries: Sequence[str] | None = None,
    ) -> None:
        """Index a BigEarthNet folder.

        Args:
            root: dataset folder (see the class docstring for the layouts).
            split: ``"train"``, ``"val"`` or ``"test"``; ``None`` for every patch found.
            version: 1 (folders + JSON) or 2 (reBEN, ``metadata.parquet``).
            sensor: ``"s2"`` (Sentinel-2 L2A) or ``"s1"`` (Sentinel-1 GRD).
            num_classes: 19 or 43 (43 exists for v1 only).
            bands: band subset and order; default all bands of the sensor.
            transforms: function applied to each sample dict.
            exclude_snow_cloud: v1 only: drop patches listed in the snow/cloud CSVs in ``root``;
                v2 only: drop rows flagged ``contains_seasonal_snow``/``contains_cloud_or_shadow``.
            countries: v2 only: keep the patches of these countries (``metadata.parquet``'s
                ``country`` values); ``None`` for all.

        Raises:
            UserInputError: for a bad argument; :class:`UnknownBandError` for an unknown band.
            DataLayoutError: when the folder, its patches or a split file are missing.
        """
        if version not in (1, 2):
            raise UserInputError(f"BigEarthNet version must be 1 or 2, got {version!r}")
        if sensor not in _SENSOR_BANDS:
            raise UserInputError(f"BigEarthNet sensor must be 's2' or 's1', got {sensor!r}")
        if num_classes not in (19, 43):
            raise UserInputError(f"num_classes must be 19 or 43, got {num_classes!r}")
        if version == 2 and num_classes == 43:
            raise UserInputError(
                "BigEarthNet v2 (reBEN) has 19-class labels only: use num_classes=19"
            )
        if split is not None and split not in self.splits:
            raise UserInputError(f"split must be one of train, val, test or None, got {split!r}")
        available = _SENSOR_BANDS[sensor]
        chosen = tuple(available if bands is None else bands)
        if not chosen:
            raise UserInputError("bands must name at least one band")
        for band in chosen:
            if band not in available:
                raise UnknownBandError(
                    f"unknown band {band!r} for BigEarthNet {sensor}: expected some of {', '.join(available)}"
                )
        self.root = Path(root)
        self.split = split
        self.version = version
        self.sensor = sensor
        self.sensor_name = SENSOR_NAMES[sensor]
        self.num_classes = num_classes
        self.bands = chosen
        self.classes = CLASSES_19 if num_classes == 19 else CLASSES_43
        self.transforms = transforms
        self.exclude_snow_cloud = exclude_snow_cloud
        if countries is not None:
            if version != 2:
                raise UserInputError(
                    "BigEarthNet countries= needs BigEarthNet v2's country metadata "
                    "(metadata.parquet); v1 has none"
                )
            if isinstance(countries, str):
                countries = (countries,)
            countries = tuple(str(c) for c in countries)
        self._wanted_countries = countries
        if not self.root.is_dir():
            raise DataLayoutError(f"BigEarthNet folder not found: {self.root}")
        if version == 1:
            self._patches = self._index_v1()
        else:
            self._patches = self._index_v2()
        #: The countries the chosen patches come from (v2; empty for v1), sorted.
        self.countries: tuple[str, ...] = tuple(
            sorted({p.country for p in self._patches if p.country is not None})
        )

    # ----------------------------------------------------------------------------- indexing v1

    def _v1_data_dir(self) -> Path:
        for sub in _V1_DIRS[self.sensor]:
            if (self.root / sub).is_dir():
                return self.root / sub
        return self.root

    def _index_v1(self) -> list[_Patch]:
        data_dir = self._v1_data_dir()
        containers = {d for dirs in _V1_DIRS.values() for d in dirs}
        other = _NAME_RE["s1" if self.sensor == "s2" else "s2"]
        found: dict[str, Path] = {}
        with os.scandir(data_dir) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir() or entry.name in containers:
                    continue
                if other.match(entry.name):
                    continue
                found[entry.name] = Path(entry.path)
        if not found:
            ref = _REFERENCE_BAND[self.sensor]
            raise DataLayoutError(
                f"no BigEarthNet {self.sensor} patch folders in {data_dir} "
                f"(expected <patch>/<patch>_{ref}.tif and <patch>/<patch>{_LABELS_SUFFIX})"
            )
        names = sorted(found)
        self._check_patch_folder(found[names[0]], data_dir)
        self._s2_to_s1: dict[str, str] | None = None
        if self.split is not None:
            csv_path = self._find_csv(
                (f"{self.split}.csv", f"bigearthnet-{self.split}.csv"), data_dir
            )
            if csv_path is None:
                raise DataLayoutError(
                    f"split file {self.split}.csv not found in {self.root} "
                    "(the official BigEarthNet split: one patch name per line)"
                )
            wanted = self._csv_names(csv_path, found)
            missing = [n for n in wanted if n not in found]
            if missing:
                raise DataLayoutError(
                    f"split file {csv_path} lists {len(missing)} patch(es) not found in {data_dir}, "
                    f"e.g. {missing[0]}"
                )
            names = sorted(set(wanted))
        if self.exclude_snow_cloud:
            drop: set[str] = set()
            for filename in _SNOW_CLOUD_CSVS:
                path = self._find_csv((filename,), data_dir)
                if path is not None:
                    drop.update(n for n in self._csv_names(path, found) if n in found)
            names = [n for n in names if n not in drop]
        return [_Patch(n, found[n]) for n in names]

    def _check_patch_folder(self, folder: Path, data_dir: Path) -> None:
        """Refuse now, not at the first sample, a root whose folders are not patches."""
        ref = _REFERENCE_BAND[self.sensor]
        name = folder.name
        if (folder / f"{name}_{ref}.tif").is_file() or (
            folder / f"{name}{_LABELS_SUFFIX}"
        ).is_file():
            return
        hint = (
            "; it holds metadata.parquet: use version=2"
            if (self.root / "metadata.parquet").is_file()
            else ""
        )
        raise DataLayoutError(
            f"{folder} is not a BigEarthNet {self.sensor} patch folder (no {name}_{ref}.tif or "
            f"{name}{_LABELS_SUFFIX}); expected patch folders in {data_dir}, or in its "
            f"{' or '.join(d + '/' for d in _V1_DIRS[self.sensor])} subfolder{hint}"
        )

    def _find_csv(self, filenames: Sequence[str], data_dir: Path) -> Path | None:
        for folder in dict.fromkeys((self.root, data_dir)):
            for filename in filenames:
                if (folder / filename).is_file():
                    return folder / filename
        return None

    def _csv_names(self, path: Path, found: Mapping[str, Path]) -> list[str]:
        """Patch names of this sensor listed in a split/exclusion CSV.

        A line is a patch name or an ``S2,S1`` pair; S2 names are translated to S1 names for an S1
        reader through the S1 JSONs' ``corresponding_s2_patch``.
        """
        with open(path, newline="", encoding="utf-8") as f:
            rows = [[c.strip() for c in row if c.strip()] for row in csv.reader(f)]
        rows = [row for row in rows if row]
        names: list[str] = []
        for row in rows:
            hit = next((c for c in row if c in found), None)
            if hit is None and self.sensor == "s1":
                mapping = self._s2_to_s1_map(found)
                hit = next((mapping[c] for c in row if c in mapping), None)
            if hit is None:
                # not on disk: report the name this sensor would use
                hit = row[1] if self.sensor == "s1" and len(row) > 1 else row[0]
            names.append(hit)
        return names

    def _s2_to_s1_map(self, found: Mapping[str, Path]) -> dict[str, str]:
        if self._s2_to_s1 is None:
            mapping: dict[str, str] = {}
            for name, folder in found.items():
                path = folder / f"{name}{_LABELS_SUFFIX}"
                try:
                    with open(path, encoding="utf-8") as f:
                        s2_name = json.load(f).get("corresponding_s2_patch")
                except (OSError, ValueError):
                    continue
                if s2_name:
                    mapping[s2_name] = name
            self._s2_to_s1 = mapping
        return self._s2_to_s1

    # ----------------------------------------------------------------------------- indexing v2

    def _index_v2(self) -> list[_Patch]:
        meta_path = self.root / "metadata.parquet"
        if not meta_path.is_file():
            raise DataLayoutError(f"BigEarthNet v2 metadata.parquet not found in {self.root}")
        data_dir = self.root / _V2_DIRS[self.sensor]
        if not data_dir.is_dir():
            raise DataLayoutError(
                f"BigEarthNet v2 folder {_V2_DIRS[self.sensor]}/ not found in {self.root}"
            )
        rows = _read_parquet_rows(meta_path)
        id_key = "s1_name" if self.sensor == "s1" else "patch_id"
        split_values = {"train": {"train"}, "val": {"validation", "val"}, "test": {"test"}}
        patches: list[_Patch] = []
        seen_countries: set[str] = set()
        for row in rows:
            if id_key not in row or "labels" not in row:
                raise DataLayoutError(
                    f"BigEarthNet v2 {meta_path} lacks the column {id_key if id_key not in row else 'labels'}"
                )
            if self.split is not None and row.get("split") not in split_values[self.split]:
                continue
            if self.exclude_snow_cloud and (
                row.get("contains_seasonal_snow") or row.get("contains_cloud_or_shadow")
            ):
                continue
            country = row.get("country")
            country = None if country is None else str(country)
            if self._wanted_countries is not None:
                if country is not None:
                    seen_countries.add(country)
                if country not in self._wanted_countries:
                    continue
            name = str(row[id_key])
            cut = 3 if self.sensor == "s1" else 2
            group = name.rsplit("_", cut)[0]
            folder = data_dir / group / name
            if not folder.is_dir() and (data_dir / name).is_dir():
                folder = data_dir / name
            labels = tuple(row["labels"] or ())
            for label in labels:
                if label not in _CLASS_INDEX[19]:
                    raise DataLayoutError(
                        f"unknown BigEarthNet v2 label {label!r} for {name} in {meta_path} "
                        "(expected one of the 19 class names)"
                    )
            patches.append(_Patch(name, folder, labels, country))
        if self._wanted_countries is not None:
            unknown = sorted(set(self._wanted_countries) - seen_countries)
            if unknown:
                raise UserInputError(
                    f"BigEarthNet v2 {meta_path} has no patches of {', '.join(unknown)}; its "
                    f"countries: {', '.join(sorted(seen_countries)) or 'none'}"
                )
        if not patches:
            which = "" if self.split is None else f" for split {self.split}"
            raise DataLayoutError(f"no BigEarthNet v2 patches{which} in {meta_path}")
        return patches

    # ------------------------------------------------------------------------------- samples

    def __len__(self) -> int:
        """Number of patches."""
        return len(self._patches)

    @property
    def names(self) -> list[str]:
        """Patch names, in dataset order."""
        return [p.name for p in self._patches]

    @property
    def patch_countries(self) -> list[str | None]:
        """Each patch's country (v2's ``metadata.parquet``; ``None`` for v1), in dataset order."""
        return [p.country for p in self._patches]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Load one patch as a Sample dict (see the class docstring)."""
        patch = self._patches[index]
        if self.version == 1:
            metadata = self._read_json(patch)
            labels = metadata.get("labels")
            if not isinstance(labels, list):
                raise DataLayoutError(
                    f"BigEarthNet labels file {patch.folder / (patch.name + _LABELS_SUFFIX)} has no 'labels' list"
                )
            label = self._encode_v1(labels, patch)
            stamp = metadata.get("acquisition_date") or metadata.get("acquisition_time")
            time = _parse_time(stamp) if isinstance(stamp, str) else math.nan
            if math.isnan(time):
                time = _time_from_name(patch.name)
        else:
            label = torch.zeros(19, dtype=torch.int64)
            for name in patch.labels or ():
                label[_CLASS_INDEX[19][name]] = 1
            time = _time_from_name(patch.name)

        image, crs, transform = self._read_image(patch)
        height, width = image.shape[-2:]
        lon, lat = _centre_lonlat(crs, transform, width, height)
        sample: dict[str, Any] = {
            "image": image,
            "bands": self.bands,
            "sensor": self.sensor_name,
            **({"units": "db"} if self.sensor_name == "sentinel-1-grd" else {}),
            "label": label,
            "lon": lon,
            "lat": lat,
            "time": time,
            "gsd": _GRID_RES,
            "crs": crs.to_string() if crs is not None else "",
            "transform": tuple(transform)[:6],
            "name": patch.name,
        }
        if patch.country is not None:
            sample["country"] = patch.country
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _read_json(self, patch: _Patch) -> dict[str, Any]:
        path = patch.folder / f"{patch.name}{_LABELS_SUFFIX}"
        if not path.is_file():
            raise DataLayoutError(
                f"BigEarthNet patch {patch.name} lacks its labels file {path.name} in {patch.folder}"
            )
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except ValueError as exc:
            raise DataLayoutError(
                f"BigEarthNet labels file {path} is not valid JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise DataLayoutError(f"BigEarthNet labels file {path} is not a JSON object")
        return data

    def _encode_v1(self, labels: Sequence[str], patch: _Patch) -> Tensor:
        for label in labels:
            if label not in CLASS_43_TO_19:
                path = patch.folder / f"{patch.name}{_LABELS_SUFFIX}"
                raise DataLayoutError(
                    f"unknown BigEarthNet label {label!r} in {path} (expected one of the 43 CORINE class names)"
                )
        return labels_to_multi_hot(labels, self.num_classes)

    def _band_path(self, patch: _Patch, band: str) -> Path:
        path = patch.folder / f"{patch.name}_{band}.tif"
        if not path.is_file():
            raise DataLayoutError(
                f"BigEarthNet patch {patch.name} lacks band file {path.name} in {patch.folder}"
            )
        return path

    def _grid(self, patch: _Patch) -> tuple[tuple[int, int], CRS | None, affine.Affine]:
        """Shape, CRS and transform of the patch's 10 m grid."""
        ref = _REFERENCE_BAND[self.sensor]
        path = patch.folder / f"{patch.name}_{ref}.tif"
        band = ref if path.is_file() else self.bands[0]
        path = self._band_path(patch, band)
        scale = _BAND_RES[band] / _GRID_RES
        with rasterio.open(path) as ds:
            shape = (round(ds.height * scale), round(ds.width * scale))
            return shape, ds.crs, _scaled(ds.transform, 1 / scale)

    def _read_image(self, patch: _Patch) -> tuple[Tensor, CRS | None, affine.Affine]:
        shape, crs, transform = self._grid(patch)
        channels: list[Tensor] = []
        for band in self.bands:
            path = self._band_path(patch, band)
            try:
                with rasterio.open(path) as ds:
                    array = ds.read(1, out_dtype="float32")
            except RasterioIOError as exc:
                raise DataLayoutError(f"cannot read BigEarthNet band file {path}: {exc}") from None
            channel = torch.from_numpy(array)
            if tuple(channel.shape) != shape:
                channel = F.interpolate(
                    channel[None, None], size=shape, mode="bilinear", align_corners=False
                )[0, 0]
            channels.append(channel)
        return torch.stack(channels).contiguous(), crs, transform


def _parse_time(stamp: str) -> float:
    try:
        return to_days(datetime.fromisoformat(stamp.strip()))
    except ValueError:
        return math.nan


def _time_from_name(name: str) -> float:
    """Acquisition time from a Sentinel product/patch name (``…_YYYYMMDDTHHMMSS_…``)."""
    match = _NAME_TIME_RE.search(name)
    if match is None:
        return math.nan
    day, clock = match.groups()
    try:
        when = datetime.strptime(day, "%Y%m%d")
    except ValueError:
        return math.nan
    days = to_days(when)
    if len(clock) == 6:
        hours, minutes, seconds = int(clock[:2]), int(clock[2:4]), int(clock[4:])
        if hours < 24 and minutes < 60 and seconds < 60:
            days += (hours * 3600 + minutes * 60 + seconds) / 86400.0
    return days


def _centre_lonlat(
    crs: CRS | None, transform: affine.Affine, width: int, height: int
) -> tuple[float, float]:
    if crs is None:
        return math.nan, math.nan
    x, y = _apply(transform, width / 2, height / 2)
    try:
        lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [x], [y])
    except (CRSError, ValueError):
        return math.nan, math.nan
    return float(lons[0]), float(lats[0])
