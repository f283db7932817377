#!/usr/bin/env python3
"""Peer indexes for the vector benchmark: hnswlib and FAISS (HNSW and exact
flat), measured on the very data and ground truth that the Rust benchmark
wrote, so that they land in the same run as our index.

    python3 -m pip install hnswlib faiss-cpu numpy
    python3 peers.py DIR [--threads 2] [--ef 10,20,30,50,100] [--m 16]
                         [--ef-construction 80] [--warmup 20]
                         [--skip-hnswlib] [--skip-faiss-hnsw] [--skip-faiss-flat]
                         [--save | --search-only]

DIR holds meta.json ({"n", "dim", "queries", "k", "metric": "dot"}),
vectors.f32 (n*dim little-endian f32, row-major), queries.f32
(queries*dim f32) and truth.i32 (queries*k little-endian i32: the exact
top-k row indices per query, nearest first).

--save writes the built HNSW indexes into DIR (hnswlib.bin, faiss_hnsw.index);
a later call with --search-only reads them back and runs only the
single-query sweep, so the Rust benchmark can alternate rounds of ours and
theirs and keep each library's best round (this VM's run-to-run noise is
larger than the differences being measured).

Prints ONE JSON object on stdout and nothing else (logs go to stderr; the
native libraries' stdout is sent to stderr as well). A peer that cannot be
imported or fails prints {"error": "..."} in its place, so the caller can go
on. The exit code is non-zero only when the input cannot be read.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def log(*args):
    print("peers.py:", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- input


def load(folder):
    import numpy as np

    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    n, dim, nq, k = (int(meta[key]) for key in ("n", "dim", "queries", "k"))
    metric = meta.get("metric", "dot")
    if metric not in ("dot", "ip", "cosine"):
        raise ValueError(f"metric {metric!r} is not supported (expected 'dot')")

    def read(name, dtype, rows, cols):
        data = np.fromfile(os.path.join(folder, name), dtype=dtype)
        if data.size != rows * cols:
            raise ValueError(f"{name}: {data.size} values, expected {rows}*{cols}")
        # Native-endian, C-contiguous: what both libraries want without a copy.
        return np.ascontiguousarray(data.reshape(rows, cols), dtype=dtype.newbyteorder("="))

    vectors = read("vectors.f32", np.dtype("<f4"), n, dim)
    queries = read("queries.f32", np.dtype("<f4"), nq, dim)
    truth = read("truth.i32", np.dtype("<i4"), nq, k)
    return meta, n, dim, nq, k, vectors, queries, truth


def recall(found, truth):
    """Mean over queries of |found ∩ truth| / k (found may hold -1 padding)."""
    import numpy as np

    found = np.asarray(found, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    k = truth.shape[1]
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def summary(ns):
    """p50/p99/mean of per-call latencies in nanoseconds, reported in µs."""
    import numpy as np

    us = np.asarray(ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "mean_us": round(float(us.mean()), 2),
    }


def one_at_a_time(search, rows, k):
    """Time search(row, k) for each query row; returns (latencies_ns, labels)."""
    import numpy as np

    clock = time.perf_counter_ns
    latencies = [0] * len(rows)
    labels = np.full((len(rows), k), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        start = clock()
        found = search(row, k)
        latencies[i] = clock() - start
        got = np.asarray(found).reshape(-1)[:k]
        labels[i, : got.size] = got
    return latencies, labels


def batch_qps(search_all, queries, k, min_repeats=3, max_repeats=50, min_seconds=0.5):
    """Throughput of one call over all queries at once: the best of at least
    `min_repeats` calls, repeated until `min_seconds` have gone by (so that a
    small query set is not measured off a single scheduler slice)."""
    best = float("inf")
    began = time.perf_counter()
    for i in range(max_repeats):
        start = time.perf_counter()
        search_all(queries, k)
        end = time.perf_counter()
        best = min(best, end - start)
        if i + 1 >= min_repeats and end - began >= min_seconds:
            break
    return round(len(queries) / best, 1)


def call_floor_us(make, dim, k, search, calls=2000):
    """p50 µs of one single-query call on a 16-vector index of the same dim:
    the Python + binding floor that every single-query figure includes."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((16, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = make(x)
    kk = min(k, 16)
    rows = [x[i % 16 : i % 16 + 1] for i in range(calls)]
    one_at_a_time(lambda row, k_: search(index, row, k_), rows[:200], kk)
    latencies, _ = one_at_a_time(lambda row, k_: search(index, row, k_), rows, kk)
    return summary(latencies)["p50_us"]


