"""EuroSAT multispectral (EuroSAT-MS): the 13-band Sentinel-2 L1C land-cover patches.

Layout facts (the torchgeo/EuroSAT distribution ``EuroSATallBands.zip``; checked against
``torchgeo/datasets/eurosat.py`` 0.8 and its test data):

* images: ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif``,
  one 64×64 GeoTIFF per patch, 13 uint16 bands in the stored order ``B01 … B08, B09, B10, B11,
  B12, B8A`` (B8A **last**; EuroSAT issue phelber/EuroSAT#7, fixed in torchgeo by PR #2480 after
  torchgeo issue #2458), georeferenced in the local UTM zone at about 10 m;
* splits: ``eurosat-train.txt``, ``eurosat-val.txt``, ``eurosat-test.txt`` in the root, one file
  name per line. They come from the RGB release used by Neumann et al. (2019), so the names end
  in ``.jpg``; the ``.tif`` of the same stem is meant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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

from thinkingearth.errors import DataLayoutError, UserInputError
from thinkingearth.sensors import get_sensor

__all__ = ["BASE_DIR", "CLASSES", "FILE_BANDS", "SPLIT_FILES", "EuroSATMS"]

_SENSOR = get_sensor("sentinel-2-l1c")

#: The 10 classes, in the order of their folder names (torchgeo's ``ImageFolder`` order): the
#: ``label`` of a patch is its index here.
CLASSES: tuple[str, ...] = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)

#: Band order as stored in the EuroSAT-MS GeoTIFFs: the registry's L1C order with B8A moved last.
FILE_BANDS: tuple[str, ...] = (*(b for b in _SENSOR.band_names if b != "B8A"), "B8A")

#: Folder (relative to the root) that holds the class folders.
BASE_DIR = Path("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")

#: Split name -> split file in the root (torchgeo's names).
SPLIT_FILES: dict[str, str] = {
    "train": "eurosat-train.txt",
    "val": "eurosat-val.txt",
    "test": "eurosat-test.txt",
}


def _centre_lonlat(
    crs: CRS | None, transform: affine.Affine, width: int, height: int
) -> tuple[float, float]:
    """WGS84 longitude/latitude of the raster centre; NaN without a CRS."""
    if crs is None:
        return math.nan, math.nan
    a, b, c, d, e, f = tuple(transform)[:6]
    x = a * width / 2 + b * height / 2 + c
    y = d * width / 2 + e * height / 2 + f
    try:
        lons, lats = rasterio.warp.transform(crs, "EPSG:4326", [x], [y])
    except (CRSError, ValueError):
        return math.nan, math.nan
    return float(lons[0]), float(lats[0])


class EuroSATMS(Dataset):
    """EuroSAT-MS: Sentinel-2 land use and land cover classification (13 L1C bands).

    `EuroSAT <https://github.com/phelber/EuroSAT>`__ (Helber et al. 2018, 2019) is a set of
    27,000 labelled, georeferenced 64×64 px Sentinel-2 patches over 34 European countries in 10
    classes (2,000 to 3,000 patches each).

    Dataset features:

    * Sentinel-2 Level-1C top-of-atmosphere reflectance, all 13 bands resampled to 10 m
      (64×64 px, 640 m × 640 m), uint16 digital numbers (reflectance × 10⁴);
    * one GeoTIFF per patch in its UTM zone; the acquisition date is not recorded;
    * 10 classes: :data:`CLASSES`;
    * train/val/test split of Neumann et al. (2019): 16,200 / 5,400 / 5,400 patches.

    Dataset format (``root`` holds ``ds/`` and the split files)::

        root/eurosat-train.txt, eurosat-val.txt, eurosat-test.txt   one name per line (.jpg)
        root/ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif

    A root that holds the class folders directly is accepted too. The GeoTIFF bands are stored
    as ``B01 … B08, B09, B10, B11, B12, B8A`` (:data:`FILE_BANDS`, B8A last).

    Each item is a Sample: ``image`` float32 ``[C, 64, 64]`` in stored units (DN) with the bands
    in the order asked for (by default all 13 in the registry's canonical L1C order, B8A after
    B08), ``bands`` (registry names), ``sensor`` ``"sentinel-2-l1c"``, ``label`` int64 class id
    (index in :data:`CLASSES`), ``lon``/``lat`` of the patch centre (WGS84, from the GeoTIFF),
    ``time`` NaN (unknown), ``gsd`` (pixel size from the transform, about 10 m), ``crs``,
    ``transform`` and the file ``name``.

    If you use this dataset in your research, please cite:

    * https://ieeexplore.ieee.org/document/8736785
    * https://ieeexplore.ieee.org/document/8519248

    .. code-block:: bibtex

        @article{helber2019eurosat,
          author  = {Helber, Patrick and Bischke, Benjamin and Dengel, Andreas and
                     Borth, Damian},
          title   = {{EuroSAT}: A Novel Dataset and Deep Learning Benchmark for Land Use and
                     Land Cover Classification},
          journal = {IEEE Journal of Selected Topics in Applied Earth Observations and Remote
                     Sensing},
          volume  = {12},
          number  = {7},
          pages   = {2217--2226},
          year    = {2019},
          doi     = {10.1109/JSTARS.2019.2918242},
        }

        @inproceedings{helber2018introducing,
          author    = {Helber, Patrick and Bischke, Benjamin and Dengel, Andreas and
                       Borth, Damian},
          title     = {Introducing {EuroSAT}: A Novel Dataset and Deep Learning Benchmark for
                       Land Use and Land Cover Classification},
          booktitle = {IGARSS 2018 - 2018 IEEE International Geoscience and Remote Sensing
                       Symposium},
          pages     = {204--207},
          year      = {2018},
          doi       = {10.1109/IGARSS.2018.8519248},
        }
    """

    classes: ClassVar[tuple[str, ...]] = CLASSES
    splits: ClassVar[tuple[str, ...]] = tuple(SPLIT_FILES)
    sensor: ClassVar[str] = _SENSOR.name

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] | None = "train",
        bands: Sequence[str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Index the patches of a split.

        Args:
            root: dataset root (see the class docstring).
            split: ``"train"``, ``"val"`` or ``"test"``; ``None`` for every patch on disk.
            bands: registry band names or aliases of Sentinel-2 L1C, in the order wanted;
                ``None`` for all 13 in canonical order.
            transforms: function applied to each Sample.

        Raises:
            UserInputError: for an unknown split; :class:`~thinkingearth.errors.UnknownBandError`
                for an unknown band.
            DataLayoutError: if the root, the image folder, the split file or a listed patch is
                missing.
        """
        if split is not None and split not in SPLIT_FILES:
            raise UserInputError(
                f"unknown EuroSAT split {split!r}; choose one of {', '.join(SPLIT_FILES)} or None"
            )
        self.bands: tuple[str, ...] = tuple(b.name for b in _SENSOR.select(bands))
        self._indexes = [FILE_BANDS.index(b) + 1 for b in self.bands]
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        if not self.root.is_dir():
            raise DataLayoutError(f"EuroSAT root {self.root} does not exist or is not a folder")
        self.image_dir = self._image_dir()
        self.files: list[Path] = self._index()

    def _image_dir(self) -> Path:
        for candidate in (self.root / BASE_DIR, self.root):
            if any((candidate / name).is_dir() for name in CLASSES):
                return candidate
        raise DataLayoutError(
            f"EuroSAT root {self.root} has no class folders "
            f"(expected {self.root / BASE_DIR}/<Class>/<Class>_<n>.tif)"
        )

    def _index(self) -> list[Path]:
        if self.split is None:
            files = sorted(
                p
                for name in CLASSES
                if (self.image_dir / name).is_dir()
                for p in (self.image_dir / name).glob(f"{name}_*.tif")
            )
            if not files:
                raise DataLayoutError(
                    f"no EuroSAT patches in {self.image_dir} (expected <Class>/<Class>_<n>.tif)"
                )
            return files
        split_path = self.root / SPLIT_FILES[self.split]
        if not split_path.is_file():
            raise DataLayoutError(
                f"EuroSAT split file {SPLIT_FILES[self.split]} not found in {self.root}"
            )
        files: list[Path] = []
        for line in split_path.read_text(encoding="utf-8").splitlines():
            name = line.strip()
            if not name:
                continue
            name = Path(name).with_suffix(".tif").name
            class_name = name.rsplit("_", 1)[0]
            if class_name not in CLASSES:
                raise DataLayoutError(
                    f"EuroSAT split file {split_path} lists {line.strip()!r}, whose class "
                    f"{class_name!r} is not one of {', '.join(CLASSES)}"
                )
            files.append(self.image_dir / class_name / name)
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise DataLayoutError(
                f"EuroSAT split file {split_path} lists {len(missing)} patch(es) not on disk, "
                f"e.g. {missing[0]}"
            )
        if not files:
            raise DataLayoutError(f"EuroSAT split file {split_path} lists no patches")
        return files

    def __len__(self) -> int:
        """Number of patches."""
        return len(self.files)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"patches={len(self)}, bands={len(self.bands)})"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read one patch as a Sample (see the class docstring for its keys)."""
        path = self.files[index]
        try:
            with rasterio.open(path) as src:
                if src.count != len(FILE_BANDS):
                    raise DataLayoutError(
                        f"EuroSAT patch {path} has {src.count} bands, expected "
                        f"{len(FILE_BANDS)} ({', '.join(FILE_BANDS)})"
                    )
                array = src.read(self._indexes, out_dtype="float32")
                crs, transform = src.crs, src.transform
        except RasterioIOError as err:
            raise DataLayoutError(f"cannot read EuroSAT patch {path}: {err}") from None
        height, width = array.shape[-2:]
        lon, lat = _centre_lonlat(crs, transform, width, height)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(array)),
            "bands": self.bands,
            "sensor": self.sensor,
            "label": torch.tensor(CLASSES.index(path.parent.name), dtype=torch.int64),
            "lon": lon,
            "lat": lat,
            "time": math.nan,
            "gsd": math.sqrt(abs(transform.a * transform.e - transform.b * transform.d)),
            "crs": crs.to_string() if crs is not None else "",
            "transform": tuple(float(v) for v in tuple(transform)[:6]),
            "name": path.stem,
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
