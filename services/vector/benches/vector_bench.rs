//! Vector benchmark: our HNSW index in process, hnswlib and FAISS on the very
//! same data (through `bench/peers.py`), and the real `lakehouse serve all`
//! process over gRPC, all in ONE run, then one summary table.
//!
//! 1. In process: build time (M 16, ef_construction 80, all cores), memory
//!    per vector, recall@10 and single-query p50/p99 at several ef_search,
//!    batch throughput, exact (brute force) p50; ground truth is
//!    `exact_search` top-10 of every query.
//! 2. Peers: the vectors, queries and ground truth are written to a folder
//!    and `python3 services/vector/bench/peers.py DIR --threads T` measures
//!    hnswlib, FAISS HNSW and FAISS flat on them.
//! 3. Server: the vectors go into one Snappy Parquet file (an `id` Int64
//!    column and an `embedding` FixedSizeList<Float32> column, one row group
//!    as pyarrow writes by default), uploaded with storage PutObject,
//!    registered with catalog CreateDataset + ResyncDataset, indexed with
//!    CreateIndex; then gRPC Search / BatchSearch, and a restart timed until
//!    the vector service's health says SERVING (persisted index reloaded).
//!
//! ```sh
//! cargo build --release -p lakehouse      # the server binary part 3 starts
//! cargo bench -p lakehouse-vector --bench vector_bench
//! ```
//!
//! Environment: `LAKEHOUSE_BENCH_N` (100000), `LAKEHOUSE_BENCH_DIM` (768),
//! `LAKEHOUSE_BENCH_QUERIES` (1000), `LAKEHOUSE_BENCH_THREADS` (available
//! cores), `LAKEHOUSE_BENCH_SKIP_PEERS=1`, `LAKEHOUSE_BENCH_SKIP_SERVER=1`,
//! `LAKEHOUSE_BENCH_PYTHON` (python3), `LAKEHOUSE_BIN`
//! (target/release/lakehouse), `LAKEHOUSE_BENCH_LOAD_ROUNDS` (0: embedding
//! loads through the server, each timed, before the build) and
//! `LAKEHOUSE_BENCH_LOAD_ONLY=1` (only those rounds, 5 by default),
//! `LAKEHOUSE_BENCH_NO_OFFSET_INDEX=1` (write the Parquet file without an
//! offset index, as pyarrow does by default).

// The bench uses a few of the crate's dependencies, not all of them.
#![allow(unused_crate_dependencies)]

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::{Buf as _, BufMut as _, Bytes};
use lakehouse_proto::catalog::v1 as catalog_pb;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_vector::hnsw::testing::clustered_vectors;
use lakehouse_vector::hnsw::{BuildControl, Graph, HnswParams, Near, build};
use lakehouse_vector::{Metric, exact_search};
use object_store::ObjectStoreExt as _;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use serde_json::Value;

#[path = "vector_bench_parts/load.rs"]
mod load;
#[path = "vector_bench_parts/trials.rs"]
mod trials;

const SEED: u64 = 42;
const K: usize = 10;
const M: usize = 16;
const EF_CONSTRUCTION: usize = 80;
const EFS: [usize; 5] = [10, 20, 30, 50, 100];
/// ef_search of the batch and gRPC measurements.
const EF_SERVE: usize = 30;
/// Untimed queries before each timed pass.
const WARMUP: usize = 20;
/// The recall the "latency at equal recall" comparison asks for.
const RECALL_TARGET: f64 = 0.99;
/// pyarrow's default row group size (and parquet-rs's): 1Mi rows.
const ROW_GROUP_ROWS: usize = 1024 * 1024;
const INDEX: &str = "bench";
const DATASET: &str = "bench";
const OBJECT_KEY: &str = "datasets/bench/part-0.parquet";
const VECTOR_SERVICE: &str = "lakehouse.vector.v1.VectorService";

// ------------------------------------------------------------ settings

#[derive(Debug, Clone)]
struct Settings {
    n: usize,
    dim: usize,
    queries: usize,
    threads: usize,
    clusters: usize,
    skip_peers: bool,
    skip_server: bool,
    skip_trials: bool,
    /// Alternating single-query rounds of ours and the peers.
    rounds: usize,
    /// Embedding loads through the server before the build, each timed.
    load_rounds: usize,
    /// Only the load rounds: no in-process part, peers, build or searches.
    load_only: bool,
    python: String,
    binary: PathBuf,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Settings {
    fn from_env() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = env_usize("LAKEHOUSE_BENCH_N", 100_000);
        let settings = Self {
            n,
            dim: env_usize("LAKEHOUSE_BENCH_DIM", 768),
            queries: env_usize("LAKEHOUSE_BENCH_QUERIES", 1000),
            threads: env_usize("LAKEHOUSE_BENCH_THREADS", cores).max(1),
            clusters: (n / 1000).clamp(10, 1000),
            skip_peers: env_flag("LAKEHOUSE_BENCH_SKIP_PEERS"),
            skip_server: env_flag("LAKEHOUSE_BENCH_SKIP_SERVER"),
            skip_trials: env_flag("LAKEHOUSE_BENCH_SKIP_TRIALS"),
            rounds: env_usize("LAKEHOUSE_BENCH_ROUNDS", 5).max(1),
            load_only: env_flag("LAKEHOUSE_BENCH_LOAD_ONLY"),
            load_rounds: env_usize(
                "LAKEHOUSE_BENCH_LOAD_ROUNDS",
                if env_flag("LAKEHOUSE_BENCH_LOAD_ONLY") {
                    5
                } else {
                    0
                },
            ),
            python: std::env::var("LAKEHOUSE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
            binary: std::env::var_os("LAKEHOUSE_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target/release/lakehouse")),
        };
        assert!(
            settings.n > K && settings.dim > 0 && settings.queries > WARMUP,
            "need LAKEHOUSE_BENCH_N > {K}, LAKEHOUSE_BENCH_DIM > 0 and LAKEHOUSE_BENCH_QUERIES > {WARMUP}"
        );
        settings
    }

    fn reproduce(&self) -> String {
        format!(
            "cargo build --release -p lakehouse && LAKEHOUSE_BENCH_N={} LAKEHOUSE_BENCH_DIM={} \
             LAKEHOUSE_BENCH_QUERIES={} LAKEHOUSE_BENCH_THREADS={} LAKEHOUSE_BENCH_ROUNDS={}{}{}{}{} \
             cargo bench -p lakehouse-vector --bench vector_bench",
            self.n,
            self.dim,
            self.queries,
            self.threads,
            self.rounds,
            if self.skip_peers {
                " LAKEHOUSE_BENCH_SKIP_PEERS=1"
            } else {
                ""
            },
            if self.skip_server {
                " LAKEHOUSE_BENCH_SKIP_SERVER=1"
            } else {
                ""
            },
            if self.skip_trials {
                " LAKEHOUSE_BENCH_SKIP_TRIALS=1"
            } else {
                ""
            },
            match (self.load_only, self.load_rounds) {
                (true, n) =>
                    format!(" LAKEHOUSE_BENCH_LOAD_ONLY=1 LAKEHOUSE_BENCH_LOAD_ROUNDS={n}"),
                (false, 0) => String::new(),
                (false, n) => format!(" LAKEHOUSE_BENCH_LOAD_ROUNDS={n}"),
            },
        )
    }
}

