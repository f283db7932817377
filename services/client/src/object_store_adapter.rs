//! `object_store::ObjectStore` over the storage service, so the other
//! services use the standard API (parquet's async reader, ranged footer
//! reads, multipart writers) unchanged, while every byte still goes through
//! storage: its buckets, credentials, rescue fallback and error journal.
//!
//! A read served by a rescue bucket is observable: the `GetResult`'s
//! extensions carry [`RescueUsed`], and [`GrpcObjectStore::rescues`] counts them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use lakehouse_proto::storage::v1 as pb;
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, Extensions, GetOptions, GetRange, GetResult,
    GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tracing::Instrument as _;

use crate::StorageClient;

/// Store name used in object_store errors.
const STORE: &str = "LakehouseStorage";
/// Largest data message sent in an upload.
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// Keys fetched per ListObjects call.
const LIST_PAGE: i32 = 1000;

/// Marks a `GetResult` that a rescue bucket served; holds its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescueUsed(pub String);

/// One bucket of the storage service, as an `ObjectStore`.
#[derive(Debug, Clone)]
pub struct GrpcObjectStore {
    client: StorageClient,
    bucket: String,
    rescues: Arc<AtomicU64>,
}

impl std::fmt::Display for GrpcObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LakehouseStorage(bucket={})", self.bucket)
    }
}

impl GrpcObjectStore {
    /// The bucket named (empty: the server's default bucket) over `client`.
    pub fn new(client: StorageClient, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            rescues: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads served by a rescue bucket through this store (and its clones).
    pub fn rescues(&self) -> u64 {
        self.rescues.load(Ordering::Relaxed)
    }

    fn header(&self, location: &Path, create_only: bool) -> pb::PutObjectRequest {
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                bucket: self.bucket.clone(),
                key: location.to_string(),
                expected_size: None,
                create_only,
                ..Default::default()
            })),
        }
    }

    async fn head_meta(&self, location: &Path) -> object_store::Result<(ObjectMeta, String)> {
        let response = self
            .client
            .clone()
            .head_object(pb::HeadObjectRequest {
                bucket: self.bucket.clone(),
                key: location.to_string(),
            })
            .await
            .map_err(|status| to_store_error(status, location))?
            .into_inner();
        let meta = response
            .object
            .ok_or_else(|| protocol_error("HeadObject response without object"))?;
        Ok((to_meta(meta)?, response.rescue_bucket))
    }
}

/// A write request marked as coming from a service's own object-store
/// writer (append logs, parts), which storage needs to accept a write under
/// the reserved `_lakehouse/` prefix when authentication is off. With
/// authentication on, storage requires the service token instead.
fn internal<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        lakehouse_shared::auth::INTERNAL_WRITER_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// The commit that ends every upload: storage writes nothing unless the
/// bytes it received match both figures.
fn commit_message(size: u64, crc32c: u32) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Commit(pb::PutObjectCommit {
            size,
            crc32c: Some(crc32c),
        })),
    }
}

fn chunk_message(bytes: Bytes) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Chunk(bytes)),
    }
}

fn split(bytes: Bytes) -> impl Iterator<Item = Bytes> {
    let len = bytes.len();
    (0..len)
        .step_by(UPLOAD_CHUNK)
        .map(move |start| bytes.slice(start..(start + UPLOAD_CHUNK).min(len)))
}