def sweep_only(args, set_ef, search_one, one_thread, rows, k, truth):
    """The single-query sweep alone (one thread, each ef): a --search-only round."""
    one_thread()
    out = []
    for ef in args.ef:
        set_ef(max(ef, k))
        one_at_a_time(search_one, rows[: args.warmup], k)
        latencies, labels = one_at_a_time(search_one, rows, k)
        entry = {"ef": ef, "ef_effective": max(ef, k), "recall": round(recall(labels, truth), 5)}
        entry.update(summary(latencies))
        out.append(entry)
    return out


# ---------------------------------------------------------------- peers


def run_hnswlib(args, n, dim, k, vectors, queries, truth, rows):
    import numpy as np
    import hnswlib

    saved = os.path.join(args.dir, "hnswlib.bin")
    index = hnswlib.Index(space="ip", dim=dim)
    if args.search_only:
        index.load_index(saved, max_elements=n)
        return {"search": sweep_only(args, index.set_ef, lambda row, kk: index.knn_query(row, kk)[0],
                                     lambda: index.set_num_threads(1), rows, k, truth)}
    index.init_index(max_elements=n, M=args.m, ef_construction=args.ef_construction,
                     random_seed=100)
    index.set_num_threads(args.threads)
    start = time.perf_counter()
    index.add_items(vectors, np.arange(n, dtype=np.int64))
    build_s = time.perf_counter() - start
    log(f"hnswlib: built {n} in {build_s:.2f} s")

    with tempfile.TemporaryDirectory() as folder:
        path = saved if args.save else os.path.join(folder, "index.bin")
        index.save_index(path)
        index_bytes = os.path.getsize(path)

    warm = rows[: args.warmup]
    search_one = lambda row, kk: index.knn_query(row, kk)[0]  # noqa: E731
    out = {"build_s": round(build_s, 4), "index_bytes": index_bytes,
           "batch_qps": {}, "search": []}
    for ef in args.ef:
        index.set_ef(ef)  # hnswlib searches with max(ef, k)
        index.set_num_threads(1)
        one_at_a_time(search_one, warm, k)
        latencies, labels = one_at_a_time(search_one, rows, k)
        entry = {"ef": ef, "ef_effective": max(ef, k), "recall": round(recall(labels, truth), 5)}
        entry.update(summary(latencies))
        out["search"].append(entry)
        index.set_num_threads(args.threads)
        index.knn_query(queries[: args.warmup], k)
        out["batch_qps"][str(ef)] = batch_qps(lambda q, kk: index.knn_query(q, kk), queries, k)
        log(f"hnswlib: ef={ef} {entry} batch_qps={out['batch_qps'][str(ef)]}")

    def tiny(x):
        small = hnswlib.Index(space="ip", dim=dim)
        small.init_index(max_elements=len(x), M=args.m, ef_construction=args.ef_construction)
        small.add_items(x)
        small.set_num_threads(1)
        return small

    out["call_floor_us"] = call_floor_us(tiny, dim, k, lambda ix, row, kk: ix.knn_query(row, kk))
    return out


def run_faiss_hnsw(args, n, dim, k, vectors, queries, truth, rows):
    import faiss

    saved = os.path.join(args.dir, "faiss_hnsw.index")
    if args.search_only:
        index = faiss.read_index(saved)

        def set_ef(ef):
            index.hnsw.efSearch = ef

        return {"search": sweep_only(args, set_ef, lambda row, kk: index.search(row, kk)[1],
                                     lambda: faiss.omp_set_num_threads(1), rows, k, truth)}
    faiss.omp_set_num_threads(args.threads)
    index = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    start = time.perf_counter()
    index.add(vectors)
    build_s = time.perf_counter() - start
    log(f"faiss_hnsw: built {n} in {build_s:.2f} s")
    index_bytes = int(faiss.serialize_index(index).nbytes)
    if args.save:
        faiss.write_index(index, saved)

    warm = rows[: args.warmup]
    search_one = lambda row, kk: index.search(row, kk)[1]  # noqa: E731
    out = {"build_s": round(build_s, 4), "index_bytes": index_bytes,
           "batch_qps": {}, "search": []}
    for ef in args.ef:
        index.hnsw.efSearch = max(ef, k)
        faiss.omp_set_num_threads(1)
        one_at_a_time(search_one, warm, k)
        latencies, labels = one_at_a_time(search_one, rows, k)
        entry = {"ef": ef, "ef_effective": max(ef, k), "recall": round(recall(labels, truth), 5)}
        entry.update(summary(latencies))
        out["search"].append(entry)
        faiss.omp_set_num_threads(args.threads)
        index.search(queries[: args.warmup], k)
        out["batch_qps"][str(ef)] = batch_qps(lambda q, kk: index.search(q, kk), queries, k)
        log(f"faiss_hnsw: ef={ef} {entry} batch_qps={out['batch_qps'][str(ef)]}")

    def tiny(x):
        small = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
        small.add(x)
        return small

    faiss.omp_set_num_threads(1)
    out["call_floor_us"] = call_floor_us(tiny, dim, k, lambda ix, row, kk: ix.search(row, kk))
    return out


