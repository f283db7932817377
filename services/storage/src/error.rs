use std::path::PathBuf;

use lakehouse_shared::status::{ErrorInfo, StatusError, to_status};
use tonic::{Code, Status};

/// Errors of the storage service. One variant per cause; the gRPC mapping
/// below picks the code by meaning and keeps backend text (S3 responses,
/// paths on the server) out of client messages: those go to the logs and the
/// error journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The buckets file could not be read.
    #[error("cannot read buckets config {path}: {source}", path = path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The buckets file is not valid.
    #[error("buckets config {path} is invalid: {message}", path = path.display())]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A credential could not be resolved.
    #[error("bucket {bucket}: {source}")]
    Secret {
        /// The bucket whose credentials were looked up.
        bucket: String,
        /// The secrets error (never a value).
        source: lakehouse_shared::Error,
    },

    /// A bucket's folder could not be created.
    #[error("bucket {bucket}: cannot create folder {path}: {source}", path = path.display())]
    CreateFolder {
        /// The bucket.
        bucket: String,
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A bucket's backend could not be built from its config.
    #[error("bucket {bucket}: backend setup failed: {source}")]
    BuildBackend {
        /// The bucket.
        bucket: String,
        /// Why.
        source: object_store::Error,
    },

    /// The request names a bucket that is not configured.
    #[error("unknown bucket {name:?}; known buckets: {known}")]
    UnknownBucket {
        /// The name given.
        name: String,
        /// The configured names.
        known: String,
    },

    /// The key is not acceptable.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key, shortened if long.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// The byte range is not acceptable.
    #[error("invalid range: {0}")]
    InvalidRange(String),

    /// The range starts past the end of the object.
    #[error("range not satisfiable: {0}")]
    RangeNotSatisfiable(String),

    /// A request is malformed in some other way.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A write or delete under the reserved `_lakehouse/` prefix, which
    /// holds what the services write themselves (the error journal, append
    /// logs, the audit journal): a client that overwrote or deleted those
    /// objects would erase the record of failures and calls.
    #[error(
        "key {key:?} is under the reserved prefix `{prefix}/`, which holds the error journal, append logs and the audit journal; only the services write there (read it with GetObject, ListObjects or ListErrors)",
        prefix = crate::keys::RESERVED_PREFIX
    )]
    ReservedKey {
        /// The key, shortened if long.
        key: String,
    },

    /// A page token this server did not issue, or issued for other filters.
    #[error(transparent)]
    PageToken(#[from] lakehouse_shared::paging::PageTokenError),

    /// A negative page size.
    #[error(transparent)]
    PageSize(#[from] lakehouse_shared::paging::NegativePageSize),

    /// The object does not exist.
    #[error("object {key:?} not found in bucket {bucket}")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },

    /// A create-only write found the object already there.
    #[error("object {key:?} already exists in bucket {bucket}; it is write-once")]
    AlreadyExists {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },

    /// The upload's length differs from the announced one.
    #[error("upload of {key:?} carried {actual} bytes, expected {expected}; nothing was written")]
    SizeMismatch {
        /// The key.
        key: String,
        /// Announced size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },

    /// The upload stream ended without the commit message that completes it.
    #[error(
        "the upload of {key:?} ended without a commit message, so nothing was written; end the stream with a commit (size, crc32c), or set allow_uncommitted in the header"
    )]
    UploadIncomplete {
        /// The key.
        key: String,
    },

    /// The bytes received do not match the commit's checksum.
    #[error(
        "the upload of {key:?} does not match its commit: the bytes received have CRC32C {received:#010x} ({received}), the commit says {committed:#010x} ({committed}, the decimal PutObjectCommit.crc32c takes); nothing was written"
    )]
    UploadCorrupt {
        /// The key.
        key: String,
        /// CRC32C of the bytes received.
        received: u32,
        /// CRC32C the commit announced.
        committed: u32,
    },

    /// The client's upload stream failed or was cancelled.
    #[error("upload of {key:?} was interrupted ({status}); nothing was written")]
    UploadInterrupted {
        /// The key.
        key: String,
        /// The stream's error.
        status: Box<Status>,
    },

    /// The backend failed.
    #[error("bucket {bucket}: {operation} {key:?} failed: {source}")]
    Backend {
        /// The bucket.
        bucket: String,
        /// The operation, such as "get_object".
        operation: &'static str,
        /// The key, empty for bucket-wide operations.
        key: String,
        /// The backend's error.
        source: Box<object_store::Error>,
    },

    /// The error journal could not be read or written.
    #[error("error journal: {0}")]
    Journal(#[source] lakehouse_shared::Error),
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl StatusError for Error {
    fn code(&self) -> Code {
        match self {
            Error::UnknownBucket { .. } | Error::NotFound { .. } => Code::NotFound,
            Error::InvalidKey { .. }
            | Error::InvalidRange(_)
            | Error::InvalidRequest(_)
            | Error::PageToken(_)
            | Error::PageSize(_)
            | Error::SizeMismatch { .. } => Code::InvalidArgument,
            Error::ReservedKey { .. } => Code::PermissionDenied,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::RangeNotSatisfiable(_) => Code::OutOfRange,
            Error::UploadInterrupted { .. } => Code::Cancelled,
            Error::UploadIncomplete { .. } | Error::UploadCorrupt { .. } => Code::InvalidArgument,
            Error::Backend { source, .. } => backend_code(source),
            Error::Journal(_) => Code::Unavailable,
            Error::ReadConfig { .. }
            | Error::InvalidConfig { .. }
            | Error::Secret { .. }
            | Error::CreateFolder { .. }
            | Error::BuildBackend { .. } => Code::Internal,
        }
    }

    /// Backend text stays in the journal and the log: a client learns which
    /// bucket failed and where to look.
    fn client_message(&self) -> String {
        let code = self.code();
        match self {
            Error::Backend {
                bucket, operation, ..
            } => match code {
                Code::NotFound => self.to_string(),
                Code::PermissionDenied | Code::Unauthenticated => format!(
                    "bucket {bucket} refused {operation}: check its credentials; details are in the error journal (ListErrors)"
                ),
                _ => format!(
                    "bucket {bucket} failed during {operation}; it may be unreachable: see GetBucketHealth and ListErrors"
                ),
            },
            Error::Journal(_) => {
                "the error journal is unavailable; see the storage server's log".to_owned()
            }
            _ => self.to_string(),
        }
    }

    fn error_info(&self) -> ErrorInfo {
        error_info(self, self.code()).into()
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}

/// The stable `google.rpc.ErrorInfo` reason of an error and the values a
/// client needs: a missing bucket and a missing object are told apart.
fn error_info(error: &Error, code: Code) -> (&'static str, Vec<(&'static str, String)>) {
    match error {
        Error::UnknownBucket { name, .. } => ("BUCKET_NOT_FOUND", vec![("bucket", name.clone())]),
        Error::NotFound { bucket, key } => (
            "OBJECT_NOT_FOUND",
            vec![("bucket", bucket.clone()), ("key", key.clone())],
        ),
        Error::AlreadyExists { bucket, key } => (
            "OBJECT_EXISTS",
            vec![("bucket", bucket.clone()), ("key", key.clone())],
        ),
        Error::InvalidKey { key, .. } => ("INVALID_KEY", vec![("key", key.clone())]),
        Error::InvalidRange(_) => ("INVALID_RANGE", vec![]),
        Error::RangeNotSatisfiable(_) => ("RANGE_NOT_SATISFIABLE", vec![]),
        Error::InvalidRequest(_) => ("INVALID_ARGUMENT", vec![]),
        Error::ReservedKey { key } => (
            "RESERVED_KEY",
            vec![
                ("key", key.clone()),
                (
                    "reserved_prefix",
                    format!("{}/", crate::keys::RESERVED_PREFIX),
                ),
            ],
        ),
        Error::PageToken(_) => ("INVALID_PAGE_TOKEN", vec![]),
        Error::PageSize(_) => ("INVALID_PAGE_SIZE", vec![]),
        Error::SizeMismatch {
            key,
            expected,
            actual,
        } => (
            "SIZE_MISMATCH",
            vec![
                ("key", key.clone()),
                ("expected_bytes", expected.to_string()),
                ("actual_bytes", actual.to_string()),
            ],
        ),
        Error::UploadInterrupted { key, .. } => ("UPLOAD_INTERRUPTED", vec![("key", key.clone())]),
        Error::UploadIncomplete { key } => ("UPLOAD_INCOMPLETE", vec![("key", key.clone())]),
        Error::UploadCorrupt {
            key,
            received,
            committed,
        } => (
            "UPLOAD_CORRUPT",
            vec![
                ("key", key.clone()),
                // Decimal, as PutObjectCommit.crc32c: a client compares
                // these with the number it sent.
                ("received_crc32c", received.to_string()),
                ("crc32c", committed.to_string()),
            ],
        ),
        Error::Backend { bucket, key, .. } => (
            match code {
                Code::NotFound => "OBJECT_NOT_FOUND",
                Code::AlreadyExists => "OBJECT_EXISTS",
                Code::PermissionDenied | Code::Unauthenticated => "BUCKET_CREDENTIALS_REFUSED",
                Code::FailedPrecondition => "PRECONDITION_FAILED",
                Code::InvalidArgument => "INVALID_KEY",
                Code::Unimplemented => "NOT_SUPPORTED",
                _ => "BUCKET_UNAVAILABLE",
            },
            vec![("bucket", bucket.clone()), ("key", key.clone())],
        ),
        Error::Journal(_) => ("JOURNAL_UNAVAILABLE", vec![]),
        Error::ReadConfig { .. }
        | Error::InvalidConfig { .. }
        | Error::Secret { .. }
        | Error::CreateFolder { .. }
        | Error::BuildBackend { .. } => ("INTERNAL", vec![]),
    }
}

fn backend_code(error: &object_store::Error) -> Code {
    use object_store::Error as E;
    match error {
        E::NotFound { .. } => Code::NotFound,
        E::AlreadyExists { .. } => Code::AlreadyExists,
        E::Precondition { .. } | E::NotModified { .. } => Code::FailedPrecondition,
        E::PermissionDenied { .. } => Code::PermissionDenied,
        E::Unauthenticated { .. } => Code::Unauthenticated,
        E::NotSupported { .. } | E::NotImplemented { .. } => Code::Unimplemented,
        E::InvalidPath { .. } => Code::InvalidArgument,
        _ => Code::Unavailable,
    }
}

impl Error {
    /// Whether the failure is the backend's (journaled), as opposed to the
    /// caller's or a plain miss.
    pub fn is_operational(&self) -> bool {
        match self {
            Error::Backend { source, .. } => !matches!(
                **source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotModified { .. }
                    | object_store::Error::InvalidPath { .. }
            ),
            Error::Journal(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums read as hex with `0x` (no one takes `0000002a` for a
    /// number) and as the decimal the API takes.
    #[test]
    fn a_crc_mismatch_shows_hex_with_0x_and_the_api_decimal() {
        let error = Error::UploadCorrupt {
            key: "a.txt".into(),
            received: 42,
            committed: 3_161_893_776,
        };
        let text = error.to_string();
        assert!(
            text.contains("CRC32C 0x0000002a (42), the commit says 0xbc76ab90 (3161893776"),
            "{text}"
        );
    }
}
