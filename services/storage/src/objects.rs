//! Object operations with the rescue fallback and journaling.
//!
//! Uploads are atomic: small ones are one `put`, large ones a multipart
//! upload that becomes visible only on completion and is aborted on any
//! failure, so a failed or cancelled upload leaves nothing behind. Memory is
//! bounded by the part size times the parts in flight, whatever the object
//! size. Downloads stream straight from the backend with HTTP/2 flow control
//! as back-pressure.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, ObjectMeta, ObjectStoreExt as _, PutMode,
    PutPayload, WriteMultipart,
};

use crate::journal::{ErrorJournal, ErrorRecord};
use crate::keys::{validate_key, validate_prefix};
use crate::registry::{Backend, Bucket, BucketRegistry};
use crate::{Error, Result};

/// Below this size an upload is one atomic `put`; above, a multipart upload.
const SINGLE_PUT_MAX: usize = 8 * 1024 * 1024;
/// Multipart part size (S3 needs at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once; with PART_SIZE this bounds upload memory.
const PARTS_IN_FLIGHT: usize = 4;
/// Size of the data messages a download is cut into. 2 MiB, so a Parquet
/// page range (writers close pages just past 1 MiB) arrives as one message
/// that the reader uses as is, instead of two it must copy into one buffer;
/// still under grpcurl's 4 MiB receive limit.
pub const CHUNK_SIZE: usize = 2 * 1024 * 1024;

/// How an upload is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// Fail unless exactly this many bytes arrive.
    pub expected_size: Option<u64>,
    /// Fail if the key exists (write-once objects).
    pub create_only: bool,
}

/// A byte range, as in HTTP Range requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRange {
    /// Bytes [start, end).
    Bounded(Range<u64>),
    /// From an offset to the end.
    Offset(u64),
    /// The last n bytes.
    Suffix(u64),
}

impl ObjectRange {
    fn validate(&self) -> Result<GetRange> {
        match self {
            ObjectRange::Bounded(r) if r.start >= r.end => Err(Error::InvalidRange(format!(
                "end ({}) must be greater than start ({})",
                r.end, r.start
            ))),
            ObjectRange::Suffix(0) => Err(Error::InvalidRange(
                "a suffix range must ask for at least one byte".to_owned(),
            )),
            ObjectRange::Bounded(r) => Ok(GetRange::Bounded(r.clone())),
            ObjectRange::Offset(o) => Ok(GetRange::Offset(*o)),
            ObjectRange::Suffix(n) => Ok(GetRange::Suffix(*n)),
        }
    }
}

/// A download about to stream.
pub struct GetOutcome {
    /// The bucket asked for.
    pub bucket: String,
    /// The rescue bucket that served it, when the primary failed.
    pub rescue_bucket: Option<String>,
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// The bytes that will stream.
    pub range: Range<u64>,
    /// The data, in chunks of at most [`CHUNK_SIZE`].
    pub data: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for GetOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetOutcome")
            .field("bucket", &self.bucket)
            .field("rescue_bucket", &self.rescue_bucket)
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects, sorted by key.
    pub objects: Vec<ObjectMeta>,
    /// Folders directly under the prefix (delimiter listings, first page).
    pub common_prefixes: Vec<String>,
    /// The key to continue after; None on the last page.
    pub next_after: Option<String>,
}

/// The result of probing one bucket.
#[derive(Debug, Clone)]
pub struct BucketHealthReport {
    /// The bucket.
    pub bucket: String,
    /// Whether it answered in time.
    pub reachable: bool,
    /// How long the probe took.
    pub latency: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it ran.
    pub checked_at: chrono::DateTime<Utc>,
}

/// The storage domain: buckets, objects, journal.
#[derive(Debug)]
pub struct Storage {
    registry: BucketRegistry,
    journal: ErrorJournal,
    probe_timeout: Duration,
}

impl Storage {
    /// Storage over `registry`, journaling into its default bucket.
    pub fn new(registry: BucketRegistry, probe_timeout: Duration) -> Self {
        let journal = ErrorJournal::new(registry.default_bucket().store.clone());
        Self {
            registry,
            journal,
            probe_timeout,
        }
    }

    /// The buckets.
    pub fn registry(&self) -> &BucketRegistry {
        &self.registry
    }

    /// The error journal.
    pub fn journal(&self) -> &ErrorJournal {
        &self.journal
    }