// ------------------------------------------------------------ statistics

/// Latencies of single calls, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
}

/// Percentiles by linear interpolation between closest ranks (numpy's
/// default, as `peers.py` computes them).
fn latency(samples: &[Duration]) -> Latency {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_unstable_by(f64::total_cmp);
    let pct = |q: f64| {
        if us.is_empty() {
            return f64::NAN;
        }
        let rank = q * (us.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        us[lo] + (us[hi] - us[lo]) * (rank - lo as f64)
    };
    Latency {
        p50: pct(0.5),
        p99: pct(0.99),
        mean: us.iter().sum::<f64>() / us.len().max(1) as f64,
    }
}

/// Mean over queries of |found ∩ truth| / k.
fn recall(found: &[Vec<u32>], truth: &[u32]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth.chunks_exact(K))
        .map(|(f, t)| f.iter().take(K).filter(|id| t.contains(id)).count())
        .sum();
    hits as f64 / (found.len() * K).max(1) as f64
}

fn ids(found: &[Near]) -> Vec<u32> {
    found.iter().map(|n| n.id).collect()
}

/// Queries per second of `run` (all queries at once): the best of at least
/// 3 runs, repeated for at least 0.5 s (as `peers.py` measures its peers).
fn best_qps(queries: usize, mut run: impl FnMut()) -> f64 {
    let began = Instant::now();
    let mut best = Duration::MAX;
    for i in 0..50 {
        let started = Instant::now();
        run();
        best = best.min(started.elapsed());
        if i >= 2 && began.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    queries as f64 / best.as_secs_f64()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

// ------------------------------------------------------------ results

#[derive(Debug, Clone, Copy)]
struct EfResult {
    ef: usize,
    recall: f64,
    latency: Latency,
}

#[derive(Debug, Default)]
struct InProcess {
    build_s: f64,
    links_bytes: usize,
    bytes_per_vector: f64,
    stored_bytes: usize,
    from_bytes_ms: f64,
    sweep: Vec<EfResult>,
    batch_qps: f64,
    exact: Latency,
    truth_s: f64,
}

impl InProcess {
    fn at(&self, ef: usize) -> Option<&EfResult> {
        self.sweep.iter().find(|r| r.ef == ef)
    }

    /// The smallest ef of the sweep reaching the recall target.
    fn at_target(&self) -> Option<&EfResult> {
        self.sweep.iter().find(|r| r.recall >= RECALL_TARGET)
    }
}

#[derive(Debug, Default)]
struct Server {
    parquet_bytes: u64,
    write_parquet_s: f64,
    upload_s: f64,
    build_wall_s: f64,
    phases: Vec<(String, f64)>,
    build_duration_ms: u64,
    generation_memory_bytes: u64,
    load_ms: Option<u64>,
    cache_bytes: Option<u64>,
    search: Latency,
    server_side: Latency,
    /// The same client and server stack around a call that does no work
    /// (GetCacheStats): what any RPC costs here.
    call_floor: Latency,
    /// The same three from a current-thread client runtime.
    lean_search: Latency,
    lean_server_side: Latency,
    lean_call_floor: Latency,
    search_recall: f64,
    batch_qps: f64,
    rss_after_build_kib: Option<u64>,
    stop_s: f64,
    listening_ms: f64,
    serving_ms: f64,
    rss_after_reload_kib: Option<u64>,
    same_ids: bool,
    trials: Option<trials::Report>,
}

// ------------------------------------------------------------ main

/// What the peers build and measure.
#[derive(Debug, Clone)]
struct PeerConfig {
    title: String,
    m: usize,
    ef_construction: usize,
    efs: Vec<usize>,
    /// hnswlib only (no FAISS).
    hnswlib_only: bool,
    /// `--save` (keep the HNSW indexes for later rounds), `--search-only`
    /// (a round on the kept indexes) or nothing.
    mode: Option<&'static str>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            title: "2. peers (services/vector/bench/peers.py)".to_owned(),
            m: M,
            ef_construction: EF_CONSTRUCTION,
            efs: EFS.to_vec(),
            hnswlib_only: false,
            mode: None,
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let s = &settings;
    println!(
        "vector benchmark: n={} dim={} queries={} k={K} clusters={} metric=cosine \
         M={M} ef_construction={EF_CONSTRUCTION} threads={} seed={SEED}",
        s.n, s.dim, s.queries, s.clusters, s.threads
    );

    let started = Instant::now();
    // One call, then split: queries come from the same distribution and are
    // held out of the index.
    let mut all = clustered_vectors(s.n + s.queries, s.dim, s.clusters, SEED);
    let queries = all.split_off(s.n * s.dim);
    let vectors = Arc::new(all);
    println!(
        "data: {} + {} clustered unit vectors generated in {:.1} s ({:.0} MiB)",
        s.n,
        s.queries,
        started.elapsed().as_secs_f64(),
        mib((vectors.len() * 4) as u64)
    );

    if s.load_only {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        runtime.block_on(through_server(s, &vectors, &queries, &[]));
        return;
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(s.threads)
        .thread_name(|i| format!("bench-{i}"))
        .build()
        .expect("the benchmark's rayon pool starts");

    let (truth, ours, graph) = in_process(s, &pool, &vectors, &queries);
    print_in_process(s, &ours);

    let mut ours = ours;
    let peers = if s.skip_peers {
        println!("\n== peers: skipped (LAKEHOUSE_BENCH_SKIP_PEERS=1)");
        None
    } else {
        let input = peer_input(s, &vectors, &queries, &truth);
        let config = PeerConfig {
            mode: Some("--save"),
            ..PeerConfig::default()
        };
        let mut peers = run_peers(s, input.path(), &config);
        if let Some(peers) = &mut peers {
            search_rounds(s, &graph, &queries, &truth, &mut ours, peers, input.path());
        }
        peers
    };
    drop(graph);
    if let Some(peers) = &peers {
        print_peers(s, &ours, peers);
    }

    let server = if s.skip_server {
        println!("\n== server: skipped (LAKEHOUSE_BENCH_SKIP_SERVER=1)");
        None
    } else if !s.binary.is_file() {
        println!(
            "\n== server: SKIPPED: {} does not exist; build it with `cargo build --release -p \
             lakehouse` (or point LAKEHOUSE_BIN at a lakehouse binary)",
            s.binary.display()
        );
        None
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the tokio runtime starts");
        Some(runtime.block_on(through_server(s, &vectors, &queries, &truth)))
    };
    if let Some(server) = &server {
        print_server(&ours, server);
        if let Some(report) = &server.trials {
            trials::print(report);
            // hnswlib at the configuration TuneIndex chose, same data.
            if let (Some(best), false) = (&report.tune_best, s.skip_peers) {
                let config = PeerConfig {
                    title: format!(
                        "4b. hnswlib at the tuned configuration (M {}, ef_construction {}, ef {})",
                        best.m, best.ef_construction, best.ef_search
                    ),
                    m: best.m as usize,
                    ef_construction: best.ef_construction as usize,
                    efs: vec![best.ef_search as usize],
                    hnswlib_only: true,
                    mode: None,
                };
                let input = peer_input(s, &vectors, &queries, &truth);
                if let Some(value) = run_peers(s, input.path(), &config) {
                    let h = peer(&value, "hnswlib");
                    let at = peer_ef(h, best.ef_search as usize);
                    println!(
                        "hnswlib at M {} ef_construction {} ef {}: build {} s, recall@10 {}, p50 {} µs (ours: build {:.1} s, recall {:.4}, p50 {} µs)",
                        best.m,
                        best.ef_construction,
                        best.ef_search,
                        opt(num(h, "build_s"), 1),
                        opt(num(at, "recall"), 4),
                        opt(num(at, "p50_us"), 0),
                        best.build_s,
                        best.recall,
                        best.p50_us
                    );
                }
            }
        }
    }
    print_summary(s, &ours, peers.as_ref(), server.as_ref());
    println!("\nreproduce:\n  {}", s.reproduce());
}

// ------------------------------------------------------------ 1. in process

fn in_process(
    s: &Settings,
    pool: &rayon::ThreadPool,
    vectors: &Arc<Vec<f32>>,
    queries: &[f32],
) -> (Vec<u32>, InProcess, Graph) {
    let dim = s.dim;
    let mut out = InProcess::default();

    // Ground truth, timing each exact search (parallel over the pool).
    let started = Instant::now();
    let (truth, exact_times) = pool.install(|| {
        let mut truth = Vec::with_capacity(s.queries * K);
        let mut times = Vec::with_capacity(s.queries);
        for q in queries.chunks_exact(dim) {
            let t = Instant::now();
            let found = exact_search(vectors, dim, Metric::Cosine, q, K, None);
            times.push(t.elapsed());
            assert_eq!(found.len(), K, "exact search returns k rows");
            truth.extend(ids(&found));
        }
        (truth, times)
    });
    out.truth_s = started.elapsed().as_secs_f64();
    out.exact = latency(&exact_times);
    println!(
        "ground truth: exact top-{K} of {} queries in {:.1} s",
        s.queries, out.truth_s
    );

    // Build on every core, printing progress now and then.
    let control = BuildControl::default();
    let done = AtomicBool::new(false);
    let params = HnswParams {
        m: M,
        ef_construction: EF_CONSTRUCTION,
    };
    let started = Instant::now();
    let graph = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(10) {
                    last = Instant::now();
                    eprintln!(
                        "  building: {} / {} inserted, {:.0} s",
                        control.inserted.load(Ordering::Relaxed),
                        s.n,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
        let graph = build(
            vectors.clone(),
            dim,
            Metric::Cosine,
            params,
            SEED,
            pool,
            &control,
        )
        .expect("the build is never cancelled here");
        done.store(true, Ordering::Relaxed);
        graph
    });
    out.build_s = started.elapsed().as_secs_f64();
    assert_eq!(graph.len(), s.n, "every vector is in the graph");
    out.links_bytes = graph.links_bytes();
    out.bytes_per_vector = (graph.links_bytes() + graph.vectors().len() * 4) as f64 / s.n as f64;

    // The stored form, and reading it back (what a server restart does
    // after fetching the object).
    let bytes: Vec<u8> = graph.to_sections().concat();
    out.stored_bytes = bytes.len();
    let started = Instant::now();
    let back = Graph::from_bytes(&bytes).expect("the graph reads back from its own bytes");
    out.from_bytes_ms = started.elapsed().as_secs_f64() * 1e3;
    let q0 = &queries[..dim];
    assert_eq!(
        ids(&graph.search(q0, K, EF_SERVE)),
        ids(&back.search(q0, K, EF_SERVE)),
        "a graph read back answers as the original"
    );
    drop((back, bytes));

    out.sweep = single_query_sweep(&graph, queries, &truth, dim);

    // Batch throughput: every query at once over the pool.
    out.batch_qps = best_qps(s.queries, || {
        let found: Vec<Vec<Near>> = pool.install(|| {
            queries
                .par_chunks_exact(dim)
                .map(|q| graph.search(q, K, EF_SERVE))
                .collect()
        });
        std::hint::black_box(found);
    });
    (truth, out, graph)
}

/// Single-query latency and recall per ef, one thread (this one).
fn single_query_sweep(graph: &Graph, queries: &[f32], truth: &[u32], dim: usize) -> Vec<EfResult> {
    let mut sweep = Vec::with_capacity(EFS.len());
    for ef in EFS {
        for q in queries.chunks_exact(dim).take(WARMUP) {
            std::hint::black_box(graph.search(q, K, ef));
        }
        let mut times = Vec::with_capacity(queries.len() / dim);
        let mut found = Vec::with_capacity(queries.len() / dim);
        for q in queries.chunks_exact(dim) {
            let t = Instant::now();
            let hits = graph.search(q, K, ef);
            times.push(t.elapsed());
            found.push(ids(&hits));
        }
        sweep.push(EfResult {
            ef,
            recall: recall(&found, truth),
            latency: latency(&times),
        });
    }
    sweep
}

fn print_in_process(s: &Settings, r: &InProcess) {
    println!("\n== 1. in process (lakehouse_vector::hnsw)");
    println!(
        "build: {:.2} s on {} threads ({:.0} vectors/s)",
        r.build_s,
        s.threads,
        s.n as f64 / r.build_s
    );
    println!(
        "memory: {:.0} B/vector = links {:.1} B + vectors {} B (links {:.1} MiB); stored graph \
         {:.1} MiB, Graph::from_bytes {:.0} ms",
        r.bytes_per_vector,
        r.links_bytes as f64 / s.n as f64,
        s.dim * 4,
        mib(r.links_bytes as u64),
        mib(r.stored_bytes as u64),
        r.from_bytes_ms
    );
    println!("single query, 1 thread:");
    println!(
        "  {:>9} {:>10} {:>9} {:>9} {:>9}",
        "ef_search", "recall@10", "p50 µs", "p99 µs", "mean µs"
    );
    for e in &r.sweep {
        println!(
            "  {:>9} {:>10.4} {:>9.1} {:>9.1} {:>9.1}",
            e.ef, e.recall, e.latency.p50, e.latency.p99, e.latency.mean
        );
    }
    println!(
        "batch: {:.0} queries/s at ef {EF_SERVE} ({} threads, rayon par_iter)",
        r.batch_qps, s.threads
    );
    println!(
        "exact (brute force, {} threads): p50 {:.0} µs, p99 {:.0} µs",
        s.threads, r.exact.p50, r.exact.p99
    );
}

// ------------------------------------------------------------ 2. peers

fn write_f32(path: &Path, values: &[f32]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        file.write_all(&v.to_le_bytes())?;
    }
    file.flush()
}

/// The peers' input folder: the very vectors, queries and ground truth of
/// this run (removed when dropped).
fn peer_input(s: &Settings, vectors: &[f32], queries: &[f32], truth: &[u32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder for the peers' input");
    let meta = serde_json::json!({
        "n": s.n, "dim": s.dim, "queries": s.queries, "k": K, "metric": "dot",
    });
    std::fs::write(dir.path().join("meta.json"), meta.to_string()).expect("write meta.json");
    write_f32(&dir.path().join("vectors.f32"), vectors).expect("write vectors.f32");
    write_f32(&dir.path().join("queries.f32"), queries).expect("write queries.f32");
    let mut t = Vec::with_capacity(truth.len() * 4);
    for &id in truth {
        t.extend_from_slice(&(id as i32).to_le_bytes());
    }
    std::fs::write(dir.path().join("truth.i32"), t).expect("write truth.i32");
    dir
}

fn run_peers(s: &Settings, dir: &Path, config: &PeerConfig) -> Option<Value> {
    if config.mode != Some("--search-only") {
        println!("\n== {}", config.title);
    }
    let script = workspace_root().join("services/vector/bench/peers.py");
    let output = Command::new(&s.python)
        .arg(&script)
        .arg(dir)
        .args(config.mode)
        .args(["--threads", &s.threads.to_string()])
        .args([
            "--m",
            &config.m.to_string(),
            "--ef-construction",
            &config.ef_construction.to_string(),
        ])
        .arg("--ef")
        .arg(
            config
                .efs
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .args(if config.hnswlib_only {
            &["--skip-faiss-hnsw", "--skip-faiss-flat"][..]
        } else {
            &[][..]
        })
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            println!(
                "peers: SKIPPED: cannot run {} ({error}); install Python 3 and \
                 `python3 -m pip install hnswlib faiss-cpu numpy`",
                s.python
            );
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: Option<Value> = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line.trim()).ok());
    match parsed {
        Some(value) if value.get("error").is_some() || !output.status.success() => {
            println!(
                "peers: FAILED ({}): {}",
                output.status,
                value.get("error").unwrap_or(&Value::Null)
            );
            None
        }
        Some(value) => {
            for peer in ["hnswlib", "faiss_hnsw", "faiss_flat"] {
                if let Some(error) = value.get(peer).and_then(|p| p.get("error")) {
                    println!(
                        "peers: {peer} unavailable: {error} (python3 -m pip install hnswlib \
                         faiss-cpu numpy)"
                    );
                }
            }
            Some(value)
        }
        None => {
            println!(
                "peers: FAILED ({}): no JSON on stdout: {:?}",
                output.status,
                stdout.chars().take(500).collect::<String>()
            );
            None
        }
    }
}

/// p50 µs at `ef` of ours, hnswlib and FAISS HNSW in one round.
type RoundP50 = [Option<f64>; 3];

/// Alternates single-query sweeps of ours and of the peers (on the indexes
/// their first run kept) `s.rounds - 1` more times, and keeps each
/// library's fastest round per ef: on this 2-vCPU VM one round's noise is
/// larger than the differences being measured, and taking each side's best
/// round compares the libraries rather than the moments they ran at.
fn search_rounds(
    s: &Settings,
    graph: &Graph,
    queries: &[f32],
    truth: &[u32],
    ours: &mut InProcess,
    peers: &mut Value,
    dir: &Path,
) {
    if s.rounds < 2 {
        return;
    }
    let round_of = |ours: &[EfResult], peers: &Value, ef: usize| -> RoundP50 {
        [
            ours.iter().find(|r| r.ef == ef).map(|r| r.latency.p50),
            num(peer_ef(peer(peers, "hnswlib"), ef), "p50_us"),
            num(peer_ef(peer(peers, "faiss_hnsw"), ef), "p50_us"),
        ]
    };
    let mut history: Vec<Vec<RoundP50>> = vec![
        EFS.iter()
            .map(|&ef| round_of(&ours.sweep, peers, ef))
            .collect(),
    ];
    let config = PeerConfig {
        mode: Some("--search-only"),
        ..PeerConfig::default()
    };
    for _ in 1..s.rounds {
        let sweep = single_query_sweep(graph, queries, truth, s.dim);
        let Some(theirs) = run_peers(s, dir, &config) else {
            println!("peers: a search-only round failed; keeping the rounds so far");
            break;
        };
        history.push(
            EFS.iter()
                .map(|&ef| round_of(&sweep, &theirs, ef))
                .collect(),
        );
        for (kept, new) in ours.sweep.iter_mut().zip(sweep) {
            if new.latency.p50 < kept.latency.p50 {
                kept.latency = new.latency;
            }
        }
        for name in ["hnswlib", "faiss_hnsw"] {
            let Some(new) = theirs
                .get(name)
                .and_then(|p| p.get("search"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            let Some(kept) = peers
                .get_mut(name)
                .and_then(|p| p.get_mut("search"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for entry in new {
                let ef = entry.get("ef").and_then(Value::as_u64);
                let p50 = entry.get("p50_us").and_then(Value::as_f64);
                if let Some(old) = kept
                    .iter_mut()
                    .find(|e| e.get("ef").and_then(Value::as_u64) == ef)
                {
                    let old_p50 = old.get("p50_us").and_then(Value::as_f64);
                    if let (Some(p50), Some(old_p50)) = (p50, old_p50)
                        && p50 < old_p50
                    {
                        for key in ["p50_us", "p99_us", "mean_us"] {
                            old[key] = entry[key].clone();
                        }
                    }
                }
            }
        }
    }
    println!(
        "\n== 2b. single-query p50 µs per round (ours / hnswlib / FAISS HNSW, alternating; the \
         best round of each is what the tables use)"
    );
    print!("  {:>5}", "round");
    for ef in EFS {
        print!(" {:>20}", format!("ef {ef}"));
    }
    println!();
    for (i, round) in history.iter().enumerate() {
        print!("  {:>5}", i + 1);
        for [a, b, c] in round {
            print!(
                " {:>20}",
                format!("{} / {} / {}", opt(*a, 0), opt(*b, 0), opt(*c, 0))
            );
        }
        println!();
    }
}

/// A peer's figures, if it ran.
fn peer<'a>(peers: &'a Value, name: &str) -> Option<&'a Value> {
    peers.get(name).filter(|p| p.get("error").is_none())
}

fn num(value: Option<&Value>, key: &str) -> Option<f64> {
    value?.get(key)?.as_f64()
}

/// A peer's search entry at `ef`.
fn peer_ef(p: Option<&Value>, ef: usize) -> Option<&Value> {
    p?.get("search")?
        .as_array()?
        .iter()
        .find(|e| e.get("ef").and_then(Value::as_u64) == Some(ef as u64))
}

/// A peer's smallest ef reaching the recall target: (ef, p50 µs).
fn peer_at_target(p: Option<&Value>) -> Option<(u64, f64)> {
    p?.get("search")?.as_array()?.iter().find_map(|e| {
        (e.get("recall")?.as_f64()? >= RECALL_TARGET)
            .then(|| Some((e.get("ef")?.as_u64()?, e.get("p50_us")?.as_f64()?)))
            .flatten()
    })
}

fn peer_batch(p: Option<&Value>, ef: usize) -> Option<f64> {
    p?.get("batch_qps")?.get(ef.to_string())?.as_f64()
}

fn print_peers(s: &Settings, ours: &InProcess, peers: &Value) {
    let h = peer(peers, "hnswlib");
    let f = peer(peers, "faiss_hnsw");
    let flat = peer(peers, "faiss_flat");
    if let Some(v) = peers.get("versions") {
        println!("versions: {v}");
    }
    println!(
        "{:<26} {:>14} {:>14} {:>14} {:>12}",
        "", "ours", "hnswlib", "faiss_hnsw", "ours/hnswlib"
    );
    let row = |label: &str, o: Option<f64>, hv: Option<f64>, fv: Option<f64>, d: usize| {
        println!(
            "{label:<26} {:>14} {:>14} {:>14} {:>12}",
            opt(o, d),
            opt(hv, d),
            opt(fv, d),
            ratio(o, hv)
        );
    };
    row(
        &format!("build s ({} threads)", s.threads),
        Some(ours.build_s),
        num(h, "build_s"),
        num(f, "build_s"),
        2,
    );
    row(
        "index B/vector",
        Some(ours.stored_bytes as f64 / s.n as f64),
        num(h, "index_bytes").map(|b| b / s.n as f64),
        num(f, "index_bytes").map(|b| b / s.n as f64),
        0,
    );
    for e in &ours.sweep {
        let he = peer_ef(h, e.ef);
        let fe = peer_ef(f, e.ef);
        row(
            &format!("ef {:>3} recall@10", e.ef),
            Some(e.recall),
            num(he, "recall"),
            num(fe, "recall"),
            4,
        );
        row(
            &format!("ef {:>3} p50 µs", e.ef),
            Some(e.latency.p50),
            num(he, "p50_us"),
            num(fe, "p50_us"),
            1,
        );
        row(
            &format!("ef {:>3} p99 µs", e.ef),
            Some(e.latency.p99),
            num(he, "p99_us"),
            num(fe, "p99_us"),
            1,
        );
    }
    row(
        &format!("batch q/s ef {EF_SERVE}"),
        Some(ours.batch_qps),
        peer_batch(h, EF_SERVE),
        peer_batch(f, EF_SERVE),
        0,
    );
    row(
        "python call floor µs",
        None,
        num(h, "call_floor_us"),
        num(f, "call_floor_us"),
        1,
    );
    let (o_target, h_target) = (ours.at_target(), peer_at_target(h));
    println!(
        "p50 at recall >= {RECALL_TARGET}: ours {} | hnswlib {} | ratio {}",
        o_target.map_or("not reached".to_owned(), |e| format!(
            "{:.1} µs (ef {})",
            e.latency.p50, e.ef
        )),
        h_target.map_or("not reached".to_owned(), |(ef, p)| format!(
            "{p:.1} µs (ef {ef})"
        )),
        ratio(o_target.map(|e| e.latency.p50), h_target.map(|(_, p)| p)),
    );
    println!(
        "exact p50 µs: ours {:.0} ({} threads) | faiss_flat {} (1 thread), {} ({} threads) | \
         ratio vs 1 thread {}, vs {} threads {}",
        ours.exact.p50,
        s.threads,
        opt(num(flat, "p50_us_1thread"), 0),
        opt(num(flat, "p50_us_threads"), 0),
        s.threads,
        ratio(Some(ours.exact.p50), num(flat, "p50_us_1thread")),
        s.threads,
        ratio(Some(ours.exact.p50), num(flat, "p50_us_threads")),
    );
}

// ------------------------------------------------------------ 3. server

/// The `lakehouse serve all` process: SIGTERM on drop.
struct ServerProcess {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
}

impl ServerProcess {
    fn start(binary: &Path, dir: &Path, addr: &str, log_name: &str, threads: usize) -> Self {
        let log = dir.join(log_name);
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let child = Command::new(binary)
            .args(["serve", "all", "--listen", addr, "--data-dir"])
            .arg(dir.join("data"))
            .env("LAKEHOUSE_SECRETS_FILE", dir.join("no-secrets.toml"))
            .env("LAKEHOUSE_LOG", "warn,lakehouse_vector::embeddings=info")
            // Trials use as many threads as the peers do.
            .env("LAKEHOUSE_VECTOR_TRIAL_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child: Some(child),
            addr: addr.to_owned(),
            log,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits (SIGKILL after 60 s); returns how long it took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        started.elapsed()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
            if std::thread::panicking() {
                eprintln!(
                    "---- server log {} (tail) ----\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
        }
    }
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `grpc.health.v1.Health/Check` with raw protobuf bytes, so the bench needs
/// no health client crate: the request is `{service}` (field 1, string),
/// the answer `{status}` (field 1, enum; SERVING = 1, absent = UNKNOWN).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Whether `service` is SERVING; `None` when nothing answers yet.
async fn health_serving(addr: &str, service: &str) -> Option<bool> {
    let channel = lakehouse_client::endpoint(addr)
        .expect("a valid server address")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.ok()?;
    let name = service.as_bytes();
    assert!(name.len() < 128, "one-byte length prefix");
    let mut request = vec![0x0a, name.len() as u8];
    request.extend_from_slice(name);
    let response = grpc
        .unary::<Vec<u8>, Vec<u8>, _>(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            RawCodec,
        )
        .await;
    match response {
        Ok(r) => Some(r.into_inner().as_slice() == [0x08, 0x01]),
        // The server answers, though not SERVING (or not yet routing).
        Err(_) => Some(false),
    }
}

/// Polls health until SERVING: returns (first answer, SERVING) since `since`.
async fn wait_serving(server: &mut ServerProcess, since: Instant) -> (Duration, Duration) {
    let mut listening = None;
    loop {
        if let Some(status) = server.exited() {
            panic!("the server exited with {status}:\n{}", server.log_tail());
        }
        match health_serving(&server.addr, VECTOR_SERVICE).await {
            Some(true) => {
                let at = since.elapsed();
                return (listening.unwrap_or(at), at);
            }
            Some(false) => {
                listening.get_or_insert_with(|| since.elapsed());
            }
            None => {}
        }
        assert!(
            since.elapsed() < Duration::from_secs(1800),
            "the vector service was not SERVING within 30 min:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes `vectors` as one Parquet file: `id` Int64 (the row number) and
/// `embedding` FixedSizeList<Float32>, Snappy, pyarrow's row group size.
fn write_parquet(path: &Path, vectors: &[f32], dim: usize) -> u64 {
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), dim as i32),
            false,
        ),
    ]));
    // pyarrow writes no offset index by default; parquet-rs does. Without
    // one, the loader's row slices share one fetch of each column chunk.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_offset_index_disabled(env_flag("LAKEHOUSE_BENCH_NO_OFFSET_INDEX"))
        .build();
    let file = std::fs::File::create(path).expect("create the Parquet file");
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("a Parquet writer");
    // Written in batches (one row group still: the writer buffers them).
    const BATCH: usize = 65_536;
    for (b, rows) in vectors.chunks(BATCH * dim).enumerate() {
        let first = (b * BATCH) as i64;
        let count = rows.len() / dim;
        let ids = Int64Array::from_iter_values(first..first + count as i64);
        let values: ArrayRef = Arc::new(Float32Array::from(rows.to_vec()));
        let list = FixedSizeListArray::try_new(item.clone(), dim as i32, values, None)
            .expect("a FixedSizeList of the vectors");
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(list)])
            .expect("a record batch");
        writer.write(&batch).expect("write a batch");
    }
    writer.close().expect("close the Parquet file");
    std::fs::metadata(path)
        .expect("the Parquet file exists")
        .len()
}

fn expect_ok<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(status) => panic!("{what} failed: {status}"),
    }
}

