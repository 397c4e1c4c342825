"""The synthetic Copernicus world: the embedded default for the demo, the tests and CPU benchmarks.

Every scene is generated procedurally and deterministically from ``(seed, index)``, and all its
sensors are co-registered on one grid (``gsd`` metres per pixel, 10 m by default):

* **terrain**: a DEM from fractal (1/f^β) noise, with a meandering river carved into a valley and
  lakes filling the lowest ground;
* **land cover** (:data:`LANDCOVER_CLASSES`, 9 classes after ESA WorldCover): the argmax of class
  affinities to elevation, slope, height above the nearest water and distance to water, plus
  smooth noise, so classes form coherent patches; cropland is split into parcels with their own
  crop calendars;
* **Sentinel-2** (L2A surface reflectance, or L1C top of atmosphere with Rayleigh path radiance,
  water-vapour and cirrus absorption): linear mixing of endmember spectra (green and dry
  vegetation, soil, rock, urban, snow, water) integrated over each band's width from the sensor
  registry, vegetation phenology by day of year and latitude, terrain illumination, sensor noise,
  optional clouds with shadows and a cloud mask (0 clear, 1 thick, 2 thin, 3 shadow);
* **Sentinel-1** GRD sigma0 (VV, VH) per class, modulated by local incidence angle, vegetation,
  soil moisture and wind on water, with multiplicative gamma speckle (ENL 4.4); three
  acquisitions as in Kuro Siwo (SL2, SL1 pre-event, MS1 post-event) where, in a flood event,
  water spreads over low ground near the river: open floodwater turns dark, flooded forest and
  built-up turn brighter (double bounce). Labels as Kuro Siwo: 0 no water, 1 permanent water,
  2 flood, 3 invalid (swath edges with no data);
* **Sentinel-3 OLCI**: the same surface at the 21 OLCI bands, block-averaged to 300 m;
* **Sentinel-5P NO2**: tropospheric column (mol/m²) from built-up emissions advected downwind
  into plumes over a regional background;
* **above-ground biomass** (Mg/ha), a regression target tied to tree cover, shrubs and crops, and
  visible through canopy density (S2 red/NIR/SWIR) and VH volume scattering (S1);
* **Landsat 8/9 OLI** (``B1``..``B7``): the same surface, clouds and date as Sentinel-2 through
  the OLI band edges of the sensor registry, block-averaged to 30 m, as Collection 2 Level-2
  surface-reflectance digital numbers (DN = (reflectance + 0.2) / 2.75e-5), with its own noise;
* a **caption** written from the scene's label statistics, and per-scene lon/lat/time/gsd.

Controllable shift (:class:`WorldConfig`; every default reproduces the original world exactly,
and the extra randomness of a shift comes from generators of its own, never from the scene's):

* ``biome``: a preset of :data:`BIOMES` (``temperate`` = the original world, ``boreal``,
  ``mediterranean``, ``tropical``, ``arid``) that moves the lat/lon box, the vegetation red edge
  and NIR plateau, soil colour and brightness, land-cover priors, phenology timing and
  amplitude, the snowline and soil moisture;
* explicit knobs overriding the biome's value: ``vegetation_shift`` (relative change of the green
  vegetation NIR plateau), ``soil_brightness`` (multiplier of soil reflectance),
  ``phenology_shift_days``, ``soil_moisture_db`` (added to soil-like sigma0), ``speckle_looks``
  (ENL of the Sentinel-1 speckle, quantile-mapped from the default draws so nothing else moves);
* ``flood_type``: ``rural`` (no settlements; fields and grass line the river, floods are dark
  open water) or ``urban`` (towns sit on the river; floods reach built-up and trees, which turn
  brighter by double bounce);
* ``season``: the Sentinel-2 date's day of year falls in ``winter``, ``spring``, ``summer`` or
  ``autumn`` (the captions' northern astronomical seasons).

The world is learnable but not trivial: per-band means do not solve the tasks, and flood mapping
needs the pre-event images because permanent water and floodwater look alike after the event.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Literal, get_args

import numpy as np
import torch
from scipy import ndimage, special
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from thinkingearth.data.sample import to_days
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import Band, get_bands, get_sensor

__all__ = [
    "BIOMES",
    "FLOOD_CLASSES",
    "LANDCOVER_CLASSES",
    "SEASON_DAYS",
    "WORLD_SHIFT_FIELDS",
    "Biome",
    "SyntheticCopernicus",
    "SyntheticScene",
    "Task",
    "WorldConfig",
    "generate_scene",
    "world_spectra",
]

LANDCOVER_CLASSES: tuple[str, ...] = (
    "water",
    "tree cover",
    "shrubland",
    "grassland",
    "cropland",
    "built-up",
    "bare",
    "snow and ice",
    "wetland",
)
WATER, TREE, SHRUB, GRASS, CROP, BUILT, BARE, SNOW, WETLAND = range(len(LANDCOVER_CLASSES))

#: Kuro Siwo's flood classes; 3 marks invalid pixels (ignored).
FLOOD_CLASSES: tuple[str, ...] = ("no water", "permanent water", "flood")
FLOOD_IGNORE_INDEX = 3

#: Share of a scene above which a land-cover class counts as present in the multi-label task
#: (BigEarthNet labels a class when its CORINE polygons cover part of the patch; 5 % keeps
#: specks out).
PRESENCE_THRESHOLD = 0.05

Task = Literal["multilabel", "landcover", "flood", "water", "biomass", "no2", "none"]

S1_ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRDH (ESA product specification)
S1_REVISIT_DAYS = 12  # one satellite's repeat cycle

# --------------------------------------------------------------------------------------------
# Spectra: surface reflectance of the endmembers, sampled on a wavelength grid (nm). Values are
# typical library shapes (USGS splib07 / ECOSTRESS families): vegetation's green peak, red
# absorption, red edge and NIR plateau with liquid-water dips; soils rising into the SWIR; snow
# bright in the visible and dark past 1.4 µm; water dark beyond the red.
# --------------------------------------------------------------------------------------------
# fmt: off
_WL = np.array([400, 443, 490, 530, 560, 600, 665, 690, 705, 740, 783, 842, 865, 945, 1020, 1200,
                1375, 1450, 1610, 1800, 1940, 2190, 2400, 2500], dtype=np.float64)
_ENDMEMBER_SPECTRA: dict[str, list[float]] = {
    "green vegetation": [0.030, 0.035, 0.040, 0.070, 0.090, 0.060, 0.035, 0.050, 0.120, 0.300,
                         0.400, 0.430, 0.440, 0.420, 0.410, 0.390, 0.160, 0.120, 0.240, 0.220,
                         0.080, 0.120, 0.080, 0.070],
    "dry vegetation": [0.060, 0.070, 0.090, 0.110, 0.130, 0.150, 0.180, 0.195, 0.210, 0.240,
                       0.260, 0.280, 0.290, 0.300, 0.320, 0.340, 0.260, 0.220, 0.380, 0.360,
                       0.180, 0.300, 0.250, 0.230],
    "soil": [0.060, 0.070, 0.090, 0.110, 0.130, 0.150, 0.180, 0.190, 0.200, 0.210, 0.220, 0.235,
             0.240, 0.250, 0.270, 0.290, 0.280, 0.270, 0.320, 0.310, 0.250, 0.300, 0.280, 0.270],
    "rock": [0.120, 0.130, 0.140, 0.155, 0.170, 0.185, 0.200, 0.205, 0.210, 0.220, 0.225, 0.235,
             0.240, 0.245, 0.255, 0.270, 0.280, 0.280, 0.300, 0.295, 0.285, 0.270, 0.260, 0.255],
    "urban": [0.100, 0.110, 0.120, 0.130, 0.140, 0.150, 0.160, 0.165, 0.168, 0.175, 0.180, 0.188,
              0.190, 0.195, 0.200, 0.205, 0.200, 0.200, 0.220, 0.215, 0.200, 0.200, 0.190, 0.185],
    "snow": [0.950, 0.960, 0.960, 0.955, 0.950, 0.940, 0.930, 0.920, 0.915, 0.900, 0.880, 0.860,
             0.850, 0.780, 0.650, 0.450, 0.150, 0.050, 0.060, 0.080, 0.020, 0.040, 0.030, 0.020],
    "water": [0.050, 0.055, 0.055, 0.050, 0.045, 0.030, 0.020, 0.015, 0.012, 0.008, 0.006, 0.005,
              0.005, 0.004, 0.003, 0.002, 0.002, 0.002, 0.002, 0.001, 0.001, 0.001, 0.001, 0.001],
    "cloud": [0.780, 0.780, 0.775, 0.770, 0.770, 0.765, 0.760, 0.758, 0.755, 0.750, 0.745, 0.740,
              0.735, 0.700, 0.700, 0.650, 0.600, 0.500, 0.520, 0.450, 0.300, 0.380, 0.330, 0.300],
}
# fmt: on
ENDMEMBERS: tuple[str, ...] = tuple(k for k in _ENDMEMBER_SPECTRA if k != "cloud")
_E = {name: i for i, name in enumerate(ENDMEMBERS)}

# Mean sigma0 in dB (VV, VH) per land-cover class at 35-40° incidence, C band; typical values
# from Sentinel-1 land-cover studies (e.g. Abdikan et al. 2016; Dostálová et al. 2021).
_S1_CLASS_DB = np.array(
    [
        [-21.0, -27.5],  # water: specular
        [-7.5, -13.0],  # tree cover: volume scattering
        [-9.0, -15.5],  # shrubland
        [-11.0, -18.0],  # grassland
        [-10.5, -17.5],  # cropland (grows with crop biomass, below)
        [-4.0, -11.0],  # built-up: double bounce
        [-16.0, -24.0],  # bare: smooth sand, rock flats, dark like water in VV
        [-13.0, -21.0],  # snow and ice (wet snow absorbs)
        [-12.5, -19.0],  # wetland
    ],
    dtype=np.float32,
)


FloodType = Literal["any", "rural", "urban"]
Season = Literal["any", "winter", "spring", "summer", "autumn"]

#: Day-of-year windows ``[start, end)`` of each season (northern astronomical seasons, as the
#: captions name them); winter wraps over the new year.
SEASON_DAYS: Mapping[str, tuple[int, int]] = {
    "winter": (355, 445),
    "spring": (80, 172),
    "summer": (172, 266),
    "autumn": (266, 355),
}


@dataclass(frozen=True)
class Biome:
    """A climate zone of the synthetic world: where it is and how its land looks.

    ``temperate`` is the identity (the original world); every other preset moves some of these
    values. The numbers are plausible magnitudes, not a fit to any product; ``imitates`` says
    which landscape each preset stands for and why its values move as they do.

    Attributes:
        name: preset name (a key of :data:`BIOMES`).
        imitates: the landscape the preset stands for, with the reasons for its values.
        lat_range: latitude box of scene centres, degrees.
        lon_range: longitude box of scene centres, degrees.
        class_bias: added to the land-cover scores, one value per class of
            :data:`LANDCOVER_CLASSES` (water is placed by the terrain, its entry unused); the
            scores' noise has std 0.55, so ±0.5 is a strong nudge and ±2 a takeover.
        snowline_shift_m: metres added to the snowline (negative: snow lower down).
        vegetation_shift: relative change of the green-vegetation NIR plateau (783–1200 nm,
            ramped across the red edge); -0.25 lowers it by a quarter.
        red_edge_shift_nm: shift of the green-vegetation red edge (690–783 nm), nm.
        soil_brightness: multiplier of soil reflectance at every wavelength.
        soil_redness: iron-oxide tint of soil: blue darker, red brighter by up to this share.
        phenology_shift_days: days added to the date of peak greenness and to crop calendars.
        phenology_floor: greenness of vegetation out of season (0 = bare winter, 1 = evergreen).
        phenology_amplitude: share of the seasonal greenness cycle kept above the floor.
        soil_moisture_db: dB added to Sentinel-1 sigma0 of soil-like classes (grass, crops,
            bare, shrubs, wetland).
        speckle_looks: equivalent number of looks of the Sentinel-1 speckle.
    """

    name: str
    imitates: str
    lat_range: tuple[float, float] = (36.0, 66.0)
    lon_range: tuple[float, float] = (-9.0, 30.0)
    class_bias: tuple[float, ...] = (0.0,) * 9
    snowline_shift_m: float = 0.0
    vegetation_shift: float = 0.0
    red_edge_shift_nm: float = 0.0
    soil_brightness: float = 1.0
    soil_redness: float = 0.0
    phenology_shift_days: float = 0.0
    phenology_floor: float = 0.0
    phenology_amplitude: float = 1.0
    soil_moisture_db: float = 0.0
    speckle_looks: float = S1_ENL


def _bias(**by_class: float) -> tuple[float, ...]:
    index = {
        name.replace(" ", "_").replace("-", "_"): i for i, name in enumerate(LANDCOVER_CLASSES)
    }
    out = [0.0] * len(LANDCOVER_CLASSES)
    for name, value in by_class.items():
        out[index[name]] = value
    return tuple(out)


#: The biome presets. ``temperate`` is the original world (central and western Europe).
BIOMES: Mapping[str, Biome] = {
    "temperate": Biome(
        "temperate",
        "Central and western Europe (36-66 N, 9 W-30 E): broadleaf and mixed forest, arable "
        "land and grassland, a summer peak of greenness. The original world, unchanged.",
    ),
    "boreal": Biome(
        "boreal",
        "Fennoscandian and Russian taiga (58-70 N, 10-60 E): conifer forest and mires, few "
        "fields. Needle canopies have a lower NIR plateau and earlier red edge than broadleaf "
        "ones; podzol and peat soils are dark and wet; green-up comes late; snow lies lower.",
        lat_range=(58.0, 70.0),
        lon_range=(10.0, 60.0),
        class_bias=_bias(tree_cover=0.7, wetland=1.0, cropland=-0.8, built_up=-0.4, grassland=-0.2),
        snowline_shift_m=-150.0,
        vegetation_shift=-0.3,
        red_edge_shift_nm=-6.0,
        soil_brightness=0.6,
        phenology_shift_days=25.0,
        soil_moisture_db=1.5,
    ),
    "mediterranean": Biome(
        "mediterranean",
        "Iberia, Italy, Greece and the Levant (34-44 N, 9 W-36 E): sclerophyll shrub (maquis, "
        "garrigue), open woodland, terra rossa soils. Greenness peaks in spring after winter "
        "rain and summer is dry; waxy leaves lower the NIR plateau; soils are brighter, redder "
        "and drier.",
        lat_range=(34.0, 44.0),
        lon_range=(-9.0, 36.0),
        class_bias=_bias(shrubland=0.6, tree_cover=-0.3, bare=1.8, grassland=0.1, wetland=-0.4),
        snowline_shift_m=300.0,
        vegetation_shift=-0.1,
        soil_brightness=1.15,
        soil_redness=0.25,
        phenology_shift_days=-75.0,
        phenology_floor=0.1,
        soil_moisture_db=-1.0,
    ),
    "tropical": Biome(
        "tropical",
        "Monsoon South and Southeast Asia (5-25 N, 75-110 E): dense evergreen broadleaf forest, "
        "paddies and wetlands on lateritic soils. Canopies stay green all year with a monsoon "
        "peak in August-September; dense broadleaf canopies raise the NIR plateau; laterite is "
        "red and somewhat dark; soils are wet.",
        lat_range=(5.0, 25.0),
        lon_range=(75.0, 110.0),
        class_bias=_bias(
            tree_cover=0.8, cropland=0.2, wetland=0.4, shrubland=-0.3, bare=-0.6, grassland=-0.3
        ),
        vegetation_shift=0.1,
        soil_brightness=0.85,
        soil_redness=0.5,
        phenology_shift_days=110.0,
        phenology_floor=0.6,
        phenology_amplitude=0.4,
        soil_moisture_db=2.0,
    ),
    "arid": Biome(
        "arid",
        "Hot deserts and their steppe margins, Sahara to Arabia (18-34 N, 10 W-55 E): sand and "
        "rock with sparse shrubs and few trees or fields. Sand is bright and yellowish; what "
        "vegetation there is stays sparse and stressed (low NIR, a small green-up after winter "
        "rain); dry sand is dark to C-band radar.",
        lat_range=(18.0, 34.0),
        lon_range=(-10.0, 55.0),
        class_bias=_bias(
            bare=2.8, shrubland=0.4, tree_cover=-1.0, cropland=-0.6, grassland=-0.5, wetland=-1.0
        ),
        snowline_shift_m=1000.0,
        vegetation_shift=-0.15,
        soil_brightness=1.45,
        soil_redness=0.2,
        phenology_shift_days=-40.0,
        phenology_amplitude=0.35,
        soil_moisture_db=-3.0,
    ),
}

#: The :class:`WorldConfig` fields that shift the world (what ``SyntheticCopernicus(world=...)``
#: and the ``synthetic`` reader's ``world`` option take).
WORLD_SHIFT_FIELDS: tuple[str, ...] = (
    "biome",
    "vegetation_shift",
    "soil_brightness",
    "phenology_shift_days",
    "soil_moisture_db",
    "speckle_looks",
    "flood_type",
    "season",
)

# Valid ranges of the numeric knobs: (low, high), both inclusive.
_KNOB_RANGES: Mapping[str, tuple[float, float]] = {
    "vegetation_shift": (-0.9, 2.0),
    "soil_brightness": (0.05, 3.0),
    "phenology_shift_days": (-365.0, 365.0),
    "soil_moisture_db": (-15.0, 15.0),
    "speckle_looks": (1.0, 1000.0),
}


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the synthetic world.

    The shift fields (from ``biome`` on) default to the original world: ``WorldConfig()`` gives
    exactly the scenes it always gave. A knob left at ``None`` takes the biome's value.

    Args:
        size: scene height and width in pixels (an int, or ``(height, width)``).
        gsd: ground sampling distance of the common grid, metres.
        cloud_cover: mean cloud fraction of Sentinel-2 scenes (0 = clear sky); each scene draws
            its own fraction around it.
        flood_probability: share of scenes with a flood event between pre and post acquisitions.
        s2_level: ``"L2A"`` surface reflectance (12 bands) or ``"L1C"`` top of atmosphere (13).
        biome: a preset of :data:`BIOMES` (``temperate`` is the original world).
        vegetation_shift: relative change of the green-vegetation NIR plateau, in
            [-0.9, 2] (None: the biome's).
        soil_brightness: multiplier of soil reflectance, in [0.05, 3] (None: the biome's).
        phenology_shift_days: days added to the peak of greenness and to crop calendars, in
            [-365, 365] (None: the biome's).
        soil_moisture_db: dB added to Sentinel-1 sigma0 of soil-like classes, in [-15, 15]
            (None: the biome's).
        speckle_looks: equivalent number of looks of the Sentinel-1 speckle, in [1, 1000]
            (None: the biome's, 4.4 for every preset as Sentinel-1 IW GRDH).
        flood_type: ``any`` (the original world), ``rural`` (no settlements; fields and grass
            along the river, floods are dark open water) or ``urban`` (towns on the river, so
            floods reach built-up and trees, brighter by double bounce).
        season: ``any`` or the season (:data:`SEASON_DAYS`) the Sentinel-2 date falls in.
    """

    size: int | tuple[int, int] = 64
    gsd: float = 10.0
    cloud_cover: float = 0.0
    flood_probability: float = 0.8
    s2_level: Literal["L2A", "L1C"] = "L2A"
    biome: str = "temperate"
    vegetation_shift: float | None = None
    soil_brightness: float | None = None
    phenology_shift_days: float | None = None
    soil_moisture_db: float | None = None
    speckle_looks: float | None = None
    flood_type: FloodType = "any"
    season: Season = "any"

    def __post_init__(self) -> None:
        h, w = self.shape
        if h < 8 or w < 8:
            raise UserInputError(f"scene size must be at least 8 pixels, got {self.size}")
        if not self.gsd > 0:
            raise UserInputError(f"gsd must be positive metres, got {self.gsd}")
        if not 0.0 <= self.cloud_cover <= 1.0:
            raise UserInputError(f"cloud_cover must be in [0, 1], got {self.cloud_cover}")
        if not 0.0 <= self.flood_probability <= 1.0:
            raise UserInputError(
                f"flood_probability must be in [0, 1], got {self.flood_probability}"
            )
        if self.s2_level not in ("L2A", "L1C"):
            raise UserInputError(f"s2_level must be 'L2A' or 'L1C', got {self.s2_level!r}")
        if not isinstance(self.biome, str) or self.biome not in BIOMES:
            raise UserInputError(f"biome must be one of: {', '.join(BIOMES)}; got {self.biome!r}")
        for name, (low, high) in _KNOB_RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UserInputError(
                    f"{name} must be a number in [{low:g}, {high:g}] or null, got {value!r}"
                )
            if not low <= value <= high:
                raise UserInputError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
        for name, kind in (("flood_type", FloodType), ("season", Season)):
            if getattr(self, name) not in get_args(kind):
                raise UserInputError(
                    f"{name} must be one of: {', '.join(get_args(kind))}; "
                    f"got {getattr(self, name)!r}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        if isinstance(self.size, int):
            return (self.size, self.size)
        h, w = self.size
        return (int(h), int(w))

    def resolved(self, name: str) -> float:
        """A knob's value in effect: the explicit one, or the biome's when it is None.

        Args:
            name: one of ``vegetation_shift``, ``soil_brightness``, ``phenology_shift_days``,
                ``soil_moisture_db``, ``speckle_looks``.
        """
        if name not in _KNOB_RANGES:
            raise UserInputError(f"no knob {name!r}; expected one of: {', '.join(_KNOB_RANGES)}")
        value = getattr(self, name)
        return float(getattr(BIOMES[self.biome], name) if value is None else value)


@dataclass
class SyntheticScene:
    """One co-registered scene of the synthetic world; arrays are numpy, ``[C, H, W]`` or ``[H, W]``.

    Attributes:
        s2: Sentinel-2 digital numbers (reflectance × 10 000), float32 ``[C, H, W]``.
        s2_bands: band names of ``s2`` (registry names).
        s1: Sentinel-1 linear sigma0, float32 ``[3, 2, H, W]``: SL2, SL1 (pre-event, oldest
            first), MS1 (post-event) × VV, VH; 0 = no data.
        s3: Sentinel-3 OLCI reflectance, float32 ``[21, H, W]``, constant over 300 m blocks.
        landsat: Landsat 8/9 OLI ``B1``..``B7`` Collection 2 Level-2 surface-reflectance digital
            numbers (reflectance = DN × 2.75e-5 − 0.2; 0, the fill value, never occurs), float32
            ``[7, H, W]``, constant over 30 m blocks; the same ground, clouds and date as ``s2``.
        landsat_bands: band names of ``landsat`` (registry ``landsat-8-9`` names).
        no2: Sentinel-5P tropospheric NO2 column, mol/m², float32 ``[H, W]``.
        dem: elevation, metres, float32 ``[H, W]``.
        landcover: class ids of :data:`LANDCOVER_CLASSES`, uint8 ``[H, W]``.
        flood: Kuro Siwo labels (0 no water, 1 permanent water, 2 flood, 3 invalid), uint8.
        valid: 1 where all three SAR acquisitions have data, uint8 ``[H, W]``.
        cloud_mask: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow, uint8 ``[H, W]``.
        biomass: above-ground biomass, Mg/ha, float32 ``[H, W]``.
        lon, lat: scene centre, degrees.
        s2_date, s1_dates: acquisition dates (S1: SL2, SL1, MS1).
        flooded: whether a flood happened between SL1 and MS1.
        caption: a description written from the scene's label statistics.
    """

    seed: int
    index: int
    config: WorldConfig
    s2: np.ndarray
    s2_bands: tuple[str, ...]
    s1: np.ndarray
    s3: np.ndarray
    landsat: np.ndarray
    landsat_bands: tuple[str, ...]
    no2: np.ndarray
    dem: np.ndarray
    landcover: np.ndarray
    flood: np.ndarray
    valid: np.ndarray
    cloud_mask: np.ndarray
    biomass: np.ndarray
    lon: float
    lat: float
    s2_date: date
    s1_dates: tuple[date, date, date]
    flooded: bool
    caption: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.landcover.shape  # type: ignore[return-value]

    @property
    def gsd(self) -> float:
        return self.config.gsd

    def class_fractions(self) -> np.ndarray:
        """Share of each land-cover class in the scene, ``[9]``."""
        counts = np.bincount(self.landcover.ravel(), minlength=len(LANDCOVER_CLASSES))
        return counts / counts.sum()

    def multilabel(self) -> np.ndarray:
        """Multi-hot land-cover presence (share ≥ :data:`PRESENCE_THRESHOLD`), int64 ``[9]``."""
        return (self.class_fractions() >= PRESENCE_THRESHOLD).astype(np.int64)

    def water_mask(self, step: int = -1) -> np.ndarray:
        """Open water at one S1 acquisition: 0 land, 1 water, 255 no data (uint8 ``[H, W]``)."""
        water = (self.flood == 1) | ((self.flood == 2) & (step in (-1, 2)))
        out = water.astype(np.uint8)
        out[self.s1[step].min(axis=0) <= 0] = 255
        return out


# --------------------------------------------------------------------------------------------
# Noise fields
# --------------------------------------------------------------------------------------------


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian random field with power spectrum ∝ 1/f^beta, standardised to mean 0, std 1."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    phase = rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))
    field_ = np.fft.irfft2(amplitude * phase, s=(h, w))
    return _standardise(field_)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """White noise blurred at ``scale`` pixels, standardised to mean 0, std 1."""
    return _standardise(gaussian_blur(rng.standard_normal(shape), max(scale, 0.5), wrap=True))


def gaussian_blur(x: np.ndarray, sigma: float, *, wrap: bool = False) -> np.ndarray:
    """Gaussian blur of a 2-D array in the Fourier domain: its cost does not grow with sigma.

    Without ``wrap`` the array is mirror-padded first, so opposite edges do not bleed together.
    """
    h, w = x.shape
    pad = 0 if wrap else int(min(3 * sigma, max(h, w)))
    xp = np.pad(x, pad, mode="symmetric") if pad else x
    fy = np.fft.fftfreq(xp.shape[0])[:, None]
    fx = np.fft.rfftfreq(xp.shape[1])[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(xp) * transfer, s=xp.shape)
    return out[pad : pad + h, pad : pad + w] if pad else out


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return ((x - x.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# Band responses
# --------------------------------------------------------------------------------------------


def _band_response(bands: Sequence[Band], spectra: np.ndarray) -> np.ndarray:
    """Average each spectrum over each band's passband (a box of the band's width), ``[B, E]``."""
    out = np.empty((len(bands), spectra.shape[0]), dtype=np.float64)
    for i, band in enumerate(bands):
        if band.wavelength_nm is None:
            raise UserInputError(f"band {band.name} has no wavelength; it is not an optical band")
        half = 0.5 * (band.bandwidth_nm or 10.0)
        wl = np.linspace(band.wavelength_nm - half, band.wavelength_nm + half, 9)
        for e in range(spectra.shape[0]):
            out[i, e] = np.interp(wl, _WL, spectra[e]).mean()
    return out


_SPECTRA = np.array([_ENDMEMBER_SPECTRA[k] for k in ENDMEMBERS])
_CLOUD_SPECTRUM = np.array([_ENDMEMBER_SPECTRA["cloud"]])

# Where a vegetation NIR shift applies: nothing in the visible, ramping up across the red edge,
# the whole NIR plateau, fading out by the 1375 nm water band (SWIR follows leaf water, not
# canopy structure).
_NIR_WEIGHT = np.interp(_WL, [690.0, 783.0, 1200.0, 1375.0], [0.0, 1.0, 1.0, 0.0])
# Iron-oxide tint of soils (laterite, terra rossa): absorption in the blue, brighter red.
_REDNESS = np.interp(
    _WL, [400.0, 490.0, 560.0, 665.0, 740.0, 865.0], [-0.6, -0.4, 0.0, 0.3, 0.2, 0.0]
)
_RED_EDGE = (_WL >= 690.0) & (_WL <= 783.0)


@lru_cache(maxsize=64)
def world_spectra(
    vegetation_shift: float = 0.0,
    red_edge_shift_nm: float = 0.0,
    soil_brightness: float = 1.0,
    soil_redness: float = 0.0,
) -> np.ndarray:
    """The endmember spectra (``[E, wavelengths]``, rows :data:`ENDMEMBERS`) under a shift.

    At the defaults this is the original table itself (the same array).

    Args:
        vegetation_shift: relative change of the green-vegetation NIR plateau.
        red_edge_shift_nm: shift of the green-vegetation red edge along wavelength, nm.
        soil_brightness: multiplier of soil reflectance.
        soil_redness: iron-oxide tint of soil (blue darker, red brighter by this share).
    """
    if (vegetation_shift, red_edge_shift_nm, soil_brightness, soil_redness) == (0, 0, 1, 0):
        return _SPECTRA
    spectra = _SPECTRA.copy()
    g, s = _E["green vegetation"], _E["soil"]
    if red_edge_shift_nm:
        spectra[g, _RED_EDGE] = np.interp(_WL[_RED_EDGE] - red_edge_shift_nm, _WL, _SPECTRA[g])
    spectra[g] *= 1.0 + vegetation_shift * _NIR_WEIGHT
    spectra[s] *= soil_brightness * (1.0 + soil_redness * _REDNESS)
    spectra = np.clip(spectra, 0.0, 1.0)
    spectra.flags.writeable = False
    return spectra


@lru_cache(maxsize=64)
def _sensor_response(sensor: str, band_names: tuple[str, ...], spectra_key: tuple) -> np.ndarray:
    """:func:`_band_response` of registry bands to the world's spectra, cached per shift."""
    spectra = _CLOUD_SPECTRUM if spectra_key == ("cloud",) else world_spectra(*spectra_key)
    bands = get_sensor(sensor).select(band_names)
    out = _band_response(bands, spectra)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------

_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one scene: independent streams per (seed, stream, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


# Purposes of the scene's auxiliary generators (a fourth word of entropy, so they never meet a
# scene's own generator): draws a shift needs beyond the original world's, and Landsat's noise.
_SHIFT_PURPOSE = 97
_LANDSAT_PURPOSE = 98


def _aux_rng(seed: int, index: int, stream: int, purpose: int) -> np.random.Generator:
    entropy = [int(seed), int(stream), int(index), purpose]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _season_date(day: int, season: str) -> date:
    """The date of a draw ``day`` in [0, 5·365) placed inside ``season`` of the same year."""
    start, end = SEASON_DAYS[season]
    year, within = divmod(day, 365)
    offset = start - 1 + (within * (end - start)) // 365
    return date(2019 + year, 1, 1) + timedelta(days=offset)


def generate_scene(
    seed: int = 0, index: int = 0, config: WorldConfig | None = None, *, stream: int = 0
) -> SyntheticScene:
    """Generate one scene of the synthetic world, deterministically from ``(seed, stream, index)``.

    Args:
        seed: world seed.
        index: scene index within the world.
        config: world parameters (size, gsd, clouds, flood probability, S2 level, shifts).
        stream: an independent stream of scenes (the datasets use 0/1/2 for train/val/test).

    Returns:
        The scene with every sensor and label on one grid.
    """
    cfg = config or WorldConfig()
    rng = scene_rng(seed, index, stream)
    biome = BIOMES[cfg.biome]
    shape = cfg.shape
    h, w = shape
    gsd = cfg.gsd
    extent = max(h, w)

    # --- place and time -----------------------------------------------------------------------
    # A shift reuses the original draws (the same number, in the same order) and maps them, so
    # a scene of a shifted world keeps its terrain, river and towns' draws.
    lat = float(rng.uniform(*biome.lat_range))
    lon = float(rng.uniform(*biome.lon_range))
    day = int(rng.integers(0, 5 * 365))
    if cfg.season == "any":
        s2_date = date(2019, 1, 1) + timedelta(days=day)
    else:
        s2_date = _season_date(day, cfg.season)
    event_date = s2_date + timedelta(days=int(rng.integers(1, 40)))
    sl1 = event_date - timedelta(days=S1_REVISIT_DAYS * int(rng.integers(1, 3)))
    sl2 = sl1 - timedelta(days=S1_REVISIT_DAYS * int(rng.integers(1, 3)))
    s1_dates = (sl2, sl1, event_date)
    doy = s2_date.timetuple().tm_yday

    # --- terrain ------------------------------------------------------------------------------
    # Relief grows with the extent as fractal terrain does (Hurst exponent ~0.8): a few metres
    # over a 640 m tile of lowland, hundreds over a 10 km mountain scene.
    extent_km = extent * gsd / 1000.0
    relief = float(np.exp(rng.uniform(np.log(30.0), np.log(1500.0)))) * (extent_km / 10.0) ** 0.8
    base = float(rng.uniform(0.0, 1200.0)) if rng.random() < 0.8 else float(rng.uniform(1200, 2800))
    terrain = fractal_noise(rng, shape, beta=3.4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tilt = rng.normal(0, 0.3, size=2)
    dem = base + relief * (0.5 + 0.25 * terrain + tilt[0] * yy / extent + tilt[1] * xx / extent)

    # A river crosses the scene along a meandering centre line, in a carved valley.
    river = np.zeros(shape, dtype=bool)
    dist_river = np.full(shape, np.inf, dtype=np.float32)
    has_river = rng.random() < 0.8
    if has_river:
        t = np.linspace(-0.1, 1.1, 8 * extent)
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        centre = np.array([h, w]) * rng.uniform(0.3, 0.7, size=2)
        meander = np.zeros_like(t)
        for k in range(1, 4):
            meander += rng.normal(0, 0.08 / k) * np.sin(
                2 * np.pi * k * rng.uniform(0.8, 2) * t + rng.uniform(0, 2 * np.pi)
            )
        pts = (
            centre[None, :]
            + ((t - 0.5) * 1.5 * extent)[:, None] * direction[None, :]
            + (meander * extent)[:, None] * normal[None, :]
        )
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < h) & (pts[:, 1] >= 0) & (pts[:, 1] < w)
        line = np.zeros(shape, dtype=bool)
        ij = np.round(pts[inside]).astype(int)
        ij[:, 0] = ij[:, 0].clip(0, h - 1)
        ij[:, 1] = ij[:, 1].clip(0, w - 1)
        line[ij[:, 0], ij[:, 1]] = True
        if line.any():
            dist_river = ndimage.distance_transform_edt(~line).astype(np.float32)
            width_m = float(np.exp(rng.uniform(np.log(15.0), np.log(60.0))))
            river = dist_river * gsd <= width_m / 2.0
            valley_m = float(rng.uniform(150.0, 600.0))
            depth = relief * float(rng.uniform(0.3, 0.7))
            dem -= depth * np.exp(-((dist_river * gsd / valley_m) ** 2))
        else:
            has_river = False

    # Lakes fill the lowest, smoothest ground.
    low = gaussian_blur(dem, extent / 12.0)
    lake = np.zeros(shape, dtype=bool)
    if rng.random() < 0.4:
        lake = low < np.quantile(low, float(rng.uniform(0.02, 0.08)))
        lake = ndimage.binary_opening(lake, iterations=2)
    permanent = river | lake
    dem[river] -= 1.0  # the water surface sits below its banks
    if lake.any():
        dem[lake] = dem[lake].min()  # a lake surface is level

    # Height above and distance to the nearest water (HAND-like drainage geometry).
    if permanent.any():
        dist_water, (iy, ix) = ndimage.distance_transform_edt(~permanent, return_indices=True)
        dist_water = dist_water.astype(np.float32) * gsd
        hand = np.maximum(dem - dem[iy, ix], 0.0)
    else:
        dist_water = np.full(shape, 1e5, dtype=np.float32)
        hand = dem - dem.min()
    gy, gx = np.gradient(dem, gsd)
    slope = np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)

    # --- land cover ---------------------------------------------------------------------------
    snowline = 2700.0 - 50.0 * (lat - 45.0) - (500.0 if doy < 90 or doy > 320 else 0.0)
    if biome.snowline_shift_m:
        snowline += biome.snowline_shift_m
    patch = extent / 7.0
    score = np.empty((len(LANDCOVER_CLASSES), h, w), dtype=np.float32)
    score[WATER] = -np.inf
    elev_rel = (dem - dem.mean()) / max(relief, 1.0)
    flat = np.clip(1.0 - slope / 8.0, -1.0, 1.0)
    near_water = np.exp(-dist_water / 300.0)
    prior = rng.normal(0.0, 0.4, size=len(LANDCOVER_CLASSES))
    if any(biome.class_bias):
        prior = prior + np.asarray(biome.class_bias)
    score[TREE] = 0.6 * np.clip(slope / 10.0, 0, 1.5) + 0.3 * elev_rel + prior[TREE]
    score[SHRUB] = 0.2 + 0.3 * np.clip(slope / 15.0, 0, 1) + prior[SHRUB] - 0.2
    score[GRASS] = 0.3 + 0.1 * flat + prior[GRASS]
    score[CROP] = 0.9 * flat - 0.4 * elev_rel + 0.3 * near_water + prior[CROP]
    score[BUILT] = -0.8 + prior[BUILT]
    score[BARE] = 1.2 * (slope / 30.0) + 1.5 * np.clip((dem - snowline + 700.0) / 700.0, -1, 1)
    score[BARE] += prior[BARE] - 0.8
    score[SNOW] = 3.0 * (dem - snowline) / 300.0
    score[WETLAND] = 1.2 * np.exp(-hand / 2.0) * near_water * flat - 0.7 + prior[WETLAND]
    for k in (TREE, SHRUB, GRASS, CROP, BARE, WETLAND):
        score[k] += 0.55 * smooth_noise(rng, shape, patch)
    if cfg.flood_type == "rural":
        # Fields and pasture line the river and fill its floodplain (low ground near water),
        # where riparian woods are cleared: a rural flood is open water over fields.
        floodplain = np.exp(-hand / 4.0) * near_water
        score[CROP] += 0.8 * near_water
        score[GRASS] += 0.4 * near_water
        score[TREE] -= 0.8 * near_water + 2.5 * floodplain
        score[WETLAND] -= 0.5 * near_water
    elif cfg.flood_type == "urban":
        score[TREE] += 0.3 * near_water  # parks and riparian trees between the houses
    # Settlements: a few towns on flat ground, denser near rivers.
    n_towns = int(rng.poisson(1.2))
    towns = [
        (rng.uniform(0, h), rng.uniform(0, w), extent * float(rng.uniform(0.06, 0.2)))
        for _ in range(n_towns)
    ]
    if cfg.flood_type == "rural":
        towns = []  # the draws are made all the same, so the rest of the scene does not move
    elif cfg.flood_type == "urban":
        towns = _towns_on_the_water(towns, permanent, _aux_rng(seed, index, stream, _SHIFT_PURPOSE))
    n_towns = len(towns)
    town = np.zeros(shape, dtype=np.float32)
    for cy, cx, radius in towns:
        town += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
    town_weight = 3.2 if cfg.flood_type == "urban" else 2.4  # dense riverside quarters
    score[BUILT] += town_weight * town + 0.5 * smooth_noise(rng, shape, patch / 3.0) + 0.3 * flat
    if cfg.flood_type == "rural":
        score[BUILT] -= 4.0  # no settlement at all, not even a farmstead speck
    # Land cover follows the terrain at the scale of fields and woods, not of single pixels.
    score[1:] = ndimage.gaussian_filter(score[1:], sigma=(0, 1.5, 1.5), mode="nearest")
    landcover = np.argmax(score, axis=0).astype(np.uint8)
    landcover[permanent] = WATER

    # Crop parcels: Voronoi cells, each with its own sowing date.
    parcels = np.zeros(shape, dtype=np.int32)
    n_parcels = max(4, int(h * w * gsd * gsd / 40_000.0))  # ~4 ha fields
    seeds = rng.uniform(0, 1, size=(n_parcels, 2)) * np.array([h, w])
    _, parcels_flat = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], axis=1), k=1)
    parcels = parcels_flat.reshape(shape)
    sowing = rng.uniform(60, 150, size=n_parcels)  # spring crops
    winter = rng.random(n_parcels) < 0.4  # winter cereals green in spring, harvested July
    sowing[winter] -= 140

    # --- phenology: green fraction of vegetation ----------------------------------------------
    phenology_shift = cfg.resolved("phenology_shift_days")
    peak = 170.0 + 1.5 * (lat - 45.0)
    if phenology_shift:
        peak += phenology_shift
    # Days from the peak wrap around the year, so a shifted peak still recurs every year.
    to_peak = doy - peak if not phenology_shift else (doy - peak + 182.5) % 365.0 - 182.5
    season = float(np.exp(-((to_peak / 70.0) ** 2)))
    if (biome.phenology_floor, biome.phenology_amplitude) != (0.0, 1.0):
        season = min(1.0, biome.phenology_floor + biome.phenology_amplitude * season)
    crop_days = (doy - sowing[parcels]) % 365
    if phenology_shift:
        crop_days = (crop_days - phenology_shift) % 365
    crop_green = np.exp(-(((crop_days - 75.0) / 35.0) ** 2)).astype(np.float32)
    crop_green[crop_days > 130] = 0.0  # harvested
    density = _sigmoid(1.5 * smooth_noise(rng, shape, patch / 2.0) + 0.5)  # canopy density

    fractions = np.zeros((len(ENDMEMBERS), h, w), dtype=np.float32)
    brightness = np.ones(shape, dtype=np.float32)

    def put(cls: int, **parts: np.ndarray | float) -> None:
        m = landcover == cls
        for name, value in parts.items():
            val = value[m] if isinstance(value, np.ndarray) else value
            fractions[_E[name.replace("_", " ")], m] = val

    g_grass = 0.25 + 0.6 * season
    put(WATER, water=1.0)
    put(
        TREE,
        green_vegetation=0.55 + 0.35 * density * (0.6 + 0.4 * season),
        dry_vegetation=0.1,
        soil=0.35 - 0.35 * density * (0.6 + 0.4 * season) + 0.0,
    )
    put(
        SHRUB,
        green_vegetation=0.25 + 0.3 * season * density,
        dry_vegetation=0.35,
        soil=0.4 - 0.3 * season * density,
    )
    put(GRASS, green_vegetation=g_grass, dry_vegetation=0.9 - g_grass, soil=0.1)
    put(CROP, green_vegetation=0.9 * crop_green, soil=1.0 - 0.9 * crop_green)
    put(BUILT, urban=0.7 + 0.15 * density, green_vegetation=0.3 - 0.15 * density)
    rockiness = _sigmoid(2 * smooth_noise(rng, shape, patch / 2))
    put(BARE, soil=1.0 - rockiness, rock=rockiness)
    put(SNOW, snow=0.92, rock=0.08)
    put(
        WETLAND,
        water=0.35,
        green_vegetation=0.25 + 0.35 * season,
        dry_vegetation=0.4 - 0.35 * season,
    )
    brightness[landcover == TREE] = 0.78 - 0.1 * density[landcover == TREE]  # canopy shadows
    turbidity = float(rng.uniform(0.0, 0.25))
    fractions[_E["soil"]] += turbidity * fractions[_E["water"]] * 0.3

    # Terrain illumination (Lambertian hillshade) and smooth within-class variability.
    sun_elev = np.radians(20.0 + 50.0 * math.sin(math.pi * doy / 365.0) - 0.3 * (lat - 45.0))
    sun_elev = max(sun_elev, np.radians(12.0))
    sun_az = np.radians(160.0)
    nx, ny, nz = -gx, -gy, np.ones_like(gx)
    norm = np.sqrt(nx**2 + ny**2 + nz**2)
    sx, sy, sz = (
        math.cos(sun_elev) * math.sin(sun_az),
        -math.cos(sun_elev) * math.cos(sun_az),
        math.sin(sun_elev),
    )
    illum = np.clip((nx * sx + ny * sy + nz * sz) / norm / sz, 0.2, 1.6).astype(np.float32)
    brightness *= illum * (1.0 + 0.07 * smooth_noise(rng, shape, 2.0))

    # --- Sentinel-2 ---------------------------------------------------------------------------
    spectra_key = (
        cfg.resolved("vegetation_shift"),
        biome.red_edge_shift_nm,
        cfg.resolved("soil_brightness"),
        biome.soil_redness,
    )
    sensor_name = "sentinel-2-l2a" if cfg.s2_level == "L2A" else "sentinel-2-l1c"
    s2_bands = get_bands(sensor_name)
    s2_names = tuple(b.name for b in s2_bands)
    resp = _sensor_response(sensor_name, s2_names, spectra_key)  # [B, E]
    surface = np.einsum("be,ehw->bhw", resp, fractions) * brightness[None]

    cloud_mask = np.zeros(shape, dtype=np.uint8)
    cover = 0.0
    if cfg.cloud_cover > 0 and rng.random() < 0.85:
        cover = float(
            np.clip(rng.beta(2.0, 2.0 * (1 - cfg.cloud_cover) / cfg.cloud_cover + 1e-3), 0, 0.95)
        )
    if cover > 0.005:
        cloud_field = fractal_noise(rng, shape, beta=3.0)
        threshold = np.quantile(cloud_field, 1.0 - cover)
        alpha = np.clip((cloud_field - threshold) / 0.6, 0.0, 1.0).astype(np.float32)
        shift = (round(0.04 * extent) + 1, round(0.03 * extent) + 1)
        shadow = np.roll(alpha, shift, axis=(0, 1)) * (alpha < 0.05)
        cloud_resp = _sensor_response(sensor_name, s2_names, ("cloud",))[:, 0]
        surface = surface * (1 - 0.65 * shadow)[None]
        surface = surface * (1 - alpha)[None] + cloud_resp[:, None, None] * alpha[None]
        cloud_mask[shadow > 0.3] = 3
        cloud_mask[(alpha > 0.05) & (alpha <= 0.5)] = 2
        cloud_mask[alpha > 0.5] = 1
    else:
        alpha = np.zeros(shape, dtype=np.float32)
        shadow = None

    reflectance = surface
    if cfg.s2_level == "L1C":
        # Top of atmosphere: Rayleigh path radiance (λ^-4), water-vapour absorption at 945 nm,
        # and the 1375 nm cirrus band where the atmosphere hides the ground.
        wl = np.array([b.wavelength_nm for b in s2_bands], dtype=np.float64)
        path = 0.085 * (443.0 / wl) ** 4
        transmit = np.ones_like(wl)
        transmit[np.abs(wl - 945) < 30] = 0.35
        transmit[np.abs(wl - 1375) < 40] = 0.02
        reflectance = surface * transmit[:, None, None] + path[:, None, None]
        cirrus = np.abs(wl - 1375) < 40
        reflectance[cirrus] += 0.35 * alpha
    noise_std = 0.002 + 0.01 * reflectance
    reflectance = reflectance + noise_std * rng.standard_normal(reflectance.shape)
    s2 = np.clip(np.round(reflectance * 10_000.0), 1, 65_535).astype(np.float32)

    # --- Sentinel-3 OLCI (300 m blocks) -------------------------------------------------------
    olci = tuple(b.name for b in get_bands("sentinel-3-olci"))
    olci_resp = _sensor_response("sentinel-3-olci", olci, spectra_key)
    s3_surface = np.einsum("be,ehw->bhw", olci_resp, fractions) * brightness
    if cover > 0.005:
        s3_surface = s3_surface * (1 - alpha)[None] + (
            _sensor_response("sentinel-3-olci", olci, ("cloud",))[:, 0][:, None, None] * alpha[None]
        )
    s3 = _block_mean(s3_surface, max(1, round(300.0 / gsd)))
    s3 = (s3 + 0.002 * rng.standard_normal(s3.shape)).astype(np.float32)

    # --- Landsat 8/9 OLI (30 m blocks, its own noise) ------------------------------------------
    landsat = _render_landsat(
        fractions,
        brightness,
        alpha if cover > 0.005 else None,
        shadow,
        spectra_key,
        gsd,
        _aux_rng(seed, index, stream, _LANDSAT_PURPOSE),
    )

    # --- biomass (Mg/ha) ----------------------------------------------------------------------
    biomass = np.zeros(shape, dtype=np.float32)
    m = landcover == TREE
    biomass[m] = 60.0 + 260.0 * density[m] * np.clip(1.2 - (dem[m] - base) / 3000.0, 0.5, 1.2)
    biomass[landcover == SHRUB] = 15.0 + 25.0 * density[landcover == SHRUB]
    biomass[landcover == WETLAND] = 12.0
    biomass[landcover == GRASS] = 3.0 + 3.0 * season
    biomass[landcover == CROP] = 8.0 * crop_green[landcover == CROP]
    biomass[landcover == BUILT] = 6.0 * (1 - density[landcover == BUILT])

    # --- Sentinel-1 ---------------------------------------------------------------------------
    flooded = bool(has_river and rng.random() < cfg.flood_probability)
    flood_zone = np.zeros(shape, dtype=bool)
    if flooded:
        level = float(rng.uniform(1.0, 4.0)) * max(1.0, relief / 150.0) ** 0.5
        reach = float(rng.uniform(200.0, 700.0))
        wobble = 0.5 * level * smooth_noise(rng, shape, extent / 20.0)
        flood_zone = (hand + wobble < level) & (dist_water < reach) & ~permanent
        flood_zone = ndimage.binary_opening(flood_zone, iterations=1)
        flooded = bool(flood_zone.any())

    incidence = np.radians(rng.uniform(31.0, 44.0))
    look = rng.choice([-1.0, 1.0])  # ascending looks east, descending west
    local = incidence - look * np.arctan(gx)  # facing slopes see a steeper local incidence
    terrain_db = (10 * np.log10(np.clip(np.cos(local), 0.05, 1) / math.cos(incidence))).astype(
        np.float32
    )
    texture_db = 0.8 * smooth_noise(rng, shape, 1.5)
    base_db = _S1_CLASS_DB[landcover].transpose(2, 0, 1).copy()  # [2, H, W]
    vol = 1.0 - np.exp(-biomass / 120.0)
    base_db[1] += 3.0 * vol - 1.0
    base_db[0] += 1.0 * vol
    crop = landcover == CROP
    soil_moisture_db = cfg.resolved("soil_moisture_db")
    looks = cfg.resolved("speckle_looks")
    s1 = np.zeros((3, 2, h, w), dtype=np.float32)
    soil_like = np.isin(landcover, (GRASS, CROP, BARE, SHRUB, WETLAND))
    valid = np.ones(shape, dtype=bool)
    for step in range(3):
        db = base_db + terrain_db[None] + texture_db[None]
        moisture = rng.normal(0.0, 0.8) + 0.6 * smooth_noise(rng, shape, extent / 4.0)
        if soil_moisture_db:
            moisture = moisture + soil_moisture_db
        db[:, soil_like] += moisture[soil_like]
        db[1, crop] += rng.normal(0.0, 0.5)
        wind = float(rng.uniform(0.0, 4.0)) * (0.5 + 0.5 * smooth_noise(rng, shape, extent / 6.0))
        water_now = permanent | (flood_zone if step == 2 else False)
        open_flood = water_now & ~np.isin(landcover, (TREE, BUILT))
        db[0, open_flood] = -21.5 + wind[open_flood] + texture_db[open_flood] * 0.3
        db[1, open_flood] = -28.0 + 0.5 * wind[open_flood]
        if step == 2 and flooded:
            double_bounce = flood_zone & np.isin(landcover, (TREE, BUILT))
            db[0, double_bounce] += 3.0
            db[1, double_bounce] += 0.8
            if cfg.flood_type == "urban":
                # Dense riverside blocks: walls over water form stronger dihedrals than trunks.
                streets = flood_zone & (landcover == BUILT)
                db[0, streets] += 3.0
                db[1, streets] += 1.2
        speckle = rng.gamma(S1_ENL, 1.0 / S1_ENL, size=db.shape)
        if looks != S1_ENL:
            speckle = _remap_speckle(speckle, looks)
        sigma0 = (10.0 ** (db / 10.0)) * speckle
        # Swath edges and border noise: some acquisitions miss a corner of the scene.
        if rng.random() < 0.15:
            a = rng.uniform(0, 2 * np.pi)
            edge = (np.cos(a) * (xx - w / 2) + np.sin(a) * (yy - h / 2)) > 0.35 * extent
            sigma0[:, edge] = 0.0
            valid &= ~edge
        s1[step] = sigma0.astype(np.float32)

    flood = np.zeros(shape, dtype=np.uint8)
    flood[flood_zone] = 2
    flood[permanent] = 1
    flood[~valid] = FLOOD_IGNORE_INDEX

    # --- Sentinel-5P NO2 ----------------------------------------------------------------------
    built = (landcover == BUILT).astype(np.float32) + 0.3 * town
    wind_dir = rng.uniform(0, 2 * np.pi)
    plume = _advect(built, wind_dir, length=extent / 4.0)
    background = 1.5e-5 + 1.0e-5 * (lat - 36.0) / 30.0 * (1.0 if doy < 80 or doy > 300 else 0.5)
    background = max(background, 3.0e-6)  # biomes south of 36° N: a clean-air floor
    no2 = background + 1.2e-4 * gaussian_blur(plume, extent / 25.0)
    no2 = (no2 * (1.0 + 0.05 * smooth_noise(rng, shape, extent / 10.0))).astype(np.float32)

    scene = SyntheticScene(
        seed=seed,
        index=index,
        config=cfg,
        s2=s2,
        s2_bands=tuple(b.name for b in s2_bands),
        s1=s1,
        s3=s3,
        landsat=landsat,
        landsat_bands=_LANDSAT_BANDS,
        no2=no2,
        dem=dem.astype(np.float32),
        landcover=landcover,
        flood=flood,
        valid=valid.astype(np.uint8),
        cloud_mask=cloud_mask,
        biomass=biomass,
        lon=lon,
        lat=lat,
        s2_date=s2_date,
        s1_dates=s1_dates,
        flooded=flooded,
        extras={
            "has_river": has_river,
            "has_lake": bool(lake.any()),
            "towns": n_towns,
            "cloud_cover": float((cloud_mask > 0).mean()),
            "biome": cfg.biome,
        },
    )
    scene.caption = write_caption(scene, rng)
    return scene