    /// Journals a backend failure if it is operational, and returns it.
    fn fail(
        &self,
        operation: &'static str,
        bucket: &Bucket,
        key: &str,
        source: object_store::Error,
        rescue_bucket: Option<&str>,
    ) -> Error {
        let error = Error::Backend {
            bucket: bucket.name.clone(),
            operation,
            key: key.to_owned(),
            source: Box::new(source),
        };
        if error.is_operational() {
            self.journal.record(ErrorRecord {
                time: Utc::now(),
                service: "storage".to_owned(),
                operation: operation.to_owned(),
                bucket: bucket.name.clone(),
                key: key.to_owned(),
                message: error.to_string(),
                rescue_bucket: rescue_bucket.unwrap_or_default().to_owned(),
            });
        }
        error
    }

    /// Writes an object from a stream of chunks, atomically.
    pub async fn put<S>(
        &self,
        bucket: &str,
        key: &str,
        options: PutOptions,
        mut chunks: S,
    ) -> Result<ObjectMeta>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        let path = validate_key(key)?;
        let bucket = self.registry.get(bucket)?;
        self.require_local_root("put_object", bucket, key).await?;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut total = 0u64;
        let check_size = |total: u64, done: bool| -> Result<()> {
            match options.expected_size {
                Some(expected) if total > expected || (done && total != expected) => {
                    Err(Error::SizeMismatch {
                        key: key.to_owned(),
                        expected,
                        actual: total,
                    })
                }
                _ => Ok(()),
            }
        };

