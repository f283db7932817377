//! The ingests this process knows, for ListIngests, GetIngest, CancelIngest
//! and request-id replay.
//!
//! The registry is the in-memory view, bounded (`--ingest-history`, default
//! 1000): when full, the oldest finished ingest is forgotten; running ones
//! are never evicted. Every start and finish is also written to the history
//! journal ([`crate::history`]), which fills the registry again after a
//! restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

/// Why an ingest did not commit, as its terminal `google.rpc.Status`
/// carries it (kept as plain fields so the journal can hold it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The gRPC code number.
    pub code: i32,
    /// The `ErrorInfo` reason.
    pub reason: String,
    /// The `ErrorInfo` metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One ingest as ListIngests shows it (and as the history journal holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// Unique id.
    pub id: String,
    /// Target dataset.
    pub dataset: String,
    /// The bucket its parts go to.
    #[serde(default)]
    pub bucket: String,
    /// The request id it was started with; empty for none.
    #[serde(default)]
    pub request_id: String,
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
    /// Why it failed, for people.
    pub error: String,
    /// Why it failed, for programs; `None` unless FAILED or CANCELLED.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// Dataset version after the commit.
    pub dataset_version: u64,
    /// The column parallel readers split on; empty for one reader.
    #[serde(default)]
    pub split_column: String,
}

#[derive(Debug)]
struct Entry {
    record: IngestRecord,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

/// What CancelIngest found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOutcome {
    /// True when the ingest was running and has been told to stop.
    pub cancelled: bool,
    /// The ingest now.
    pub record: IngestRecord,
}

