"""Sen1Floods11: hand-labelled Sentinel-1/Sentinel-2 flood chips, in their published layout.

Layout facts (the ``gs://sen1floods11`` bucket, ``v1.1``, documented in
cloudtostreet/Sen1Floods11 ``docs/README.md``; file facts read from a real chip):

* chips: ``v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}/
  <Location>_<id>_{S1Hand,S2Hand,LabelHand}.tif``: 512×512 px in EPSG:4326 on a grid of
  8.98e-5° (the 10 m export scale of Google Earth Engine). ``S1Hand``: float32 ``VV``, ``VH``
  backscatter in dB, nodata NaN; ``S2Hand``: 13 int16 L1C bands described ``B1`` … ``B12`` (B8A
  ninth), nodata 0; ``LabelHand``: int16, 1 water, 0 no water, -1 no data (no nodata tag);
* splits: ``v1.1/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv``, no header,
  rows ``<chip>_S1Hand.tif,<chip>_LabelHand.tif``; the Bolivia event is held out;
* ``v1.1/Sen1Floods11_Metadata.geojson``: one feature per event with ``location`` (the chip
  name prefix), ``s1_date`` and ``s2_date`` (``YYYY/MM/DD``), ``ISO_CC``, ``VH_thresh``, ...

The reader also takes the flat layout of a few chips copied out of the bucket: ``root/{S1,S2,
Labels}/<chip>_{S1Hand,S2Hand,LabelHand}.tif`` with the metadata GeoJSON beside them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Literal

import affine
import numpy as np
import rasterio
import rasterio.warp
import torch
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from torch.utils.data import Dataset

from thinkingearth.data.sample import to_days
from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.sensors import Sensor, get_sensor

__all__ = [
    "HANDLABELED_DIR",
    "IGNORE_INDEX",
    "METADATA_NAME",
    "SENSOR_NAMES",
    "SPLIT_DIR",
    "SPLIT_FILES",
    "Sen1Floods11",
]

#: Split name -> split CSV (the published names; ``"val"`` is ``valid`` on disk).
SPLIT_FILES: dict[str, str] = {
    "train": "flood_train_data.csv",
    "val": "flood_valid_data.csv",
    "test": "flood_test_data.csv",
    "bolivia": "flood_bolivia_data.csv",
}
#: Folder of the hand-labelled chips, relative to ``v1.1/``.
HANDLABELED_DIR = Path("data", "flood_events", "HandLabeled")
#: Folder of the hand-labelled split CSVs, relative to ``v1.1/``.
SPLIT_DIR = Path("splits", "flood_handlabeled")
#: Event metadata file name.
METADATA_NAME = "Sen1Floods11_Metadata.geojson"
#: Mask value of pixels without a label (stored as -1).
IGNORE_INDEX = 255
#: Reader ``sensor`` argument -> sensor registry name.
SENSOR_NAMES: dict[str, str] = {"s1": "sentinel-1-grd", "s2": "sentinel-2-l1c"}

_VERSION_DIR = "v1.1"
# role -> (file suffix, accepted folder names: published first, then the flat copy's)
_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "s1": ("S1Hand", ("S1Hand", "S1")),
    "s2": ("S2Hand", ("S2Hand", "S2")),
    "label": ("LabelHand", ("LabelHand", "Labels", "Label")),
}
_CHIP_FILE = re.compile(r"^(?P<chip>.+)_(?:S1Hand|S2Hand|LabelHand)\.tif$")
_NOMINAL_GSD_M = 10.0
# Chip name prefix -> event ``location`` where they differ (the Mekong chips are the
# Cambodia event of the metadata).
_LOCATION_ALIASES: dict[str, str] = {"mekong": "cambodia"}


def _location_key(name: str) -> str:
    key = re.sub(r"[\s_\-]+", "-", name.strip().lower())
    return _LOCATION_ALIASES.get(key, key)


def _parse_date(value: Any) -> float:
    if not isinstance(value, str) or not value.strip():
        return math.nan
    parts = re.split(r"[/\-]", value.strip())
    try:
        return to_days(date(int(parts[0]), int(parts[1]), int(parts[2])))
    except (ValueError, IndexError):
        return math.nan


def _read_metadata(path: Path) -> dict[str, dict[str, float]]:
    """Event location key -> ``{"s1": days, "s2": days}`` from the metadata GeoJSON."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        features = content["features"]
        events: dict[str, dict[str, float]] = {}
        for feature in features:
            props = feature["properties"]
            dates = {
                "s1": _parse_date(props.get("s1_date")),
                "s2": _parse_date(props.get("s2_date")),
            }
            for key in ("location", "ISO_CC"):
                if isinstance(props.get(key), str):
                    events.setdefault(_location_key(props[key]), dates)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise DataLayoutError(
            f"Sen1Floods11 metadata {path} is unreadable ({type(err).__name__}: {err})"
        ) from None
    return events


