"""The demo's text-search stage: a tiny VL model, the world embedded, a query scored on truth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from vl_helpers import requires_minilm

from thinkingearth.demo import STAGES, DemoContext


@pytest.mark.slow
def test_demo_searches_the_world_in_words_and_scores_it(tmp_path: Path) -> None:
    requires_minilm()
    names = [name for name, _ in STAGES]
    assert names.index("text search") < names.index("flood map")
    ctx = DemoContext(out=tmp_path, seed=0, quick=True)
    text = dict(STAGES)["text search"](ctx)
    dict(STAGES)["flood map"](ctx)  # writes world/native beside world/search: no clash
    assert (tmp_path / "vl" / "vl_model.safetensors").is_file()
    assert (tmp_path / "index" / "index.json").is_file()
    page = (tmp_path / "search.html").read_text(encoding="utf-8")
    assert "<svg" in page and "data:image/png;base64," in page  # the map, thumbnails inlined
    # 6 scenes x 3 Sentinel-1 images ranked; each shown hit says whether the world flooded it
    hits = re.findall(r"^\| (\d+) \| `(scene_\d{5}/s1_\w+\.tif)@[^`]*` \| [-\d.]+ \| (yes|no) \|$",
                      text, re.M)  # fmt: skip
    assert [int(rank) for rank, _, _ in hits] == list(range(1, 9))
    # only a post-event image can be flooded: the truth column is the world's, not the model's
    assert all(answer == "no" or name.endswith("s1_ms1.tif") for _, name, answer in hits)
    assert re.search(r"(are flooded post-event images|nothing to score)", text)
