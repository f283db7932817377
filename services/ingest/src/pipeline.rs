//! What every ingest shares once it knows its schema: check the target,
//! write Parquet parts while a producer streams batches, commit them in ONE
//! catalog `CommitFiles`, and on any failure undo.
//!
//! Atomicity rests on the catalog: the dataset changes only with the commit,
//! and parts live under a prefix of their own ingest id, so a failed ingest
//! is invisible to readers even before its parts are deleted. Deleting is
//! best effort; when it fails, the parts stay under
//! `datasets/<name>/<ingest-id>/` and a catalog `ResyncDataset` would list
//! them as ADDED files, which its dry run shows before anything changes.
//! Every failure is reported to the storage error journal (service
//! "ingest").
//!
//! A commit whose outcome is unknown (the catalog timed out or went away
//! mid-call) is asked again with the same catalog request id (derived from
//! the ingest id): the catalog replays the commit if it landed and applies
//! it if not, so the answer is exact even when another ingest appended in
//! between (guessing from lineage was not). If the catalog stays silent,
//! the parts are kept rather than deleted under a dataset that may
//! reference them.

use std::future::Future;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::storage::v1 as storage;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::error::{Error, Result};
use crate::parquet_parts::{self, PartOptions, WrittenPart};
use crate::registry::{Phase, Progress};
use lakehouse_shared::status::StatusError as _;

/// How the dataset changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The dataset must not exist.
    Create,
    /// Add files to the existing dataset.
    Append,
    /// The new files replace the dataset's files (created if missing).
    Replace,
}

/// Where the data goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Dataset name.
    pub dataset: String,
    /// Bucket; empty for storage's default.
    pub bucket: String,
    /// Mode.
    pub mode: Mode,
    /// This ingest's id.
    pub ingest_id: String,
    /// The caller's request id; empty for none.
    pub request_id: String,
    /// For an APPEND, whether each of the dataset's columns may hold nulls,
    /// as [`preflight`] found it. The source's columns of those names take
    /// it on: a source often says less than the dataset (a query's columns
    /// are all nullable, a table's NOT NULL ones are not), and an APPEND
    /// must not be refused for that alone. A null in a column the dataset
    /// holds NOT NULL is refused by the encoder instead.
    pub dataset_nullability: Vec<(String, bool)>,
}

/// Provenance recorded with the commit.
#[derive(Debug, Clone)]
pub struct LineageInfo {
    /// Postgres or file.
    pub kind: catalog::SourceKind,
    /// Redacted DSN or file name.
    pub source: String,
    /// The query run, for database sources.
    pub query: String,
    /// When the source snapshot was taken.
    pub snapshot_time: Option<DateTime<Utc>>,
    /// When the ingest started.
    pub start_time: DateTime<Utc>,
}

/// The clients and settings a pipeline uses.
#[derive(Debug, Clone)]
pub struct Context {
    /// Storage.
    pub storage: StorageClient,
    /// Catalog.
    pub catalog: CatalogClient,
    /// Part encoding.
    pub parts: PartOptions,
    /// Batches queued between producer and encoder.
    pub queue_batches: usize,
}

/// A committed ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The dataset's version after the commit.
    pub version: u64,
    /// The bucket its parts were written to.
    pub bucket: String,
    /// The column parallel readers split on; empty for one reader.
    pub split_column: String,
}

/// Validates a dataset name with the one rule every service shares
/// (`lakehouse_shared::names`), before it becomes a key.
pub fn validate_dataset(name: &str) -> Result<()> {
    lakehouse_shared::names::validate("dataset", name).map_err(Error::InvalidName)
}

