//! Part 4 of the vector benchmark: the trial system through the server.
//! An eval set of the held-out queries (exact truth computed by the
//! server), one trial right after the build (embedding cache warm) and one
//! after a restart (cache cold: trials use the loaded generation's vectors,
//! so neither reads Parquet), a sweep over M x ef_construction x ef_search
//! with its Pareto frontier, and TuneIndex to recall@10 >= 0.99.

use std::time::Instant;

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;

/// Name of the benchmark's eval set.
pub const EVAL_SET: &str = "bench-eval";
/// Build parameters of the sweep.
pub const SWEEP_BUILDS: [(u32, u32); 6] =
    [(8, 40), (8, 80), (16, 40), (16, 80), (16, 160), (32, 80)];
/// ef_search values of the sweep.
pub const SWEEP_EFS: [u32; 5] = [10, 20, 30, 50, 100];
/// The recall TuneIndex aims for.
pub const TUNE_TARGET: f64 = 0.99;

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub build_s: f64,
    pub recall: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub memory_bytes: u64,
    pub qps: f64,
}

impl Point {
    fn of(t: &pb::Trial) -> Self {
        let config = t.config.unwrap_or_default();
        let latency = t.latency.unwrap_or_default();
        Self {
            m: config.m,
            ef_construction: config.ef_construction,
            ef_search: t.ef_search,
            build_s: t.build_duration_ms as f64 / 1e3,
            recall: t.recall,
            p50_us: latency.p50_us,
            p99_us: latency.p99_us,
            memory_bytes: t.memory_bytes,
            qps: t.queries_per_second,
        }
    }

    fn dominates(&self, o: &Self) -> bool {
        let no_worse = self.recall >= o.recall
            && self.p50_us <= o.p50_us
            && self.build_s <= o.build_s
            && self.memory_bytes <= o.memory_bytes;
        no_worse
            && (self.recall > o.recall
                || self.p50_us < o.p50_us
                || self.build_s < o.build_s
                || self.memory_bytes < o.memory_bytes)
    }
}

/// What part 4 measured.
#[derive(Debug, Default)]
pub struct Report {
    pub eval_set_s: f64,
    pub warm_trial_s: Option<f64>,
    pub cold_trial_s: Option<f64>,
    pub cache_misses_during_trials: Option<u64>,
    pub sweep: Vec<Point>,
    pub sweep_s: f64,
    pub tune_s: f64,
    pub tune_trials: u32,
    pub tune_best: Option<Point>,
    pub tune_status: String,
}

