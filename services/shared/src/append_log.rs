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

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Records between two entries of an object's byte index.
const INDEX_STRIDE: usize = 256;
/// Objects up to this size are read whole; larger ones through their index.
const READ_WHOLE_BYTES: u64 = 256 * 1024;
/// Reads that retry after a concurrent compaction removed what they listed.
const READ_ATTEMPTS: u32 = 3;
/// First read of a large object's header line.
const HEADER_PROBE_BYTES: u64 = 64 * 1024;

/// The first line of every log object.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Header {
    /// Format version: 1 without ordinals, 2 with.
    v: u32,
    /// Names (last path segment) of the objects this one replaces; only the
    /// fallback read needs them (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    covers: Vec<String>,
    /// Byte offset, after the header line, of every `INDEX_STRIDE`-th record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    index: Vec<u64>,
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

/// One page of a log read by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<R> {
    /// The records kept, in log order.
    pub records: Vec<R>,
    /// The ordinal to continue from, when another kept record follows.
    pub next: Option<u64>,
}

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

    /// Writes buffered records as a new object. On failure the records go
    /// back to the front of the buffer, so nothing is lost.
    pub async fn flush(&self) -> Result<Option<FlushOutcome>> {
        let _guard = self.write_lock.lock().await;
        if self.lock_buffer().0.is_empty() {
            return Ok(None);
        }
        let known = self.lock_buffer().1.durable;
        let first = match known {
            Some(durable) => durable,
            None => {
                let total = self.durable_count().await?;
                self.lock_buffer().1.durable = Some(total);
                total
            }
        };
        let records = std::mem::take(&mut self.lock_buffer().0);
        let name = object_name(
            &timestamp_key(),
            first..first + records.len() as u64,
            "part",
        );
        match self.write_object(&name, Header::default(), &records).await {
            Ok(key) => {
                let mut state = self.lock_buffer();
                state.1.durable = Some(first + records.len() as u64);
                state.1.flushes += 1;
                Ok(Some(FlushOutcome {
                    key,
                    records: records.len(),
                }))
            }
            Err(error) => {
                let mut buffer = self.lock_buffer();
                let newer = std::mem::replace(&mut buffer.0, records);
                buffer.0.extend(newer);
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
        let mut attempts = 0;
        loop {
            let listed = self.list_objects().await?;
            let result = match plan(&listed) {
                Some(plan) => self.read_plan(&plan).await,
                None => self.read_by_name(&listed).await,
            };
            match result {
                // A compaction deleted an object we listed: list again.
                Err(error) if is_not_found(&error) && attempts < READ_ATTEMPTS => attempts += 1,
                other => return other,
            }
        }
    }

    async fn read_plan(&self, plan: &Plan<'_>) -> Result<Vec<R>> {
        let mut out = Vec::new();
        for segment in &plan.segments {
            out.extend(self.read_whole(segment.meta).await?.1);
        }
        Ok(out)
    }

    /// Up to `limit` records that `keep` accepts, starting at ordinal `from`
    /// (0 for the start; a page's `next` for the page after it), flushed and
    /// buffered alike. Reads only the objects that hold the page, so its cost
    /// follows the page, not the log (see the module docs).
    pub async fn read_page(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&R) -> bool,
    ) -> Result<Page<R>> {
        let mut attempts = 0;
        loop {
            // The buffer first: a flush that lands while we list moves
            // records to storage, and the flush count tells us to look again.
            let (buffered, flushes_before, durable_known) = {
                let state = self.lock_buffer();
                (state.0.clone(), state.1.flushes, state.1.durable)
            };
            let listed = self.list_objects().await?;
            if self.lock_buffer().1.flushes != flushes_before {
                continue;
            }
            let mut found: Vec<(u64, R)> = Vec::new();
            let durable = match plan(&listed) {
                Some(plan) => {
                    let mut read = Ok(());
                    for segment in plan.segments.iter().filter(|s| s.range.end > from) {
                        if found.len() > limit {
                            break;
                        }
                        read = self
                            .read_segment(segment, from, limit, &keep, &mut found)
                            .await;
                        if read.is_err() {
                            break;
                        }
                    }
                    match read {
                        // A compaction deleted an object we listed.
                        Err(error) if is_not_found(&error) && attempts < READ_ATTEMPTS => {
                            attempts += 1;
                            continue;
                        }
                        other => other?,
                    }
                    plan.total
                }
                None => {
                    let all = self.read_by_name(&listed).await?;
                    let total = all.len() as u64;
                    for (ordinal, record) in (0u64..).zip(all).skip(clamp(from)) {
                        if found.len() > limit {
                            break;
                        }
                        if keep(&record) {
                            found.push((ordinal, record));
                        }
                    }
                    total
                }
            };
            let base = durable_known.unwrap_or(durable);
            for (ordinal, record) in (base..).zip(buffered) {
                if found.len() > limit {
                    break;
                }
                if ordinal >= from.max(durable) && keep(&record) {
                    found.push((ordinal, record));
                }
            }
            let next = found.get(limit).map(|(ordinal, _)| *ordinal);
            found.truncate(limit);
            return Ok(Page {
                records: found.into_iter().map(|(_, r)| r).collect(),
                next,
            });
        }
    }

    /// Merges every flushed object into one, then deletes the merged ones.
    pub async fn compact(&self) -> Result<Option<CompactOutcome>> {
        self.compact_until(CompactStop::Complete).await
    }

    /// [`AppendLog::compact`], stopping where `stop` says.
    pub async fn compact_until(&self, stop: CompactStop) -> Result<Option<CompactOutcome>> {
        let _guard = self.write_lock.lock().await;
        let listed = self.list_objects().await?;
        if listed.len() < 2 {
            return Ok(None);
        }
        // Under the write lock nothing of ours deletes objects meanwhile.
        let live = match plan(&listed) {
            Some(plan) => self.read_plan(&plan).await?,
            None => self.read_by_name(&listed).await?,
        };
        // Every object present is covered by the merge, including those a
        // previous crashed compaction already covered: cover them
        // transitively so the older merged object may be deleted too.
        let mut covers: BTreeSet<String> = BTreeSet::new();
        for object in &listed {
            covers.insert(object.name.clone());
            if object.merged {
                covers.extend(self.read_header(&object.meta).await?.covers);
            }
        }
        let newest = listed
            .last()
            .map(|o| o.name.split('-').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let name = object_name(&newest, 0..live.len() as u64, "merged");
        let header = Header {
            covers: covers.iter().cloned().collect(),
            ..Header::default()
        };
        let key = self.write_object(&name, header, &live).await?;
        self.lock_buffer().1.durable = Some(live.len() as u64);
        let outcome = CompactOutcome {
            key,
            merged_objects: listed.len(),
            records: live.len(),
        };
        if stop == CompactStop::AfterWrite {
            return Ok(Some(outcome));
        }
        let doomed: Vec<Path> = listed.iter().map(|o| o.meta.location.clone()).collect();
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

    /// The number of flushed records, from the names alone when every object
    /// carries its range.
    async fn durable_count(&self) -> Result<u64> {
        let listed = self.list_objects().await?;
        match plan(&listed) {
            Some(plan) => Ok(plan.total),
            None => Ok(self.read_by_name(&listed).await?.len() as u64),
        }
    }

    async fn write_object(&self, name: &str, mut header: Header, records: &[R]) -> Result<String> {
        let mut body = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if i % INDEX_STRIDE == 0 {
                header.index.push(body.len() as u64);
            }
            serde_json::to_writer(&mut body, record).map_err(Error::AppendLogEncode)?;
            body.push(b'\n');
        }
        header.v = 2;
        let mut object = serde_json::to_vec(&header).map_err(Error::AppendLogEncode)?;
        object.push(b'\n');
        object.extend_from_slice(&body);
        let location = self.prefix.clone().join(name);
        self.store
            .put_opts(&location, PutPayload::from(object), PutMode::Create.into())
            .await
            .map_err(|source| self.store_error(source))?;
        Ok(location.to_string())
    }

    /// The log's objects in name order (names only: no object is read).
    async fn list_objects(&self) -> Result<Vec<Listed>> {
        let mut metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|source| self.store_error(source))?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas.into_iter().filter_map(Listed::parse).collect())
    }

    /// Every record of every object in name order, skipping objects a merged
    /// object covers: the read for logs without (consistent) ordinals.
    async fn read_by_name(&self, listed: &[Listed]) -> Result<Vec<R>> {
        let mut objects = Vec::with_capacity(listed.len());
        for object in listed {
            match self.read_whole(&object.meta).await {
                Ok((header, records)) => objects.push((object, header, records)),
                // Deleted by a concurrent compaction after we listed it: the
                // merged object we also listed (or will) holds its records.
                Err(Error::AppendLogStore {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(error) => return Err(error),
            }
        }
        let covered: BTreeSet<String> = objects
            .iter()
            .flat_map(|(_, header, _)| header.covers.iter().cloned())
            .collect();
        let mut out = Vec::new();
        for (object, _, records) in objects {
            if !covered.contains(object.name.as_str()) {
                out.extend(records);
            }
        }
        Ok(out)
    }

    /// Appends to `found` the kept records of `segment` from ordinal `from`,
    /// stopping once `found` holds `limit + 1`.
    async fn read_segment(
        &self,
        segment: &Segment<'_>,
        from: u64,
        limit: usize,
        keep: &impl Fn(&R) -> bool,
        found: &mut Vec<(u64, R)>,
    ) -> Result<()> {
        let skip = from.saturating_sub(segment.range.start);
        let push = |ordinal: u64, record: R, found: &mut Vec<(u64, R)>| {
            if keep(&record) {
                found.push((ordinal, record));
            }
        };
        if segment.meta.size <= READ_WHOLE_BYTES {
            let (_, records) = self.read_whole(segment.meta).await?;
            for (ordinal, record) in (segment.range.start..).zip(records).skip(clamp(skip)) {
                if found.len() > limit {
                    break;
                }
                push(ordinal, record, found);
            }
            return Ok(());
        }
        // A large object: its header's index says where each stride of
        // records starts, so read stride by stride from the one holding
        // `from`.
        let (header, body_start) = self.read_header_at(segment.meta).await?;
        let mut stride = clamp(skip) / INDEX_STRIDE;
        while found.len() <= limit {
            let Some(&start) = header.index.get(stride) else {
                break;
            };
            let end = header
                .index
                .get(stride + 1)
                .map_or(segment.meta.size, |next| body_start + next);
            let bytes = self
                .get_range(segment.meta, body_start + start..end)
                .await?;
            let first = segment.range.start + (stride * INDEX_STRIDE) as u64;
            let records = parse_records::<R>(&segment.meta.location, &bytes)?;
            for (ordinal, record) in (first..).zip(records) {
                if found.len() > limit {
                    break;
                }
                if ordinal >= from {
                    push(ordinal, record, found);
                }
            }
            stride += 1;
        }
        Ok(())
    }

    async fn read_whole(&self, meta: &ObjectMeta) -> Result<(Header, Vec<R>)> {
        let bytes = match self.store.get(&meta.location).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        }
        .map_err(|source| self.store_error(source))?;
        parse_object(&meta.location, &bytes)
    }

    async fn read_header(&self, meta: &ObjectMeta) -> Result<Header> {
        Ok(self.read_header_at(meta).await?.0)
    }

    /// The header of an object and where its records start, reading only
    /// the header line.
    async fn read_header_at(&self, meta: &ObjectMeta) -> Result<(Header, u64)> {
        let mut probe = HEADER_PROBE_BYTES;
        loop {
            let end = probe.min(meta.size);
            let bytes = self.get_range(meta, 0..end).await?;
            if let Some(newline) = bytes.iter().position(|b| *b == b'\n') {
                let header = serde_json::from_slice(&bytes[..newline]).map_err(|source| {
                    Error::AppendLogCorrupt {
                        key: meta.location.to_string(),
                        line: 1,
                        source,
                    }
                })?;
                return Ok((header, newline as u64 + 1));
            }
            if end == meta.size {
                return Ok((Header::default(), meta.size));
            }
            probe = probe.saturating_mul(4);
        }
    }

    async fn get_range(&self, meta: &ObjectMeta, range: Range<u64>) -> Result<bytes::Bytes> {
        self.store
            .get_range(&meta.location, range)
            .await
            .map_err(|source| self.store_error(source))
    }

    fn store_error(&self, source: object_store::Error) -> Error {
        Error::AppendLogStore {
            prefix: self.prefix.to_string(),
            source,
        }
    }
}

