"""The search results as one self-contained HTML page: the hits on a map, with their thumbnails.

The page works with no network at all: its style and script are inline, thumbnails are embedded
as ``data:`` PNGs, and the map is an inline SVG drawn here (an equirectangular view of the hits'
extent, the axes scaled by the cosine of the middle latitude so footprints keep their shape, a
lon/lat graticule with labelled degrees, each footprint outlined and numbered by its rank, the
``--bbox`` filter dashed). No tile server, font or script is fetched.

Layout (fixed, so a screenshot can be checked at known places, :data:`MAP_BOX`): a header, the map
at ``MAP_BOX`` (x, y, width, height in CSS pixels from the page's top-left corner), then the hits
as cards (thumbnail shown at :data:`THUMB_PX` px, rank, score, id, sensor, time) in rows below
the map from ``y = MAP_BOX[1] + MAP_BOX[3] + 24``. Hovering a card highlights its footprint.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CARDS_TOP",
    "FOOTPRINT_FILL",
    "MAP_BACKGROUND",
    "MAP_BOX",
    "THUMB_PX",
    "MapView",
    "render_page",
]

#: Where the map is drawn: x, y, width, height (CSS px from the page's top-left).
MAP_BOX = (16, 88, 760, 440)
#: Top of the first row of hit cards.
CARDS_TOP = MAP_BOX[1] + MAP_BOX[3] + 24
#: Side of a thumbnail on the page (CSS px, nearest-neighbour scaled).
THUMB_PX = 128
MAP_BACKGROUND = "#dfe9f2"
GRATICULE = "#9fb3c5"
FOOTPRINT_FILL = "#f28e2b"
FOOTPRINT_STROKE = "#b3540a"
_NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 45, 90)


@dataclass(frozen=True)
class MapView:
    """The map's lon/lat extent and its projection onto the SVG (equirectangular, cos-scaled).

    Attributes:
        west, south, east, north: the extent shown (degrees).
        width, height: the SVG's size (px).
    """

    west: float
    south: float
    east: float
    north: float
    width: int = MAP_BOX[2]
    height: int = MAP_BOX[3]

    @classmethod
    def around(
        cls,
        rings: Sequence[Sequence[tuple[float, float]]],
        bbox: tuple[float, float, float, float] | None = None,
        width: int = MAP_BOX[2],
        height: int = MAP_BOX[3],
    ) -> MapView:
        """The view of every ring (and the filter box), padded, with the SVG's aspect ratio."""
        points = [p for ring in rings for p in ring]
        if bbox is not None:
            points += [(bbox[0], bbox[1]), (bbox[2], bbox[3])]
        if not points:
            return cls(-180.0, -90.0, 180.0, 90.0, width, height)
        lons = [p[0] for p in points]
        lats = [p[1] for p in points]
        west, east, south, north = min(lons), max(lons), min(lats), max(lats)
        mid_lat = (south + north) / 2
        cos = max(math.cos(math.radians(mid_lat)), 0.05)
        span_x = max((east - west) * cos, 0.005) * 1.25  # padding, and at least ~500 m
        span_y = max(north - south, 0.005) * 1.25
        # Widen one axis so that the extent has the SVG's aspect ratio.
        if span_x / span_y < width / height:
            span_x = span_y * width / height
        else:
            span_y = span_x * height / width
        cx, cy = (west + east) / 2, mid_lat
        half_lon, half_lat = span_x / cos / 2, span_y / 2
        south, north = max(cy - half_lat, -90.0), min(cy + half_lat, 90.0)
        return cls(cx - half_lon, south, cx + half_lon, north, width, height)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        """SVG pixel coordinates of a lon/lat point."""
        x = (lon - self.west) / (self.east - self.west) * self.width
        y = (self.north - lat) / (self.north - self.south) * self.height
        return x, y

    def step(self) -> float:
        """A round graticule spacing giving about four to eight lines across."""
        span = max(self.east - self.west, self.north - self.south)
        return next((s for s in _NICE_STEPS if span / s <= 8), 90.0)


