"""Figures of uncertainty evaluations: reliability diagrams and discard-test curves (PNG).

Rendered with matplotlib's Agg backend (no display) and written atomically
(:func:`thinkingearth.fileio.atomic_file`), as the other reports of the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from thinkingearth.fileio import atomic_file
from thinkingearth.uncertainty.calibration import DiscardCurve, Reliability

__all__ = ["discard_png", "reliability_png"]


def reliability_png(rel: Reliability, path: str | Path, title: str) -> Path:
    """Write a reliability diagram: accuracy per confidence bin against the diagonal.

    Each non-empty bin is a bar from 0 to its accuracy, with the gap to its mean confidence
    shaded (what the ECE averages); a panel below gives the predictions per bin (the weights of
    those gaps), with their counts written on it; the title names the ECE and its bin count.

    Args:
        rel: The reliability bins (:func:`thinkingearth.uncertainty.calibration.reliability`).
        path: The PNG to write.
        title: Figure title (the ECE and bin count are appended).

    Returns:
        ``path``.
    """
    path = Path(path)
    edges = np.asarray(rel.edges, dtype=float)
    accuracy = np.asarray(rel.accuracy, dtype=float)
    confidence = np.asarray(rel.confidence, dtype=float)
    counts = np.asarray(rel.counts, dtype=float)
    lefts, widths = edges[:-1], np.diff(edges)
    filled = counts > 0
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(5.2, 6.0), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="perfect calibration")
    ax.bar(
        lefts[filled],
        accuracy[filled],
        widths[filled],
        align="edge",
        color="#4c72b0",
        edgecolor="white",
        label="accuracy",
    )
    gap_low = np.minimum(accuracy, confidence)[filled]
    gap = np.abs(confidence - accuracy)[filled]
    ax.bar(
        lefts[filled],
        gap,
        widths[filled],
        bottom=gap_low,
        align="edge",
        color="#dd8452",
        alpha=0.45,
        edgecolor="#dd8452",
        label="gap to mean confidence",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    total = counts.sum()
    ax.set_title(
        f"{title}\nECE {rel.ece:.4f} over {rel.bins} equal-width bins, {int(total)} predictions",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    # the predictions per bin: what each bar's weight in the ECE is
    below.bar(lefts, counts, widths, align="edge", color="0.6", edgecolor="white")
    top = max(float(counts.max()), 1.0)
    for left, width, count in zip(lefts[filled], widths[filled], counts[filled], strict=True):
        below.text(
            left + width / 2,
            count + 0.03 * top,
            f"{int(count)}",
            ha="center",
            va="bottom",
            fontsize=6,
            rotation=90 if len(lefts) > 10 else 0,
        )
    below.set_ylim(0, 1.45 * top)
    below.set_ylabel("predictions")
    below.set_xlabel("confidence")
    below.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def discard_png(curves: Mapping[str, DiscardCurve], path: str | Path, title: str) -> Path:
    """Write discard-test curves: the metric after discarding the most uncertain fraction.

    Each labelled curve is drawn solid, its random-discard line dashed in the same colour; the
    legend gives each line's area under the curve (mean over the fractions).

    Args:
        curves: Curves by label (``{"heteroscedastic": curve, ...}``), one metric for all.
        path: The PNG to write.
        title: Figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: No curve, or curves of different metrics.
    """
    path = Path(path)
    if not curves:
        raise ValueError("discard_png needs at least one curve")
    metrics = {c.metric for c in curves.values()}
    if len(metrics) != 1:
        raise ValueError(f"discard curves of different metrics in one figure: {sorted(metrics)}")
    first = next(iter(curves.values()))
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, curve) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        percent = 100 * np.asarray(curve.fractions, dtype=float)
        ax.plot(
            percent,
            np.asarray(curve.values, dtype=float),
            "o-",
            color=colour,
            markersize=3,
            label=f"{label}: by uncertainty (AUC {curve.auc:.4f})",
        )
        ax.plot(
            percent,
            np.asarray(curve.random_values, dtype=float),
            "--",
            color=colour,
            alpha=0.7,
            label=f"{label}: at random (AUC {curve.random_auc:.4f})",
        )
    arrow = "↑" if first.higher_is_better else "↓"
    ax.set_xlabel("share of predictions discarded (%), most uncertain first")
    ax.set_ylabel(f"{first.metric} of the rest {arrow}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
