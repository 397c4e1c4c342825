"""Time and test metrics of ``thinkingearth finetune`` with the shipped synthetic configs.

Runs each config as a user would (the CLI's code path, :func:`thinkingearth.tasks.finetune`),
in a fresh output folder, and writes a markdown table: wall time (data generation, training,
validation, test, report), steps, the step of the kept weights, and the test metrics from
``metrics.json``. The machine line (CPU, cores, torch threads, load average before and after)
says how busy the machine was.

Command (repository root)::

    .venv/bin/python benchmarks/finetune_synthetic.py --out /tmp/finetune-bench \\
        --markdown benchmarks/finetune_synthetic.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from thinkingearth.tasks import finetune

CONFIGS = ("synthetic-flood", "synthetic-landcover")
SHOWN = {
    "synthetic-flood": ("miou", "water_f1", "f1/flood", "iou/flood", "oa"),
    "synthetic-landcover": ("miou", "oa", "f1_macro"),
}


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    lines = [
        "# `thinkingearth finetune` on the synthetic world",
        "",
        "Command: `.venv/bin/python benchmarks/finetune_synthetic.py --out /tmp/finetune-bench "
        "--markdown benchmarks/finetune_synthetic.md`",
        "",
        "Each row is the code path of `thinkingearth finetune --config NAME --out DIR` "
        f"(the Python API behind it), recorded {time.strftime('%Y-%m-%d')}.",
        "",
        f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; load average before: {_load()}",
        "",
        "| config | wall time | steps | kept weights of step | test metrics |",
        "|---|---|---|---|---|",
    ]
    for name in args.configs.split(","):
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        result = finetune(name, out, log=None)
        seconds = time.perf_counter() - start
        record = json.loads(result.metrics_path.read_text())
        shown = ", ".join(
            f"{key} {record[key]:.3f}" for key in SHOWN.get(name, ("miou",)) if key in record
        )
        row = f"| {name} | {seconds:.0f} s | {result.steps} | {result.best_step} | {shown} |"
        print(row, flush=True)
        lines.append(row)
    lines += ["", f"Load average after: {_load()}", ""]
    if args.markdown:
        args.markdown.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