/// Checks the target before any data is read, so a CREATE of an existing
/// dataset, an APPEND to a missing one or an unknown bucket fails in
/// milliseconds, not after the whole source was read. Returns the expected
/// version for the commit and the target with its bucket resolved: an
/// existing dataset's own bucket (another one is refused, so parts never
/// land outside the dataset's bucket), else the requested or default one.
pub async fn preflight(ctx: &Context, target: &Target) -> Result<(Option<u64>, Target)> {
    let found = ctx
        .catalog
        .clone()
        .get_dataset(catalog::GetDatasetRequest {
            name: target.dataset.clone(),
            view: catalog::DatasetView::Basic as i32,
        })
        .await;
    let (expected, existing) = match (target.mode, found) {
        (Mode::Create, Err(status)) if status.code() == Code::NotFound => (Some(0), None),
        (Mode::Create, Ok(_)) => {
            // The catalog's own reason, as a refused commit would carry.
            return Err(Error::Catalog {
                status: Box::new(lakehouse_shared::status::with_error_info(
                    Code::AlreadyExists,
                    format!(
                        "dataset {} already exists; use mode APPEND or REPLACE",
                        target.dataset
                    ),
                    "DATASET_EXISTS",
                    [("dataset", target.dataset.clone())],
                )),
            });
        }
        (Mode::Append, Err(status)) if status.code() == Code::NotFound => {
            return Err(Error::Catalog {
                status: Box::new(lakehouse_shared::status::with_error_info(
                    Code::NotFound,
                    format!(
                        "dataset {} does not exist; use mode CREATE first",
                        target.dataset
                    ),
                    "DATASET_NOT_FOUND",
                    [("dataset", target.dataset.clone())],
                )),
            });
        }
        (Mode::Replace, Err(status)) if status.code() == Code::NotFound => (Some(0), None),
        (Mode::Append | Mode::Replace, Ok(found)) => (None, found.into_inner().dataset),
        (_, Err(status)) => return Err(catalog_error(status)),
    };
    let dataset_nullability = match (&existing, target.mode) {
        (Some(dataset), Mode::Append) => dataset
            .schema
            .iter()
            .flat_map(|s| &s.columns)
            .map(|c| (c.name.clone(), c.nullable))
            .collect(),
        _ => Vec::new(),
    };
    let existing_bucket = existing.map(|d| d.bucket).filter(|b| !b.is_empty());
    let bucket = resolve_bucket(ctx, target, existing_bucket).await?;
    Ok((
        expected,
        Target {
            bucket,
            dataset_nullability,
            ..target.clone()
        },
    ))
}

/// The bucket the parts go to, checked against storage's buckets.
async fn resolve_bucket(
    ctx: &Context,
    target: &Target,
    existing: Option<String>,
) -> Result<String> {
    if let Some(existing) = &existing
        && !target.bucket.is_empty()
        && &target.bucket != existing
    {
        return Err(Error::BucketMismatch {
            dataset: target.dataset.clone(),
            requested: target.bucket.clone(),
            actual: existing.clone(),
        });
    }
    let buckets = ctx
        .storage
        .clone()
        .list_buckets(storage::ListBucketsRequest {})
        .await
        .map_err(|status| Error::StorageUnavailable {
            reason: status.message().to_owned(),
        })?
        .into_inner()
        .buckets;
    let wanted = existing.unwrap_or_else(|| target.bucket.clone());
    let found = if wanted.is_empty() {
        buckets.iter().find(|b| b.is_default)
    } else {
        buckets.iter().find(|b| b.name == wanted)
    };
    match found {
        Some(bucket) => Ok(bucket.name.clone()),
        None => Err(Error::UnknownBucket {
            bucket: wanted,
            known: buckets.iter().map(|b| b.name.clone()).collect(),
        }),
    }
}

pub(crate) fn catalog_error(status: tonic::Status) -> Error {
    let status = match status.code() {
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded => {
            tonic::Status::unavailable(format!(
                "the catalog is unreachable ({}); retry when it is up",
                status.message()
            ))
        }
        Code::Unimplemented => tonic::Status::unavailable(
            "the catalog does not implement CommitFiles yet; nothing was changed".to_owned(),
        ),
        _ => status,
    };
    Error::Catalog {
        status: Box::new(status),
    }
}

