#!/usr/bin/env python3
"""Tiny fake BigEarthNet.txt in the real layout: a reBEN tree plus ``BigEarthNet.txt.parquet``.

``make_fake_bigearthnet_txt(root)`` writes three BigEarthNet v2 patches
(``BigEarthNet-S2/<tile>/<patch>/`` and ``BigEarthNet-S1/<product>/<s1 name>/``), reBEN's
``metadata.parquet`` and a ``BigEarthNet.txt.parquet`` with the published columns and one
annotation of each type per split. Run as a script to write a copy into a folder:
``python tests/data/bigearthnet_txt/data.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import affine
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thinkingearth.data.formats.bigearthnet import S1_BANDS, S2_BANDS, write_bigearthnet_v1_patch

_RES = {"B01": 60, "B09": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}

#: reBEN patches: (patch_id, s1_name, reBEN split, 19-class labels).
PATCHES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39",
        "train",
        ("Arable land", "Pastures"),
    ),
    (
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58",
        "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_40",
        "validation",
        ("Marine waters",),
    ),
    (
        "S2B_MSIL2A_20180525T094029_N9999_R036_T35VLC_01_02",
        "S1B_IW_GRDH_1SDV_20180525T161512_35VLC_01_02",
        "test",
        ("Urban fabric",),
    ),
)

#: Column types of the published BigEarthNet.txt.parquet.
TEXT_SCHEMA = pa.schema(
    [
        ("ID", pa.int64()),
        ("s1_name", pa.string()),
        ("patch_id", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("type", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        ("country", pa.string()),
        ("season", pa.string()),
        ("climate_zone", pa.string()),
    ]
)

_REBEN_SCHEMA = pa.schema(
    [
        ("patch_id", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("split", pa.string()),
        ("country", pa.string()),
        ("s1_name", pa.string()),
        ("s2v1_name", pa.string()),
        ("contains_seasonal_snow", pa.bool_()),
        ("contains_cloud_or_shadow", pa.bool_()),
    ]
)


def text_rows() -> list[dict[str, Any]]:
    """The annotations: per patch one caption, one binary, one mcq and one referring expression.

    The BigEarthNet.txt split of a patch is not always reBEN's (patch 1 is ``bench`` here).
    """
    rows: list[dict[str, Any]] = []
    splits = ("train", "bench", "test")
    for i, (patch_id, s1_name, _, labels) in enumerate(PATCHES):
        common = {
            "s1_name": s1_name,
            "patch_id": patch_id,
            "split": splits[i],
            "latitude": 47.9 + i,
            "longitude": 13.1 + i,
            "country": "Austria" if i < 2 else "Lithuania",
            "season": "Summer" if i < 2 else "Spring",
            "climate_zone": "Dfb",
        }
        first = labels[0].lower()
        rows += [
            {
                **common,
                "ID": 100 * i + 1,
                "input": "Describe the image.",
                "output": f"The image shows {first} in the north.",
                "type": "captioning",
                "category": "captioning",
            },
            {
                **common,
                "ID": 100 * i + 2,
                "input": f"Is there {first} in the image?",
                "output": "Yes",
                "type": "binary",
                "category": "presence",
            },
            {
                **common,
                "ID": 100 * i + 3,
                "input": "In which season was the image acquired? A) Summer B) Winter",
                "output": "A) Summer" if i < 2 else "B) Winter",
                "type": "mcq",
                "category": "season",
            },
            {
                **common,
                "ID": 100 * i + 4,
                "input": f"Locate the <ref>{first}</ref> closest to <point>(0.5, 0.5)</point>.",
                "output": "[0.1, 0.2, 0.6, 0.75]" if i != 2 else "no box",
                "type": "bounding box",
                "category": "referring expression",
            },
        ]
    return rows


def write_text_parquet(
    path: str | Path, rows: list[dict[str, Any]], drop: str | None = None
) -> None:
    """Write annotation rows with the published column types (optionally without a column)."""
    schema = pa.schema([f for f in TEXT_SCHEMA if f.name != drop])
    kept = [{k: v for k, v in row.items() if k != drop} for row in rows]
    pq.write_table(pa.Table.from_pylist(kept, schema=schema), path)


def make_fake_bigearthnet_txt(root: str | Path, size: int = 12) -> list[dict[str, Any]]:
    """Write the reBEN tree, ``metadata.parquet`` and ``BigEarthNet.txt.parquet`` into ``root``.

    Args:
        root: the folder to fill.
        size: side of the 10 m grid in pixels (a multiple of 6).

    Returns:
        The annotation rows written.
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    meta = []
    for i, (patch_id, s1_name, split, labels) in enumerate(PATCHES):
        transform = affine.Affine(10, 0, 400000 + 120 * i, 0, -10, 5300000)
        bands = {
            b: rng.integers(0, 10000, (size * 10 // _RES.get(b, 10),) * 2, dtype=np.uint16)
            for b in S2_BANDS
        }
        bands["B02"][:] = 1000 + i  # patch i is recognisable by its B02 value
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0],
            patch_id,
            bands=bands,
            labels=[],
            transform=transform,
            crs="EPSG:32633",
            acquisition_date="2017-06-13 10:10:31",
        )
        write_bigearthnet_v1_patch(
            root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0],
            s1_name,
            bands={b: np.full((size, size), -10.0 - i, np.float32) for b in S1_BANDS},
            labels=[],
            transform=transform,
            crs="EPSG:32633",
            acquisition_date="2017-06-13 16:50:43",
        )
        meta.append(
            {
                "patch_id": patch_id,
                "labels": list(labels),
                "split": split,
                "country": "Austria",
                "s1_name": s1_name,
                "s2v1_name": "",
                "contains_seasonal_snow": i == 2,  # BigEarthNet.txt keeps its own selection
                "contains_cloud_or_shadow": False,
            }
        )
    pq.write_table(pa.Table.from_pylist(meta, schema=_REBEN_SCHEMA), root / "metadata.parquet")
    rows = text_rows()
    write_text_parquet(root / "BigEarthNet.txt.parquet", rows)
    return rows


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "bigearthnet-txt-fake"
    written = make_fake_bigearthnet_txt(out)
    print(f"wrote {len(written)} fake BigEarthNet.txt annotations and their patches to {out}")