def _centre_lonlat(
    crs: CRS | None, transform: affine.Affine, width: int, height: int
) -> tuple[float, float]:
    if crs is None:
        return math.nan, math.nan
    a, b, c, d, e, f = tuple(transform)[:6]
    x = a * width / 2 + b * height / 2 + c
    y = d * width / 2 + e * height / 2 + f
    if crs.to_epsg() == 4326:
        return float(x), float(y)
    try:
        lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [x], [y])
    except (CRSError, ValueError):
        return math.nan, math.nan
    return float(lons[0]), float(lats[0])


def _file_bands(src: Any, sensor: Sensor, path: Path) -> tuple[str, ...]:
    """Registry names of the bands of an open chip file, from its band descriptions."""
    descriptions = tuple(src.descriptions)
    if all(descriptions):
        try:
            return tuple(sensor.band(d).name for d in descriptions)
        except UnknownBandError:
            raise DataLayoutError(
                f"Sen1Floods11 chip {path} has band descriptions {', '.join(descriptions)}, "
                f"expected {sensor.name} bands ({', '.join(sensor.band_names)})"
            ) from None
    if src.count != len(sensor.bands):
        raise DataLayoutError(
            f"Sen1Floods11 chip {path} has {src.count} bands, expected {len(sensor.bands)} "
            f"({', '.join(sensor.band_names)})"
        )
    return sensor.band_names