def _degrees(value: float, positive: str, negative: str, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    hemisphere = positive if value >= 0 else negative
    return f"{abs(value):.{decimals}f}°{hemisphere}"


def _svg(view: MapView, hits: Sequence[Any], bbox: tuple[float, float, float, float] | None) -> str:
    parts = [
        f'<svg id="map" width="{view.width}" height="{view.height}" '
        f'viewBox="0 0 {view.width} {view.height}" role="img" aria-label="map of the hits">',
        f'<rect width="{view.width}" height="{view.height}" fill="{MAP_BACKGROUND}"/>',
    ]
    step = view.step()
    lon = math.ceil(view.west / step) * step
    while lon <= view.east:
        x, _ = view.xy(lon, view.north)
        parts.append(
            f'<line class="grat" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{view.height}"/>'
            f'<text class="glabel" x="{x + 3:.1f}" y="{view.height - 4}">'
            f"{_degrees(lon, 'E', 'W', step)}</text>"
        )
        lon += step
    lat = math.ceil(view.south / step) * step
    while lat <= view.north:
        _, y = view.xy(view.west, lat)
        parts.append(
            f'<line class="grat" x1="0" y1="{y:.1f}" x2="{view.width}" y2="{y:.1f}"/>'
            f'<text class="glabel" x="3" y="{y - 3:.1f}">{_degrees(lat, "N", "S", step)}</text>'
        )
        lat += step
    if bbox is not None:
        x0, y0 = view.xy(bbox[0], bbox[3])
        x1, y1 = view.xy(bbox[2], bbox[1])
        parts.append(
            f'<rect class="filter" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
            f'height="{y1 - y0:.1f}"/>'
        )
    # Worst hits first, so the best is drawn on top.
    for hit in reversed(list(hits)):
        if hit.footprint is None:
            continue
        ring = hit.footprint["coordinates"][0]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (view.xy(p[0], p[1]) for p in ring))
        cx = sum(view.xy(p[0], p[1])[0] for p in ring[:-1]) / max(1, len(ring) - 1)
        cy = sum(view.xy(p[0], p[1])[1] for p in ring[:-1]) / max(1, len(ring) - 1)
        title = html.escape(f"#{hit.rank} {hit.id} ({hit.score:.3f})")
        parts.append(
            f'<g class="hit" id="fp-{hit.rank}"><title>{title}</title>'
            f'<polygon points="{points}"/>'
            f'<text class="rank" x="{cx:.1f}" y="{cy + 4:.1f}">{hit.rank}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _thumbnail(path: Path | None) -> str:
    if path is None or not path.is_file():
        return '<div class="nothumb">no thumbnail</div>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{THUMB_PX}" height="{THUMB_PX}" alt="">'


_STYLE = f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 13px/1.35 sans-serif; color: #1d2733; background: #ffffff; }}
header {{ position: absolute; left: 16px; top: 0; height: {MAP_BOX[1]}px; width: 1100px;
  padding-top: 12px; overflow: hidden; }}
h1 {{ margin: 0 0 4px; font-size: 20px; }}
header p {{ margin: 0; color: #4a5a6a; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
#mapbox {{ position: absolute; left: {MAP_BOX[0]}px; top: {MAP_BOX[1]}px; width: {MAP_BOX[2]}px;
  height: {MAP_BOX[3]}px; outline: 1px solid #7d8fa0; }}
#map {{ display: block; }}
.grat {{ stroke: {GRATICULE}; stroke-width: 1; }}
.glabel {{ fill: #51677d; font-size: 11px; }}
.filter {{ fill: none; stroke: #3b5b7a; stroke-width: 1.5; stroke-dasharray: 6 4; }}
.hit polygon {{ fill: {FOOTPRINT_FILL}; stroke: {FOOTPRINT_STROKE}; stroke-width: 1.5; }}
.hit .rank {{ fill: #1d2733; font-size: 12px; font-weight: bold; text-anchor: middle; }}
.hit.on polygon {{ fill: #d62728; stroke: #7a0f10; stroke-width: 2.5; }}
#hits {{ position: absolute; left: {MAP_BOX[0]}px; top: {CARDS_TOP}px; width: 1100px;
  display: flex; flex-wrap: wrap; gap: 12px; padding-bottom: 24px; }}
.card {{ width: {THUMB_PX + 2}px; font-size: 11px; }}
.card img, .nothumb {{ display: block; width: {THUMB_PX}px; height: {THUMB_PX}px;
  image-rendering: pixelated; border: 1px solid #7d8fa0; }}
.nothumb {{ background: #eeeeee; color: #777777; text-align: center; line-height: {THUMB_PX}px; }}
.card .id {{ word-break: break-all; font-weight: bold; }}
.card.on img {{ outline: 3px solid #d62728; }}
.empty {{ color: #7a0f10; }}
"""

_SCRIPT = """
document.querySelectorAll('.card').forEach(function (card) {
  var fp = document.getElementById('fp-' + card.dataset.rank);
  function on(flag) { card.classList.toggle('on', flag); if (fp) { fp.classList.toggle('on', flag); } }
  card.addEventListener('mouseenter', function () { on(true); });
  card.addEventListener('mouseleave', function () { on(false); });
  if (fp) {
    fp.addEventListener('mouseenter', function () { on(true); });
    fp.addEventListener('mouseleave', function () { on(false); });
  }
});
"""


def render_page(
    query: str,
    hits: Sequence[Any],
    *,
    index: str,
    rows: int,
    model_sha256: str,
    filters: str = "",
    bbox: tuple[float, float, float, float] | None = None,
    seconds: float | None = None,
) -> str:
    """The HTML page of a search (module docs).

    Args:
        query: the text searched for.
        hits: :class:`~thinkingearth.vl.index.Hit` s, best first.
        index: the index folder (shown).
        rows: rows in the index (shown).
        model_sha256: the model's SHA-256 (shown, shortened).
        filters: the filters in words (shown).
        bbox: the ``--bbox`` filter (W, S, E, N), drawn dashed.
        seconds: how long the search took (shown).
    """
    rings = [h.footprint["coordinates"][0] for h in hits if h.footprint is not None]
    view = MapView.around(rings, bbox)
    cards = []
    for hit in hits:
        cards.append(
            f'<div class="card" data-rank="{hit.rank}">{_thumbnail(hit.thumbnail)}'
            f'<div class="id">#{hit.rank} {html.escape(hit.id)}</div>'
            f"<div>score {hit.score:.4f}</div><div>{html.escape(hit.sensor)}</div>"
            f"<div>{html.escape(hit.time or 'time unknown')}</div></div>"
        )
    if not cards:
        cards.append('<p class="empty">No hits: nothing in the index passes the filters.</p>')
    took = "" if seconds is None else f" in {seconds * 1000:.0f} ms"
    summary = (
        f"{len(hits)} hit(s){took} from {html.escape(index)} ({rows} rows, model "
        f"{html.escape(model_sha256[:12])}…)" + (f" · {html.escape(filters)}" if filters else "")
    )
    data = json.dumps(
        [{"rank": h.rank, "id": h.id, "score": round(h.score, 6)} for h in hits]
    ).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>thinkingearth search: {html.escape(query)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>“{html.escape(query)}”</h1><p>{summary}</p></header>"
        f'<div id="mapbox">{_svg(view, hits, bbox)}</div>'
        f'<section id="hits">{"".join(cards)}</section>'
        f'<script type="application/json" id="hits-data">{data}</script>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
