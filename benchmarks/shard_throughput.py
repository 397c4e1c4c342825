"""Pretraining data throughput: shards vs GeoTIFF folders vs the encoder's training step rate.

The same synthetic-world Sentinel-2 L2A samples (12 bands, float32) are written three ways and
read back the way pretraining reads them:

* **shards**: ``thinkingearth.pretrain.shards.write_shards`` (WebDataset tar, safetensors + JSON),
  read by :class:`~thinkingearth.pretrain.shards.ShardDataset` (shuffle buffer 256); and the same
  shards read by the ``webdataset`` library (when importable, e.g. ``PYTHONPATH=/tmp/wds``) with
  the same safe decoder, to compare the library's overhead with ours;
* **GeoTIFF files**: one file per sample (deflate, and uncompressed), each read whole with
  rasterio (pixels, band descriptions, grid, date tag), as a file-per-patch archive is read;
* **folder source**: the ``folder`` pretraining source (``data.source: folder``) on the same
  files: random windows of ``data.size`` pixels through the data module's own code.

Two sample sizes: 64 px (what the 2-core ``tiny-synthetic`` run trains on) and 256 px (16
small samples tiled; 3.1 MB each, close to a Copernicus-Pretrain Sentinel-2 patch of
264 x 264 x 13). Read rates are in one process and with a DataLoader of 2 workers (batches of
32, collated), over a warm page cache (files just written): they measure decoding, not disks.

The training side is one MAE optimisation step of the ``tiny-synthetic`` encoder (forward,
backward, AdamW) on collated batches held in memory: samples/s at 32 px crops (the config) and
64 px (no crop). End to end, the same 32-px steps fed by the shards and by the folder source
(DataLoader with 0 or 1 worker; rounds alternate, medians) give the share of each step's wall
time spent waiting for its batch: with 0 workers, all that the data loading costs the step.
The end also prints the arithmetic for Copernicus-Pretrain scale (``--arithmetic RESULT.json``
prints it alone from a saved result).

Run (2 CPU cores, as recorded in benchmarks/shard_throughput.md)::

    PYTHONPATH=/tmp/wds taskset -c 0,1 .venv/bin/python benchmarks/shard_throughput.py \\
        --json benchmarks/shard_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from torch.utils.data import DataLoader, Dataset

from thinkingearth.data.sample import collate
from thinkingearth.pretrain import config_from_dict, load_config
from thinkingearth.pretrain.data import PretrainDataModule
from thinkingearth.pretrain.modules import build_module
from thinkingearth.pretrain.shards import (
    ShardDataset,
    config_records,
    decode_record,
    write_shards,
)
from thinkingearth.pretrain.transforms import Normaliser

BATCH = 32
SENSOR = "sentinel-2-l2a"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Samples and their three on-disk forms
# ----------------------------------------------------------------------------------------------


def make_samples(n: int, size: int, seed: int) -> list[dict[str, Any]]:
    """``n`` Sentinel-2 L2A samples of the synthetic world, through the pretraining data module."""
    config = load_config(
        "tiny-synthetic",
        {"seed": seed, "data": {"size": size, "sensors": [{"sensor": SENSOR, "n": n}]}},
    )
    _, records = config_records(config)
    return list(records)


def tile_samples(small: list[dict[str, Any]], count: int, per_side: int) -> list[dict[str, Any]]:
    """Large samples, each ``per_side x per_side`` small ones side by side (same metadata)."""
    large = []
    for j in range(count):
        rows = []
        for r in range(per_side):
            row = [
                small[(j * per_side * per_side + r * per_side + c) % len(small)]["image"]
                for c in range(per_side)
            ]
            rows.append(torch.cat(row, dim=-1))
        sample = dict(small[j % len(small)])
        sample["image"] = torch.cat(rows, dim=-2).contiguous()
        large.append(sample)
    return large


def write_geotiffs(samples: list[dict[str, Any]], folder: Path, compress: str | None) -> None:
    """One GeoTIFF per sample: UTM 32N grid, band descriptions, acquisition date tag."""
    folder.mkdir(parents=True)
    for i, sample in enumerate(samples):
        image = sample["image"].numpy()
        count, height, width = image.shape
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": count,
            "dtype": "float32",
            "crs": "EPSG:32632",
            "transform": Affine(10.0, 0.0, 400000.0 + 3000.0 * i, 0.0, -10.0, 5000000.0),
        }
        if compress:
            profile["compress"] = compress
        if height >= 256:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        day = np.datetime64("1970-01-01") + np.timedelta64(int(sample["time"]), "D")
        stamp = str(day).replace("-", ":") + " 00:00:00"
        with rasterio.open(folder / f"s2_{i:05d}.tif", "w", **profile) as dst:
            dst.write(image)
            for b, name in enumerate(sample["bands"], start=1):
                dst.set_band_description(b, name)
            dst.update_tags(TIFFTAG_DATETIME=stamp)


class GeoTiffFiles(Dataset[dict[str, Any]]):
    """One sample per file, read whole: pixels, band names, grid and date."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted(folder.glob("*.tif"))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with rasterio.open(self.paths[index]) as src:
            image = src.read(out_dtype="float32")
            bands = tuple(src.descriptions)
            transform = tuple(src.transform)[:6]
            crs = src.crs.to_string()
            stamp = src.tags().get("TIFFTAG_DATETIME", "")
        day = np.datetime64(stamp[:10].replace(":", "-")) if stamp else None
        time_days = (
            float((day - np.datetime64("1970-01-01")).astype(int)) if day is not None else np.nan
        )
        return {
            "image": torch.from_numpy(image),
            "bands": bands,
            "sensor": SENSOR,
            "time": time_days,
            "gsd": float(transform[0]),
            "crs": crs,
            "transform": transform,
        }


