//! A write-once log of records on any `ObjectStore`.
//!
//! Appends are buffered in memory; a flush writes the buffer as a NEW
//! immutable object (created with `PutMode::Create`, never read-modify-write),
//! so concurrent writers and crashes can never corrupt what was written.
//! Compaction writes one merged object that lists the parts it covers, and
//! only then deletes those parts; a reader skips any part that a merged object
//! covers, so a crash between the write and the deletes duplicates nothing,
//! and a crash before the write loses nothing.
//!
//! Object layout under the log's prefix (sorted by name = sorted by time):
//! `<prefix>/<nanos:020>-<random>-r<first>_<count>.part.ndjson` for
//! flushed parts and `<prefix>/<nanos of newest covered part:020>-<random>-
//! r<first>_<count>.merged.ndjson` for compactions. Every object is
//! NDJSON: a header line, then one record a line.
//!
//! Every record has an ordinal, its position in the log (0, 1, 2, ...), and
//! each object's name carries the range of ordinals it holds. That makes a
//! page read cost what the page holds: [`AppendLog::read_page`] lists names,
//! picks the objects that hold the ordinals it needs (a merged object
//! replaces the parts inside its range), and reads only those, with ranged
//! reads through the header's index for large objects. Ordinals are handed
//! out by the one process that writes a log (each log has one writer: the
//! journal is storage's, the ingest history ingest's); names from before
//! ordinals, or ranges that disagree (two writers), make reads fall back to
//! reading every object in name order, which loses nothing.
//!
//! The code is split by job: `flush` writes the buffer as a part, `compact`
//! merges parts, `read` reads the log whole or by page, `layout` names
//! objects and plans which to read, `object_format` holds the NDJSON header
//! and record parsing, and `object_io` reads and writes single objects in
//! the store.

mod compact;
mod flush;
mod layout;
mod object_format;
mod object_io;
mod read;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use compact::{CompactOutcome, CompactStop};
pub use flush::FlushOutcome;
pub use read::Page;

/// What the writer knows about the durable part of its log.
#[derive(Debug, Default)]
struct WriterState {
    /// Records flushed (the next ordinal), once known.
    durable: Option<u64>,
    /// Bumped by every successful flush, so a reader can tell that records
    /// moved from the buffer to storage while it was listing.
    flushes: u64,
}

/// A buffered, write-once, compactable log of `R` records.
pub struct AppendLog<R> {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    buffer: std::sync::Mutex<(Vec<R>, WriterState)>,
    /// Serialises flushes and compactions of this process, so a compaction
    /// never races the object a flush is writing.
    write_lock: tokio::sync::Mutex<()>,
}

impl<R> std::fmt::Debug for AppendLog<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendLog")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .finish_non_exhaustive()
    }
}

impl<R> AppendLog<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A log whose objects live under `prefix` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<Path>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            buffer: std::sync::Mutex::new((Vec::new(), WriterState::default())),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Buffers a record; it is durable after the next [`AppendLog::flush`].
    pub fn append(&self, record: R) {
        self.lock_buffer().0.push(record);
    }

    /// Records appended but not yet flushed.
    pub fn buffered(&self) -> Vec<R> {
        self.lock_buffer().0.clone()
    }

    /// Number of records waiting for a flush.
    pub fn buffered_len(&self) -> usize {
        self.lock_buffer().0.len()
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, (Vec<R>, WriterState)> {
        // A panic while holding this lock cannot leave the Vec half-updated
        // (push and swap are atomic from our point of view), so poison is safe
        // to ignore.
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
