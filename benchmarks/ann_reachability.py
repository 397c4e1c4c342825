"""What the reachability check of the embedding index costs, and what it finds.

A multi-threaded HNSW build (usearch) leaves a few rows that no search reaches; the index finds
them by searching every row's own vector once after the build and scores them exactly in every
search (``thinkingearth.vl.index._build_ann``). This measures, side by side in one run, the build
alone, the check, and how many rows it lists, for builds on 1 and on all threads.

Run (recorded in ``ann_reachability.md``)::

    .venv/bin/python benchmarks/ann_reachability.py --rows 100000 --builds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from search_latency import make_vectors

from thinkingearth.vl import index as vl_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    data, _ = make_vectors(args.rows, 1)
    results = []
    for threads in (1, os.cpu_count() or 1):
        for build in range(args.builds):
            path = f"/tmp/ann_reach_{os.getpid()}.usearch"
            start = time.perf_counter()
            unreached = vl_index._build_ann(data, __import__("pathlib").Path(path), threads)
            total = time.perf_counter() - start
            # the build alone, timed again without the check, for the ratio
            from usearch.index import Index

            graph = Index(
                ndim=data.shape[1], metric="ip", dtype="f16", connectivity=16, expansion_add=64
            )
            start = time.perf_counter()
            graph.add(np.arange(len(data), dtype=np.uint64), data, threads=threads)
            build_only = time.perf_counter() - start
            os.unlink(path)
            row = {
                "threads": threads,
                "build": build,
                "build_and_check_s": round(total, 2),
                "build_only_s": round(build_only, 2),
                "unreached": len(unreached),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "rows": args.rows,
        "dim": int(data.shape[1]),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "load_average": os.getloadavg(),
        "runs": results,
    }
    with open("benchmarks/ann_reachability.json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