/// Runs `produce` (which sends batches and returns the rows read) into
/// Parquet parts, then commits. On failure or cancellation, cleans up and
/// journals before returning the error.
#[allow(clippy::too_many_arguments)]
pub async fn run<F, Fut>(
    ctx: &Context,
    target: &Target,
    expected_version: Option<u64>,
    schema: SchemaRef,
    lineage: LineageInfo,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
    produce: F,
) -> Result<Committed>
where
    F: FnOnce(mpsc::Sender<RecordBatch>) -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let store: Arc<dyn ObjectStore> = Arc::new(GrpcObjectStore::new(
        ctx.storage.clone(),
        target.bucket.clone(),
    ));
    let prefix = lakehouse_shared::ingest_id::ingest_prefix(&target.dataset, &target.ingest_id);
    let schema = with_nullability(schema, &target.dataset_nullability);
    progress.set_phase(Phase::Streaming);
    let encoder_cancel = cancel.child_token();
    let (sender, encoder) = parquet_parts::start(
        store.clone(),
        prefix.clone(),
        schema.clone(),
        ctx.parts.clone(),
        ctx.queue_batches,
        progress.clone(),
        encoder_cancel.clone(),
    )?;
    let produced = produce(sender).await;
    if produced.is_err() {
        encoder_cancel.cancel();
    }
    let encoded = encoder
        .await
        .map_err(|e| Error::TaskFailed {
            task: "parquet encoder",
            reason: e.to_string(),
        })
        .and_then(|r| r);
    let written = match (produced, encoded) {
        (Ok(rows), Ok(parts)) => Ok((rows, parts)),
        // The encoder's own error explains a producer that could not send.
        (Err(Error::EncoderStopped), Err(error)) => Err(error),
        (Err(error), _) => Err(error),
        (Ok(_), Err(error)) => Err(error),
    };
    let (rows, parts) = match written {
        Ok(done) => done,
        Err(error) => {
            cleanup(&store, &prefix, &[]).await;
            return Err(error);
        }
    };
    if cancel.is_cancelled() {
        cleanup(&store, &prefix, &parts).await;
        return Err(Error::Cancelled);
    }

    // From here on the ingest is not cancelled: a commit in flight either
    // lands or is checked.
    progress.set_phase(Phase::Committing);
    let request = commit_request(target, expected_version, &schema, &parts, rows, lineage);
    let mut delays = COMMIT_RETRY_DELAYS.iter();
    loop {
        match ctx.catalog.clone().commit_files(request.clone()).await {
            Ok(response) => {
                return Ok(Committed {
                    version: response
                        .into_inner()
                        .dataset
                        .map(|d| d.version)
                        .unwrap_or_default(),
                    bucket: target.bucket.clone(),
                    split_column: String::new(),
                });
            }
            // The outcome is unknown: the same request id either replays the
            // commit that landed or applies it now — never twice.
            Err(status) if ambiguous(status.code()) => match delays.next() {
                Some(delay) => {
                    tracing::info!(
                        dataset = %target.dataset,
                        code = ?status.code(),
                        retry_in = ?delay,
                        "commit outcome unknown; asking again with the same request id"
                    );
                    tokio::time::sleep(*delay).await;
                }
                None => {
                    tracing::warn!(
                        dataset = %target.dataset,
                        prefix = %prefix,
                        "commit outcome still unknown; parts kept so a committed manifest never loses its files"
                    );
                    return Err(Error::Catalog {
                        status: Box::new(tonic::Status::unavailable(format!(
                            "the catalog did not confirm the commit ({}); retry the ingest with the same request_id to learn its outcome (the parts under {prefix} are kept until then)",
                            status.message()
                        ))),
                    });
                }
            },
            // A definite refusal: with request-id replay, a commit that had
            // landed would have been answered with its result instead.
            Err(status) => {
                cleanup(&store, &prefix, &parts).await;
                return Err(catalog_error(status));
            }
        }
    }
}

/// Waits between asking the catalog again about a commit whose outcome is
/// unknown (about 5 s in all).
const COMMIT_RETRY_DELAYS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(4),
];

