#!/usr/bin/env python3
"""Tiny fake Sen1Floods11 hand-labelled chips in the published bucket layout (or the flat one).

``make_fake_sen1floods11(root)`` writes ``v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,
LabelHand}/<chip>_*.tif``, the split CSVs ``v1.1/splits/flood_handlabeled/flood_*_data.csv`` (rows
``<chip>_S1Hand.tif,<chip>_LabelHand.tif``, no header) and ``v1.1/Sen1Floods11_Metadata.geojson``.
The files copy the real ones' facts: S1 float32 ``VV``/``VH`` in dB with nodata NaN, S2 13 int16
bands described ``B1`` … ``B12`` with nodata 0, labels int16 -1/0/1 without a nodata tag, all
EPSG:4326 on a 8.98e-5° grid. ``layout="flat"`` writes ``root/{S1,S2,Labels}/`` and the GeoJSON
in ``root`` instead. Run as a script: ``python tests/data/sen1floods11/data.py OUT [flat]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import affine
import numpy as np
import rasterio

SIZE = 16
PIXEL_DEG = 8.983152841195215e-05
S2_DESCRIPTIONS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: chip -> (split, lon, lat of the upper-left corner)
CHIPS: dict[str, tuple[str, float, float]] = {
    "Ghana_5079": ("train", -1.5, 9.4),
    "India_1068": ("train", 91.2, 26.1),
    "Sri-Lanka_2011": ("val", 79.9, 7.0),
    "USA_9921": ("test", -93.5, 36.2),
    "Mekong_3300": ("test", 105.2, 11.5),
    "Bolivia_103757": ("bolivia", -65.0, -14.0),
}
#: Event metadata features written to the GeoJSON (location, ISO code, s1 date, s2 date).
EVENTS: tuple[tuple[str, str, str, str], ...] = (
    ("Bolivia", "BOL", "2018/02/15", "2018/02/15"),
    ("Ghana", "GHA", "2018/09/18", "2018/09/19"),
    ("India", "IND", "2016/08/12", "2016/08/12"),
    ("Cambodia", "KHM", "2018/08/05", "2018/08/04"),
    ("Sri-Lanka", "LKA", "2017/05/30", "2017/05/28"),
)  # no USA: its chips get NaN time
SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test", "bolivia": "bolivia"}


def arrays(chip: str, size: int = SIZE) -> dict[str, np.ndarray]:
    """The pixels of ``chip``: ``s1`` [2,H,W] dB, ``s2`` [13,H,W] int16, ``label`` [H,W] int16."""
    seed = sum(map(ord, chip))
    rng = np.random.default_rng(seed)
    s1 = rng.normal(-15.0, 4.0, (2, size, size)).astype(np.float32)
    s1[1] -= 7.0
    s1[:, 0, 0] = np.nan
    s2 = np.stack([np.full((size, size), 100 * (k + 1), np.int16) for k in range(13)])
    s2 += rng.integers(0, 50, (13, size, size), dtype=np.int16)
    label = rng.integers(0, 2, (size, size), dtype=np.int16)
    label[0, :] = -1
    return {"s1": s1, "s2": s2, "label": label}


def _write(path: Path, data: np.ndarray, transform: affine.Affine, **extra: object) -> None:
    count = 1 if data.ndim == 2 else data.shape[0]
    profile = {
        "driver": "GTiff",
        "height": data.shape[-2],
        "width": data.shape[-1],
        "count": count,
        "dtype": data.dtype.name,
        "crs": "EPSG:4326",
        "transform": transform,
        "compress": "deflate",
    }
    descriptions = extra.pop("descriptions", None)
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
        if descriptions is not None:
            for i, name in enumerate(descriptions, start=1):  # type: ignore[arg-type]
                dst.set_band_description(i, name)


def make_fake_sen1floods11(
    root: str | Path, layout: Literal["published", "flat"] = "published", size: int = SIZE
) -> Path:
    """Write every chip of :data:`CHIPS` under ``root``; return the folder of the metadata."""
    root = Path(root)
    if layout == "published":
        base = root / "v1.1"
        data_dir = base / "data" / "flood_events" / "HandLabeled"
        folders = {"s1": "S1Hand", "s2": "S2Hand", "label": "LabelHand"}
        split_dir = base / "splits" / "flood_handlabeled"
    else:
        base = data_dir = split_dir = root
        folders = {"s1": "S1", "s2": "S2", "label": "Labels"}
    for folder in (*(data_dir / f for f in folders.values()), split_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    for chip, (split, lon, lat) in CHIPS.items():
        transform = affine.Affine(PIXEL_DEG, 0.0, lon, 0.0, -PIXEL_DEG, lat)
        pixels = arrays(chip, size)
        _write(
            data_dir / folders["s1"] / f"{chip}_S1Hand.tif",
            pixels["s1"],
            transform,
            nodata=float("nan"),
            descriptions=("VV", "VH"),
        )
        _write(
            data_dir / folders["s2"] / f"{chip}_S2Hand.tif",
            pixels["s2"],
            transform,
            nodata=0,
            descriptions=S2_DESCRIPTIONS,
        )
        _write(data_dir / folders["label"] / f"{chip}_LabelHand.tif", pixels["label"], transform)
        rows[split].append(f"{chip}_S1Hand.tif,{chip}_LabelHand.tif")
    if layout == "published":
        for split, lines in rows.items():
            path = split_dir / f"flood_{SPLIT_NAMES[split]}_data.csv"
            path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    features = [
        {
            "type": "Feature",
            "properties": {
                "location": location,
                "ISO_CC": iso,
                "s1_date": s1,
                "s2_date": s2,
                "orbit": "ASCENDING",
                "VH_thresh": -21.0,
            },
            "geometry": None,
        }
        for location, iso, s1, s2 in EVENTS
    ]
    metadata = {"type": "FeatureCollection", "name": "Sen1Floods11_Metadata", "features": features}
    (base / "Sen1Floods11_Metadata.geojson").write_text(json.dumps(metadata), encoding="utf-8")
    return base


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    kind: Literal["published", "flat"] = "flat" if sys.argv[2:] == ["flat"] else "published"
    make_fake_sen1floods11(out, layout=kind)
    print(f"wrote {len(CHIPS)} fake Sen1Floods11 chips under {out} ({kind} layout)")
