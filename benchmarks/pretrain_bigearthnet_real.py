"""Pretraining on the 11 real BigEarthNet Sentinel-2 patches: loss curve and label geometry.

One real-data run of issue 11: a tiny encoder pretrained (MAE, and SoftCon for comparison) on
the 11 BigEarthNet v1 Sentinel-2 L2A patches in ``../shared/realdata/bigearthnet-v1`` for a few
hundred steps on CPU, through the ``bigearthnet`` source (random 96-px windows of the 120-px
patches, seeded per sample), then:

* the loss curve of each run (``benchmarks/pretrain_bigearthnet_real.png``);
* whether patches with overlapping labels end closer than patches without: pooled features of
  each whole patch (all 12 bands, 120 px) from the encoder before pretraining (the same seeded
  random initialisation) and after; for each of the 55 patch pairs the cosine of the features
  and the Jaccard overlap of their 19-class label sets. Reported: the mean cosine of pairs that
  share at least half their labels (Jaccard >= 0.5) and of pairs that share none (Jaccard 0),
  the gap between them, the AUC (the chance that a similar pair is closer than a dissimilar
  one) and Spearman's rank correlation of cosine with Jaccard over all 55 pairs. Per-band means
  of the normalised patch (no learning at all) are the reference.

Eleven patches prove little: 55 pairs that are not independent (each patch is in 10 of them),
and SoftCon trains on the very labels it is then judged by. The numbers are reported as they
come out.

Run from the repository root::

    .venv/bin/python benchmarks/pretrain_bigearthnet_real.py --out /tmp/ben-real \\
        --markdown benchmarks/pretrain_bigearthnet_real.md
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from thinkingearth.data.formats.bigearthnet import BigEarthNet
from thinkingearth.data.transforms import Normaliser
from thinkingearth.models import load
from thinkingearth.pretrain import config_from_dict, run_pretrain
from thinkingearth.pretrain.modules import build_module

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata" / "bigearthnet-v1"
SENSOR = "sentinel-2-l2a"


def config(recipe: str, root: Path, steps: int, seed: int) -> dict[str, Any]:
    """The run: a 4-block, 96-wide encoder on 64-px crops of 96-px windows, batches of 8."""
    return {
        "name": f"bigearthnet-real-{recipe}",
        "recipe": recipe,
        "seed": seed,
        "encoder": {
            "name": "thinkingearth_vit_tiny",
            "overrides": {
                "embed_dim": 96,
                "depth": 4,
                "num_heads": 3,
                "hyper_dim": 64,
                "patch_size": 8,
                "img_size": 64,
            },
        },
        "data": {
            "source": "bigearthnet",
            "root": str(root),
            "split": None,  # the sample has no split files: every patch
            "size": 96,
            # 88 windows per pass (8 per patch): 11 batches of 8
            "sensors": [{"sensor": SENSOR, "n": 88}],
            "batch_size": 8,
        },
        "augment": {"crop_size": 64, "crop_scale": [0.3, 1.0], "band_fraction": [0.75, 1.0]},
        "mae": {
            "mask_ratio": 0.75,
            "norm_pix_loss": False,
            "decoder_dim": 64,
            "decoder_depth": 2,
            "decoder_heads": 4,
        },
        "contrastive": {"temperature": 0.1, "proj_dim": 64, "proj_hidden": 256},
        "optim": {"lr": 1e-3, "warmup_steps": 20},
        "trainer": {
            "max_steps": steps,
            "checkpoint_every": steps,
            "log_every": 5,
            "progress_bar": False,
        },
    }


def _load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@torch.no_grad()
def pooled(encoder: torch.nn.Module, patches: list[dict[str, Any]]) -> torch.Tensor:
    """Pooled features of each whole patch (normalised with the pretraining normaliser)."""
    encoder.eval()
    normaliser = Normaliser()
    out = []
    for patch in patches:
        image = normaliser(patch["image"][None], SENSOR, patch["bands"])
        meta = {
            k: torch.tensor([float(patch[k])], dtype=torch.float64)
            for k in ("lon", "lat", "time", "gsd")
        }
        out.append(encoder(image, bands=list(patch["bands"]), sensor=SENSOR, meta=meta)[0])
    return torch.stack(out)


def band_means(patches: list[dict[str, Any]]) -> torch.Tensor:
    """Per-band means of the normalised patches: a reference without any learning."""
    normaliser = Normaliser()
    return torch.stack(
        [normaliser(p["image"], SENSOR, p["bands"]).mean(dim=(-2, -1)) for p in patches]
    )


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def geometry(features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cosine of each patch pair against the Jaccard overlap of their label sets."""
    unit = F.normalize(features.double(), dim=1)
    cos = (unit @ unit.T).numpy()
    y = labels.bool().numpy()
    pairs = list(itertools.combinations(range(len(y)), 2))
    jac = np.array([(y[i] & y[j]).sum() / max(1, (y[i] | y[j]).sum()) for i, j in pairs])
    sim = np.array([cos[i, j] for i, j in pairs])
    close, apart = sim[jac >= 0.5], sim[jac == 0]
    auc = float(np.mean([(c > a) + 0.5 * (c == a) for c in close for a in apart]))
    rho = float(np.corrcoef(_ranks(jac), _ranks(sim))[0, 1])
    return {
        "similar_pairs": len(close),
        "dissimilar_pairs": len(apart),
        "cos_similar": float(close.mean()),
        "cos_dissimilar": float(apart.mean()),
        "gap": float(close.mean() - apart.mean()),
        "auc": auc,
        "spearman": rho,
    }


