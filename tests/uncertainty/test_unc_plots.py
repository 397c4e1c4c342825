"""Reliability diagrams and discard-test curves: valid PNGs of sensible size, written atomically,
drawn from the numbers they are given."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from thinkingearth.uncertainty.calibration import discard_curve, reliability
from thinkingearth.uncertainty.plots import discard_png, reliability_png


def _image(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert 300 <= width <= 2000 and 300 <= height <= 2000
        return np.asarray(image.convert("RGB"))


def _only(folder: Path, name: str) -> None:
    """The figure and nothing else (no temporary sibling left behind)."""
    assert [p.name for p in folder.iterdir()] == [name]


def test_reliability_png_draws_the_bins_it_is_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 2000)
    correct = rng.uniform(size=2000) < confidence**2  # overconfident
    rel = reliability(confidence, correct, bins=10)
    assert np.isnan(rel.accuracy).any()  # empty bins below 0.3 are skipped, not drawn as 0
    path = reliability_png(rel, tmp_path / "reliability.png", "test split")
    assert path == tmp_path / "reliability.png"
    _only(tmp_path, "reliability.png")
    pixels = _image(path)
    assert pixels.std() > 10  # not a blank canvas

    # what is drawn: intercept savefig to read the figure's bars and title
    seen: dict[str, object] = {}
    original = plt.Figure.savefig

    def capture(fig: plt.Figure, *args: object, **kwargs: object) -> None:
        top = fig.axes[0]
        seen["title"] = top.get_title()
        seen["heights"] = [p.get_height() for p in top.patches][: int((rel.counts > 0).sum())]
        seen["texts"] = [t.get_text() for t in fig.axes[1].texts]
        original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", capture)
        reliability_png(rel, tmp_path / "again.png", "test split")
    assert "ECE" in str(seen["title"]) and f"{rel.ece:.4f}" in str(seen["title"])
    assert "10 equal-width bins" in str(seen["title"])
    filled = rel.counts > 0
    np.testing.assert_allclose(seen["heights"], rel.accuracy[filled])
    assert seen["texts"] == [str(int(c)) for c in rel.counts[filled]]


def test_discard_png_draws_each_curve_with_its_random_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    uncertainty = rng.uniform(size=500)
    good = discard_curve(uncertainty, rng.uniform(size=500) > uncertainty, metric="accuracy")
    useless = discard_curve(rng.uniform(size=500), rng.uniform(size=500) > 0.3, metric="accuracy")
    labels: list[str] = []
    styles: list[str] = []
    original = plt.Figure.savefig

    def capture(fig: plt.Figure, *args: object, **kwargs: object) -> None:
        lines = fig.axes[0].get_lines()
        labels.extend(str(line.get_label()) for line in lines)
        styles.extend(str(line.get_linestyle()) for line in lines)
        original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", capture)
        path = discard_png(
            {"heteroscedastic": good, "deterministic": useless}, tmp_path / "discard.png", "t"
        )
    _only(tmp_path, "discard.png")
    assert _image(path).std() > 10
    assert labels == [
        f"heteroscedastic: by uncertainty (AUC {good.auc:.4f})",
        f"heteroscedastic: at random (AUC {good.random_auc:.4f})",
        f"deterministic: by uncertainty (AUC {useless.auc:.4f})",
        f"deterministic: at random (AUC {useless.random_auc:.4f})",
    ]
    assert styles == ["-", "--", "-", "--"]


def test_discard_png_refuses_mixed_metrics_and_no_curves(tmp_path: Path) -> None:
    acc = discard_curve([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1], metric="accuracy")
    rmse = discard_curve([0.1, 0.2, 0.3, 0.4], [0.5, 1.0, 2.0, 0.1], metric="rmse")
    with pytest.raises(ValueError, match="different metrics"):
        discard_png({"a": acc, "b": rmse}, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="at least one curve"):
        discard_png({}, tmp_path / "x.png", "t")
    assert not list(tmp_path.iterdir())
    # an RMSE curve alone is fine, its axis says lower is better
    ylabels: list[str] = []
    original = plt.Figure.savefig

    def capture(fig: plt.Figure, *args: object, **kwargs: object) -> None:
        ylabels.append(fig.axes[0].get_ylabel())
        original(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", capture)
        discard_png({"regression": rmse}, tmp_path / "rmse.png", "rmse")
    assert ylabels == ["rmse of the rest ↓"]
    assert _image(tmp_path / "rmse.png").std() > 10
