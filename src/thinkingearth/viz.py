"""Rendering of Samples and scenes to RGB for figures and quicklooks (matplotlib, no display).

Colours of land cover follow ESA WorldCover's legend; flood classes follow Kuro Siwo's figures
(permanent water dark blue, flood bright cyan, invalid grey).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

__all__ = [
    "FLOOD_COLOURS",
    "LANDCOVER_COLOURS",
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