        // Gather up to SINGLE_PUT_MAX; a small object is one atomic put.
        while pending_len <= SINGLE_PUT_MAX {
            match chunks.next().await {
                None => {
                    check_size(total, true)?;
                    let mode = if options.create_only {
                        PutMode::Create
                    } else {
                        PutMode::Overwrite
                    };
                    let payload: PutPayload = pending.into_iter().collect();
                    let result = bucket
                        .store
                        .put_opts(&path, payload, mode.into())
                        .await
                        .map_err(|source| match source {
                            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                                bucket: bucket.name.clone(),
                                key: key.to_owned(),
                            },
                            source => self.fail("put_object", bucket, key, source, None),
                        })?;
                    return Ok(written(bucket, path, total, result.e_tag).await);
                }
                Some(chunk) => {
                    let chunk = chunk?;
                    total += chunk.len() as u64;
                    check_size(total, false)?;
                    pending_len += chunk.len();
                    pending.push(chunk);
                }
            }
        }

        // Large object: multipart, visible only on completion.
        if options.create_only {
            // Fail fast, before streaming what may be gigabytes; the write
            // itself is made conditional below where the backend allows.
            match bucket.store.head(&path).await {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        bucket: bucket.name.clone(),
                        key: key.to_owned(),
                    });
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(self.fail("put_object", bucket, key, source, None)),
            }
        }
        // A multipart upload cannot be conditional, so a create-only upload
        // to a local or memory bucket is written to a staging key and moved
        // into place with `rename_if_not_exists` (a hard link on a local
        // folder: atomic, refused when the key exists). S3 offers no
        // conditional copy without extra configuration, so there the head
        // check above is all there is, and a racing writer that completes
        // between the check and this completion can still be overwritten.
        let staged = options.create_only && !matches!(bucket.backend, Backend::S3 { .. });
        let target = if staged { staging_path() } else { path.clone() };
        let upload = bucket
            .store
            .put_multipart_opts(&target, Default::default())
            .await
            .map_err(|source| self.fail("put_object", bucket, key, source, None))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in pending {
            writer.put(chunk);
        }
        let streamed: Result<()> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                check_size(total, false)?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|source| self.fail("put_object", bucket, key, source, None))?;
                writer.put(chunk);
            }
            check_size(total, true)
        }
        .await;
        if let Err(error) = streamed {
            if let Err(abort_error) = writer.abort().await {
                tracing::warn!(bucket = %bucket.name, key, error = %abort_error, "multipart abort failed; the incomplete upload is invisible but may hold space");
            }
            return Err(error);
        }
        let result = writer
            .finish()
            .await
            .map_err(|source| self.fail("put_object", bucket, key, source, None))?;
        if !staged {
            return Ok(written(bucket, path, total, result.e_tag).await);
        }
        let moved = bucket.store.rename_if_not_exists(&target, &path).await;
        if moved.is_err()
            && let Err(error) = bucket.store.delete(&target).await
        {
            tracing::warn!(bucket = %bucket.name, key, staging = %target, %error, "staged upload not removed");
        }
        match moved {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(Error::AlreadyExists {
                    bucket: bucket.name.clone(),
                    key: key.to_owned(),
                });
            }
            Err(source) => return Err(self.fail("put_object", bucket, key, source, None)),
        }
        Ok(written(bucket, path, total, None).await)
    }

    /// Reads an object or a range of it, from the rescue bucket when the
    /// primary fails (for any reason but a plain miss on a reachable bucket).
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ObjectRange>,
    ) -> Result<GetOutcome> {
        let path = validate_key(key)?;
        let primary = self.registry.get(bucket)?;
        let options = GetOptions {
            range: range.as_ref().map(ObjectRange::validate).transpose()?,
            ..GetOptions::default()
        };
        let (result, rescue_bucket) = self
            .with_rescue("get_object", primary, key, |b| {
                let options = options.clone();
                let path = path.clone();
                async move { b.store.get_opts(&path, options).await }
            })
            .await
            .map_err(|e| match e {
                Error::RangeNotSatisfiable(_) => Error::RangeNotSatisfiable(format!(
                    "{range:?} starts past the end of {key:?}; ask HeadObject for its size"
                )),
                e => e,
            })?;
        let meta = result.meta.clone();
        let range = result.range.clone();
        Ok(GetOutcome {
            bucket: primary.name.clone(),
            rescue_bucket,
            meta,
            range,
            data: into_chunks(result, primary.name.clone(), key.to_owned()),
        })
    }

    /// An object's metadata, with the rescue fallback.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, Option<String>)> {
        let path = validate_key(key)?;
        let primary = self.registry.get(bucket)?;
        self.with_rescue("head_object", primary, key, |b| {
            let path = path.clone();
            async move { b.store.head(&path).await }
        })
        .await
    }

    async fn with_rescue<'a, T, F, Fut>(
        &'a self,
        operation: &'static str,
        primary: &'a Bucket,
        key: &str,
        op: F,
    ) -> Result<(T, Option<String>)>
    where
        F: Fn(&'a Bucket) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let primary_error = match op(primary).await {
            Ok(value) => return Ok((value, None)),
            Err(error) => error,
        };
        let mut not_found = matches!(primary_error, object_store::Error::NotFound { .. });
        // A vanished local folder answers NotFound; it is a failure.
        let primary_error = match (not_found, primary.local_root_missing().await) {
            (true, Some(reason)) => {
                not_found = false;
                unavailable(reason)
            }
            _ => primary_error,
        };
        if is_range_error(&primary_error) {
            // The caller's mistake; the rescue bucket would say the same.
            return Err(Error::RangeNotSatisfiable(primary_error.to_string()));
        }
        let Some(rescue_name) = primary.rescue.as_deref() else {
            return Err(self.not_found_or_fail(operation, primary, key, primary_error));
        };
        // A miss on a healthy bucket is an answer, not a failure. A miss on a
        // bucket whose folder or server is gone is a failure in disguise.
        let primary_error = if not_found {
            match primary.probe(self.probe_timeout).await {
                Ok(_) => {
                    return Err(self.not_found_or_fail(operation, primary, key, primary_error));
                }
                Err(probe) => object_store::Error::Generic {
                    store: "lakehouse",
                    source: format!("bucket unreachable: {probe}").into(),
                },
            }
        } else {
            primary_error
        };
        let rescue = self.registry.get(rescue_name)?;
        match op(rescue).await {
            Ok(value) => {
                tracing::info!(bucket = %primary.name, rescue = %rescue.name, key, operation, "served from rescue bucket");
                self.fail(operation, primary, key, primary_error, Some(rescue_name));
                Ok((value, Some(rescue_name.to_owned())))
            }
            Err(rescue_error) => {
                let error = self.fail(operation, primary, key, primary_error, None);
                if !matches!(rescue_error, object_store::Error::NotFound { .. }) {
                    self.fail(operation, rescue, key, rescue_error, None);
                }
                Err(error)
            }
        }
    }

    async fn require_local_root(
        &self,
        operation: &'static str,
        bucket: &Bucket,
        key: &str,
    ) -> Result<()> {
        match bucket.local_root_missing().await {
            None => Ok(()),
            Some(reason) => Err(self.fail(operation, bucket, key, unavailable(reason), None)),
        }
    }

    fn not_found_or_fail(
        &self,
        operation: &'static str,
        bucket: &Bucket,
        key: &str,
        source: object_store::Error,
    ) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                bucket: bucket.name.clone(),
                key: key.to_owned(),
            },
            source => self.fail(operation, bucket, key, source, None),
        }
    }

    /// One page of keys under `prefix`, after the key `after`, and whether
    /// another page follows (it holds at least one object: no empty last
    /// page).
    ///
    /// What a page costs depends on the backend:
    /// - S3 and memory list in key order, so the listing starts after
    ///   `after` (`list_with_offset`, which S3 pushes down as `start-after`)
    ///   and stops after `page_size + 1` objects: one page is one or two S3
    ///   LIST requests (up to 1000 keys each), whatever the prefix holds.
    /// - A local folder lists in directory order, not key order, so a page
    ///   walks every file under the prefix and sorts the names: its cost is
    ///   proportional to the prefix, not the page (object_store's local
    ///   backend offers no ordered walk).
    /// - A delimited listing (`/`) reads the whole level under the prefix,
    ///   since object_store has no offset for delimited listings; the common
    ///   prefixes come with the first page.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimited: bool,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<ListPage> {
        let bucket = self.registry.get(bucket)?;
        let prefix_path = validate_prefix(prefix)?;
        self.require_local_root("list_objects", bucket, prefix)
            .await?;
        let page_size = page_size.clamp(1, lakehouse_shared::paging::MAX_PAGE_SIZE);
        let fail = |source| self.fail("list_objects", bucket, prefix, source, None);
        let (mut objects, common_prefixes) = if delimited {
            let result = bucket
                .store
                .list_with_delimiter(prefix_path.as_ref())
                .await
                .map_err(fail)?;
            let prefixes = if after.is_none() {
                result
                    .common_prefixes
                    .into_iter()
                    .map(|p| format!("{p}/"))
                    .collect()
            } else {
                Vec::new()
            };
            (result.objects, prefixes)
        } else {
            let stream = match after {
                Some(after) => bucket
                    .store
                    .list_with_offset(prefix_path.as_ref(), &Path::from(after)),
                None => bucket.store.list(prefix_path.as_ref()),
            };
            let objects: Vec<ObjectMeta> = if matches!(bucket.backend, Backend::Local { .. }) {
                stream.try_collect().await.map_err(fail)?
            } else {
                // Key order: the first page_size + 1 are the page and the
                // proof that another follows; the rest is never fetched.
                stream
                    .take(page_size + 1)
                    .try_collect()
                    .await
                    .map_err(fail)?
            };
            (objects, Vec::new())
        };
        // Pages must be stable whatever order the backend used: sort, then
        // cut (a local folder's page is sorted here, whole).
        if let Some(after) = after {
            objects.retain(|o| o.location.as_ref() > after);
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        let next_after = if objects.len() > page_size {
            objects.truncate(page_size);
            objects.last().map(|o| o.location.to_string())
        } else {
            None
        };
        Ok(ListPage {
            objects,
            common_prefixes,
            next_after,
        })
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let path = validate_key(key)?;
        let bucket = self.registry.get(bucket)?;
        self.require_local_root("delete_object", bucket, key)
            .await?;
        match bucket.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.fail("delete_object", bucket, key, source, None)),
        }
    }

    /// Probes the named buckets (all when empty) concurrently.
    pub async fn health(
        &self,
        names: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<BucketHealthReport>> {
        let timeout = timeout.unwrap_or(self.probe_timeout);
        let buckets: Vec<&Bucket> = if names.is_empty() {
            self.registry.all().collect()
        } else {
            names
                .iter()
                .map(|n| self.registry.get(n))
                .collect::<Result<_>>()?
        };
        let probes = buckets.into_iter().map(|bucket| async move {
            let checked_at = Utc::now();
            let started = std::time::Instant::now();
            match bucket.probe(timeout).await {
                Ok(latency) => BucketHealthReport {
                    bucket: bucket.name.clone(),
                    reachable: true,
                    latency,
                    error: None,
                    checked_at,
                },
                Err(error) => BucketHealthReport {
                    bucket: bucket.name.clone(),
                    reachable: false,
                    latency: started.elapsed(),
                    error: Some(error),
                    checked_at,
                },
            }
        });
        Ok(futures::future::join_all(probes).await)
    }
}