def loss_curve(out: Path) -> tuple[list[int], list[float]]:
    """``train/loss`` per logged step from the run's CSV log."""
    steps, losses = [], []
    with open(out / "logs" / "csv" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["train/loss"]))
    return steps, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REALDATA, help="BigEarthNet v1 sample")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--recipes", default="mae,softcon")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="write the report here (with .png, .json)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the --markdown report from its .json (no training)",
    )
    args = parser.parse_args()
    if args.report_only:
        if args.markdown is None:
            sys.exit("--report-only needs --markdown")
        saved = json.loads(args.markdown.with_suffix(".json").read_text())
        args.markdown.write_text(_report(saved, args.markdown.with_suffix(".png").name))
        return
    if not (args.root / "S2").is_dir():
        sys.exit(f"no BigEarthNet sample at {args.root}")
    torch.set_num_threads(os.cpu_count() or 1)
    load_before = _load_average()
    reader = BigEarthNet(args.root, split=None, version=1, sensor="s2", num_classes=19)
    patches = [reader[i] for i in range(len(reader))]
    labels = torch.stack([p["label"] for p in patches])
    results: dict[str, Any] = {
        "patches": len(patches),
        "steps": args.steps,
        "reference_band_means": geometry(band_means(patches), labels),
        "runs": {},
    }
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for recipe in args.recipes.split(","):
        settings = config_from_dict(config(recipe, args.root, args.steps, args.seed))
        before = build_module(settings, Normaliser()).encoder
        out = args.out / recipe
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        result = run_pretrain(settings, out, log=None)
        seconds = time.perf_counter() - start
        after = load(result.encoder)
        curves[recipe] = loss_curve(out)
        results["runs"][recipe] = {
            "seconds": round(seconds, 1),
            "final_loss": result.final_loss,
            "first_loss": curves[recipe][1][0] if curves[recipe][1] else None,
            "before": geometry(pooled(before, patches), labels),
            "after": geometry(pooled(after, patches), labels),
        }
        print(recipe, json.dumps(results["runs"][recipe]), flush=True)
    results["machine"] = (
        f"{platform.system()} {platform.machine()}, {_cpu()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average before "
        f"{load_before}, after {_load_average()}"
    )
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    results["command"] = command
    if args.markdown is None:
        print(json.dumps(results, indent=2))
        return
    _plot(curves, args.markdown.with_suffix(".png"))
    args.markdown.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.write_text(_report(results, args.markdown.with_suffix(".png").name))


