"""CPU inference speed of the encoder (fp32 exact, int8) against torchgeo's Copernicus-FM ViT-B.

What it measures, in one process, alternating the paths round after round (the order rotates
each round, so no path always runs after the same one):

* ``reference``: ``torchgeo.models.copernicusfm_base()`` (random init, seed 0) in eval mode;
* ``fp32``: our encoder imported from the same state dict (default fused oneDNN path);
* ``int8``: the same imported encoder with ``set_precision("int8")`` (ONNX Runtime trunk).

Input: a batch of synthetic-world Sentinel-2 L1C samples (13 bands, normalised with the
registry statistics) with their metadata, 224 x 224 by default, under ``torch.inference_mode``.
It also records the one-time costs (first call; int8 export + quantisation), the exactness
(max |fp32 - reference| of the pooled features, cosine of int8 to fp32), parameter counts, the
peak RSS of each path in a child process of its own, and the downstream cost of int8: a linear
probe (multi-label logistic regression, L-BFGS) on the synthetic multi-label land-cover task
with fp32 vs int8 features of the same model, scored by macro mAP.

Run from the repository root::

    .venv/bin/python benchmarks/encoder_speed.py --rounds 9 --json benchmarks/encoder_speed.json

The machine may be shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinkingearth.data.sample import collate
from thinkingearth.data.synthetic import SyntheticCopernicus
from thinkingearth.models import import_state_dict
from thinkingearth.models.conventions import hypernet_input
from thinkingearth.models.encoder import Encoder
from thinkingearth.sensors import get_sensor

SENSOR = "sentinel-2-l1c"
PATHS = ("reference", "fp32", "int8")


# ----------------------------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, VNNI, library versions."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    import timm
    import torchgeo

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx512f": "avx512f" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "timm": timm.__version__,
        "torchgeo": torchgeo.__version__,
    }


def reference_model(size: int) -> nn.Module:
    """torchgeo's Copernicus-FM ViT-B, random weights (seed 0), eval mode."""
    from torchgeo.models import copernicusfm_base

    torch.manual_seed(0)
    return copernicusfm_base(img_size=size).eval()


def inputs(batch: int, size: int) -> tuple[Tensor, Tensor, list[str], list[float], list[float]]:
    """A normalised synthetic S2 L1C batch, its ``[B, 4]`` metadata and band descriptions."""
    samples = list(SyntheticCopernicus("none", sensor=SENSOR, n=batch, size=size, seed=3))
    collated = collate(samples)
    bands = list(samples[0]["bands"])
    mean, std = get_sensor(SENSOR).normalisation(bands)
    image = (collated["image"] - torch.from_numpy(mean)[:, None, None]) / torch.from_numpy(std)[
        :, None, None
    ]
    area = (collated["gsd"] * 16 / 1000.0) ** 2
    meta = torch.stack((collated["lon"], collated["lat"], collated["time"], area), 1).float()
    sensor = get_sensor(SENSOR)
    described = [hypernet_input(b, sensor.name, "copernicusfm") for b in sensor.select(bands)]
    wavelengths = [float(d.wavelength) for d in described]
    bandwidths = [float(d.bandwidth) for d in described]  # type: ignore[arg-type]
    return image.float().contiguous(), meta, bands, wavelengths, bandwidths


