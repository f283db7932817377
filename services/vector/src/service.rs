//! The vector service's operations, over the index store (storage), the
//! catalog and the embedding cache. `grpc` only converts and delegates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_proto::catalog::v1 as catalog_pb;
use lakehouse_shared::request_id::RequestLog;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use crate::Metric;
use crate::cache::EmbeddingCache;
use crate::config::VectorConfig;
use crate::embeddings::{self, DataFile, LoadSpec};
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::{self, BuildControl, HnswParams, Near};
use crate::store::{GenerationRecord, GenerationState, IndexRecord, IndexStore, generation_prefix};

/// Default neighbours per query.
pub const DEFAULT_K: usize = 10;
/// Most neighbours per query.
pub const MAX_K: usize = 1000;
/// Default search candidate list: recall@10 >= 0.99 on our 768-d benchmark.
pub const DEFAULT_EF_SEARCH: u32 = 40;
/// Largest ef_search.
pub const MAX_EF_SEARCH: u32 = 4096;
/// Most queries in one BatchSearch.
pub const MAX_BATCH_QUERIES: usize = 10_000;
/// Default inactive generations kept.
pub const DEFAULT_RETAINED: u32 = 2;
/// Seed of every build's level assignment.
pub(crate) const LEVEL_SEED: u64 = 0x1a4e_5eed;
/// How often a build reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a build slot.
    Queued,
    /// Reading embeddings.
    Loading,
    /// Inserting into the graph.
    Inserting,
    /// Writing to storage.
    Persisting,
    /// Measuring a trial.
    Evaluating,
}

/// Progress of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// Units done.
    pub done: u64,
    /// Units in the phase.
    pub total: u64,
    /// Since the build started.
    pub elapsed_ms: u64,
}

impl Progress {
    /// The message that closes this phase when `next` shows the build has
    /// moved on before a watcher saw it finish.
    ///
    /// A build stream samples the latest state, so a small build can go
    /// from "inserting 0 / 4" straight to "persisting", which reads as if
    /// nothing was inserted. A counted phase only ends by finishing (a
    /// failure ends the build instead), so it is closed at `total`.
    pub fn closing(&self, next: &Progress) -> Option<Progress> {
        let counted = matches!(self.phase, Phase::Loading | Phase::Inserting);
        (counted && next.phase != self.phase && self.done < self.total).then_some(Progress {
            done: self.total,
            elapsed_ms: next.elapsed_ms,
            ..*self
        })
    }
}

/// What a build stream shows: its latest progress, then its outcome.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// Running.
    Progress(Progress),
    /// Ended: Ok when the generation is ready.
    Finished(std::result::Result<(), Arc<Error>>),
}

/// A started (or replayed) build: what to name in the first message, and
/// where to watch it.
#[derive(Debug)]
pub struct BuildTicket {
    /// The index.
    pub index: String,
    /// The generation.
    pub generation: u64,
    /// A retry of an earlier request.
    pub replayed: bool,
    /// Events until the outcome (the latest one first).
    pub events: watch::Receiver<BuildEvent>,
}

#[derive(Debug)]
struct RunningBuild {
    control: Arc<BuildControl>,
    events: watch::Sender<BuildEvent>,
}

#[derive(Debug)]
pub(crate) struct IndexEntry {
    pub(crate) record: Mutex<IndexRecord>,
    /// Serialises changes, so records are written in the order they change.
    pub(crate) writer: tokio::sync::Mutex<()>,
    pub(crate) active: RwLock<Option<Arc<LoadedGeneration>>>,
    builds: Mutex<HashMap<u64, Arc<RunningBuild>>>,
    load_error: Mutex<Option<String>>,
}

impl IndexEntry {
    fn new(record: IndexRecord, active: Option<Arc<LoadedGeneration>>) -> Arc<Self> {
        Arc::new(Self {
            record: Mutex::new(record),
            writer: tokio::sync::Mutex::new(()),
            active: RwLock::new(active),
            builds: Mutex::new(HashMap::new()),
            load_error: Mutex::new(None),
        })
    }
}

