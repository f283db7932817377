//! The ingest history journal: every start and finish of an ingest, as
//! NDJSON on the shared write-once append log under
//! `_lakehouse/ingests/` in storage's default bucket, so ListIngests,
//! GetIngest and request-id replay survive a restart.
//!
//! Each event is the whole [`IngestRecord`] at that moment; the last one
//! of an id wins when the journal is read back. An ingest whose last event
//! says RUNNING was cut off by a stop of its process: it is read back as
//! FAILED with reason `INTERRUPTED` (its parts stay under its ingest prefix,
//! outside every manifest, unless its commit had landed — the dataset's
//! lineage then names it).
//!
//! The orphan sweeper ([`crate::sweeper`]) journals each object it removes
//! here too, as a [`SweptEvent`] (a line with `"kind":"swept"`); reading the
//! ingests back skips those lines. An older binary cannot read a journal
//! that holds them (it knows only ingest records), so a downgrade past the
//! sweeper needs the `swept` lines compacted away or the journal moved aside.
//!
//! A journal write that fails is logged and retried with the next event (the
//! append log keeps unflushed records); it never fails the ingest itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use lakehouse_shared::append_log::AppendLog;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::registry::{Failure, IngestRecord, State};

/// Where the journal lives in storage's default bucket.
pub const HISTORY_PREFIX: &str = "_lakehouse/ingests";

/// Flushed parts merged into one object every this many flushes, so a read
/// at start-up stays a handful of objects.
const COMPACT_EVERY: u64 = 64;

/// One object the orphan sweeper removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptEvent {
    /// Always [`SweptKind::Swept`]: what tells this line from an ingest's.
    pub kind: SweptKind,
    /// When it was removed.
    pub time: DateTime<Utc>,
    /// The bucket that held it.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The ingest that wrote it.
    pub ingest_id: String,
    /// The dataset it was written for.
    pub dataset: String,
}

/// The marker of a [`SweptEvent`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweptKind {
    /// An orphaned part was removed.
    Swept,
}

/// One line of the journal. Untagged, so ingest lines keep the shape they
/// had before the sweeper existed (a plain [`IngestRecord`]); a swept line is
/// told apart by its required `kind` field, which no ingest record has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Swept(SweptEvent),
    Ingest(IngestRecord),
}

/// The journal of ingest starts and finishes, and of swept orphans.
#[derive(Debug)]
pub struct History {
    log: AppendLog<Entry>,
    flushes: AtomicU64,
}

impl History {
    /// The journal in `store` (storage's default bucket).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            log: AppendLog::new(store, HISTORY_PREFIX),
            flushes: AtomicU64::new(0),
        }
    }

    /// Records an event and makes it durable (best effort: a failure is
    /// logged and the record is written with the next event).
    pub async fn record(&self, record: IngestRecord) {
        self.log.append(Entry::Ingest(record));
        self.flush().await;
    }

    /// Records the objects one sweep removed, flushed once (best effort,
    /// like [`History::record`]).
    pub async fn record_swept(&self, events: Vec<SweptEvent>) {
        if events.is_empty() {
            return;
        }
        for event in events {
            self.log.append(Entry::Swept(event));
        }
        self.flush().await;
    }

    async fn flush(&self) {
        match self.log.flush().await {
            Ok(_) => {
                if self.flushes.fetch_add(1, Ordering::Relaxed) % COMPACT_EVERY == COMPACT_EVERY - 1
                    && let Err(error) = self.log.compact().await
                {
                    tracing::warn!(%error, "compacting the ingest history failed; it stays correct, only slower to read");
                }
            }
            Err(error) => tracing::warn!(
                %error,
                "writing the ingest history failed; the event is kept and written with the next one"
            ),
        }
    }

    /// The last `limit` ingests, oldest first, with interrupted ones marked
    /// FAILED.
    pub async fn load(&self, limit: usize) -> Result<Vec<IngestRecord>, lakehouse_shared::Error> {
        let events = self.log.read_durable().await?;
        let ingests = events.into_iter().filter_map(|entry| match entry {
            Entry::Ingest(record) => Some(record),
            Entry::Swept(_) => None,
        });
        Ok(latest(ingests, limit))
    }

    /// Every swept object in the durable journal, oldest first.
    #[cfg(test)]
    pub async fn load_swept(&self) -> Result<Vec<SweptEvent>, lakehouse_shared::Error> {
        let events = self.log.read_durable().await?;
        Ok(events
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Swept(event) => Some(event),
                Entry::Ingest(_) => None,
            })
            .collect())
    }
}

