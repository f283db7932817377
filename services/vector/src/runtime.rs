//! The vector service as a process runs it: the shared context, the index
//! registry, and the two services over them (index operations, trials),
//! started, served, and stopped in order. The one place that holds both
//! services, so neither has to know the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_proto::vector::v1::vector_service_server::VectorServiceServer;
use object_store::ObjectStore;

use crate::config::VectorConfig;
use crate::context::ServiceContext;
use crate::error::Result;
use crate::grpc::VectorGrpc;
use crate::registry::IndexRegistry;
use crate::service::VectorService;
use crate::store::IndexStore;
use crate::trials::TrialService;

/// The vector service with its peers' clients.
#[derive(Debug, Clone)]
pub struct VectorRuntime {
    service: Arc<VectorService>,
    trials: Arc<TrialService>,
    context: Arc<ServiceContext>,
}

impl VectorRuntime {
    /// Prepares the service over the storage and catalog at these addresses
    /// (clients connect on first use). Call [`Self::load_persisted`] once the
    /// server is accepting calls.
    pub fn start(config: &VectorConfig, storage_addr: &str, catalog_addr: &str) -> Result<Self> {
        let storage = lakehouse_client::storage(lakehouse_client::connect_lazy(storage_addr)?);
        let catalog = lakehouse_client::catalog(lakehouse_client::connect_lazy(catalog_addr)?);
        let objects: Arc<dyn ObjectStore> = Arc::new(GrpcObjectStore::new(storage.clone(), ""));
        Self::with_store(config, storage, catalog, objects)
    }

    /// The service with its indexes, eval sets and trial journal kept in
    /// `objects` (the default bucket, or a wrapper of it that tests inject
    /// faults into).
    pub fn with_store(
        config: &VectorConfig,
        storage: StorageClient,
        catalog: CatalogClient,
        objects: Arc<dyn ObjectStore>,
    ) -> Result<Self> {
        let context = Arc::new(ServiceContext::new(config, storage.clone(), catalog));
        let registry = Arc::new(IndexRegistry::new(
            IndexStore::new(objects.clone()),
            storage,
        ));
        let service = VectorService::new(config, context.clone(), registry.clone())?;
        let trials = TrialService::new(config, context.clone(), registry, objects)?;
        Ok(Self {
            service: Arc::new(service),
            trials: Arc::new(trials),
            context,
        })
    }

    /// The index operations, for in-process use and tests.
    pub fn service(&self) -> &Arc<VectorService> {
        &self.service
    }

    /// The trial operations, for in-process use and tests.
    pub fn trials(&self) -> &Arc<TrialService> {
        &self.trials
    }

    /// Loads persisted indexes, then reports ready.
    pub async fn load_persisted(&self) {
        self.service.load_persisted().await;
    }

    /// On shutdown, while storage still answers: refuses new builds and
    /// trials, cancels the running ones and waits (at most `grace`) until
    /// each has recorded its end, so a build interrupted by a stop reads
    /// CANCELLED, not FAILED by the next start, and leaves no files. Call
    /// when the process is asked to stop, before the server and storage
    /// stop. Returns whether everything ended in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.context.start_draining();
        let builds = self.service.cancel_builds();
        let runs = self.trials.cancel_runs();
        if builds + runs > 0 {
            tracing::info!(
                builds,
                trial_runs = runs,
                "stopping: cancelling running builds and trials"
            );
        }
        let running = || self.service.running_builds() + self.trials.running_runs();
        let deadline = Instant::now() + grace;
        while running() > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    left = running(),
                    "builds still running at the end of the shutdown grace; the next start marks them failed"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Turns true when persisted indexes are loaded (health gates on it).
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.context.ready()
    }

    /// The gRPC service, with the process's message size limit.
    pub fn grpc(&self, max_message_bytes: usize) -> VectorServiceServer<VectorGrpc> {
        VectorServiceServer::new(VectorGrpc::new(
            self.service.clone(),
            self.trials.clone(),
            max_message_bytes,
        ))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
    }
}
