"""The search page: self-contained (no network), and in headless Chromium the map and thumbnails
are where the layout puts them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import CHROMIUM, screenshot

from thinkingearth.vl.index import Hit
from thinkingearth.vl.page import (
    CARDS_TOP,
    FOOTPRINT_FILL,
    MAP_BACKGROUND,
    MAP_BOX,
    THUMB_PX,
    MapView,
    render_page,
)

COLOURS = [(220, 20, 60), (30, 160, 40), (40, 70, 230)]  # one flat thumbnail colour per hit


def _hits(tmp_path: Path) -> list[Hit]:
    hits = []
    for i, colour in enumerate(COLOURS):
        thumb = tmp_path / f"t{i}.png"
        Image.new("RGB", (32, 32), colour).save(thumb)
        lon, lat = 7.0 + 0.03 * i, 46.0 + 0.01 * i
        ring = [
            [lon, lat],
            [lon + 0.02, lat],
            [lon + 0.02, lat + 0.015],
            [lon, lat + 0.015],
            [lon, lat],
        ]
        hits.append(
            Hit(
                rank=i + 1,
                id=f"scene_{i}/s2.tif@0,0,32x32",
                score=0.5 - 0.1 * i,
                sensor="sentinel-2-l2a",
                time=f"2023-10-0{i + 1}T10:00:00Z",
                footprint={"type": "Polygon", "coordinates": [ring]},
                thumbnail=thumb,
                source="x",
                row=i,
            )
        )
    return hits


def _page(
    tmp_path: Path, hits: list[Hit], bbox: tuple[float, float, float, float] | None = None
) -> Path:
    page = tmp_path / "page.html"
    page.write_text(
        render_page(
            "flooded <fields>", hits, index="idx", rows=1000, model_sha256="f" * 64, bbox=bbox
        ),
        encoding="utf-8",
    )
    return page


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_page_is_self_contained(tmp_path: Path) -> None:
    text = _page(tmp_path, _hits(tmp_path)).read_text()
    # nothing to fetch: no external scripts, styles, images or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"<script[^>]+src=", text)
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) == 3 and all(i.startswith("data:image/png;base64,") for i in images)
    assert text.count("<polygon") == 3 and "<svg" in text
    assert "flooded &lt;fields&gt;" in text  # the query is escaped
    assert "°N" in text and "°E" in text  # the graticule is labelled


def test_map_view_keeps_shapes_and_fits_every_footprint() -> None:
    rings = [[(7.0, 46.0), (7.02, 46.0), (7.02, 46.015), (7.0, 46.015)]]
    view = MapView.around(rings)
    (x0, y0), (x1, y1) = view.xy(7.0, 46.015), view.xy(7.02, 46.0)
    assert 0 < x0 < x1 < view.width and 0 < y0 < y1 < view.height
    # metres east and north take the same pixels: 0.02° of longitude at 46°N vs 0.015° of latitude
    ratio = (x1 - x0) / (y1 - y0)
    assert ratio == pytest.approx(0.02 * np.cos(np.radians(46.0075)) / 0.015, rel=0.02)
    assert view.step() in (0.005, 0.01, 0.02)


@pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="headless Chromium (/usr/bin/chromium, Debian's chromium package) is not installed",
)
def test_page_in_headless_chromium_shows_the_map_and_thumbnails(tmp_path: Path) -> None:
    hits = _hits(tmp_path)
    page = _page(tmp_path, hits, bbox=(6.99, 45.99, 7.09, 46.04))
    png = screenshot(page, tmp_path / "shot.png")
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)

    def near(y: float, x: float, colour: tuple[int, int, int], tol: int = 12) -> bool:
        return bool(np.abs(pixels[round(y), round(x)] - np.array(colour)).max() <= tol)

    left, top, width, _height = MAP_BOX
    # the map: its background in a corner away from the labels and the footprints
    assert near(top + 30, left + width - 30, _hex(MAP_BACKGROUND))
    # each footprint at the place the projection puts it, filled
    view = MapView.around([h.footprint["coordinates"][0] for h in hits], (6.99, 45.99, 7.09, 46.04))
    for hit in hits:
        ring = np.array(hit.footprint["coordinates"][0][:-1])
        west, south = ring.min(axis=0)
        x, y = view.xy(west + 0.0025, south + 0.0025)  # inside, away from the rank label
        assert near(top + y, left + x, _hex(FOOTPRINT_FILL), tol=20), (
            hit.rank,
            pixels[round(top + y), round(left + x)],
        )
    # the thumbnails: flat colour blocks THUMB_PX wide, in rank order below the map
    previous_x = -1
    for colour in COLOURS:
        match = np.all(np.abs(pixels - np.array(colour)) <= 3, axis=-1)
        ys, xs = np.nonzero(match)
        assert len(ys) > 0.9 * THUMB_PX * THUMB_PX, colour
        assert ys.min() >= CARDS_TOP and ys.max() - ys.min() + 1 == pytest.approx(THUMB_PX, abs=2)
        assert xs.max() - xs.min() + 1 == pytest.approx(THUMB_PX, abs=2)
        assert xs.min() > previous_x
        previous_x = int(xs.min())
