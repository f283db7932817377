//! The tuning half of the vector service: eval sets (queries with exact
//! ground truth), trials (a build measured against an eval set, journaled
//! as data), BestTrial, and TuneIndex (successive halving over build
//! parameters). [`TrialService`] is a service of its own beside
//! [`crate::VectorService`]: it holds the index registry and the shared
//! context by `Arc` and never the index service, which knows nothing of
//! trials.
//!
//! Trials build on the vectors of the index's active generation, which are
//! already in memory (after a build they are the embedding cache's own
//! buffer): no Parquet is read, and no copy is made except for the samples
//! TuneIndex builds its early rungs on. Trials run on their own thread pool
//! (`--vector-trial-threads`), at most `--vector-max-trials` at once, under a
//! memory budget checked before each build; searches never wait for them.

mod eval_ops;
pub mod eval_set;
pub mod journal;
mod journal_ops;
pub mod measure;
pub mod rank;
pub mod record;
pub mod run;
mod run_ops;
mod service;
mod state;
pub mod tune;
mod tune_ops;

pub use service::TrialService;
pub use state::{
    DEFAULT_QUERY_COUNT, EvalQueries, MAX_QUERY_COUNT, MAX_SWEEP, NewEvalSet, NewTrial,
    TrialFilter, TrialState, TrialTicket, TuneRequest,
};
