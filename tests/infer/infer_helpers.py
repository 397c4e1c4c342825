"""Tiny georeferenced scenes written by the infer tests themselves, and helpers to compare outputs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import affine
import numpy as np
import rasterio

UTM = "EPSG:32633"


def from_origin(west: float, north: float, xsize: float, ysize: float) -> affine.Affine:
    """A north-up transform from the top-left corner and pixel sizes."""
    return affine.Affine(xsize, 0.0, west, 0.0, -ysize, north)


ORIGIN = from_origin(500_000.0, 5_000_000.0, 10.0, 10.0)

#: VV, VH backscatter in dB of the planted scene's surfaces (C band, typical values).
LAND_DB = (-8.0, -14.0)
WATER_DB = (-21.0, -28.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = UTM,
    transform: affine.Affine = ORIGIN,
    nodata: float | None = 0.0,
    descriptions: Sequence[str] | None = ("VV", "VH"),
    tiled: bool = True,
) -> Path:
    """Write ``[C, H, W]`` (or ``[H, W]``) as a deflate GeoTIFF with band descriptions."""
    data = data[None] if data.ndim == 2 else data
    count, height, width = data.shape
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled and width >= 64 and height >= 64:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions is not None:
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
    return path


def speckled(db: np.ndarray, rng: np.random.Generator, enl: float = 4.4) -> np.ndarray:
    """Linear sigma0 with gamma speckle from dB values ``[C, H, W]``."""
    return ((10.0 ** (db / 10.0)) * rng.gamma(enl, 1.0 / enl, size=db.shape)).astype(np.float32)


@dataclass
class PlantedScene:
    """A two-date Sentinel-1 scene with a lake and a planted flood, and its truth."""

    pre: Path
    pre2: Path
    post: Path
    truth: np.ndarray  # 0 no water, 1 permanent water, 2 flood, 255 no data (post)
    shape: tuple[int, int]


def make_planted(folder: Path, shape: tuple[int, int] = (300, 340), seed: int = 0) -> PlantedScene:
    """Land everywhere, a round lake in both dates, a rectangle flooded after the event.

    The post-event image misses a corner (nodata 0), as a swath edge would.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    lake = (yy - 0.3 * h) ** 2 + (xx - 0.3 * w) ** 2 < (0.15 * min(h, w)) ** 2
    flood = (yy > 0.55 * h) & (yy < 0.85 * h) & (xx > 0.45 * w) & (xx < 0.9 * w)
    corner = xx + yy < 0.15 * (h + w)

    def image(water: np.ndarray) -> np.ndarray:
        db = np.empty((2, h, w), dtype=np.float64)
        for band in range(2):
            db[band] = np.where(water, WATER_DB[band], LAND_DB[band])
        return speckled(db, rng)

    pre = image(lake)
    pre2 = image(lake)
    post = image(lake | flood)
    post[:, corner] = 0.0
    truth = np.zeros(shape, dtype=np.uint8)
    truth[flood] = 2
    truth[lake] = 1
    truth[corner] = 255
    return PlantedScene(
        pre=write_raster(folder / "pre.tif", pre),
        pre2=write_raster(folder / "pre2.tif", pre2),
        post=write_raster(folder / "post.tif", post),
        truth=truth,
        shape=shape,
    )


def digest(path: Path) -> str:
    """SHA-256 of a file, to check inputs are left untouched."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every file under a folder, hidden ones included, relative and sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


#: The files ``predict --out flood.tif`` writes (the quicklook included).
OUTPUT_FILES = (
    "flood.png",
    "flood.qml",
    "flood.tif",
    "flood.tif.aux.xml",
    "flood_uncertainty.qml",
    "flood_uncertainty.tif",
)


def read_prediction(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The class ids (``uint8``, 255 = no data) of a prediction and its entropy (NaN = no data)."""
    uncertainty = out.with_name(f"{out.stem}_uncertainty{out.suffix}")
    with rasterio.open(out) as classes, rasterio.open(uncertainty) as entropy:
        return classes.read(1), entropy.read(1)