/// One listed log object and what its name says.
#[derive(Debug)]
struct Listed {
    meta: ObjectMeta,
    /// The last path segment.
    name: String,
    /// The ordinals it holds, when its name carries them.
    range: Option<Range<u64>>,
    /// A compaction's output.
    merged: bool,
}

impl Listed {
    fn parse(meta: ObjectMeta) -> Option<Self> {
        let name = meta.location.filename()?.to_owned();
        let (stem, merged) = if let Some(stem) = name.strip_suffix(".merged.ndjson") {
            (stem, true)
        } else {
            (name.strip_suffix(".part.ndjson")?, false)
        };
        let range = stem.split('-').nth(2).and_then(|r| {
            let (first, count) = r.strip_prefix('r')?.split_once('_')?;
            let first: u64 = first.parse().ok()?;
            Some(first..first.checked_add(count.parse().ok()?)?)
        });
        Some(Self {
            meta,
            name,
            range,
            merged,
        })
    }
}

/// The objects that hold the log, one per range of ordinals, in order.
struct Plan<'a> {
    segments: Vec<Segment<'a>>,
    /// Records in the log.
    total: u64,
}

struct Segment<'a> {
    meta: &'a ObjectMeta,
    range: Range<u64>,
}

/// Which objects to read for each range of ordinals: from 0 upwards, the
/// widest object starting where the previous ended (a merged object before
/// the parts it replaced). `None` when some name carries no range, or the
/// ranges do not tile (two writers): then only the read by name is safe.
fn plan(listed: &[Listed]) -> Option<Plan<'_>> {
    let mut ranged: Vec<(&Listed, Range<u64>)> = Vec::with_capacity(listed.len());
    for object in listed {
        ranged.push((object, object.range.clone()?));
    }
    ranged.sort_by(|(_, a), (_, b)| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut segments: Vec<Segment<'_>> = Vec::new();
    let mut merged: Vec<Range<u64>> = Vec::new();
    let mut cursor = 0u64;
    for (object, range) in ranged {
        if range.start < cursor {
            // Only a merged object may hold ordinals again: it replaced the
            // parts inside its range. Any other overlap means two writers.
            if merged
                .iter()
                .any(|m| m.start <= range.start && range.end <= m.end)
            {
                continue;
            }
            return None;
        }
        if range.start != cursor {
            return None;
        }
        if object.merged {
            merged.push(range.clone());
        }
        if range.is_empty() {
            continue;
        }
        cursor = range.end;
        segments.push(Segment {
            meta: &object.meta,
            range,
        });
    }
    Some(Plan {
        segments,
        total: cursor,
    })
}

