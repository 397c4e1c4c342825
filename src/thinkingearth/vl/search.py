"""``thinkingearth search``: a sentence against an embedding index, ranked hits and an HTML page.

The query is embedded with the vision-language model the index was built with: the one its
manifest records (``model_path``), or ``--weights``; either way the model's SHA-256 must be the
one recorded, else the search is refused (embeddings of two models are not comparable). Hits come
from the index's ANN (:meth:`~thinkingearth.vl.index.EmbeddingIndex.search`) with the filters
(``--bbox`` on footprints, ``--after``/``--before`` on acquisition times — rows of unknown time
never pass a time filter —, ``--sensor``), and go to a self-contained HTML page
(:func:`~thinkingearth.vl.page.render_page`), written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from thinkingearth.errors import UserInputError
from thinkingearth.vl.index import Filters, Hit, IndexError_, check_model, open_index, parse_bbox

__all__ = ["SearchResult", "run_search"]


@dataclass
class SearchResult:
    """What :func:`run_search` found: the hits (best first), the page, and the search's time."""

    hits: list[Hit]
    html: Path | None
    seconds: float


def _filters_text(filters: Filters, after: str | None, before: str | None) -> str:
    parts = []
    if filters.bbox is not None:
        parts.append("bbox " + ",".join(f"{v:g}" for v in filters.bbox))
    if after is not None:
        parts.append(f"after {after}")
    if before is not None:
        parts.append(f"before {before}")
    if filters.sensor is not None:
        parts.append(f"sensor {filters.sensor}")
    return ", ".join(parts)


def run_search(
    text: str,
    index: str | Path,
    *,
    k: int = 20,
    bbox: str | None = None,
    after: str | None = None,
    before: str | None = None,
    sensor: str | None = None,
    weights: str | Path | None = None,
    html: str | Path | None = "search-results.html",
    overwrite: bool = False,
) -> SearchResult:
    """Search ``index`` for ``text`` (module docs).

    Args:
        text: the query.
        index: the index folder.
        k: the number of hits.
        bbox: ``W,S,E,N`` in degrees.
        after, before: ``YYYY-MM-DD`` (UTC), inclusive; ``before`` a date takes the whole day.
        sensor: a registry sensor name or alias.
        weights: the model (default: the one the index records).
        html: the page to write (``None``: none).
        overwrite: replace an existing page.

    Raises:
        UserInputError: an empty query, ``k`` below 1, malformed filters, an existing page
            (without ``overwrite``), an unusable index, or a model other than the index's.
    """
    from thinkingearth.data.scene import parse_date
    from thinkingearth.fileio import atomic_file, check_new_file
    from thinkingearth.sensors import get_sensor

    if not text.strip():
        raise UserInputError(
            'the search text is empty; say what to look for, e.g. "flooded fields"'
        )
    if k < 1:
        raise UserInputError(f"--k must be at least 1, got {k}")
    filters = Filters(
        bbox=parse_bbox(bbox) if bbox is not None else None,
        after=parse_date(after, "--after") if after is not None else None,
        before=parse_date(before, "--before") + (1 - 1e-9 if len(before.strip()) <= 10 else 0)
        if before is not None
        else None,
        sensor=get_sensor(sensor).name if sensor is not None else None,
    )
    if filters.after is not None and filters.before is not None and filters.after > filters.before:
        raise UserInputError(f"--after {after} is later than --before {before}")
    page = None
    if html is not None:
        page = check_new_file(
            html, overwrite=overwrite, suffixes=(".html", ".htm"), what="HTML page", flag="--html"
        )
    opened = open_index(index)
    manifest = opened.manifest
    from thinkingearth.vl.model import load_vl_model

    if weights is None:
        recorded = Path(manifest.model_path)
        if not (recorded.exists() or recorded.with_suffix(".json").exists()):
            raise IndexError_(
                f"the model index {index} was built with ({recorded}) is not there any more; "
                "give it with --weights"
            )
        model = load_vl_model(recorded)
        check_model(manifest, model.sha256, f"the model at {recorded}", Path(index))
    else:
        model = load_vl_model(weights)
        check_model(manifest, model.sha256, f"--weights {weights}", Path(index))
    query = model.encode_text([text]).detach().cpu().numpy()[0]
    start = time.perf_counter()
    hits = opened.search(query, k, filters)
    seconds = time.perf_counter() - start
    if page is not None:
        from thinkingearth.vl.page import render_page

        document = render_page(
            text,
            hits,
            index=str(index),
            rows=len(opened),
            model_sha256=manifest.model_sha256,
            filters=_filters_text(filters, after, before),
            bbox=filters.bbox,
            seconds=seconds,
        )
        with atomic_file(page) as tmp:
            tmp.write_text(document, encoding="utf-8")
    return SearchResult(hits=hits, html=page, seconds=seconds)