/// What CreateIndex asks for, validated.
#[derive(Debug, Clone)]
pub struct NewIndex {
    /// Name.
    pub name: String,
    /// Dataset.
    pub dataset: String,
    /// Id column.
    pub id_column: String,
    /// Text column.
    pub text_column: Option<String>,
    /// Vector column.
    pub vector_column: String,
    /// Payload columns.
    pub payload_columns: Vec<String>,
    /// Metric.
    pub metric: Metric,
    /// Build parameters.
    pub params: HnswParams,
    /// Search setting.
    pub ef_search: u32,
    /// Retention.
    pub retained_generations: u32,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// A search request, validated except against the index.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Index.
    pub index: String,
    /// One or more query vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Neighbours per query (resolved).
    pub k: usize,
    /// Override of the index's ef_search.
    pub ef_search: Option<u32>,
    /// Brute force.
    pub exact: bool,
    /// Payload columns to return.
    pub payload_columns: Vec<String>,
}

/// Hits of a search, with the generation that answered.
#[derive(Debug)]
pub struct SearchResult {
    /// The generation (its rows give ids, texts, payload).
    pub generation: Arc<LoadedGeneration>,
    /// Per query, nearest first.
    pub hits: Vec<Vec<Near>>,
    /// The ef used; 0 for exact.
    pub ef_search: u32,
    /// The k used.
    pub k: usize,
    /// Search time.
    pub took: Duration,
    /// Whether the index keeps a text column (the row column after the id).
    pub has_text: bool,
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
    /// Why the active generation could not be loaded at start, if so.
    pub load_error: Option<String>,
}

/// The vector service.
#[derive(Debug)]
pub struct VectorService {
    store: IndexStore,
    storage: StorageClient,
    catalog: CatalogClient,
    cache: EmbeddingCache,
    indexes: RwLock<BTreeMap<String, Arc<IndexEntry>>>,
    build_slots: Arc<Semaphore>,
    pool: Arc<rayon::ThreadPool>,
    ready: watch::Sender<bool>,
    replies: RequestLog<Option<IndexRecord>>,
    generation_reads: AtomicU64,
    pub(crate) trials: crate::trials::TrialState,
}

impl VectorService {
    /// The service over its peers; not ready until [`Self::load_persisted`].
    pub fn new(
        config: &VectorConfig,
        storage: StorageClient,
        catalog: CatalogClient,
    ) -> Result<Self> {
        let threads = match config.build_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vector-build-{i}"))
            .build()?;
        let objects: Arc<dyn object_store::ObjectStore> =
            Arc::new(GrpcObjectStore::new(storage.clone(), ""));
        let store = IndexStore::new(objects.clone());
        Ok(Self {
            trials: crate::trials::TrialState::new(config, objects)?,
            store,
            storage,
            catalog,
            cache: EmbeddingCache::new(config.cache_bytes),
            indexes: RwLock::new(BTreeMap::new()),
            build_slots: Arc::new(Semaphore::new(config.max_builds as usize)),
            pool: Arc::new(pool),
            ready: watch::Sender::new(false),
            replies: RequestLog::new(4096),
            generation_reads: AtomicU64::new(0),
        })
    }

    /// The index store.
    pub(crate) fn store(&self) -> &IndexStore {
        &self.store
    }

    /// The storage client, for loaders.
    pub(crate) fn storage_client(&self) -> StorageClient {
        self.storage.clone()
    }

    /// Whether `entry` is still the registered entry of `name` (not deleted
    /// or replaced meanwhile).
    pub(crate) fn is_registered(&self, name: &str, entry: &Arc<IndexEntry>) -> bool {
        self.indexes
            .read()
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
    }

    /// Turns true once persisted indexes are loaded.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The embedding cache.
    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// Generations read back from storage since start (a restart that
    /// reloads instead of rebuilding counts here, never as a build).
    pub fn generation_reads(&self) -> u64 {
        self.generation_reads.load(Ordering::Relaxed)
    }

    pub(crate) fn check_ready(&self) -> Result<()> {
        if *self.ready.borrow() {
            Ok(())
        } else {
            Err(Error::Loading)
        }
    }

