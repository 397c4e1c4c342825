"""The demo's text search: a tiny vision-language model, the demo world embedded, one query.

:func:`search_stage` is a stage of :mod:`thinkingearth.demo` (imported lazily from there, so the
demo module does not depend on ``vl``). It trains ``tiny-vl-synthetic`` briefly on Sentinel-1,
embeds post- and pre-event Sentinel-1 images of a few synthetic scenes, searches for floods in
words and scores the ranking against the world's own flood rasters, so the report says how well
the search worked, not only that it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FLOOD_QUERY", "search_stage"]

#: The demo's query; the synthetic world's captions describe floods in these words.
FLOOD_QUERY = "After the event, floodwater covers the low ground near the river."

#: A scene's post-event image counts as flooded from this share of flood pixels on.
_FLOODED_SHARE = 0.05


def _flood_truth(scenes: Path) -> dict[str, bool]:
    """Per Sentinel-1 file of each scene: flooded in the world's truth (post-event image only)."""
    import rasterio

    truth: dict[str, bool] = {}
    for folder in sorted(p for p in scenes.iterdir() if p.is_dir()):
        with rasterio.open(folder / "flood.tif") as src:
            share = float((src.read(1) == 2).mean())  # class 2: flood
        for name in ("s1_sl2", "s1_sl1", "s1_ms1"):
            truth[f"{folder.name}/{name}.tif"] = name == "s1_ms1" and share >= _FLOODED_SHARE
    return truth


def search_stage(ctx: Any) -> str:
    """Train, embed, search; write ``vl/``, ``world/search/``, ``index/`` and ``search.html``."""
    from thinkingearth.data.export import export_world
    from thinkingearth.pretrain.config import config_from_dict, load_config, merge
    from thinkingearth.pretrain.run import run_pretrain
    from thinkingearth.vl.embed import embed
    from thinkingearth.vl.search import run_search

    out = Path(ctx.out)
    quick = bool(getattr(ctx, "quick", False))
    steps = 10 if quick else 40
    overrides: dict[str, Any] = {
        "seed": int(getattr(ctx, "seed", 0)),
        "data": {"sensors": [{"sensor": "sentinel-1-grd", "n": 64 if quick else 192}]},
        "optim": {"lr": 3e-3, "warmup_steps": min(5, steps - 1)},
        "trainer": {"max_steps": steps, "checkpoint_every": steps, "progress_bar": False},
    }
    config = config_from_dict(merge(load_config("tiny-vl-synthetic").to_dict(), overrides))
    run_pretrain(config, out / "vl", log=None)
    n = 6 if quick else 24
    scenes = export_world(out / "world" / "search", "native", n=n, size=32, seed=5)
    embed(out / "vl", out / "index", scenes=scenes, sensors=["sentinel-1-grd"], workers=1)
    truth = _flood_truth(scenes)
    result = run_search(FLOOD_QUERY, out / "index", k=len(truth), html=out / "search.html")
    ranked = np.array([truth.get(hit.id.split("@")[0], False) for hit in result.hits])
    flooded = int(sum(truth.values()))
    shown = min(8, len(result.hits))
    rows = "\n".join(
        f"| {i + 1} | `{hit.id}` | {hit.score:.3f} | {'yes' if ranked[i] else 'no'} |"
        for i, hit in enumerate(result.hits[:shown])
    )
    if 0 < flooded < len(truth):
        precision = float(ranked[:flooded].mean())
        positives, negatives = np.flatnonzero(ranked), np.flatnonzero(~ranked)
        auc = float(np.mean([p < q for p in positives for q in negatives]))
        score = (
            f"Of the top {flooded} hits, {precision:.0%} are flooded post-event images, against "
            f"{flooded / len(truth):.0%} of the index (chance); a flooded image ranks above a "
            f"dry one {auc:.0%} of the time (chance 50 %)."
        )
    else:
        score = f"{flooded} of {len(truth)} images are flooded here: nothing to score."
    size = "shrunk for `--quick`" if quick else "shortened for the demo"
    return (
        f"`thinkingearth pretrain --config tiny-vl-synthetic` ({size}: {steps} steps on "
        "Sentinel-1 only) aligned the tiny encoder with the offline all-MiniLM-L6-v2 text encoder "
        f"on the world's captions; `thinkingearth embed` put the three Sentinel-1 images of {n} "
        "scenes of `world/search/` (two before the event, one after) into `index/`, and `thinkingearth search` asked "
        f'it: *"{FLOOD_QUERY}"*. The page `search.html` shows the hits on a map with their '
        "thumbnails (offline, open it in a browser).\n\n"
        "| rank | image | score | flooded (world truth) |\n|---|---|---|---|\n"
        f"{rows}\n\n{score} A tiny model trained for a minute: the full `tiny-vl-synthetic` and "
        "its measured retrieval are in `benchmarks/tiny_vl_synthetic.md`."
    )