def build(size: int, cache_dir: Path) -> tuple[nn.Module, Encoder, Encoder, dict[str, float]]:
    """Reference, our fp32 and int8 encoders (same weights) and their one-time build costs."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    reference = reference_model(size)
    timings["reference_build_s"] = time.perf_counter() - start
    state = reference.state_dict()
    start = time.perf_counter()
    fp32 = import_state_dict(state, reference="torchgeo")
    timings["import_s"] = time.perf_counter() - start
    int8 = import_state_dict(state, reference="torchgeo").set_precision("int8", cache_dir=cache_dir)
    timings["int8_build_s"] = int8.prepare_int8()  # export + quantisation + session
    return reference, fp32, int8, timings


def callers(
    reference: nn.Module, fp32: Encoder, int8: Encoder, batch: int, size: int
) -> dict[str, Callable[[], Tensor]]:
    image, meta, bands, wavelengths, bandwidths = inputs(batch, size)
    return {
        "reference": lambda: reference(image, meta, wavelengths=wavelengths, bandwidths=bandwidths),
        "fp32": lambda: fp32(image, bands, sensor=SENSOR, meta=meta),
        "int8": lambda: int8(image, bands, sensor=SENSOR, meta=meta),
    }


# ----------------------------------------------------------------------------------------------
# Memory (one child process per path)
# ----------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def memory_child(path: str, batch: int, size: int) -> None:
    """Print JSON: RSS with the model built, and the peak RSS of two inference calls."""
    with tempfile.TemporaryDirectory() as cache, torch.inference_mode():
        reference = reference_model(size)
        model: Callable[[], Tensor]
        if path == "reference":
            calls = callers(reference, None, None, batch, size)  # type: ignore[arg-type]
        else:
            encoder = import_state_dict(reference.state_dict(), reference="torchgeo", copy=True)
            del reference
            gc.collect()
            if path == "int8":
                encoder.set_precision("int8", cache_dir=cache)
                encoder.prepare_int8()
            calls = callers(None, encoder, encoder, batch, size)  # type: ignore[arg-type]
        model = calls[path]
        build_peak = _status_kb("VmHWM")
        gc.collect()
        rss_ready = _status_kb("VmRSS")
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
        model()
        model()
        print(
            json.dumps(
                {
                    "rss_ready_mb": rss_ready / 1024,
                    "peak_inference_mb": _status_kb("VmHWM") / 1024,
                    "peak_build_mb": build_peak / 1024,
                }
            )
        )


def memory(batch: int, size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in PATHS:
        command = [sys.executable, __file__, "--memory-child", path, "--batch", str(batch)]
        command += ["--size", str(size)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
        out[path] = json.loads(lines[-1]) if lines else {"error": result.stderr[-500:]}
    return out


# ----------------------------------------------------------------------------------------------
# Downstream cost: linear probe, fp32 vs int8 features
# ----------------------------------------------------------------------------------------------


def features(encoder: Encoder, split: str, n: int, size: int) -> tuple[Tensor, Tensor]:
    data = SyntheticCopernicus("multilabel", sensor=SENSOR, split=split, n=n, size=size)  # type: ignore[arg-type]
    mean, std = get_sensor(SENSOR).normalisation(list(data[0]["bands"]))
    mean_t, std_t = torch.from_numpy(mean)[:, None, None], torch.from_numpy(std)[:, None, None]
    bands = list(data[0]["bands"])
    feats, labels = [], []
    with torch.inference_mode():
        for start in range(0, n, 32):
            batch = collate([data[i] for i in range(start, min(n, start + 32))])
            image = ((batch["image"] - mean_t) / std_t).float()
            feats.append(encoder(image, bands, sensor=SENSOR, meta=batch))
            labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def probe_map(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> float:
    """Macro mAP of a multi-label logistic regression (L-BFGS, L2) on standardised features."""
    from torchmetrics.functional.classification import multilabel_average_precision

    x, y = train
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = ((x - mean) / std).double()
    xt = ((test[0] - mean) / std).double()
    classes = y.shape[1]
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight + bias, y.double())
        loss = loss + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)  # type: ignore[arg-type]
    with torch.no_grad():
        scores = xt @ weight + bias
    return float(multilabel_average_precision(scores.float(), test[1].int(), num_labels=classes))


def probe(fp32: Encoder, int8: Encoder, n: int, size: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_train": n, "n_test": n, "size": size}
    cached: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    for name, encoder in (("fp32", fp32), ("int8", int8)):
        cached[name] = {s: features(encoder, s, n, size) for s in ("train", "test")}
        out[f"map_{name}"] = probe_map(cached[name]["train"], cached[name]["test"])
    a, b = cached["fp32"]["test"][0], cached["int8"]["test"][0]
    out["feature_cosine_min"] = float(F.cosine_similarity(a, b).min())
    out["feature_cosine_mean"] = float(F.cosine_similarity(a, b).mean())
    return out


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--probe-n", type=int, default=256, help="probe samples per split")
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--memory-child", choices=PATHS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.size)
        return {}

    result: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine(),
        "load_before": os.getloadavg(),
        "batch": args.batch,
        "size": args.size,
        "bands": 13,
    }
    with tempfile.TemporaryDirectory(prefix="encoder-speed-") as cache:
        reference, fp32, int8, build_times = build(args.size, Path(cache))
        result["one_time_s"] = build_times
        result["params"] = {
            "reference": sum(p.numel() for p in reference.parameters()),
            "ours": sum(p.numel() for p in fp32.parameters()),
            "ours_trunk": sum(p.numel() for p in fp32.blocks.parameters()),
        }
        calls = callers(reference, fp32, int8, args.batch, args.size)
        with torch.inference_mode():
            first: dict[str, float] = {}
            outputs: dict[str, Tensor] = {}
            for name, call in calls.items():
                start = time.perf_counter()
                outputs[name] = call()
                first[name] = time.perf_counter() - start
            result["one_time_s"]["first_call_s"] = first
            result["exactness"] = {
                "fp32_vs_reference_max_abs": float(
                    (outputs["fp32"] - outputs["reference"]).abs().max()
                ),
                "int8_vs_fp32_cosine_min": float(
                    F.cosine_similarity(outputs["int8"], outputs["fp32"]).min()
                ),
                "int8_vs_reference_cosine_min": float(
                    F.cosine_similarity(outputs["int8"], outputs["reference"]).min()
                ),
            }
            print(json.dumps(result["exactness"]), flush=True)
            times: dict[str, list[float]] = {p: [] for p in PATHS}
            for r in range(args.rounds):
                order = PATHS[r % 3 :] + PATHS[: r % 3]
                for name in order:
                    start = time.perf_counter()
                    calls[name]()
                    times[name].append(time.perf_counter() - start)
                print(
                    f"round {r}: " + ", ".join(f"{p} {times[p][-1]:.3f}s" for p in PATHS),
                    flush=True,
                )
        result["seconds_per_batch"] = times
        med = {p: statistics.median(t) for p, t in times.items()}
        result["images_per_s_median"] = {p: args.batch / med[p] for p in PATHS}
        result["speedup"] = {
            p: {
                "ratio_of_medians": med["reference"] / med[p],
                "median_of_round_ratios": statistics.median(
                    a / b for a, b in zip(times["reference"], times[p], strict=True)
                ),
                "ratio_of_best": min(times["reference"]) / min(times[p]),
            }
            for p in ("fp32", "int8")
        }
        result["load_after"] = os.getloadavg()
        if not args.no_probe:
            del reference
            result["probe"] = probe(fp32, int8, args.probe_n, 64)
    if not args.no_memory:
        result["memory"] = memory(args.batch, args.size)
    summary = {
        k: result[k] for k in ("images_per_s_median", "speedup", "load_before", "load_after")
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
