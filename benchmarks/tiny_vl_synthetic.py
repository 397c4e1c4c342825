"""Is the shipped ``tiny-vl-synthetic`` model usable? Train it, then score it on held-out scenes.

Trains ``thinkingearth pretrain --config tiny-vl-synthetic`` (unless ``--run`` names a finished
run), timing wall and CPU seconds, then measures on ``--n`` scenes of the synthetic world's
``test`` stream (never trained on), per sensor (Sentinel-2 L2A, Sentinel-1 GRD):

* text-to-image retrieval: each scene's caption ranks the ``n`` images; Recall@1/5/10 against
  chance ``k / n``;
* zero-shot dominant land cover: the image's nearest class among CLIP prompt ensembles of the
  world's nine class names (:func:`thinkingearth.vl.prompts.class_embeddings`), against the
  majority-class rate and chance ``1/9``.

Writes a Markdown table (``--md``) and JSON (``--json``).

    .venv/bin/python benchmarks/tiny_vl_synthetic.py --out /tmp/tiny-vl --md benchmarks/tiny_vl_synthetic.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from thinkingearth.data.synthetic import LANDCOVER_CLASSES, SyntheticCopernicus
from thinkingearth.vl.model import load_vl_model
from thinkingearth.vl.prompts import class_embeddings

SENSORS = ("sentinel-2-l2a", "sentinel-1-grd")


def score(model: Any, sensor: str, n: int, size: int) -> dict[str, float]:
    """Retrieval and zero-shot scores of ``model`` on ``n`` held-out scenes of ``sensor``."""
    data = SyntheticCopernicus("landcover", sensor, "test", n=n, size=size, seed=0)
    samples = [data[i] for i in range(n)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        images = model.encode_samples(samples)
        texts = model.encode_text([s["caption"] for s in samples])
        heads = class_embeddings(model, LANDCOVER_CLASSES)
    similarity = texts @ images.T
    rank = (similarity > similarity.diag()[:, None]).sum(dim=1)
    dominant = torch.stack(
        [torch.bincount(s["mask"].flatten(), minlength=len(LANDCOVER_CLASSES)) for s in samples]
    ).argmax(dim=1)
    predicted = (images @ heads.T).argmax(dim=1)
    out = {f"recall@{k}": float((rank < k).float().mean()) for k in (1, 5, 10)}
    out.update({f"chance@{k}": k / n for k in (1, 5, 10)})
    out["zero_shot_accuracy"] = float((predicted == dominant).float().mean())
    out["majority_rate"] = float(torch.bincount(dominant).max()) / n
    out["chance_zero_shot"] = 1 / len(LANDCOVER_CLASSES)
    return out


def main() -> None:
    """Train (or read) the run, score it, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tiny-vl"), help="run folder")
    parser.add_argument("--run", type=Path, help="score this finished run instead of training")
    parser.add_argument("--n", type=int, default=200, help="held-out scenes per sensor")
    parser.add_argument("--md", type=Path, help="write a Markdown table here")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    timing: dict[str, Any] = {}
    run = args.run
    if run is None:
        from thinkingearth.pretrain import load_config, run_pretrain

        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        run_pretrain(load_config("tiny-vl-synthetic"), args.out, overwrite=True, log=None)
        end = resource.getrusage(resource.RUSAGE_SELF)
        timing = {
            "wall_s": round(time.perf_counter() - start, 1),
            "cpu_s": round(end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime, 1),
            "load_average_1min_at_end": os.getloadavg()[0],
            "cores": os.cpu_count(),
        }
        run = args.out
    summary = json.loads((run / "summary.json").read_text())
    model = load_vl_model(run)
    size = int(model.encoder.config.img_size)
    results = {
        "run": str(run),
        "steps": summary["steps"],
        "train_seconds": summary["seconds"],
        **timing,
        "n": args.n,
        "sensors": {s: score(model, s, args.n, size) for s in SENSORS},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.md:
        lines = [
            f"# tiny-vl-synthetic: held-out scores ({args.n} test scenes per sensor)",
            "",
            "| sensor | R@1 | R@5 | R@10 | chance R@5 | zero-shot dominant class | majority | chance |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for sensor, s in results["sensors"].items():
            lines.append(
                f"| {sensor} | {s['recall@1']:.3f} | {s['recall@5']:.3f} | {s['recall@10']:.3f} "
                f"| {s['chance@5']:.3f} | {s['zero_shot_accuracy']:.3f} | {s['majority_rate']:.3f} "
                f"| {s['chance_zero_shot']:.3f} |"
            )
        lines += [
            "",
            f"Training: {summary['steps']} steps, {summary['seconds']} s (run's summary).",
        ]
        if timing:
            lines.append(f"Timing: {json.dumps(timing)}")
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
