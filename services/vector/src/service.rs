//! The vector service's index operations, over the index registry (records
//! and generations in storage) and the shared context (the catalog, the
//! embedding cache, the ready and draining flags). Builds are in
//! [`crate::builder`], searches in [`crate::search`]; `grpc` only converts
//! and delegates.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_shared::request_id::RequestLog;
use tokio::sync::{Semaphore, watch};

use crate::cache::EmbeddingCache;
use crate::config::VectorConfig;
use crate::context::ServiceContext;
use crate::embeddings::Embeddings;
use crate::error::{Error, Result};
use crate::hnsw::HnswParams;
use crate::progress::BuildTicket;
use crate::record::{GenerationRecord, IndexDefinition, IndexRecord, Swap};
use crate::registry::{IndexEntry, IndexRegistry, Reserved};

/// What CreateIndex asks for, validated.
#[derive(Debug, Clone)]
pub struct NewIndex {
    /// Name.
    pub name: String,
    /// What it indexes and its settings.
    pub definition: IndexDefinition,
    /// Build parameters of the first generation.
    pub params: HnswParams,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// What EvictCache released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Entries dropped.
    pub entries: u64,
    /// Bytes no one else held: released.
    pub freed_bytes: u64,
    /// Bytes active generations still hold.
    pub pinned_bytes: u64,
    /// Those generations: (index, generation).
    pub pinned_by: Vec<(String, u64)>,
}

/// An index as GetIndex shows it.
#[derive(Debug, Clone)]
pub struct IndexView {
    /// The record.
    pub record: IndexRecord,
    /// Memory of the active generation.
    pub memory_bytes: u64,
    /// The dataset's current version, when the catalog was asked.
    pub current_dataset_version: Option<u64>,
    /// Why the active generation cannot be searched, while it cannot.
    pub load_error: Option<String>,
    /// Why the record cannot be read, if it cannot (the index is DAMAGED).
    pub damaged: Option<String>,
}

/// The index operations: create, rebuild, read, change and delete
/// indexes and their generations, over the registry; builds and searches
/// are in their own modules. Trials are a service of their own
/// ([`crate::trials::TrialService`]) over the same registry and context.
#[derive(Debug)]
pub struct VectorService {
    pub(crate) context: Arc<ServiceContext>,
    pub(crate) registry: Arc<IndexRegistry>,
    pub(crate) build_slots: Arc<Semaphore>,
    pub(crate) pool: Arc<rayon::ThreadPool>,
    replies: RequestLog<Option<IndexRecord>>,
}

impl VectorService {
    /// The index operations over `registry`, with their own build slots and
    /// thread pool; not ready until [`Self::load_persisted`].
    pub(crate) fn new(
        config: &VectorConfig,
        context: Arc<ServiceContext>,
        registry: Arc<IndexRegistry>,
    ) -> Result<Self> {
        let threads = match config.build_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vector-build-{i}"))
            .build()?;
        Ok(Self {
            context,
            registry,
            build_slots: Arc::new(Semaphore::new(config.max_builds as usize)),
            pool: Arc::new(pool),
            replies: RequestLog::new(4096),
        })
    }

