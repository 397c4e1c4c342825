"""Does pretraining pay? A tiny encoder pretrained for at most a few CPU minutes vs. the same
encoder randomly initialised, on two frozen-encoder probes, over several seeds.

For each seed ``s``:

1. ``random``: the config's encoder initialised with seed ``s`` (exactly the pretraining's start);
2. ``pretrained``: the same initialisation pretrained with the config (seed ``s``: data order,
   augmentations, masks) for at most ``--budget-s`` seconds of wall time (set-up, data
   generation and export included) or the config's ``max_steps``, whichever comes first;
3. both scored by :class:`thinkingearth.pretrain.evaluate.ProbeSuite` (probe seed ``s``): linear-probe
   mAP of multi-label land cover (S2) and frozen-encoder flood change segmentation mIoU (S1), on
   held-out streams of the synthetic world that pretraining never saw.

The verdict is "pays" for a metric when the mean gain exceeds the seed spread, taken as the larger
of the two arms' ranges (max - min over seeds). Results go to ``--out`` (JSON + Markdown table).

Run (2 CPU cores, as recorded in benchmarks/README.md)::

    taskset -c 0,1 .venv/bin/python benchmarks/pretrain_pays.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from thinkingearth.models import load
from thinkingearth.pretrain import load_config, run_pretrain
from thinkingearth.pretrain.evaluate import ProbeSuite
from thinkingearth.pretrain.modules import build_encoder

METRICS = ("multilabel_map", "flood_miou")
#: Seconds of the budget kept for building the run and exporting the encoder.
RESERVE_S = 10.0


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
    except OSError:
        return float("nan")


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "range": max(values) - min(values),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny-synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-s", type=float, default=180.0, help="pretraining wall time cap")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrain_pays"))
    parser.add_argument("--keep-runs", action="store_true", help="keep the runs under OUT/runs")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = _load()
    suite = ProbeSuite()
    t0 = time.perf_counter()
    suite.prepare()
    probe_data_s = time.perf_counter() - t0
    print(f"probe data ready in {probe_data_s:.1f} s", flush=True)

    base = load_config(args.config)
    runs_dir = args.out / "runs" if args.keep_runs else Path(tempfile.mkdtemp(prefix="pays-"))
    runs = []
    for seed in args.seeds:
        config = dataclasses.replace(
            base,
            seed=seed,
            trainer=dataclasses.replace(
                base.trainer,
                # Lightning's timer starts with training; keep set-up and export inside the budget.
                max_time_s=args.budget_s - RESERVE_S,
                progress_bar=False,
                threads=args.threads,
            ),
        )
        random_scores = suite.evaluate(build_encoder(config.encoder, seed), seed)
        print(f"seed {seed} random     {random_scores}", flush=True)
        result = run_pretrain(config, runs_dir / f"seed{seed}", log=None)
        assert result.encoder is not None
        pretrained_scores = suite.evaluate(load(result.encoder), seed)
        print(
            f"seed {seed} pretrained {pretrained_scores} ({result.steps} steps, "
            f"{result.seconds:.1f} s, final loss {result.final_loss:.4f})",
            flush=True,
        )
        runs.append(
            {
                "seed": seed,
                "random": random_scores,
                "pretrained": pretrained_scores,
                "pretrain_steps": result.steps,
                "pretrain_seconds": round(result.seconds, 1),
                "final_loss": result.final_loss,
            }
        )

    verdicts = {}
    for metric in METRICS:
        rand = _summary([r["random"][metric] for r in runs])
        pre = _summary([r["pretrained"][metric] for r in runs])
        margin = pre["mean"] - rand["mean"]
        spread = max(rand["range"], pre["range"])
        verdicts[metric] = {
            "random": rand,
            "pretrained": pre,
            "margin": margin,
            "spread": spread,
            "pays": margin > spread,
        }
    report = {
        "command": "taskset -c 0,1 .venv/bin/python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "config": base.to_dict(),
        "budget_s": args.budget_s,
        "machine": {
            "cpu": _cpu_model(),
            "cores_visible": os.cpu_count(),
            "cores_allowed": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "torch_threads": torch.get_num_threads(),
            "gpu_used": False,
            "load_average_start": load_start,
            "load_average_end": _load(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "probe": {
            "size": suite.size,
            "n_train": suite.n_train,
            "n_test": suite.n_test,
            "world_seed": suite.world_seed,
            "steps": suite.steps,
            "data_seconds": round(probe_data_s, 1),
        },
        "runs": runs,
        "verdicts": verdicts,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep_runs:
        shutil.rmtree(runs_dir, ignore_errors=True)
    table = markdown_table(report)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


def markdown_table(report: dict) -> str:
    """The result as a Markdown table (used by the README and ``make demo``)."""
    lines = [
        "| metric | random init (mean ± std) | pretrained (mean ± std) | margin | seed spread | pays |",
        "|---|---|---|---|---|---|",
    ]
    names = {"multilabel_map": "land-cover linear probe mAP", "flood_miou": "flood change mIoU"}
    for metric, v in report["verdicts"].items():
        lines.append(
            f"| {names.get(metric, metric)} | {v['random']['mean']:.3f} ± {v['random']['std']:.3f} "
            f"| {v['pretrained']['mean']:.3f} ± {v['pretrained']['std']:.3f} "
            f"| {v['margin']:+.3f} | {v['spread']:.3f} | {'yes' if v['pays'] else 'no'} |"
        )
    lines += ["", "| seed | steps | seconds | mAP random / pretrained | mIoU random / pretrained |"]
    lines += ["|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(
            f"| {r['seed']} | {r['pretrain_steps']} | {r['pretrain_seconds']} "
            f"| {r['random']['multilabel_map']:.3f} / {r['pretrained']['multilabel_map']:.3f} "
            f"| {r['random']['flood_miou']:.3f} / {r['pretrained']['flood_miou']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
