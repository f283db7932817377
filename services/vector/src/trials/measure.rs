//! Measuring a graph against an eval set: recall@k (with sampled queries'
//! own rows left out), single-query latency percentiles and batch
//! throughput. Pure functions over a [`Graph`]; the caller picks the thread
//! pool they run on.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::filter::plan::Ask;
use crate::filter::predicate::Predicate;
use crate::generation::LoadedGeneration;
use crate::hnsw::{Graph, Near};

/// Single-query samples a measurement aims for (queries are repeated when
/// the eval set is smaller), so p99 is not just the slowest query.
const LATENCY_SAMPLES: usize = 1000;
/// Most passes over the eval set for latency.
const MAX_LATENCY_PASSES: usize = 20;
/// Batch passes run for at least this long, to time throughput steadily.
const THROUGHPUT_MIN: Duration = Duration::from_millis(200);

/// One query of an eval set, ready to search.
#[derive(Debug, Clone)]
pub struct EvalQuery {
    /// The vector, prepared for the metric (normalised for cosine).
    pub vector: Vec<f32>,
    /// The row it was sampled from, left out of truth and results.
    pub exclude: Option<u32>,
    /// Exact neighbours' rows, nearest first (self excluded).
    pub truth: Vec<u32>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Mean.
    pub mean_us: u64,
}

/// What one ef_search gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Mean recall@k.
    pub recall: f64,
    /// Single-query latency.
    pub latency: Latency,
    /// Batch throughput, queries per second.
    pub queries_per_second: f64,
}

/// The `k` results of `query`, its own row left out: asks for one more
/// when a row is excluded so a self-match does not cost a slot.
pub fn search_excluding(graph: &Graph, query: &EvalQuery, k: usize, ef: usize) -> Vec<Near> {
    let want = k + usize::from(query.exclude.is_some());
    let mut hits = graph.search(&query.vector, want, ef.max(want));
    if let Some(own) = query.exclude {
        hits.retain(|h| h.id != own);
    }
    hits.truncate(k);
    hits
}

/// The `k` results of `query` on `generation`, as a search would answer
/// them: through the planner when the eval set has a filter.
pub fn search_as_asked(
    generation: &LoadedGeneration,
    query: &EvalQuery,
    k: usize,
    ef: usize,
    filter: Option<&Predicate>,
) -> Vec<Near> {
    match filter {
        None => search_excluding(&generation.graph, query, k, ef),
        Some(filter) => {
            let ask = Ask {
                query: &query.vector,
                k,
                ef,
                exact: false,
                exclude: query.exclude,
            };
            crate::filter::plan::run(generation, ask, Some(filter)).0
        }
    }
}

/// Fraction of the first `k` truth rows found among `found`, 0 to 1.
/// An empty truth (a corpus of one row, the query's own) counts as found.
pub fn recall_at(truth: &[u32], found: &[u32], k: usize) -> f64 {
    let truth = &truth[..truth.len().min(k)];
    if truth.is_empty() {
        return 1.0;
    }
    let hit = truth.iter().filter(|t| found.contains(t)).count();
    hit as f64 / truth.len() as f64
}

/// Mean recall@k of `graph` over `queries` with `ef` candidates.
pub fn mean_recall(
    generation: &LoadedGeneration,
    queries: &[EvalQuery],
    k: usize,
    ef: usize,
    filter: Option<&Predicate>,
) -> f64 {
    if queries.is_empty() {
        return 0.0;
    }
    let total: f64 = queries
        .par_iter()
        .map(|q| {
            let found: Vec<u32> = search_as_asked(generation, q, k, ef, filter)
                .iter()
                .map(|h| h.id)
                .collect();
            recall_at(&q.truth, &found, k)
        })
        .sum();
    total / queries.len() as f64
}

/// Percentiles of `samples` (nearest-rank), in microseconds.
pub fn percentiles(samples: &mut [Duration]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_micros() as u64
    };
    let total: Duration = samples.iter().sum();
    Latency {
        p50_us: at(0.50),
        p95_us: at(0.95),
        p99_us: at(0.99),
        mean_us: (total / samples.len() as u32).as_micros() as u64,
    }
}

/// Recall, latency (one query at a time on the calling thread) and
/// throughput (every query at once on the current rayon pool).
pub fn measure(
    generation: &LoadedGeneration,
    queries: &[EvalQuery],
    k: usize,
    ef: usize,
    filter: Option<&Predicate>,
) -> Measured {
    let recall = mean_recall(generation, queries, k, ef, filter);
    let passes = LATENCY_SAMPLES
        .div_ceil(queries.len().max(1))
        .clamp(1, MAX_LATENCY_PASSES);
    let mut samples = Vec::with_capacity(passes * queries.len());
    for _ in 0..passes {
        for q in queries {
            let started = Instant::now();
            std::hint::black_box(search_as_asked(generation, q, k, ef, filter));
            samples.push(started.elapsed());
        }
    }
    let latency = percentiles(&mut samples);
    let started = Instant::now();
    let mut searched = 0usize;
    while started.elapsed() < THROUGHPUT_MIN && !queries.is_empty() {
        queries.par_iter().for_each(|q| {
            std::hint::black_box(search_as_asked(generation, q, k, ef, filter));
        });
        searched += queries.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    Measured {
        recall,
        latency,
        queries_per_second: if seconds > 0.0 {
            searched as f64 / seconds
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_truth_found_by_hand() {
        // Truth 1,2,3,4; the search found 2, 4, 9 and 7: two of four.
        assert_eq!(recall_at(&[1, 2, 3, 4], &[2, 4, 9, 7], 4), 0.5);
        // recall@2 looks at the first two truth rows only: 2 is found, 1 is not.
        assert_eq!(recall_at(&[1, 2, 3, 4], &[2, 4, 9, 7], 2), 0.5);
        assert_eq!(recall_at(&[1, 2], &[1, 2], 2), 1.0);
        assert_eq!(recall_at(&[5], &[1, 2], 1), 0.0);
        assert_eq!(recall_at(&[], &[], 3), 1.0);
    }

    #[test]
    fn a_sampled_query_is_not_scored_against_itself() {
        let dim = 8;
        let vectors = std::sync::Arc::new(crate::hnsw::testing::clustered_vectors(400, dim, 4, 5));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let graph = crate::hnsw::build(
            vectors.clone(),
            dim,
            crate::Metric::L2,
            crate::hnsw::HnswParams::default(),
            1,
            &pool,
            &crate::hnsw::BuildControl::default(),
        )
        .expect("build");
        let own = 17u32;
        let query = EvalQuery {
            vector: vectors[own as usize * dim..(own as usize + 1) * dim].to_vec(),
            exclude: Some(own),
            truth: Vec::new(),
        };
        let hits = search_excluding(&graph, &query, 5, 40);
        assert_eq!(hits.len(), 5, "the freed slot is filled by the next row");
        assert!(hits.iter().all(|h| h.id != own));
        // Without the exclusion the row finds itself first, at distance 0.
        let plain = graph.search(&query.vector, 5, 40);
        assert_eq!((plain[0].id, plain[0].distance), (own, 0.0));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = percentiles(&mut samples);
        assert_eq!((l.p50_us, l.p95_us, l.p99_us), (50, 95, 99));
        assert_eq!(l.mean_us, 50);
    }
}
