"""The pretraining stage of ``make demo``: a short run, its loss curve, and whether it pays.

The stage pretrains the ``tiny-synthetic`` configuration briefly (MAE on Sentinel-2 and
Sentinel-1, batches grouped by sensor), plots its loss curve per sensor, leaves the encoder for
later stages (``ctx.pretrained_encoder``) and shows the recorded result of
``benchmarks/pretrain_pays.py`` (pretrained vs. random initialisation over three seeds).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["find_pays_results", "loss_curve", "pretrain_stage"]

_PAYS = Path("benchmarks") / "results" / "pretrain_pays"


def find_pays_results() -> Path | None:
    """``results.json`` of the recorded pretraining-pays benchmark, if this checkout has it."""
    roots = [Path.cwd(), Path(__file__).resolve().parents[3]]
    for root in roots:
        path = root / _PAYS / "results.json"
        if path.is_file():
            return path
    return None


def loss_curve(metrics_csv: str | Path, png: str | Path, title: str = "") -> dict[str, list[float]]:
    """Plot ``train/loss`` and the per-sensor losses of a run's ``metrics.csv`` into ``png``.

    Returns:
        The plotted series: ``{"step": [...], "train/loss": [...], <per-sensor key>: [...]}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[int, dict[str, str]] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            rows[int(float(row["step"]))] = row  # the last row of a step wins (resumed runs)
    steps = sorted(rows)
    series: dict[str, list[float]] = {"step": [float(s) for s in steps]}
    keys = sorted({k for r in rows.values() for k in r if k.startswith("train/") and r[k]})
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for key in keys:
        if key in ("train/lr",):
            continue
        points = [(s, float(rows[s][key])) for s in steps if rows[s].get(key)]
        if not points:
            continue
        series[key] = [v for _, v in points]
        xs, ys = zip(*points, strict=True)
        if key == "train/loss":
            # Batches alternate between sensors of different difficulty: the mixed curve is
            # drawn faintly, each sensor's own curve on top.
            ax.plot(xs, ys, color="0.75", linewidth=0.8, label="loss (batch of any sensor)")
        elif key.count("/") == 2:
            ax.plot(xs, ys, marker=".", linewidth=1.4, label=key.split("/")[-1])
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return series


def _pays_section() -> str:
    path = find_pays_results()
    if path is None:
        return (
            "No recorded pretraining-pays result in this checkout; run "
            "`benchmarks/pretrain_pays.py` (see `benchmarks/README.md`)."
        )
    report = json.loads(path.read_text())
    table = (path.parent / "table.md").read_text() if (path.parent / "table.md").is_file() else ""
    machine = report.get("machine", {})
    verdict = ", ".join(
        f"{name}: {'pays' if v['pays'] else 'does not pay'} ({v['margin']:+.3f} vs spread "
        f"{v['spread']:.3f})"
        for name, v in report.get("verdicts", {}).items()
    )
    return (
        "Recorded result of `benchmarks/pretrain_pays.py` (the same configuration pretrained for "
        f"at most {report.get('budget_s', 0):.0f} s per seed on {machine.get('torch_threads', '?')} "
        f"CPU threads, against the same encoder randomly initialised; seeds "
        f"{', '.join(str(r['seed']) for r in report.get('runs', []))}): {verdict}.\n\n"
        f"{table}\nCommand: `{report.get('command', '')}`"
    )


def pretrain_stage(ctx: Any) -> str:
    """Pretrain briefly under ``ctx.out / "pretrain"`` and return the report section."""
    from thinkingearth.pretrain.config import config_from_dict, load_config, merge
    from thinkingearth.pretrain.run import run_pretrain

    quick = bool(getattr(ctx, "quick", False))
    base = load_config("tiny-synthetic").to_dict()
    if quick:
        overrides: dict[str, Any] = {
            "data": {
                "sensors": [
                    {"sensor": "sentinel-2-l2a", "n": 16},
                    {"sensor": "sentinel-1-grd", "n": 16},
                ],
                "batch_size": 8,
            },
            "trainer": {"max_steps": 6, "checkpoint_every": 3, "log_every": 1},
        }
    else:
        overrides = {"trainer": {}}  # the shipped configuration as is
    overrides["seed"] = int(getattr(ctx, "seed", 0))
    overrides["trainer"]["progress_bar"] = False
    config = config_from_dict(merge(base, overrides))
    out = Path(ctx.out) / "pretrain"
    result = run_pretrain(config, out, log=None)
    ctx.pretrained_encoder = result.encoder
    loss_curve(
        out / "logs" / "csv" / "metrics.csv",
        Path(ctx.out) / "pretrain_loss.png",
        title=f"{config.name}: MAE on Sentinel-2 and Sentinel-1",
    )
    summary = json.loads((out / "summary.json").read_text())
    command = f"`thinkingearth pretrain --config {config.name}`"
    if quick:
        command += f" shrunk for `--quick` ({config.data.sensors[0].n} scenes per sensor)"
    return (
        f"{command}: masked autoencoding of a tiny "
        f"encoder ({config.encoder.overrides.get('depth')} blocks, width "
        f"{config.encoder.overrides.get('embed_dim')}) on Sentinel-2 L2A and Sentinel-1 GRD in one "
        "run, batches grouped by sensor, random resized crops whose lon/lat/gsd follow the crop, "
        "flips and a random 75-100 % of the bands; the dynamic decoder reconstructs whichever "
        f"bands came in. {summary['steps']} steps in {summary['seconds']:.0f} s, final loss "
        f"{summary['final_loss']:.3f}; the encoder is `pretrain/encoder.safetensors`.\n\n"
        "![pretraining loss](pretrain_loss.png)\n\n" + _pays_section()
    )
