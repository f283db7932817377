//! Recent ingests, for ListIngests and GetIngest.
//!
//! The history lives in process memory and is bounded (`--ingest-history`,
//! default 1000): when full, the oldest finished ingest is forgotten; running
//! ones are never evicted. It does not survive a restart — the durable record
//! of a successful ingest is the dataset's lineage in the catalog, and every
//! failure is in the storage error journal.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// Where a running ingest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Connecting, reading the schema.
    Preparing = 1,
    /// Reading rows, writing parts.
    Streaming = 2,
    /// Registering in the catalog.
    Committing = 3,
}

/// The final or current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Running.
    Running,
    /// Committed.
    Succeeded,
    /// Failed; the dataset is unchanged.
    Failed,
    /// Cancelled by the client; the dataset is unchanged.
    Cancelled,
}

/// Live counters of one ingest, shared by its tasks.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    phase: AtomicU8,
    rows: AtomicU64,
    bytes: AtomicU64,
    parts: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Preparing as u8),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            parts: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Phase.
    pub phase: Phase,
    /// Rows read.
    pub rows: u64,
    /// Parquet bytes written (finished parts plus the open one's flushed bytes).
    pub bytes: u64,
    /// Parts finished.
    pub parts: u64,
    /// Milliseconds since the start.
    pub elapsed_ms: u64,
}

impl Progress {
    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Adds rows read.
    pub fn add_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Sets the bytes written so far.
    pub fn set_bytes(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Counts a finished part.
    pub fn add_part(&self) {
        self.parts.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let phase = match self.phase.load(Ordering::Relaxed) {
            2 => Phase::Streaming,
            3 => Phase::Committing,
            _ => Phase::Preparing,
        };
        ProgressSnapshot {
            phase,
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            parts: self.parts.load(Ordering::Relaxed),
            elapsed_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// One ingest as ListIngests shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    /// Unique id.
    pub id: String,
    /// Target dataset.
    pub dataset: String,
    /// State.
    pub state: State,
    /// Redacted source, or the file name.
    pub source: String,
    /// Rows.
    pub rows: u64,
    /// Parquet bytes.
    pub bytes: u64,
    /// Parts.
    pub parts: u64,
    /// Start.
    pub start_time: DateTime<Utc>,
    /// Finish; `None` while running.
    pub finish_time: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: String,
    /// Dataset version after the commit.
    pub dataset_version: u64,
}

#[derive(Debug)]
struct Entry {
    record: IngestRecord,
    progress: Arc<Progress>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    by_seq: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
}

/// The bounded in-memory history.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Registry {
    /// A history of at most `capacity` finished ingests.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (every update is a single insert/remove), so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a running ingest.
    pub fn start(&self, record: IngestRecord, progress: Arc<Progress>) {
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        inner.by_id.insert(record.id.clone(), seq);
        inner.by_seq.insert(seq, Entry { record, progress });
        let finished: Vec<u64> = inner
            .by_seq
            .iter()
            .filter(|(_, e)| e.record.state != State::Running)
            .map(|(seq, _)| *seq)
            .collect();
        let excess = inner.by_seq.len().saturating_sub(self.capacity);
        for seq in finished.into_iter().take(excess) {
            if let Some(entry) = inner.by_seq.remove(&seq) {
                inner.by_id.remove(&entry.record.id);
            }
        }
    }

    /// Records the end of an ingest.
    pub fn finish(&self, id: &str, update: impl FnOnce(&mut IngestRecord)) {
        let mut inner = self.lock();
        let Some(seq) = inner.by_id.get(id).copied() else {
            return;
        };
        if let Some(entry) = inner.by_seq.get_mut(&seq) {
            let live = entry.progress.snapshot();
            entry.record.rows = live.rows;
            entry.record.bytes = live.bytes;
            entry.record.parts = live.parts;
            update(&mut entry.record);
        }
    }

    fn view(entry: &Entry) -> IngestRecord {
        let mut record = entry.record.clone();
        if record.state == State::Running {
            let live = entry.progress.snapshot();
            record.rows = live.rows;
            record.bytes = live.bytes;
            record.parts = live.parts;
        }
        record
    }

    /// One ingest.
    pub fn get(&self, id: &str) -> Option<IngestRecord> {
        let inner = self.lock();
        let seq = inner.by_id.get(id)?;
        inner.by_seq.get(seq).map(Self::view)
    }

    /// Up to `limit` ingests older than `before` (a sequence from a previous
    /// page), newest first, optionally of one dataset; and the token of the
    /// next page.
    pub fn list(
        &self,
        dataset: &str,
        before: Option<u64>,
        limit: usize,
    ) -> (Vec<IngestRecord>, Option<u64>) {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut next = None;
        let upper = before.unwrap_or(u64::MAX);
        for (seq, entry) in inner.by_seq.range(..upper).rev() {
            if !dataset.is_empty() && entry.record.dataset != dataset {
                continue;
            }
            if out.len() == limit {
                next = Some(*seq + 1);
                break;
            }
            out.push(Self::view(entry));
        }
        (out, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, dataset: &str) -> IngestRecord {
        IngestRecord {
            id: id.to_owned(),
            dataset: dataset.to_owned(),
            state: State::Running,
            source: "x".to_owned(),
            rows: 0,
            bytes: 0,
            parts: 0,
            start_time: Utc::now(),
            finish_time: None,
            error: String::new(),
            dataset_version: 0,
        }
    }

    #[test]
    fn history_is_bounded_and_keeps_running_ingests() {
        let registry = Registry::new(2);
        registry.start(record("a", "d"), Arc::default());
        registry.start(record("b", "d"), Arc::default());
        registry.finish("b", |r| r.state = State::Succeeded);
        registry.start(record("c", "d"), Arc::default());
        // b (finished, oldest finished) was evicted; a is still running.
        assert!(registry.get("a").is_some());
        assert!(registry.get("b").is_none());
        assert!(registry.get("c").is_some());
    }

    #[test]
    fn listing_pages_newest_first_and_filters() {
        let registry = Registry::new(10);
        for (id, dataset) in [("1", "x"), ("2", "y"), ("3", "x"), ("4", "x")] {
            registry.start(record(id, dataset), Arc::default());
        }
        let (page, next) = registry.list("x", None, 2);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["4", "3"]
        );
        let (page, next) = registry.list("x", next, 2);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(next, None);
    }

    #[test]
    fn running_ingests_show_live_counters() {
        let registry = Registry::new(10);
        let progress = Arc::new(Progress::default());
        registry.start(record("a", "d"), progress.clone());
        progress.add_rows(42);
        assert_eq!(registry.get("a").map(|r| r.rows), Some(42));
    }
}
