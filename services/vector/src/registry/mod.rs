//! The index registry: every index's record and loaded generation, and the
//! one place that changes them. Each change follows the same crash-safe
//! order: the new generation's files are whole first (manifest last), then
//! the record is replaced with one put, then the in-memory state follows,
//! and only then are files the record no longer names deleted. A crash at
//! any step leaves either the old or the new record, both naming only whole
//! generations; [`recovery`] finishes what a crash interrupted at start.

mod recovery;
mod repair;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use lakehouse_client::StorageClient;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::HnswParams;
use crate::progress::RunningBuild;
use crate::record::{Built, GenerationState, IndexRecord, Swap};
use crate::store::{IndexStore, generation_prefix};

/// One index: its record as stored, the generation searches use, its
/// running builds.
#[derive(Debug)]
pub struct IndexEntry {
    name: String,
    /// The record as last stored (changed only after a successful write).
    record: Mutex<IndexRecord>,
    /// Serialises changes, so records are written in the order they change.
    writer: tokio::sync::Mutex<()>,
    active: RwLock<Option<Arc<LoadedGeneration>>>,
    /// Running builds by generation.
    pub builds: Mutex<HashMap<u64, Arc<RunningBuild>>>,
    /// Why the active generation cannot be searched, while it cannot.
    load_error: Mutex<Option<String>>,
    /// Why the record itself cannot be read; such an index can only be
    /// listed, repaired (RepairIndex) and deleted.
    damaged: Option<String>,
    /// The last inactive READY generation a search pinned, kept loaded so a
    /// client testing a rebuild before promoting it does not reload it per
    /// query. One per index: pinning another replaces it.
    pinned: Mutex<Option<Arc<LoadedGeneration>>>,
}

impl IndexEntry {
    fn new(record: IndexRecord) -> Arc<Self> {
        Self::with_damage(record, None)
    }

    fn with_damage(record: IndexRecord, damaged: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            name: record.name.clone(),
            record: Mutex::new(record),
            writer: tokio::sync::Mutex::new(()),
            active: RwLock::new(None),
            builds: Mutex::new(HashMap::new()),
            load_error: Mutex::new(None),
            damaged,
            pinned: Mutex::new(None),
        })
    }

    fn damaged(name: &str, reason: String) -> Arc<Self> {
        // A stand-in: only the name is known; nothing reads the rest.
        let definition = crate::record::IndexDefinition {
            dataset: String::new(),
            id_column: String::new(),
            text_column: None,
            vector_column: String::new(),
            payload_columns: Vec::new(),
            metric: crate::Metric::Cosine,
            ef_search: 0,
            retained_generations: 0,
            create_time: Utc::now(),
        };
        Self::with_damage(IndexRecord::new(name, definition, None), Some(reason))
    }

    /// The index's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the record as stored.
    pub fn record(&self) -> IndexRecord {
        self.record.lock().clone()
    }

    /// Reads the record without copying it.
    pub fn with_record<T>(&self, read: impl FnOnce(&IndexRecord) -> T) -> T {
        read(&self.record.lock())
    }

    /// The generation searches use, if one is loaded.
    pub fn active(&self) -> Option<Arc<LoadedGeneration>> {
        self.active.read().clone()
    }

    /// The pinned generation `generation`, if it is the one kept loaded.
    pub fn pinned(&self, generation: u64) -> Option<Arc<LoadedGeneration>> {
        self.pinned
            .lock()
            .as_ref()
            .filter(|g| g.generation == generation)
            .cloned()
    }

    /// Keeps `generation` loaded for pinned searches (replacing the last).
    pub fn pin(&self, generation: Arc<LoadedGeneration>) {
        *self.pinned.lock() = Some(generation);
    }

    /// Why the active generation cannot be searched, while it cannot.
    pub fn load_error(&self) -> Option<String> {
        self.load_error.lock().clone()
    }

    /// Why the record cannot be read, if it cannot.
    pub fn damage(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// Why an index without a searchable generation cannot serve a search
    /// or a trial yet: its load failed, its first build is still running,
    /// or its builds failed. One answer for searches and trials alike.
    pub fn not_ready(&self) -> Error {
        if let Some(reason) = self.load_error() {
            return Error::IndexUnavailable {
                index: self.name.clone(),
                reason,
            };
        }
        let building = !self.builds.lock().is_empty();
        if building {
            Error::IndexNotReady {
                index: self.name.clone(),
                state: "still building its first generation",
                hint: "watch it with GetIndex and search when it is READY",
            }
        } else {
            Error::IndexNotReady {
                index: self.name.clone(),
                state: "without a ready generation (its build failed)",
                hint: "see the error in GetIndex, then RebuildIndex",
            }
        }
    }

    fn set_active(&self, loaded: Arc<LoadedGeneration>) {
        *self.active.write() = Some(loaded);
        *self.load_error.lock() = None;
    }
}

