use lakehouse_shared::status::{ErrorInfo, StatusError, to_status};
use tonic::{Code, Status};

/// Errors of the ingest service. One variant per cause. Messages never hold a
/// password: DSN errors describe the problem without echoing the DSN, source
/// errors carry only PostgreSQL's SQLSTATE and primary message (which
/// concern the caller's own SQL), and anything that might hold a secret is
/// scrubbed by [`crate::dsn::Redactor`] before it is stored here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A dataset name that breaks the shared naming rule.
    #[error(transparent)]
    InvalidName(lakehouse_shared::names::InvalidName),

    /// The DSN cannot be parsed; the reason never quotes it.
    #[error("invalid dsn: {0}")]
    InvalidDsn(String),

    /// The named password secret could not be resolved.
    #[error("password_secret {name:?}: {source}")]
    Secret {
        /// The secret's name.
        name: String,
        /// The provider's error (never a value).
        source: lakehouse_shared::Error,
    },

    /// PostgreSQL refused the credentials.
    #[error(
        "postgres at {target} refused the credentials of user {user:?}: check the password (or password_secret) and pg_hba.conf"
    )]
    SourceAuth {
        /// host:port/db, never with a password.
        target: String,
        /// The user name.
        user: String,
    },

    /// PostgreSQL could not be reached.
    #[error("postgres at {target} is unreachable: {reason}")]
    SourceUnreachable {
        /// host:port/db.
        target: String,
        /// Why (I/O or TLS error text, without secrets).
        reason: String,
    },

    /// PostgreSQL reported an error for the caller's SQL or data.
    #[error("postgres error {code}: {message}")]
    SourceSql {
        /// SQLSTATE.
        code: String,
        /// PostgreSQL's primary message, scrubbed of secrets.
        message: String,
    },

    /// The connection failed mid-ingest or spoke an unexpected protocol.
    #[error("postgres connection failed during {during}: {reason}")]
    SourceProtocol {
        /// What was under way.
        during: &'static str,
        /// Why, scrubbed of secrets.
        reason: String,
    },

    /// A column has a type the ingest does not map.
    #[error(
        "column {column:?} has type {type_name}, which ingest does not support{reason}; cast it in a query, e.g. SELECT {quoted}{cast} AS {quoted}"
    )]
    UnsupportedType {
        /// Column name.
        column: String,
        /// The type as PostgreSQL names it.
        type_name: String,
        /// ": why", or empty.
        reason: String,
        /// The column quoted as an identifier.
        quoted: String,
        /// A cast that works.
        cast: &'static str,
    },

    /// A value cannot be represented in the column's Arrow type.
    #[error("column {column:?}: {reason}; {hint}")]
    Value {
        /// Column name.
        column: String,
        /// What is wrong.
        reason: String,
        /// What to do.
        hint: &'static str,
    },

    /// A NOT NULL column produced a NULL.
    #[error("column {column:?} is NOT NULL but the server sent a NULL")]
    UnexpectedNull {
        /// Column name.
        column: String,
    },

    /// An APPEND's source has a null in a column the dataset holds NOT NULL.
    #[error(
        "column {column:?} is NOT NULL in the dataset, but row {row} of the source (in the order read) has a null there; nothing was appended. Fill the column in the source, or REPLACE the dataset to allow nulls"
    )]
    NullInNotNullColumn {
        /// Column name.
        column: String,
        /// 1-based row, counted over the batches as the encoder read them.
        row: u64,
    },

    /// The binary COPY stream was malformed.
    #[error("malformed COPY stream: {0}")]
    Framing(#[from] crate::copy_binary::FramingError),

    /// Arrow refused to build a batch.
    #[error("arrow: {0}")]
    Arrow(#[source] arrow::error::ArrowError),

    /// Parquet encoding failed.
    #[error("parquet encoding failed: {0}")]
    Parquet(#[source] parquet::errors::ParquetError),

    /// Storage failed writing or deleting a part.
    #[error("storage failed during {operation} of {key}: {source}")]
    Storage {
        /// What was under way.
        operation: &'static str,
        /// The object key.
        key: String,
        /// The object_store error (from the storage service).
        source: Box<object_store::Error>,
    },

    /// The catalog refused or failed the commit (or its pre-check).
    #[error("catalog: {}", status.message())]
    Catalog {
        /// The catalog's status; its code is passed through.
        status: Box<Status>,
    },

    /// An uploaded file is malformed.
    #[error("{format}: {message}")]
    File {
        /// "csv", "ndjson" or "parquet".
        format: &'static str,
        /// What is wrong, with the line when known.
        message: String,
    },

    /// A CSV said to have a header whose first line looks like a data row:
    /// reading it as column names would lose that row.
    #[error(
        "the first line of the CSV looks like data, not column names: {evidence}. If the file has no \
         header line, ingest it with --no-header (CsvOptions.has_header false); if it has one, \
         declare the columns (CsvOptions.columns). Nothing was ingested"
    )]
    HeaderLooksLikeData {
        /// Why it looks like data, with the fields that say so.
        evidence: String,
    },

    /// An upload exceeds the configured limit.
    #[error(
        "the upload exceeds the {limit}-byte limit for {what}; raise --ingest-max-upload-bytes or split the file"
    )]
    UploadTooLarge {
        /// What was being buffered.
        what: &'static str,
        /// The limit.
        limit: u64,
    },

    /// The client cancelled (dropped the stream or the upload).
    #[error("cancelled by the client")]
    Cancelled,

    /// The request names a bucket other than the existing dataset's.
    #[error(
        "dataset {dataset} lives in bucket {actual:?}, not {requested:?}; leave bucket empty (or set it to {actual:?}) to add to it"
    )]
    BucketMismatch {
        /// The dataset.
        dataset: String,
        /// The bucket the request named.
        requested: String,
        /// The dataset's bucket.
        actual: String,
    },

    /// The bucket is not one storage serves.
    #[error("bucket {bucket:?} is not configured in storage; known buckets: {}", known.join(", "))]
    UnknownBucket {
        /// The bucket asked for (empty: the default, when none is marked).
        bucket: String,
        /// The buckets storage serves.
        known: Vec<String>,
    },

    /// Storage could not list its buckets before the ingest started.
    #[error("storage is unreachable ({reason}); nothing was read, retry when it is up")]
    StorageUnavailable {
        /// What storage (or the connection) said.
        reason: String,
    },

    /// The upload stream ended without its commit message.
    #[error(
        "the upload ended without an IngestFileCommit (size and CRC32C); it may have been cut short, so nothing was committed"
    )]
    UploadIncomplete,

    /// The upload's commit message does not match the bytes received.
    #[error(
        "the upload does not match its commit: received {received_bytes} bytes with CRC32C {received_crc32c:#010x} ({received_crc32c}), the commit says {size_bytes} bytes with {crc32c:#010x} ({crc32c}, the decimal IngestFileCommit.crc32c takes); nothing was committed"
    )]
    UploadCorrupt {
        /// Bytes received.
        received_bytes: u64,
        /// CRC32C of the bytes received.
        received_crc32c: u32,
        /// Bytes the client says it sent.
        size_bytes: u64,
        /// CRC32C the client computed.
        crc32c: u32,
    },

    /// The history is not loaded yet, so a request id cannot be checked.
    #[error(
        "the ingest history is not loaded yet (is storage reachable?), so request_id cannot be checked; retry shortly"
    )]
    HistoryNotLoaded,

    /// No such ingest.
    #[error("no ingest {0:?}; ListIngests shows the recent ones")]
    NotFound(String),

    /// The service is shutting down.
    #[error("the ingest service is shutting down; retry against another instance")]
    ShuttingDown,

    /// A dataset's file list kept changing while the orphan sweeper read it
    /// (commits landing between pages), so no consistent list was seen.
    #[error(
        "the file list of dataset {dataset} kept changing while it was read; nothing of it was swept, retry shortly"
    )]
    ManifestUnsettled {
        /// The dataset.
        dataset: String,
    },

    /// A task of the pipeline panicked or was torn down (a bug, or the
    /// process stopping); nothing was committed.
    #[error("the {task} stopped unexpectedly: {reason}; nothing was committed")]
    TaskFailed {
        /// Which task: "parquet encoder", "parquet reader", "parallel reader".
        task: &'static str,
        /// What the runtime reported.
        reason: String,
    },

    /// A reader could not hand a batch to the Parquet encoder because the
    /// encoder had already stopped; the encoder's own error is the one to
    /// report, and this only stands in when there is none.
    #[error("the parquet encoder stopped early")]
    EncoderStopped,

    /// A text decoder consumed no input and produced no batch: a bug in the
    /// decoder's use, reported instead of looping forever.
    #[error("the {format} decoder made no progress")]
    DecoderStalled {
        /// "csv" or "ndjson".
        format: &'static str,
    },

    /// The temporary file an uploaded Parquet file is spooled to (Parquet
    /// needs random access) could not be used.
    #[error("the spool file for the upload could not be {action}: {source}")]
    Spool {
        /// "created", "written", "rewound" or "reopened".
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with the ingest [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl StatusError for Error {
    /// The gRPC code by meaning.
    fn code(&self) -> Code {
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidName(_)
            | Error::InvalidDsn(_)
            | Error::UnsupportedType { .. }
            | Error::File { .. }
            | Error::HeaderLooksLikeData { .. } => Code::InvalidArgument,
            Error::Secret { .. } => Code::FailedPrecondition,
            // The *source's* credentials: UNAUTHENTICATED would read, to a
            // gRPC client, as its own credentials failing.
            Error::SourceAuth { .. } => Code::FailedPrecondition,
            Error::SourceUnreachable { .. } => Code::Unavailable,
            Error::SourceSql { code, .. } => sqlstate_code(code),
            Error::SourceProtocol { .. } => Code::Unavailable,
            Error::Value { .. }
            | Error::UnexpectedNull { .. }
            | Error::NullInNotNullColumn { .. } => Code::FailedPrecondition,
            Error::Framing(_)
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::TaskFailed { .. }
            | Error::EncoderStopped
            | Error::DecoderStalled { .. }
            | Error::Spool { .. } => Code::Internal,
            Error::Storage { source, .. } => match **source {
                object_store::Error::PermissionDenied { .. } => Code::PermissionDenied,
                object_store::Error::Unauthenticated { .. } => Code::Unauthenticated,
                object_store::Error::NotFound { .. } => Code::NotFound,
                _ => Code::Unavailable,
            },
            Error::Catalog { status } => status.code(),
            Error::UploadTooLarge { .. } => Code::ResourceExhausted,
            Error::Cancelled => Code::Cancelled,
            Error::BucketMismatch { .. } => Code::FailedPrecondition,
            Error::UnknownBucket { .. } => Code::NotFound,
            Error::StorageUnavailable { .. } | Error::HistoryNotLoaded => Code::Unavailable,
            Error::UploadIncomplete | Error::UploadCorrupt { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::ShuttingDown => Code::Unavailable,
            Error::ManifestUnsettled { .. } => Code::Aborted,
        }
    }

    /// The message a client sees: short and actionable, without backend
    /// internals such as storage server paths.
    fn client_message(&self) -> String {
        match self {
            Error::Storage { operation, key, .. } => format!(
                "storage failed during {operation} of {key}; it may be unreachable: see the storage service's GetBucketHealth and ListErrors"
            ),
            Error::Catalog { status } => format!("catalog: {}", status.message()),
            _ => self.to_string(),
        }
    }

    /// The `ErrorInfo` reason and metadata a client gets. A refusal by the
    /// catalog keeps the catalog's own reason and metadata (DATASET_EXISTS,
    /// VERSION_MISMATCH with the current version, ...), marked with
    /// `service=catalog`, so a client branches on the same reasons whether
    /// it called the catalog or ingest; CATALOG_FAILED only when the
    /// catalog gave none.
    fn error_info(&self) -> ErrorInfo {
        if let Error::Catalog { status } = self
            && let Some(reason) = lakehouse_shared::status::error_reason(status)
        {
            let mut metadata = lakehouse_shared::status::error_info_metadata(status);
            metadata.insert("service".to_owned(), "catalog".to_owned());
            return ErrorInfo { reason, metadata };
        }
        self.reason_and_values().into()
    }
}

/// SQLSTATE classes to gRPC codes: the caller's SQL (42, 22, 25) is
/// INVALID_ARGUMENT or FAILED_PRECONDITION; privileges PERMISSION_DENIED;
/// missing objects NOT_FOUND; server trouble UNAVAILABLE.
fn sqlstate_code(code: &str) -> Code {
    match code {
        "42P01" | "3F000" | "3D000" | "42883" => Code::NotFound,
        "42501" => Code::PermissionDenied,
        "28P01" | "28000" => Code::FailedPrecondition,
        "25006" => Code::InvalidArgument,
        "57014" => Code::DeadlineExceeded,
        _ => match code.get(..2) {
            Some("42") => Code::InvalidArgument,
            Some("22") | Some("23") | Some("2F") | Some("P0") => Code::FailedPrecondition,
            Some("08") | Some("53") | Some("57") | Some("58") => Code::Unavailable,
            Some("40") => Code::Aborted,
            _ => Code::Internal,
        },
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}

impl Error {
    /// The stable `google.rpc.ErrorInfo` reason and the values a client
    /// needs to act on it, by variant.
    fn reason_and_values(&self) -> (&'static str, Vec<(&'static str, String)>) {
        match self {
            Error::InvalidRequest(_) => ("INVALID_ARGUMENT", vec![]),
            Error::InvalidName(_) => ("INVALID_NAME", vec![]),
            Error::InvalidDsn(_) => ("INVALID_DSN", vec![]),
            Error::Secret { name, .. } => ("SECRET_UNAVAILABLE", vec![("secret", name.clone())]),
            Error::SourceAuth { user, .. } => ("SOURCE_AUTH_FAILED", vec![("user", user.clone())]),
            Error::SourceUnreachable { .. } => ("SOURCE_UNREACHABLE", vec![]),
            Error::SourceSql { code, .. } => ("SOURCE_SQL_ERROR", vec![("sqlstate", code.clone())]),
            Error::SourceProtocol { .. } => ("SOURCE_PROTOCOL", vec![]),
            Error::UnsupportedType {
                column, type_name, ..
            } => (
                "UNSUPPORTED_TYPE",
                vec![("column", column.clone()), ("type", type_name.clone())],
            ),
            Error::Value { .. } | Error::UnexpectedNull { .. } => ("BAD_VALUE", vec![]),
            Error::NullInNotNullColumn { column, row } => (
                "NULL_IN_NOT_NULL_COLUMN",
                vec![("column", column.clone()), ("row", row.to_string())],
            ),
            Error::File { .. } => ("BAD_FILE", vec![]),
            Error::HeaderLooksLikeData { .. } => ("HEADER_LOOKS_LIKE_DATA", vec![]),
            Error::Storage { key, .. } => ("STORAGE_FAILED", vec![("key", key.clone())]),
            Error::Catalog { status } => (
                "CATALOG_FAILED",
                lakehouse_shared::status::error_reason(status)
                    .map(|r| ("catalog_reason", r))
                    .into_iter()
                    .collect(),
            ),
            Error::UploadTooLarge { .. } => ("UPLOAD_TOO_LARGE", vec![]),
            Error::Cancelled => ("CANCELLED", vec![]),
            Error::BucketMismatch { actual, .. } => {
                ("BUCKET_MISMATCH", vec![("dataset_bucket", actual.clone())])
            }
            Error::UnknownBucket { bucket, known } => (
                "BUCKET_NOT_FOUND",
                vec![("bucket", bucket.clone()), ("known", known.join(","))],
            ),
            Error::StorageUnavailable { .. } => ("STORAGE_UNAVAILABLE", vec![]),
            Error::HistoryNotLoaded => ("HISTORY_NOT_LOADED", vec![]),
            Error::UploadIncomplete => ("UPLOAD_INCOMPLETE", vec![]),
            Error::UploadCorrupt { .. } => ("UPLOAD_CORRUPT", vec![]),
            Error::NotFound(_) => ("NOT_FOUND", vec![]),
            Error::ShuttingDown => ("SHUTTING_DOWN", vec![]),
            Error::ManifestUnsettled { dataset } => {
                ("MANIFEST_UNSETTLED", vec![("dataset", dataset.clone())])
            }
            Error::Framing(_)
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::TaskFailed { .. }
            | Error::EncoderStopped
            | Error::DecoderStalled { .. }
            | Error::Spool { .. } => ("INTERNAL", vec![]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums read as hex with `0x` and as the decimal the API takes.
    #[test]
    fn a_crc_mismatch_shows_hex_with_0x_and_the_api_decimal() {
        let error = Error::UploadCorrupt {
            received_bytes: 3,
            received_crc32c: 42,
            size_bytes: 4,
            crc32c: 3_161_893_776,
        };
        let text = error.to_string();
        assert!(
            text.contains(
                "CRC32C 0x0000002a (42), the commit says 4 bytes with 0xbc76ab90 (3161893776"
            ),
            "{text}"
        );
    }

    #[test]
    fn sqlstates_map_by_meaning() {
        assert_eq!(sqlstate_code("42P01"), Code::NotFound);
        assert_eq!(sqlstate_code("42601"), Code::InvalidArgument);
        assert_eq!(sqlstate_code("42501"), Code::PermissionDenied);
        assert_eq!(sqlstate_code("22012"), Code::FailedPrecondition);
        assert_eq!(sqlstate_code("57P01"), Code::Unavailable);
        assert_eq!(sqlstate_code("XX000"), Code::Internal);
    }

    #[test]
    fn unsupported_type_names_column_type_and_cast() {
        let error = Error::UnsupportedType {
            column: "geo".to_owned(),
            type_name: "point".to_owned(),
            reason: String::new(),
            quoted: "\"geo\"".to_owned(),
            cast: "::text",
        };
        let status = Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("\"geo\""));
        assert!(status.message().contains("point"));
        assert!(status.message().contains("::text"));
    }
}