/// The last event of each id, in order of first appearance, the newest
/// `limit` of them, running ones turned into interrupted failures.
fn latest(events: impl IntoIterator<Item = IngestRecord>, limit: usize) -> Vec<IngestRecord> {
    let mut order: Vec<String> = Vec::new();
    let mut last: HashMap<String, IngestRecord> = HashMap::new();
    for event in events {
        if !last.contains_key(&event.id) {
            order.push(event.id.clone());
        }
        last.insert(event.id.clone(), event);
    }
    let skip = order.len().saturating_sub(limit);
    order
        .into_iter()
        .skip(skip)
        .filter_map(|id| last.remove(&id))
        .map(|mut record| {
            if record.state == State::Running {
                record.state = State::Failed;
                record.finish_time = Some(Utc::now());
                record.error = "the ingest service stopped before this ingest finished; nothing of it is visible unless the dataset's lineage names its id".to_owned();
                record.failure = Some(Failure {
                    code: tonic::Code::Unavailable as i32,
                    reason: "INTERRUPTED".to_owned(),
                    metadata: Default::default(),
                });
            }
            record
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, state: State) -> IngestRecord {
        IngestRecord {
            id: id.to_owned(),
            dataset: "d".to_owned(),
            bucket: String::new(),
            request_id: String::new(),
            state,
            source: "s".to_owned(),
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

    #[tokio::test]
    async fn journal_round_trips_and_marks_interrupted_ingests() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let history = History::new(store.clone());
        history.record(event("a", State::Running)).await;
        history.record(event("b", State::Running)).await;
        history.record(event("a", State::Succeeded)).await;
        // A new process reads what the old one wrote.
        let loaded = History::new(store).load(10).await.expect("load");
        let states: Vec<_> = loaded.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(states, [("a", State::Succeeded), ("b", State::Failed)]);
        assert_eq!(
            loaded[1].failure.as_ref().map(|f| f.reason.as_str()),
            Some("INTERRUPTED")
        );
    }

    #[tokio::test]
    async fn swept_lines_are_journaled_and_skipped_when_ingests_are_read_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let history = History::new(store.clone());
        history.record(event("a", State::Running)).await;
        let swept = SweptEvent {
            kind: SweptKind::Swept,
            time: Utc::now(),
            bucket: "main".to_owned(),
            key: "datasets/d/a/part-00000.parquet".to_owned(),
            size_bytes: 7,
            ingest_id: "a".to_owned(),
            dataset: "d".to_owned(),
        };
        history.record_swept(vec![swept.clone()]).await;
        history.record(event("b", State::Succeeded)).await;
        let reader = History::new(store);
        let loaded = reader.load(10).await.expect("load");
        let ids: Vec<_> = loaded.iter().map(|r| (r.id.as_str(), r.state)).collect();
        assert_eq!(ids, [("a", State::Failed), ("b", State::Succeeded)]);
        assert_eq!(reader.load_swept().await.expect("swept"), [swept]);
    }

    #[test]
    fn an_ingest_line_written_before_the_sweeper_still_reads() {
        let line = serde_json::to_string(&event("a", State::Succeeded)).expect("encode");
        let entry: Entry = serde_json::from_str(&line).expect("decode");
        assert!(matches!(entry, Entry::Ingest(record) if record.id == "a"));
    }

    #[test]
    fn only_the_newest_are_kept() {
        let events = ["1", "2", "3"]
            .map(|id| event(id, State::Succeeded))
            .to_vec();
        let kept: Vec<_> = latest(events, 2).into_iter().map(|r| r.id).collect();
        assert_eq!(kept, ["2", "3"]);
    }
}
