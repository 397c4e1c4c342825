#!/usr/bin/env python3
"""Write tiny fake Kuro Siwo data in the published layout (torchgeo style).

The tiles go through :func:`thinkingearth.data.formats.kurosiwo.write_kurosiwo_tile`, so anything
that reads them also exercises the writer. Run as a script to write into this folder::

    python tests/data/kurosiwo/data.py [ROOT] [--tiles N] [--size PX]
"""

from __future__ import annotations

import argparse
import math
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import affine
import numpy as np

from thinkingearth.data.formats.kurosiwo import SCENES, write_kurosiwo_tile

#: One event from each published split by default: train 130, val 514, test 321.
DEFAULT_EVENTS: tuple[int, ...] = (130, 514, 321)

_RADIUS = 6378137.0
_PIXEL = 10.0


def _web_mercator(lon: float, lat: float) -> tuple[float, float]:
    x = _RADIUS * math.radians(lon)
    y = _RADIUS * math.log(math.tan(math.pi / 4.0 + math.radians(lat) / 2.0))
    return x, y


def make_fake_kurosiwo(
    root: str | Path,
    n_tiles_per_event: int = 2,
    events: Sequence[int] = DEFAULT_EVENTS,
    size: int = 32,
    seed: int = 0,
    dem: bool = True,
) -> list[Path]:
    """Write ``n_tiles_per_event`` tiles of ``size`` x ``size`` px for each event under ``root``.

    Each event sits at its own place on Earth (area of interest 01); tiles are adjacent 10 m
    EPSG:3857 grids. SAR is positive float32 linear sigma0 with 0 where MNA is 0; MLU has all
    classes plus some 3s; dates are 12 days apart (SL2, SL1, MS1).

    Returns:
        The tile folders, in the order written.
    """
    rng = np.random.default_rng(seed)
    folders: list[Path] = []
    for e, actid in enumerate(events):
        lon, lat = -60.0 + 37.0 * e, -30.0 + 23.0 * (e % 4)
        x0, y0 = _web_mercator(lon, lat)
        flood = date(2020, 1, 1) + timedelta(days=41 * e)
        dates = {
            "SL2": (flood - timedelta(days=24)).isoformat(),
            "SL1": (flood - timedelta(days=12)).isoformat(),
            "MS1": flood.isoformat(),
        }
        for t in range(n_tiles_per_event):
            transform = affine.Affine(_PIXEL, 0.0, x0 + t * size * _PIXEL, 0.0, -_PIXEL, y0)
            mna = (rng.random((size, size)) > 0.1).astype(np.uint8)
            mlu = rng.integers(0, 3, (size, size), dtype=np.uint8)
            mlu[rng.random((size, size)) < 0.05] = 3
            sar = {}
            for scene in SCENES:
                sigma0 = rng.lognormal(mean=-2.5, sigma=0.6, size=(2, size, size)).astype(
                    np.float32
                )
                sigma0[:, mna == 0] = 0.0
                sar[scene] = sigma0
            elevation = rng.normal(100.0, 20.0, (size, size)).astype(np.float32) if dem else None
            tile = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | (actid * 1000 + t)).hex
            folders.append(
                write_kurosiwo_tile(
                    root,
                    actid=actid,
                    aoi=1,
                    tile=tile,
                    sar=sar,
                    mlu=mlu,
                    mna=mna,
                    transform=transform,
                    dates=dates,
                    dem=elevation,
                    info={"flood_date": f"{dates['MS1']} 06:00:00"},
                )
            )
    return folders


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--tiles", type=int, default=2, help="tiles per event")
    parser.add_argument("--size", type=int, default=32, help="tile side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = make_fake_kurosiwo(
        args.root, n_tiles_per_event=args.tiles, size=args.size, seed=args.seed
    )
    print(f"wrote {len(folders)} Kuro Siwo tiles under {Path(args.root) / 'data'}")


if __name__ == "__main__":
    main()