def _plot(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (recipe, (steps, losses)) in zip(axes[0], curves.items(), strict=True):
        ax.plot(steps, losses, lw=1.2)
        ax.set_title(f"{recipe} on 11 real BigEarthNet S2 patches")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(name: str, g: dict[str, float]) -> str:
    return (
        f"| {name} | {g['cos_similar']:.3f} | {g['cos_dissimilar']:.3f} | {g['gap']:+.3f} | "
        f"{g['auc']:.2f} | {g['spearman']:+.2f} |"
    )


def _report(results: dict[str, Any], png: str) -> str:
    ref = results["reference_band_means"]
    lines = [
        "# Pretraining on the 11 real BigEarthNet patches",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Data: the {results['patches']} BigEarthNet v1 Sentinel-2 L2A patches of "
        "`../shared/realdata/bigearthnet-v1` through `data.source: bigearthnet` (12 bands, "
        "19-class labels), random 96-px windows of the 120-px patches (88 per pass, seeded per "
        "sample), augmented to 64-px crops; a 4-block, 96-wide encoder (8-px patches), batches "
        f"of 8, {results['steps']} steps per recipe.",
        "",
        f"![loss curves]({png})",
        "",
        "| recipe | wall time | first logged loss | final loss |",
        "|---|---|---|---|",
    ]
    for recipe, run in results["runs"].items():
        lines.append(
            f"| {recipe} | {run['seconds']:.0f} s | {run['first_loss']:.4f} | "
            f"{run['final_loss']:.4f} |"
        )
    lines += [
        "",
        "Wall times include start-up, the normalisation and the export; the machine was shared "
        "with other work (the load average above, against its core count), so these times "
        "are not what an idle machine gives (not measured here). Each Sentinel-2 sample reads 12 single-band GeoTIFFs "
        "(the archive's layout): about 0.08 s per sample here, which shards avoid. MAE's "
        "reconstruction loss falls steadily; SoftCon's stays noisy around 2 (8 samples per "
        "batch, most of them sharing labels, leave its soft-target InfoNCE a high floor).",
        "",
        "Do patches with overlapping labels end closer? Pooled features of each whole patch; for "
        f"the 55 pairs, cosine against label Jaccard: {ref['similar_pairs']} pairs share at "
        f"least half their labels (Jaccard >= 0.5), {ref['dissimilar_pairs']} share none. AUC: "
        "the chance that a similar pair's cosine beats a dissimilar pair's (0.5 = no relation).",
        "",
        "| features | cos, similar labels | cos, no shared label | gap | AUC | Spearman (all 55) |",
        "|---|---|---|---|---|---|",
        _row("band means of the patch (no learning)", ref),
    ]
    for recipe, run in results["runs"].items():
        lines.append(_row(f"{recipe}: before (seeded random init)", run["before"]))
        lines.append(_row(f"{recipe}: after {results['steps']} steps", run["after"]))
    lines += ["", _verdict(results), ""]
    return "\n".join(lines)


def _verdict(results: dict[str, Any]) -> str:
    ref = results["reference_band_means"]
    parts = []
    for recipe, run in results["runs"].items():
        b, a = run["before"], run["after"]
        closer = "closer" if a["gap"] > 0 else "not closer"
        parts.append(
            f"{recipe}: after pretraining, similar-label pairs are {closer} than pairs without a "
            f"shared label (gap {a['gap']:+.3f}, AUC {a['auc']:.2f}; before: gap "
            f"{b['gap']:+.3f}, AUC {b['auc']:.2f})."
        )
    return (
        " ".join(parts)
        + f" The band means of the patches, with no learning at all, reach AUC {ref['auc']:.2f}: "
        "on these patches the labels follow the spectra, so an encoder moving towards that "
        "geometry says little about what it learnt. Eleven patches prove little: 55 pairs that "
        f"share patches ({ref['similar_pairs']} similar, {ref['dissimilar_pairs']} dissimilar), "
        "so a difference of this size can come from one or two patches; SoftCon is scored on "
        "the labels it trained with (a training-set fit, not a held-out result). The run shows "
        "the real-data path working end to end on real files, not a good representation."
    )


if __name__ == "__main__":
    main()
