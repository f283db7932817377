//! A trial as journaled: one line of NDJSON per measured point, so other
//! tools (jq, DuckDB `read_json`, pandas) read the journal as it is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::measure::Latency;
use crate::hnsw::HnswParams;

/// One measured point: build parameters and ef_search, and what they gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// `<run_id>.<build>.ef<ef_search>`.
    pub trial_id: String,
    /// The run (RunTrial or TuneIndex) that measured it.
    pub run_id: String,
    /// The index.
    pub index: String,
    /// The eval set.
    pub eval_set: String,
    /// Build parameters.
    pub params: HnswParams,
    /// Search candidate list size.
    pub ef_search: u32,
    /// The k of recall@k.
    pub k: u32,
    /// Mean recall@k.
    pub recall: f64,
    /// Single-query latency.
    pub latency: Latency,
    /// Batch throughput, queries per second.
    pub queries_per_second: f64,
    /// Build time, milliseconds.
    pub build_duration_ms: u64,
    /// Threads of the build.
    pub build_threads: u32,
    /// Graph memory (links, vectors, row columns), bytes.
    pub memory_bytes: u64,
    /// Vectors built on (fewer than the index's on a tuning sample).
    pub vector_count: u64,
    /// Dataset version of the vectors.
    pub dataset_version: u64,
    /// Generation the build was kept as; 0 when discarded.
    pub generation: u64,
    /// When it was measured.
    pub create_time: DateTime<Utc>,
}
