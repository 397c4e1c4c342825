"""The sensor registry: the one place in the toolkit that knows bands.

Datasets, the wavelength-conditioned encoder, normalisation and the CLI all read band facts from
here: canonical names and aliases, central wavelength and bandwidth, ground sampling distance,
storage dtype with its scale/offset to physical units, no-data value and published normalisation
statistics. Lookups of sensors, bands and variables are case-insensitive and treat ``-``, ``_``
and spaces alike (``"Sentinel_2_L2A"`` finds ``sentinel-2-l2a``, ``"vv-amp"`` finds
``VV_amplitude``).

A band name without its sensor resolves across the registry (:func:`resolve_band`) when every
sensor that has a band of that name agrees on what it is (wavelength, bandwidth, polarisation,
component, variable): ``"VV"`` is Sentinel-1 GRD's, ``"B8A"`` the same band of Sentinel-2 L1C and
L2A. Only a real ambiguity asks for the sensor: ``"B04"`` is Sentinel-2's red (664.6 nm, 31 nm
wide) and also an alias of Landsat 8-9's red (654.5 nm, 37 nm wide).

Registered sensors (canonical names):

* ``sentinel-1-grd``: C-SAR IW GRDH, ``VV``, ``VH`` as linear sigma0.
* ``sentinel-1-slc``: C-SAR IW SLC, amplitude and phase per polarisation.
* ``sentinel-2-l1c`` / ``sentinel-2-l2a``: MSI top-of-atmosphere (13 bands) and surface
  reflectance (12 bands, no ``B10``).
* ``sentinel-3-olci``: OLCI ``Oa01`` .. ``Oa21``.
* ``sentinel-5p``: TROPOMI level-2 products ``NO2``, ``CO``, ``O3``, ``SO2``, ``CH4``, ``HCHO``,
  ``AER_AI``.
* ``copernicus-dem``: Copernicus DEM GLO-30 elevation.
* ``landsat-8-9``: OLI ``B1`` .. ``B9`` and TIRS ``B10``, ``B11``.

Sources of the numbers (each table below repeats its citation):

* Sentinel-2: S2A central wavelength and bandwidth from ESA's Sentinel-2 MSI User Guide
  (radiometric resolutions), which derives them from the S2A spectral response functions
  (COPE-GSEG-EOPG-TN-15-0007).
* Sentinel-2 statistics: SSL4EO-S12 (Wang et al. 2023, arXiv:2211.07044), file
  ``src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py`` in ``zhu-xlab/SSL4EO-S12``
  (``S2C_*`` = L1C, ``S2A_*`` = L2A; computed on 50k patches, in stored digital numbers).
* Sentinel-1: centre frequency 5.405 GHz and IW pixel spacings from ESA's Sentinel-1 SAR User
  Guide.
* Sentinel-3 OLCI: ESA's Sentinel-3 OLCI User Guide (radiometric resolution table).
* Sentinel-5P: ESA/KNMI TROPOMI level-2 product user manuals (units, pixel size).
* Copernicus DEM: Copernicus DEM Product Handbook (Airbus, GEO.2018-1988-2).
* Landsat 8-9: USGS Landsat 8/9 Data Users Handbooks (band edges) and the Collection 2
  Level-1/Level-2 science product guides (scale factors).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Literal, TypeVar, get_args

import numpy as np

from thinkingearth.errors import UnknownBandError, UnknownSensorError, UserInputError

__all__ = [
    "SENSORS",
    "SPEED_OF_LIGHT_M_S",
    "SSL4EO_S12_S1_DB_STATS",
    "AmbiguousBandError",
    "Band",
    "Polarisation",
    "ResolvedBand",
    "SarComponent",
    "Sensor",
    "SensorKind",
    "find_variable",
    "get_bands",
    "get_sensor",
    "radar_wavelength_nm",
    "resolve_band",
    "sensors_with",
]

_T = TypeVar("_T")

SensorKind = Literal["sar", "optical", "atmosphere", "elevation"]
Polarisation = Literal["VV", "VH", "HH", "HV"]
SarComponent = Literal["intensity", "amplitude", "phase"]

#: Speed of light in vacuum (exact, SI).
SPEED_OF_LIGHT_M_S: float = 299_792_458.0

#: SSL4EO-S12 Sentinel-1 GRD statistics, band -> (mean, std), in **decibels** (10 log10 sigma0),
#: from ``S1_MEAN``/``S1_STD`` in zhu-xlab/SSL4EO-S12
#: ``src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py``. The registry stores S1 as
#: linear sigma0, for which no statistics are published, so these are not attached to the bands;
#: use them only after converting to dB.
SSL4EO_S12_S1_DB_STATS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"VV": (-12.54847273, 5.25697717), "VH": (-20.19237134, 5.91150917)}
)


def radar_wavelength_nm(frequency_ghz: float) -> float:
    """Return the free-space wavelength c/f in nanometres of a radar centre frequency in GHz."""
    return SPEED_OF_LIGHT_M_S / (frequency_ghz * 1e9) * 1e9


def _key(name: str) -> str:
    """Lookup key: case-insensitive, with runs of ``-``, ``_`` and whitespace made one ``-``."""
    return re.sub(r"[\s_\-]+", "-", str(name).strip().lower())


@dataclass(frozen=True)
class Band:
    """One input channel of a sensor.

    Attributes:
        name: Canonical name, unique within its sensor.
        aliases: Other accepted names (e.g. ``("B4", "red")`` for Sentinel-2 ``B04``).
        wavelength_nm: Central wavelength; for SAR the radar wavelength c/f. ``None`` for
            non-spectral variables.
        bandwidth_nm: Full width of the band; ``None`` where no meaningful value exists.
        gsd_m: Ground sampling distance in metres: the band's native pixel size (a product may
            deliver it resampled, e.g. Landsat TIRS at 30 m).
        dtype: NumPy dtype name of the values as stored in the product.
        scale: Multiplier to physical units: ``physical = stored * scale + offset``.
        offset: Additive term to physical units.
        nodata: Stored value marking missing pixels; ``None`` if none is declared (float
            products then use NaN).
        mean: Published normalisation mean, in stored units; ``None`` if none is published.
        std: Published normalisation standard deviation, in stored units.
        polarisation: SAR transmit/receive polarisation.
        component: SAR component: ``"intensity"`` (GRD sigma0), ``"amplitude"`` or ``"phase"``
            (SLC).
        variable: Name of a non-spectral quantity, e.g. ``"Sentinel-5P NO2"``.
        units: Physical units after scale/offset, e.g. ``"reflectance"``, ``"m"``.
        description: Free text.
    """

    name: str
    aliases: tuple[str, ...] = ()
    wavelength_nm: float | None = None
    bandwidth_nm: float | None = None
    gsd_m: float = math.nan
    dtype: str = "float32"
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    mean: float | None = None
    std: float | None = None
    polarisation: Polarisation | None = None
    component: SarComponent | None = None
    variable: str | None = None
    units: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not _key(self.name):
            raise ValueError("a band needs a non-empty name")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        np.dtype(self.dtype)  # raises TypeError for an unknown dtype name
        if self.polarisation is not None and self.polarisation not in get_args(Polarisation):
            raise ValueError(f"band {self.name}: unknown polarisation {self.polarisation!r}")
        if self.component is not None and self.component not in get_args(SarComponent):
            raise ValueError(f"band {self.name}: unknown SAR component {self.component!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"band {self.name}: give both mean and std, or neither")
        if self.std is not None and not self.std > 0:
            raise ValueError(f"band {self.name}: std must be positive, got {self.std}")

    @property
    def is_sar(self) -> bool:
        """True for a SAR channel (it has a polarisation)."""
        return self.polarisation is not None

    @property
    def is_spectral(self) -> bool:
        """True for an optical or thermal band: it has a wavelength, no variable and is not SAR."""
        return self.wavelength_nm is not None and self.variable is None and not self.is_sar

    @property
    def has_stats(self) -> bool:
        """True when published normalisation statistics are attached."""
        return self.mean is not None and self.std is not None

    @property
    def identity(self) -> tuple[float | str | None, ...]:
        """What the band is physically: equal for one band in two products (L1C and L2A B04).

        Wavelength and bandwidth (nm, rounded to 1e-6), polarisation, component and variable.
        """

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(float(value), 6)

        return (
            rounded(self.wavelength_nm),
            rounded(self.bandwidth_nm),
            self.polarisation,
            self.component,
            self.variable,
        )


@dataclass(frozen=True)
class Sensor:
    """A sensor product and its bands, in the product's canonical band order.

    Attributes:
        name: Canonical registry name, e.g. ``"sentinel-2-l2a"``.
        bands: The bands in canonical order (the channel order of a full-band sample).
        aliases: Other accepted names.
        kind: ``"sar"``, ``"optical"``, ``"atmosphere"`` or ``"elevation"``.
        description: Free text with product facts.
        frequency_ghz: SAR centre frequency.
    """

    name: str
    bands: tuple[Band, ...]
    aliases: tuple[str, ...] = ()
    kind: SensorKind = "optical"
    description: str = ""
    frequency_ghz: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.kind not in get_args(SensorKind):
            raise ValueError(f"sensor {self.name}: unknown kind {self.kind!r}")
        if not self.bands:
            raise ValueError(f"sensor {self.name}: needs at least one band")
        _ = self._index  # build and validate the lookup table now

    @cached_property
    def _index(self) -> Mapping[str, int]:
        """Lookup key of every band name, alias and variable -> position in :attr:`bands`."""
        index: dict[str, int] = {}
        for i, band in enumerate(self.bands):
            keys = [band.name, *band.aliases]
            if band.variable is not None:
                keys.append(band.variable)
            for key in dict.fromkeys(_key(k) for k in keys):
                if key in index:
                    other = self.bands[index[key]].name
                    raise ValueError(
                        f"sensor {self.name}: {key!r} names both {other} and {band.name}"
                    )
                index[key] = i
        return MappingProxyType(index)

    @property
    def band_names(self) -> tuple[str, ...]:
        """Canonical band names in canonical order."""
        return tuple(b.name for b in self.bands)

    def has_band(self, name: str) -> bool:
        """True if ``name`` (canonical or alias, case-insensitive) is one of this sensor's bands."""
        return _key(name) in self._index

    def _position(self, name: str) -> int:
        try:
            return self._index[_key(name)]
        except KeyError:
            raise UnknownBandError(
                f"unknown band {name!r} for {self.name}; expected one of: "
                + ", ".join(self.band_names)
            ) from None

    def band(self, name: str) -> Band:
        """Return the band called ``name`` (canonical or alias, case-insensitive).

        Raises:
            UnknownBandError: If the sensor has no such band; the message lists the valid names.
        """
        return self.bands[self._position(name)]

    def indices(self, names: Sequence[str] | None = None) -> tuple[int, ...]:
        """Return the position in :attr:`bands` of each band :meth:`select` would return."""
        if names is None:
            return tuple(range(len(self.bands)))
        if isinstance(names, str):
            names = (names,)
        if len(names) == 0:
            raise UserInputError(
                f"no bands selected for {self.name}; expected some of: "
                + ", ".join(self.band_names)
            )
        positions = [self._position(n) for n in names]
        seen: dict[int, str] = {}
        for given, pos in zip(names, positions, strict=True):
            if pos in seen:
                raise UserInputError(
                    f"band {self.bands[pos].name} of {self.name} selected twice "
                    f"(as {seen[pos]!r} and {given!r}); select each band at most once"
                )
            seen[pos] = given
        return tuple(positions)

    def select(self, names: Sequence[str] | None = None) -> tuple[Band, ...]:
        """Return the bands called ``names``, in the order given.

        Args:
            names: Any subset of band names or aliases, in any order; ``None`` selects all bands
                in canonical order. A single string selects that one band.

        Raises:
            UnknownBandError: For a name the sensor does not have.
            UserInputError: If a band is named twice (also via two aliases) or none is named.
        """
        return tuple(self.bands[i] for i in self.indices(names))

    def normalisation(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return the published ``(mean, std)`` of the selected bands as float32 arrays ``[C]``.

        The statistics are in stored units (before ``scale``/``offset``), in the order of
        :meth:`select`.

        Raises:
            UserInputError: If any selected band has no published statistics; the message names
                those bands and the ones that do have statistics.
        """
        bands = self.select(names)
        missing = [b.name for b in bands if not b.has_stats]
        if missing:
            have = [b.name for b in self.bands if b.has_stats]
            hint = (
                ("bands with statistics: " + ", ".join(have))
                if have
                else "none of its bands has published statistics"
            )
            raise UserInputError(
                f"no published normalisation statistics for {self.name} band(s) "
                f"{', '.join(missing)}; {hint}"
            )
        mean = np.array([b.mean for b in bands], dtype=np.float32)
        std = np.array([b.std for b in bands], dtype=np.float32)
        return mean, std


# --------------------------------------------------------------------------------------------
# Sentinel-1
# --------------------------------------------------------------------------------------------

#: Sentinel-1 C-SAR centre frequency (ESA Sentinel-1 SAR User Guide).
S1_FREQUENCY_GHZ: float = 5.405
#: IW SLC pixel spacing, slant range x azimuth, in metres (ESA Sentinel-1 SAR User Guide).
S1_SLC_RANGE_SPACING_M: float = 2.3
S1_SLC_AZIMUTH_SPACING_M: float = 14.1

_S1_WAVELENGTH_NM = radar_wavelength_nm(S1_FREQUENCY_GHZ)  # ~5.5466e7 nm (5.55 cm)

# bandwidth_nm is None for SAR on purpose: the transmitted chirp is only ~43-57 MHz wide in IW
# (100 MHz at most, in stripmap), i.e. Delta-lambda = lambda * Delta-f / f of about 0.5-1 mm.
# That is a property of the pulse, not of a spectral filter, and an encoder that wants a
# bandwidth for SAR must choose its own convention instead of reading a made-up one here.
_S1_POLARISATIONS: tuple[Polarisation, ...] = ("VV", "VH")
_S1_SLC_PARTS: tuple[tuple[SarComponent, str], ...] = (("amplitude", "amp"), ("phase", "pha"))

_S1_GRD_BANDS = tuple(
    Band(
        name=pol,
        aliases=(f"sigma0_{pol}", f"{pol}_intensity"),
        wavelength_nm=_S1_WAVELENGTH_NM,
        gsd_m=10.0,  # IW GRDH pixel spacing 10 m x 10 m (resolution ~20 m x 22 m)
        dtype="float32",
        nodata=0.0,
        polarisation=pol,
        component="intensity",
        units="linear sigma0",
        description=f"{pol} backscatter as linear sigma0 (dB = 10 log10 sigma0)",
    )
    for pol in _S1_POLARISATIONS
)

_S1_SLC_BANDS = tuple(
    Band(
        name=f"{pol}_{part}",
        aliases=(f"{pol}-{short}",),
        wavelength_nm=_S1_WAVELENGTH_NM,
        # gsd_m: the coarser IW SLC spacing (14.1 m azimuth). The 2.3 m slant-range spacing is
        # ~3-4 m on the ground; after the usual 4 (range) x 1 (azimuth) multi-look the ground
        # pixel is close to 14 m square.
        gsd_m=S1_SLC_AZIMUTH_SPACING_M,
        dtype="float32",
        nodata=0.0 if part == "amplitude" else None,
        polarisation=pol,
        component=part,
        units="amplitude (DN)" if part == "amplitude" else "rad",
        description=(
            f"{pol} |DN| of the complex SLC sample (uncalibrated; sigma0 = |DN|^2 / A^2 with "
            "the product's calibration LUT)"
            if part == "amplitude"
            else f"{pol} phase of the complex SLC sample, radians in [-pi, pi]"
        ),
    )
    for pol in _S1_POLARISATIONS
    for part, short in _S1_SLC_PARTS
)

# --------------------------------------------------------------------------------------------
# Sentinel-2 MSI
# --------------------------------------------------------------------------------------------

# S2A central wavelength and bandwidth (nm), ESA Sentinel-2 MSI User Guide, radiometric
# resolutions (from the S2A spectral response functions, COPE-GSEG-EOPG-TN-15-0007; the later
# SRF v3.0 moves B02 to 492.7 nm, immaterial here). GSD from the MSI spatial resolution table.
# name, aliases, centre nm, width nm, gsd m, description
_S2_TABLE: tuple[tuple[str, tuple[str, ...], float, float, float, str], ...] = (
    ("B01", ("B1", "coastal"), 442.7, 21.0, 60.0, "Coastal aerosol"),
    ("B02", ("B2", "blue"), 492.4, 66.0, 10.0, "Blue"),
    ("B03", ("B3", "green"), 559.8, 36.0, 10.0, "Green"),
    ("B04", ("B4", "red"), 664.6, 31.0, 10.0, "Red"),
    ("B05", ("B5", "rededge1"), 704.1, 15.0, 20.0, "Vegetation red edge 1"),
    ("B06", ("B6", "rededge2"), 740.5, 15.0, 20.0, "Vegetation red edge 2"),
    ("B07", ("B7", "rededge3"), 782.8, 20.0, 20.0, "Vegetation red edge 3"),
    ("B08", ("B8", "nir"), 832.8, 106.0, 10.0, "NIR (broad)"),
    ("B8A", ("nir08",), 864.7, 21.0, 20.0, "Narrow NIR"),
    ("B09", ("B9", "watervapour", "nir09"), 945.1, 20.0, 60.0, "Water vapour"),
    ("B10", ("cirrus",), 1373.5, 31.0, 60.0, "SWIR cirrus"),
    ("B11", ("swir16",), 1613.7, 91.0, 20.0, "SWIR 1"),
    ("B12", ("swir22",), 2202.4, 175.0, 20.0, "SWIR 2"),
)

# SSL4EO-S12 band statistics (mean, std) in digital numbers (reflectance x 1e4), computed by the
# dataset authors on 50k patches: zhu-xlab/SSL4EO-S12,
# src/benchmark/pretrain_ssl/datasets/SSL4EO/ssl4eo_dataset.py, S2C_MEAN/S2C_STD (L1C) and
# S2A_MEAN/S2A_STD (L2A). (torchgeo's SSL4EO-S12 weights instead divide by 10000.)
_SSL4EO_S12_L1C: Mapping[str, tuple[float, float]] = {
    "B01": (1605.57504906, 786.78685367),
    "B02": (1390.78157673, 850.34818441),
    "B03": (1314.8729939, 875.06484736),
    "B04": (1363.52445545, 1138.84957046),
    "B05": (1549.44374991, 1122.17775652),
    "B06": (2091.74883118, 1161.59187054),
    "B07": (2371.7172463, 1274.39184232),
    "B08": (2299.90463006, 1248.42891965),
    "B8A": (2560.29504086, 1345.52684884),
    "B09": (830.06605044, 577.31607053),
    "B10": (22.10351321, 51.15431158),
    "B11": (2177.07172323, 1336.09932639),
    "B12": (1524.06546312, 1136.53823676),
}
_SSL4EO_S12_L2A: Mapping[str, tuple[float, float]] = {
    "B01": (752.40087073, 1108.02887453),
    "B02": (884.29673756, 1155.15170768),
    "B03": (1144.16202635, 1183.6292542),
    "B04": (1297.47289228, 1368.11351514),
    "B05": (1624.90992062, 1370.265037),
    "B06": (2194.6423161, 1355.55390699),
    "B07": (2422.21248945, 1416.51487101),
    "B08": (2517.76053101, 1474.78900051),
    "B8A": (2581.64687018, 1439.3086061),
    "B09": (2645.51888987, 1582.28010962),
    "B11": (2368.51236873, 1455.52084939),
    "B12": (1805.06846033, 1343.48379601),
}


def _s2_bands(
    stats: Mapping[str, tuple[float, float]], level: str, exclude: tuple[str, ...] = ()
) -> tuple[Band, ...]:
    return tuple(
        Band(
            name=name,
            aliases=aliases,
            wavelength_nm=centre,
            bandwidth_nm=width,
            gsd_m=gsd,
            dtype="uint16",
            scale=1e-4,
            nodata=0.0,
            mean=stats[name][0],
            std=stats[name][1],
            units="reflectance",
            description=f"{desc} ({level} reflectance)",
        )
        for name, aliases, centre, width, gsd, desc in _S2_TABLE
        if name not in exclude
    )


_S2_OFFSET_NOTE = (
    "Since processing baseline 04.00 (25 January 2022) ESA adds 1000 to the stored digital "
    "numbers (RADIO_ADD_OFFSET / BOA_ADD_OFFSET = -1000), so physical = (DN - 1000) * 1e-4. The "
    "registry keeps offset 0 because BigEarthNet v1, SSL4EO-S12 and its statistics predate that "
    "baseline; readers of newer products subtract 1000 (or use a harmonised collection) first."
)

# --------------------------------------------------------------------------------------------
# Sentinel-3 OLCI
# --------------------------------------------------------------------------------------------

# OLCI band centres and widths (nm), ESA Sentinel-3 OLCI User Guide, radiometric resolution.
_OLCI_TABLE: tuple[tuple[float, float], ...] = (
    (400.0, 15.0), (412.5, 10.0), (442.5, 10.0), (490.0, 10.0), (510.0, 10.0), (560.0, 10.0),
    (620.0, 10.0), (665.0, 10.0), (673.75, 7.5), (681.25, 7.5), (708.75, 10.0), (753.75, 7.5),
    (761.25, 2.5), (764.375, 3.75), (767.5, 2.5), (778.75, 15.0), (865.0, 20.0), (885.0, 10.0),
    (900.0, 10.0), (940.0, 20.0), (1020.0, 40.0),
)  # fmt: skip

_OLCI_BANDS = tuple(
    Band(
        name=f"Oa{i:02d}",
        aliases=(f"Oa{i}", f"Oa{i:02d}_reflectance") if i < 10 else (f"Oa{i}_reflectance",),
        wavelength_nm=centre,
        bandwidth_nm=width,
        gsd_m=300.0,  # full-resolution (FR) products; reduced resolution (RR) is 1200 m
        dtype="float32",
        units="reflectance",
        description=f"OLCI {centre:g} nm, top-of-atmosphere reflectance",
    )
    for i, (centre, width) in enumerate(_OLCI_TABLE, start=1)
)

# --------------------------------------------------------------------------------------------
# Sentinel-5P TROPOMI
# --------------------------------------------------------------------------------------------

# Level-2 products (TROPOMI product user manuals). Nadir pixel since 6 August 2019: 3.5 km
# across x 5.5 km along track in the UV-VIS-NIR bands, 7 km x 5.5 km in the SWIR (CO, CH4);
# gsd_m records the coarser side. Before that date the along-track size was 7 km.
# name, aliases, variable, units, gsd m, description
_S5P_TABLE: tuple[tuple[str, tuple[str, ...], str, str, float, str], ...] = (
    ("NO2", ("s5p_no2", "Sentinel 5P Nitrogen Dioxide"), "Sentinel-5P NO2", "mol/m^2", 5500.0,
     "Tropospheric NO2 vertical column"),
    ("CO", ("s5p_co", "Sentinel 5P Carbon Monoxide"), "Sentinel-5P CO", "mol/m^2", 7000.0,
     "Total CO column (SWIR)"),
    ("O3", ("s5p_o3", "Sentinel 5P Ozone"), "Sentinel-5P O3", "mol/m^2", 5500.0,
     "Total O3 column"),
    ("SO2", ("s5p_so2", "Sentinel 5P Sulfur Dioxide"), "Sentinel-5P SO2", "mol/m^2", 5500.0,
     "Total SO2 vertical column"),
    ("CH4", ("s5p_ch4", "XCH4"), "Sentinel-5P CH4", "ppb", 7000.0,
     "Column-averaged dry-air CH4 mixing ratio (SWIR)"),
    ("HCHO", ("s5p_hcho",), "Sentinel-5P HCHO", "mol/m^2", 5500.0,
     "Tropospheric formaldehyde vertical column"),
    ("AER_AI", ("s5p_aer_ai", "Sentinel-5P AER_AI", "UVAI"), "Sentinel-5P UV aerosol index",
     "unitless", 5500.0, "UV absorbing aerosol index, 354/388 nm pair"),
)  # fmt: skip

_S5P_BANDS = tuple(
    Band(
        name=name,
        aliases=aliases,
        gsd_m=gsd,
        dtype="float32",
        variable=variable,
        units=units,
        description=desc,
    )
    for name, aliases, variable, units, gsd, desc in _S5P_TABLE
)

# --------------------------------------------------------------------------------------------
# Copernicus DEM
# --------------------------------------------------------------------------------------------

_DEM_BANDS = (
    Band(
        name="DEM",
        aliases=("elevation", "height", "Copernicus Digital Elevation Model"),
        gsd_m=30.0,  # 1 arc-second; longitude spacing widens poleward of 50 degrees
        dtype="float32",
        nodata=-32767.0,  # no-data value of the DEM layer, Copernicus DEM Product Handbook
        variable="Copernicus DEM elevation",
        units="m",
        description="GLO-30 surface (DSM) height above the EGM2008 geoid",
    ),
)

# --------------------------------------------------------------------------------------------
# Landsat 8-9 OLI/TIRS
# --------------------------------------------------------------------------------------------

# Band edges (nm) from the USGS Landsat 8 / Landsat 9 Data Users Handbooks; centre = midpoint,
# bandwidth = upper - lower. Scale/offset by Collection 2 product (USGS science product guides):
#   "sr":  Level-2 surface reflectance, 2.75e-5 * DN - 0.2            (SR_B1..SR_B7)
#   "st":  Level-2 surface temperature, 0.00341802 * DN + 149.0 K     (ST_B10)
#   "toa": Level-1 TOA reflectance (no sun-angle correction), 2e-5 * DN - 0.1  (B8, B9)
#   "rad": Level-1 TOA radiance, 3.342e-4 * DN + 0.1 W/(m^2 sr um)    (B11)
# B8, B9 and B11 exist only in Level-1 products. Fill value is 0 in all of them.
_LANDSAT_PRODUCTS: Mapping[str, tuple[float, float, str]] = {
    "sr": (2.75e-5, -0.2, "reflectance"),
    "st": (0.00341802, 149.0, "K"),
    "toa": (2e-5, -0.1, "reflectance"),
    "rad": (3.342e-4, 0.1, "W/(m^2 sr um)"),
}
# name, aliases, lower nm, upper nm, gsd m, product, description. USGS names these bands B1 ... B11
# (SR_B4 in Collection-2 Level-2 files), never zero-padded: "B04" is Sentinel-2's name and resolves
# to it alone; "B4", "red" and "B10" name different light on the two missions and stay ambiguous.
_LANDSAT_TABLE: tuple[tuple[str, tuple[str, ...], float, float, float, str, str], ...] = (
    ("B1", ("coastal", "SR_B1"), 435, 451, 30, "sr", "OLI coastal aerosol"),
    ("B2", ("blue", "SR_B2"), 452, 512, 30, "sr", "OLI blue"),
    ("B3", ("green", "SR_B3"), 533, 590, 30, "sr", "OLI green"),
    ("B4", ("red", "SR_B4"), 636, 673, 30, "sr", "OLI red"),
    ("B5", ("nir", "nir08", "SR_B5"), 851, 879, 30, "sr", "OLI NIR"),
    ("B6", ("swir16", "SR_B6"), 1566, 1651, 30, "sr", "OLI SWIR 1"),
    ("B7", ("swir22", "SR_B7"), 2107, 2294, 30, "sr", "OLI SWIR 2"),
    ("B8", ("pan",), 503, 676, 15, "toa", "OLI panchromatic (Level-1 only)"),
    ("B9", ("cirrus",), 1363, 1384, 30, "toa", "OLI cirrus (Level-1 only)"),
    ("B10", ("lwir11", "ST_B10"), 10600, 11190, 100, "st", "TIRS 1; delivered resampled to 30 m"),
    ("B11", ("lwir12",), 11500, 12510, 100, "rad", "TIRS 2 (Level-1 only); resampled to 30 m"),
)

_LANDSAT_BANDS = tuple(
    Band(
        name=name,
        aliases=aliases,
        wavelength_nm=(lower + upper) / 2,
        bandwidth_nm=float(upper - lower),
        gsd_m=float(gsd),
        dtype="uint16",
        scale=_LANDSAT_PRODUCTS[product][0],
        offset=_LANDSAT_PRODUCTS[product][1],
        nodata=0.0,
        units=_LANDSAT_PRODUCTS[product][2],
        description=desc,
    )
    for name, aliases, lower, upper, gsd, product, desc in _LANDSAT_TABLE
)

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_ALL_SENSORS: tuple[Sensor, ...] = (
    Sensor(
        name="sentinel-1-grd",
        bands=_S1_GRD_BANDS,
        aliases=("s1", "s1-grd", "sentinel-1"),
        kind="sar",
        frequency_ghz=S1_FREQUENCY_GHZ,
        description=(
            "Sentinel-1 C-SAR IW GRDH, 10 m pixel spacing, calibrated backscatter as linear "
            "sigma0 float32 (0 = no data). SSL4EO-S12 statistics exist only in dB: see "
            "SSL4EO_S12_S1_DB_STATS."
        ),
    ),
    Sensor(
        name="sentinel-1-slc",
        bands=_S1_SLC_BANDS,
        aliases=("s1-slc",),
        kind="sar",
        frequency_ghz=S1_FREQUENCY_GHZ,
        description=(
            "Sentinel-1 C-SAR IW SLC split into amplitude and phase (float32). Pixel spacing "
            "2.3 m slant range x 14.1 m azimuth; gsd_m records the 14.1 m azimuth spacing."
        ),
    ),
    Sensor(
        name="sentinel-2-l1c",
        bands=_s2_bands(_SSL4EO_S12_L1C, "TOA"),
        aliases=("s2-l1c",),
        kind="optical",
        description=(
            "Sentinel-2 MSI Level-1C top-of-atmosphere reflectance, 13 bands, uint16 digital "
            "numbers, reflectance = DN * 1e-4, 0 = no data. Statistics: SSL4EO-S12 L1C. "
            + _S2_OFFSET_NOTE
        ),
    ),
    Sensor(
        name="sentinel-2-l2a",
        bands=_s2_bands(_SSL4EO_S12_L2A, "BOA", exclude=("B10",)),
        aliases=("s2", "s2-l2a", "sentinel-2"),
        kind="optical",
        description=(
            "Sentinel-2 MSI Level-2A surface reflectance, 12 bands (no B10), uint16 digital "
            "numbers, reflectance = DN * 1e-4, 0 = no data. Statistics: SSL4EO-S12 L2A. "
            + _S2_OFFSET_NOTE
        ),
    ),
    Sensor(
        name="sentinel-3-olci",
        bands=_OLCI_BANDS,
        aliases=("s3", "olci"),
        kind="optical",
        description=(
            "Sentinel-3 OLCI, 21 bands at 300 m (full resolution). ESA's Level-1 product holds "
            "TOA radiance (Oaxx_radiance); the toolkit stores TOA reflectance "
            "pi * L / (E0 * cos(sza)) as float32, NaN = no data. No published statistics."
        ),
    ),
    Sensor(
        name="sentinel-5p",
        bands=_S5P_BANDS,
        aliases=("s5p",),
        kind="atmosphere",
        description=(
            "Sentinel-5P TROPOMI Level-2 products as float32 grids (NaN = no data): column "
            "densities in mol/m^2, CH4 in ppb, aerosol index unitless. Pixel 3.5 x 5.5 km "
            "(UV-VIS-NIR) and 7 x 5.5 km (SWIR) since 6 August 2019; gsd_m is the coarser side."
        ),
    ),
    Sensor(
        name="copernicus-dem",
        bands=_DEM_BANDS,
        aliases=("dem", "cop-dem", "glo-30"),
        kind="elevation",
        description=(
            "Copernicus DEM GLO-30 (a DSM from TanDEM-X), float32 metres above EGM2008, "
            "-32767 = no data. Ocean has no tiles in the public COG mirror (height 0)."
        ),
    ),
    Sensor(
        name="landsat-8-9",
        bands=_LANDSAT_BANDS,
        aliases=("landsat", "landsat-8", "landsat-9", "oli-tirs"),
        kind="optical",
        description=(
            "Landsat 8/9 OLI (B1-B9) and TIRS (B10, B11), Collection 2 uint16 with 0 = fill. "
            "B1-B7 use Level-2 surface reflectance scaling, B10 Level-2 surface temperature "
            "(K), B8/B9 Level-1 TOA reflectance and B11 Level-1 TOA radiance."
        ),
    ),
)

#: Read-only mapping of canonical sensor name to :class:`Sensor`.
SENSORS: Mapping[str, Sensor] = MappingProxyType({s.name: s for s in _ALL_SENSORS})


def _build_index(pairs: Sequence[tuple[str, _T]], what: str) -> Mapping[str, _T]:
    index: dict[str, _T] = {}
    for name, obj in pairs:
        key = _key(name)
        if key in index and index[key] is not obj:
            raise ValueError(f"{what} name {name!r} is ambiguous in the sensor registry")
        index[key] = obj
    return MappingProxyType(index)


_SENSOR_INDEX: Mapping[str, Sensor] = _build_index(
    [(n, s) for s in _ALL_SENSORS for n in (s.name, *s.aliases)], "sensor"
)
#: Non-spectral bands (those with a ``variable``) across all sensors, in registry order.
_VARIABLES: tuple[Band, ...] = tuple(
    b for s in _ALL_SENSORS for b in s.bands if b.variable is not None
)
_VARIABLE_INDEX: Mapping[str, Band] = _build_index(
    [(n, b) for b in _VARIABLES for n in (b.variable or b.name, b.name, *b.aliases)], "variable"
)


def get_sensor(name: str) -> Sensor:
    """Return the sensor called ``name`` (canonical or alias, case-insensitive).

    Raises:
        UnknownSensorError: If no sensor has that name; the message lists the canonical names.
    """
    sensor = _SENSOR_INDEX.get(_key(name))
    if sensor is None:
        raise UnknownSensorError(f"unknown sensor {name!r}; expected one of: {', '.join(SENSORS)}")
    return sensor


def get_bands(sensor: str, names: Sequence[str] | None = None) -> tuple[Band, ...]:
    """Return ``get_sensor(sensor).select(names)``: any subset in any order, ``None`` = all."""
    return get_sensor(sensor).select(names)


def find_variable(name: str) -> Band:
    """Return the non-spectral band whose variable is ``name``, across all sensors.

    Accepts the variable name (``"Sentinel-5P NO2"``, ``"Copernicus DEM elevation"``), the band
    name (``"NO2"``, ``"DEM"``) or a band alias (``"Sentinel-5P AER_AI"``), case-insensitively.

    Raises:
        UserInputError: If no variable matches; the message lists the variable names.
    """
    band = _VARIABLE_INDEX.get(_key(name))
    if band is None:
        raise UserInputError(
            f"unknown variable {name!r}; expected one of: "
            + ", ".join(b.variable or b.name for b in _VARIABLES)
        )
    return band


# --------------------------------------------------------------------------------------------
# Band names without their sensor
# --------------------------------------------------------------------------------------------


class AmbiguousBandError(UserInputError):
    """A band name that sensors of the registry use for different bands; it needs its sensor."""


@dataclass(frozen=True)
class ResolvedBand:
    """A band name resolved across the registry (:func:`resolve_band`).

    Attributes:
        band: The band (of the first sensor in :attr:`sensors`).
        sensors: Canonical names of every sensor, among those searched, that has a band of this
            name; all of them describe the same band (wavelength, bandwidth, polarisation,
            component, variable), though their products may differ (e.g. L1C top-of-atmosphere
            and L2A surface reflectance).
    """

    band: Band
    sensors: tuple[str, ...]

    @property
    def sensor(self) -> str:
        """The first sensor that has the band, in registry order."""
        return self.sensors[0]


def _describe(band: Band) -> str:
    if band.variable is not None:
        return f"{band.name} ({band.variable})"
    parts = []
    if band.wavelength_nm is not None:
        parts.append(f"{band.wavelength_nm:g} nm")
    if band.bandwidth_nm is not None:
        parts.append(f"{band.bandwidth_nm:g} nm wide")
    if band.polarisation is not None:
        parts.append(f"{band.polarisation} {band.component}")
    return f"{band.name} ({', '.join(parts)})" if parts else band.name


def sensors_with(names: Sequence[str]) -> tuple[Sensor, ...]:
    """The sensors that have a band for every one of ``names`` (names or aliases), in registry order.

    A file's band descriptions narrow down what it holds: ``B1`` … ``B12`` with ``B8A`` and
    ``B10`` are only all found in Sentinel-2 L1C.
    """
    return tuple(s for s in _ALL_SENSORS if all(s.has_band(n) for n in names))


def resolve_band(name: str, sensors: Sequence[str] | None = None) -> ResolvedBand:
    """Resolve a band name across the registry, without being told its sensor.

    Args:
        name: A band name or alias (case-insensitive), bare (``"VV"``, ``"B8A"``) or qualified as
            ``"<sensor>:<band>"`` (``"sentinel-2-l2a:B04"``).
        sensors: Where to look (registry names or aliases); ``None`` looks in every sensor.

    Returns:
        The band and every sensor searched that has a band of that name. A bare name resolves
        when all those sensors agree on the band's wavelength, bandwidth, polarisation,
        component and variable.

    Raises:
        AmbiguousBandError: Sensors use the name for different bands; the message names them
            and how to say which is meant.
        UnknownBandError: No sensor searched has a band of that name.
        UnknownSensorError: A qualified name or ``sensors`` names an unknown sensor.
    """
    text = str(name).strip()
    if ":" in text:
        sensor_name, _, band_name = text.partition(":")
        sensor = get_sensor(sensor_name)
        return ResolvedBand(sensor.band(band_name), (sensor.name,))
    pool = _ALL_SENSORS if sensors is None else tuple(get_sensor(s) for s in sensors)
    pool = tuple(dict.fromkeys(pool))
    found = [(s, s.band(text)) for s in pool if s.has_band(text)]
    if not found:
        if len(pool) == 1:
            raise UnknownBandError(
                f"unknown band {text!r} for {pool[0].name}; expected one of: "
                + ", ".join(pool[0].band_names)
            )
        raise UnknownBandError(
            f"unknown band {text!r}: no sensor has a band of that name; expected a band of "
            + ", ".join(s.name for s in pool)
        )
    groups: dict[tuple[float | str | None, ...], list[tuple[Sensor, Band]]] = {}
    for sensor, band in found:
        groups.setdefault(band.identity, []).append((sensor, band))
    if len(groups) > 1:
        meanings = " or ".join(
            f"{', '.join(s.name for s, _ in members)} {_describe(members[0][1])}"
            for members in groups.values()
        )
        raise AmbiguousBandError(
            f"band {text!r} is ambiguous: {meanings}; qualify it with its sensor, e.g. "
            f"'{found[0][0].name}:{text}'"
        )
    return ResolvedBand(found[0][1], tuple(s.name for s, _ in found))
