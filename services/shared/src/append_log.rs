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
//! `<prefix>/<nanos:020>-<random>.part.ndjson` for flushed parts and
//! `<prefix>/<nanos of newest covered part:020>-<random>.merged.ndjson` for
//! compactions. Every object is NDJSON: a header line, then one record a line.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The first line of every log object.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Header {
    /// Format version.
    v: u32,
    /// Names (last path segment) of the objects this one replaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    covers: Vec<String>,
}

/// What a flush wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushOutcome {
    /// The new object.
    pub key: String,
    /// Records in it.
    pub records: usize,
}

/// What a compaction wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactOutcome {
    /// The merged object.
    pub key: String,
    /// Objects merged (and deleted, unless deletion failed).
    pub merged_objects: usize,
    /// Records in the merged object.
    pub records: usize,
}

/// Where a compaction stops; tests use it to simulate a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStop {
    /// Write the merged object, then delete the parts (the normal path).
    Complete,
    /// Write the merged object and stop, as a crash before the deletes would.
    AfterWrite,
}

/// A buffered, write-once, compactable log of `R` records.
pub struct AppendLog<R> {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    buffer: std::sync::Mutex<Vec<R>>,
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
            buffer: std::sync::Mutex::new(Vec::new()),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Buffers a record; it is durable after the next [`AppendLog::flush`].
    pub fn append(&self, record: R) {
        self.lock_buffer().push(record);
    }

    /// Records appended but not yet flushed.
    pub fn buffered(&self) -> Vec<R> {
        self.lock_buffer().clone()
    }