fn object_name(nanos: &str, range: Range<u64>, kind: &str) -> String {
    format!(
        "{nanos}-{}-r{}_{}.{kind}.ndjson",
        random_suffix(),
        range.start,
        range.end - range.start
    )
}

fn is_not_found(error: &Error) -> bool {
    matches!(
        error,
        Error::AppendLogStore {
            source: object_store::Error::NotFound { .. },
            ..
        }
    )
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn parse_object<R: DeserializeOwned>(location: &Path, bytes: &[u8]) -> Result<(Header, Vec<R>)> {
    let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
        return Ok((Header::default(), Vec::new()));
    };
    let header =
        serde_json::from_slice(&bytes[..newline]).map_err(|source| Error::AppendLogCorrupt {
            key: location.to_string(),
            line: 1,
            source,
        })?;
    let records = parse_records(location, &bytes[newline + 1..])?;
    Ok((header, records))
}

/// Records, one a line; `line` numbers in errors count from the slice.
fn parse_records<R: DeserializeOwned>(location: &Path, bytes: &[u8]) -> Result<Vec<R>> {
    let mut records = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        records.push(
            serde_json::from_slice(line).map_err(|source| Error::AppendLogCorrupt {
                key: location.to_string(),
                line: index + 2,
                source,
            })?,
        );
    }
    Ok(records)
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
    async fn page_numbers(log: &AppendLog<Rec>, size: usize, keep: fn(&Rec) -> bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let page = log.read_page(from, size, keep).await.expect("page");
            assert!(
                !page.records.is_empty() || out.is_empty(),
                "no empty page after the first"
            );
            out.extend(page.records.iter().map(|r| r.n));
            match page.next {
                Some(next) => from = next,
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn pages_walk_parts_merged_objects_and_the_buffer_in_order() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = log(&store);
        for n in 0..10 {
            log.append(Rec { n });
        }
        log.flush().await.expect("flush");
        for n in 10..25 {
            log.append(Rec { n });
            if n % 4 == 0 {
                log.flush().await.expect("flush");
            }
        }
        let all: Vec<u32> = (0..25).collect();
        assert_eq!(page_numbers(&log, 3, |_| true).await, all);
        let even: Vec<u32> = (0..25).filter(|n| n % 2 == 0).collect();
        assert_eq!(page_numbers(&log, 4, |r| r.n % 2 == 0).await, even);

        // A position taken before a compaction and a flush still means the
        // same record afterwards.
        let first = log.read_page(0, 7, |_| true).await.expect("page");
        let next = first.next.expect("more");
        log.compact().await.expect("compact");
        log.flush().await.expect("flush");
        let second = log.read_page(next, 100, |_| true).await.expect("page");
        assert_eq!(
            second.records.iter().map(|r| r.n).collect::<Vec<_>>(),
            (7..25).collect::<Vec<_>>()
        );
        assert_eq!(second.next, None);
        assert_eq!(
            log.read_page(0, 5, |r| r.n > 100)
                .await
                .expect("page")
                .records,
            vec![],
            "nothing kept: one empty page"
        );
    }

    #[tokio::test]
    async fn a_large_merged_object_is_read_through_its_index() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let log = log(&store);
        for chunk in 0..4u32 {
            for n in 0..10_000 {
                log.append(Rec {
                    n: chunk * 10_000 + n,
                });
            }
            log.flush().await.expect("flush");
        }
        log.compact().await.expect("compact");
        let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert_eq!(objects.len(), 1);
        assert!(objects[0].size > READ_WHOLE_BYTES, "large enough to index");
        let page = log.read_page(12_345, 10, |_| true).await.expect("page");
        assert_eq!(
            page.records.iter().map(|r| r.n).collect::<Vec<_>>(),
            (12_345..12_355).collect::<Vec<_>>()
        );
        assert_eq!(page.next, Some(12_355));
        // Across a stride boundary, with a filter.
        let page = log
            .read_page(255, 3, |r| r.n % 100 == 0)
            .await
            .expect("page");
        assert_eq!(
            page.records.iter().map(|r| r.n).collect::<Vec<_>>(),
            vec![300, 400, 500]
        );
        assert_eq!(page.next, Some(600));
    }

    #[tokio::test]
    async fn logs_written_before_ordinals_read_and_page_the_same() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // Two objects in the old layout: no range in the name, v1 header.
        for (name, numbers) in [
            ("00000000000000000001-aaaaaaaaaaaa.part.ndjson", [0, 1]),
            ("00000000000000000002-bbbbbbbbbbbb.part.ndjson", [2, 3]),
        ] {
            let mut body = b"{\"v\":1}\n".to_vec();
            for n in numbers {
                body.extend(format!("{{\"n\":{n}}}\n").as_bytes());
            }
            store
                .put(&Path::from(format!("journal/test/{name}")), body.into())
                .await
                .expect("put");
        }
        let log = log(&store);
        log.append(Rec { n: 4 });
        log.flush().await.expect("flush");
        log.append(Rec { n: 5 });
        assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            page_numbers(&log, 4, |_| true).await,
            vec![0, 1, 2, 3, 4, 5]
        );
        // A crash after the compaction's write: the old objects are still
        // there, and nothing is doubled.
        log.compact_until(CompactStop::AfterWrite)
            .await
            .expect("compact");
        assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4, 5]);
        log.compact().await.expect("compact");
        assert_eq!(
            page_numbers(&log, 2, |_| true).await,
            vec![0, 1, 2, 3, 4, 5]
        );
        let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
        assert_eq!(objects.len(), 1);
    }

    #[tokio::test]
    async fn two_writers_on_one_log_lose_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (a, b) = (log(&store), log(&store));
        a.append(Rec { n: 1 });
        a.flush().await.expect("flush");
        b.append(Rec { n: 2 });
        b.flush().await.expect("flush");
        // Each believed it wrote ordinal 0 or 1; the ranges do not tile, so
        // the read falls back to name order and keeps both.
        let mut seen = page_numbers(&a, 10, |_| true).await;
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2]);
    }
}