fn unavailable(reason: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "lakehouse",
        source: reason.into(),
    }
}

/// Backends report a range past the end of an object as a generic error;
/// recognise it by its message so it is answered as the caller's mistake.
fn is_range_error(error: &object_store::Error) -> bool {
    if !matches!(error, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut text = error.to_string().to_ascii_lowercase();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&inner.to_string().to_ascii_lowercase());
        source = inner.source();
    }
    text.contains("range")
}

/// Where a create-only multipart upload is written before it is moved into
/// place: under the reserved prefix, so no dataset listing or resync ever
/// sees it; unique per upload in this process and across processes.
fn staging_path() -> Path {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    Path::from(format!(
        "{}/uploads/{nanos:020}-{}-{n}",
        crate::keys::RESERVED_PREFIX,
        std::process::id()
    ))
}

/// What the backend recorded for an object just written, so a HeadObject
/// straight after agrees with the PutObject answer (a put result carries no
/// time, and the clock here is not the backend's). If the object changed in
/// between (another size or ETag) or the head fails, the write's own size
/// and ETag with the time now.
async fn written(bucket: &Bucket, path: Path, size: u64, e_tag: Option<String>) -> ObjectMeta {
    match bucket.store.head(&path).await {
        Ok(head) if head.size == size && (e_tag.is_none() || head.e_tag == e_tag) => head,
        _ => ObjectMeta {
            location: path,
            last_modified: Utc::now(),
            size,
            e_tag,
            version: None,
        },
    }
}

