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
//! state machine, crash-safe, with recovery at start), `service` (index
//! operations), `builder` (builds), `search`, `progress` (build events) and
//! [`grpc`], which only converts and delegates.

mod builder;
mod cache;
mod checks;
mod config;
mod embeddings;
mod error;
pub mod filter;
mod generation;
pub mod grpc;
mod json_record;
mod progress;
mod record;
mod registry;
mod search;
mod service;
mod store;
pub mod trials;

use std::sync::Arc;

use lakehouse_proto::vector::v1::vector_service_server::VectorServiceServer;

pub use cache::{CacheStats, EmbeddingCache};
pub use config::VectorConfig;
pub use embeddings::{DataFile, Embeddings, LoadSpec};
pub use error::{Error, Result};
/// The HNSW engine this service drives.
pub use lakehouse_hnsw as hnsw;
pub use lakehouse_hnsw::{Metric, exact_search};
pub use record::GenerationState;
pub use service::{DEFAULT_EF_SEARCH, DEFAULT_K, MAX_K, VectorService};
pub use store::{IndexStore, generation_prefix, record_key};

#[cfg(test)]
use {
    lakehouse_catalog as _, lakehouse_storage as _, tempfile as _, tokio_util as _,
    tonic_health as _,
};

/// The vector service with its peers' clients.
#[derive(Debug, Clone)]
pub struct VectorRuntime {
    service: Arc<VectorService>,
}

impl VectorRuntime {
    /// Prepares the service over the storage and catalog at these addresses
    /// (clients connect on first use). Call [`Self::load_persisted`] once the
    /// server is accepting calls.
    pub fn start(config: &VectorConfig, storage_addr: &str, catalog_addr: &str) -> Result<Self> {
        let storage = lakehouse_client::storage(lakehouse_client::connect_lazy(storage_addr)?);
        let catalog = lakehouse_client::catalog(lakehouse_client::connect_lazy(catalog_addr)?);
        Ok(Self {
            service: Arc::new(VectorService::new(config, storage, catalog)?),
        })
    }

    /// The domain object, for in-process use and tests.
    pub fn service(&self) -> &Arc<VectorService> {
        &self.service
    }

    /// Loads persisted indexes, then reports ready.
    pub async fn load_persisted(&self) {
        self.service.load_persisted().await;
    }

    /// Cancels running builds and trials and waits (at most `grace`) for
    /// each to record its end. Call when the process is asked to stop,
    /// before the server and storage stop.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.service.drain(grace).await
    }

    /// Turns true when persisted indexes are loaded (health gates on it).
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.service.ready()
    }

    /// The gRPC service, with the process's message size limit.
    pub fn grpc(&self, max_message_bytes: usize) -> VectorServiceServer<grpc::VectorGrpc> {
        VectorServiceServer::new(grpc::VectorGrpc::new(
            self.service.clone(),
            max_message_bytes,
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
    }
}
