"""Memory and speed of whole-scene prediction (``thinkingearth.infer.predict_scene``).

For each scene size it writes a two-band Sentinel-1 scene (VV, VH linear sigma0, float32,
deflate-compressed 512-px tiles, texture from the synthetic world), then in fresh processes:

* **predict**: runs the streaming predictor end to end (read, batch, forward, blend, stream out,
  COG, quicklook) and reports its peak resident memory (``VmHWM``), wall time and the time of
  each step;
* **forward**: times the same network alone on batches of the same shape cut from the same
  scene (after a warm-up), giving the model's pure forward rate in tiles per second.

Throughput ratio = (tiles / predict wall time) / pure forward rate. The memory criterion is the
peak RSS of the largest scene over that of the smallest.

Usage (from the repository root)::

    .venv/bin/python benchmarks/predict_memory.py --sizes 2500 10000 --models cnn unet threshold \\
        --work /tmp/thinkingearth-bench --json benchmarks/results/predict_memory.json

The scenes (about 0.7 GB for 10 000 px) are kept in ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor, nn

TILE, OVERLAP, BATCH = 512, 32, 4


# --- the scene --------------------------------------------------------------------------------


def write_scene(path: Path, size: int) -> None:
    """A ``size`` × ``size`` VV/VH scene, written strip by strip (flat memory)."""
    from thinkingearth.data.synthetic import WorldConfig, generate_scene

    source = generate_scene(0, 4, WorldConfig(size=512), stream=7).s1[2]  # [2, 512, 512] post
    variants = [source, source[:, ::-1], source[:, :, ::-1], source[:, ::-1, ::-1]]
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 2,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0),
        "nodata": 0.0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "zlevel": 1,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.Env(GDAL_CACHEMAX=256 * 2**20), rasterio.open(tmp, "w", **profile) as dst:
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
        for row in range(0, size, 512):
            h = min(512, size - row)
            strip = np.concatenate(
                [variants[(row // 512 + c) % 4][:, :h] for c in range(0, size, 512)], axis=2
            )[:, :, :size]
            dst.write(np.ascontiguousarray(strip), window=Window(0, row, size, h))
    tmp.rename(path)


# --- the models -------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Three convolutions at full resolution, about 10 k multiply-adds per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x[:, -1])


class SmallUNet(nn.Module):
    """A two-level U-Net (32/64 channels), about 60 k multiply-adds per pixel."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
            )

        self.enc1 = block(2, 32)
        self.enc2 = block(32, 64)
        self.up = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec = block(64, 32)
        self.head = nn.Conv2d(32, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.enc1(x[:, -1])
        b = self.enc2(nn.functional.max_pool2d(a, 2))
        return self.head(self.dec(torch.cat([a, self.up(b)], dim=1)))


def scene_model(name: str) -> Any:
    """The scene model called ``name``: ``cnn``, ``unet`` or ``threshold``."""
    from thinkingearth.infer import SceneModel, threshold_model
    from thinkingearth.infer.model import TASK_CLASSES
    from thinkingearth.sensors import SSL4EO_S12_S1_DB_STATS

    if name == "threshold":
        return threshold_model("water", tile=TILE, overlap=OVERLAP, batch_size=BATCH)
    torch.manual_seed(0)
    network = (SmallCNN() if name == "cnn" else SmallUNet()).eval()
    classes, colours = TASK_CLASSES["water"]
    stats = [SSL4EO_S12_S1_DB_STATS[b] for b in ("VV", "VH")]
    return SceneModel(
        network=network,
        task="water",
        classes=classes,
        colours=colours,
        sensor="s1",
        bands=("VV", "VH"),
        tile=TILE,
        overlap=OVERLAP,
        sar_units="db",
        mean=tuple(m for m, _ in stats),
        std=tuple(s for _, s in stats),
        batch_size=BATCH,
        name=name,
    )


# --- the children -----------------------------------------------------------------------------


def _rss_mb() -> float:
    """Peak resident memory of this process image, MB (``VmHWM``; unlike ``ru_maxrss`` it does
    not inherit the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_predict(scene: Path, model_name: str, out: Path) -> dict[str, Any]:
    from thinkingearth.data.scene import Acquisition
    from thinkingearth.infer import predict_scene

    model = scene_model(model_name)
    baseline = _rss_mb()
    result = predict_scene(model, [Acquisition.from_path("--image", scene)], out)
    return {
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        "seconds": result.seconds,
        "tiles": result.tiles,
        "timings": result.timings,
    }


def child_forward(scene: Path, model_name: str, batches: int) -> dict[str, Any]:
    """The network alone on batches of the predictor's shape, read from the scene."""
    from thinkingearth.data.scene import Acquisition, SceneStack, iter_windows
    from thinkingearth.infer.predictor import _prepare
    from thinkingearth.infer.threshold import ThresholdWater

    model = scene_model(model_name)
    network = model.network if model.calibrate is None else ThresholdWater(-15.0)
    with SceneStack(
        [Acquisition.from_path("--image", scene)],
        sensor="s1",
        bands=model.bands,
        to_units=model.sar_units,
    ) as stack:
        windows = list(iter_windows(stack.grid.shape, TILE, OVERLAP))[: BATCH * batches]
        tiles = []
        for w in windows:
            x, valid = stack.read(w)
            tiles.append(_prepare(x, valid, model, (TILE, TILE)))
    data = [torch.from_numpy(np.stack(tiles[i : i + BATCH])) for i in range(0, len(tiles), BATCH)]
    with torch.inference_mode():
        network(data[0])  # warm-up
        start = time.perf_counter()
        for batch in data:
            out = network(batch)
            if model.outputs == "logits":
                torch.softmax(out, dim=1)
        seconds = time.perf_counter() - start
    return {"tiles": len(tiles), "seconds": seconds, "tiles_per_s": len(tiles) / seconds}


# --- the driver -------------------------------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--models", nargs="+", default=["cnn", "unet", "threshold"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/thinkingearth-bench"))
    parser.add_argument("--forward-batches", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, scene, model_name, extra = args.child
        if kind == "predict":
            result = child_predict(Path(scene), model_name, Path(extra))
        else:
            result = child_forward(Path(scene), model_name, int(extra))
        print(json.dumps(result))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        scene = args.work / f"s1_{size}.tif"
        if not scene.exists():
            start = time.perf_counter()
            write_scene(scene, size)
            print(f"wrote {scene} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for model_name in args.models:
            out = args.work / f"pred_{model_name}_{size}.tif"
            pred = run_child("predict", str(scene), model_name, str(out))
            fwd = run_child("forward", str(scene), model_name, str(args.forward_batches))
            rate = pred["tiles"] / pred["seconds"]
            row = {
                "size": size,
                "model": model_name,
                **pred,
                "forward_tiles_per_s": fwd["tiles_per_s"],
                "throughput_ratio": rate / fwd["tiles_per_s"],
                "megapixels_per_s": size * size / 1e6 / pred["seconds"],
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            for path in (out, out.with_suffix(".png")):
                path.unlink(missing_ok=True)
    print(
        "| model | scene px | tiles | peak RSS MB | wall s | pipeline tiles/s | forward tiles/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['size']}² | {r['tiles']} | {r['peak_rss_mb']:.0f} | "
            f"{r['seconds']:.1f} | {r['tiles'] / r['seconds']:.2f} | "
            f"{r['forward_tiles_per_s']:.2f} | {r['throughput_ratio']:.0%} |"
        )
    sizes = sorted(args.sizes)
    for model_name in args.models:
        peak = {r["size"]: r["peak_rss_mb"] for r in rows if r["model"] == model_name}
        if len(sizes) > 1:
            print(
                f"{model_name}: peak RSS {sizes[-1]}² / {sizes[0]}² = "
                f"{peak[sizes[-1]] / peak[sizes[0]]:.2f}"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        machine = {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gdal": rasterio.__gdal_version__,
        }
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
