#!/usr/bin/env python3
"""Tiny fake EuroSAT-MS data in the real (torchgeo) layout.

``make_fake_eurosat(root)`` writes ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/
<Class>/<Class>_<n>.tif`` (13 uint16 bands in the stored order, B8A last, UTM georeferencing)
and the split files ``eurosat-{train,val,test}.txt`` with ``.jpg`` names, as distributed. Band
``k`` (1-based, stored order) of patch ``n`` holds ``100 * k + n`` plus a small ramp, so tests can
check the band order. Run as a script to write a copy: ``python tests/data/eurosat/data.py OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import affine
import numpy as np
import rasterio

from thinkingearth.data.formats.eurosat import BASE_DIR, CLASSES, FILE_BANDS

SIZE = 64
#: (class, number) of the patches written, and the split each one goes to.
PATCHES: tuple[tuple[str, int, str], ...] = (
    ("AnnualCrop", 1, "train"),
    ("AnnualCrop", 2, "val"),
    ("Forest", 1, "train"),
    ("Highway", 7, "test"),
    ("SeaLake", 3, "train"),
    ("River", 12, "test"),
)
# Real EuroSAT AnnualCrop_1.tif grid (torchgeo test data): UTM 35N, slightly non-square pixels.
CRS = "EPSG:32635"
TRANSFORM = affine.Affine(10.00570688714736, 0.0, 624602.2348443292, 0.0, -9.9940881, 4877286.0)


def band_values(number: int, size: int = SIZE) -> np.ndarray:
    """The ``[13, size, size]`` uint16 pixels of patch ``number`` in stored band order."""
    ramp = np.arange(size * size, dtype=np.uint16).reshape(size, size) % 7
    return np.stack([100 * k + number + ramp for k in range(1, len(FILE_BANDS) + 1)]).astype(
        np.uint16
    )


def make_fake_eurosat(root: str | Path, size: int = SIZE) -> dict[str, list[str]]:
    """Write the fake patches and split files into ``root``; return split -> patch stems."""
    root = Path(root)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, (name, number, split) in enumerate(PATCHES):
        assert name in CLASSES
        folder = root / BASE_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c, d, e, f = tuple(TRANSFORM)[:6]
        transform = affine.Affine(a, b, c + i * size * a, d, e, f)
        profile = {
            "driver": "GTiff",
            "height": size,
            "width": size,
            "count": len(FILE_BANDS),
            "dtype": "uint16",
            "crs": CRS,
            "transform": transform,
            "compress": "lzw",
        }
        with rasterio.open(folder / f"{name}_{number}.tif", "w", **profile) as dst:
            dst.write(band_values(number, size))
        splits[split].append(f"{name}_{number}")
    for split, stems in splits.items():
        text = "".join(f"{stem}.jpg\n" for stem in stems)
        (root / f"eurosat-{split}.txt").write_text(text, encoding="utf-8")
    return splits


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    make_fake_eurosat(out)
    print(f"wrote {len(PATCHES)} fake EuroSAT patches under {out}")
