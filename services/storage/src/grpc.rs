//! The tonic adapter: validates and converts requests, delegates to
//! [`Storage`], converts results. No storage logic lives here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use lakehouse_proto::storage::v1::{self as pb, storage_service_server::StorageService};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use lakehouse_shared::auth::{Caller, INTERNAL_WRITER_HEADER, SERVICE_TOKEN};
use lakehouse_shared::paging::{self, PageToken, PageTokenError};
use lakehouse_shared::time::to_proto as timestamp;

use crate::journal::{ErrorFilter, ErrorRecord};
use crate::objects::{ObjectRange, PutOptions};
use crate::registry::Backend;
use crate::{Error, RESCUE_METADATA_KEY, Storage};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `lakehouse.storage.v1.StorageService`.
#[derive(Debug, Clone)]
pub struct StorageGrpc {
    storage: Arc<Storage>,
}

impl StorageGrpc {
    /// The adapter over `storage`.
    pub fn new(storage: Arc<Storage>) -> Self {
        Self { storage }
    }
}

fn from_timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    lakehouse_shared::time::from_proto(ts)
        .ok_or_else(|| Status::invalid_argument("timestamp is out of range or has negative nanos"))
}

fn object_meta(bucket: &str, meta: &object_store::ObjectMeta) -> pb::ObjectMeta {
    pb::ObjectMeta {
        bucket: bucket.to_owned(),
        key: meta.location.to_string(),
        size: meta.size,
        last_modified: Some(timestamp(meta.last_modified)),
        etag: meta.e_tag.clone().unwrap_or_default(),
    }
}

/// Whether the caller may write or delete under the reserved `_lakehouse/`
/// prefix: with authentication on, only with the service token; with it
/// off, only the services' own object-store writers, which mark their calls
/// with [`INTERNAL_WRITER_HEADER`].
///
/// The services' writers there are the error journal (in-process, never
/// through this adapter), and the audit journal and ingest history of a
/// process that is not the storage service, which flush through
/// `GrpcObjectStore` — that is, PutObject and DeleteObject. Matching on the
/// caller rather than on sub-prefixes keeps one rule for every present and
/// future append log.
fn may_write_reserved<T>(request: &Request<T>) -> bool {
    match request.extensions().get::<Caller>() {
        Some(caller) => &*caller.token == SERVICE_TOKEN,
        None => request.metadata().contains_key(INTERNAL_WRITER_HEADER),
    }
}

fn with_rescue_metadata<T>(mut response: Response<T>, rescue: Option<&str>) -> Response<T> {
    if let Some(value) = rescue.and_then(|r| MetadataValue::try_from(r).ok()) {
        response.metadata_mut().insert(RESCUE_METADATA_KEY, value);
    }
    response
}