def folder_dataset(folder: Path, size: int, n: int, seed: int) -> Dataset[dict[str, Any]]:
    """The ``folder`` pretraining source on ``folder``: random ``size``-px windows."""
    config = config_from_dict(
        {
            "name": "bench-folder",
            "recipe": "mae",
            "seed": seed,
            "encoder": {"name": "thinkingearth_vit_tiny", "overrides": {"patch_size": 8}},
            "data": {
                "source": "folder",
                "size": size,
                "sensors": [{"sensor": SENSOR, "root": str(folder), "n": n}],
            },
            "augment": {"crop_size": 32},
        }
    )
    module = PretrainDataModule(config, Normaliser())
    module.build()
    assert module.dataset is not None
    return module.dataset


# ----------------------------------------------------------------------------------------------
# Read rates
# ----------------------------------------------------------------------------------------------


def _rate(read: Callable[[], Iterable[Any]], count_of: Callable[[Any], int], rounds: int) -> dict:
    """Median samples/s over ``rounds`` full passes, after one pass of warm-up."""
    rates = []
    for round_ in range(rounds + 1):
        start = time.perf_counter()
        n = sum(count_of(item) for item in read())
        if round_:
            rates.append(n / (time.perf_counter() - start))
    return {"samples_per_s": statistics.median(rates), "rounds": [round(r, 1) for r in rates]}


def _steady_rate(loader: Iterable[Any], batches: int) -> float:
    """Samples/s of a DataLoader after its first batch (worker start-up left out)."""
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += int(next(iterator)["image"].shape[0])
    return n / (time.perf_counter() - start)


def _webdataset_rate(root: Path, rounds: int) -> dict | None:
    try:
        import webdataset as wds
    except ImportError:
        return None
    urls = [str(p) for p in sorted(root.glob("shard-*.tar"))]

    def read() -> Iterator[dict[str, Any]]:
        # the library's own decoders would unpickle .pth/.pyd members: only ours is used here
        dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).shuffle(256)
        for raw in dataset:
            yield decode_record(raw["safetensors"], raw["json"])

    result = _rate(read, lambda _item: 1, rounds)
    result["version"] = getattr(wds, "__version__", "unknown")
    return result


