"""How each model family wants a registry band described to its hypernetwork.

The sensor registry (:mod:`thinkingearth.sensors`) stores *physical* facts: central wavelength
and bandwidth in nanometres, the radar wavelength c/f for SAR and no bandwidth for SAR. The
published models were trained with their own conventions, and an imported model only reproduces
its published features when it is fed the numbers it saw in training. This module is the small,
documented mapping from a registry band to those numbers.

Conventions (``EncoderConfig.band_convention``):

* ``"physical"`` (new ThinkingEarth models): registry wavelength and bandwidth in nm. SAR has no
  registry bandwidth; we use 1e9 nm, the value Copernicus-FM uses to mark radar, and tell
  polarisations and SLC components apart with the band-identity embedding instead.
* ``"copernicusfm"`` (Wang et al. 2025, "Towards a Unified Copernicus Foundation Model for Earth
  Vision"): Sentinel-1 as wavelength 5e7 nm and bandwidth 1e9 nm for every polarisation;
  Sentinel-2 with the rounded centres/widths of the Copernicus-Bench configs (e.g. B04 = 665/30
  nm, B08 = 842/115 nm); Sentinel-3 OLCI with the registry values (identical to the paper's);
  other optical bands with the registry values. Variables (S5P gases, DEM) by the name of their
  entry in the published Llama-3.2-1B embedding table (``var_embed_llama3.2_1B.pt``).
* ``"dofa"`` (Xiong et al. 2024, "Neural Plasticity-Inspired Multimodal Foundation Model for
  Earth Observation"): central wavelength only, in micrometres: Sentinel-1 VV and VH as 5.405
  (the DOFA demo's value), Sentinel-2 as the Copernicus-FM centres divided by 1000 (the DOFA demo
  uses 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19), anything else as registry
  wavelength / 1000. DOFA has no variable hypernetwork.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from thinkingearth.sensors import Band

__all__ = [
    "COPERNICUSFM_LANGUAGE_KEYS",
    "SAR_BANDWIDTH_NM",
    "BandConvention",
    "HypernetInput",
    "band_identity",
    "hypernet_input",
]

BandConvention = Literal["physical", "copernicusfm", "dofa"]

#: Bandwidth given to SAR channels (nm): Copernicus-FM's "radio" marker, 1 m.
SAR_BANDWIDTH_NM: float = 1e9

# Copernicus-Bench Sentinel-2 configs (e.g. cobench_eurosat_s2.yaml): centre, width in nm.
_CFM_S2: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "B01": (440.0, 20.0),
        "B02": (490.0, 65.0),
        "B03": (560.0, 35.0),
        "B04": (665.0, 30.0),
        "B05": (705.0, 15.0),
        "B06": (740.0, 15.0),
        "B07": (783.0, 20.0),
        "B08": (842.0, 115.0),
        "B8A": (860.0, 20.0),
        "B09": (940.0, 20.0),
        "B10": (1370.0, 30.0),
        "B11": (1610.0, 90.0),
        "B12": (2190.0, 180.0),
    }
)
#: Copernicus-FM's Sentinel-1 convention (cobench_*_s1.yaml): wavelength, bandwidth in nm.
_CFM_S1: tuple[float, float] = (5e7, 1e9)
#: DOFA's Sentinel-1 "wavelength" in micrometres (DOFA README demo).
_DOFA_S1_UM: float = 5.405

#: Registry variable (``Band.variable``) -> key of the published Copernicus-FM Llama table.
COPERNICUSFM_LANGUAGE_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "Sentinel-5P CO": "Sentinel 5P Carbon Monoxide",
        "Sentinel-5P NO2": "Sentinel 5P Nitrogen Dioxide",
        "Sentinel-5P O3": "Sentinel 5P Ozone",
        "Sentinel-5P SO2": "Sentinel 5P Sulfur Dioxide",
        "Copernicus DEM elevation": "Copernicus Digital Elevation Model",
    }
)

_S2_SENSORS = ("sentinel-2-l1c", "sentinel-2-l2a")


@dataclass(frozen=True)
class HypernetInput:
    """What a spectral hypernetwork sees of one band.

    Attributes:
        wavelength: Central wavelength in the model's unit (nm, or micrometres for DOFA).
        bandwidth: Bandwidth in nm (``None`` for models that ignore it).
        identity: Band-identity key (e.g. ``"VH/intensity"``) or ``None``.
    """

    wavelength: float
    bandwidth: float | None
    identity: str | None


def band_identity(band: Band) -> str | None:
    """Return the identity key of a band: ``"<polarisation>/<component>"`` for SAR, else None.

    Optical bands are told apart by wavelength and bandwidth alone; SAR channels share both, so
    the polarisation and component (intensity, amplitude, phase) name them.
    """
    if band.polarisation is None:
        return None
    return f"{band.polarisation}/{band.component or 'intensity'}"


def hypernet_input(band: Band, sensor: str, convention: BandConvention) -> HypernetInput:
    """Describe a registry band in a model's convention.

    Args:
        band: A spectral or SAR band from the registry.
        sensor: Canonical name of its sensor.
        convention: The model's band convention (see the module docstring).

    Returns:
        The wavelength, bandwidth and identity key the model's hypernetwork takes.

    Raises:
        ValueError: If the band has no wavelength (a non-spectral variable).
    """
    if band.wavelength_nm is None:
        raise ValueError(f"band {band.name} has no wavelength; it is a variable")
    identity = band_identity(band)
    if convention == "copernicusfm":
        if band.is_sar:
            return HypernetInput(_CFM_S1[0], _CFM_S1[1], identity)
        if sensor in _S2_SENSORS and band.name in _CFM_S2:
            centre, width = _CFM_S2[band.name]
            return HypernetInput(centre, width, identity)
        return HypernetInput(band.wavelength_nm, band.bandwidth_nm, identity)
    if convention == "dofa":
        if band.is_sar:
            return HypernetInput(_DOFA_S1_UM, None, identity)
        if sensor in _S2_SENSORS and band.name in _CFM_S2:
            return HypernetInput(_CFM_S2[band.name][0] / 1000.0, None, identity)
        return HypernetInput(band.wavelength_nm / 1000.0, None, identity)
    bandwidth = SAR_BANDWIDTH_NM if band.is_sar else band.bandwidth_nm
    return HypernetInput(band.wavelength_nm, bandwidth, identity)
