"""Writers of scene predictions: a streaming GeoTIFF, its Cloud-Optimised copy and a quicklook.

The prediction file has two float32 bands: 1 = class id, 2 = predictive entropy (nats); 255 is
the nodata value of both (class ids are 0-254 and entropy is at most ln 255 ≈ 5.5, so it never
collides). GeoTIFF has one data type per file, hence float32 class ids. Entropy is stored with 10
mantissa bits (relative precision 0.1 %, :func:`quantize`): the noise in the low bits is what
makes float rasters slow to compress, and dropping it halves the file and the time to write it.

The predictor streams finished rows into an uncompressed tiled GeoTIFF (:class:`RowWriter`), then
:func:`write_cog` copies it to a deflate-compressed COG with overviews; both run under a bounded
GDAL block cache (the caller's :func:`gdal_env`), so memory does not grow with the scene.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from thinkingearth.data.scene import Grid
from thinkingearth.viz import class_colours, legend_handles

__all__ = [
    "NODATA",
    "RowWriter",
    "gdal_env",
    "quantize",
    "write_cog",
    "write_quicklook",
]

#: No-data value of both output bands.
NODATA = 255.0
BAND_DESCRIPTIONS = ("class", "entropy")


def gdal_env(cache_mb: int = 64, threads: int | str = "ALL_CPUS") -> rasterio.Env:
    """A rasterio environment with GDAL's block cache bounded to ``cache_mb`` megabytes.

    GDAL's default cache is 5 % of RAM; a streaming writer then grows with the scene until the
    cache is full, so the predictor bounds it.
    """
    # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes.
    return rasterio.Env(GDAL_CACHEMAX=int(cache_mb) * 2**20, GDAL_NUM_THREADS=str(threads))


def quantize(values: np.ndarray, mantissa_bits: int = 10) -> np.ndarray:
    """Round float32 values to ``mantissa_bits`` mantissa bits (in place; 255 stays 255)."""
    if values.dtype != np.float32:
        raise TypeError(f"quantize works on float32, got {values.dtype}")
    drop = 23 - mantissa_bits
    bits = values.view(np.uint32)
    bits += np.uint32(1 << (drop - 1))  # round to nearest
    bits &= np.uint32((0xFFFFFFFF >> drop) << drop)
    return values


class RowWriter:
    """Write a prediction row block by row block into an uncompressed tiled GeoTIFF.

    Args:
        path: the file to create.
        grid: the output grid (the input's CRS, transform and size).
        tags: metadata written into the file.
    """

    def __init__(self, path: Path, grid: Grid, tags: Mapping[str, str] | None = None) -> None:
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": 2,
            "dtype": "float32",
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": NODATA,
            "BIGTIFF": "IF_SAFER",
        }
        if grid.width >= 256 and grid.height >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        self.path = path
        self._ds = rasterio.open(path, "w", **profile)
        for i, name in enumerate(BAND_DESCRIPTIONS, start=1):
            self._ds.set_band_description(i, name)
        if tags:
            self._ds.update_tags(**tags)

    def write(self, row: int, classes: np.ndarray, entropy: np.ndarray) -> None:
        """Write rows ``row … row + h`` (``[h, W]`` each, float32, 255 = nodata)."""
        h, w = classes.shape
        self._ds.write(np.stack([classes, quantize(entropy)]), window=Window(0, row, w, h))

    def close(self) -> None:
        """Close the file."""
        self._ds.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_cog(source: Path, target: Path) -> None:
    """Copy a GeoTIFF to a deflate-compressed Cloud-Optimised GeoTIFF with nearest overviews.

    Tiles of 512 px, a floating-point predictor, deflate level 1 (as small as level 6 on these
    rasters and four times faster), overviews down to one tile, all CPUs for the compression; the
    caller bounds GDAL's cache (:func:`gdal_env`).
    """
    rasterio.shutil.copy(
        str(source),
        str(target),
        driver="COG",
        COMPRESS="DEFLATE",
        LEVEL="1",
        PREDICTOR="YES",
        BLOCKSIZE="512",
        OVERVIEW_RESAMPLING="NEAREST",
        NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER",
    )


def write_quicklook(
    prediction: Path,
    target: Path,
    *,
    classes: Sequence[str],
    colours: Sequence[str],
    title: str = "",
    max_side: int = 1024,
) -> None:
    """A PNG of the class map with a legend, beside its uncertainty, from a prediction file.

    Reads the prediction at reduced resolution (its overviews), never whole.
    """
    with rasterio.open(prediction) as ds:
        factor = max(1, math.ceil(max(ds.height, ds.width) / max_side))
        shape = (2, math.ceil(ds.height / factor), math.ceil(ds.width / factor))
        data = ds.read(out_shape=shape, resampling=Resampling.nearest)
    cls, ent = data[0], data[1]
    nodata = cls == NODATA
    cls_masked = np.ma.masked_where(nodata, cls)
    ent_masked = np.ma.masked_where(nodata, ent)
    aspect = shape[2] / shape[1]
    fig, axes = plt.subplots(1, 2, figsize=(2 * 4.5 * min(2.0, max(0.5, aspect)) + 1.0, 5.2))
    cmap = class_colours(colours).with_extremes(bad="#000000")
    axes[0].imshow(
        cls_masked, cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, interpolation="nearest"
    )
    axes[0].set_title("classes (black: no data)", fontsize=10)
    ent_cmap = plt.get_cmap("magma").with_extremes(bad="#000000")
    image = axes[1].imshow(
        ent_masked,
        cmap=ent_cmap,
        vmin=0.0,
        vmax=math.log(max(2, len(classes))),
        interpolation="nearest",
    )
    axes[1].set_title("uncertainty: predictive entropy (nats)", fontsize=10)
    fig.colorbar(image, ax=axes[1], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(
        handles=legend_handles(list(classes), list(colours)),
        loc="lower center",
        ncol=min(len(classes), 5),
        fontsize=9,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(target, dpi=90, format="png")
    plt.close(fig)
