"""GeoTIFF writing shared by every writer in the toolkit (rasterio)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import affine
import numpy as np
import rasterio
from rasterio.crs import CRS

__all__ = ["write_geotiff"]


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    *,
    transform: affine.Affine,
    crs: str | CRS,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    compress: str | None = "deflate",
    tiled: bool = False,
) -> None:
    """Write a ``[H, W]`` or ``[C, H, W]`` array as a GeoTIFF, band descriptions included.

    Args:
        path: output file (written as is; callers make it atomic where it matters).
        array: the pixels, in the dtype to store.
        transform: affine transform of the grid.
        crs: CRS as ``EPSG:…`` or WKT.
        nodata: the no-data value to record, if any.
        descriptions: one name per band (e.g. registry band names), recorded in the file.
        compress: GDAL compression (``None`` for uncompressed, as some archives ship).
        tiled: write 256×256 internal tiles instead of strips.
    """
    data = array[None] if array.ndim == 2 else array
    count, height, width = data.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if compress:
        profile["compress"] = compress
    if tiled and height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions is not None:
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
