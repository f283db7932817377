//! What the index operations ([`crate::VectorService`]) and the trial
//! operations ([`crate::trials::TrialService`]) share: the peers' clients,
//! the embedding cache, and the process's ready and draining flags. Both
//! hold it by `Arc` (and the index registry beside it), so neither has to
//! reach into the other to read a dataset, share cached vectors or learn
//! whether new work may start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_proto::catalog::v1 as catalog_pb;
use object_store::ObjectStore;
use tokio::sync::watch;

use crate::cache::EmbeddingCache;
use crate::config::VectorConfig;
use crate::error::{Error, Result};

/// The vector service's peers and process-wide state.
#[derive(Debug)]
pub struct ServiceContext {
    storage: StorageClient,
    catalog: CatalogClient,
    cache: EmbeddingCache,
    ready: watch::Sender<bool>,
    /// Set when the process stops: no new build or trial starts.
    draining: AtomicBool,
}

impl ServiceContext {
    /// Over the storage and catalog clients; not ready until
    /// [`Self::set_ready`].
    pub fn new(config: &VectorConfig, storage: StorageClient, catalog: CatalogClient) -> Self {
        Self {
            storage,
            catalog,
            cache: EmbeddingCache::new(config.cache_bytes),
            ready: watch::Sender::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// The embedding cache: one buffer per (dataset, version, column),
    /// shared by builds and eval sets.
    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// A bucket through the storage service (the empty name is the default
    /// bucket), as the `ObjectStore` Parquet readers take.
    pub fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(GrpcObjectStore::new(self.storage.clone(), bucket))
    }

    /// Turns true once persisted indexes are loaded.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Reports the persisted indexes loaded: calls are served from now on.
    pub(crate) fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Refuses calls that need the indexes while they are still loading.
    pub fn check_ready(&self) -> Result<()> {
        if *self.ready.borrow() {
            Ok(())
        } else {
            Err(Error::Loading)
        }
    }

    /// From now on, refuses new builds and trials (the process is stopping).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Refuses new builds and trials once the process is stopping.
    pub fn check_accepting_work(&self) -> Result<()> {
        if self.draining.load(Ordering::Relaxed) {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// The dataset's manifest from the catalog: version, bucket, and with
    /// `full` its files.
    pub async fn dataset(&self, name: &str, full: bool) -> Result<catalog_pb::Dataset> {
        let view = if full {
            catalog_pb::DatasetView::Full
        } else {
            catalog_pb::DatasetView::Basic
        };
        let response = self
            .catalog
            .clone()
            .get_dataset(catalog_pb::GetDatasetRequest {
                name: name.to_owned(),
                view: view as i32,
            })
            .await;
        match response {
            Ok(r) => r
                .into_inner()
                .dataset
                .ok_or_else(|| Error::DatasetNotFound {
                    dataset: name.to_owned(),
                }),
            Err(status) if status.code() == tonic::Code::NotFound => Err(Error::DatasetNotFound {
                dataset: name.to_owned(),
            }),
            Err(status) => Err(Error::catalog("get dataset")(status)),
        }
    }
}
