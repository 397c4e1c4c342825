"""Open cost and resident memory of a saved ANN index in a fresh process (what each `search` pays).

usearch (HNSW, f16, opened as a memory-mapped view) against faiss-cpu (IndexHNSWFlat, f32,
``read_index``), the settings of ``search_latency.py``, built one after the other on the same
vectors (so their build times compare), then each opened twice in a new process that runs one
query; ``rss_mb_added`` is the process's resident memory after open + query minus before (the
library's import included). Run from the repository root::

    .venv/bin/python benchmarks/search_open_memory.py build 200000 FOLDER
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
if sys.argv[1] == "build":
    from search_latency import make_vectors

    n = int(sys.argv[2])
    folder = Path(sys.argv[3])
    data, q = make_vectors(n, 20)
    np.save(folder / "q.npy", q)
    import faiss
    from usearch.index import Index

    t = time.perf_counter()
    u = Index(ndim=384, metric="ip", dtype="f16", connectivity=16, expansion_add=64)
    u.add(np.arange(n, dtype=np.uint64), data, threads=2)
    u.save(str(folder / "u.index"))
    print("usearch build", time.perf_counter() - t, flush=True)
    t = time.perf_counter()
    f = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
    f.hnsw.efConstruction = 40
    f.add(data)
    faiss.write_index(f, str(folder / "f.index"))
    print("faiss build", time.perf_counter() - t, flush=True)
    for lib in ("usearch", "faiss"):
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, __file__, lib, str(folder)], capture_output=True, text=True
            )
            print(out.stdout.strip(), out.stderr.strip()[-300:], flush=True)
else:
    folder = Path(sys.argv[2])
    q = np.load(folder / "q.npy")

    def vmrss() -> int:
        text = Path("/proc/self/status").read_text()
        return int(next(x for x in text.splitlines() if x.startswith("VmRSS:")).split()[1])

    before = vmrss()
    t = time.perf_counter()
    if sys.argv[1] == "usearch":
        from usearch.index import Index

        idx = Index.restore(str(folder / "u.index"), view=True)
        opened = time.perf_counter() - t
        r = idx.search(q[0], 10)
    else:
        import faiss

        idx = faiss.read_index(str(folder / "f.index"))
        opened = time.perf_counter() - t
        idx.search(q[:1], 10)
    total = time.perf_counter() - t
    after = vmrss()
    print(
        json.dumps(
            {
                "lib": sys.argv[1],
                "open_s": round(opened, 3),
                "open_and_first_query_s": round(total, 3),
                "rss_mb_added": round((after - before) / 1024, 1),
            }
        )
    )