    pub(crate) fn entry(&self, name: &str) -> Result<Arc<IndexEntry>> {
        self.indexes
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::IndexNotFound {
                name: name.to_owned(),
            })
    }

    /// Loads every persisted index's active generation, retrying while the
    /// storage service cannot be reached (in `serve all` it is this very
    /// process, starting), then turns ready.
    pub async fn load_persisted(&self) {
        let names = loop {
            match self.store.list_indexes().await {
                Ok(names) => break names,
                Err(error) => {
                    tracing::warn!(%error, "cannot list persisted indexes yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        for name in names {
            if let Err(error) = self.load_index(&name).await {
                tracing::error!(index = %name, %error, "cannot load persisted index");
            }
        }
        self.ready.send_replace(true);
        tracing::info!(indexes = self.indexes.read().len(), "vector indexes loaded");
    }

    async fn load_index(&self, name: &str) -> Result<()> {
        let Some(mut record) = self.store.read_record(name).await? else {
            return Ok(());
        };
        // Builds a restart interrupted: whole ones (manifest present) are
        // kept as ready, the rest failed and their files removed.
        let mut changed = false;
        let building: Vec<u64> = record
            .generations
            .iter()
            .filter(|g| g.state == GenerationState::Building)
            .map(|g| g.generation)
            .collect();
        for generation in building {
            let manifest = self.store.read_manifest(name, generation).await?;
            if let Some(g) = record.generation_mut(generation) {
                if manifest.is_some() {
                    g.state = GenerationState::Ready;
                } else {
                    g.state = GenerationState::Failed;
                    g.error = Some("interrupted by a restart before it was stored".to_owned());
                    self.store
                        .delete_prefix(&generation_prefix(name, generation))
                        .await?;
                }
                changed = true;
            }
        }
        if changed {
            self.store.write_record(&record).await?;
        }
        let entry = IndexEntry::new(record.clone(), None);
        if record.active > 0 {
            match self.read_generation(name, record.active).await {
                Ok(loaded) => *entry.active.write() = Some(Arc::new(loaded)),
                Err(error) => *entry.load_error.lock() = Some(error.to_string()),
            }
        }
        self.indexes.write().insert(name.to_owned(), entry);
        Ok(())
    }

    async fn read_generation(&self, index: &str, generation: u64) -> Result<LoadedGeneration> {
        let (graph, rows, manifest) = self.store.read_generation(index, generation).await?;
        self.generation_reads.fetch_add(1, Ordering::Relaxed);
        Ok(LoadedGeneration {
            generation,
            graph,
            rows,
            dataset_version: manifest.dataset_version,
        })
    }

    /// The dataset's manifest from the catalog: version, bucket, files.
    pub(crate) async fn dataset(&self, name: &str, full: bool) -> Result<catalog_pb::Dataset> {
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

    /// Starts building the first generation of a new index.
    pub async fn create_index(self: &Arc<Self>, new: NewIndex) -> Result<BuildTicket> {
        self.check_ready()?;
        if let Some(request_id) = &new.request_id
            && let Ok(entry) = self.entry(&new.name)
        {
            let replay = {
                let record = entry.record.lock();
                (record.create_request_id.as_ref() == Some(request_id))
                    .then(|| record.generations.first().map(|g| g.generation))
                    .flatten()
            };
            if let Some(generation) = replay {
                return Ok(self.replay(&new.name, &entry, generation));
            }
        }
        // Fail fast on what the catalog already tells: the dataset and its columns.
        let dataset = self.dataset(&new.dataset, false).await?;
        let columns: Vec<String> = dataset
            .schema
            .iter()
            .flat_map(|s| s.columns.iter().map(|c| c.name.clone()))
            .collect();
        if !columns.is_empty() {
            let wanted = std::iter::once(&new.vector_column)
                .chain(std::iter::once(&new.id_column))
                .chain(&new.text_column)
                .chain(&new.payload_columns);
            for column in wanted {
                if !columns.contains(column) {
                    return Err(Error::ColumnNotFound {
                        dataset: new.dataset.clone(),
                        column: column.clone(),
                        available: columns,
                    });
                }
            }
        }
        let now = Utc::now();
        let record = IndexRecord {
            name: new.name.clone(),
            dataset: new.dataset,
            id_column: new.id_column,
            text_column: new.text_column,
            vector_column: new.vector_column,
            payload_columns: new.payload_columns,
            metric: new.metric,
            ef_search: new.ef_search,
            retained_generations: new.retained_generations,
            create_time: now,
            update_time: now,
            create_request_id: new.request_id.clone(),
            active: 0,
            previous: Vec::new(),
            generations: vec![new_generation(1, new.params, new.request_id)],
            next_generation: 2,
        };
        let entry = IndexEntry::new(record.clone(), None);
        {
            let mut indexes = self.indexes.write();
            if indexes.contains_key(&new.name) {
                return Err(Error::IndexExists { name: new.name });
            }
            indexes.insert(new.name.clone(), entry.clone());
        }
        if let Err(error) = self.store.write_record(&record).await {
            self.indexes.write().remove(&new.name);
            return Err(error);
        }
        Ok(self.start_build(entry, 1, new.params, true))
    }

    /// Starts building a new generation of an existing index.
    pub async fn rebuild_index(
        self: &Arc<Self>,
        name: &str,
        params: Option<HnswParams>,
        promote: bool,
        request_id: Option<String>,
    ) -> Result<BuildTicket> {
        self.check_ready()?;
        let entry = self.entry(name)?;
        let _writer = entry.writer.lock().await;
        let (record, generation, params) = {
            let mut record = entry.record.lock();
            if let Some(id) = &request_id
                && let Some(g) = record
                    .generations
                    .iter()
                    .find(|g| g.request_id.as_ref() == Some(id))
            {
                let generation = g.generation;
                drop(record);
                return Ok(self.replay(name, &entry, generation));
            }
            let params = params
                .or_else(|| record.generation(record.active).map(|g| g.params))
                .or_else(|| record.generations.last().map(|g| g.params))
                .unwrap_or_default();
            let generation = record.next_generation;
            record.next_generation += 1;
            record
                .generations
                .push(new_generation(generation, params, request_id));
            record.update_time = Utc::now();
            (record.clone(), generation, params)
        };
        self.store.write_record(&record).await?;
        Ok(self.start_build(entry.clone(), generation, params, promote))
    }

    /// A stream for a build started earlier: its live events, or its
    /// recorded outcome.
    fn replay(&self, name: &str, entry: &Arc<IndexEntry>, generation: u64) -> BuildTicket {
        let running = entry.builds.lock().get(&generation).cloned();
        let events = match running {
            Some(build) => build.events.subscribe(),
            None => {
                let record = entry.record.lock();
                let outcome = match record.generation(generation) {
                    Some(g) if g.state == GenerationState::Ready => Ok(()),
                    Some(g) if g.state == GenerationState::Cancelled => {
                        Err(Arc::new(Error::Cancelled {
                            index: name.to_owned(),
                            generation,
                        }))
                    }
                    Some(g) => Err(Arc::new(Error::BuildFailed {
                        index: name.to_owned(),
                        generation,
                        reason: g.error.clone().unwrap_or_default(),
                    })),
                    None => Err(Arc::new(Error::GenerationNotFound {
                        index: name.to_owned(),
                        generation,
                    })),
                };
                watch::Sender::new(BuildEvent::Finished(outcome)).subscribe()
            }
        };
        BuildTicket {
            index: name.to_owned(),
            generation,
            replayed: true,
            events,
        }
    }

    fn start_build(
        self: &Arc<Self>,
        entry: Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        promote: bool,
    ) -> BuildTicket {
        let build = Arc::new(RunningBuild {
            control: Arc::new(BuildControl::default()),
            events: watch::Sender::new(BuildEvent::Progress(Progress {
                phase: Phase::Queued,
                done: 0,
                total: 0,
                elapsed_ms: 0,
            })),
        });
        entry.builds.lock().insert(generation, build.clone());
        let events = build.events.subscribe();
        let name = entry.record.lock().name.clone();
        // Detached: a client that disconnects does not stop the build; it
        // can be watched with GetIndex / ListGenerations and cancelled.
        let service = self.clone();
        // Detached, but in a span under the request's: the catalog and
        // storage calls of the build join the caller's trace.
        let span = tracing::info_span!("index_build", index = %name, generation);
        tokio::spawn(
            async move {
                service
                    .run_build(entry, generation, params, promote, build)
                    .await;
            }
            .instrument(span),
        );
        BuildTicket {
            index: name,
            generation,
            replayed: false,
            events,
        }
    }

    async fn run_build(
        &self,
        entry: Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        promote: bool,
        build: Arc<RunningBuild>,
    ) {
        let started = Instant::now();
        let name = entry.record.lock().name.clone();
        let outcome = self
            .build_generation(&entry, generation, params, &build, started)
            .await;
        let _writer = entry.writer.lock().await;
        let still_registered = self
            .indexes
            .read()
            .get(&name)
            .is_some_and(|current| Arc::ptr_eq(current, &entry));
        if !still_registered {
            // The index was deleted while this build ran: record nothing
            // (that would bring the index back) and leave no files.
            if let Err(error) = self
                .store
                .delete_prefix(&generation_prefix(&name, generation))
                .await
            {
                tracing::warn!(index = %name, generation, %error, "cannot remove a deleted index's build");
            }
            entry.builds.lock().remove(&generation);
            build
                .events
                .send_replace(BuildEvent::Finished(Err(Arc::new(Error::IndexNotFound {
                    name,
                }))));
            return;
        }
        let record = {
            let mut record = entry.record.lock();
            let build_ms = started.elapsed().as_millis() as u64;
            match &outcome {
                Ok(loaded) => {
                    if let Some(g) = record.generation_mut(generation) {
                        g.state = GenerationState::Ready;
                        g.build_ms = build_ms;
                        g.memory_bytes = loaded.memory_bytes();
                        g.vector_count = loaded.graph.len() as u64;
                        g.dimensions = loaded.graph.dim() as u32;
                        g.dataset_version = loaded.dataset_version;
                    }
                    if record.active == 0 || promote {
                        if record.active > 0 {
                            let previous = record.active;
                            record.previous.push(previous);
                        }
                        record.active = generation;
                        *entry.active.write() = Some(loaded.clone());
                    }
                }
                Err(error) => {
                    if let Some(g) = record.generation_mut(generation) {
                        g.state = if matches!(error, Error::Cancelled { .. }) {
                            GenerationState::Cancelled
                        } else {
                            GenerationState::Failed
                        };
                        g.build_ms = build_ms;
                        g.error = Some(error.to_string());
                    }
                }
            }
            record.update_time = Utc::now();
            record.clone()
        };
        let record = self.apply_retention(&entry, record).await;
        if let Err(error) = self.store.write_record(&record).await {
            tracing::error!(index = %name, generation, %error, "cannot record the build's outcome");
        }
        if outcome.is_err()
            && let Err(error) = self
                .store
                .delete_prefix(&generation_prefix(&name, generation))
                .await
        {
            tracing::warn!(index = %name, generation, %error, "cannot remove a failed build's files");
        }
        entry.builds.lock().remove(&generation);
        match &outcome {
            Ok(_) => {
                tracing::info!(index = %name, generation, ms = started.elapsed().as_millis() as u64, "generation ready")
            }
            Err(error) => {
                tracing::warn!(index = %name, generation, %error, "build ended without a generation")
            }
        }
        build
            .events
            .send_replace(BuildEvent::Finished(outcome.map(|_| ()).map_err(Arc::new)));
    }

    async fn build_generation(
        &self,
        entry: &Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        build: &Arc<RunningBuild>,
        started: Instant,
    ) -> Result<Arc<LoadedGeneration>> {
        let record = entry.record.lock().clone();
        let name = record.name.clone();
        let cancelled = || Error::Cancelled {
            index: name.clone(),
            generation,
        };
        let report = |phase, done, total| {
            build.events.send_replace(BuildEvent::Progress(Progress {
                phase,
                done,
                total,
                elapsed_ms: started.elapsed().as_millis() as u64,
            }));
        };
        let _slot = tokio::select! {
            permit = self.build_slots.clone().acquire_owned() => permit.map_err(|_| Error::Task("build slot"))?,
            () = wait_cancel(&build.control) => return Err(cancelled()),
        };
        let dataset = self.dataset(&record.dataset, true).await?;
        let spec = LoadSpec {
            dataset: record.dataset.clone(),
            version: dataset.version,
            vector_column: record.vector_column.clone(),
            row_columns: record.row_columns(),
            normalize: record.metric.normalizes(),
        };
        let files: Vec<DataFile> = dataset
            .files
            .iter()
            .map(|f| DataFile {
                key: f.key.clone(),
                size: f.size_bytes,
            })
            .collect();
        let estimate: u64 = files.iter().map(|f| f.size).sum();
        let rows_loaded = Arc::new(AtomicU64::new(0));
        report(Phase::Loading, 0, dataset.row_count);
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(GrpcObjectStore::new(
            self.storage.clone(),
            dataset.bucket.clone(),
        ));
        let load = self.cache.get_or_load(&spec, estimate, || {
            embeddings::load(store, &files, &spec, rows_loaded.clone())
        });
        let embeddings = with_progress(load, &build.control, || {
            report(
                Phase::Loading,
                rows_loaded.load(Ordering::Relaxed),
                dataset.row_count,
            )
        })
        .await
        .ok_or_else(cancelled)??;

        let total = embeddings.len() as u64;
        report(Phase::Inserting, 0, total);
        let (vectors, dim, metric, pool, control) = (
            embeddings.vectors.clone(),
            embeddings.dim,
            record.metric,
            self.pool.clone(),
            build.control.clone(),
        );
        let insert = tokio::task::spawn_blocking(move || {
            hnsw::build(vectors, dim, metric, params, LEVEL_SEED, &pool, &control)
        });
        let graph = with_progress(insert, &build.control, || {
            report(
                Phase::Inserting,
                build.control.inserted.load(Ordering::Relaxed),
                total,
            )
        })
        .await
        .ok_or_else(cancelled)?
        .map_err(|_| Error::Task("graph build"))?
        .map_err(|_| cancelled())?;

        report(Phase::Persisting, 0, 1);
        self.store
            .write_generation(&name, generation, &graph, &embeddings.rows, dataset.version)
            .await?;
        if build.control.cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        report(Phase::Persisting, 1, 1);
        Ok(Arc::new(LoadedGeneration {
            generation,
            graph,
            rows: embeddings.rows.clone(),
            dataset_version: dataset.version,
        }))
    }

    /// Keeps the active generation, running builds and the newest
    /// `retained_generations` others; deletes the rest and their files.
    pub(crate) async fn apply_retention(
        &self,
        entry: &Arc<IndexEntry>,
        mut record: IndexRecord,
    ) -> IndexRecord {
        let mut others: Vec<u64> = record
            .generations
            .iter()
            .filter(|g| g.generation != record.active && g.state != GenerationState::Building)
            .map(|g| g.generation)
            .collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        let doomed: Vec<u64> = others
            .into_iter()
            .skip(record.retained_generations as usize)
            .collect();
        if doomed.is_empty() {
            return record;
        }
        for generation in &doomed {
            if let Err(error) = self
                .store
                .delete_prefix(&generation_prefix(&record.name, *generation))
                .await
            {
                tracing::warn!(index = %record.name, generation, %error, "cannot delete a retired generation");
            }
        }
        record
            .generations
            .retain(|g| !doomed.contains(&g.generation));
        record.previous.retain(|g| !doomed.contains(g));
        *entry.record.lock() = record.clone();
        record
    }

    /// Stops a running build.
    pub fn cancel_build(&self, index: &str, generation: u64) -> Result<GenerationRecord> {
        let entry = self.entry(index)?;
        let running = entry.builds.lock().get(&generation).cloned();
        let record = entry.record.lock();
        let g =
            record
                .generation(generation)
                .cloned()
                .ok_or_else(|| Error::GenerationNotFound {
                    index: index.to_owned(),
                    generation,
                })?;
        match running {
            Some(build) => {
                build.control.cancel.store(true, Ordering::Relaxed);
                Ok(g)
            }
            // A retried cancel finds the build already stopped: same answer.
            None if g.state == GenerationState::Cancelled => Ok(g),
            None => Err(Error::GenerationState {
                index: index.to_owned(),
                generation,
                state: state_name(g.state),
                hint: "only a running build can be cancelled",
            }),
        }
    }

    /// One index, with its dataset's current version from the catalog.
    pub async fn get_index(&self, name: &str) -> Result<IndexView> {
        let mut view = self.view(name)?;
        match self.dataset(&view.record.dataset, false).await {
            Ok(dataset) => view.current_dataset_version = Some(dataset.version),
            Err(Error::DatasetNotFound { .. }) => view.current_dataset_version = Some(0),
            Err(error) => {
                tracing::warn!(index = name, %error, "cannot ask the catalog for the dataset's version")
            }
        }
        Ok(view)
    }

    fn view(&self, name: &str) -> Result<IndexView> {
        let entry = self.entry(name)?;
        Ok(Self::view_of(&entry))
    }

    fn view_of(entry: &IndexEntry) -> IndexView {
        IndexView {
            record: entry.record.lock().clone(),
            memory_bytes: entry.active.read().as_ref().map_or(0, |g| g.memory_bytes()),
            current_dataset_version: None,
            load_error: entry.load_error.lock().clone(),
        }
    }

    /// Every index (sorted by name), optionally of one dataset.
    pub fn list_indexes(&self, dataset: Option<&str>) -> Vec<IndexView> {
        self.indexes
            .read()
            .values()
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
        let entry = self.entry(name)?;
        let _writer = entry.writer.lock().await;
        let record = {
            let mut record = entry.record.lock();
            if let Some(ef) = ef_search {
                record.ef_search = ef;
            }
            if let Some(retained) = retained {
                record.retained_generations = retained;
            }
            record.update_time = Utc::now();
            record.clone()
        };
        let record = self.apply_retention(&entry, record).await;
        self.store.write_record(&record).await?;
        if let Some(key) = key {
            self.replies.record(key, Some(record));
        }
        Ok(Self::view_of(&entry))
    }

    /// The answer recorded for a short write's request id, if any.
    fn replayed(&self, key: Option<&str>) -> Option<IndexView> {
        let record = self.replies.get(key?)??;
        Some(IndexView {
            record,
            memory_bytes: 0,
            current_dataset_version: None,
            load_error: None,
        })
    }

    /// Deletes an index, its generations and files; running builds stop.
    pub async fn delete_index(&self, name: &str, request_id: Option<String>) -> Result<()> {
        let key = request_id.map(|id| format!("delete/{name}/{id}"));
        if key.as_deref().and_then(|k| self.replies.get(k)).is_some() {
            return Ok(());
        }
        let entry = self.entry(name)?;
        let _writer = entry.writer.lock().await;
        for build in entry.builds.lock().values() {
            build.control.cancel.store(true, Ordering::Relaxed);
        }
        self.store.delete_index(name).await?;
        self.indexes.write().remove(name);
        if let Some(key) = key {
            self.replies.record(key, None);
        }
        Ok(())
    }

    /// Searches the active generation.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchResult> {
        self.check_ready()?;
        let entry = self.entry(&query.index)?;
        let (ef_default, payload, has_text) = {
            let record = entry.record.lock();
            (
                record.ef_search,
                record.payload_columns.clone(),
                record.text_column.is_some(),
            )
        };
        let active = entry.active.read().clone();
        let Some(active) = active else {
            return Err(self.not_ready(&query.index, &entry));
        };
        for column in &query.payload_columns {
            if !payload.contains(column) {
                return Err(Error::UnknownPayloadColumn {
                    index: query.index.clone(),
                    column: column.clone(),
                    available: payload,
                });
            }
        }
        let dim = active.graph.dim();
        let metric = active.graph.metric();
        let mut queries = query.vectors;
        for vector in &mut queries {
            crate::trials::prepare_vector(&query.index, dim, metric, vector)?;
        }
        let k = query.k;
        let ef = query.ef_search.unwrap_or(ef_default).max(k as u32);
        let started = Instant::now();
        let exact = query.exact;
        let hits = if queries.len() == 1 && !exact {
            // One HNSW query is ~100 µs of work: cheaper inline than a hop
            // to another thread.
            vec![active.search(&queries[0], k, ef as usize, false)]
        } else {
            let generation = active.clone();
            tokio::task::spawn_blocking(move || {
                use rayon::prelude::*;
                queries
                    .par_iter()
                    .map(|q| generation.search(q, k, ef as usize, exact))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|_| Error::Task("search"))?
        };
        Ok(SearchResult {
            generation: active,
            hits,
            ef_search: if exact { 0 } else { ef },
            k,
            took: started.elapsed(),
            has_text,
        })
    }

    pub(crate) fn not_ready(&self, name: &str, entry: &IndexEntry) -> Error {
        if let Some(error) = entry.load_error.lock().clone() {
            return Error::Corrupt {
                what: "active generation",
                key: name.to_owned(),
                reason: error,
            };
        }
        let building = !entry.builds.lock().is_empty();
        if building {
            Error::IndexNotReady {
                index: name.to_owned(),
                state: "still building its first generation",
                hint: "watch it with GetIndex and search when it is READY",
            }
        } else {
            Error::IndexNotReady {
                index: name.to_owned(),
                state: "without a ready generation (its build failed)",
                hint: "see the error in GetIndex, then RebuildIndex",
            }
        }
    }

    /// Generations, newest first.
    pub fn list_generations(&self, index: &str) -> Result<(IndexRecord, Vec<GenerationRecord>)> {
        let entry = self.entry(index)?;
        let record = entry.record.lock().clone();
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
        self.check_ready()?;
        let key = request_id.map(|id| format!("swap/{index}/{id}"));
        if let Some(view) = self.replayed(key.as_deref()) {
            return Ok(view);
        }
        let entry = self.entry(index)?;
        let _writer = entry.writer.lock().await;
        let (active, generation) = {
            let record = entry.record.lock();
            if let Some(expected) = expected
                && expected != record.active
            {
                return Err(Error::ActiveGenerationMismatch {
                    index: index.to_owned(),
                    expected,
                    actual: record.active,
                });
            }
            let generation = match target {
                Swap::To(g) => g,
                Swap::Back => {
                    *record
                        .previous
                        .last()
                        .ok_or_else(|| Error::NoPreviousGeneration {
                            index: index.to_owned(),
                        })?
                }
            };
            let g = record
                .generation(generation)
                .ok_or_else(|| Error::GenerationNotFound {
                    index: index.to_owned(),
                    generation,
                })?;
            if g.state != GenerationState::Ready {
                return Err(Error::GenerationState {
                    index: index.to_owned(),
                    generation,
                    state: state_name(g.state),
                    hint: "only a READY generation can be made active",
                });
            }
            (record.active, generation)
        };
        if generation != active {
            // Load before swapping: searches keep the current generation
            // until the new one is whole in memory.
            let loaded = Arc::new(self.read_generation(index, generation).await?);
            let record = {
                let mut record = entry.record.lock();
                match target {
                    Swap::To(_) => {
                        if active > 0 {
                            record.previous.push(active);
                        }
                    }
                    Swap::Back => {
                        record.previous.pop();
                    }
                }
                record.active = generation;
                record.update_time = Utc::now();
                record.clone()
            };
            self.store.write_record(&record).await?;
            *entry.active.write() = Some(loaded);
        }
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
        let entry = self.entry(index)?;
        let _writer = entry.writer.lock().await;
        let record = {
            let mut record = entry.record.lock();
            let g = record
                .generation(generation)
                .ok_or_else(|| Error::GenerationNotFound {
                    index: index.to_owned(),
                    generation,
                })?;
            if record.active == generation || g.state == GenerationState::Building {
                return Err(Error::GenerationState {
                    index: index.to_owned(),
                    generation,
                    state: if record.active == generation {
                        "active"
                    } else {
                        "building"
                    },
                    hint: "promote another generation or cancel the build first",
                });
            }
            record.generations.retain(|g| g.generation != generation);
            record.previous.retain(|g| *g != generation);
            record.update_time = Utc::now();
            record.clone()
        };
        self.store.write_record(&record).await?;
        self.store
            .delete_prefix(&generation_prefix(index, generation))
            .await?;
        if let Some(key) = key {
            self.replies.record(key, None);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Swap {
    To(u64),
    Back,
}

pub(crate) fn new_generation(
    generation: u64,
    params: HnswParams,
    request_id: Option<String>,
) -> GenerationRecord {
    GenerationRecord {
        generation,
        params,
        state: GenerationState::Building,
        dataset_version: 0,
        vector_count: 0,
        dimensions: 0,
        create_time: Utc::now(),
        build_ms: 0,
        memory_bytes: 0,
        error: None,
        request_id,
    }
}

/// Lowercase state name, for messages.
pub fn state_name(state: GenerationState) -> &'static str {
    match state {
        GenerationState::Building => "building",
        GenerationState::Ready => "ready",
        GenerationState::Failed => "failed",
        GenerationState::Cancelled => "cancelled",
    }
}

async fn wait_cancel(control: &BuildControl) {
    while !control.cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `work`, calling `tick` every [`PROGRESS_EVERY`]; `None` when the
/// build is cancelled first.
async fn with_progress<T>(
    work: impl std::future::Future<Output = T>,
    control: &BuildControl,
    tick: impl Fn(),
) -> Option<T> {
    tokio::pin!(work);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            _ = every.tick() => {
                if control.cancel.load(Ordering::Relaxed) {
                    return None;
                }
                tick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase, done: u64, total: u64, elapsed_ms: u64) -> Progress {
        Progress {
            phase,
            done,
            total,
            elapsed_ms,
        }
    }

    #[test]
    fn a_counted_phase_left_early_is_closed_at_its_total() {
        let inserting = at(Phase::Inserting, 0, 4, 10);
        let persisting = at(Phase::Persisting, 0, 1, 12);
        assert_eq!(
            inserting.closing(&persisting),
            Some(at(Phase::Inserting, 4, 4, 12))
        );
        // Still in the phase, already at its total, or not a counted phase.
        assert_eq!(inserting.closing(&at(Phase::Inserting, 2, 4, 11)), None);
        assert_eq!(at(Phase::Inserting, 4, 4, 10).closing(&persisting), None);
        assert_eq!(at(Phase::Queued, 0, 1, 0).closing(&inserting), None);
        assert_eq!(at(Phase::Persisting, 0, 1, 12).closing(&inserting), None);
    }
}
