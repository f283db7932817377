//! The storage service: it owns every byte and every credential.
//!
//! Buckets are named `object_store` backends (local folder, S3/MinIO, memory)
//! configured from a TOML file, with credentials resolved through a
//! `SecretsProvider`. Reads that fail on a bucket's primary backend are served
//! from its rescue bucket. Every operational failure is journaled in a
//! write-once append log in the default bucket.
//!
//! Domain logic lives in plain modules; [`grpc`] only converts and delegates.

mod config;
mod error;
pub mod grpc;
mod journal;
mod keys;
mod objects;
mod registry;
mod sweep;

use std::path::Path;
use std::sync::Arc;

use lakehouse_proto::storage::v1::storage_service_server::StorageServiceServer;
use lakehouse_shared::secrets::SecretsProvider;
use tokio_util::sync::CancellationToken;

pub use config::{BackendConfig, BucketConfig, BucketsFile, StorageConfig};
pub use error::{Error, Result};
pub use journal::{ErrorJournal, ErrorRecord, JOURNAL_PREFIX};
pub use keys::validate_key;
pub use objects::{GetOutcome, ObjectRange, PutOptions, Storage};
pub use registry::{Backend, Bucket, BucketRegistry};
pub use sweep::Leftover;

#[cfg(test)]
use {lakehouse_client as _, tempfile as _};

/// The metadata key that tells a caller its read was served by a rescue bucket.
pub const RESCUE_METADATA_KEY: &str = "x-lakehouse-rescue-used";

/// The gRPC service over `storage`, with a message size limit (also for
/// tests and embedding that build `Storage` themselves).
pub fn service(
    storage: Arc<Storage>,
    max_message_bytes: usize,
) -> StorageServiceServer<grpc::StorageGrpc> {
    StorageServiceServer::new(grpc::StorageGrpc::new(storage))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The storage service with its background work (the journal flusher, the
/// sweeper of interrupted uploads' leftovers).
#[derive(Debug)]
pub struct StorageRuntime {
    storage: Arc<Storage>,
    stop: CancellationToken,
    flusher: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl StorageRuntime {
    /// Builds the buckets and starts the journal flusher. With no buckets
    /// file, one local bucket `default` lives under `<data_dir>/buckets/default`.
    pub async fn start(
        config: &StorageConfig,
        data_dir: &Path,
        secrets: Arc<dyn SecretsProvider>,
    ) -> Result<Self> {
        let file = match &config.buckets_config {
            Some(path) => BucketsFile::load(path)?,
            None => {
                let file = BucketsFile::embedded(data_dir);
                tracing::info!(
                    folder = %data_dir.join("buckets").join("default").display(),
                    "no buckets config; using one local bucket `default`"
                );
                file
            }
        };
        let started = std::time::Instant::now();
        let registry = BucketRegistry::build(&file, secrets.as_ref())?;
        let storage = Arc::new(Storage::new(registry, config.probe_timeout));
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(journal::flush_periodically(
            storage.journal().clone(),
            config.journal_flush_interval,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(sweep::sweep_periodically(
            storage.clone(),
            config.leftover_sweep_interval,
            config.leftover_grace,
            stop.clone(),
            started,
        ));
        Ok(Self {
            storage,
            stop,
            flusher,
            sweeper,
        })
    }

    /// The domain object, for in-process use and tests.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The gRPC service, with the process's message size limit.
    pub fn service(&self, max_message_bytes: usize) -> StorageServiceServer<grpc::StorageGrpc> {
        service(self.storage.clone(), max_message_bytes)
    }

    /// Stops the flusher and the sweeper, and writes out what the journal
    /// still buffers.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(error) = self.sweeper.await {
            tracing::warn!(%error, "leftover sweeper ended abnormally");
        }
        if let Err(error) = self.flusher.await {
            tracing::warn!(%error, "journal flusher ended abnormally");
        }
        match self.storage.journal().flush().await {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "journal entries not flushed at shutdown"),
        }
    }
}