fn ambiguous(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

/// The catalog request id of an ingest's commit: the ingest id is unique,
/// so it names the one commit this ingest makes.
fn commit_request_id(target: &Target) -> String {
    format!("ingest-{}", target.ingest_id)
}

fn commit_request(
    target: &Target,
    expected_version: Option<u64>,
    schema: &SchemaRef,
    parts: &[WrittenPart],
    rows: u64,
    lineage: LineageInfo,
) -> catalog::CommitFilesRequest {
    let bytes = parts.iter().map(|p| p.size).sum();
    let mode = match target.mode {
        Mode::Create | Mode::Append => catalog::CommitMode::Append,
        Mode::Replace => catalog::CommitMode::Replace,
    };
    catalog::CommitFilesRequest {
        name: target.dataset.clone(),
        expected_version,
        mode: mode as i32,
        add_files: parts
            .iter()
            .map(|p| catalog::DataFile {
                key: p.key.clone(),
                size_bytes: p.size,
                row_count: p.rows,
                etag: p.etag.clone(),
            })
            .collect(),
        remove_keys: Vec::new(),
        schema: Some(catalog_schema(schema)),
        lineage: Some(catalog::Lineage {
            source_kind: lineage.kind as i32,
            source: lineage.source,
            query: lineage.query,
            ingest_id: target.ingest_id.clone(),
            start_time: Some(timestamp(lineage.start_time)),
            finish_time: Some(timestamp(Utc::now())),
            snapshot_time: lineage.snapshot_time.map(timestamp),
            rows,
            bytes,
        }),
        bucket: target.bucket.clone(),
        request_id: commit_request_id(target),
    }
}

/// `schema` with each column named in `nullability` taking the dataset's
/// nullability (see [`Target::dataset_nullability`]); the rest as they are.
fn with_nullability(schema: SchemaRef, nullability: &[(String, bool)]) -> SchemaRef {
    let differs = |field: &arrow::datatypes::Field| {
        nullability
            .iter()
            .find(|(name, _)| name == field.name())
            .filter(|(_, nullable)| *nullable != field.is_nullable())
            .map(|(_, nullable)| *nullable)
    };
    if !schema.fields().iter().any(|f| differs(f).is_some()) {
        return schema;
    }
    let fields: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match differs(f) {
            Some(nullable) => Arc::new(f.as_ref().clone().with_nullable(nullable)),
            None => f.clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// The catalog's schema: Arrow types as Arrow prints them.
pub fn catalog_schema(schema: &SchemaRef) -> catalog::Schema {
    catalog::Schema {
        columns: schema
            .fields()
            .iter()
            .map(|f| catalog::Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect(),
    }
}

pub use lakehouse_shared::time::to_proto as timestamp;

/// Deletes the ingest's parts: those known, and whatever else is under its
/// prefix (a part whose completion raced the failure). Best effort.
async fn cleanup(store: &Arc<dyn ObjectStore>, prefix: &str, known: &[WrittenPart]) {
    let mut keys: Vec<Path> = known.iter().map(|p| Path::from(p.key.as_str())).collect();
    match store
        .list(Some(&Path::from(prefix)))
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(listed) => keys.extend(listed.into_iter().map(|m| m.location)),
        Err(error) => tracing::warn!(%prefix, %error, "listing parts to delete failed"),
    }
    keys.sort();
    keys.dedup();
    for key in keys {
        match store.delete(&key).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(
                %key,
                %error,
                "deleting a part of a failed ingest failed; it stays under its ingest prefix, outside the dataset's manifest"
            ),
        }
    }
}

/// Reports a failed ingest to the storage error journal (best effort).
pub async fn journal_failure(
    storage: &StorageClient,
    operation: &str,
    bucket: &str,
    key: &str,
    error: &Error,
) {
    let request = storage::ReportErrorRequest {
        service: "ingest".to_owned(),
        operation: operation.to_owned(),
        message: error.client_message(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    };
    if let Err(status) = storage.clone().report_error(request).await {
        tracing::warn!(code = ?status.code(), message = %status.message(), "reporting an ingest failure to the error journal failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_are_validated() {
        assert!(validate_dataset("staff.2024_q1-x").is_ok());
        for bad in ["", "Staff", "a/b", "../x", "..", "x y"] {
            assert!(validate_dataset(bad).is_err(), "{bad}");
        }
    }
}