    /// Turns true once persisted indexes are loaded.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.context.ready()
    }

    /// The embedding cache.
    pub fn cache(&self) -> &EmbeddingCache {
        self.context.cache()
    }

    /// The active generations (index, generation) built on `embeddings`,
    /// which share its vectors and rows.
    pub fn holders(&self, embeddings: &Embeddings) -> Vec<(String, u64)> {
        self.registry
            .all()
            .iter()
            .filter_map(|entry| {
                let active = entry.active()?;
                Arc::ptr_eq(active.graph.vectors(), &embeddings.vectors)
                    .then(|| (entry.name().to_owned(), active.generation))
            })
            .collect()
    }

    /// Drops cached embeddings (of `dataset`, or all) and says what that
    /// released and what active generations keep in memory.
    pub fn evict_cache(&self, dataset: Option<&str>) -> Evicted {
        let mut evicted = Evicted::default();
        for entry in self.cache().evict(dataset) {
            evicted.entries += 1;
            let holders = self.holders(&entry);
            if holders.is_empty() {
                evicted.freed_bytes += entry.memory_bytes();
            } else {
                evicted.pinned_bytes += entry.memory_bytes();
                evicted.pinned_by.extend(holders);
            }
        }
        evicted
    }

    /// Generations read back from storage since start (a restart that
    /// reloads instead of rebuilding counts here, never as a build).
    pub fn generation_reads(&self) -> u64 {
        self.registry.generation_reads()
    }

    /// Recovers every persisted index (see `registry::recovery`) and loads
    /// its active generation, retrying while the storage service cannot be
    /// reached (in `serve all` it is this very process, starting), then
    /// turns ready.
    pub async fn load_persisted(&self) {
        let names = loop {
            match self.registry.store().list_indexes().await {
                Ok(names) => break names,
                Err(error) => {
                    tracing::warn!(%error, "cannot list persisted indexes yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        for name in &names {
            if let Err(error) = self.registry.recover(name).await {
                // Listed as damaged, so it is neither hidden nor overwritten;
                // RepairIndex loads it once storage answers again.
                tracing::error!(index = %name, %error, "cannot load persisted index");
                self.registry.register_unreadable(
                    name,
                    format!("it could not be read at start ({error}); RepairIndex retries"),
                );
            }
        }
        self.context.set_ready();
        tracing::info!(indexes = self.registry.all().len(), "vector indexes loaded");
    }

    /// Starts building the first generation of a new index.
    pub async fn create_index(self: &Arc<Self>, new: NewIndex) -> Result<BuildTicket> {
        self.context.check_ready()?;
        self.context.check_accepting_work()?;
        if let Some(request_id) = &new.request_id
            && let Ok(entry) = self.registry.usable(&new.name)
        {
            let replay = entry.with_record(|record| {
                (record.create_request_id.as_ref() == Some(request_id))
                    .then(|| record.generations.first().map(|g| g.generation))
                    .flatten()
            });
            if let Some(generation) = replay {
                return Ok(self.replay(&entry, generation));
            }
        }
        // Fail fast on what the catalog already tells: the dataset and its columns.
        let def = &new.definition;
        let dataset = self.context.dataset(&def.dataset, false).await?;
        let columns: Vec<String> = dataset
            .schema
            .iter()
            .flat_map(|s| s.columns.iter().map(|c| c.name.clone()))
            .collect();
        if !columns.is_empty() {
            let wanted = std::iter::once(&def.vector_column)
                .chain(std::iter::once(&def.id_column))
                .chain(&def.text_column)
                .chain(&def.payload_columns);
            for column in wanted {
                if !columns.contains(column) {
                    return Err(Error::ColumnNotFound {
                        dataset: def.dataset.clone(),
                        column: column.clone(),
                        available: columns,
                    });
                }
            }
        }
        let mut record = IndexRecord::new(&new.name, new.definition, new.request_id.clone());
        let generation = record.reserve(new.params, new.request_id);
        let entry = self.registry.create(record).await?;
        Ok(self.start_build(entry, generation, new.params, true))
    }

    /// The build parameters of the index's active generation, read from
    /// its record in memory (no catalog or storage call).
    pub fn active_params(&self, name: &str) -> Option<HnswParams> {
        let entry = self.registry.get(name).ok()?;
        entry.with_record(|record| record.generation(record.active).map(|g| g.params))
    }

    /// Starts building a new generation of an existing index.
    pub async fn rebuild_index(
        self: &Arc<Self>,
        name: &str,
        params: Option<HnswParams>,
        promote: bool,
        request_id: Option<String>,
    ) -> Result<BuildTicket> {
        self.context.check_ready()?;
        self.context.check_accepting_work()?;
        let entry = self.registry.usable(name)?;
        match self.registry.reserve(&entry, params, request_id).await? {
            Reserved::Replay(generation) => Ok(self.replay(&entry, generation)),
            Reserved::New(generation, params) => {
                Ok(self.start_build(entry, generation, params, promote))
            }
        }
    }

    /// One index, with its dataset's current version from the catalog.
    pub async fn get_index(&self, name: &str) -> Result<IndexView> {
        let entry = self.registry.get(name)?;
        let mut view = Self::view_of(&entry);
        if view.damaged.is_some() {
            return Ok(view);
        }
        match self.context.dataset(&view.record.dataset, false).await {
            Ok(dataset) => view.current_dataset_version = Some(dataset.version),
            Err(Error::DatasetNotFound { .. }) => view.current_dataset_version = Some(0),
            Err(error) => {
                tracing::warn!(index = name, %error, "cannot ask the catalog for the dataset's version")
            }
        }
        Ok(view)
    }

    pub(crate) fn view_of(entry: &IndexEntry) -> IndexView {
        IndexView {
            record: entry.record(),
            memory_bytes: entry.active().map_or(0, |g| g.memory_bytes()),
            current_dataset_version: None,
            load_error: entry.load_error(),
            damaged: entry.damage().map(str::to_owned),
        }
    }

    /// Every index (sorted by name), optionally of one dataset; damaged
    /// ones too, with their reason.
    pub fn list_indexes(&self, dataset: Option<&str>) -> Vec<IndexView> {
        self.registry
            .all()
            .iter()
            .map(|entry| Self::view_of(entry))
            .filter(|view| dataset.is_none_or(|d| view.record.dataset == d))
            .collect()
    }

    /// Changes live settings.
    pub async fn update_index(
        &self,
        name: &str,
        ef_search: Option<u32>,
        retained: Option<u32>,
        request_id: Option<String>,
    ) -> Result<IndexView> {
        let key = request_id.map(|id| format!("update/{name}/{id}"));
        if let Some(view) = self.replayed(key.as_deref()) {
            return Ok(view);
        }
        let entry = self.registry.usable(name)?;
        self.registry.update(&entry, ef_search, retained).await?;
        let view = Self::view_of(&entry);
        if let Some(key) = key {
            self.replies.record(key, Some(view.record.clone()));
        }
        Ok(view)
    }

    /// The answer recorded for a short write's request id, if any.
    fn replayed(&self, key: Option<&str>) -> Option<IndexView> {
        let record = self.replies.get(key?)??;
        Some(IndexView {
            record,
            memory_bytes: 0,
            current_dataset_version: None,
            load_error: None,
            damaged: None,
        })
    }

    /// Deletes an index (damaged or not), its generations and files;
    /// running builds stop.
    pub async fn delete_index(&self, name: &str, request_id: Option<String>) -> Result<()> {
        let key = request_id.map(|id| format!("delete/{name}/{id}"));
        if key.as_deref().and_then(|k| self.replies.get(k)).is_some() {
            return Ok(());
        }
        self.registry.remove(name).await?;
        if let Some(key) = key {
            self.replies.record(key, None);
        }
        Ok(())
    }

    /// Rebuilds a DAMAGED index's record from its generations; returns the
    /// index and the generations recovered, newest first.
    pub async fn repair_index(
        &self,
        name: &str,
        request_id: Option<String>,
    ) -> Result<(IndexView, Vec<u64>)> {
        self.context.check_ready()?;
        let key = request_id.map(|id| format!("repair/{name}/{id}"));
        if let Some(view) = self.replayed(key.as_deref()) {
            let recovered = view
                .record
                .generations
                .iter()
                .rev()
                .map(|g| g.generation)
                .collect();
            return Ok((view, recovered));
        }
        let recovered = self.registry.repair(name).await?;
        let entry = self.registry.get(name)?;
        let view = Self::view_of(&entry);
        if let Some(key) = key {
            self.replies.record(key, Some(view.record.clone()));
        }
        Ok((view, recovered))
    }

    /// Generations, newest first.
    pub fn list_generations(&self, index: &str) -> Result<(IndexRecord, Vec<GenerationRecord>)> {
        let record = self.registry.usable(index)?.record();
        let mut generations = record.generations.clone();
        generations.reverse();
        Ok((record, generations))
    }

    /// Makes `generation` active.
    pub async fn promote(
        &self,
        index: &str,
        generation: u64,
        expected: Option<u64>,
        request_id: Option<String>,
    ) -> Result<IndexView> {
        self.swap(index, Swap::To(generation), expected, request_id)
            .await
    }

    /// Makes the previously active generation active again.
    pub async fn rollback(
        &self,
        index: &str,
        expected: Option<u64>,
        request_id: Option<String>,
    ) -> Result<IndexView> {
        self.swap(index, Swap::Back, expected, request_id).await
    }

    async fn swap(
        &self,
        index: &str,
        target: Swap,
        expected: Option<u64>,
        request_id: Option<String>,
    ) -> Result<IndexView> {
        self.context.check_ready()?;
        // Promote and rollback keep their own keys: the same id sent to
        // the other RPC is a new request, not a replay of this one.
        let operation = match target {
            Swap::To(_) => "promote",
            Swap::Back => "rollback",
        };
        let key = request_id.map(|id| format!("{operation}/{index}/{id}"));
        if let Some(view) = self.replayed(key.as_deref()) {
            return Ok(view);
        }
        let entry = self.registry.usable(index)?;
        self.registry.swap(&entry, target, expected).await?;
        let view = Self::view_of(&entry);
        if let Some(key) = key {
            self.replies.record(key, Some(view.record.clone()));
        }
        Ok(view)
    }

    /// Deletes an inactive, finished generation.
    pub async fn delete_generation(
        &self,
        index: &str,
        generation: u64,
        request_id: Option<String>,
    ) -> Result<()> {
        let key = request_id.map(|id| format!("delete-generation/{index}/{id}"));
        if key.as_deref().and_then(|k| self.replies.get(k)).is_some() {
            return Ok(());
        }
        let entry = self.registry.usable(index)?;
        self.registry.forget(&entry, generation).await?;
        if let Some(key) = key {
            self.replies.record(key, None);
        }
        Ok(())
    }
}