def read_rates(
    name: str,
    samples: list[dict[str, Any]],
    work: Path,
    *,
    shard_size: int,
    window: int,
    rounds: int,
    loader_batches: int,
    seed: int,
) -> dict[str, Any]:
    """Write ``samples`` three ways and measure how fast each reads back."""
    out: dict[str, Any] = {"samples": len(samples), "shape": list(samples[0]["image"].shape)}
    out["image_bytes"] = int(samples[0]["image"].numel() * 4)
    shards = work / f"{name}-shards"
    start = time.perf_counter()
    index = write_shards(samples, shards, shard_size=shard_size)
    out["write_shards_s"] = time.perf_counter() - start
    out["shards"] = len(index.shards)
    out["shard_bytes_per_sample"] = sum(s.bytes for s in index.shards) / index.total
    folders = {}
    for compress in ("deflate", None):
        folder = work / f"{name}-tif-{compress or 'none'}"
        start = time.perf_counter()
        write_geotiffs(samples, folder, compress)
        out[f"write_tif_{compress or 'none'}_s"] = time.perf_counter() - start
        out[f"tif_{compress or 'none'}_bytes_per_sample"] = _folder_bytes(folder) / len(samples)
        folders[compress or "none"] = folder

    rates: dict[str, Any] = {}
    # One torch thread, as in DataLoader workers: on an oversubscribed machine every parallel
    # region of a second thread waits for a core (0.7 ms to 13 ms per tiny op measured here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates["shards"] = _rate(
        lambda: ShardDataset(shards, seed=seed, shuffle_buffer=256, epochs=1),
        lambda _item: 1,
        rounds,
    )
    library = _webdataset_rate(shards, rounds)
    if library is not None:
        rates["shards_webdataset_lib"] = library
    for compress, folder in folders.items():
        files = GeoTiffFiles(folder)
        rates[f"tif_files_{compress}"] = _rate(
            lambda files=files: (files[i] for i in range(len(files))), lambda _item: 1, rounds
        )
    folder_source: Dataset[dict[str, Any]] | None = None
    try:
        folder_source = folder_dataset(folders["deflate"], window, len(samples), seed)
        source = folder_source
        rates["folder_source_deflate"] = _rate(
            lambda: (source[i] for i in range(len(source))),  # type: ignore[arg-type]
            lambda _item: 1,
            rounds,
        )
    except Exception as exc:  # the folder source is new: record why it did not run
        rates["folder_source_deflate"] = {"error": f"{type(exc).__name__}: {exc}"}

    # DataLoader, 2 workers, batches of 32 (steady state after the first batch)
    epochs = 1 + (loader_batches + 1) * BATCH // len(samples)
    loaders = {
        "shards": DataLoader(
            ShardDataset(shards, seed=seed, shuffle_buffer=256, epochs=epochs, batch_size=BATCH),
            batch_size=BATCH,
            num_workers=2,
            collate_fn=collate,
        ),
        "tif_files_deflate": DataLoader(
            GeoTiffFiles(folders["deflate"]),
            batch_size=BATCH,
            num_workers=2,
            collate_fn=collate,
            sampler=_Cycle(len(samples), (loader_batches + 1) * BATCH, seed),
        ),
    }
    if folder_source is not None:
        loaders["folder_source_deflate"] = DataLoader(
            folder_source,
            batch_size=BATCH,
            num_workers=2,
            collate_fn=collate,
            sampler=_Cycle(len(samples), (loader_batches + 1) * BATCH, seed),
        )
    for key, loader in loaders.items():
        rates[f"{key}_2workers"] = {"samples_per_s": _steady_rate(loader, loader_batches)}
    torch.set_num_threads(threads)
    out["rates"] = rates
    out["paths"] = {"shards": shards, **folders}
    out["_folder_source"] = folder_source
    return out


class _Cycle(torch.utils.data.Sampler[int]):
    """``length`` indices: seeded permutations of ``0 .. n-1``, one after another."""

    def __init__(self, n: int, length: int, seed: int) -> None:
        self.n, self.length, self.seed = n, length, seed

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        emitted = 0
        while emitted < self.length:
            for i in rng.permutation(self.n).tolist():
                if emitted == self.length:
                    return
                yield i
                emitted += 1


# ----------------------------------------------------------------------------------------------
# Training step rate, and training fed by each reader
# ----------------------------------------------------------------------------------------------


def _module(crop: int, seed: int) -> tuple[Any, torch.optim.Optimizer]:
    config = load_config(
        "tiny-synthetic",
        {"seed": seed, "augment": {"crop_size": crop}, "data": {"sensors": [{"sensor": SENSOR}]}},
    )
    module = build_module(config, Normaliser())
    module.train()
    optimizer = module.configure_optimizers()["optimizer"]
    return module, optimizer


