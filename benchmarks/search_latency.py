"""Approximate-nearest-neighbour libraries for the embedding index, measured at 1 M rows.

Which library backs ``thinkingearth search`` (:mod:`thinkingearth.vl.index`): faiss-cpu
(HNSW, flat vectors), usearch (HNSW, half-precision vectors, memory-mapped on open) and LanceDB
(IVF-PQ on a Lance table with a refine step) are each given the same vectors and queries, and
measured on:

* **build**: seconds to build the index from vectors in memory and save it to disk;
* **open**: seconds to open the saved index in a fresh object (what every ``search`` pays);
* **query**: latency of one query at a time (``k = 10``, one thread: a CLI query is one
  vector), p50 / p95 / max over the queries, after a warm-up;
* **recall@10** against exact inner-product search (NumPy, the same vectors);
* **disk**: bytes of the saved index; **install**: bytes the package (and its own compiled
  dependencies, named) add to a virtual environment, from the installed files' sizes.

The vectors are what the index holds: L2-normalised float32 of the text width (384). Uniform
random vectors in 384 dimensions have no neighbourhood structure (every point is about equally far
from every other), which no embedding space has and which makes every ANN method look worse than
it is on real data; so the vectors are drawn from a mixture of 4096 Gaussian clusters (centres
uniform on the sphere, within-cluster spread chosen so that the nearest neighbours are mostly but
not only of the same cluster), and the queries are fresh draws from the same mixture, not rows of
the index. Exact search in NumPy is measured too (the baseline every ANN index must beat).

Run from the repository root (about 10 minutes on 2 cores at 1 M rows)::

    .venv/bin/python benchmarks/search_latency.py --rows 1000000 --json benchmarks/search_latency.json

The machine may be shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
K = 10


def make_vectors(rows: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and queries from one mixture of Gaussian clusters on the unit sphere (module docs)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = 0.6 / np.sqrt(DIM)  # noise norm ~0.6 against a unit centre

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            labels = rng.integers(0, len(centres), m)
            block = centres[labels] + spread * rng.standard_normal((m, DIM)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + m] = block
        return out

    return draw(rows), draw(queries)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the ``k`` largest inner products per query, best first."""
    scores = queries @ data.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean share of the true top-k among the top-k found."""
    return float(
        np.mean(
            [len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]
        )
    )


def latencies(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[list[float], list[np.ndarray]]:
    """Milliseconds per query (one at a time) and the ids each returned."""
    for q in queries[:10]:
        search(q)  # warm-up: page in, lazy initialisation
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        ids = search(q)
        times.append((time.perf_counter() - start) * 1000.0)
        found.append(np.asarray(ids))
    return times, found


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def install_bytes(*distributions: str) -> dict[str, int]:
    """Bytes of the installed files of each distribution (its RECORD)."""
    sizes = {}
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for file in dist.files or ():
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
        sizes[name] = total
    return sizes


# --- the libraries -------------------------------------------------------------------------------


def bench_faiss(data: np.ndarray, queries: np.ndarray, folder: Path) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(data)
    path = folder / "faiss.index"
    faiss.write_index(index, str(path))
    build = time.perf_counter() - start
    del index
    gc.collect()
    start = time.perf_counter()
    index = faiss.read_index(str(path))
    opened = time.perf_counter() - start
    index.hnsw.efSearch = 64
    faiss.omp_set_num_threads(1)

    def search(q: np.ndarray) -> np.ndarray:
        _, ids = index.search(q[None], K)
        return ids[0]

    times, found = latencies(search, queries)
    return {
        "library": f"faiss-cpu {faiss.__version__}",
        "index": "IndexHNSWFlat M=32 efConstruction=40 efSearch=64, inner product, f32",
        "build_s": build,
        "open_s": opened,
        "times_ms": times,
        "found": found,
        "disk_bytes": folder_bytes(path),
        "install": install_bytes("faiss-cpu"),
    }


def bench_usearch(data: np.ndarray, queries: np.ndarray, folder: Path) -> dict[str, Any]:
    import usearch
    from usearch.index import Index

    start = time.perf_counter()
    index = Index(ndim=DIM, metric="ip", dtype="f16", connectivity=16, expansion_add=64)
    index.add(np.arange(len(data), dtype=np.uint64), data, threads=os.cpu_count() or 1)
    path = folder / "usearch.index"
    index.save(str(path))
    build = time.perf_counter() - start
    del index
    gc.collect()
    start = time.perf_counter()
    index = Index.restore(str(path), view=True)  # memory-mapped: no copy into RAM
    opened = time.perf_counter() - start
    index.expansion_search = 64

    def search(q: np.ndarray) -> np.ndarray:
        return index.search(q, K, threads=1).keys

    times, found = latencies(search, queries)
    return {
        "library": f"usearch {usearch.VERSION if hasattr(usearch, 'VERSION') else metadata.version('usearch')}",
        "index": "HNSW connectivity=16 expansion_add=64 expansion_search=64, inner product, f16, "
        "opened as a memory-mapped view",
        "build_s": build,
        "open_s": opened,
        "times_ms": times,
        "found": found,
        "disk_bytes": folder_bytes(path),
        "install": install_bytes("usearch", "numkong", "simsimd"),
    }


def bench_lancedb(data: np.ndarray, queries: np.ndarray, folder: Path) -> dict[str, Any]:
    import lancedb
    import pyarrow as pa

    start = time.perf_counter()
    db = lancedb.connect(str(folder / "lance"))
    flat = pa.array(data.reshape(-1), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, DIM)
    table = db.create_table(
        "rows", pa.table({"id": pa.array(np.arange(len(data), dtype=np.int64)), "vector": vectors})
    )
    partitions = max(1, int(np.sqrt(len(data))))
    table.create_index(
        metric="dot", index_type="IVF_PQ", num_partitions=partitions, num_sub_vectors=48
    )
    build = time.perf_counter() - start
    del table, db
    gc.collect()
    start = time.perf_counter()
    db = lancedb.connect(str(folder / "lance"))
    table = db.open_table("rows")
    opened = time.perf_counter() - start

    def search(q: np.ndarray) -> np.ndarray:
        hits = (
            table.search(q)
            .distance_type("dot")
            .nprobes(20)
            .refine_factor(10)
            .limit(K)
            .select(["id", "_distance"])
            .to_arrow()
        )
        return hits.column("id").to_numpy()

    times, found = latencies(search, queries)
    return {
        "library": f"lancedb {lancedb.__version__}",
        "index": f"IVF_PQ partitions={partitions} sub_vectors=48 nprobes=20 refine_factor=10, dot",
        "build_s": build,
        "open_s": opened,
        "times_ms": times,
        "found": found,
        "disk_bytes": folder_bytes(folder / "lance"),
        "install": install_bytes("lancedb", "pylance", "lance-namespace"),
    }


def bench_numpy(data: np.ndarray, queries: np.ndarray, folder: Path) -> dict[str, Any]:
    def search(q: np.ndarray) -> np.ndarray:
        scores = data @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    times, found = latencies(search, queries[:50])
    return {
        "library": f"numpy {np.__version__}",
        "index": "exact: one matrix-vector product over every row, f32",
        "build_s": 0.0,
        "open_s": float("nan"),
        "times_ms": times,
        "found": found,
        "disk_bytes": data.nbytes,
        "install": {},
    }


def bench_thinkingearth(data: np.ndarray, queries: np.ndarray, folder: Path) -> dict[str, Any]:
    """The product path: an index written by ``thinkingearth.vl.index.write_index`` (GeoParquet
    table + usearch ANN + manifest), opened with ``open_index`` and searched with
    ``EmbeddingIndex.search``: the ANN query plus reading the hits' rows (id, sensor, time,
    footprint, thumbnail) from the table. Rows get footprints on a 0.1° grid over Europe, one of
    two sensors and a date, so the filters have something to filter; their latencies are
    recorded too (``filtered_ms_p50``)."""
    from thinkingearth.vl.index import Filters, IndexRows, open_index, write_index

    n = len(data)
    rows = IndexRows()
    rows.ids = [f"row{i}" for i in range(n)]
    rows.keys = [f"bench:{i}" for i in range(n)]
    rows.sources = ["bench"] * n
    rows.sensors = ["sentinel-2-l2a" if i % 2 else "sentinel-1-grd" for i in range(n)]
    rows.times = [18_000.0 + (i % 2000) for i in range(n)]
    lons = -10.0 + (np.arange(n) % 400) * 0.1
    lats = 35.0 + (np.arange(n) // 400 % 300) * 0.1
    rows.footprints = [
        [(x, y), (x + 0.05, y), (x + 0.05, y + 0.05), (x, y + 0.05), (x, y)]
        for x, y in zip(lons.tolist(), lats.tolist(), strict=True)
    ]
    rows.thumbnails = [""] * n
    rows.embeddings = list(data)
    index_folder = folder / "index"
    index_folder.mkdir()
    start = time.perf_counter()
    write_index(index_folder, rows, model_sha256="0" * 64, model_path="bench", dim=DIM)
    build = time.perf_counter() - start
    del rows
    gc.collect()
    start = time.perf_counter()
    index = open_index(index_folder)
    opened = time.perf_counter() - start

    def search(q: np.ndarray) -> np.ndarray:
        return np.array([h.row for h in index.search(q, K)])

    times, found = latencies(search, queries)
    filtered = {}
    for name, filters in {
        "sensor": Filters(sensor="sentinel-2-l2a"),
        "bbox_1pct": Filters(bbox=(0.0, 45.0, 4.0, 47.5)),
        "time_half": Filters(after=18_000.0, before=18_999.0),
    }.items():
        start = time.perf_counter()
        index._mask(filters)  # first use reads the filter columns once per process
        first = time.perf_counter() - start
        ms, _ = latencies(
            lambda q, f=filters: np.array([h.row for h in index.search(q, K, f)]), queries[:50]
        )
        filtered[name] = {
            "first_call_extra_s": first,
            "p50_ms": statistics.median(ms),
            "p95_ms": float(np.percentile(ms, 95)),
        }
    return {
        "library": f"thinkingearth.vl.index (usearch {metadata.version('usearch')})",
        "index": "write_index: GeoParquet table + usearch HNSW f16 (connectivity 16, "
        "expansion_add 64, expansion_search 64) + manifest; search = ANN + the hits' rows",
        "build_s": build,
        "open_s": opened,
        "times_ms": times,
        "found": found,
        "disk_bytes": folder_bytes(index_folder),
        "install": install_bytes("usearch", "numkong", "geopandas", "shapely", "pyogrio"),
        "filtered": filtered,
    }


LIBRARIES = {
    "thinkingearth": bench_thinkingearth,
    "numpy": bench_numpy,
    "usearch": bench_usearch,
    "faiss": bench_faiss,
    "lancedb": bench_lancedb,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--json", type=Path, default=None, help="Write the results here.")
    args = parser.parse_args()
    load_before = os.getloadavg()
    data, queries = make_vectors(args.rows, args.queries)
    start = time.perf_counter()
    truth = exact_top_k(data, queries)
    exact_batch_s = time.perf_counter() - start
    results = []
    for name in args.libraries.split(","):
        with tempfile.TemporaryDirectory(prefix=f"search-{name}-") as tmp:
            print(f"[{name}] ...", flush=True)
            row = LIBRARIES[name](data, queries, Path(tmp))
        times = row.pop("times_ms")
        found = row.pop("found")
        row.update(
            name=name,
            recall_at_10=recall(found, truth[: len(found)]),
            query_ms_p50=statistics.median(times),
            query_ms_p95=float(np.percentile(times, 95)),
            query_ms_max=max(times),
            queries=len(times),
        )
        print(json.dumps(row), flush=True)
        results.append(row)
        gc.collect()
    report = {
        "command": "python benchmarks/search_latency.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "rows": args.rows,
        "dim": DIM,
        "k": K,
        "queries": args.queries,
        "exact_batch_s_for_all_queries": exact_batch_s,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "results": results,
    }
    text = json.dumps(report, indent=2, default=float)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