/// Creates the eval set from the held-out queries.
pub async fn create_eval_set(
    vector: &mut VectorClient,
    queries: &[f32],
    dim: usize,
    n: usize,
    report: &mut Report,
) {
    let started = Instant::now();
    let response = vector
        .create_eval_set(pb::CreateEvalSetRequest {
            name: EVAL_SET.to_owned(),
            index: super::INDEX.to_owned(),
            k: super::K as u32,
            queries: Some(pb::create_eval_set_request::Queries::Given(
                pb::GivenQueries {
                    queries: queries
                        .chunks_exact(dim)
                        .take(n)
                        .map(|q| pb::QueryVector { vector: q.to_vec() })
                        .collect(),
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("CreateEvalSet failed: {status}"));
    report.eval_set_s = started.elapsed().as_secs_f64();
    let set = response.into_inner().eval_set.unwrap_or_default();
    println!(
        "eval set: {} queries, exact top-{} over the index in {:.2} s (server-side ground truth {} ms)",
        set.query_count, set.k, report.eval_set_s, set.ground_truth_duration_ms
    );
}

/// One RunTrial, drained; its trials and wall time.
pub async fn run_trial(
    vector: &mut VectorClient,
    m: u32,
    efc: u32,
    efs: &[u32],
) -> (Vec<pb::Trial>, f64) {
    let started = Instant::now();
    let mut stream = vector
        .run_trial(pb::RunTrialRequest {
            index: super::INDEX.to_owned(),
            eval_set: EVAL_SET.to_owned(),
            config: Some(pb::HnswConfig {
                m,
                ef_construction: efc,
            }),
            ef_search: efs.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("RunTrial failed: {status}"))
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(pb::RunTrialResponse {
                event: Some(pb::run_trial_response::Event::Finished(f)),
            })) => {
                if let Some(status) = f.status.as_ref().filter(|s| s.code != 0) {
                    panic!(
                        "RunTrial M={m} efc={efc} ended with {}: {}",
                        status.code, status.message
                    );
                }
                return (f.trials, started.elapsed().as_secs_f64());
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the RunTrial stream ended without `finished`"),
            Err(status) => panic!("RunTrial stream failed: {status}"),
        }
    }
}

/// Cache misses so far (a load from Parquet is a miss).
pub async fn cache_misses(vector: &mut VectorClient) -> u64 {
    vector
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .map(|r| r.into_inner().misses)
        .unwrap_or_default()
}

/// The sweep and TuneIndex (after the restart).
pub async fn sweep_and_tune(vector: &mut VectorClient, report: &mut Report) {
    let started = Instant::now();
    for (m, efc) in SWEEP_BUILDS {
        let (trials, wall) = run_trial(vector, m, efc, &SWEEP_EFS).await;
        eprintln!("  sweep: M={m} ef_construction={efc} done in {wall:.1} s");
        report.sweep.extend(trials.iter().map(Point::of));
    }
    report.sweep_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut stream = vector
        .tune_index(pb::TuneIndexRequest {
            index: super::INDEX.to_owned(),
            eval_set: EVAL_SET.to_owned(),
            min_recall: TUNE_TARGET,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("TuneIndex failed: {status}"))
        .into_inner();
    let finished = loop {
        match stream.message().await {
            Ok(Some(pb::TuneIndexResponse {
                event: Some(pb::tune_index_response::Event::Finished(f)),
            })) => break f,
            Ok(Some(pb::TuneIndexResponse {
                event: Some(pb::tune_index_response::Event::Trial(t)),
            })) => {
                let c = t.config.unwrap_or_default();
                eprintln!(
                    "  tune: {} vectors M={} efc={} ef={} recall={:.4} ({:.0} s)",
                    t.vector_count,
                    c.m,
                    c.ef_construction,
                    t.ef_search,
                    t.recall,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the TuneIndex stream ended without `finished`"),
            Err(status) => panic!("TuneIndex stream failed: {status}"),
        }
    };
    report.tune_s = started.elapsed().as_secs_f64();
    report.tune_trials = finished.trial_count;
    report.tune_best = finished.best.as_ref().map(Point::of);
    report.tune_status = finished
        .status
        .map(|s| {
            if s.code == 0 {
                "OK".to_owned()
            } else {
                format!("{}: {}", s.code, s.message)
            }
        })
        .unwrap_or_default();
}

/// Prints the sweep table, its Pareto frontier and the tune result.
pub fn print(report: &Report) {
    println!("\n== 4. trials through the server");
    println!(
        "eval set creation (exact truth, server): {:.2} s",
        report.eval_set_s
    );
    println!(
        "one trial (M 16, ef_construction 80, ef 30): warm cache {} s, after a restart (cold cache) {} s; Parquet loads during trials: {}",
        super::opt(report.warm_trial_s, 1),
        super::opt(report.cold_trial_s, 1),
        report
            .cache_misses_during_trials
            .map_or_else(|| "-".to_owned(), |m| m.to_string())
    );
    println!(
        "\nsweep ({} builds x {} ef_search in {:.0} s):",
        SWEEP_BUILDS.len(),
        SWEEP_EFS.len(),
        report.sweep_s
    );
    println!(
        "| M | ef_construction | ef_search | build s | recall@10 | p50 µs | p99 µs | memory MiB | q/s (batch) | Pareto |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &report.sweep {
        let front = !report.sweep.iter().any(|o| o.dominates(p));
        println!(
            "| {} | {} | {} | {:.1} | {:.4} | {} | {} | {:.0} | {:.0} | {} |",
            p.m,
            p.ef_construction,
            p.ef_search,
            p.build_s,
            p.recall,
            p.p50_us,
            p.p99_us,
            super::mib(p.memory_bytes),
            p.qps,
            if front { "yes" } else { "" }
        );
    }
    println!(
        "\nTuneIndex to recall@10 >= {TUNE_TARGET}: {} in {:.0} s over {} trials",
        report.tune_status, report.tune_s, report.tune_trials
    );
    if let Some(b) = &report.tune_best {
        println!(
            "  chose M={} ef_construction={} ef_search={}: recall {:.4}, p50 {} µs, build {:.1} s, {:.0} MiB",
            b.m,
            b.ef_construction,
            b.ef_search,
            b.recall,
            b.p50_us,
            b.build_s,
            super::mib(b.memory_bytes)
        );
    }
}