/// What a reservation gave: a new generation, or the one an earlier
/// request with the same id already started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// A new generation to build, with its resolved parameters.
    New(u64, HnswParams),
    /// The generation of an earlier request with this id.
    Replay(u64),
}

/// How a build (or a trial's adopted graph) ended.
#[derive(Debug)]
pub enum Outcome {
    /// Whole in storage; made active when `promote` or when none is.
    Ready {
        /// The generation, loaded.
        loaded: Arc<LoadedGeneration>,
        /// Load + insert + persist time.
        build_ms: u64,
        /// Make it active.
        promote: bool,
    },
    /// Failed or cancelled; its files are removed.
    Ended {
        /// Failed or Cancelled.
        state: GenerationState,
        /// Why.
        error: String,
        /// How the failure was answered, for replays.
        failure: Option<crate::error::RecordedFailure>,
        /// Time spent.
        build_ms: u64,
    },
}

/// Every index, over the index store.
#[derive(Debug)]
pub struct IndexRegistry {
    store: IndexStore,
    storage: StorageClient,
    indexes: RwLock<BTreeMap<String, Arc<IndexEntry>>>,
    generation_reads: AtomicU64,
}

impl IndexRegistry {
    /// Over `store`; failures worth the owner's eye go to `storage`'s
    /// error journal.
    pub fn new(store: IndexStore, storage: StorageClient) -> Self {
        Self {
            store,
            storage,
            indexes: RwLock::new(BTreeMap::new()),
            generation_reads: AtomicU64::new(0),
        }
    }

    /// The index store.
    pub fn store(&self) -> &IndexStore {
        &self.store
    }

    /// Generations read back from storage since start.
    pub fn generation_reads(&self) -> u64 {
        self.generation_reads.load(Ordering::Relaxed)
    }

