"""Rendering of Samples and scenes to RGB for figures and quicklooks (matplotlib, no display).

Colours of land cover follow ESA WorldCover's legend; flood classes follow Kuro Siwo's figures
(permanent water dark blue, flood bright cyan, invalid grey).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

__all__ = [
    "FLOOD_COLOURS",
    "LANDCOVER_COLOURS",
    "backdrop_rgb",
    "class_colours",
    "legend_handles",
    "s1_false_colour",
    "s2_true_colour",
]

#: ESA WorldCover 2021 legend colours for the synthetic world's 9 classes.
LANDCOVER_COLOURS: tuple[str, ...] = (
    "#0064c8",  # water
    "#006400",  # tree cover
    "#ffbb22",  # shrubland
    "#ffff4c",  # grassland
    "#f096ff",  # cropland
    "#fa0000",  # built-up
    "#b4b4b4",  # bare
    "#f0f0f0",  # snow and ice
    "#0096a0",  # wetland
)
#: no water, permanent water, flood, invalid.
FLOOD_COLOURS: tuple[str, ...] = ("#f2efe6", "#1f3f8f", "#25d0f0", "#7f7f7f")


def class_colours(colours: Sequence[str]) -> ListedColormap:
    """A discrete colormap for class ids ``0 … len(colours)-1``."""
    return ListedColormap(list(colours))


def legend_handles(names: Sequence[str], colours: Sequence[str]) -> list[Patch]:
    """Legend patches for class names."""
    return [
        Patch(facecolor=c, edgecolor="#444444", label=n)
        for n, c in zip(names, colours, strict=True)
    ]


def _stretch(x: np.ndarray, lo: float, hi: float, gamma: float = 1.0) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0) ** gamma


def s2_true_colour(
    image: np.ndarray, bands: Sequence[str], *, max_dn: float = 3000.0
) -> np.ndarray:
    """RGB ``[H, W, 3]`` in [0, 1] from Sentinel-2 digital numbers (B04, B03, B02)."""
    index = [list(bands).index(b) for b in ("B04", "B03", "B02")]
    rgb = np.stack([image[i] for i in index], axis=-1).astype(np.float32)
    return _stretch(rgb, 0.0, max_dn, gamma=0.8)


def s1_false_colour(vv: np.ndarray, vh: np.ndarray) -> np.ndarray:
    """The usual SAR false colour ``[H, W, 3]``: R = VV, G = VH, B = VV/VH, from linear sigma0.

    No-data pixels (sigma0 ≤ 0) come out black.
    """
    valid = (vv > 0) & (vh > 0)
    vv_db = 10 * np.log10(np.where(valid, vv, 1.0))
    vh_db = 10 * np.log10(np.where(valid, vh, 1.0))
    return _s1_false_colour_db(vv_db, vh_db, valid)


def _s1_false_colour_db(vv_db: np.ndarray, vh_db: np.ndarray, valid: np.ndarray) -> np.ndarray:
    rgb = np.stack(
        [
            _stretch(vv_db, -25.0, 0.0),
            _stretch(vh_db, -32.0, -5.0),
            _stretch(vv_db - vh_db, 0.0, 15.0),
        ],
        axis=-1,
    )
    rgb[~valid] = 0.0
    return rgb


def _percentile_stretch(x: np.ndarray, valid: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """``x`` (``[H, W]`` or ``[H, W, C]``) stretched to [0, 1] between its 2nd and 98th
    percentiles over valid pixels, one range for all channels (colours keep their balance)."""
    values = x[valid]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros_like(x, dtype=np.float32)
    lo, hi = np.percentile(values, (2.0, 98.0))
    if hi <= lo:
        hi = lo + 1.0
    return _stretch(np.nan_to_num(x, nan=lo), float(lo), float(hi), gamma).astype(np.float32)


def backdrop_rgb(
    image: np.ndarray,
    bands: Sequence[str],
    valid: np.ndarray,
    *,
    sar_units: Literal["linear", "db"] | None = None,
) -> tuple[np.ndarray, str]:
    """An input image as an RGB backdrop ``[H, W, 3]`` in [0, 1], and what it shows.

    Sentinel-2-like bands (B04, B03, B02) give true colour and SAR with VV and VH the usual
    false colour (R = VV, G = VH, B = VV/VH on fixed dB ranges); any other input shows its
    first band in grey (SAR in dB). Optical bands are stretched between the 2nd and 98th
    percentiles of all three, so the scale (digital numbers or reflectance) does not matter and
    the colours keep their balance. Pixels without data are black.

    Args:
        image: ``[C, H, W]`` in ``bands`` order.
        bands: registry names of the channels.
        valid: bool ``[H, W]``, pixels with data.
        sar_units: the units of SAR channels (``linear`` sigma0 or ``db``); ``None`` for an
            optical image.
    """
    names = [b.upper() for b in bands]

    def channel(name: str) -> np.ndarray:
        x = image[names.index(name)].astype(np.float32)
        if sar_units == "linear":
            x = 10.0 * np.log10(np.where(valid & (x > 0), x, 1.0))
        return x

    if sar_units is not None and {"VV", "VH"} <= set(names):
        ok = valid & np.isfinite(channel("VV")) & np.isfinite(channel("VH"))
        rgb = _s1_false_colour_db(channel("VV"), channel("VH"), ok)
        return rgb, "SAR false colour (R VV, G VH, B VV/VH)"
    if sar_units is None and {"B04", "B03", "B02"} <= set(names):
        rgb = _percentile_stretch(
            np.stack([channel(b) for b in ("B04", "B03", "B02")], axis=-1), valid, 0.8
        )
        rgb[~valid] = 0.0
        return rgb, "true colour (B04, B03, B02)"
    first = names[0]
    grey = _percentile_stretch(channel(first), valid)
    grey[~valid] = 0.0
    unit = " dB" if sar_units is not None else ""
    return np.repeat(grey[..., None], 3, axis=-1), f"{bands[0]}{unit} (grey)"