def _towns_on_the_water(
    towns: list[tuple[float, float, float]], water: np.ndarray, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """Move town centres onto the nearest river or lake pixel (an urban flood world).

    A scene that drew no town gets one from ``rng`` (the shift's own generator); radii are at
    least a fifth of the scene, so the town reaches over the floodplain.
    """
    h, w = water.shape
    extent = max(h, w)
    if not towns:
        towns = [(rng.uniform(0, h), rng.uniform(0, w), extent * float(rng.uniform(0.1, 0.2)))]
    if not water.any():
        return [(cy, cx, max(r, extent / 5.0)) for cy, cx, r in towns]
    _, (iy, ix) = ndimage.distance_transform_edt(~water, return_indices=True)
    out = []
    for cy, cx, radius in towns:
        y, x = min(int(cy), h - 1), min(int(cx), w - 1)
        out.append((float(iy[y, x]), float(ix[y, x]), max(radius, extent / 5.0)))
    return out


_LANDSAT_SENSOR = "landsat-8-9"
#: The Landsat 8/9 bands the world renders: OLI B1..B7 (Collection 2 Level-2 surface reflectance).
_LANDSAT_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")


def _render_landsat(
    fractions: np.ndarray,
    brightness: np.ndarray,
    alpha: np.ndarray | None,
    shadow: np.ndarray | None,
    spectra_key: tuple,
    gsd: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Landsat 8/9 OLI B1..B7 of the scene's surface as Collection 2 L2 SR DNs, ``[7, H, W]``.

    The surface is mixed through the registry's OLI band edges, shaded and clouded as
    Sentinel-2 is, averaged over 30 m blocks (``round(30 / gsd)`` pixels), and given noise of
    its own per block (std 0.002 + 1 % of reflectance, as the world's Sentinel-2).
    """
    resp = _sensor_response(_LANDSAT_SENSOR, _LANDSAT_BANDS, spectra_key)
    surface = np.einsum("be,ehw->bhw", resp, fractions) * brightness[None]
    if alpha is not None:
        cloud = _sensor_response(_LANDSAT_SENSOR, _LANDSAT_BANDS, ("cloud",))[:, 0]
        if shadow is not None:
            surface = surface * (1 - 0.65 * shadow)[None]
        surface = surface * (1 - alpha)[None] + cloud[:, None, None] * alpha[None]
    factor = max(1, round(30.0 / gsd))
    # Noise drawn per fine pixel, scaled by the block side, averages to the stated std per block.
    noise = (0.002 + 0.01 * surface) * factor * rng.standard_normal(surface.shape)
    reflectance = _block_mean(surface + noise, factor)
    bands = get_sensor(_LANDSAT_SENSOR).select(_LANDSAT_BANDS)
    offset = np.array([b.offset for b in bands])[:, None, None]
    scale = np.array([b.scale for b in bands])[:, None, None]
    dn = np.round((reflectance - offset) / scale)
    return np.clip(dn, 1, 65_535).astype(np.float32)


def _remap_speckle(speckle: np.ndarray, looks: float) -> np.ndarray:
    """Gamma speckle of ENL :data:`S1_ENL` mapped quantile by quantile to ENL ``looks``.

    The same draws, so a world with other speckle keeps every other random value of its scenes.
    """
    u = special.gammainc(S1_ENL, speckle * S1_ENL)
    u = np.clip(u, 1e-12, 1.0 - 1e-12)
    return special.gammaincinv(looks, u) / looks


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Average ``[C, H, W]`` over ``factor``² blocks and repeat back to ``[C, H, W]``."""
    if factor <= 1:
        return x.astype(np.float32)
    c, h, w = x.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    blocks = padded.reshape(c, hp // factor, factor, wp // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2)[:, :h, :w]


def _advect(source: np.ndarray, direction: float, length: float) -> np.ndarray:
    """Smear a source field downwind with exponential decay (a plume), same shape."""
    out = source.copy()
    steps = max(1, int(length))
    dy, dx = math.sin(direction), math.cos(direction)
    for k in range(1, steps + 1, max(1, steps // 12)):
        shifted = ndimage.shift(source, (dy * k, dx * k), order=1, mode="constant")
        out += shifted * math.exp(-k / (0.5 * length))
    return out / out.max() if out.max() > 0 else out


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------

_SEASONS = ((80, "winter"), (172, "spring"), (266, "summer"), (355, "autumn"), (367, "winter"))


def write_caption(scene: SyntheticScene, rng: np.random.Generator | None = None) -> str:
    """A one-paragraph description of a scene written from its label statistics."""
    rng = rng or np.random.default_rng(0)
    frac = scene.class_fractions()
    order = [int(i) for i in np.argsort(frac)[::-1] if frac[i] >= PRESENCE_THRESHOLD]
    names = [f"{LANDCOVER_CLASSES[i]} ({frac[i]:.0%})" for i in order]
    if not names:
        names = [LANDCOVER_CLASSES[int(np.argmax(frac))]]
    lead = rng.choice(["A landscape of", "A scene dominated by", "Mostly"])
    parts = [f"{lead} {names[0]}" + (f" with {', '.join(names[1:])}" if names[1:] else "") + "."]
    if scene.extras.get("has_river"):
        parts.append(rng.choice(["A river winds through it.", "A river crosses the scene."]))
    if scene.extras.get("has_lake"):
        parts.append("There is a lake on the low ground.")
    if frac[BUILT] >= 0.2:
        parts.append("A town covers much of it.")
    elif frac[BUILT] >= 0.02:
        parts.append("A small settlement lies within it.")
    if scene.flooded:
        share = float((scene.flood == 2).mean())
        parts.append(
            f"After the event, floodwater covers {share:.0%} of the low ground near the river."
        )
    doy = scene.s2_date.timetuple().tm_yday
    season = next(name for limit, name in _SEASONS if doy < limit)
    cloud = scene.extras.get("cloud_cover", 0.0)
    sky = "clear sky" if cloud < 0.02 else ("partly cloudy" if cloud < 0.5 else "mostly cloudy")
    parts.append(f"Seen in {season}, {sky}, around {scene.lat:.1f}°N {scene.lon:.1f}°E.")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

_SENSOR_KEYS = {
    "sentinel-2-l2a": "s2",
    "sentinel-2-l1c": "s2",
    "sentinel-1-grd": "s1",
    "sentinel-3-olci": "s3",
    "sentinel-5p": "no2",
    "copernicus-dem": "dem",
    _LANDSAT_SENSOR: "landsat",
}


class SyntheticCopernicus(Dataset[dict[str, Any]]):
    """Samples of the synthetic Copernicus world as Samples, for any sensor and task.

    Scenes are generated on demand from ``(seed, split, index)``, so train, val and test never
    share a scene and the same arguments always give the same data.

    Tasks and what they put in the Sample:

    * ``multilabel``: ``label`` int64 multi-hot ``[9]`` (:data:`LANDCOVER_CLASSES` present);
    * ``landcover``: ``mask`` int64 ``[H, W]`` class ids;
    * ``flood``: needs ``sensor="sentinel-1-grd"``; ``image`` ``[3, 2, H, W]`` (SL2, SL1, MS1 ×
      VV, VH) as Kuro Siwo; ``mask`` int64 ``[H, W]`` 0/1/2, 3 = ignore; ``time`` one per step;
    * ``water``: ``mask`` int64 ``[H, W]`` 0 land, 1 water, 255 ignore (single date);
    * ``biomass``: ``target`` float32 ``[1, H, W]`` Mg/ha;
    * ``no2``: ``target`` float32 ``[1, H, W]`` tropospheric NO2, µmol/m²;
    * ``none``: image and metadata only (pretraining).

    Every Sample also carries ``caption`` and ``labels`` (the multi-hot vector, for SoftCon);
    Sentinel-1 Samples carry ``units`` ``"linear"`` (sigma0).

    Args:
        task: what the Sample is for (see above).
        sensor: registry name of the input sensor (S2 L2A/L1C, S1 GRD, S3 OLCI, S5P, DEM,
            Landsat 8/9: ``landsat-8-9`` or an alias such as ``landsat-8``, bands ``B1``..``B7``
            as Collection 2 Level-2 surface-reflectance DNs, gsd 30 m).
        split: ``train``, ``val`` or ``test`` (independent scene streams).
        n: number of samples.
        size: sample height and width in pixels.
        seed: world seed.
        bands: a subset of the sensor's bands, in any order (default: all the world makes).
        cloud_cover: mean Sentinel-2 cloud fraction.
        flood_probability: share of scenes with a flood event.
        world: shift settings, :class:`WorldConfig` fields named in
            :data:`WORLD_SHIFT_FIELDS` (e.g. ``{"biome": "boreal", "season": "summer"}``).
        transforms: a function applied to each Sample.
        cache: keep generated Samples in memory (scenes are cheap but not free).
    """

    def __init__(
        self,
        task: Task = "multilabel",
        sensor: str = "sentinel-2-l2a",
        split: Literal["train", "val", "test"] = "train",
        n: int = 256,
        size: int = 64,
        seed: int = 0,
        bands: Sequence[str] | None = None,
        cloud_cover: float = 0.0,
        flood_probability: float = 0.8,
        world: Mapping[str, Any] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        if task not in get_args(Task):
            raise UserInputError(
                f"unknown task {task!r}; expected one of: {', '.join(get_args(Task))}"
            )
        if split not in _SPLIT_STREAMS:
            raise UserInputError(f"unknown split {split!r}; expected one of: train, val, test")
        if n <= 0:
            raise UserInputError(f"n must be a positive number of samples, got {n}")
        resolved = get_sensor(sensor)
        if resolved.name not in _SENSOR_KEYS:
            raise UserInputError(
                f"the synthetic world has no {resolved.name}; expected one of: "
                + ", ".join(_SENSOR_KEYS)
            )
        if task == "flood" and resolved.name != "sentinel-1-grd":
            raise UserInputError("the flood task needs sensor='sentinel-1-grd' (SAR time series)")
        self.task = task
        self.sensor = resolved.name
        self.split = split
        self.n = int(n)
        self.seed = int(seed)
        level: Literal["L2A", "L1C"] = "L1C" if self.sensor == "sentinel-2-l1c" else "L2A"
        self.config = WorldConfig(
            size=size,
            cloud_cover=cloud_cover,
            flood_probability=flood_probability,
            s2_level=level,
            **_world_settings(world),
        )
        available = self._available_bands()
        chosen = resolved.select(bands) if bands is not None else resolved.select(available)
        names = tuple(b.name for b in chosen)
        missing = [b for b in names if b not in available]
        if missing:
            raise UserInputError(
                f"the synthetic world does not make {', '.join(missing)} for {self.sensor}; "
                f"expected some of: {', '.join(available)}"
            )
        self.bands = names
        self._index = [available.index(b) for b in names]
        self.transforms = transforms
        self._cache: dict[int, dict[str, Any]] | None = {} if cache else None

    def _available_bands(self) -> tuple[str, ...]:
        if self.sensor == "sentinel-5p":
            return ("NO2",)
        if self.sensor == _LANDSAT_SENSOR:
            return _LANDSAT_BANDS
        return get_sensor(self.sensor).band_names

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> SyntheticScene:
        """The full scene behind sample ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return generate_scene(self.seed, index, self.config, stream=_SPLIT_STREAMS[self.split])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            sample = dict(self._cache[index])
        else:
            sample = scene_to_sample(
                self.scene(index), self.sensor, self.task, self._index, self.bands
            )
            if self._cache is not None:
                self._cache[index] = sample
            sample = dict(sample)
        return self.transforms(sample) if self.transforms is not None else sample


def _world_settings(world: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a ``world`` mapping: only :data:`WORLD_SHIFT_FIELDS`, values checked by WorldConfig."""
    if world is None:
        return {}
    if not isinstance(world, Mapping):
        raise UserInputError(
            "world must be a mapping of shift settings, some of: " + ", ".join(WORLD_SHIFT_FIELDS)
        )
    unknown = sorted(str(k) for k in world if k not in WORLD_SHIFT_FIELDS)
    if unknown:
        raise UserInputError(
            f"unknown world setting {unknown[0]!r}; expected some of: "
            + ", ".join(WORLD_SHIFT_FIELDS)
        )
    return dict(world)


def scene_to_sample(
    scene: SyntheticScene,
    sensor: str,
    task: Task,
    channels: Sequence[int] | None = None,
    bands: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Cut a Sample for one sensor and task out of a scene (see :class:`SyntheticCopernicus`)."""
    key = _SENSOR_KEYS[sensor]
    gsd = scene.gsd
    time: float | torch.Tensor = to_days(scene.s2_date)
    if key == "s2":
        image = scene.s2
    elif key == "s1":
        image = scene.s1 if task == "flood" else scene.s1[-1]
        if task == "flood":
            time = torch.tensor([to_days(d) for d in scene.s1_dates], dtype=torch.float64)
        else:
            time = to_days(scene.s1_dates[-1])
    elif key == "s3":
        image, gsd = scene.s3, 300.0
    elif key == "landsat":
        image, gsd = scene.landsat, max(30.0, gsd)
    elif key == "no2":
        image, gsd = scene.no2[None], 5500.0
    else:
        image = scene.dem[None]
    if channels is not None:
        image = image[..., list(channels), :, :]
    sample: dict[str, Any] = {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        "bands": tuple(bands) if bands is not None else (),
        "sensor": sensor,
        "lon": scene.lon,
        "lat": scene.lat,
        "time": time,
        "gsd": gsd,
        "caption": scene.caption,
        "labels": torch.from_numpy(scene.multilabel()),
    }
    if key == "s1":
        sample["units"] = "linear"  # the world's Sentinel-1 is sigma0 (see generate_scene)
    if task == "multilabel":
        sample["label"] = torch.from_numpy(scene.multilabel())
    elif task == "landcover":
        sample["mask"] = torch.from_numpy(scene.landcover.astype(np.int64))
    elif task == "flood":
        sample["mask"] = torch.from_numpy(scene.flood.astype(np.int64))
    elif task == "water":
        sample["mask"] = torch.from_numpy(scene.water_mask().astype(np.int64))
    elif task == "biomass":
        sample["target"] = torch.from_numpy(scene.biomass[None].copy())
    elif task == "no2":
        sample["target"] = torch.from_numpy((scene.no2[None] * 1e6).astype(np.float32))
    return sample