    /// Any registered index, damaged or not.
    pub fn get(&self, name: &str) -> Result<Arc<IndexEntry>> {
        self.indexes
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::IndexNotFound {
                name: name.to_owned(),
            })
    }

    /// An index whose record is readable: the only kind that can be
    /// searched, built or changed.
    pub fn usable(&self, name: &str) -> Result<Arc<IndexEntry>> {
        let entry = self.get(name)?;
        match entry.damage() {
            Some(reason) => Err(Error::IndexDamaged {
                index: name.to_owned(),
                reason: reason.to_owned(),
            }),
            None => Ok(entry),
        }
    }

    /// Whether `entry` is still the registered entry of `name` (not deleted
    /// or replaced meanwhile).
    pub fn is_registered(&self, name: &str, entry: &Arc<IndexEntry>) -> bool {
        self.indexes
            .read()
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
    }

    /// Every index, sorted by name.
    pub fn all(&self) -> Vec<Arc<IndexEntry>> {
        self.indexes.read().values().cloned().collect()
    }

    /// Registers an index whose folder could not be read at start as
    /// damaged, unless recovery registered it meanwhile.
    pub fn register_unreadable(&self, name: &str, reason: String) {
        self.indexes
            .write()
            .entry(name.to_owned())
            .or_insert_with(|| IndexEntry::damaged(name, reason));
    }

    /// Registers a new index and stores its record, first removing any
    /// files an earlier index of that name left behind, so its generations
    /// never mix with them. An index of that name that was never built
    /// ([`IndexRecord::never_built`]: its builds all failed or were
    /// cancelled) is replaced: a first build that fails (a column of the
    /// wrong type) leaves nothing to search or keep, and the fix is a create
    /// with another definition, which RebuildIndex cannot change.
    pub async fn create(&self, record: IndexRecord) -> Result<Arc<IndexEntry>> {
        let name = record.name.clone();
        if let Ok(old) = self.get(&name) {
            self.remove_never_built(&old).await?;
        }
        let entry = IndexEntry::new(record.clone());
        {
            let mut indexes = self.indexes.write();
            if indexes.contains_key(&name) {
                return Err(Error::IndexExists { name });
            }
            indexes.insert(name.clone(), entry.clone());
        }
        let stored = async {
            // An index this process could not load at start still has its
            // record: never overwrite it.
            match self.store.read_record(&name).await {
                Ok(None) => {}
                Ok(Some(_)) | Err(Error::Corrupt { .. }) => {
                    return Err(Error::IndexExists { name: name.clone() });
                }
                Err(error) => return Err(error),
            }
            self.store.delete_index(&name).await?;
            self.store.write_record(&record).await
        };
        if let Err(error) = stored.await {
            self.indexes.write().remove(&name);
            return Err(error);
        }
        Ok(entry)
    }

    /// Deletes `entry` (record, then files) if it is still registered and
    /// was never built; otherwise leaves it for `create` to refuse. Under
    /// the writer lock, so no rebuild reserves a generation meanwhile.
    async fn remove_never_built(&self, entry: &Arc<IndexEntry>) -> Result<()> {
        let _writer = entry.writer.lock().await;
        let name = entry.name();
        if entry.damage().is_some()
            || !entry.with_record(IndexRecord::never_built)
            || !self.is_registered(name, entry)
        {
            return Ok(());
        }
        tracing::info!(index = name, "replacing an index whose builds all failed");
        self.store.delete_index(name).await?;
        self.indexes.write().remove(name);
        Ok(())
    }

    /// Applies `change` to a copy of the record, stores it, and only then
    /// makes it the record in memory. The caller holds the writer lock.
    async fn commit<T>(
        &self,
        entry: &IndexEntry,
        change: impl FnOnce(&mut IndexRecord) -> Result<T>,
    ) -> Result<T> {
        let mut record = entry.record();
        let out = change(&mut record)?;
        record.update_time = Utc::now();
        self.store.write_record(&record).await?;
        *entry.record.lock() = record;
        Ok(out)
    }

    /// Deletes the files of generations the stored record no longer names.
    /// A failure only leaves files that the next start removes.
    async fn delete_generations(&self, index: &str, generations: &[u64]) {
        for generation in generations {
            if let Err(error) = self
                .store
                .delete_prefix(&generation_prefix(index, *generation))
                .await
            {
                tracing::warn!(index, generation, %error, "cannot delete a retired generation's files; the next start removes them");
            }
        }
    }

    /// Reserves a generation for a build, or finds the one an earlier
    /// request with the same id started. `params` unset takes the active
    /// generation's, else the newest one's.
    pub async fn reserve(
        &self,
        entry: &Arc<IndexEntry>,
        params: Option<HnswParams>,
        request_id: Option<String>,
    ) -> Result<Reserved> {
        let _writer = entry.writer.lock().await;
        let replay = entry.with_record(|record| {
            let id = request_id.as_ref()?;
            record
                .generations
                .iter()
                .find(|g| g.request_id.as_ref() == Some(id))
                .map(|g| g.generation)
        });
        if let Some(generation) = replay {
            return Ok(Reserved::Replay(generation));
        }
        self.commit(entry, |record| {
            let params = params
                .or_else(|| record.generation(record.active).map(|g| g.params))
                .or_else(|| record.generations.last().map(|g| g.params))
                .unwrap_or_default();
            Ok(Reserved::New(record.reserve(params, request_id), params))
        })
        .await
    }

    /// Records how a build of `generation` ended; the state machine's one
    /// exit for builds and adopted trial graphs alike.
    pub async fn finish(
        &self,
        entry: &Arc<IndexEntry>,
        generation: u64,
        outcome: Outcome,
    ) -> Result<()> {
        let _writer = entry.writer.lock().await;
        let name = entry.name().to_owned();
        if !self.is_registered(&name, entry) {
            // Deleted while it ran: record nothing (that would bring the
            // index back) and leave no files.
            self.delete_generations(&name, &[generation]).await;
            return Err(Error::IndexNotFound { name });
        }
        match outcome {
            Outcome::Ready {
                loaded,
                build_ms,
                promote,
            } => {
                let built = Built {
                    dataset_version: loaded.dataset_version,
                    vector_count: loaded.graph.len() as u64,
                    dimensions: loaded.graph.dim() as u32,
                    build_ms,
                    memory_bytes: loaded.memory_bytes(),
                };
                let committed = self
                    .commit(entry, |record| {
                        record.mark_ready(generation, built);
                        let activate = promote || record.active == 0;
                        if activate {
                            record.activate(generation)?;
                        }
                        Ok((activate, record.retire()))
                    })
                    .await;
                match committed {
                    Ok((activated, retired)) => {
                        if activated {
                            entry.set_active(loaded);
                        }
                        self.delete_generations(&name, &retired).await;
                        Ok(())
                    }
                    Err(error) => {
                        // Whole files the record cannot name: end the
                        // generation as failed, as a restart would not.
                        let reason = format!("its outcome could not be recorded: {error}");
                        self.end(
                            entry,
                            generation,
                            GenerationState::Failed,
                            reason,
                            None,
                            build_ms,
                        )
                        .await;
                        Err(error)
                    }
                }
            }
            Outcome::Ended {
                state,
                error,
                failure,
                build_ms,
            } => {
                self.end(entry, generation, state, error, failure, build_ms)
                    .await;
                Ok(())
            }
        }
    }

    /// Marks a generation failed or cancelled and removes its files. The
    /// caller holds the writer lock. When the record cannot be stored the
    /// memory still says how it ended (a restart finds no manifest and
    /// records the same).
    async fn end(
        &self,
        entry: &IndexEntry,
        generation: u64,
        state: GenerationState,
        error: String,
        failure: Option<crate::error::RecordedFailure>,
        build_ms: u64,
    ) {
        let name = entry.name().to_owned();
        let change = |record: &mut IndexRecord| {
            record.mark_ended(generation, state, error.clone());
            if let Some(g) = record.generation_mut(generation) {
                g.build_ms = build_ms;
                g.failure = failure.clone();
            }
            Ok(record.retire())
        };
        let retired = match self.commit(entry, change).await {
            Ok(retired) => retired,
            Err(store_error) => {
                tracing::error!(index = %name, generation, %store_error, "cannot record a build's end");
                let mut record = entry.record.lock();
                record.mark_ended(generation, state, error.clone());
                Vec::new()
            }
        };
        self.delete_generations(&name, &[generation]).await;
        self.delete_generations(&name, &retired).await;
    }

    /// Makes another generation active (promote or rollback): loads and
    /// verifies it first, so searches keep the current one until the new
    /// one is whole in memory and its record is stored.
    pub async fn swap(
        &self,
        entry: &Arc<IndexEntry>,
        swap: Swap,
        expected: Option<u64>,
    ) -> Result<()> {
        let _writer = entry.writer.lock().await;
        let (active, target) = entry.with_record(|record| {
            if let Some(expected) = expected
                && expected != record.active
            {
                return Err(Error::ActiveGenerationMismatch {
                    index: record.name.clone(),
                    expected,
                    actual: record.active,
                });
            }
            Ok((record.active, record.swap_target(swap)?))
        })?;
        if target == active {
            return Ok(());
        }
        let loaded = match self.read_generation(entry.name(), target).await {
            Ok(loaded) => Arc::new(loaded),
            Err(error) => {
                if matches!(error, Error::Corrupt { .. }) {
                    self.mark_damaged(entry, target, &error).await;
                }
                return Err(error);
            }
        };
        self.commit(entry, |record| record.swap(swap)).await?;
        entry.set_active(loaded);
        Ok(())
    }

    /// Records that a generation's files are damaged (state DAMAGED, the
    /// cause journaled); it is never loaded again. The caller holds the
    /// writer lock.
    async fn mark_damaged(&self, entry: &IndexEntry, generation: u64, error: &Error) {
        let message = error.to_string();
        self.journal(
            "load generation",
            &generation_prefix(entry.name(), generation),
            &message,
        )
        .await;
        let marked = self
            .commit(entry, |record| {
                record.mark_ended(generation, GenerationState::Damaged, message.clone());
                Ok(())
            })
            .await;
        if let Err(store_error) = marked {
            tracing::error!(index = entry.name(), generation, %store_error, "cannot record a damaged generation");
        }
    }

    /// Deletes an inactive, finished generation: the record first, then
    /// its files.
    pub async fn forget(&self, entry: &Arc<IndexEntry>, generation: u64) -> Result<()> {
        let _writer = entry.writer.lock().await;
        self.commit(entry, |record| record.forget(generation))
            .await?;
        self.delete_generations(entry.name(), &[generation]).await;
        Ok(())
    }

    /// Changes live settings, applying retention to a new retention count.
    pub async fn update(
        &self,
        entry: &Arc<IndexEntry>,
        ef_search: Option<u32>,
        retained: Option<u32>,
    ) -> Result<()> {
        let _writer = entry.writer.lock().await;
        let retired = self
            .commit(entry, |record| {
                if let Some(ef) = ef_search {
                    record.ef_search = ef;
                }
                if let Some(retained) = retained {
                    record.retained_generations = retained;
                }
                Ok(record.retire())
            })
            .await?;
        self.delete_generations(entry.name(), &retired).await;
        Ok(())
    }

    /// Deletes an index (damaged or not): stops its builds, deletes its
    /// record, then its files.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let entry = self.get(name)?;
        let _writer = entry.writer.lock().await;
        for build in entry.builds.lock().values() {
            build.control.cancel.store(true, Ordering::Relaxed);
        }
        self.store.delete_index(name).await?;
        self.indexes.write().remove(name);
        Ok(())
    }

    /// Reads and verifies one stored generation.
    pub async fn read_generation(&self, index: &str, generation: u64) -> Result<LoadedGeneration> {
        let (graph, rows, manifest) = self.store.read_generation(index, generation).await?;
        self.generation_reads.fetch_add(1, Ordering::Relaxed);
        Ok(LoadedGeneration {
            generation,
            graph,
            rows,
            dataset_version: manifest.dataset_version,
            indexes: Default::default(),
        })
    }

    /// Journals a failure of an index's stored state (ListErrors).
    async fn journal(&self, operation: &str, key: &str, message: &str) {
        lakehouse_client::report_error(
            &self.storage,
            lakehouse_client::ErrorReport {
                service: "vector",
                operation,
                bucket: "",
                key,
                message,
            },
        )
        .await;
    }
}