/// Turns a backend result into a stream of chunks of at most CHUNK_SIZE.
/// A local file is read directly in large reads; a remote stream is
/// re-chunked so small network reads do not become small gRPC messages.
fn into_chunks(
    result: GetResult,
    bucket: String,
    key: String,
) -> BoxStream<'static, Result<Bytes>> {
    let range = result.range.clone();
    let backend_error = move |source: object_store::Error| Error::Backend {
        bucket: bucket.clone(),
        operation: "get_object",
        key: key.clone(),
        source: Box::new(source),
    };
    match result.payload {
        GetResultPayload::File(file, path) => {
            // Each chunk is one positioned read (pread) on a blocking thread,
            // straight into the chunk's buffer: no seek, and no copy through
            // an intermediate buffer as `tokio::fs::File` makes.
            let file = std::sync::Arc::new(file);
            futures::stream::try_unfold(range.start, move |pos| {
                let (file, path, backend_error) =
                    (file.clone(), path.clone(), backend_error.clone());
                async move {
                    if pos >= range.end {
                        return Ok(None);
                    }
                    let want = usize::try_from(range.end - pos)
                        .unwrap_or(CHUNK_SIZE)
                        .min(CHUNK_SIZE);
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = BytesMut::zeroed(want);
                        read_exact_at(&file, &mut buf, pos).map(|()| buf.freeze())
                    })
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("the read task panicked")));
                    let bytes = read.map_err(|e| {
                        backend_error(object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(std::io::Error::new(
                                e.kind(),
                                format!("{}: {e}", path.display()),
                            )),
                        })
                    })?;
                    Ok(Some((bytes, pos + want as u64)))
                }
            })
            .boxed()
        }
        GetResultPayload::Stream(stream) => rechunk(stream.map_err(backend_error)).boxed(),
    }
}

/// Fills `buf` from `file` at `offset`; a file shorter than that is an
/// `UnexpectedEof` error.
#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn rechunk<S>(stream: S) -> impl Stream<Item = Result<Bytes>> + Send
where
    S: Stream<Item = Result<Bytes>> + Send + Unpin,
{
    // First cut oversized buffers (a memory backend hands out the whole
    // object at once) into zero-copy slices of at most CHUNK_SIZE...
    let pieces = stream
        .map_ok(|bytes| {
            let len = bytes.len();
            futures::stream::iter(
                (0..len)
                    .step_by(CHUNK_SIZE)
                    .map(move |start| Ok(bytes.slice(start..(start + CHUNK_SIZE).min(len)))),
            )
        })
        .try_flatten();
    // ...then join small network reads into messages of at least a quarter.
    futures::stream::try_unfold((Box::pin(pieces), false), |(mut pieces, done)| async move {
        if done {
            return Ok(None);
        }
        let mut buf = BytesMut::new();
        loop {
            match pieces.next().await {
                Some(Ok(bytes)) if buf.is_empty() && bytes.len() >= CHUNK_SIZE / 4 => {
                    return Ok(Some((bytes, (pieces, false))));
                }
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    if buf.len() >= CHUNK_SIZE / 4 {
                        return Ok(Some((buf.freeze(), (pieces, false))));
                    }
                }
                Some(Err(error)) => return Err(error),
                None if buf.is_empty() => return Ok(None),
                None => return Ok(Some((buf.freeze(), (pieces, true)))),
            }
        }
    })
}
