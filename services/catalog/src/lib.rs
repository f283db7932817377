//! The catalog service: it owns dataset manifests (files, schema, row
//! counts, lineage, version) in SQLite or PostgreSQL, and repairs manifests
//! that drifted from their files by reading only Parquet footers.
//!
//! Layout: [`model`] (validated values), [`store`] (the manifest store
//! trait and its two sqlx backends), `catalog` (the operations, over a store
//! and the storage service), `resync` and `footer` (repair), and [`grpc`],
//! which only converts and delegates.

mod catalog;
mod config;
mod error;
mod footer;
pub mod grpc;
pub mod model;
mod redact;
mod resync;
mod storage;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use lakehouse_proto::catalog::v1::catalog_service_server::CatalogServiceServer;

use crate::store::StoreOptions;

pub use catalog::{Catalog, Deleted, MissingReport};
pub use config::{CatalogConfig, CatalogPasswordConfig};
pub use error::{Error, Result};
pub use footer::{FOOTER_PREFETCH, Footer, FooterError, read_footer};
pub use redact::redact_secrets;
pub use resync::{FieldChange, FileChange, FileChangeKind, FileProblem, ResyncReport};
pub use storage::StorageAccess;

// Dev-dependencies of the integration tests (tests/), which the unit
// tests do not use.
#[cfg(test)]
use {arrow as _, lakehouse_testkit as _, tempfile as _};

/// The catalog service with its database connections.
#[derive(Debug)]
pub struct CatalogRuntime {
    catalog: Arc<Catalog>,
}

impl CatalogRuntime {
    /// Opens the store (the embedded SQLite file under `data_dir` unless
    /// `--catalog-url` names another), applies migrations, and prepares a
    /// storage client for `storage_addr` (such as "http://127.0.0.1:50051").
    /// The client connects on first use: in `serve all` storage is this very
    /// process and starts serving only after construction.
    pub async fn start(
        config: &CatalogConfig,
        data_dir: &Path,
        storage_addr: &str,
    ) -> Result<Self> {
        Self::start_with_password(config, None, data_dir, storage_addr).await
    }

    /// [`CatalogRuntime::start`] with the PostgreSQL password resolved from
    /// the secrets provider (`--catalog-password-secret`); the URL must then
    /// hold none.
    pub async fn start_with_password(
        config: &CatalogConfig,
        password: Option<lakehouse_shared::secrets::SecretString>,
        data_dir: &Path,
        storage_addr: &str,
    ) -> Result<Self> {
        let options = StoreOptions {
            password,
            ..config.store_options()
        };
        let store = store::open(config.catalog_url.as_deref(), data_dir, &options).await?;
        let backend = match config.catalog_url.as_deref() {
            None => format!("sqlite {}", data_dir.join("catalog.sqlite").display()),
            Some(url) => redact_secrets(url),
        };
        tracing::info!(store = %backend, storage = storage_addr, "catalog ready");
        let client = lakehouse_client::storage(lakehouse_client::connect_lazy(storage_addr)?);
        let catalog = Catalog::new(
            store,
            StorageAccess::new(client),
            config.catalog_resync_concurrency,
        );
        Ok(Self {
            catalog: Arc::new(catalog),
        })
    }

    /// The domain object, for in-process use and tests.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The gRPC service, with the process's message size limit.
    pub fn service(&self, max_message_bytes: usize) -> CatalogServiceServer<grpc::CatalogGrpc> {
        CatalogServiceServer::new(grpc::CatalogGrpc::new(self.catalog.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// Closes the database connections; call after the server has drained.
    pub async fn shutdown(self) {
        self.catalog.store().close().await;
    }
}