/// The data of an upload: chunks until a commit (which must be last) or the
/// end of the stream. A stream that ends without its commit (unless the
/// header waived it), whose commit disagrees with the bytes, or that fails,
/// yields an error, so nothing is written.
fn upload_chunks(
    stream: Streaming<pb::PutObjectRequest>,
    key: String,
    allow_uncommitted: bool,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + Unpin {
    use pb::put_object_request::Part;
    struct State {
        stream: Streaming<pb::PutObjectRequest>,
        key: String,
        received: u64,
        crc32c: u32,
        committed: bool,
    }
    let state = State {
        stream,
        key,
        received: 0,
        crc32c: 0,
        committed: false,
    };
    Box::pin(futures::stream::try_unfold(
        state,
        move |mut state| async move {
            loop {
                let message =
                    state
                        .stream
                        .message()
                        .await
                        .map_err(|status| Error::UploadInterrupted {
                            key: state.key.clone(),
                            status: Box::new(status),
                        })?;
                match (message.and_then(|m| m.part), state.committed) {
                    (None, true) => return Ok(None),
                    (None, false) if allow_uncommitted => return Ok(None),
                    (None, false) => {
                        return Err(Error::UploadIncomplete {
                            key: state.key.clone(),
                        });
                    }
                    (Some(_), true) => {
                        return Err(Error::InvalidRequest(
                            "a PutObject commit must be the last message".to_owned(),
                        ));
                    }
                    (Some(Part::Chunk(bytes)), false) => {
                        state.received += bytes.len() as u64;
                        state.crc32c = crc32c::crc32c_append(state.crc32c, &bytes);
                        return Ok(Some((bytes, state)));
                    }
                    (Some(Part::Commit(pb::PutObjectCommit { size, crc32c })), false) => {
                        if size != state.received {
                            return Err(Error::SizeMismatch {
                                key: state.key.clone(),
                                expected: size,
                                actual: state.received,
                            });
                        }
                        if let Some(committed) = crc32c
                            && committed != state.crc32c
                        {
                            return Err(Error::UploadCorrupt {
                                key: state.key.clone(),
                                received: state.crc32c,
                                committed,
                            });
                        }
                        state.committed = true;
                    }
                    (Some(Part::Header(_)), false) => {
                        return Err(Error::InvalidRequest(
                            "only the first PutObject message may be a header".to_owned(),
                        ));
                    }
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl StorageService for StorageGrpc {
    type GetObjectStream = BoxStream<pb::GetObjectResponse>;

    async fn list_buckets(
        &self,
        _request: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        let registry = self.storage.registry();
        let buckets = registry
            .all()
            .map(|b| pb::Bucket {
                name: b.name.clone(),
                backend: match b.backend {
                    Backend::Local { .. } => pb::BackendKind::Local,
                    Backend::S3 { .. } => pb::BackendKind::S3,
                    Backend::Memory => pb::BackendKind::Memory,
                } as i32,
                location: b.location(),
                is_default: b.name == registry.default_name(),
                rescue_bucket: b.rescue.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListBucketsResponse { buckets }))
    }

    async fn get_bucket_health(
        &self,
        request: Request<pb::GetBucketHealthRequest>,
    ) -> Result<Response<pb::GetBucketHealthResponse>, Status> {
        let pb::GetBucketHealthRequest {
            buckets,
            timeout_ms,
        } = request.into_inner();
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
        let reports = self.storage.health(&buckets, timeout).await?;
        let buckets = reports
            .into_iter()
            .map(|r| pb::BucketHealth {
                bucket: r.bucket,
                reachable: r.reachable,
                latency_us: u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX),
                error: r.error.unwrap_or_default(),
                check_time: Some(timestamp(r.checked_at)),
            })
            .collect();
        Ok(Response::new(pb::GetBucketHealthResponse { buckets }))
    }

    async fn put_object(
        &self,
        request: Request<Streaming<pb::PutObjectRequest>>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        let reserved_ok = may_write_reserved(&request);
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(header)),
            }) => header,
            _ => {
                return Err(Error::InvalidRequest(
                    "the first PutObject message must be a header (bucket, key)".to_owned(),
                )
                .into());
            }
        };
        // `require_commit` is named (and ignored) so that a new header field
        // cannot be missed here; a commit is required unless waived.
        #[allow(deprecated)]
        let pb::PutObjectHeader {
            bucket,
            key,
            expected_size,
            create_only,
            require_commit: _,
            allow_uncommitted,
        } = header;
        if !reserved_ok {
            crate::keys::refuse_reserved(&key)?;
        }
        let chunks = upload_chunks(stream, key.clone(), allow_uncommitted);
        let options = PutOptions {
            expected_size,
            create_only,
        };
        let meta = self
            .storage
            .put(&bucket, &key, options, Box::pin(chunks))
            .await?;
        let bucket = self.storage.registry().get(&bucket)?.name.clone();
        Ok(Response::new(pb::PutObjectResponse {
            object: Some(object_meta(&bucket, &meta)),
        }))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<Self::GetObjectStream>, Status> {
        let pb::GetObjectRequest { bucket, key, range } = request.into_inner();
        let range = match range.and_then(|r| r.kind) {
            None => None,
            Some(pb::byte_range::Kind::Bounded(pb::BoundedRange { start, end })) => {
                Some(ObjectRange::Bounded(start..end))
            }
            Some(pb::byte_range::Kind::Offset(offset)) => Some(ObjectRange::Offset(offset)),
            Some(pb::byte_range::Kind::Suffix(n)) => Some(ObjectRange::Suffix(n)),
        };
        let outcome = self.storage.get(&bucket, &key, range).await?;
        let rescue = outcome.rescue_bucket.clone();
        let header = pb::GetObjectResponse {
            part: Some(pb::get_object_response::Part::Header(pb::GetObjectHeader {
                object: Some(object_meta(&outcome.bucket, &outcome.meta)),
                range_start: outcome.range.start,
                range_end: outcome.range.end,
                rescue_bucket: rescue.clone().unwrap_or_default(),
            })),
        };
        let chunks = outcome.data.map(|chunk: Result<Bytes, Error>| {
            chunk
                .map(|bytes| pb::GetObjectResponse {
                    part: Some(pb::get_object_response::Part::Chunk(bytes)),
                })
                .map_err(Status::from)
        });
        let stream = futures::stream::once(async { Ok(header) }).chain(chunks);
        Ok(with_rescue_metadata(
            Response::new(Box::pin(stream) as Self::GetObjectStream),
            rescue.as_deref(),
        ))
    }

    async fn head_object(
        &self,
        request: Request<pb::HeadObjectRequest>,
    ) -> Result<Response<pb::HeadObjectResponse>, Status> {
        let pb::HeadObjectRequest { bucket, key } = request.into_inner();
        let (meta, rescue) = self.storage.head(&bucket, &key).await?;
        let bucket = self.storage.registry().get(&bucket)?.name.clone();
        let response = Response::new(pb::HeadObjectResponse {
            object: Some(object_meta(&bucket, &meta)),
            rescue_bucket: rescue.clone().unwrap_or_default(),
        });
        Ok(with_rescue_metadata(response, rescue.as_deref()))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let pb::ListObjectsRequest {
            bucket,
            prefix,
            delimiter,
            page_size: requested,
            page_token,
        } = request.into_inner();
        let delimited = match delimiter.as_str() {
            "" => false,
            "/" => true,
            other => {
                return Err(Error::InvalidRequest(format!(
                    "delimiter {other:?} is not supported; use \"/\" or leave it empty"
                ))
                .into());
            }
        };
        let bucket = self.storage.registry().get(&bucket)?.name.clone();
        let filters = [bucket.as_str(), prefix.as_str(), delimiter.as_str()];
        let after = PageToken::decode(&page_token, &filters).map_err(Error::from)?;
        let size = paging::page_size(requested).map_err(Error::from)?;
        let page = self
            .storage
            .list(
                &bucket,
                &prefix,
                delimited,
                size,
                after.as_ref().map(|t| t.after.as_str()),
            )
            .await?;
        Ok(Response::new(pb::ListObjectsResponse {
            objects: page
                .objects
                .iter()
                .map(|m| object_meta(&bucket, m))
                .collect(),
            common_prefixes: page.common_prefixes,
            next_page_token: page
                .next_after
                .as_deref()
                .map(|after| PageToken::encode(after, &filters))
                .unwrap_or_default(),
        }))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let reserved_ok = may_write_reserved(&request);
        let pb::DeleteObjectRequest { bucket, key } = request.into_inner();
        if !reserved_ok {
            crate::keys::refuse_reserved(&key)?;
        }
        self.storage.delete(&bucket, &key).await?;
        Ok(Response::new(pb::DeleteObjectResponse {}))
    }

    async fn report_error(
        &self,
        request: Request<pb::ReportErrorRequest>,
    ) -> Result<Response<pb::ReportErrorResponse>, Status> {
        let pb::ReportErrorRequest {
            service,
            operation,
            message,
            bucket,
            key,
        } = request.into_inner();
        if service.is_empty() || operation.is_empty() || message.is_empty() {
            return Err(Error::InvalidRequest(
                "service, operation and message are required".to_owned(),
            )
            .into());
        }
        self.storage.journal().record(ErrorRecord {
            time: Utc::now(),
            service,
            operation,
            bucket,
            key,
            message,
            rescue_bucket: String::new(),
        });
        Ok(Response::new(pb::ReportErrorResponse {}))
    }

    async fn list_errors(
        &self,
        request: Request<pb::ListErrorsRequest>,
    ) -> Result<Response<pb::ListErrorsResponse>, Status> {
        let pb::ListErrorsRequest {
            bucket,
            service,
            since,
            page_size: requested,
            page_token,
        } = request.into_inner();
        let since_text = since
            .as_ref()
            .map(|t| format!("{}.{:09}", t.seconds, t.nanos))
            .unwrap_or_default();
        let filters = [bucket.as_str(), service.as_str(), since_text.as_str()];
        let filter = ErrorFilter {
            bucket: (!bucket.is_empty()).then(|| bucket.clone()),
            service: (!service.is_empty()).then(|| service.clone()),
            since: since.as_ref().map(from_timestamp).transpose()?,
        };
        // The position is the journal ordinal of the next matching entry:
        // the journal only grows, and flushes and compaction keep every
        // entry's ordinal, so it stays valid between pages.
        let from: u64 = match PageToken::decode(&page_token, &filters).map_err(Error::from)? {
            None => 0,
            Some(token) => token
                .after
                .parse()
                .map_err(|_| Error::PageToken(PageTokenError::Invalid))?,
        };
        let size = paging::page_size(requested).map_err(Error::from)?;
        let (records, next) = self.storage.journal().list_page(&filter, from, size).await;
        let errors = records
            .into_iter()
            .map(|r| pb::ErrorEntry {
                time: Some(timestamp(r.time)),
                service: r.service,
                operation: r.operation,
                bucket: r.bucket,
                key: r.key,
                message: r.message,
                rescue_bucket: r.rescue_bucket,
            })
            .collect();
        let next_page_token = next
            .map(|ordinal| PageToken::encode(&ordinal.to_string(), &filters))
            .unwrap_or_default();
        Ok(Response::new(pb::ListErrorsResponse {
            errors,
            next_page_token,
        }))
    }

    async fn flush_errors(
        &self,
        _request: Request<pb::FlushErrorsRequest>,
    ) -> Result<Response<pb::FlushErrorsResponse>, Status> {
        let outcome = self.storage.journal().flush().await?;
        Ok(Response::new(match outcome {
            Some(o) => pb::FlushErrorsResponse {
                flushed_entries: o.records as u64,
                object_key: o.key,
            },
            None => pb::FlushErrorsResponse::default(),
        }))
    }

    async fn compact_errors(
        &self,
        _request: Request<pb::CompactErrorsRequest>,
    ) -> Result<Response<pb::CompactErrorsResponse>, Status> {
        let outcome = self.storage.journal().compact().await?;
        Ok(Response::new(match outcome {
            Some(o) => pb::CompactErrorsResponse {
                merged_parts: o.merged_objects as u64,
                entries: o.records as u64,
                object_key: o.key,
            },
            None => pb::CompactErrorsResponse::default(),
        }))
    }
}
