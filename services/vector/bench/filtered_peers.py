#!/usr/bin/env python3
"""hnswlib's filtered search on the data `filtered_bench` wrote, for the
same-run comparison of docs/vector-filtered-benchmark.md.

    python3 -m pip install hnswlib numpy
    python3 filtered_peers.py DIR

DIR holds meta.json ({"n", "dim", "queries", "k", "m", "ef_construction",
"thresholds": [...]}), vectors.f32, queries.f32 (little-endian f32,
row-major), sel.i64 (the filter column, one value per row) and truth-I.i32
(queries*k exact top-k row ids on the rows with sel < thresholds[I]).

hnswlib's filter is a Python callable called per visited node: its cost is
part of what a Python user of hnswlib pays, and it is printed as such.
Prints ONE JSON object on stdout: {"selectivities": [{"threshold", "ef",
"recall", "p50_us"}...]} or {"error": "..."}.
"""

import json
import os
import sys
import time


def main():
    folder = sys.argv[1]
    try:
        import hnswlib
        import numpy as np
    except ImportError as error:
        print(json.dumps({"error": f"hnswlib/numpy not installed: {error}"}))
        return
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    n, dim, nq, k = (int(meta[key]) for key in ("n", "dim", "queries", "k"))
    vectors = np.fromfile(os.path.join(folder, "vectors.f32"), dtype="<f4").reshape(n, dim)
    queries = np.fromfile(os.path.join(folder, "queries.f32"), dtype="<f4").reshape(nq, dim)
    sel = np.fromfile(os.path.join(folder, "sel.i64"), dtype="<i8").tolist()
    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=n, M=int(meta["m"]), ef_construction=int(meta["ef_construction"]), random_seed=42)
    index.set_num_threads(2)
    started = time.perf_counter()
    index.add_items(vectors, np.arange(n))
    print(f"filtered_peers.py: hnswlib built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    index.set_num_threads(1)
    out = []
    for i, threshold in enumerate(meta["thresholds"]):
        truth = np.fromfile(os.path.join(folder, f"truth-{i}.i32"), dtype="<i4").reshape(nq, -1)
        accept = (lambda t: (lambda label: sel[label] < t))(threshold)
        best = None
        for ef in (10, 16, 24, 32, 40, 64, 100, 160, 256, 400, 640, 1000, 1600, 2500, 4000):
            index.set_ef(ef)
            times, found, total = [], 0, 0
            for q in range(nq):
                started = time.perf_counter()
                try:
                    labels, _ = index.knn_query(queries[q : q + 1], k=k, filter=accept)
                    got = set(labels[0].tolist())
                except RuntimeError:
                    # Fewer than k rows found: hnswlib raises.
                    got = set()
                times.append(time.perf_counter() - started)
                expected = set(truth[q].tolist()) - {-1}
                found += len(got & expected)
                total += len(expected)
            recall = found / max(total, 1)
            times.sort()
            best = {"threshold": threshold, "ef": ef, "recall": recall, "p50_us": times[len(times) // 2] * 1e6}
            if recall >= 0.98:
                break
            if times[len(times) // 2] > 0.2:
                break
        print(f"filtered_peers.py: {best}", file=sys.stderr)
        out.append(best)
    print(json.dumps({"selectivities": out}))


if __name__ == "__main__":
    main()
