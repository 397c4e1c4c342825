"""Helpers of the embedding-index tests: index rows, a saved tiny model, Chromium screenshots."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from thinkingearth.vl.index import IndexRows

CHROMIUM = Path("/usr/bin/chromium")
#: The launch flags of every screenshot: no network, no profile of the user's, no GPU.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def clustered_rows(
    n: int, dim: int = 24, seed: int = 0, sensors: tuple[str, ...] = ("sentinel-2-l2a",)
) -> IndexRows:
    """``n`` rows of clustered unit vectors, footprints on a 0.1° grid, one day apart."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 20), dim))
    rows = IndexRows()
    for i in range(n):
        v = centres[i % len(centres)] + 0.4 * rng.standard_normal(dim)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        lon, lat = 5.0 + (i % 50) * 0.1, 45.0 + (i // 50) * 0.1
        rows.ids.append(f"row{i}")
        rows.keys.append(f"test:row{i}")
        rows.sources.append("test")
        rows.sensors.append(sensors[i % len(sensors)])
        rows.times.append(19000.0 + i if i % 7 else float("nan"))
        rows.footprints.append(
            [(lon, lat), (lon + 0.05, lat), (lon + 0.05, lat + 0.05), (lon, lat + 0.05), (lon, lat)]
        )
        rows.thumbnails.append("")
        rows.embeddings.append(v)
    return rows


def saved_model(folder: Path, seed: int = 0, **options: Any) -> tuple[Path, Any]:
    """A tiny VL model (``vl_helpers.tiny_vl_model``) saved as a pretrain run's ``OUT`` folder."""
    from vl_helpers import tiny_vl_model

    from thinkingearth.vl.model import save_vl_model

    model = tiny_vl_model(seed=seed, **options)
    save_vl_model(model, folder / "vl_model")
    return folder, model


def screenshot(page: Path, out: Path, width: int = 1120, height: int = 1000) -> Path:
    """A PNG of ``page`` in headless Chromium with a fresh profile (the flags above)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        done = subprocess.run(
            [
                str(CHROMIUM),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.is_file(), done.stderr[-2000:]
    return out
