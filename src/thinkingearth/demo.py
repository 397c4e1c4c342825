"""``make demo``: the whole loop on the embedded synthetic world, ending in a report with pictures.

The demo is a list of stages. Each stage takes the shared :class:`DemoContext`, writes its files
under the output folder and returns a Markdown section; the report lists every stage with the
time it took. Later capabilities (pretraining, fine-tuning, benchmarking, scene prediction) join
as further stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from thinkingearth.data.export import export_world
from thinkingearth.data.synthetic import (
    BUILT,
    FLOOD_CLASSES,
    LANDCOVER_CLASSES,
    TREE,
    SyntheticScene,
    WorldConfig,
    generate_scene,
)
from thinkingearth.fileio import atomic_dir
from thinkingearth.viz import (
    FLOOD_COLOURS,
    LANDCOVER_COLOURS,
    class_colours,
    legend_handles,
    s1_false_colour,
    s2_true_colour,
)

__all__ = ["DemoContext", "Stage", "run_demo"]


@dataclass
class DemoContext:
    """What the stages share: the output folder, the seed and what earlier stages produced."""

    out: Path
    seed: int
    quick: bool = False
    scenes: list[SyntheticScene] = field(default_factory=list)
    #: Where stages say what they made (the demo's progress lines).
    log: Callable[[str], None] = field(default=lambda message: None, repr=False)


Stage = tuple[str, Callable[[DemoContext], str]]


def _stage_world(ctx: DemoContext) -> str:
    size = 128 if ctx.quick else 256
    config = WorldConfig(size=size, cloud_cover=0.15)
    ctx.scenes = [generate_scene(ctx.seed, i, config) for i in range(12)]
    n_disk = 4 if ctx.quick else 16
    export_world(ctx.out / "world" / "kurosiwo", "kurosiwo", n=n_disk, seed=ctx.seed)
    export_world(ctx.out / "world" / "bigearthnet", "bigearthnet", n=n_disk, seed=ctx.seed)
    fractions = np.mean([s.class_fractions() for s in ctx.scenes], axis=0)
    flood_share = np.mean([(s.flood == 2).mean() for s in ctx.scenes])
    rows = "\n".join(
        f"| {name} | {share:.1%} |"
        for name, share in zip(LANDCOVER_CLASSES, fractions, strict=True)
    )
    return (
        f"Generated {len(ctx.scenes)} scenes of {size}×{size} px at 10 m (seed {ctx.seed}), every "
        "sensor on one grid, and wrote the world to disk in two real layouts: "
        f"`world/kurosiwo/` (Kuro Siwo GRD, {n_disk} tiles of 224×224 px in EPSG:3857) and "
        f"`world/bigearthnet/` (BigEarthNet v1, {n_disk} patches of 120×120 px).\n\n"
        "| land cover | share of the shown scenes |\n|---|---|\n"
        f"{rows}\n\nFlooded share of pixels after the event: {flood_share:.1%}."
    )


def _stage_figure(ctx: DemoContext) -> str:
    shown = sorted(ctx.scenes, key=lambda s: -float((s.flood == 2).mean()))[:3]
    cols = (
        "Sentinel-2 true colour",
        "Sentinel-1 pre-event (SL1)",
        "Sentinel-1 post-event (MS1)",
        "land cover",
        "flood labels (Kuro Siwo)",
        "Sentinel-5P NO2",
    )
    fig, axes = plt.subplots(len(shown), len(cols), figsize=(3.0 * len(cols), 3.1 * len(shown)))
    axes = np.atleast_2d(axes)
    for row, scene in enumerate(shown):
        panels = [
            s2_true_colour(scene.s2, scene.s2_bands),
            s1_false_colour(scene.s1[1, 0], scene.s1[1, 1]),
            s1_false_colour(scene.s1[2, 0], scene.s1[2, 1]),
        ]
        for col, rgb in enumerate(panels):
            axes[row, col].imshow(rgb, interpolation="nearest")
        axes[row, 3].imshow(
            scene.landcover,
            cmap=class_colours(LANDCOVER_COLOURS),
            vmin=-0.5,
            vmax=len(LANDCOVER_COLOURS) - 0.5,
            interpolation="nearest",
        )
        axes[row, 4].imshow(
            scene.flood,
            cmap=class_colours(FLOOD_COLOURS),
            vmin=-0.5,
            vmax=3.5,
            interpolation="nearest",
        )
        axes[row, 5].imshow(scene.no2 * 1e6, cmap="magma", interpolation="nearest")
        axes[row, 0].set_ylabel(
            f"scene {scene.index}\n{scene.lat:.1f}°N {scene.lon:.1f}°E\n{scene.s2_date}"
        )
        for col in range(len(cols)):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(cols[col], fontsize=10)
    fig.legend(
        handles=legend_handles(LANDCOVER_CLASSES, LANDCOVER_COLOURS)
        + legend_handles((*FLOOD_CLASSES, "invalid"), FLOOD_COLOURS),
        loc="lower center",
        ncol=7,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = ctx.out / "world.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    captions = "\n".join(f"- scene {s.index}: {s.caption}" for s in shown)
    return (
        "![the synthetic world](world.png)\n\n"
        "Rows are scenes with a flood event. SAR false colour: red VV, green VH, blue VV/VH; "
        "floodwater turns dark between the pre- and post-event acquisitions, permanent water is "
        "dark in both.\n\nCaptions written from each scene's labels:\n\n" + captions
    )


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    both = int((pred & truth).sum())
    total = int(pred.sum()) + int(truth.sum())
    return 2.0 * both / total if total else float("nan")


def _stage_flood_map(ctx: DemoContext) -> str:
    """Export native scenes, map the most flooded one with the threshold model, score it."""
    import rasterio

    from thinkingearth.data.scene import Acquisition
    from thinkingearth.infer.predictor import predict_scene
    from thinkingearth.infer.threshold import threshold_model
    from thinkingearth.infer.writers import uncertainty_path

    size, n = (256, 3) if ctx.quick else (512, 4)
    world = export_world(ctx.out / "world" / "native", "native", n=n, seed=ctx.seed, size=size)

    def open_water(folder: Path) -> np.ndarray:
        # Floodwater that SAR change shows: open water, not flooded forest or towns.
        with rasterio.open(folder / "flood.tif") as f, rasterio.open(folder / "landcover.tif") as c:
            return (f.read(1) == 2) & ~np.isin(c.read(1), (TREE, BUILT))

    def open_flood(folder: Path) -> int:
        return int(open_water(folder).sum())

    folder = max(sorted(world.glob("scene_*")), key=open_flood)
    out = ctx.out / "flood_map.tif"
    result = predict_scene(
        threshold_model("flood"),
        [
            Acquisition.from_path("--pre", folder / "s1_sl1.tif"),
            Acquisition.from_path("--post", folder / "s1_ms1.tif"),
        ],
        out,
    )
    with (
        rasterio.open(out) as o,
        rasterio.open(uncertainty_path(out)) as u,
        rasterio.open(folder / "flood.tif") as t,
    ):
        pred, entropy, truth = o.read(1), u.read(1), t.read(1)
    with rasterio.open(folder / "s1_ms1.tif") as s1:
        post = s1.read()
    scored = (truth != 3) & (pred != 255)
    water_f1 = _f1(np.isin(pred, (1, 2)) & scored, np.isin(truth, (1, 2)) & scored)
    flood_f1 = _f1((pred == 2) & scored, (truth == 2) & scored)
    open_truth = open_water(folder) & scored
    open_recall = float((pred[open_truth] == 2).mean()) if open_truth.any() else float("nan")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    flood_cmap = class_colours(FLOOD_COLOURS)
    axes[0].imshow(s1_false_colour(post[0], post[1]), interpolation="nearest")
    axes[0].set_title("Sentinel-1 post-event (MS1)", fontsize=10)
    axes[1].imshow(
        np.where(pred == 255, 3, pred),
        cmap=flood_cmap,
        vmin=-0.5,
        vmax=3.5,
        interpolation="nearest",
    )
    axes[1].set_title("predicted (threshold model)", fontsize=10)
    ent = axes[2].imshow(
        np.ma.masked_invalid(entropy),
        cmap="magma",
        vmin=0,
        vmax=float(np.log(3)),
        interpolation="nearest",
    )
    axes[2].set_title("uncertainty: entropy (nats)", fontsize=10)
    fig.colorbar(ent, ax=axes[2], fraction=0.046, pad=0.04)
    axes[3].imshow(truth, cmap=flood_cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
    axes[3].set_title("truth (Kuro Siwo labels)", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(
        handles=legend_handles((*FLOOD_CLASSES, "invalid / no data"), FLOOD_COLOURS),
        loc="lower center",
        ncol=4,
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(ctx.out / "flood_prediction.png", dpi=90)
    plt.close(fig)
    tags = result.tags
    return (
        "![predicted flood map](flood_prediction.png)\n\n"
        f"`thinkingearth predict --task flood --model threshold` on `{folder.name}` of the "
        f"native export (`world/native/`, {size}×{size} px, Sentinel-1 VV/VH linear sigma0 "
        "before and after the event), with no training: flood where the post-event VV is "
        f"below an Otsu water threshold ({float(tags['WATER_THRESHOLD_VV_DB']):.1f} dB), the "
        "ground was not water before, and VV dropped by more than "
        f"{-float(tags['CHANGE_THRESHOLD_VV_DB']):.1f} dB; permanent water where it is water "
        "before and after. Written as Cloud-Optimised GeoTIFFs ready for QGIS (`flood_map.tif`: "
        "classes with their colours and names; `flood_map_uncertainty.tif`: entropy; "
        f"{result.tiles} tile(s), {result.seconds:.1f} s) with a quicklook (`flood_map.png`).\n\n"
        "| against the truth | F1 |\n|---|---|\n"
        f"| water (permanent + flood) | {water_f1:.2f} |\n| flood | {flood_f1:.2f} |\n\n"
        f"Open floodwater is found (recall {open_recall:.2f}), but flooded forest and towns "
        "brighten instead of darkening (double bounce), so a change threshold misses them; "
        "a trained model is needed there."
    )


def _stage_pretrain(ctx: DemoContext) -> str:
    """A short pretraining run and its loss curve (:mod:`thinkingearth.pretrain.report`)."""
    from thinkingearth.pretrain.report import pretrain_stage

    return pretrain_stage(ctx)


def _stage_benchmark(ctx: DemoContext) -> str:
    """The pretrained encoder against the baselines (:mod:`thinkingearth.bench.demo`)."""
    from thinkingearth.bench.demo import benchmark_stage

    return benchmark_stage(ctx)


def _stage_text_search(ctx: DemoContext) -> str:
    """A tiny vision-language model searching the world in words (:mod:`thinkingearth.vl.demo`)."""
    from thinkingearth.vl.demo import search_stage

    return search_stage(ctx)


STAGES: list[Stage] = [
    ("synthetic world", _stage_world),
    ("figure", _stage_figure),
    ("pretraining", _stage_pretrain),
    ("benchmark", _stage_benchmark),
    ("text search", _stage_text_search),
    ("flood map", _stage_flood_map),  # the demo ends with a mapped scene
]


def run_demo(
    out: str | Path = "demo-out",
    *,
    seed: int = 0,
    quick: bool = False,
    overwrite: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run every demo stage and write ``OUT/report.md``; returns the report's path.

    The output folder is assembled in a temporary sibling and renamed into place at the end, so a
    failed run leaves the previous report untouched.
    """
    final = Path(out)
    timings: list[tuple[str, float]] = []
    sections: list[tuple[str, str]] = []
    with atomic_dir(final, overwrite=overwrite) as tmp:
        ctx = DemoContext(out=tmp, seed=seed, quick=quick, log=log)
        for name, stage in STAGES:
            log(f"[demo] {name} …")
            start = time.perf_counter()
            sections.append((name, stage(ctx)))
            timings.append((name, time.perf_counter() - start))
            log(f"[demo] {name} done in {timings[-1][1]:.1f} s")
        total = sum(t for _, t in timings)
        lines = [
            "# thinkingearth demo",
            "",
            "The whole loop on the embedded synthetic Copernicus world, on this machine's CPU.",
            "",
        ]
        for name, text in sections:
            lines += [f"## {name[0].upper()}{name[1:]}", "", text, ""]
        lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings]
        lines += [f"| **total** | **{total:.1f}** |", ""]
        (tmp / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return final / "report.md"
