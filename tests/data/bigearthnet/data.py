#!/usr/bin/env python3
"""Tiny fake BigEarthNet v1 data in the real layout (torchgeo style).

``make_fake_bigearthnet_v1(root)`` writes patch folders through
:func:`thinkingearth.data.formats.bigearthnet.write_bigearthnet_v1_patch` plus the official split
files ``train.csv``, ``val.csv`` and ``test.csv`` (one patch name per line). Run as a script to
write a copy into a folder: ``python tests/data/bigearthnet/data.py OUT_DIR [s2|s1]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import affine
import numpy as np

from thinkingearth.data.formats.bigearthnet import (
    CLASSES_43,
    S1_BANDS,
    S2_BANDS,
    write_bigearthnet_v1_patch,
)

#: Labels of the first patches; patch 2 has only classes the 19-class nomenclature drops.
FIXED_LABELS: tuple[tuple[str, ...], ...] = (
    ("Non-irrigated arable land", "Pastures"),
    ("Broad-leaved forest", "Coniferous forest", "Water courses"),
    ("Airports", "Bare rock"),
    ("Continuous urban fabric", "Discontinuous urban fabric", "Sea and ocean"),
)
SPLITS: tuple[str, ...] = ("train", "train", "val", "test")
CRS = "EPSG:32633"  # UTM 33N, as for BigEarthNet's Austrian tiles
_RES = {"B01": 60, "B09": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}


def patch_name(i: int, sensor: Literal["s2", "s1"] = "s2") -> str:
    """Archive-style patch name for fake patch ``i``."""
    day = 13 + i % 15
    if sensor == "s2":
        return f"S2A_MSIL2A_201706{day:02d}T101031_{i}_{40 + i}"
    return f"S1A_IW_GRDH_1SDV_201706{day:02d}T165043_33UUP_{i}_{40 + i}"


def make_fake_bigearthnet_v1(
    root: str | Path,
    n: int = 6,
    seed: int = 0,
    sensor: Literal["s2", "s1"] = "s2",
    size: int = 120,
) -> list[dict[str, Any]]:
    """Write ``n`` fake v1 patches (and split CSVs) into ``root``.

    Args:
        root: folder to hold the patch folders directly.
        n: number of patches.
        seed: random seed for pixel values and the labels after :data:`FIXED_LABELS`.
        sensor: ``"s2"`` (12 uint16 bands at native resolution) or ``"s1"`` (VV, VH in dB).
        size: side of the 10 m grid in pixels (a multiple of 6; the archive uses 120).

    Returns:
        One dict per patch: ``name``, ``labels``, ``split``, ``bands`` (the arrays written),
        ``transform``, ``crs`` and ``acquisition_date``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    patches: list[dict[str, Any]] = []
    for i in range(n):
        name = patch_name(i, sensor)
        if i < len(FIXED_LABELS):
            labels = list(FIXED_LABELS[i])
        else:
            picks = rng.choice(len(CLASSES_43), size=int(rng.integers(1, 4)), replace=False)
            labels = [CLASSES_43[k] for k in sorted(picks)]
        if sensor == "s2":
            bands = {
                band: rng.integers(
                    0, 10000, (size * 10 // _RES.get(band, 10),) * 2, dtype=np.uint16
                )
                for band in S2_BANDS
            }
        else:
            bands = {
                band: rng.uniform(-30.0, 5.0, (size, size)).astype(np.float32) for band in S1_BANDS
            }
        transform = affine.Affine(10.0, 0.0, 373200.0 + 1200.0 * i, 0.0, -10.0, 5353200.0)
        date = f"2017-06-{13 + i % 15:02d} 10:10:31"
        extra = (
            {"tile_source": f"S2A_MSIL1C_201706{13 + i % 15:02d}T101031_N0205_R022_T33UUP.SAFE"}
            if sensor == "s2"
            else {"corresponding_s2_patch": patch_name(i, "s2")}
        )
        write_bigearthnet_v1_patch(
            root,
            name,
            bands=bands,
            labels=labels,
            transform=transform,
            crs=CRS,
            acquisition_date=date,
            extra_metadata=extra,
        )
        split = SPLITS[i % len(SPLITS)]
        patches.append(
            {
                "name": name,
                "labels": labels,
                "split": split,
                "bands": bands,
                "transform": transform,
                "crs": CRS,
                "acquisition_date": date,
            }
        )
    for split in ("train", "val", "test"):
        lines = [p["name"] for p in patches if p["split"] == split]
        (root / f"{split}.csv").write_text("".join(f"{line}\n" for line in lines))
    return patches


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "bigearthnet-fake"
    which = sys.argv[2] if len(sys.argv) > 2 else "s2"
    made = make_fake_bigearthnet_v1(out, sensor=which)  # type: ignore[arg-type]
    print(f"wrote {len(made)} fake BigEarthNet v1 {which} patches to {out}")
