//! The vector service: the embedding cache, HNSW indexes over catalog
//! datasets, search, persistence and hot-swapped generations; and the
//! tuning half in [`trials`]: eval sets, journaled trials, BestTrial and
//! TuneIndex.
//!
//! Layout: the engine is the `lakehouse-hnsw` crate (graph build and
//! search, distance kernels, metrics, exact search), re-exported as
//! [`hnsw`]; here are `embeddings` and `cache` (loading vectors from Parquet),
//! `store` and `json_record` (how records and generations live in storage,
//! every byte checksummed), `registry` (index records and the generation
//! state machine, crash-safe, with recovery at start), `context` (what the
//! two services share: peers' clients, the cache, the ready and draining
//! flags), `service` (index operations), `builder` (builds), `search`,
//! `progress` (build events), [`trials`] (the trial service, beside the
//! index service, never inside it), `runtime` (the one place holding
//! both) and [`grpc`], which only converts and delegates.

mod builder;
mod cache;
mod checks;
mod config;
mod context;
mod embeddings;
mod error;
pub mod filter;
mod generation;
pub mod grpc;
mod json_record;
mod limits;
mod progress;
mod record;
mod registry;
mod runtime;
mod search;
mod service;
mod store;
pub mod trials;

pub use cache::{CacheStats, EmbeddingCache};
pub use config::VectorConfig;
pub use context::ServiceContext;
pub use embeddings::{DataFile, Embeddings, LoadSpec};
pub use error::{Error, Result};
/// The HNSW engine this service drives.
pub use lakehouse_hnsw as hnsw;
pub use lakehouse_hnsw::{Metric, exact_search};
pub use limits::{DEFAULT_EF_SEARCH, DEFAULT_K, MAX_K};
pub use record::GenerationState;
pub use runtime::VectorRuntime;
pub use service::VectorService;
pub use store::{IndexStore, generation_prefix, record_key};

// Dev-dependencies of the integration tests (tests/) and the benchmark,
// which the unit tests do not use.
#[cfg(test)]
use {lakehouse_testkit as _, tempfile as _, tokio_util as _, tonic_health as _};