    /// Number of records waiting for a flush.
    pub fn buffered_len(&self) -> usize {
        self.lock_buffer().len()
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, Vec<R>> {
        // A panic while holding this lock cannot leave the Vec half-updated
        // (push and swap are atomic from our point of view), so poison is safe
        // to ignore.
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes buffered records as a new object. On failure the records go
    /// back to the front of the buffer, so nothing is lost.
    pub async fn flush(&self) -> Result<Option<FlushOutcome>> {
        let _guard = self.write_lock.lock().await;
        let records = std::mem::take(&mut *self.lock_buffer());
        if records.is_empty() {
            return Ok(None);
        }
        let name = format!("{}-{}.part.ndjson", timestamp_key(), random_suffix());
        match self.write_object(&name, &Header::default(), &records).await {
            Ok(key) => Ok(Some(FlushOutcome {
                key,
                records: records.len(),
            })),
            Err(error) => {
                let mut buffer = self.lock_buffer();
                let newer = std::mem::replace(&mut *buffer, records);
                buffer.extend(newer);
                Err(error)
            }
        }
    }

    /// Every durable record in order, followed by the buffered ones.
    pub async fn read_all(&self) -> Result<Vec<R>> {
        let mut records = self.read_durable().await?;
        records.extend(self.buffered());
        Ok(records)
    }

    /// Every flushed record, in order, each exactly once.
    pub async fn read_durable(&self) -> Result<Vec<R>> {
        let objects = self.read_objects().await?;
        let covered: BTreeSet<&str> = objects
            .iter()
            .flat_map(|o| o.header.covers.iter().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        for object in &objects {
            if !covered.contains(object.name.as_str()) {
                out.extend(object.records.iter().cloned());
            }
        }
        Ok(out)
    }

    /// Merges every flushed object into one, then deletes the merged ones.
    pub async fn compact(&self) -> Result<Option<CompactOutcome>> {
        self.compact_until(CompactStop::Complete).await
    }

    /// [`AppendLog::compact`], stopping where `stop` says.
    pub async fn compact_until(&self, stop: CompactStop) -> Result<Option<CompactOutcome>> {
        let _guard = self.write_lock.lock().await;
        let objects = self.read_objects().await?;
        if objects.len() < 2 {
            return Ok(None);
        }
        // Every object present is covered by the merge, including those a
        // previous crashed compaction already covered: cover them
        // transitively so the older merged object may be deleted too.
        let mut covers: BTreeSet<String> = BTreeSet::new();
        let mut live = Vec::new();
        let already: BTreeSet<&str> = objects
            .iter()
            .flat_map(|o| o.header.covers.iter().map(String::as_str))
            .collect();
        for object in &objects {
            covers.insert(object.name.clone());
            covers.extend(object.header.covers.iter().cloned());
            if !already.contains(object.name.as_str()) {
                live.extend(object.records.iter().cloned());
            }
        }
        let newest = objects
            .last()
            .map(|o| o.name.split('-').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let name = format!("{newest}-{}.merged.ndjson", random_suffix());
        let header = Header {
            v: 1,
            covers: covers.iter().cloned().collect(),
        };
        let key = self.write_object(&name, &header, &live).await?;
        let outcome = CompactOutcome {
            key,
            merged_objects: objects.len(),
            records: live.len(),
        };
        if stop == CompactStop::AfterWrite {
            return Ok(Some(outcome));
        }
        let doomed: Vec<Path> = objects
            .iter()
            .map(|o| self.prefix.clone().join(o.name.as_str()))
            .collect();
        let deletions = self
            .store
            .delete_stream(futures::stream::iter(doomed.into_iter().map(Ok)).boxed())
            .collect::<Vec<_>>()
            .await;
        for result in deletions {
            if let Err(error) = result {
                // Harmless: the merged object covers it, so readers skip it
                // and the next compaction deletes it.
                tracing::warn!(prefix = %self.prefix, %error, "compacted part not deleted");
            }
        }
        Ok(Some(outcome))
    }

    async fn write_object(&self, name: &str, header: &Header, records: &[R]) -> Result<String> {
        let mut body = serde_json::to_vec(header).map_err(Error::AppendLogEncode)?;
        body.push(b'\n');
        for record in records {
            serde_json::to_writer(&mut body, record).map_err(Error::AppendLogEncode)?;
            body.push(b'\n');
        }
        let location = self.prefix.clone().join(name);
        self.store
            .put_opts(&location, PutPayload::from(body), PutMode::Create.into())
            .await
            .map_err(|source| self.store_error(source))?;
        Ok(location.to_string())
    }

    async fn read_objects(&self) -> Result<Vec<LogObject<R>>> {
        let mut metas: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|source| self.store_error(source))?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut objects = Vec::with_capacity(metas.len());
        for meta in metas {
            let Some(name) = meta.location.filename().map(str::to_owned) else {
                continue;
            };
            if !name.ends_with(".ndjson") {
                continue;
            }
            let bytes = match self.store.get(&meta.location).await {
                Ok(result) => result.bytes().await,
                Err(error) => Err(error),
            };
            let bytes = match bytes {
                Ok(bytes) => bytes,
                // Deleted by a concurrent compaction after we listed it: the
                // merged object we also listed (or will) holds its records.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => return Err(self.store_error(source)),
            };
            objects.push(parse_object(meta.location.as_ref(), name, &bytes)?);
        }
        Ok(objects)
    }

    fn store_error(&self, source: object_store::Error) -> Error {
        Error::AppendLogStore {
            prefix: self.prefix.to_string(),
            source,
        }
    }
}

struct LogObject<R> {
    name: String,
    header: Header,
    records: Vec<R>,
}

fn parse_object<R: DeserializeOwned>(
    key: &str,
    name: String,
    bytes: &[u8],
) -> Result<LogObject<R>> {
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty());
    let header = match lines.next() {
        Some((index, line)) => {
            serde_json::from_slice(line).map_err(|source| Error::AppendLogCorrupt {
                key: key.to_owned(),
                line: index + 1,
                source,
            })?
        }
        None => Header::default(),
    };
    let mut records = Vec::new();
    for (index, line) in lines {
        records.push(
            serde_json::from_slice(line).map_err(|source| Error::AppendLogCorrupt {
                key: key.to_owned(),
                line: index + 1,
                source,
            })?,
        );
    }
    Ok(LogObject {
        name,
        header,
        records,
    })
}

/// Nanoseconds since the epoch, zero-padded so names sort by time.
fn timestamp_key() -> String {
    let nanos = chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or_default()
        .max(0);
    format!("{nanos:020}")
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        n: u32,
    }

    fn log(store: &Arc<dyn ObjectStore>) -> AppendLog<Rec> {
        AppendLog::new(store.clone(), "journal/test")
    }

    async fn numbers(log: &AppendLog<Rec>) -> Vec<u32> {
        log.read_all()
            .await
            .expect("read")
            .into_iter()
            .map(|r| r.n)
            .collect()
    }

    #[tokio::test]
    async fn flush_writes_new_objects_and_read_merges_in_order() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = log(&store);
        log.append(Rec { n: 1 });
        log.append(Rec { n: 2 });
        let first = log
            .flush()
            .await
            .expect("flush")
            .expect("something flushed");
        assert_eq!(first.records, 2);
        log.append(Rec { n: 3 });
        let second = log
            .flush()
            .await
            .expect("flush")
            .expect("something flushed");
        assert_ne!(first.key, second.key, "each flush is a new object");
        log.append(Rec { n: 4 });
        assert_eq!(numbers(&log).await, vec![1, 2, 3, 4]);
        assert_eq!(log.read_durable().await.expect("read").len(), 3);
        assert!(log.flush().await.expect("flush").is_some());
        assert!(
            log.flush().await.expect("flush").is_none(),
            "empty buffer writes nothing"
        );
        // A fresh log over the same store sees everything that was flushed.
        assert_eq!(
            numbers(&AppendLog::new(store, "journal/test")).await,
            vec![1, 2, 3, 4]
        );
    }

