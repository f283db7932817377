//! The trial operations' shared state and request types: the eval set
//! store, the journal, runs, slots and the trial thread pool; memory
//! estimates and query checks.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_shared::request_id::RequestLog;
use object_store::ObjectStore;
use tokio::sync::Semaphore;

use super::eval_set::{EvalSetRecord, EvalSetStore};
use super::journal::TrialJournal;
use super::measure::EvalQuery;
use super::rank::Objective;
use super::record::TrialRecord;
use super::run::{Run, Runs};
use crate::config::VectorConfig;
use crate::error::Result;
use crate::generation::LoadedGeneration;
use crate::hnsw::HnswParams;
use crate::registry::IndexEntry;

/// Default queries of a sampled eval set.
pub const DEFAULT_QUERY_COUNT: usize = 100;
/// Most queries of an eval set.
pub const MAX_QUERY_COUNT: usize = 10_000;
/// Most ef_search values of one RunTrial.
pub const MAX_SWEEP: usize = 32;

/// Shared state of the trial operations.
#[derive(Debug)]
pub struct TrialState {
    pub(super) evals: EvalSetStore,
    pub(super) journal: TrialJournal,
    pub(super) runs: Runs,
    pub(super) slots: Arc<Semaphore>,
    pub(super) pool: Arc<rayon::ThreadPool>,
    pub(super) threads: usize,
    pub(super) memory_budget: u64,
    pub(super) replies: RequestLog<String>,
}

impl TrialState {
    /// Trial state over `store` (the default bucket).
    pub fn new(config: &VectorConfig, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let threads = match config.trial_threads {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vector-trial-{i}"))
            .build()?;
        Ok(Self {
            evals: EvalSetStore::new(store.clone()),
            journal: TrialJournal::new(store),
            runs: Runs::default(),
            slots: Arc::new(Semaphore::new(config.max_trials as usize)),
            pool: Arc::new(pool),
            threads,
            memory_budget: config.trial_memory_bytes,
            replies: RequestLog::new(1024),
        })
    }
}

/// Where an eval set's queries come from.
#[derive(Debug, Clone)]
pub enum EvalQueries {
    /// Sample this many of the index's vectors with this seed.
    Sample {
        /// Queries.
        count: usize,
    },
    /// These vectors.
    Given(Vec<Vec<f32>>),
    /// A dataset's vector column (its first `limit` rows; 0 for all).
    DatasetColumn {
        /// Dataset.
        dataset: String,
        /// Column.
        column: String,
        /// Most rows.
        limit: usize,
    },
}

/// What CreateEvalSet asks for, validated except against the index.
#[derive(Debug, Clone)]
pub struct NewEvalSet {
    /// Name.
    pub name: String,
    /// Index.
    pub index: String,
    /// Truth neighbours per query.
    pub k: usize,
    /// Sampler seed.
    pub seed: u64,
    /// Queries.
    pub queries: EvalQueries,
    /// Only rows passing this count (truth and trials).
    pub filter: Option<crate::filter::Filter>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// What RunTrial asks for.
#[derive(Debug, Clone)]
pub struct NewTrial {
    /// Index.
    pub index: String,
    /// Eval set.
    pub eval_set: String,
    /// Build parameters.
    pub params: HnswParams,
    /// The sweep; empty measures the index's ef_search.
    pub ef_search: Vec<u32>,
    /// k of recall@k; None uses the eval set's.
    pub k: Option<usize>,
    /// Keep the build as an inactive generation.
    pub keep_generation: bool,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// What TuneIndex asks for.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// Index.
    pub index: String,
    /// Eval set.
    pub eval_set: String,
    /// Starting candidates; empty uses the built-in grid.
    pub candidates: Vec<HnswParams>,
    /// Recall target.
    pub min_recall: f64,
    /// Objective.
    pub objective: Objective,
    /// Promote the winner.
    pub promote: bool,
    /// Full-size builds.
    pub max_builds: usize,
    /// Stop starting builds after this long.
    pub time_budget: Option<Duration>,
    /// k of recall@k; None uses the eval set's.
    pub k: Option<usize>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// A started (or replayed) run.
#[derive(Debug)]
pub struct TrialTicket {
    /// The run.
    pub run: Arc<Run>,
    /// A retry of an earlier request.
    pub replayed: bool,
}

/// What a run works on, checked before it starts.
pub(super) struct Setup {
    pub(super) entry: Arc<IndexEntry>,
    pub(super) active: Arc<LoadedGeneration>,
    pub(super) eval: EvalSetRecord,
    pub(super) queries: Arc<Vec<EvalQuery>>,
    pub(super) k: usize,
    /// The eval set's filter bound to the active generation's rows (a
    /// trial's graph is built on the same rows, in the same order).
    pub(super) filter: Option<Arc<crate::filter::predicate::Predicate>>,
}

/// Filters of ListTrials.
#[derive(Debug, Clone, Default)]
pub struct TrialFilter {
    /// Eval set.
    pub eval_set: Option<String>,
    /// M.
    pub m: Option<usize>,
    /// ef_construction.
    pub ef_construction: Option<usize>,
    /// ef_search.
    pub ef_search: Option<u32>,
    /// Run.
    pub run_id: Option<String>,
}

impl TrialFilter {
    pub(super) fn keeps(&self, t: &TrialRecord) -> bool {
        self.eval_set.as_ref().is_none_or(|e| *e == t.eval_set)
            && self.m.is_none_or(|m| m == t.params.m)
            && self
                .ef_construction
                .is_none_or(|e| e == t.params.ef_construction)
            && self.ef_search.is_none_or(|e| e == t.ef_search)
            && self.run_id.as_ref().is_none_or(|r| *r == t.run_id)
    }
}

/// Bytes a build of `n` vectors with `params` takes at its peak (the
/// building lists and the frozen arrays), plus a sample's vectors.
pub fn trial_memory(n: usize, dim: usize, params: HnswParams, sample: bool) -> u64 {
    let links = (n as u64) * (16 * params.m as u64 + 40) * 11 / 10;
    let copy = if sample { (n * dim * 4) as u64 } else { 0 };
    links + copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimate_grows_with_m_and_samples() {
        let small = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 8,
                ef_construction: 64,
            },
            false,
        );
        let large = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 32,
                ef_construction: 64,
            },
            false,
        );
        assert!(small < large);
        let sampled = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 8,
                ef_construction: 64,
            },
            true,
        );
        assert_eq!(sampled - small, 100_000 * 768 * 4);
    }
}