fn protocol_error(message: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

/// Maps a status to the object_store error of the same meaning.
fn to_store_error(status: Status, location: &Path) -> object_store::Error {
    let path = location.to_string();
    let source = Box::new(status.clone());
    match status.code() {
        Code::NotFound => object_store::Error::NotFound { path, source },
        Code::AlreadyExists => object_store::Error::AlreadyExists { path, source },
        Code::FailedPrecondition | Code::Aborted => {
            object_store::Error::Precondition { path, source }
        }
        Code::PermissionDenied => object_store::Error::PermissionDenied { path, source },
        Code::Unauthenticated => object_store::Error::Unauthenticated { path, source },
        Code::Unimplemented => object_store::Error::NotImplemented {
            operation: status.message().to_owned(),
            implementer: STORE.to_owned(),
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source,
        },
    }
}

fn to_meta(meta: pb::ObjectMeta) -> object_store::Result<ObjectMeta> {
    let pb::ObjectMeta {
        bucket: _,
        key,
        size,
        last_modified,
        etag,
    } = meta;
    let last_modified = last_modified
        .and_then(|t| {
            DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .unwrap_or_default();
    Ok(ObjectMeta {
        location: Path::parse(&key).map_err(|e| object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        })?,
        last_modified,
        size,
        e_tag: (!etag.is_empty()).then_some(etag),
        version: None,
    })
}

fn to_range(range: &GetRange) -> pb::ByteRange {
    let kind = match range {
        GetRange::Bounded(r) => pb::byte_range::Kind::Bounded(pb::BoundedRange {
            start: r.start,
            end: r.end,
        }),
        GetRange::Offset(o) => pb::byte_range::Kind::Offset(*o),
        GetRange::Suffix(n) => pb::byte_range::Kind::Suffix(*n),
    };
    pb::ByteRange { kind: Some(kind) }
}

#[async_trait]
impl ObjectStore for GrpcObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create_only = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional update (PutMode::Update)".to_owned(),
                    implementer: STORE.to_owned(),
                });
            }
        };
        let mut messages = vec![self.header(location, create_only)];
        let size = payload.content_length() as u64;
        let mut crc = 0;
        for part in payload.into_iter() {
            crc = crc32c::crc32c_append(crc, &part);
            messages.extend(split(part).map(chunk_message));
        }
        messages.push(commit_message(size, crc));
        let response = self
            .client
            .clone()
            .put_object(internal(futures::stream::iter(messages)))
            .await
            .map_err(|status| to_store_error(status, location))?
            .into_inner();
        let etag = response.object.map(|o| o.etag).unwrap_or_default();
        Ok(PutResult {
            e_tag: (!etag.is_empty()).then_some(etag),
            version: None,
            extensions: Extensions::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(GrpcUpload::start(self, location)))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return Err(object_store::Error::NotImplemented {
                operation: "versioned reads".to_owned(),
                implementer: STORE.to_owned(),
            });
        }
        let has_preconditions = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some();
        if options.head || has_preconditions {
            let (meta, rescue) = self.head_meta(location).await?;
            options.check_preconditions(&meta)?;
            if options.head {
                let mut extensions = Extensions::default();
                if !rescue.is_empty() {
                    self.rescues.fetch_add(1, Ordering::Relaxed);
                    extensions.insert(RescueUsed(rescue));
                }
                let range = 0..meta.size;
                return Ok(GetResult {
                    payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                    meta,
                    range,
                    attributes: Attributes::default(),
                    extensions,
                });
            }
        }
        let response = self
            .client
            .clone()
            .get_object(pb::GetObjectRequest {
                bucket: self.bucket.clone(),
                key: location.to_string(),
                range: options.range.as_ref().map(to_range),
            })
            .await
            .map_err(|status| to_store_error(status, location))?;
        let mut stream = response.into_inner();
        let first = stream
            .message()
            .await
            .map_err(|status| to_store_error(status, location))?;
        let header = match first.and_then(|m| m.part) {
            Some(pb::get_object_response::Part::Header(header)) => header,
            _ => {
                return Err(protocol_error(
                    "GetObject stream did not start with a header",
                ));
            }
        };
        let meta = to_meta(
            header
                .object
                .ok_or_else(|| protocol_error("GetObject header without object"))?,
        )?;
        let mut extensions = Extensions::default();
        if !header.rescue_bucket.is_empty() {
            self.rescues.fetch_add(1, Ordering::Relaxed);
            extensions.insert(RescueUsed(header.rescue_bucket));
        }
        let location = location.clone();
        let data = stream
            .map_err(move |status| to_store_error(status, &location))
            .try_filter_map(|message| async move {
                match message.part {
                    Some(pb::get_object_response::Part::Chunk(bytes)) => Ok(Some(bytes)),
                    _ => Err(protocol_error("GetObject sent a second header")),
                }
            })
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(data),
            meta,
            range: header.range_start..header.range_end,
            attributes: Attributes::default(),
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .and_then(move |location| {
                let mut client = store.client.clone();
                let bucket = store.bucket.clone();
                async move {
                    client
                        .delete_object(internal(pb::DeleteObjectRequest {
                            bucket,
                            key: location.to_string(),
                        }))
                        .await
                        .map_err(|status| to_store_error(status, &location))?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        futures::stream::try_unfold(Some(String::new()), move |token| {
            let store = store.clone();
            let prefix = prefix.clone();
            async move {
                let Some(page_token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = store
                    .client
                    .clone()
                    .list_objects(pb::ListObjectsRequest {
                        bucket: store.bucket.clone(),
                        prefix: prefix.clone(),
                        delimiter: String::new(),
                        page_size: LIST_PAGE,
                        page_token,
                    })
                    .await
                    .map_err(|status| to_store_error(status, &Path::from(prefix.as_str())))?
                    .into_inner();
                let objects = page
                    .objects
                    .into_iter()
                    .map(to_meta)
                    .collect::<object_store::Result<Vec<_>>>()?;
                let next = (!page.next_page_token.is_empty()).then_some(page.next_page_token);
                Ok(Some((
                    futures::stream::iter(objects.into_iter().map(Ok)),
                    next,
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix_text = prefix.map(|p| p.to_string()).unwrap_or_default();
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Extensions::default(),
        };
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_objects(pb::ListObjectsRequest {
                    bucket: self.bucket.clone(),
                    prefix: prefix_text.clone(),
                    delimiter: "/".to_owned(),
                    page_size: LIST_PAGE,
                    page_token,
                })
                .await
                .map_err(|status| to_store_error(status, &Path::from(prefix_text.as_str())))?
                .into_inner();
            for common in page.common_prefixes {
                let trimmed = common.trim_end_matches('/');
                result
                    .common_prefixes
                    .push(
                        Path::parse(trimmed).map_err(|e| object_store::Error::Generic {
                            store: STORE,
                            source: Box::new(e),
                        })?,
                    );
            }
            for object in page.objects {
                result.objects.push(to_meta(object)?);
            }
            if page.next_page_token.is_empty() {
                return Ok(result);
            }
            page_token = page.next_page_token;
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        // The service has no server-side copy yet: stream through the client.
        let create_only = matches!(options.mode, CopyMode::Create);
        let source = self.get_opts(from, GetOptions::default()).await?;
        let data = source.into_stream();
        let header = self.header(to, create_only);
        let to_owned = to.clone();
        let (tx, rx) = mpsc::channel::<pb::PutObjectRequest>(4);
        let mut client = self.client.clone();
        // The spawned call carries the caller's span, so its trace context
        // reaches the storage service.
        let call = tokio::spawn(
            async move {
                client
                    .put_object(internal(tokio_stream::wrappers::ReceiverStream::new(rx)))
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        let send = async {
            tx.send(header)
                .await
                .map_err(|_| protocol_error("upload ended early"))?;
            let mut data = data;
            let mut size = 0u64;
            let mut crc = 0;
            while let Some(bytes) = data.next().await {
                let bytes = bytes?;
                size += bytes.len() as u64;
                crc = crc32c::crc32c_append(crc, &bytes);
                for piece in split(bytes) {
                    tx.send(chunk_message(piece))
                        .await
                        .map_err(|_| protocol_error("upload ended early"))?;
                }
            }
            tx.send(commit_message(size, crc))
                .await
                .map_err(|_| protocol_error("upload ended early"))?;
            Ok::<(), object_store::Error>(())
        }
        .await;
        if let Err(error) = send {
            call.abort();
            return Err(error);
        }
        drop(tx);
        match call.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(to_store_error(status, &to_owned)),
            Err(join) => Err(object_store::Error::JoinError { source: join }),
        }
    }
}

/// An item of the upload channel: numbered so parts uploaded concurrently
/// are still sent in the order they were written.
enum UploadItem {
    Part(Bytes),
    Done,
}

/// A multipart upload as one client-streaming PutObject call. The stream
/// ends normally only on `complete`; abort (or drop) cancels the call, and
/// the server then discards what it received.
struct GrpcUpload {
    sender: mpsc::Sender<(u64, UploadItem)>,
    next: u64,
    call: Option<tokio::task::JoinHandle<Result<tonic::Response<pb::PutObjectResponse>, Status>>>,
    location: Path,
}

impl std::fmt::Debug for GrpcUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcUpload")
            .field("location", &self.location)
            .field("parts", &self.next)
            .finish_non_exhaustive()
    }
}

impl GrpcUpload {
    fn start(store: &GrpcObjectStore, location: &Path) -> Self {
        let (sender, receiver) = mpsc::channel::<(u64, UploadItem)>(8);
        let header = store.header(location, false);
        let requests = ordered_requests(header, receiver);
        let mut client = store.client.clone();
        // The spawned call carries the caller's span, so its trace context
        // reaches the storage service.
        let call = tokio::spawn(
            async move { client.put_object(internal(requests)).await }
                .instrument(tracing::Span::current()),
        );
        Self {
            sender,
            next: 0,
            call: Some(call),
            location: location.clone(),
        }
    }
}

/// The request stream: the header, then parts in sequence order, then the
/// commit on `Done`. If the sender goes away without `Done`, the stream ends
/// without a commit and the server discards the upload.
fn ordered_requests(
    header: pb::PutObjectRequest,
    receiver: mpsc::Receiver<(u64, UploadItem)>,
) -> impl futures::Stream<Item = pb::PutObjectRequest> + Send + 'static {
    struct State {
        receiver: mpsc::Receiver<(u64, UploadItem)>,
        waiting: BTreeMap<u64, UploadItem>,
        next: u64,
        ready: Vec<Bytes>,
        size: u64,
        crc32c: u32,
        finished: bool,
    }
    let state = State {
        receiver,
        waiting: BTreeMap::new(),
        next: 0,
        ready: Vec::new(),
        size: 0,
        crc32c: 0,
        finished: false,
    };
    let parts = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.finished {
                return None;
            }
            if let Some(bytes) = s.ready.pop() {
                s.size += bytes.len() as u64;
                s.crc32c = crc32c::crc32c_append(s.crc32c, &bytes);
                return Some((chunk_message(bytes), s));
            }
            if let Some(item) = s.waiting.remove(&s.next) {
                s.next += 1;
                match item {
                    UploadItem::Part(bytes) => {
                        s.ready = split(bytes).collect();
                        s.ready.reverse();
                        continue;
                    }
                    UploadItem::Done => {
                        s.finished = true;
                        let (size, crc) = (s.size, s.crc32c);
                        return Some((commit_message(size, crc), s));
                    }
                }
            }
            match s.receiver.recv().await {
                Some((seq, item)) => {
                    s.waiting.insert(seq, item);
                }
                // Aborted or dropped: end without a commit, which the server
                // discards.
                None => return None,
            }
        }
    });
    futures::stream::once(async move { header }).chain(parts)
}

#[async_trait]
impl MultipartUpload for GrpcUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let seq = self.next;
        self.next += 1;
        let sender = self.sender.clone();
        let bytes: Bytes = data.into();
        Box::pin(async move {
            sender
                .send((seq, UploadItem::Part(bytes)))
                .await
                .map_err(|_| protocol_error("the upload call ended before all parts were sent"))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let seq = self.next;
        self.next += 1;
        self.sender
            .send((seq, UploadItem::Done))
            .await
            .map_err(|_| protocol_error("the upload call ended before completion"))?;
        let call = self
            .call
            .take()
            .ok_or_else(|| protocol_error("upload already completed or aborted"))?;
        let response = match call.await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(to_store_error(status, &self.location)),
            Err(join) => return Err(object_store::Error::JoinError { source: join }),
        };
        let etag = response.object.map(|o| o.etag).unwrap_or_default();
        Ok(PutResult {
            e_tag: (!etag.is_empty()).then_some(etag),
            version: None,
            extensions: Extensions::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        // Closing the channel ends the request stream without a commit; the
        // server answers with an error and writes nothing. Wait for that, so
        // the abort is complete when this returns.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.sender, closed));
        if let Some(call) = self.call.take() {
            let _ = call.await;
        }
        Ok(())
    }
}

impl Drop for GrpcUpload {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.abort();
        }
    }
}