fn hit_ids(hits: &[pb::SearchHit]) -> Vec<u32> {
    hits.iter()
        .map(|h| h.id.parse().expect("ids are the row numbers we wrote"))
        .collect()
}

async fn through_server(s: &Settings, vectors: &[f32], queries: &[f32], truth: &[u32]) -> Server {
    println!("\n== 3. through the server ({})", s.binary.display());
    let mut out = Server::default();
    let dir = tempfile::tempdir().expect("a temporary folder for the server");
    let parquet_path = dir.path().join("part-0.parquet");
    let started = Instant::now();
    out.parquet_bytes = write_parquet(&parquet_path, vectors, s.dim);
    out.write_parquet_s = started.elapsed().as_secs_f64();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = ServerProcess::start(&s.binary, dir.path(), &addr, "server-1.log", s.threads);
    wait_serving(&mut server, Instant::now()).await;
    let channel = lakehouse_client::connect(&addr)
        .await
        .expect("connect to the server");
    let storage = lakehouse_client::storage(channel.clone());
    let mut catalog = lakehouse_client::catalog(channel.clone());
    let mut vector = lakehouse_client::vector(channel);

    // Upload through storage PutObject (multipart, 8 MiB parts).
    let store = lakehouse_client::GrpcObjectStore::new(storage, "");
    let started = Instant::now();
    let upload = store
        .put_multipart(&object_store::path::Path::from(OBJECT_KEY))
        .await
        .expect("start the upload");
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut file = std::fs::File::open(&parquet_path).expect("open the Parquet file");
    loop {
        let mut chunk = vec![0u8; 8 << 20];
        let mut filled = 0;
        while filled < chunk.len() {
            match file
                .read(&mut chunk[filled..])
                .expect("read the Parquet file")
            {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        writer.wait_for_capacity(4).await.expect("upload a part");
        writer.put(Bytes::from(chunk));
    }
    writer.finish().await.expect("finish the upload");
    out.upload_s = started.elapsed().as_secs_f64();
    println!(
        "parquet: {:.1} MiB written in {:.2} s, uploaded (PutObject) in {:.2} s ({:.0} MB/s)",
        mib(out.parquet_bytes),
        out.write_parquet_s,
        out.upload_s,
        out.parquet_bytes as f64 / 1e6 / out.upload_s
    );

    expect_ok(
        catalog
            .create_dataset(catalog_pb::CreateDatasetRequest {
                name: DATASET.to_owned(),
                ..Default::default()
            })
            .await,
        "CreateDataset",
    );
    let report = expect_ok(
        catalog
            .resync_dataset(catalog_pb::ResyncDatasetRequest {
                name: DATASET.to_owned(),
                dry_run: false,
                ..Default::default()
            })
            .await,
        "ResyncDataset",
    )
    .report
    .expect("ResyncDataset returns a report");
    println!(
        "catalog: dataset {DATASET} at version {} ({} file change(s), {} problem(s))",
        report.version,
        report.file_changes.len(),
        report.problems.len()
    );

    if s.load_rounds > 0 {
        let config = pb::HnswConfig {
            m: M as u32,
            ef_construction: EF_CONSTRUCTION as u32,
        };
        let mut ms = load::rounds(&mut vector, DATASET, config, s.load_rounds, &server.log).await;
        ms.sort_unstable();
        println!(
            "embedding load over {} rounds: best {} ms, median {} ms",
            ms.len(),
            ms[0],
            ms[ms.len() / 2]
        );
        if s.load_only {
            return out;
        }
    }

    // CreateIndex, consuming the stream until `finished`.
    let started = Instant::now();
    let mut stream = expect_ok(
        vector
            .create_index(pb::CreateIndexRequest {
                name: INDEX.to_owned(),
                dataset: DATASET.to_owned(),
                id_column: "id".to_owned(),
                vector_column: "embedding".to_owned(),
                metric: pb::Metric::Cosine as i32,
                config: Some(pb::HnswConfig {
                    m: M as u32,
                    ef_construction: EF_CONSTRUCTION as u32,
                }),
                ..Default::default()
            })
            .await,
        "CreateIndex",
    );
    let mut phase: Option<(i32, Instant)> = None;
    let mut last_print = Instant::now();
    let finished = loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the CreateIndex stream ended without `finished`"),
            Err(status) => panic!("CreateIndex stream failed: {status}"),
        };
        match message.event {
            Some(pb::create_index_response::Event::Started(started)) => {
                println!("CreateIndex: started generation {}", started.generation);
            }
            Some(pb::create_index_response::Event::Progress(p)) => {
                if phase.map(|(ph, _)| ph) != Some(p.phase) {
                    if let Some((ph, since)) = phase {
                        out.phases
                            .push((phase_name(ph), since.elapsed().as_secs_f64()));
                    }
                    phase = Some((p.phase, Instant::now()));
                }
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    eprintln!(
                        "  CreateIndex: {} {} / {} ({:.0} s)",
                        phase_name(p.phase),
                        p.done,
                        p.total,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Some(pb::create_index_response::Event::Finished(f)) => break f,
            None => {}
        }
    };
    out.build_wall_s = started.elapsed().as_secs_f64();
    if let Some((ph, since)) = phase {
        out.phases
            .push((phase_name(ph), since.elapsed().as_secs_f64()));
    }
    if let Some(status) = finished.status.as_ref().filter(|st| st.code != 0) {
        panic!(
            "CreateIndex finished with code {}: {}\n{}",
            status.code,
            status.message,
            server.log_tail()
        );
    }
    if let Some(g) = &finished.generation {
        out.build_duration_ms = g.build_duration_ms;
        out.generation_memory_bytes = g.memory_bytes;
    }
    let stats = expect_ok(
        vector.get_cache_stats(pb::GetCacheStatsRequest {}).await,
        "GetCacheStats",
    );
    if let Some(entry) = stats.entries.iter().find(|e| e.dataset == DATASET) {
        out.load_ms = Some(entry.load_duration_ms);
        out.cache_bytes = Some(entry.memory_bytes);
    }
    // The server's own account of the load (fetch + decode, then gather).
    if let Ok(log) = std::fs::read_to_string(&server.log) {
        for line in log.lines().filter(|l| l.contains("embeddings loaded")) {
            println!("server log: {}", line.trim());
        }
    }
    out.rss_after_build_kib = server.pid().and_then(|pid| vm_kib(pid, "VmRSS:"));

    // Part 4 starts here: the eval set, and a trial with the cache warm.
    let mut trial_report = (!s.skip_trials).then(trials::Report::default);
    if let Some(report) = trial_report.as_mut() {
        trials::create_eval_set(&mut vector, queries, s.dim, s.queries, report).await;
        let misses = trials::cache_misses(&mut vector).await;
        let (_, wall) = trials::run_trial(&mut vector, 16, 80, &[EF_SERVE as u32]).await;
        report.warm_trial_s = Some(wall);
        report.cache_misses_during_trials = Some(trials::cache_misses(&mut vector).await - misses);
    }

    // Search, one query at a time, at EF_SERVE: from this 2-worker runtime,
    // then from a current-thread runtime on its own thread and connection
    // (what a latency-minded client would use; a tokio client's runtime
    // moves the call floor by tens of µs on this VM).
    let single = single_calls(&mut vector, queries, s.dim).await;
    let lean = {
        let addr = addr.clone();
        let queries = queries.to_vec();
        let dim = s.dim;
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(async move {
                    let channel = lakehouse_client::connect(&addr)
                        .await
                        .expect("connect to the server");
                    let mut vector = lakehouse_client::vector(channel);
                    single_calls(&mut vector, &queries, dim).await
                })
        })
        .join()
        .expect("the current-thread client finishes")
    };
    let found = single.found;
    out.search = single.search;
    out.server_side = single.server_side;
    out.call_floor = single.call_floor;
    out.lean_search = lean.search;
    out.lean_server_side = lean.server_side;
    out.lean_call_floor = lean.call_floor;
    out.search_recall = recall(&found, truth);
    let before = found[0].clone();

    // BatchSearch: every query, in requests under the message size limit.
    let per_request = ((8usize << 20) / (s.dim * 4)).clamp(1, 10_000);
    let batches: Vec<pb::BatchSearchRequest> = queries
        .chunks(per_request * s.dim)
        .map(|chunk| pb::BatchSearchRequest {
            index: INDEX.to_owned(),
            queries: chunk
                .chunks_exact(s.dim)
                .map(|q| pb::QueryVector { vector: q.to_vec() })
                .collect(),
            k: K as u32,
            ef_search: Some(EF_SERVE as u32),
            ..Default::default()
        })
        .collect();
    let began = Instant::now();
    let mut best = Duration::MAX;
    for i in 0..50 {
        let t = Instant::now();
        for batch in &batches {
            let response = expect_ok(vector.batch_search(batch.clone()).await, "BatchSearch");
            assert_eq!(
                response.results.len(),
                batch.queries.len(),
                "one result per query"
            );
        }
        best = best.min(t.elapsed());
        if i >= 2 && began.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    out.batch_qps = s.queries as f64 / best.as_secs_f64();

    // Restart on the same data: time until the vector service is SERVING.
    out.stop_s = server.stop().as_secs_f64();
    let since = Instant::now();
    let mut server = ServerProcess::start(&s.binary, dir.path(), &addr, "server-2.log", s.threads);
    let (listening, serving) = wait_serving(&mut server, since).await;
    out.listening_ms = listening.as_secs_f64() * 1e3;
    out.serving_ms = serving.as_secs_f64() * 1e3;
    out.rss_after_reload_kib = server.pid().and_then(|pid| vm_kib(pid, "VmRSS:"));
    let channel = lakehouse_client::connect(&addr)
        .await
        .expect("connect to the restarted server");
    let mut vector = lakehouse_client::vector(channel);
    let response = expect_ok(
        vector.search(search_request(&queries[..s.dim])).await,
        "Search after the restart",
    );
    let after = hit_ids(&response.hits);
    out.same_ids = after == before;
    if !out.same_ids {
        println!("WARNING: query 0 before the restart {before:?}, after {after:?}");
    }
    if let Some(mut report) = trial_report {
        let (_, wall) = trials::run_trial(&mut vector, 16, 80, &[EF_SERVE as u32]).await;
        report.cold_trial_s = Some(wall);
        trials::sweep_and_tune(&mut vector, &mut report).await;
        // The restarted server's cache started empty: any miss now is a
        // trial that read Parquet.
        let after_restart = trials::cache_misses(&mut vector).await;
        report.cache_misses_during_trials = report
            .cache_misses_during_trials
            .map(|warm| warm + after_restart);
        out.trials = Some(report);
    }
    server.stop();
    out
}

fn search_request(q: &[f32]) -> pb::SearchRequest {
    pb::SearchRequest {
        index: INDEX.to_owned(),
        vector: q.to_vec(),
        k: K as u32,
        ef_search: Some(EF_SERVE as u32),
        ..Default::default()
    }
}

/// Single-query Search latencies at [`EF_SERVE`] and the call floor.
struct SingleCalls {
    search: Latency,
    server_side: Latency,
    call_floor: Latency,
    found: Vec<Vec<u32>>,
}

async fn single_calls(
    vector: &mut lakehouse_client::VectorClient,
    queries: &[f32],
    dim: usize,
) -> SingleCalls {
    for q in queries.chunks_exact(dim).take(WARMUP) {
        expect_ok(vector.search(search_request(q)).await, "Search");
    }
    let count = queries.len() / dim;
    let mut times = Vec::with_capacity(count);
    let mut server_side = Vec::with_capacity(count);
    let mut found = Vec::with_capacity(count);
    for q in queries.chunks_exact(dim) {
        let message = search_request(q);
        let t = Instant::now();
        let response = vector.search(message).await;
        times.push(t.elapsed());
        let response = expect_ok(response, "Search");
        server_side.push(Duration::from_micros(response.search_duration_us));
        found.push(hit_ids(&response.hits));
    }
    let mut floor = Vec::with_capacity(count);
    for i in 0..count + WARMUP {
        let t = Instant::now();
        expect_ok(
            vector.get_cache_stats(pb::GetCacheStatsRequest {}).await,
            "GetCacheStats",
        );
        if i >= WARMUP {
            floor.push(t.elapsed());
        }
    }
    SingleCalls {
        search: latency(&times),
        server_side: latency(&server_side),
        call_floor: latency(&floor),
        found,
    }
}

fn phase_name(phase: i32) -> String {
    pb::BuildPhase::try_from(phase).map_or_else(
        |_| format!("phase {phase}"),
        |p| {
            p.as_str_name()
                .trim_start_matches("BUILD_PHASE_")
                .to_lowercase()
        },
    )
}

fn print_server(ours: &InProcess, r: &Server) {
    let phases = r
        .phases
        .iter()
        .fold(String::new(), |mut acc, (name, secs)| {
            let _ = write!(
                acc,
                "{}{name} {secs:.2} s",
                if acc.is_empty() { "" } else { ", " }
            );
            acc
        });
    println!(
        "CreateIndex: {:.2} s wall (server build_duration_ms {} ms; phases seen by the client: {})",
        r.build_wall_s, r.build_duration_ms, phases
    );
    println!(
        "embedding load (GetCacheStats load_duration_ms): {} ms; cache holds {} MiB; generation memory \
         {:.1} MiB; server RSS {} MiB",
        r.load_ms.map_or("-".to_owned(), |v| v.to_string()),
        opt(r.cache_bytes.map(mib), 1),
        mib(r.generation_memory_bytes),
        opt(r.rss_after_build_kib.map(|k| k as f64 / 1024.0), 0)
    );
    let in_proc = ours.at(EF_SERVE).map(|e| e.latency.p50);
    println!(
        "gRPC Search ef {EF_SERVE}: recall@10 {:.4}, p50 {:.1} µs, p99 {:.1} µs (server-side p50 \
         {:.0} µs); in-process p50 {} µs; gRPC overhead {} µs",
        r.search_recall,
        r.search.p50,
        r.search.p99,
        r.server_side.p50,
        opt(in_proc, 1),
        opt(in_proc.map(|p| r.search.p50 - p), 1)
    );
    println!(
        "gRPC call floor (GetCacheStats, no work, same client and server stack): p50 {:.1} µs, \
         p99 {:.1} µs; Search beyond floor + server-side work: {:.1} µs",
        r.call_floor.p50,
        r.call_floor.p99,
        r.search.p50 - r.call_floor.p50 - r.server_side.p50
    );
    println!(
        "from a current-thread client: Search p50 {:.1} µs, p99 {:.1} µs (server-side p50 {:.0} \
         µs); gRPC overhead {} µs; call floor p50 {:.1} µs",
        r.lean_search.p50,
        r.lean_search.p99,
        r.lean_server_side.p50,
        opt(in_proc.map(|p| r.lean_search.p50 - p), 1),
        r.lean_call_floor.p50,
    );
    println!(
        "gRPC BatchSearch ef {EF_SERVE}: {:.0} queries/s (in process {:.0}, ratio {})",
        r.batch_qps,
        ours.batch_qps,
        ratio(Some(r.batch_qps), Some(ours.batch_qps))
    );
    println!(
        "restart: stopped in {:.2} s; listening after {:.0} ms, vector service SERVING after {:.0} \
         ms (index reloaded; in-process Graph::from_bytes {:.0} ms); server RSS {} MiB; same ids \
         for query 0: {}",
        r.stop_s,
        r.listening_ms,
        r.serving_ms,
        ours.from_bytes_ms,
        opt(r.rss_after_reload_kib.map(|k| k as f64 / 1024.0), 0),
        if r.same_ids { "yes" } else { "NO" }
    );
}

// ------------------------------------------------------------ 4. summary

fn print_summary(s: &Settings, ours: &InProcess, peers: Option<&Value>, server: Option<&Server>) {
    let h = peers.and_then(|p| peer(p, "hnswlib"));
    let f = peers.and_then(|p| peer(p, "faiss_hnsw"));
    let flat = peers.and_then(|p| peer(p, "faiss_flat"));
    println!(
        "\n== summary: n={} dim={} queries={} k={K} M={M} ef_construction={EF_CONSTRUCTION} \
         threads={}",
        s.n, s.dim, s.queries, s.threads
    );
    println!(
        "| {:<36} | {:>12} | {:>12} | {:>12} | {:>12} |",
        "measure", "ours", "gRPC server", "hnswlib", "faiss"
    );
    println!(
        "|{:-<38}|{:-<14}|{:-<14}|{:-<14}|{:-<14}|",
        "", "", "", "", ""
    );
    let row = |label: &str,
               o: Option<f64>,
               g: Option<f64>,
               hv: Option<f64>,
               fv: Option<f64>,
               d: usize| {
        println!(
            "| {label:<36} | {:>12} | {:>12} | {:>12} | {:>12} |",
            opt(o, d),
            opt(g, d),
            opt(hv, d),
            opt(fv, d)
        );
    };
    row(
        "build s",
        Some(ours.build_s),
        server.map(|r| r.build_wall_s),
        num(h, "build_s"),
        num(f, "build_s"),
        2,
    );
    row(
        "embedding load ms (server)",
        None,
        server.and_then(|r| r.load_ms).map(|v| v as f64),
        None,
        None,
        0,
    );
    row(
        "memory B/vector (index)",
        Some(ours.bytes_per_vector),
        None,
        num(h, "index_bytes").map(|b| b / s.n as f64),
        num(f, "index_bytes").map(|b| b / s.n as f64),
        0,
    );
    let o30 = ours.at(EF_SERVE);
    row(
        &format!("recall@10 ef {EF_SERVE}"),
        o30.map(|e| e.recall),
        server.map(|r| r.search_recall),
        num(peer_ef(h, EF_SERVE), "recall"),
        num(peer_ef(f, EF_SERVE), "recall"),
        4,
    );
    row(
        &format!("p50 µs ef {EF_SERVE} (1 query)"),
        o30.map(|e| e.latency.p50),
        server.map(|r| r.search.p50),
        num(peer_ef(h, EF_SERVE), "p50_us"),
        num(peer_ef(f, EF_SERVE), "p50_us"),
        1,
    );
    row(
        &format!("p99 µs ef {EF_SERVE} (1 query)"),
        o30.map(|e| e.latency.p99),
        server.map(|r| r.search.p99),
        num(peer_ef(h, EF_SERVE), "p99_us"),
        num(peer_ef(f, EF_SERVE), "p99_us"),
        1,
    );
    row(
        &format!("p50 µs at recall >= {RECALL_TARGET}"),
        ours.at_target().map(|e| e.latency.p50),
        None,
        peer_at_target(h).map(|(_, p)| p),
        peer_at_target(f).map(|(_, p)| p),
        1,
    );
    row(
        "  ... at ef",
        ours.at_target().map(|e| e.ef as f64),
        None,
        peer_at_target(h).map(|(ef, _)| ef as f64),
        peer_at_target(f).map(|(ef, _)| ef as f64),
        0,
    );
    row(
        &format!("batch queries/s ef {EF_SERVE}"),
        Some(ours.batch_qps),
        server.map(|r| r.batch_qps),
        peer_batch(h, EF_SERVE),
        peer_batch(f, EF_SERVE),
        0,
    );
    row(
        &format!("exact p50 µs ({} threads)", s.threads),
        Some(ours.exact.p50),
        None,
        None,
        num(flat, "p50_us_threads"),
        0,
    );
    row(
        "exact p50 µs (faiss_flat 1 thread)",
        None,
        None,
        None,
        num(flat, "p50_us_1thread"),
        0,
    );
    row(
        "gRPC overhead µs (p50 ef 30)",
        None,
        server.and_then(|r| o30.map(|e| r.search.p50 - e.latency.p50)),
        None,
        None,
        1,
    );
    row(
        "  from a current-thread client",
        None,
        server.and_then(|r| o30.map(|e| r.lean_search.p50 - e.latency.p50)),
        None,
        None,
        1,
    );
    row(
        "restart: SERVING after ms",
        Some(ours.from_bytes_ms),
        server.map(|r| r.serving_ms),
        None,
        None,
        0,
    );
    println!(
        "ratios: build ours/hnswlib {}; p50 at recall >= {RECALL_TARGET} ours/hnswlib {}; \
         exact p50 ours/faiss_flat {} (1 thread) {} ({} threads)",
        ratio(Some(ours.build_s), num(h, "build_s")),
        ratio(
            ours.at_target().map(|e| e.latency.p50),
            peer_at_target(h).map(|(_, p)| p)
        ),
        ratio(Some(ours.exact.p50), num(flat, "p50_us_1thread")),
        ratio(Some(ours.exact.p50), num(flat, "p50_us_threads")),
        s.threads
    );
    println!(
        "notes: ours = in process, no call overhead; the peers' single-query figures include the \
         Python call floor (printed above). \"restart\" in the ours column is Graph::from_bytes \
         alone. gRPC build s is CreateIndex wall time (load + insert + persist)."
    );
}
