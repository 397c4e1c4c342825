#!/usr/bin/env python3
"""Tiny fake GAIA in the published layout: ``<split>_data.json`` records plus img2dataset output.

``make_fake_gaia(root)`` writes

* ``train_data.json`` (a list of records, pandas ``records`` orientation) and its images as
  img2dataset WebDataset shards ``train/00000.tar``, ``train/00001.tar`` (members
  ``<key>.png``, ``<key>.txt``, ``<key>.json``; a failed download has only ``<key>.json`` with
  ``status: failed_to_download``), plus img2dataset's ``00000_stats.json``;
* ``test_data.json`` (column-oriented, ``{"id": {"0": ...}, ...}``) and its images as
  img2dataset ``files`` output ``test/00000/<key>.png`` beside ``<key>.json``.

Records cover Sentinel-2, Landsat 8, Sentinel-1, MODIS, a two-mission record and an image that
failed to download. Run as a script: ``python tests/data/gaia/data.py OUT_DIR``.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def record(i: int, satellite: Any, sensor: Any, resolution: Any = "10 m") -> dict[str, Any]:
    """One GAIA record with the published fields."""
    return {
        "id": f"gaia-{i}",
        "image_src": f"https://example.org/images/{i}.jpg",
        "image_alt": f"Scene {i} seen from orbit",
        "captions": [f"Caption {k} of scene {i}." for k in range(5)],
        "credits": "ESA",
        "location": "Athens, Greece",
        "lat": 37.9 + i,
        "lon": 23.7 + i,
        "tag": ["wildfire", "vegetation"],
        "resolution": resolution,
        "satellite": satellite,
        "sensor": sensor,
        "modalities": ["optical", "multispectral"],
    }


TRAIN: tuple[dict[str, Any], ...] = (
    record(0, ["Copernicus Sentinel-2"], ["MSI"], "10 m"),
    record(1, ["Landsat 8"], ["OLI"], ["30m", "15m"]),
    record(2, ["Sentinel-1A"], ["SAR-C"], "10 m"),  # radar: no true-colour reading
    record(3, ["Terra"], ["MODIS"], "250 m"),  # not in the registry
    record(4, ["Sentinel-2B"], [], "high resolution"),  # download failed
    record(5, ["Sentinel-2", "Landsat 9"], ["MSI", "OLI-2"], "10 m"),  # two missions
)
TEST: tuple[dict[str, Any], ...] = (
    record(10, "Sentinel-2", "MSI", 10),
    record(11, "Landsat 9", "OLI-2"),
)


def pixels(i: int, size: int = 8) -> np.ndarray:
    """The RGB image of record ``i``: red = i, green = 100 + i, blue = 200; uint8 ``[H, W, 3]``."""
    out = np.empty((size, size + 2, 3), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = i, 100 + i, 200
    return out


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _img2dataset_json(key: str, rec: dict[str, Any], ok: bool) -> bytes:
    meta = {
        "url": rec["image_src"],
        "caption": rec["image_alt"],
        "key": key,
        "status": "success" if ok else "failed_to_download",
        "error_message": None if ok else "HTTP 404",
        "width": 10 if ok else None,
        "height": 8 if ok else None,
        "id": rec["id"],
        "captions": rec["captions"],
    }
    return json.dumps(meta).encode()


def make_fake_gaia(root: str | Path) -> None:
    """Write the fake GAIA train and test splits into ``root``."""
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_data.json").write_text(json.dumps(list(TRAIN)))
    for shard, chunk in enumerate((TRAIN[:3], TRAIN[3:])):
        with tarfile.open(root / "train" / f"{shard:05d}.tar", "w") as tar:
            for rec in chunk:
                i = int(rec["id"].split("-")[1])
                key = f"{shard:05d}{i:04d}"
                ok = i != 4
                if ok:
                    _add(tar, f"{key}.png", _png(pixels(i)))
                    _add(tar, f"{key}.txt", rec["image_alt"].encode())
                _add(tar, f"{key}.json", _img2dataset_json(key, rec, ok))
        (root / "train" / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(chunk)}))
    columns = {field: {str(n): rec[field] for n, rec in enumerate(TEST)} for field in TEST[0]}
    (root / "test_data.json").write_text(json.dumps(columns))
    files = root / "test" / "00000"
    files.mkdir(parents=True, exist_ok=True)
    for n, rec in enumerate(TEST):
        key = f"00000{n:04d}"
        (files / f"{key}.png").write_bytes(_png(pixels(int(rec["id"].split("-")[1]))))
        (files / f"{key}.txt").write_text(rec["image_alt"])
        (files / f"{key}.json").write_bytes(_img2dataset_json(key, rec, True))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "gaia-fake"
    make_fake_gaia(out)
    print(f"wrote a fake GAIA (train shards, test files) to {out}")