    #[tokio::test]
    async fn compaction_merges_then_deletes() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = log(&store);
        for n in 0..5 {
            log.append(Rec { n });
            log.flush().await.expect("flush");
        }
        let outcome = log.compact().await.expect("compact").expect("compacted");
        assert_eq!(outcome.merged_objects, 5);
        assert_eq!(outcome.records, 5);
        let remaining: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert_eq!(remaining.len(), 1);
        assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn crash_between_compaction_write_and_delete_duplicates_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = log(&store);
        for n in 0..4 {
            log.append(Rec { n });
            log.flush().await.expect("flush");
        }
        log.compact_until(CompactStop::AfterWrite)
            .await
            .expect("compact")
            .expect("compacted");
        let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert_eq!(objects.len(), 5, "parts are still there after the 'crash'");
        assert_eq!(
            numbers(&log).await,
            vec![0, 1, 2, 3],
            "each record exactly once"
        );

        // Writing on, then a second compaction after the crash also
        // yields each record once, and leaves a single object.
        log.append(Rec { n: 4 });
        log.flush().await.expect("flush");
        log.compact_until(CompactStop::AfterWrite)
            .await
            .expect("compact");
        assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
        log.compact().await.expect("compact");
        let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert_eq!(objects.len(), 1);
        assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn failed_flush_keeps_records_buffered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("gone");
        std::fs::create_dir(&root).expect("mkdir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&root).expect("local store"),
        );
        let log = log(&store);
        log.append(Rec { n: 1 });
        std::fs::remove_dir(&root).expect("rmdir");
        std::fs::write(&root, b"not a folder").expect("block the path");
        assert!(log.flush().await.is_err());
        log.append(Rec { n: 2 });
        assert_eq!(
            log.buffered().into_iter().map(|r| r.n).collect::<Vec<_>>(),
            vec![1, 2],
            "the failed record stays first"
        );
    }

    #[tokio::test]
    async fn concurrent_appends_and_flushes_lose_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = Arc::new(log(&store));
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    log.append(Rec { n: t * 1000 + i });
                    if i % 7 == 0 {
                        log.flush().await.expect("flush");
                    }
                    if i % 20 == 0 {
                        log.compact().await.expect("compact");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        log.flush().await.expect("flush");
        let mut seen = numbers(&log).await;
        seen.sort_unstable();
        let mut expected: Vec<u32> = (0..8)
            .flat_map(|t| (0..50).map(move |i| t * 1000 + i))
            .collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }
}
