//! The ingest service: it streams PostgreSQL tables and queries (binary
//! COPY inside one read-only snapshot) and uploaded CSV, NDJSON and Parquet
//! files into Parquet parts written through the storage service, and
//! registers them in the catalog with lineage in one commit. A failed or
//! cancelled ingest leaves the dataset as it was.
//!
//! Domain logic lives in plain modules; [`grpc`] only converts and delegates.
//! Design and measured figures: `docs/adr/0006-ingest-pipeline.md`.

mod arrow_builders;
mod config;
mod copy_binary;
mod csv_header;
mod dsn;
mod error;
mod file_ingest;
pub mod grpc;
mod history;
mod parquet_parts;
mod pg_schema;
mod pg_source;
mod pg_types;
mod pipeline;
mod postgres_ingest;
mod registry;
mod service;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use lakehouse_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use lakehouse_shared::secrets::SecretsProvider;

pub use config::IngestConfig;
pub use error::{Error, Result};
pub use grpc::IngestGrpc;
pub use pg_types::{PgType, UNCONSTRAINED_NUMERIC};

// Dev-dependencies of the integration tests (tests/) and the benchmark
// (examples/), which the unit tests do not use.
#[cfg(test)]
use {
    lakehouse_catalog as _, lakehouse_storage as _, lakehouse_testkit as _, serde_json as _,
    tracing_subscriber as _, uuid as _,
};

/// How long shutdown waits for cancelled ingests to delete their parts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Upload chunk size: big enough for few calls, small enough that the
/// storage client's queue stays a few tens of MB.
const UPLOAD_CHUNK_BYTES: usize = 4 << 20;

/// The ingest service with its clients and running ingests.
#[derive(Debug)]
pub struct IngestRuntime {
    ingestor: Arc<service::Ingestor>,
}

impl IngestRuntime {
    /// Builds the service. Storage and catalog (`http://host:port`) are
    /// connected lazily, so the ingest may start before its peers (or, in
    /// `serve all`, before its own server listens).
    pub async fn start(
        config: &IngestConfig,
        secrets: Arc<dyn SecretsProvider>,
        storage_addr: &str,
        catalog_addr: &str,
    ) -> Result<Self> {
        let storage_channel = lakehouse_client::connect_lazy(storage_addr)
            .map_err(|e| Error::InvalidRequest(format!("storage address {storage_addr:?}: {e}")))?;
        let catalog_channel = lakehouse_client::connect_lazy(catalog_addr)
            .map_err(|e| Error::InvalidRequest(format!("catalog address {catalog_addr:?}: {e}")))?;
        let ctx = pipeline::Context {
            storage: lakehouse_client::storage(storage_channel),
            catalog: lakehouse_client::catalog(catalog_channel),
            parts: parquet_parts::PartOptions {
                row_group_rows: usize::try_from(config.row_group_rows).unwrap_or(131_072),
                row_group_bytes: usize::try_from(config.row_group_bytes).unwrap_or(96 << 20),
                part_bytes: config.part_bytes,
                upload_chunk_bytes: UPLOAD_CHUNK_BYTES,
                zstd_level: config.zstd_level,
            },
            queue_batches: usize::try_from(config.queue_batches).unwrap_or(4),
        };
        tracing::info!(
            storage = storage_addr,
            catalog = catalog_addr,
            max_concurrent = config.max_concurrent,
            "ingest service ready"
        );
        // The history journal lives in storage's default bucket; it is read
        // back in the background, since storage may start after this
        // service (requests with a request_id wait for it).
        let history = history::History::new(Arc::new(lakehouse_client::GrpcObjectStore::new(
            ctx.storage.clone(),
            String::new(),
        )));
        let ingestor = Arc::new(service::Ingestor::new(
            config.clone(),
            secrets,
            ctx,
            history,
        ));
        let loader = ingestor.clone();
        tokio::spawn(async move { loader.load_history().await });
        if !config.sweep_interval.is_zero() {
            let sweeper = ingestor.clone();
            let interval = config.sweep_interval;
            tokio::spawn(async move { sweeper.sweep_periodically(interval).await });
        }
        Ok(Self { ingestor })
    }

    /// The gRPC service, with the process's message size limit.
    pub fn service(&self, max_message_bytes: usize) -> IngestServiceServer<IngestGrpc> {
        IngestServiceServer::new(IngestGrpc::new(self.ingestor.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// A handle that lets running ingests finish before the server stops
    /// (see [`IngestDrain::drain`]).
    pub fn drain_handle(&self) -> IngestDrain {
        IngestDrain {
            ingestor: self.ingestor.clone(),
        }
    }

    /// Cancels running ingests, which delete their parts, and waits for
    /// them (at most 10 s). Call after the server stopped accepting calls.
    pub async fn shutdown(self) {
        self.ingestor.shutdown(SHUTDOWN_GRACE).await;
    }
}

/// Lets running ingests finish when the process is asked to stop.
#[derive(Debug, Clone)]
pub struct IngestDrain {
    ingestor: Arc<service::Ingestor>,
}

impl IngestDrain {
    /// Refuses new ingests and waits, at most `grace`, for the running ones
    /// to finish. Call on the stop signal, before the server stops
    /// accepting calls: in `serve all` an ingest's commit is a call to this
    /// same server.
    pub async fn drain(&self, grace: Duration) {
        self.ingestor.drain(grace).await;
    }
}
