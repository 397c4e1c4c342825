"""Copernicus-Bench: the 15 tasks of Wang et al. (2025) through torchgeo, as Samples.

:class:`CopernicusBench` wraps torchgeo 0.8's ``CopernicusBench*`` datasets
(``torchgeo/datasets/copernicus/``) by task name and turns their samples into the toolkit's
Sample contract (:mod:`thinkingearth.data.sample`): registry band names, ``label``/``mask``/
``target`` by task kind, time in **days** (torchgeo gives seconds since 1970), ``lon``/``lat``
and ``gsd``, NaN where unknown. It never downloads or extracts anything (``download=False``): the
layout is checked first and a missing file is a one-line
:class:`~thinkingearth.errors.DataLayoutError` that names the file expected and where.

Layout facts (torchgeo 0.8 sources and its ``tests/data/copernicus/*/data.py``; the folder of a
task's split files is ``<task root>/<directory>``, see :data:`TASKS`):

==============  =========================  ===========================================  =========
task            split file                 data folders (beside the split file)         sensor
==============  =========================  ===========================================  =========
cloud_s2        cloud_s2/{split}.csv       s2_toa/, cloud/ (``<name>.tif``)             S2 L1C
cloud_s3        cloud_s3/{split}.csv       s3_olci/, cloud_multi/ or cloud_binary/      S3 OLCI
eurosat_s1      eurosat_s1/eurosat-*.txt   all_imgs/<Class>/<Class>_<n>.tif             S1 GRD
eurosat_s2      eurosat_s2/eurosat-*.txt   all_imgs/<Class>/<Class>_<n>.tif (B8A last)  S2 L1C
bigearthnet_s1  bigearthnet_s1s2/          BigEarthNet-S1-5%/<product>/<patch>/*.tif    S1 GRD
                multilabel-{split}.csv
bigearthnet_s2  (same)                     BigEarthNet-S2-5%/<product>/<patch>/*.tif    S2 L2A
lc100cls_s3     lc100_s3/                  s3_olci/<pid>/S3?_<start>_<stop>.tif, and    S3 OLCI
                multilabel-{split}.csv     static_fnames-{split}.csv (static mode)
lc100seg_s3     (same)                     (same) and lc100/<pid>.tif                   S3 OLCI
dfc2020_s1      dfc2020_s1s2/              s1/, dfc/ (``ROIs…_dfc_…tif``)                S1 GRD
                dfc-{split}-new.csv
dfc2020_s2      (same)                     s2/, dfc/                                    S2 L1C
flood_s1        flood_s1/                  data/<actid>/<aoi>/<tile>/ (Kuro Siwo)        S1 GRD
                grid_dict_{split}.json
lcz_s2          lcz_{split}.h5 (root)      HDF5 datasets ``sen2`` and ``label``         S2 L1C
biomass_s3      biomass_s3/                s3_olci/<pid>/S3?_*.tif, biomass/<pid>.tif   S3 OLCI
                static_fnames-{split}.csv
aq_no2_s5p      airquality_s5p/no2/        s5p_annual/ or s5p_seasonal/<pid>/*.tif,     S5P
                {split}.csv                label_annual/<pid>.tif
aq_o3_s5p       airquality_s5p/o3/ …       (same)                                       S5P
==============  =========================  ===========================================  =========

``root`` may be the task root (the folder holding ``cloud_s2/`` …) or the benchmark root that
holds the Hugging Face folders (``l1_cloud_s2/``, ``l2_eurosat_s1s2/``, …, ``l3_airquality_s5p/``).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor
from torch.utils.data import Dataset

from thinkingearth.errors import DataLayoutError, UnknownBandError, UserInputError
from thinkingearth.sensors import Sensor, get_sensor

__all__ = [
    "IGNORE_INDEX",
    "OLCI_RADIANCE_SCALE",
    "TASKS",
    "CopernicusBench",
    "CopernicusBenchTask",
    "TaskKind",
    "TaskName",
]

TaskName = Literal[
    "cloud_s2",
    "cloud_s3",
    "eurosat_s1",
    "eurosat_s2",
    "bigearthnet_s1",
    "bigearthnet_s2",
    "lc100cls_s3",
    "lc100seg_s3",
    "dfc2020_s1",
    "dfc2020_s2",
    "flood_s1",
    "lcz_s2",
    "biomass_s3",
    "aq_no2_s5p",
    "aq_o3_s5p",
]
TaskKind = Literal["classification", "multilabel", "segmentation", "regression"]

#: Mask value of pixels the benchmark protocol ignores (cloud_s3 invalid, dfc2020 background and
#: the two absent classes).
IGNORE_INDEX = 255

#: Per-band factor from the stored OLCI values of the S3 tasks to TOA radiance
#: (W m⁻² sr⁻¹ µm⁻¹), ``all_band_scale`` of the Copernicus-Bench dataset wrappers in
#: zhu-xlab/Copernicus-FM (``Copernicus-Bench/src/datasets/cobench_*s3_wrapper.py``). The reader
#: returns the stored values; multiply by these to get radiance.
OLCI_RADIANCE_SCALE: Mapping[str, float] = MappingProxyType(
    dict(
        zip(
            (f"Oa{i:02d}" for i in range(1, 22)),
            (0.0139465, 0.0133873, 0.0121481, 0.0115198, 0.0100953, 0.0123538, 0.00879161,
             0.00876539, 0.0095103, 0.00773378, 0.00675523, 0.0071996, 0.00749684, 0.0086512,
             0.00526779, 0.00530267, 0.00493004, 0.00549962, 0.00502847, 0.00326378,
             0.00324118),
            strict=True,
        )
    )
)  # fmt: skip

_EUROSAT_CLASSES = (
    "AnnualCrop", "HerbaceousVegetation", "Industrial", "PermanentCrop", "River", "Forest",
    "Highway", "Pasture", "Residential", "SeaLake",
)  # fmt: skip
_BEN19 = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops",
    "Pastures", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation", "Transitional woodland, shrub",
    "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands", "Inland waters",
    "Marine waters",
)  # fmt: skip
_LC100 = (
    "Unknown", "Shrubs", "Herbaceous vegetation",
    "Cultivated and managed vegetation / agriculture", "Urban / built up",
    "Bare / sparse vegetation", "Snow and ice", "Permanent water bodies", "Herbaceous wetland",
    "Moss and lichen", "Closed forest, evergreen needle leaf",
    "Closed forest, evergreen broad leaf", "Closed forest, deciduous needle leaf",
    "Closed forest, deciduous broad leaf", "Closed forest, mixed",
    "Closed forest, not matching any of the other definitions",
    "Open forest, evergreen needle leaf", "Open forest, evergreen broad leaf",
    "Open forest, deciduous needle leaf", "Open forest, deciduous broad leaf",
    "Open forest, mixed", "Open forest, not matching any of the other definitions",
    "Oceans, seas",
)  # fmt: skip
_LCZ = (
    "Compact high rise", "Compact mid rise", "Compact low rise", "Open high rise",
    "Open mid rise", "Open low rise", "Lightweight low rise", "Large low rise",
    "Sparsely built", "Heavy industry", "Dense trees", "Scattered trees", "Bush, scrub",
    "Low plants", "Bare rock or paved", "Bare soil or sand", "Water",
)  # fmt: skip
# DFC2020 protocol of Copernicus-Bench (cls_mapping in cobench_dfc2020s12_wrapper.py): background
# and the two classes absent from the data (savanna, snow/ice) are ignored, the rest renumbered.
_DFC_MAP = {0: 255, 1: 0, 2: 1, 3: 255, 4: 2, 5: 3, 6: 4, 7: 5, 8: 255, 9: 6, 10: 7}
_DFC_CLASSES = (
    "Forest", "Shrubland", "Grassland", "Wetlands", "Croplands", "Urban/Built-up", "Barren",
    "Water",
)  # fmt: skip
# Cloud-S3 protocol (cobench_clouds3_wrapper.py): 0 invalid is ignored, the other codes shift down.
_CLOUD_S3 = {
    "multi": (
        ("Clear", "Cloud-Ambiguous", "Cloud-Sure", "Cloud Shadow", "Snow/Ice"),
        {0: 255, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4},
    ),
    "binary": (("Clear", "Cloud"), {0: 255, 1: 0, 2: 1}),
}


@dataclass(frozen=True)
class CopernicusBenchTask:
    """Facts about one Copernicus-Bench task.

    Attributes:
        name: task name (torchgeo's registry key).
        torchgeo_class: class name in ``torchgeo.datasets.copernicus``.
        sensor: sensor registry name.
        kind: ``"classification"`` (``label`` int64 scalar), ``"multilabel"`` (``label`` multi-hot),
            ``"segmentation"`` (``mask`` int64 ``[H, W]``) or ``"regression"`` (``target``
            float32 ``[H, W]``).
        hub_folder: folder of the task in the Hugging Face dataset ``wangyi111/Copernicus-Bench``.
        directory: folder of the split files, relative to the task root (``""`` = the root).
        split_file: split file name, ``{split}`` is replaced by the split.
        folders: data folders beside the split file; ``{mode}`` is replaced by the mode.
        extra_files: other files beside the split file that a mode needs (``{split}``, ``{mode}``).
        classes: class names of ``label``/``mask`` after the benchmark's remapping.
        ignore_index: mask value to ignore, ``None`` if every value is a class.
        label_map: torchgeo mask value -> benchmark class (the protocol of the Copernicus-Bench
            code); values it does not list become ``ignore_index``. ``None``: no remapping.
        gsd: nominal pixel size of the image in metres.
        modes: the torchgeo ``mode`` values, default first; empty if the task has none.
        mode_classes: per-mode ``(classes, label_map)`` overriding the two fields above.
        values: what the image values are.
        units: SAR units of the image, ``"db"`` or ``"linear"`` (sigma0); ``None`` for other
            sensors. Samples carry it as ``units``.
        requires: Python package the task needs besides torchgeo, if any.
    """

    name: str
    torchgeo_class: str
    sensor: str
    kind: TaskKind
    hub_folder: str
    directory: str
    split_file: str
    folders: tuple[str, ...]
    classes: tuple[str, ...] = ()
    ignore_index: int | None = None
    label_map: Mapping[int, int] | None = None
    gsd: float = math.nan
    modes: tuple[str | int, ...] = ()
    extra_files: Mapping[str | int, tuple[str, ...]] = field(default_factory=dict)
    mode_classes: Mapping[str | int, tuple[tuple[str, ...], Mapping[int, int]]] = field(
        default_factory=dict
    )
    values: str = ""
    units: Literal["linear", "db"] | None = None
    requires: str | None = None


def _task(**kwargs: Any) -> CopernicusBenchTask:
    return CopernicusBenchTask(**kwargs)


_S2_L1C_DN = "L1C top-of-atmosphere reflectance DN (reflectance x 1e4)"
_OLCI = "OLCI level-1 EFR values as stored; radiance = value x OLCI_RADIANCE_SCALE[band]"

#: The 15 tasks by name, in the order of the Copernicus-Bench paper.
TASKS: Mapping[str, CopernicusBenchTask] = MappingProxyType(
    {
        t.name: t
        for t in (
            _task(
                name="cloud_s2", torchgeo_class="CopernicusBenchCloudS2",
                sensor="sentinel-2-l1c", kind="segmentation", hub_folder="l1_cloud_s2",
                directory="cloud_s2", split_file="{split}.csv", folders=("s2_toa", "cloud"),
                classes=("Clear", "Thick Cloud", "Thin Cloud", "Cloud Shadow"), gsd=10.0,
                values=_S2_L1C_DN + " (CloudSEN12)",
            ),
            _task(
                name="cloud_s3", torchgeo_class="CopernicusBenchCloudS3",
                sensor="sentinel-3-olci", kind="segmentation", hub_folder="l1_cloud_s3",
                directory="cloud_s3", split_file="{split}.csv",
                folders=("s3_olci", "cloud_{mode}"), classes=_CLOUD_S3["multi"][0],
                ignore_index=IGNORE_INDEX, label_map=_CLOUD_S3["multi"][1], gsd=300.0,
                modes=("multi", "binary"), mode_classes=_CLOUD_S3, values=_OLCI,
            ),
            _task(
                name="eurosat_s1", torchgeo_class="CopernicusBenchEuroSATS1",
                sensor="sentinel-1-grd", kind="classification", hub_folder="l2_eurosat_s1s2",
                directory="eurosat_s1", split_file="eurosat-{split}.txt", folders=("all_imgs",),
                classes=_EUROSAT_CLASSES, gsd=10.0,
                values="VV, VH backscatter in dB (EuroSAT-SAR, from Earth Engine S1 GRD)",
                units="db",
            ),
            _task(
                name="eurosat_s2", torchgeo_class="CopernicusBenchEuroSATS2",
                sensor="sentinel-2-l1c", kind="classification", hub_folder="l2_eurosat_s1s2",
                directory="eurosat_s2", split_file="eurosat-{split}.txt", folders=("all_imgs",),
                classes=_EUROSAT_CLASSES, gsd=10.0, values=_S2_L1C_DN + " (EuroSAT-MS)",
            ),
            _task(
                name="bigearthnet_s1", torchgeo_class="CopernicusBenchBigEarthNetS1",
                sensor="sentinel-1-grd", kind="multilabel", hub_folder="l2_bigearthnet_s1s2",
                directory="bigearthnet_s1s2", split_file="multilabel-{split}.csv",
                folders=("BigEarthNet-S1-5%",), classes=_BEN19, gsd=10.0,
                values="VV, VH backscatter in dB (BigEarthNet v2)", units="db",
            ),
            _task(
                name="bigearthnet_s2", torchgeo_class="CopernicusBenchBigEarthNetS2",
                sensor="sentinel-2-l2a", kind="multilabel", hub_folder="l2_bigearthnet_s1s2",
                directory="bigearthnet_s1s2", split_file="multilabel-{split}.csv",
                folders=("BigEarthNet-S2-5%",), classes=_BEN19, gsd=10.0,
                values="L2A surface reflectance DN, 12 bands resampled to 10 m (BigEarthNet v2)",
            ),
            _task(
                name="lc100cls_s3", torchgeo_class="CopernicusBenchLC100ClsS3",
                sensor="sentinel-3-olci", kind="multilabel", hub_folder="l2_lc100_s3",
                directory="lc100_s3", split_file="multilabel-{split}.csv", folders=("s3_olci",),
                extra_files={"static": ("static_fnames-{split}.csv",)}, classes=_LC100,
                gsd=300.0, modes=("static", "time-series"), values=_OLCI,
            ),
            _task(
                name="lc100seg_s3", torchgeo_class="CopernicusBenchLC100SegS3",
                sensor="sentinel-3-olci", kind="segmentation", hub_folder="l2_lc100_s3",
                directory="lc100_s3", split_file="multilabel-{split}.csv",
                folders=("s3_olci", "lc100"),
                extra_files={"static": ("static_fnames-{split}.csv",)}, classes=_LC100,
                gsd=300.0, modes=("static", "time-series"),
                values=_OLCI + "; the mask is on the 100 m LC100 grid (3x the image)",
            ),
            _task(
                name="dfc2020_s1", torchgeo_class="CopernicusBenchDFC2020S1",
                sensor="sentinel-1-grd", kind="segmentation", hub_folder="l2_dfc2020_s1s2",
                directory="dfc2020_s1s2", split_file="dfc-{split}-new.csv", folders=("s1", "dfc"),
                classes=_DFC_CLASSES, ignore_index=IGNORE_INDEX, label_map=_DFC_MAP, gsd=10.0,
                values="VV, VH backscatter in dB (SEN12MS)", units="db",
            ),
            _task(
                name="dfc2020_s2", torchgeo_class="CopernicusBenchDFC2020S2",
                sensor="sentinel-2-l1c", kind="segmentation", hub_folder="l2_dfc2020_s1s2",
                directory="dfc2020_s1s2", split_file="dfc-{split}-new.csv", folders=("s2", "dfc"),
                classes=_DFC_CLASSES, ignore_index=IGNORE_INDEX, label_map=_DFC_MAP, gsd=10.0,
                values=_S2_L1C_DN + " (SEN12MS)",
            ),
            _task(
                name="flood_s1", torchgeo_class="CopernicusBenchFloodS1",
                sensor="sentinel-1-grd", kind="segmentation", hub_folder="l3_flood_s1",
                directory="flood_s1", split_file="grid_dict_{split}.json", folders=("data",),
                classes=("No Water", "Permanent Waters", "Floods"), ignore_index=3, gsd=10.0,
                modes=(1, 2),
                values="Kuro Siwo VV, VH linear sigma0; image [T, 2, H, W]: (SL2,) SL1, MS1",
                units="linear",
            ),
            _task(
                name="lcz_s2", torchgeo_class="CopernicusBenchLCZS2", sensor="sentinel-2-l1c",
                kind="classification", hub_folder="l3_lcz_s2", directory="",
                split_file="lcz_{split}.h5", folders=(), classes=_LCZ, gsd=10.0,
                values="So2Sat LCZ42 Sentinel-2 reflectance (10 bands, no B01/B09/B10)",
                requires="h5py",
            ),
            _task(
                name="biomass_s3", torchgeo_class="CopernicusBenchBiomassS3",
                sensor="sentinel-3-olci", kind="regression", hub_folder="l3_biomass_s3",
                directory="biomass_s3", split_file="static_fnames-{split}.csv",
                folders=("s3_olci", "biomass"), gsd=300.0, modes=("static", "time-series"),
                values=_OLCI + "; target: CCI above-ground biomass (Mg/ha) on its 100 m grid",
            ),
            _task(
                name="aq_no2_s5p", torchgeo_class="CopernicusBenchAQNO2S5P",
                sensor="sentinel-5p", kind="regression", hub_folder="l3_airquality_s5p",
                directory="airquality_s5p/no2", split_file="{split}.csv",
                folders=("s5p_{mode}", "label_annual"), gsd=1000.0,
                modes=("annual", "seasonal"),
                values="S5P tropospheric NO2 column (mol/m^2, 2021 mean); target: EEA NO2",
            ),
            _task(
                name="aq_o3_s5p", torchgeo_class="CopernicusBenchAQO3S5P",
                sensor="sentinel-5p", kind="regression", hub_folder="l3_airquality_s5p",
                directory="airquality_s5p/o3", split_file="{split}.csv",
                folders=("s5p_{mode}", "label_annual"), gsd=1000.0,
                modes=("annual", "seasonal"),
                values="S5P total O3 column (mol/m^2, 2021 mean); target: EEA O3 (SOMO35)",
            ),
        )
    }
)  # fmt: skip

assert tuple(TASKS) == get_args(TaskName)

_SECONDS_PER_DAY = 86400.0
_FILL_LIMIT = 1e10  # regression targets beyond this magnitude are fill values (the AQ labels)


def _registry_band(sensor: Sensor, torchgeo_band: str) -> str:
    """Registry name of a torchgeo band name (``Oa01_radiance`` -> ``Oa01``)."""
    return sensor.band(torchgeo_band.removesuffix("_radiance")).name


def _days(value: Any) -> float | Tensor:
    """torchgeo seconds since 1970 (scalar or ``[T]``) as days: float or float64 ``[T]``."""
    seconds = torch.as_tensor(value, dtype=torch.float64)
    days = seconds / _SECONDS_PER_DAY
    return float(days) if days.ndim == 0 else days


def _scalar(value: Any) -> float:
    """A lon/lat value (a time series repeats it per step: take the first)."""
    if value is None:
        return math.nan
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    return float(tensor[0]) if tensor.numel() else math.nan


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class CopernicusBench(Dataset):
    """Copernicus-Bench: 15 Sentinel-1/2/3/5P tasks in three levels, as Samples.

    `Copernicus-Bench <https://huggingface.co/datasets/wangyi111/Copernicus-Bench>`__ (Wang et al.
    2025) evaluates Earth-observation foundation models on 15 hierarchical tasks: level 1
    preprocessing (cloud_s2, cloud_s3), level 2 base applications (eurosat_s1/s2,
    bigearthnet_s1/s2, lc100cls_s3, lc100seg_s3, dfc2020_s1/s2) and level 3 specialised
    applications (flood_s1, lcz_s2, biomass_s3, aq_no2_s5p, aq_o3_s5p). This class reads a task
    through torchgeo's ``CopernicusBench*`` dataset and converts each sample; :data:`TASKS` holds
    the facts of every task (sensor, kind, classes, ignore index, layout, units).

    Dataset features (per task, from the Copernicus-Bench README): cloud_s2 512x512x13,
    1699/567/551; cloud_s3 256x256x21, 1197/399/399; eurosat_s1/s2 64x64, 16200/5400/5400;
    bigearthnet_s1/s2 120x120, 11894/6117/5991; lc100 96x96x21 (mask 288x288), 5181/1727/1727;
    dfc2020 256x256, 3156/986/986; flood_s1 224x224x2 (2 or 3 dates), 3000/1000/1000; lcz_s2
    32x32x10, 15000/5000/5000; biomass_s3 96x96x21 (target 288x288), 3000/1000/1000; aq 56x56x1,
    1480/493/494.

    Dataset format: see the module docstring (torchgeo's layout; ``root`` is the task root or
    the benchmark root with the Hugging Face ``l1_…``/``l2_…``/``l3_…`` folders).

    Each item is a Sample: ``image`` float32 ``[C, H, W]`` (``[T, C, H, W]`` for flood_s1 and the
    time-series/seasonal modes) in stored units (:attr:`CopernicusBenchTask.values`),
    ``bands`` (registry names: ``Oa01_radiance`` becomes ``Oa01``), ``sensor`` (registry name),
    then by task kind ``label`` int64 (class id, or multi-hot ``[K]``), ``mask`` int64 ``[H, W]``
    (remapped to the benchmark's classes, ignored pixels = :attr:`ignore_index`) or ``target``
    float32 ``[H, W]`` (non-finite and fill values beyond 1e10 made NaN); ``lon``/``lat`` of the
    image centre (NaN where torchgeo gives none: un-georeferenced files, lcz_s2), ``time`` in days
    since 1970-01-01 (torchgeo's midpoint of the date or date range in the file name, NaN where
    the name has none; float64 ``[T]`` for time series; torchgeo keeps seconds as float32, so
    times are good to about a minute), ``gsd`` (:attr:`CopernicusBenchTask.gsd`, nominal) and
    ``task``; Sentinel-1 samples also carry ``units`` (``"db"`` for eurosat_s1, bigearthnet_s1
    and dfc2020_s1, ``"linear"`` for flood_s1). Note that the EuroSAT tasks use torchgeo's Copernicus-Bench class order, not the
    alphabetical one of :class:`~thinkingearth.data.formats.eurosat.EuroSATMS`.

    If you use this dataset in your research, please cite:

    * https://arxiv.org/abs/2503.11849

    .. code-block:: bibtex

        @misc{wang2025copernicusfm,
          title         = {Towards a Unified {Copernicus} Foundation Model for Earth Vision},
          author        = {Wang, Yi and Xiong, Zhitong and Liu, Chenying and Stewart, Adam J.
                           and Dujardin, Thomas and Bountos, Nikolaos Ioannis and Zavras,
                           Angelos and Gerken, Franziska and Papoutsis, Ioannis and
                           Leal-Taix{\\'e}, Laura and Zhu, Xiao Xiang},
          year          = {2025},
          eprint        = {2503.11849},
          archivePrefix = {arXiv},
          primaryClass  = {cs.CV},
        }

    and the source dataset of the task (CloudSEN12, EuroSAT, EuroSAT-SAR, BigEarthNet v2,
    DFC2020, Kuro Siwo, So2Sat LCZ42, CGLS-LC100, CCI Biomass, EEA air quality).
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    tasks: ClassVar[Mapping[str, CopernicusBenchTask]] = TASKS

    def __init__(
        self,
        name: TaskName,
        root: str | Path,
        split: Literal["train", "val", "test"] = "train",
        bands: Sequence[str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        mode: str | int | None = None,
        raw_labels: bool = False,
    ) -> None:
        """Check the layout of a task and open it through torchgeo (never downloading).

        Args:
            name: task name, one of :data:`TASKS`.
            root: task root, or the benchmark root holding the Hugging Face task folders.
            split: ``"train"``, ``"val"`` or ``"test"``.
            bands: registry band names or aliases of the task's sensor, in the order wanted;
                ``None`` for all the task has, in torchgeo's order.
            transforms: function applied to each Sample.
            mode: torchgeo's ``mode`` for the tasks that have one (cloud_s3 ``"multi"``/
                ``"binary"``, flood_s1 ``1``/``2`` pre-flood images, lc100/biomass ``"static"``/
                ``"time-series"``, aq ``"annual"``/``"seasonal"``); ``None`` for the default.
            raw_labels: keep torchgeo's mask values instead of the benchmark's remapping
                (cloud_s3, dfc2020); :attr:`classes` are then torchgeo's and nothing is ignored.

        Raises:
            UserInputError: for an unknown task, split, mode or a missing optional package;
                :class:`~thinkingearth.errors.UnknownBandError` for a band the task lacks.
            DataLayoutError: if the root, the split file, a data folder or a mode's file is
                missing or unreadable.
        """
        if name not in TASKS:
            raise UserInputError(
                f"unknown Copernicus-Bench task {name!r}; expected one of: {', '.join(TASKS)}"
            )
        if split not in self.splits:
            raise UserInputError(
                f"unknown Copernicus-Bench split {split!r}; choose one of {', '.join(self.splits)}"
            )
        task = TASKS[name]
        self.task = task
        self.name = name
        self.split = split
        self.transforms = transforms
        self.mode = self._check_mode(task, mode)
        self._sensor = get_sensor(task.sensor)
        self.sensor = self._sensor.name
        cls = self._torchgeo_class(task)
        available = {_registry_band(self._sensor, b): b for b in cls.all_bands}
        if bands is None:
            self.bands: tuple[str, ...] = tuple(available)
        else:
            chosen = tuple(b.name for b in self._sensor.select(bands))
            lacking = [b for b in chosen if b not in available]
            if lacking:
                raise UnknownBandError(
                    f"Copernicus-Bench {name} has no band {', '.join(lacking)}; expected some "
                    f"of: {', '.join(available)}"
                )
            self.bands = chosen
        classes, label_map = task.classes, task.label_map
        if self.mode in task.mode_classes:
            classes, label_map = task.mode_classes[self.mode]
        self.ignore_index: int | None = task.ignore_index
        raw = raw_labels and label_map is not None
        if raw:
            label_map, self.ignore_index = None, None
        self.classes: tuple[str, ...] = tuple(classes)
        self._lut = self._lookup(label_map)
        self.root = self._task_root(Path(root))
        self._check_layout()
        kwargs: dict[str, Any] = {
            "root": str(self.root),
            "split": split,
            "bands": [available[b] for b in self.bands],
            "transforms": None,
            "download": False,
        }
        if task.modes:
            kwargs["mode"] = self.mode
        split_path = self._split_path()
        try:
            self.dataset = cls(**kwargs)
            self._length = len(self.dataset)
        except Exception as err:  # torchgeo/pandas/json/h5py errors on a malformed layout
            raise DataLayoutError(
                f"Copernicus-Bench {name}: cannot read {split_path}: {_one_line(err)}"
            ) from None
        if raw:  # torchgeo's own classes (set per mode by its constructor)
            self.classes = tuple(self.dataset.classes)

    # --------------------------------------------------------------------------------- checks

    @staticmethod
    def _check_mode(task: CopernicusBenchTask, mode: str | int | None) -> str | int | None:
        if not task.modes:
            if mode is not None:
                raise UserInputError(f"Copernicus-Bench {task.name} has no mode; got {mode!r}")
            return None
        if mode is None:
            return task.modes[0]
        if mode not in task.modes:
            raise UserInputError(
                f"unknown mode {mode!r} for Copernicus-Bench {task.name}; choose one of "
                + ", ".join(repr(m) for m in task.modes)
            )
        return mode

    @staticmethod
    def _torchgeo_class(task: CopernicusBenchTask) -> Any:
        if task.requires is not None and importlib.util.find_spec(task.requires) is None:
            raise UserInputError(
                f"Copernicus-Bench {task.name} needs the Python package {task.requires}: "
                f"pip install {task.requires}"
            )
        module = importlib.import_module("torchgeo.datasets.copernicus")
        return getattr(module, task.torchgeo_class)

    @staticmethod
    def _lookup(label_map: Mapping[int, int] | None) -> Tensor | None:
        if label_map is None:
            return None
        lut = torch.full((max(label_map) + 1,), IGNORE_INDEX, dtype=torch.int64)
        for source, target in label_map.items():
            lut[source] = target
        return lut

    def _relative_split_file(self) -> Path:
        return Path(self.task.directory, self.task.split_file.format(split=self.split))

    def _split_path(self) -> Path:
        return self.root / self._relative_split_file()

    def _task_root(self, root: Path) -> Path:
        if not root.is_dir():
            raise DataLayoutError(f"Copernicus-Bench root {root} does not exist or is not a folder")
        relative = self._relative_split_file()
        for candidate in (root, root / self.task.hub_folder):
            if (candidate / relative).is_file():
                return candidate
        cls = self._torchgeo_class(self.task)
        archive = getattr(cls, "zipfile", None)
        hint = f"; extract {archive} there" if archive else ""
        raise DataLayoutError(
            f"Copernicus-Bench {self.name}: split file {relative} not found in {root} "
            f"(expected {root / relative}{hint})"
        )

    def _check_layout(self) -> None:
        folder = self._split_path().parent
        for name in self.task.folders:
            path = folder / name.format(mode=self.mode)
            if not path.is_dir():
                raise DataLayoutError(
                    f"Copernicus-Bench {self.name}: folder {path.name}/ not found in {folder}"
                )
        for name in self.task.extra_files.get(self.mode, ()) if self.mode is not None else ():
            path = folder / name.format(split=self.split, mode=self.mode)
            if not path.is_file():
                raise DataLayoutError(
                    f"Copernicus-Bench {self.name}: file {path.name} not found in {folder} "
                    f"(needed for mode {self.mode!r})"
                )

    # -------------------------------------------------------------------------------- samples

    def __len__(self) -> int:
        """Number of samples in the split."""
        return self._length

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r}, "
            f"split={self.split!r}, samples={len(self)})"
        )

    def _read(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except (OSError, IndexError, KeyError, ValueError, RuntimeError) as err:
            where = ""
            if self.name == "flood_s1":
                key = self.dataset.files[index]
                tile = self.root / "flood_s1" / "data" / self.dataset.metadata[key]["path"]
                where = f" (tile {tile} needs SL1/MS1 I{{VV,VH}} and MK0_MLU GeoTIFFs)"
            raise DataLayoutError(
                f"Copernicus-Bench {self.name} sample {index}: {_one_line(err)}{where}"
            ) from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read one sample and convert it to a Sample (see the class docstring)."""
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} samples")
        raw = self._read(index % self._length)
        sample: dict[str, Any] = {
            "image": raw["image"].to(torch.float32).contiguous(),
            "bands": self.bands,
            "sensor": self.sensor,
            "lon": _scalar(raw.get("lon")),
            "lat": _scalar(raw.get("lat")),
            "time": _days(raw["time"]) if "time" in raw else math.nan,
            "gsd": self.task.gsd,
            "task": self.name,
        }
        if self.task.units is not None:
            sample["units"] = self.task.units
        kind = self.task.kind
        if kind in ("classification", "multilabel"):
            sample["label"] = torch.as_tensor(raw["label"]).to(torch.int64)
        elif kind == "segmentation":
            mask = torch.as_tensor(raw["mask"]).to(torch.int64)
            if self._lut is not None:
                inside = (mask >= 0) & (mask < self._lut.numel())
                remapped = torch.full_like(mask, IGNORE_INDEX)
                remapped[inside] = self._lut[mask[inside]]
                mask = remapped
            sample["mask"] = mask
        else:
            target = torch.as_tensor(raw["mask"]).to(torch.float32).clone()
            target[~torch.isfinite(target) | (target.abs() > _FILL_LIMIT)] = math.nan
            sample["target"] = target
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