/// The first sequence number of an ingest started by this process; those
/// below are restored from the journal.
const LIVE_SEQ_START: u64 = 1 << 40;

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    restored: u64,
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

    /// Registers a running ingest, cancelled through `cancel`.
    pub fn start(&self, record: IngestRecord, progress: Arc<Progress>, cancel: CancellationToken) {
        self.insert(record, progress, cancel);
    }

    /// Puts a finished ingest read back from the history journal (oldest
    /// first) into the view, behind every ingest this process started: an
    /// id this process already knows is live here and is left alone.
    pub fn restore(&self, record: IngestRecord) {
        let mut inner = self.lock();
        if inner.by_id.contains_key(&record.id) {
            return;
        }
        let seq = inner.restored;
        inner.restored += 1;
        inner.by_id.insert(record.id.clone(), seq);
        inner.by_seq.insert(
            seq,
            Entry {
                record,
                progress: Arc::default(),
                cancel: CancellationToken::new(),
            },
        );
    }

    fn insert(&self, record: IngestRecord, progress: Arc<Progress>, cancel: CancellationToken) {
        let mut inner = self.lock();
        // Live ingests sort after every restored one.
        let seq = inner.next.max(LIVE_SEQ_START);
        inner.next = seq + 1;
        if let Some(old) = inner.by_id.insert(record.id.clone(), seq) {
            inner.by_seq.remove(&old);
        }
        inner.by_seq.insert(
            seq,
            Entry {
                record,
                progress,
                cancel,
            },
        );
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

    /// Records the end of an ingest; returns the record as finished.
    pub fn finish(&self, id: &str, update: impl FnOnce(&mut IngestRecord)) -> Option<IngestRecord> {
        let mut inner = self.lock();
        let seq = inner.by_id.get(id).copied()?;
        let entry = inner.by_seq.get_mut(&seq)?;
        let live = entry.progress.snapshot();
        entry.record.rows = live.rows;
        entry.record.bytes = live.bytes;
        entry.record.parts = live.parts;
        update(&mut entry.record);
        Some(entry.record.clone())
    }

    /// Tells a running ingest to stop. `None` when the id is unknown.
    pub fn cancel(&self, id: &str) -> Option<CancelOutcome> {
        let inner = self.lock();
        let entry = inner.by_seq.get(inner.by_id.get(id)?)?;
        let running = entry.record.state == State::Running && !entry.cancel.is_cancelled();
        if running {
            entry.cancel.cancel();
        }
        Some(CancelOutcome {
            cancelled: running,
            record: Self::view(entry),
        })
    }

    /// The newest ingest started with `request_id` that a retry should
    /// follow instead of ingesting again: a running or committed one (a
    /// failed or cancelled ingest changed nothing, so it runs again).
    pub fn by_request_id(&self, request_id: &str) -> Option<IngestRecord> {
        let inner = self.lock();
        inner
            .by_seq
            .values()
            .rev()
            .find(|e| {
                e.record.request_id == request_id
                    && matches!(e.record.state, State::Running | State::Succeeded)
            })
            .map(Self::view)
    }

    /// The live counters of a running ingest.
    pub fn progress(&self, id: &str) -> Option<Arc<Progress>> {
        let inner = self.lock();
        inner
            .by_seq
            .get(inner.by_id.get(id)?)
            .map(|e| e.progress.clone())
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
    /// page), newest first, optionally of one dataset and one state; and the
    /// token of the next page (only when another ingest matches).
    pub fn list(
        &self,
        dataset: &str,
        state: Option<State>,
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
            if state.is_some_and(|s| s != entry.record.state) {
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
            bucket: String::new(),
            request_id: String::new(),
            state: State::Running,
            source: "x".to_owned(),
            rows: 0,
            bytes: 0,
            parts: 0,
            start_time: Utc::now(),
            finish_time: None,
            error: String::new(),
            failure: None,
            dataset_version: 0,
            split_column: String::new(),
        }
    }

    #[test]
    fn history_is_bounded_and_keeps_running_ingests() {
        let registry = Registry::new(2);
        registry.start(record("a", "d"), Arc::default(), CancellationToken::new());
        registry.start(record("b", "d"), Arc::default(), CancellationToken::new());
        registry.finish("b", |r| r.state = State::Succeeded);
        registry.start(record("c", "d"), Arc::default(), CancellationToken::new());
        // b (finished, oldest finished) was evicted; a is still running.
        assert!(registry.get("a").is_some());
        assert!(registry.get("b").is_none());
        assert!(registry.get("c").is_some());
    }

    #[test]
    fn listing_pages_newest_first_and_filters() {
        let registry = Registry::new(10);
        for (id, dataset) in [("1", "x"), ("2", "y"), ("3", "x"), ("4", "x")] {
            registry.start(
                record(id, dataset),
                Arc::default(),
                CancellationToken::new(),
            );
        }
        let (page, next) = registry.list("x", None, None, 2);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["4", "3"]
        );
        let (page, next) = registry.list("x", None, next, 2);
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
        registry.start(record("a", "d"), progress.clone(), CancellationToken::new());
        progress.add_rows(42);
        assert_eq!(registry.get("a").map(|r| r.rows), Some(42));
    }

    #[test]
    fn cancel_stops_a_running_ingest_once_and_replay_skips_failures() {
        let registry = Registry::new(10);
        let token = CancellationToken::new();
        let mut running = record("a", "d");
        running.request_id = "r1".into();
        registry.start(running, Arc::default(), token.clone());
        assert_eq!(registry.by_request_id("r1").map(|r| r.id), Some("a".into()));
        assert_eq!(registry.cancel("a").map(|o| o.cancelled), Some(true));
        assert!(token.is_cancelled());
        assert_eq!(registry.cancel("a").map(|o| o.cancelled), Some(false));
        assert!(registry.cancel("nope").is_none());
        registry.finish("a", |r| r.state = State::Cancelled);
        assert_eq!(
            registry.by_request_id("r1"),
            None,
            "a cancelled ingest runs again"
        );
        let (page, _) = registry.list("", Some(State::Cancelled), None, 10);
        assert_eq!(page.len(), 1);
        let (page, _) = registry.list("", Some(State::Succeeded), None, 10);
        assert!(page.is_empty());
    }
}