def run_faiss_flat(args, n, dim, k, vectors, queries, truth, rows):
    import faiss

    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    index_bytes = int(vectors.nbytes)
    warm = rows[: args.warmup]
    search_one = lambda row, kk: index.search(row, kk)[1]  # noqa: E731
    out = {"index_bytes": index_bytes}

    faiss.omp_set_num_threads(1)
    one_at_a_time(search_one, warm, k)
    latencies, labels = one_at_a_time(search_one, rows, k)
    s = summary(latencies)
    out.update(p50_us_1thread=s["p50_us"], p99_us_1thread=s["p99_us"],
               mean_us_1thread=s["mean_us"], recall=round(recall(labels, truth), 5))

    faiss.omp_set_num_threads(args.threads)
    one_at_a_time(search_one, warm, k)
    latencies, _ = one_at_a_time(search_one, rows, k)
    s = summary(latencies)
    out.update(p50_us_threads=s["p50_us"], p99_us_threads=s["p99_us"],
               mean_us_threads=s["mean_us"])
    index.search(queries[: args.warmup], k)
    out["batch_qps"] = batch_qps(lambda q, kk: index.search(q, kk), queries, k)
    log(f"faiss_flat: {out}")
    return out


# ---------------------------------------------------------------- main


def versions():
    from importlib import metadata

    found = {}
    for module, dist in (("hnswlib", "hnswlib"), ("faiss", "faiss-cpu"), ("numpy", "numpy")):
        try:
            found[module] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            try:
                found[module] = getattr(__import__(module), "__version__", "unknown")
            except Exception:
                found[module] = None
    return found


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                        default=[10, 20, 30, 50, 100])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=20,
                        help="queries run untimed before each timed pass")
    parser.add_argument("--skip-hnswlib", action="store_true")
    parser.add_argument("--skip-faiss-hnsw", action="store_true")
    parser.add_argument("--skip-faiss-flat", action="store_true")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--save", action="store_true",
                      help="keep the built HNSW indexes in DIR for --search-only rounds")
    mode.add_argument("--search-only", action="store_true",
                      help="read the indexes --save kept and run only the single-query sweep")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    # Keep stdout for the one JSON object: anything the native libraries
    # print on fd 1 goes to stderr instead.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)

    try:
        meta, n, dim, nq, k, vectors, queries, truth = load(args.dir)
    except Exception as error:
        log(f"cannot read {args.dir}: {type(error).__name__}: {error}")
        os.write(json_fd, (json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n").encode())
        return 2
    log(f"n={n} dim={dim} queries={nq} k={k} threads={args.threads} "
        f"M={args.m} efC={args.ef_construction} ef={args.ef}")
    # One (1, dim) C-contiguous view per query, made before any timing.
    rows = [queries[i : i + 1] for i in range(nq)]

    result = {}
    peers = (("hnswlib", run_hnswlib, args.skip_hnswlib),
             ("faiss_hnsw", run_faiss_hnsw, args.skip_faiss_hnsw),
             ("faiss_flat", run_faiss_flat, args.skip_faiss_flat))
    for name, run, skip in peers:
        if skip or (args.search_only and name == "faiss_flat"):
            continue
        try:
            result[name] = run(args, n, dim, k, vectors, queries, truth, rows)
        except Exception as error:  # a missing package or a failure: report, go on
            log(f"{name}: {type(error).__name__}: {error}")
            result[name] = {"error": f"{type(error).__name__}: {error}"}
    result["versions"] = versions()
    result["params"] = {"n": n, "dim": dim, "queries": nq, "k": k, "metric": meta.get("metric", "dot"),
                        "threads": args.threads, "m": args.m,
                        "ef_construction": args.ef_construction, "ef": args.ef}
    os.write(json_fd, (json.dumps(result) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
