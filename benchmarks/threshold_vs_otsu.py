"""Flood mapping of the training-free threshold model against a plain Otsu on the post-event VV.

The threshold flood model (``thinkingearth.infer.threshold``, ``--model threshold``) must do
better than the simplest baseline there is: Otsu's threshold on the post-event VV (dB), every
dark pixel called flood. This script scores both on bi-temporal Sentinel-1 scenes with known
truth, with the model run exactly as the predictor runs it on a scene that fits one tile (its
calibration preview at full resolution, then one forward pass):

* ``world``: flood scenes of the synthetic world (``SyntheticCopernicus("flood",
  "sentinel-1-grd", split="test")``, Kuro Siwo layout: SL2, SL1, MS1 linear sigma0; truth 0 no
  water, 1 permanent water, 2 flood, 3 ignored), with both pre-event images and with SL1 only;
* ``farmland``: fields along a river (crops, forest, built-up, dark smooth bare fields), field
  changes between dates, harvest drops and a wet-soil patch after the event, a flood of random
  extent beside the river (``farmland_scene``);
* ``drops``: the same with a small flood and many fields dropping 3-5 dB (bright land that
  darkens, e.g. -8 -> -12 dB, is not flood);
* ``wet-pre``: the same where the floodplain was moist (darker) before the event and part of the
  flooded ground was already water in the older pre-event image only.

Methods: ``model`` (the working tree's threshold model), ``old`` (the model as committed at a
git revision, ``--old-rev``, by default the last one before the flood rule was fixed, loaded
from ``git show``; skipped outside a git checkout), ``otsu``
(Otsu on the post-event VV dB of the whole scene), ``otsu3`` (the same after the model's 3 × 3
speckle filter) and ``split`` (the single-date water model on the post-event image: split-based
Otsu, all water called flood). Flood F1, precision and recall are pooled over the pixels of a
scene set; "wins" counts the scenes with a flood where the method's flood F1 beats ``otsu``'s;
"flood called permanent" is the share of true flood pixels mapped as permanent water. Water F1
scores permanent water + flood against the truth's water after the event.

With ``--realdata`` (default ``../shared/realdata``) it also runs the single-date ``water`` model
on the Sen1Floods11 hand-labelled chip through the scene predictor and reports its water F1
(the README's reference: 0.72).

Usage (repository root; about a minute on one core)::

    .venv/bin/python benchmarks/threshold_vs_otsu.py --scenes 20 --size 256
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from scipy import ndimage

from thinkingearth.infer import threshold as current
from thinkingearth.infer.model import ScenePreview

ENL = 4.4  # Sentinel-1 IW GRD equivalent number of looks
REPO = Path(__file__).resolve().parents[1]
#: The last commit of ``threshold.py`` with the old rule (flood = any drop outside pre-event water).
OLD_REV = "aa84750"

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (dB [T, H, W], valid) -> classes


# --- scenes -----------------------------------------------------------------------------------


def farmland_scene(
    rng: np.random.Generator,
    size: int = 256,
    *,
    reach: float = 16.0,
    harvest_share: float = 0.4,
    wet_pre: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """VV linear sigma0 ``[3, H, W]`` (pre2, pre, post) of farmland along a river, and its truth.

    Land is Voronoi fields (crops -8.5 ± 1.5 dB, forest -7.5, built-up -5.5, 8 % dark smooth
    bare fields at -16 to -13 dB) with texture at two scales; crop fields change by ± 1.5 dB
    between dates, and after the event ``harvest_share`` of them drop 3-5 dB, as does a broad
    wet-soil patch (2.5 dB). Water is -21.5 dB plus up to 3 dB of wind. The flood covers the low
    ground within about ``reach`` pixels of a meandering river. With ``wet_pre`` the floodplain
    is 1-4 dB darker (moist) before the event and part of the flooded ground is water in the
    older pre-event image (pre2) already: not permanent water, since the recent one is dry.
    """
    shape = (size, size)

    def smooth(sigma: float) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        return (noise - noise.mean()) / noise.std()

    n = size * size // 18**2
    seeds = np.zeros(shape, dtype=np.int64)
    seeds[rng.integers(0, size, n), rng.integers(0, size, n)] = np.arange(1, n + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    field = seeds[iy, ix] - 1
    kind = rng.choice(4, n, p=[0.65, 0.2, 0.07, 0.08])  # crop, forest, built-up, bare
    mean = np.select(
        [kind == 0, kind == 1, kind == 2],
        [rng.normal(-8.5, 1.5, n), rng.normal(-7.5, 0.7, n), rng.normal(-5.5, 1.5, n)],
        rng.uniform(-16.0, -13.0, n),
    )
    base = mean[field] + 0.8 * smooth(1.5) + 0.7 * smooth(20)
    yy, xx = np.mgrid[0:size, 0:size]
    centre = size * rng.uniform(0.35, 0.65) + rng.uniform(10, 40) * np.sin(
        2 * np.pi * xx / rng.uniform(150, 300) + rng.uniform(0, 2 * np.pi)
    )
    dist = np.abs(yy - centre)
    river = dist < rng.uniform(3, 7)
    low = dist + 10 * smooth(12)
    flood = ndimage.binary_opening((low < reach) & ~river, iterations=2)
    harvested = (rng.random(n) < harvest_share) & (kind == 0)
    darkening = np.where(harvested, rng.uniform(3.0, 5.0, n), 0.0)[field]
    darkening += (smooth(30) > 0.6) * 2.5
    moist = np.clip((reach + 15 - low) / 15, 0, 1) * rng.uniform(1.0, 4.0) if wet_pre else 0.0
    early = flood & (smooth(8) > 0.3) if wet_pre else np.zeros(shape, dtype=bool)
    images = []
    for step in range(3):
        db = base + rng.normal(0.0, 1.5, n)[field] * (kind == 0)[field] + 0.4 * smooth(6)
        water = river.copy()
        if step == 2:
            db = db - darkening
            water |= flood
        else:
            db = db - moist
            if step == 0:
                water |= early
        wind = rng.uniform(0.0, 3.0) * (0.5 + 0.5 * smooth(25))
        db = np.where(water, -21.5 + wind + 0.3 * smooth(1.5), db)
        images.append((10.0 ** (db / 10.0)) * rng.gamma(ENL, 1.0 / ENL, size=shape))
    truth = np.where(river, 1, np.where(flood, 2, 0)).astype(np.uint8)
    return np.stack(images).astype(np.float32), truth


def scene_sets(n: int, size: int, seed: int) -> dict[str, Callable[[], Iterator]]:
    """Each set: a function yielding ``(VV linear [T, H, W], truth)``."""
    from thinkingearth.data.synthetic import SyntheticCopernicus

    def world(first_pre: int) -> Iterator:
        data = SyntheticCopernicus(
            "flood", "sentinel-1-grd", split="test", n=n, size=size, seed=seed, cache=False
        )
        for i in range(n):
            scene = data.scene(i)
            yield scene.s1[first_pre:, 0], scene.flood

    def farmland(**kw: object) -> Iterator:
        for i in range(n):
            rng = np.random.default_rng([seed, i, 7])
            reach = kw.get("reach") or float(rng.uniform(8.0, 30.0))
            yield farmland_scene(rng, size, **{**kw, "reach": reach})  # type: ignore[arg-type]

    return {
        "world (SL2, SL1, MS1)": lambda: world(0),
        "world (SL1, MS1)": lambda: world(1),
        "farmland": lambda: farmland(),
        "drops": lambda: farmland(reach=10.0, harvest_share=0.6),
        "wet-pre": lambda: farmland(wet_pre=True),
    }


# --- methods ----------------------------------------------------------------------------------


def threshold_method(module: ModuleType) -> Method:
    model = module.threshold_model("flood")

    def run(db: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = db[:, None].astype(np.float32)  # [T, 1, H, W]: VV only
        network = model.calibrate(ScenePreview(x, valid, 1))
        with torch.inference_mode():
            probs = network(torch.from_numpy(x[None]))[0]
        return probs.argmax(0).numpy()

    return run


def otsu_method(speckle_filter: int) -> Method:
    def run(db: np.ndarray, valid: np.ndarray) -> np.ndarray:
        post = current._despeckle_np(db[-1:], speckle_filter)[0] if speckle_filter > 1 else db[-1]
        return np.where(post < current.otsu_threshold(post[valid]), 2, 0)

    return run


def split_method() -> Method:
    model = current.threshold_model("water")

    def run(db: np.ndarray, valid: np.ndarray) -> np.ndarray:
        x = db[-1:, None].astype(np.float32)
        network = model.calibrate(ScenePreview(x, valid, 1))
        with torch.inference_mode():
            water = network(torch.from_numpy(x[None]))[0].argmax(0).numpy()
        return np.where(water == 1, 2, 0)

    return run


def old_module(rev: str) -> ModuleType | None:
    """``thinkingearth.infer.threshold`` as committed at ``rev`` (``None`` outside git)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:src/thinkingearth/infer/threshold.py"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(tempfile.mkdtemp(prefix="threshold_old_"))
    path = folder / "threshold_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("threshold_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["threshold_old"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# --- scoring ----------------------------------------------------------------------------------


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def evaluate(
    sets: dict[str, Callable[[], Iterator]], methods: dict[str, Method]
) -> dict[str, dict[str, dict[str, float]]]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, make in sets.items():
        # flood tp fp fn, water tp fp fn, true flood called permanent water
        counts = {m: np.zeros(7) for m in methods}
        per_scene: dict[str, list[float]] = {m: [] for m in methods}
        scenes = flooded = 0
        for vv, truth in make():
            valid = (vv > 0).all(axis=0)
            db = np.where(valid, 10.0 * np.log10(np.maximum(vv, 1e-10)), 0.0).astype(np.float32)
            scored = valid & (truth != 3)
            flood = (truth == 2) & scored
            water = np.isin(truth, (1, 2)) & scored
            scenes += 1
            flooded += bool(flood.any())
            for m, method in methods.items():
                classes = method(db, valid)
                pf = (classes == 2) & scored
                pw = np.isin(classes, (1, 2)) & scored
                c = (
                    (pf & flood).sum(),
                    (pf & ~flood).sum(),
                    (~pf & flood).sum(),
                    (pw & water).sum(),
                    (pw & ~water).sum(),
                    (~pw & water).sum(),
                    ((classes == 1) & flood).sum(),
                )
                counts[m] += c
                if flood.any():
                    per_scene[m].append(_f1(*c[:3]))
        results[name] = {}
        for m in methods:
            tp, fp, fn, wtp, wfp, wfn, flood_as_permanent = counts[m]
            results[name][m] = {
                "flood_f1": _f1(tp, fp, fn),
                "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / (tp + fn) if tp + fn else float("nan"),
                "water_f1": _f1(wtp, wfp, wfn),
                "flood_called_permanent": flood_as_permanent / (tp + fn) if tp + fn else 0.0,
                "mean_scene_f1": float(np.mean(per_scene[m])) if per_scene[m] else float("nan"),
                "wins_vs_otsu": float(
                    sum(a > b for a, b in zip(per_scene[m], per_scene["otsu"], strict=True))
                ),
                "scenes": float(scenes),
                "flooded_scenes": float(flooded),
            }
    return results


def sen1floods11_water_f1(realdata: Path) -> float | None:
    """Water F1 of ``predict --task water --model threshold`` on the Sen1Floods11 chip."""
    import rasterio

    from thinkingearth.data.scene import Acquisition
    from thinkingearth.infer.predictor import predict_scene

    folder = realdata / "sen1floods11"
    if not folder.is_dir():
        return None
    s1 = next((folder / "S1").glob("*_S1Hand.tif"))
    label = next((folder / "Labels").glob("*_LabelHand.tif"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "water.tif"
        predict_scene(
            current.threshold_model("water"),
            [Acquisition.from_path("--image", s1)],
            out,
            sar_units="db",
            quicklook=False,
        )
        with rasterio.open(out) as dst, rasterio.open(label) as lab:
            pred, truth = dst.read(1), lab.read(1)
    scored = (truth != -1) & (pred != 255)
    p, t = pred[scored] == 1, truth[scored] == 1
    return float(2 * (p & t).sum() / (p.sum() + t.sum()))


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__}; torch threads {torch.get_num_threads()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=20, help="scenes per set")
    parser.add_argument("--size", type=int, default=256, help="scene side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--old-rev",
        default=OLD_REV,
        help="git revision of the 'old' model (default: the last one before the fix)",
    )
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    methods: dict[str, Method] = {"model": threshold_method(current)}
    old = old_module(args.old_rev)
    if old is not None:
        methods["old"] = threshold_method(old)
    methods.update(otsu=otsu_method(1), otsu3=otsu_method(3), split=split_method())
    results = evaluate(scene_sets(args.scenes, args.size, args.seed), methods)
    water_f1 = sen1floods11_water_f1(args.realdata)

    print(f"machine: {machine()}")
    print(f"{args.scenes} scenes of {args.size} px per set, seed {args.seed}; old = {args.old_rev}")
    print()
    print(
        "| scenes | method | flood F1 | precision | recall | flood called permanent | "
        "water F1 | mean scene F1 | wins |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, by_method in results.items():
        for m, r in by_method.items():
            wins = f"{int(r['wins_vs_otsu'])}/{int(r['flooded_scenes'])}" if m != "otsu" else "—"
            print(
                f"| {name} | {m} | {r['flood_f1']:.3f} | {r['precision']:.3f} | "
                f"{r['recall']:.3f} | {r['flood_called_permanent']:.3f} | {r['water_f1']:.3f} | "
                f"{r['mean_scene_f1']:.3f} | {wins} |"
            )
    if water_f1 is None:
        print(f"\nSen1Floods11 chip: not found under {args.realdata}")
    else:
        print(f"\nSen1Floods11 chip, water task (threshold model): water F1 {water_f1:.3f}")
    seconds = time.perf_counter() - started
    print(f"wall time {seconds:.1f} s")
    if args.json is not None:
        payload = {"results": results, "sen1floods11_water_f1": water_f1, "seconds": seconds}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