class Sen1Floods11(Dataset):
    """Sen1Floods11: a georeferenced dataset to train and test deep learning flood algorithms.

    `Sen1Floods11 <https://github.com/cloudtostreet/Sen1Floods11>`__ (Bonafilia et al., CVPR
    Workshops 2020) holds 446 hand-labelled 512×512 px chips of surface water from flood events
    on six continents, each with the coincident Sentinel-1 GRD and Sentinel-2 L1C images (plus
    weakly labelled and permanent-water parts that this reader does not cover).

    Dataset features:

    * Sentinel-1 GRD ``VV``, ``VH`` backscatter in **dB** (float32, NaN = no data), as stored;
    * Sentinel-2 Level-1C, 13 bands, int16 digital numbers (reflectance × 10⁴), 0 = no data;
    * labels 1 water, 0 no water, -1 no data (clouds, outside the scene);
    * EPSG:4326, 8.98e-5° pixels (10 m north-south);
    * published train/valid/test split and a held-out Bolivia test event.

    Dataset format, either the published bucket layout (``root`` holds ``v1.1/``, or is it)::

        root/v1.1/data/flood_events/HandLabeled/S1Hand/<Location>_<id>_S1Hand.tif
        root/v1.1/data/flood_events/HandLabeled/S2Hand/<Location>_<id>_S2Hand.tif
        root/v1.1/data/flood_events/HandLabeled/LabelHand/<Location>_<id>_LabelHand.tif
        root/v1.1/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv
        root/v1.1/Sen1Floods11_Metadata.geojson

    or a flat copy: ``root/{S1,S2,Labels}/<chip>_{S1Hand,S2Hand,LabelHand}.tif`` (the
    ``*Hand`` folder names are accepted too) with ``Sen1Floods11_Metadata.geojson`` and, for a
    split, its CSV in ``root``. ``split=None`` reads every chip that has a label. The metadata
    file is optional; without it (or for a chip whose name prefix is no event ``location``)
    ``time`` is NaN.

    Each item is a Sample with ``image`` float32 ``[C, 512, 512]`` in stored units (S1 dB, S2
    DN; no-data values kept as stored), ``bands`` (registry names), ``sensor``
    (``"sentinel-1-grd"`` or ``"sentinel-2-l1c"``; note the registry describes S1 as linear
    sigma0, these values are ``10 log10`` of it), ``mask`` int64 ``[512, 512]`` (0 no water,
    1 water, :data:`IGNORE_INDEX` 255 where the label is -1 or anything else), ``lon``/``lat``
    of the chip centre, ``time`` (days since 1970-01-01 of the event's ``s1_date`` or
    ``s2_date``, at 00:00 UTC), ``gsd`` 10.0 (nominal), ``crs``, ``transform`` and the ``chip``
    name. The ignore value is 255 rather than -1 because torchmetrics and most losses need a
    non-negative ignore index.

    If you use this dataset in your research, please cite:

    * https://openaccess.thecvf.com/content_CVPRW_2020/html/w11/Bonafilia_Sen1Floods11_A_Georeferenced_Dataset_to_Train_and_Test_Deep_Learning_CVPRW_2020_paper.html

    .. code-block:: bibtex

        @inproceedings{bonafilia2020sen1floods11,
          author    = {Bonafilia, Derrick and Tellman, Beth and Anderson, Tyler and
                       Issenberg, Erica},
          title     = {{Sen1Floods11}: A Georeferenced Dataset to Train and Test Deep Learning
                       Flood Algorithms for {Sentinel-1}},
          booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
                       Recognition (CVPR) Workshops},
          pages     = {210--211},
          year      = {2020},
        }
    """

    classes: ClassVar[tuple[str, ...]] = ("no water", "water")
    ignore_index: ClassVar[int] = IGNORE_INDEX
    splits: ClassVar[tuple[str, ...]] = tuple(SPLIT_FILES)

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test", "bolivia"] | None = "train",
        sensor: Literal["s1", "s2"] = "s1",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        bands: Sequence[str] | None = None,
    ) -> None:
        """Index the chips of a split.

        Args:
            root: dataset root (see the class docstring for the two layouts).
            split: ``"train"``, ``"val"``, ``"test"`` or ``"bolivia"`` (the published hand-labelled
                splits), or ``None`` for every labelled chip on disk.
            sensor: ``"s1"`` (VV, VH in dB) or ``"s2"`` (13 L1C bands).
            transforms: function applied to each Sample.
            bands: registry band names or aliases of the chosen sensor, in the order wanted;
                ``None`` for all, in canonical order.

        Raises:
            UserInputError: for an unknown split or sensor;
                :class:`~thinkingearth.errors.UnknownBandError` for an unknown band.
            DataLayoutError: if the root, the chip folders, the split file or a chip file is
                missing.
        """
        if split is not None and split not in SPLIT_FILES:
            raise UserInputError(
                f"unknown Sen1Floods11 split {split!r}; choose one of "
                f"{', '.join(SPLIT_FILES)} or None"
            )
        if sensor not in SENSOR_NAMES:
            raise UserInputError(f"Sen1Floods11 sensor must be 's1' or 's2', got {sensor!r}")
        self._sensor = get_sensor(SENSOR_NAMES[sensor])
        self.sensor_name = self._sensor.name
        self.sensor = sensor
        self.bands: tuple[str, ...] = tuple(b.name for b in self._sensor.select(bands))
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        if not self.root.is_dir():
            raise DataLayoutError(
                f"Sen1Floods11 root {self.root} does not exist or is not a folder"
            )
        version_dir = self.root / _VERSION_DIR
        self.base = version_dir if version_dir.is_dir() else self.root
        self.image_dir, self.label_dir = self._folders()
        self.chips: list[str] = self._index()
        self._events: dict[str, dict[str, float]] = {}
        for folder in (self.base, self.root, self.label_dir.parent):
            if (folder / METADATA_NAME).is_file():
                self._events = _read_metadata(folder / METADATA_NAME)
                break

    def _folders(self) -> tuple[Path, Path]:
        for data_dir in (self.base / HANDLABELED_DIR, self.base):
            image = next(
                (data_dir / n for n in _ROLES[self.sensor][1] if (data_dir / n).is_dir()), None
            )
            label = next(
                (data_dir / n for n in _ROLES["label"][1] if (data_dir / n).is_dir()), None
            )
            if image is not None and label is not None:
                return image, label
        published = self.base / HANDLABELED_DIR
        suffix = _ROLES[self.sensor][0]
        raise DataLayoutError(
            f"Sen1Floods11 root {self.root} has no {suffix} and LabelHand chip folders (expected "
            f"{published}/{{{suffix},LabelHand}}/ or {self.root}/{{{suffix[:2]},Labels}}/)"
        )

    def _split_file(self, name: str) -> Path:
        candidates = (self.base / SPLIT_DIR / name, self.base / name, self.root / name)
        for path in candidates:
            if path.is_file():
                return path
        raise DataLayoutError(
            f"Sen1Floods11 split file {name} not found (expected {candidates[0]})"
        )

    def _index(self) -> list[str]:
        if self.split is None:
            chips = sorted(
                m.group("chip")
                for p in self.label_dir.glob("*_LabelHand.tif")
                if (m := _CHIP_FILE.match(p.name))
            )
            if not chips:
                raise DataLayoutError(
                    f"no Sen1Floods11 chips in {self.label_dir} (expected <chip>_LabelHand.tif)"
                )
        else:
            path = self._split_file(SPLIT_FILES[self.split])
            chips = []
            for line in path.read_text(encoding="utf-8").splitlines():
                first = line.split(",")[0].strip()
                if not first:
                    continue
                match = _CHIP_FILE.match(Path(first).name)
                if match is None:
                    raise DataLayoutError(
                        f"Sen1Floods11 split file {path} has the row {line.strip()!r}; expected "
                        "<chip>_S1Hand.tif,<chip>_LabelHand.tif"
                    )
                chips.append(match.group("chip"))
            if not chips:
                raise DataLayoutError(f"Sen1Floods11 split file {path} lists no chips")
        suffix = _ROLES[self.sensor][0]
        for chip in chips:
            for folder, kind in ((self.image_dir, suffix), (self.label_dir, "LabelHand")):
                if not (folder / f"{chip}_{kind}.tif").is_file():
                    raise DataLayoutError(
                        f"Sen1Floods11 chip {chip} is missing {chip}_{kind}.tif in {folder}"
                    )
        return chips

    def __len__(self) -> int:
        """Number of chips."""
        return len(self.chips)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"sensor={self.sensor!r}, chips={len(self)})"
        )

    def _time(self, chip: str) -> float:
        event = self._events.get(_location_key(chip.rsplit("_", 1)[0]))
        return math.nan if event is None else event[self.sensor]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read one chip as a Sample (see the class docstring for its keys)."""
        chip = self.chips[index]
        image_path = self.image_dir / f"{chip}_{_ROLES[self.sensor][0]}.tif"
        label_path = self.label_dir / f"{chip}_LabelHand.tif"
        try:
            with rasterio.open(image_path) as src:
                stored = _file_bands(src, self._sensor, image_path)
                missing = [b for b in self.bands if b not in stored]
                if missing:
                    raise DataLayoutError(
                        f"Sen1Floods11 chip {image_path} lacks band(s) {', '.join(missing)}"
                    )
                indexes = [stored.index(b) + 1 for b in self.bands]
                image = src.read(indexes, out_dtype="float32")
                crs, transform = src.crs, src.transform
            with rasterio.open(label_path) as src:
                label = src.read(1)
        except RasterioIOError as err:
            raise DataLayoutError(f"cannot read Sen1Floods11 chip {chip}: {err}") from None
        if label.shape != image.shape[-2:]:
            raise DataLayoutError(
                f"Sen1Floods11 chip {chip}: label {label_path.name} is {label.shape}, image "
                f"{image_path.name} is {image.shape[-2:]}"
            )
        mask = label.astype(np.int64)
        mask[(mask != 0) & (mask != 1)] = IGNORE_INDEX  # -1 (no data) and anything unexpected
        height, width = mask.shape
        lon, lat = _centre_lonlat(crs, transform, width, height)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(mask),
            "bands": self.bands,
            "sensor": self.sensor_name,
            **({"units": "db"} if self.sensor_name == "sentinel-1-grd" else {}),
            "lon": lon,
            "lat": lat,
            "time": self._time(chip),
            "gsd": _NOMINAL_GSD_M,
            "crs": crs.to_string() if crs is not None else "",
            "transform": tuple(float(v) for v in tuple(transform)[:6]),
            "chip": chip,
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
