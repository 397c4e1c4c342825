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
* a **caption** written from the scene's label statistics, and per-scene lon/lat/time/gsd.

The world is learnable but not trivial: per-band means do not solve the tasks, and flood mapping
needs the pre-event images because permanent water and floodwater look alike after the event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, get_args

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from thinkingearth.data.sample import to_days
from thinkingearth.errors import UserInputError
from thinkingearth.sensors import Band, get_bands, get_sensor

__all__ = [
    "FLOOD_CLASSES",
    "LANDCOVER_CLASSES",
    "SyntheticCopernicus",
    "SyntheticScene",
    "Task",
    "WorldConfig",
    "generate_scene",
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


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the synthetic world.

    Args:
        size: scene height and width in pixels (an int, or ``(height, width)``).
        gsd: ground sampling distance of the common grid, metres.
        cloud_cover: mean cloud fraction of Sentinel-2 scenes (0 = clear sky); each scene draws
            its own fraction around it.
        flood_probability: share of scenes with a flood event between pre and post acquisitions.
        s2_level: ``"L2A"`` surface reflectance (12 bands) or ``"L1C"`` top of atmosphere (13).
    """

    size: int | tuple[int, int] = 64
    gsd: float = 10.0
    cloud_cover: float = 0.0
    flood_probability: float = 0.8
    s2_level: Literal["L2A", "L1C"] = "L2A"

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

    @property
    def shape(self) -> tuple[int, int]:
        if isinstance(self.size, int):
            return (self.size, self.size)
        h, w = self.size
        return (int(h), int(w))


@dataclass
class SyntheticScene:
    """One co-registered scene of the synthetic world; arrays are numpy, ``[C, H, W]`` or ``[H, W]``.

    Attributes:
        s2: Sentinel-2 digital numbers (reflectance × 10 000), float32 ``[C, H, W]``.
        s2_bands: band names of ``s2`` (registry names).
        s1: Sentinel-1 linear sigma0, float32 ``[3, 2, H, W]``: SL2, SL1 (pre-event, oldest
            first), MS1 (post-event) × VV, VH; 0 = no data.
        s3: Sentinel-3 OLCI reflectance, float32 ``[21, H, W]``, constant over 300 m blocks.
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


# --------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------

_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one scene: independent streams per (seed, stream, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


def generate_scene(
    seed: int = 0, index: int = 0, config: WorldConfig | None = None, *, stream: int = 0
) -> SyntheticScene:
    """Generate one scene of the synthetic world, deterministically from ``(seed, stream, index)``.

    Args:
        seed: world seed.
        index: scene index within the world.
        config: world parameters (size, gsd, clouds, flood probability, S2 level).
        stream: an independent stream of scenes (the datasets use 0/1/2 for train/val/test).

    Returns:
        The scene with every sensor and label on one grid.
    """
    cfg = config or WorldConfig()
    rng = scene_rng(seed, index, stream)
    shape = cfg.shape
    h, w = shape
    gsd = cfg.gsd
    extent = max(h, w)

    # --- place and time -----------------------------------------------------------------------
    lat = float(rng.uniform(36.0, 66.0))
    lon = float(rng.uniform(-9.0, 30.0))
    s2_date = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365)))
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
    patch = extent / 7.0
    score = np.empty((len(LANDCOVER_CLASSES), h, w), dtype=np.float32)
    score[WATER] = -np.inf
    elev_rel = (dem - dem.mean()) / max(relief, 1.0)
    flat = np.clip(1.0 - slope / 8.0, -1.0, 1.0)
    near_water = np.exp(-dist_water / 300.0)
    prior = rng.normal(0.0, 0.4, size=len(LANDCOVER_CLASSES))
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
    # Settlements: a few towns on flat ground, denser near rivers.
    n_towns = int(rng.poisson(1.2))
    town = np.zeros(shape, dtype=np.float32)
    for _ in range(n_towns):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        radius = extent * float(rng.uniform(0.06, 0.2))
        town += np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
    score[BUILT] += 2.4 * town + 0.5 * smooth_noise(rng, shape, patch / 3.0) + 0.3 * flat
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
    peak = 170.0 + 1.5 * (lat - 45.0)
    season = float(np.exp(-(((doy - peak) / 70.0) ** 2)))
    crop_days = (doy - sowing[parcels]) % 365
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
    sensor_name = "sentinel-2-l2a" if cfg.s2_level == "L2A" else "sentinel-2-l1c"
    s2_bands = get_bands(sensor_name)
    resp = _band_response(s2_bands, _SPECTRA)  # [B, E]
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
        cloud_resp = _band_response(s2_bands, _CLOUD_SPECTRUM)[:, 0]
        surface = surface * (1 - 0.65 * shadow)[None]
        surface = surface * (1 - alpha)[None] + cloud_resp[:, None, None] * alpha[None]
        cloud_mask[shadow > 0.3] = 3
        cloud_mask[(alpha > 0.05) & (alpha <= 0.5)] = 2
        cloud_mask[alpha > 0.5] = 1
    else:
        alpha = np.zeros(shape, dtype=np.float32)

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
    olci = get_bands("sentinel-3-olci")
    s3_surface = np.einsum("be,ehw->bhw", _band_response(olci, _SPECTRA), fractions) * brightness
    if cover > 0.005:
        s3_surface = s3_surface * (1 - alpha)[None] + (
            _band_response(olci, _CLOUD_SPECTRUM)[:, 0][:, None, None] * alpha[None]
        )
    s3 = _block_mean(s3_surface, max(1, round(300.0 / gsd)))
    s3 = (s3 + 0.002 * rng.standard_normal(s3.shape)).astype(np.float32)

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
    s1 = np.zeros((3, 2, h, w), dtype=np.float32)
    soil_like = np.isin(landcover, (GRASS, CROP, BARE, SHRUB, WETLAND))
    valid = np.ones(shape, dtype=bool)
    for step in range(3):
        db = base_db + terrain_db[None] + texture_db[None]
        moisture = rng.normal(0.0, 0.8) + 0.6 * smooth_noise(rng, shape, extent / 4.0)
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
        sigma0 = (10.0 ** (db / 10.0)) * rng.gamma(S1_ENL, 1.0 / S1_ENL, size=db.shape)
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
        },
    )
    scene.caption = write_caption(scene, rng)
    return scene


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
        sensor: registry name of the input sensor (S2 L2A/L1C, S1 GRD, S3 OLCI, S5P, DEM).
        split: ``train``, ``val`` or ``test`` (independent scene streams).
        n: number of samples.
        size: sample height and width in pixels.
        seed: world seed.
        bands: a subset of the sensor's bands, in any order (default: all the world makes).
        cloud_cover: mean Sentinel-2 cloud fraction.
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
            size=size, cloud_cover=cloud_cover, flood_probability=flood_probability, s2_level=level
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
