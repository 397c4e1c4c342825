"""``predict --precision int8`` against fp32 on the same scene: speed and agreement of class maps.

Builds everything it needs in ``--work`` (nothing is downloaded):

1. a synthetic Sentinel-2 L2A scene, ``thinkingearth synth --format native --n 1 --size SIZE``
   (its ``scene_00000/s2.tif``: 12 bands, uint16 reflectance x 10000, band names in the file);
2. two land-cover task checkpoints on the any-sensor encoder (``save_task``):

   * ``trained``: the shipped ``synthetic-landcover`` fine-tuning config (encoder 96 wide, 4
     blocks, patch 8, UPerNet 32 channels, tiles of 64 px) fine-tuned for ``--steps`` steps,
     the model a user of the config gets (its test mIoU is printed);
   * ``vit-small``: ``thinkingearth_vit_small`` (384 wide, 12 blocks, patch 16, random
     weights, frozen) with a UPerNet of 64 channels trained on it (``frozen-upernet``, 64 px
     samples, ``--steps-small`` steps) and tiles of 224 px: the size where the encoder's blocks
     are most of the cost, which is what int8 quantises. The head is trained so that the map has
     several classes (an untrained head maps one class, which agrees trivially); the encoder is
     not, so its features are those of a random ViT-S;

3. for each checkpoint, ``predict_scene`` over the scene in fp32 and in int8, alternating round
   after round in one process (the same ``SceneModel`` objects, so int8's one-time graph
   export and quantisation happen in its first round only and are reported apart); medians of
   wall time and of time in the network;
4. each exact CLI command once (a fresh process each, as a user runs it): end-to-end seconds,
   int8's one-time build included;
5. agreement: share of valid pixels with the same class in the fp32 and int8 maps, and the
   classes' shares in the fp32 map (a map of one class agrees trivially);
6. where the network's time goes, on one batch of 4 tiles (medians of 5, fp32 and int8
   alternating): the patch embedding, the blocks (fp32 fused oneDNN path vs int8 ONNX Runtime)
   and the head.

Command (repository root)::

    .venv/bin/python benchmarks/predict_int8.py --work /tmp/te-int8 \\
        --markdown benchmarks/predict_int8.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
import torch

from thinkingearth.data.export import export_world
from thinkingearth.data.scene import Acquisition
from thinkingearth.data.synthetic import LANDCOVER_CLASSES
from thinkingearth.infer.model import SceneModel
from thinkingearth.infer.predictor import predict_scene
from thinkingearth.infer.task_model import load_task
from thinkingearth.models.weights import CONFIGS
from thinkingearth.tasks import finetune
from thinkingearth.tasks.finetune_config import load_finetune_config


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _cpu() -> str:
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} ({', '.join(simd) or 'no AVX2'})"


def _machine() -> str:
    import onnxruntime

    return (
        f"{platform.system()} {platform.machine()}, {_cpu()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), onnxruntime {onnxruntime.__version__}"
    )


def _trained(work: Path, steps: int) -> tuple[Path, str]:
    config = load_finetune_config(
        "synthetic-landcover", {"trainer": {"max_steps": steps, "val_every": steps}}
    )
    result = finetune(config, work / "trained-run", overwrite=True, log=None)
    miou = result.metrics.get("miou", float("nan"))
    return result.model, f"fine-tuned {result.steps} steps, test mIoU {miou:.3f}"


def _vit_small(work: Path, steps: int) -> tuple[Path, str]:
    small = CONFIGS["thinkingearth_vit_small"]
    encoder = {
        "embed_dim": small.embed_dim,
        "depth": small.depth,
        "num_heads": small.num_heads,
        "hyper_dim": small.hyper_dim,
        "patch_size": 16,
        "img_size": 64,
    }
    config = load_finetune_config(
        "synthetic-landcover",
        {
            "data": {"options": {"size": 64}},
            "model": {"overrides": encoder, "decoder_channels": 64, "tile": 224},
            "protocol": "frozen-upernet",
            "trainer": {"max_steps": steps, "val_every": steps},
        },
    )
    result = finetune(config, work / "vit-small-run", overwrite=True, log=None)
    miou = result.metrics.get("miou", float("nan"))
    return result.model, (
        f"random frozen ViT-S/16, UPerNet head trained {result.steps} steps, test mIoU {miou:.3f}"
    )


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _breakdown(models: dict[str, SceneModel], image: Path, repeats: int = 5) -> dict[str, Any]:
    """Seconds of one batch of 4 tiles per precision: network, embedding, blocks, head.

    The precisions and parts alternate within each repeat, so that a change of machine load
    falls on all of them; medians over the repeats.
    """
    first = next(iter(models.values()))
    with rasterio.open(image) as src:
        window = rasterio.windows.Window(0, 0, first.tile, first.tile)
        tile = torch.from_numpy(src.read(window=window).astype(np.float32))
    x = tile[None, None].repeat(4, 1, 1, 1, 1)  # [4, 1, C, tile, tile]
    calls: dict[str, dict[str, Callable[[], object]]] = {}
    for precision, model in models.items():
        network: Any = model.network
        backbone = network.module.backbone
        image_n = network.normaliser(x, model.sensor, model.bands)[:, -1]
        batch = {"image": image_n, "bands": list(model.bands), "sensor": model.sensor}
        inputs = backbone._inputs(batch)
        calls[precision] = {
            "network": lambda n=network: n(x),
            "levels": lambda b=backbone, i=image_n, t=batch: b.levels(i, t),
            "embed": lambda b=backbone, i=image_n, k=inputs: b.encoder.embed(i, **k),
        }
    times: dict[str, dict[str, list[float]]] = {p: {} for p in models}
    with torch.inference_mode():
        for repeat in range(repeats + 1):  # repeat 0 warms up
            for precision, parts in calls.items():
                for part, call in parts.items():
                    seconds = _seconds(call)
                    if repeat:
                        times[precision].setdefault(part, []).append(seconds)
    out: dict[str, Any] = {}
    for precision, parts_times in times.items():
        med = {part: statistics.median(v) for part, v in parts_times.items()}
        out[precision] = {
            "network": med["network"],
            "embed": med["embed"],
            "blocks": med["levels"] - med["embed"],
            "head": med["network"] - med["levels"],
        }
    return out


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _rounds(
    models: dict[str, SceneModel], image: Path, out: Path, rounds: int
) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {p: {"wall": [], "net": []} for p in models}
    order = list(models)
    for r in range(rounds + 1):  # round 0: warm-up (int8 builds its graph), reported apart
        for precision in order if r % 2 == 0 else order[::-1]:
            target = out / f"{precision}-{r}.tif"
            result = predict_scene(
                models[precision],
                [Acquisition.from_path("--image", image)],
                target,
                quicklook=False,
                device="cpu",
            )
            key = "first" if r == 0 else "wall"
            times[precision].setdefault(key, []).append(result.seconds)
            if r > 0:
                times[precision]["net"].append(result.forward_seconds)
            print(f"  round {r} {precision}: {result.seconds:.1f} s", flush=True)
    return times


def _cli(image: Path, weights: Path, out: Path, precision: str) -> tuple[str, float]:
    argv = ["thinkingearth", "predict", "--task", "landcover", "--image", str(image)]
    argv += ["--weights", str(weights), "--out", str(out), "--precision", precision]
    argv += ["--device", "cpu", "--no-quicklook"]
    start = time.perf_counter()
    run = [sys.executable, "-m", "thinkingearth.cli", *argv[1:]]
    subprocess.run(run, check=True, capture_output=True, text=True)
    return shlex.join(argv), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (replaced)")
    parser.add_argument("--markdown", type=Path, help="write the results here")
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps (trained)")
    parser.add_argument(
        "--steps-small", type=int, default=100, help="head training steps (vit-small)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per precision")
    parser.add_argument("--models", default="trained,vit-small")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    load_before = _load()
    export_world(args.work / "world", "native", n=1, size=args.size)
    image = args.work / "world" / "scene_00000" / "s2.tif"
    rows: list[str] = []
    parts: list[str] = []
    details: list[str] = []
    for name in args.models.split(","):
        print(f"{name}: building the checkpoint", flush=True)
        if name == "trained":
            weights, about = _trained(args.work, args.steps)
        elif name == "vit-small":
            weights, about = _vit_small(args.work, args.steps_small)
        else:
            raise SystemExit(f"unknown model {name!r}")
        models = {"fp32": load_task(weights), "int8": load_task(weights, precision="int8")}
        out = args.work / f"out-{name}"
        out.mkdir()
        times = _rounds(models, image, out, args.rounds)
        fp32 = _classes(out / "fp32-1.tif")
        int8 = _classes(out / "int8-1.tif")
        valid = (fp32 != 255) & (int8 != 255)
        agree = float((fp32[valid] == int8[valid]).mean())
        k = len(LANDCOVER_CLASSES)
        shares = np.bincount(fp32[valid].astype(np.int64), minlength=k)[:k] / max(1, valid.sum())
        top = ", ".join(
            f"{LANDCOVER_CLASSES[i]} {shares[i]:.0%}" for i in np.argsort(shares)[::-1][:3]
        )
        med: dict[str, Any] = {
            p: {key: statistics.median(v) for key, v in t.items()} for p, t in times.items()
        }
        build = med["int8"]["first"] - med["int8"]["wall"]
        split = _breakdown(models, image)
        a, b = split["fp32"], split["int8"]
        parts.append(
            f"| {name} | {a['network']:.2f} / {b['network']:.2f} s "
            f"({a['network'] / b['network']:.2f}×) | {a['embed']:.2f} / {b['embed']:.2f} s | "
            f"{a['blocks']:.2f} / {b['blocks']:.2f} s (**{a['blocks'] / b['blocks']:.2f}×**) | "
            f"{a['head']:.2f} / {b['head']:.2f} s |"
        )
        cli = {p: _cli(image, weights, out / f"cli-{p}.tif", p) for p in ("fp32", "int8")}
        speed_wall = med["fp32"]["wall"] / med["int8"]["wall"]
        speed_net = med["fp32"]["net"] / med["int8"]["net"]
        rows.append(
            f"| {name} | {models['fp32'].tile} px | {med['fp32']['wall']:.1f} / "
            f"{med['int8']['wall']:.1f} s (**{speed_wall:.2f}×**) | {med['fp32']['net']:.1f} / "
            f"{med['int8']['net']:.1f} s ({speed_net:.2f}×) | ~{build:.1f} s | "
            f"{cli['fp32'][1]:.1f} / {cli['int8'][1]:.1f} s | **{agree:.2%}** | {top} |"
        )
        details.append(f"* `{name}`: {about}.")
        details.append(f"  * `{cli['fp32'][0]}`")
        details.append(f"  * `{cli['int8'][0]}`")
        print(rows[-1], flush=True)
    lines = [
        "# `predict --precision int8` against fp32 (`predict_int8.py`)",
        "",
        "Command (repository root): `.venv/bin/python benchmarks/predict_int8.py "
        f"--work /tmp/te-int8 --markdown benchmarks/predict_int8.md --size {args.size} "
        f"--steps {args.steps} --steps-small {args.steps_small} --rounds {args.rounds}`",
        "",
        f"Machine: {_machine()}. Load average (1, 5, 15 min) before: {load_before}; "
        f"after: {_load()}.",
        "",
        f"Scene: `thinkingearth synth --format native --n 1 --size {args.size}` "
        f"(`scene_00000/s2.tif`, {args.size} × {args.size} px, 12 Sentinel-2 L2A bands).",
        "",
        "| model | tile | predict wall, fp32 / int8 (median) | in the network | int8 one-time "
        "build | CLI end to end, fp32 / int8 | class maps agree | fp32 map's top classes |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "One batch of 4 tiles through the network, fp32 / int8 (medians of 5; blocks = levels "
        "minus embedding, head = network minus levels):",
        "",
        "| model | network | patch embedding | blocks | head (UPerNet) and normalisation |",
        "|---|---|---|---|---|",
        *parts,
        "",
        *details,
        "",
    ]
    if args.markdown:
        args.markdown.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