def _train(
    module: Any, optimizer: torch.optim.Optimizer, batches: Iterator[Any], steps: int
) -> tuple[float, float]:
    """``steps`` optimisation steps after one warm-up step: samples/s and the share of the wall
    time spent waiting for the next batch (the data loading the step did not hide)."""

    def step(batch: Any) -> int:
        loss, _ = module.compute_losses(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(batch["image"].shape[0])

    step(next(batches))
    waited = 0.0
    n = 0
    start = time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - before
        n += step(batch)
    wall = time.perf_counter() - start
    return n / wall, waited / wall


def step_rates(
    samples: list[dict[str, Any]], steps: int, rounds: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Pure MAE step rate (batches already collated in memory) at 32 px and 64 px crops."""
    batches = [collate(samples[i : i + BATCH]) for i in range(0, len(samples) - BATCH + 1, BATCH)]
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        for crop, count in ((32, steps), (64, max(2, steps // 2))):
            module, optimizer = _module(crop, seed)
            cycle = (batches[i % len(batches)] for i in range(10**9))
            runs.setdefault(f"crop{crop}", []).append(_train(module, optimizer, cycle, count)[0])
    return {
        key: {"samples_per_s": statistics.median(v), "rounds": [round(x, 2) for x in v]}
        for key, v in runs.items()
    }


def fed_rates(
    result: dict[str, Any], samples: list[dict[str, Any]], steps: int, rounds: int, seed: int
) -> dict:
    """The 32-px MAE step fed by each reader: samples/s and the share of the pure rate.

    Rounds alternate over the feeders (the machine's load moves); medians over rounds.
    """
    paths = result["paths"]
    n_batches = steps + 1
    feeders: dict[str, Callable[[int], Iterable[Any]]] = {
        "memory": lambda _w: [
            collate(samples[(i * BATCH) % (len(samples) - BATCH) :][:BATCH])
            for i in range(n_batches + 1)
        ],
        "shards": lambda w: DataLoader(
            ShardDataset(paths["shards"], seed=seed, shuffle_buffer=256, batch_size=BATCH),
            batch_size=BATCH,
            num_workers=w,
            collate_fn=collate,
        ),
    }
    if result["_folder_source"] is not None:
        source = result["_folder_source"]
        feeders["folder_source_deflate"] = lambda w: DataLoader(
            source,
            batch_size=BATCH,
            num_workers=w,
            collate_fn=collate,
            sampler=_Cycle(len(samples), (n_batches + 1) * BATCH, seed),
        )
    runs: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, feeder in feeders.items():
            for workers in (0, 1) if name != "memory" else (0,):
                module, optimizer = _module(32, seed)
                measured = _train(module, optimizer, iter(feeder(workers)), steps)
                runs.setdefault(f"{name}_{workers}w", []).append(measured)
    pure = [rate for rate, _ in runs["memory_0w"]]
    return {
        key: {
            "samples_per_s": statistics.median(rate for rate, _ in values),
            # the load moves between rounds: the wait share within a run is the steady number
            "data_wait_share": statistics.median(wait for _, wait in values),
            "share_of_pure": statistics.median(
                rate / m for (rate, _), m in zip(values, pure, strict=True)
            ),
            "rounds": [[round(r, 2), round(w, 3)] for r, w in values],
        }
        for key, values in runs.items()
    }


# ----------------------------------------------------------------------------------------------
# Copernicus-Pretrain at scale: the arithmetic (constants cited in benchmarks/README.md)
# ----------------------------------------------------------------------------------------------

#: Copernicus-Pretrain (Wang et al. 2025, zhu-xlab/Copernicus-FM, Copernicus-Pretrain/README.md):
#: modality -> (images, channels x height x width per image).
COPERNICUS_PRETRAIN: dict[str, tuple[int, tuple[int, int, int]]] = {
    "Sentinel-1 GRD": (4_227_387, (2, 264, 264)),
    "Sentinel-2 TOA": (4_218_065, (13, 264, 264)),
    "Sentinel-3 OLCI": (2_189_561, (21, 96, 96)),
    "Sentinel-5P CO/NO2/SO2/O3": (2_104_735 + 1_752_558 + 1_366_452 + 2_556_631, (1, 28, 28)),
    "Copernicus DEM": (297_665, (1, 960, 960)),
}
#: Assumed ViT-B/16 MAE step rates at 224 px, 75 % masking, bf16 (images/s per GPU): DailyMAE
#: (Wu et al. 2024) trains MAE-B/16 800 epochs of ImageNet-1k (1.281 M) in 18 h on 8 A100s,
#: i.e. ~1 980 images/s per A100; NVIDIA's NeMo ViT numbers give H100 / A100 = 2.06.
GPU_RATES: dict[str, float] = {"A100": 2_000.0, "H100": 4_000.0}
SHARD_OVERHEAD = 2 * 512 + 2 * 512 + 1_000  # two tar headers and paddings, JSON and st header


def scale_arithmetic(result: dict[str, Any], shard_size: int = 256) -> str:
    """Markdown: shards, bytes, and the samples/s and bytes/s per GPU at Copernicus-Pretrain scale."""
    lines = [
        "| modality | images | float32 MB / image | TB | shards of 256 | MB / shard |",
        "|---|---|---|---|---|---|",
    ]
    total_images = total_bytes = total_shards = 0
    for name, (images, (c, h, w)) in COPERNICUS_PRETRAIN.items():
        per = c * h * w * 4 + SHARD_OVERHEAD
        shards = -(-images // shard_size)
        lines.append(
            f"| {name} | {images:,} | {per / 1e6:.3f} | {images * per / 1e12:.2f} | "
            f"{shards:,} | {shard_size * per / 1e6:.0f} |"
        )
        total_images += images
        total_bytes += images * per
        total_shards += shards
    lines.append(
        f"| **all** | **{total_images:,}** | {total_bytes / total_images / 1e6:.2f} (mean) | "
        f"**{total_bytes / 1e12:.1f}** | **{total_shards:,}** | |"
    )
    s12 = [COPERNICUS_PRETRAIN[k] for k in ("Sentinel-1 GRD", "Sentinel-2 TOA")]
    s12_bytes = sum(n * (c * h * w * 4) for n, (c, h, w) in s12) / sum(n for n, _ in s12)
    large = result["256px"]
    core_mb_s = large["rates"]["shards"]["samples_per_s"] * large["image_bytes"] / 1e6
    write_mb_s = large["samples"] * large["shard_bytes_per_sample"] / large["write_shards_s"] / 1e6
    lines += [
        "",
        "| GPU (assumed MAE ViT-B/16 rate) | samples/s per GPU | input per GPU, S1+S2 mix "
        f"({s12_bytes / 1e6:.2f} MB) | input per GPU, all modalities "
        f"({total_bytes / total_images / 1e6:.2f} MB) | reader cores per GPU, S1+S2, at "
        f"{core_mb_s:.0f} MB/s each (measured) | GPU-hours per pass of 18.7 M (every image "
        "a 224-px step: an upper bound) |",
        "|---|---|---|---|---|---|",
    ]
    for gpu, rate in GPU_RATES.items():
        s12_gb = rate * s12_bytes / 1e9
        lines.append(
            f"| {gpu} | {rate:,.0f} | {s12_gb:.1f} GB/s | "
            f"{rate * total_bytes / total_images / 1e9:.1f} GB/s | "
            f"{s12_gb * 1e3 / core_mb_s:.0f} | {total_images / rate / 3600:.1f} |"
        )
    lines += [
        "",
        f"Writing: one `thinkingearth shard` process wrote {write_mb_s:.0f} MB/s here (256-px "
        f"samples), i.e. {total_bytes / write_mb_s / 1e6 / 3600:.0f} h for "
        f"{total_bytes / 1e12:.1f} TB, not counting reading the source.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256, help="64-px samples generated")
    parser.add_argument("--large", type=int, default=64, help="256-px samples (tiled)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each read measure")
    parser.add_argument("--train-rounds", type=int, default=5, help="rounds of each step measure")
    parser.add_argument("--loader-batches", type=int, default=24)
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp"),
        help="a temporary folder is made (and removed) here",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--arithmetic",
        type=Path,
        default=None,
        help="only print the Copernicus-Pretrain arithmetic from a saved --json result",
    )
    args = parser.parse_args(argv)
    if args.arithmetic is not None:
        print(scale_arithmetic(json.loads(args.arithmetic.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shard-throughput-", dir=args.work))  # removed at the end
    report: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "load_start": _load(),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    started = time.perf_counter()
    small = make_samples(args.n, 64, args.seed)
    report["generate_s"] = time.perf_counter() - started
    print(f"generated {len(small)} samples in {report['generate_s']:.1f} s", file=sys.stderr)
    large = tile_samples(small, args.large, 4)
    sets = {
        "64px": (small, max(8, args.n // 8), 64),
        "256px": (large, max(4, args.large // 8), 64),
    }
    for name, (samples, shard_size, window) in sets.items():
        result = read_rates(
            name,
            samples,
            work,
            shard_size=shard_size,
            window=window,
            rounds=args.rounds,
            loader_batches=args.loader_batches,
            seed=args.seed,
        )
        if name == "64px":
            result["fed_training"] = fed_rates(
                result, samples, args.steps, args.train_rounds, args.seed
            )
        result.pop("_folder_source")
        result.pop("paths")
        report[name] = result
        print(json.dumps({name: result}, indent=1, default=str), file=sys.stderr)
    report["step_rates"] = step_rates(small, args.steps, args.train_rounds, args.seed)
    report["machine"]["load_end"] = _load()
    report["seconds"] = time.perf_counter() - started
    shutil.rmtree(work)
    print(scale_arithmetic(report), file=sys.stderr)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
