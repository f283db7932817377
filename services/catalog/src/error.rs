use lakehouse_shared::status::{ErrorInfo, StatusError, to_status};
use tonic::{Code, Status};

/// Errors of the catalog service. One variant per cause; the gRPC mapping
/// below picks the code by meaning and keeps database text (SQL, sqlx
/// messages, connection strings) out of client messages: those go to the
/// server log only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset name is not acceptable.
    #[error("invalid dataset name {name:?}: {reason}")]
    InvalidName {
        /// The name, shortened if long.
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// An object key in a commit is not acceptable.
    #[error("invalid file key {key:?}: {reason}")]
    InvalidKey {
        /// The key, shortened if long.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// A schema given by the caller is not acceptable.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),

    /// A request is malformed in some other way.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// A commit's request_id is not acceptable.
    #[error(transparent)]
    InvalidRequestId(#[from] lakehouse_shared::request_id::InvalidRequestId),

    /// A page token that this server did not issue, or issued for other filters.
    #[error(transparent)]
    InvalidPageToken(#[from] lakehouse_shared::paging::PageTokenError),

    /// A request id already used for a commit of another dataset.
    #[error(
        "request_id {request_id:?} was already used for a commit of dataset {used_for:?}, not {name:?}; use a new id for every commit"
    )]
    RequestIdReused {
        /// The id.
        request_id: String,
        /// The dataset it was first used for.
        used_for: String,
        /// The dataset of this request.
        name: String,
    },

    /// A commit names another bucket than the dataset's.
    #[error(
        "dataset {name:?} lives in bucket {bucket:?}, not {given:?}; write its files to {bucket:?} (or leave bucket empty); nothing was changed"
    )]
    BucketMismatch {
        /// The dataset.
        name: String,
        /// The dataset's bucket.
        bucket: String,
        /// The bucket the commit named.
        given: String,
    },

    /// A commit adds a file outside the dataset's own prefix.
    #[error(
        "dataset {name:?}: file {key:?} is outside the dataset's prefix {prefix:?}; a dataset's files must lie under its prefix; nothing was changed"
    )]
    KeyOutsideDataset {
        /// The dataset.
        name: String,
        /// The key, shortened if long.
        key: String,
        /// The dataset's prefix.
        prefix: String,
    },

    /// A commit adds a file that does not exist in storage.
    #[error(
        "dataset {name:?}: file {key:?} does not exist in bucket {bucket:?}; upload it before committing; nothing was changed"
    )]
    FileNotFound {
        /// The dataset.
        name: String,
        /// The bucket.
        bucket: String,
        /// The key, shortened if long.
        key: String,
    },

    /// A commit states another size than the file has in storage.
    #[error(
        "dataset {name:?}: file {key:?} is {actual} bytes in storage, not the stated {stated}; nothing was changed"
    )]
    FileSizeMismatch {
        /// The dataset.
        name: String,
        /// The key, shortened if long.
        key: String,
        /// The size the commit stated.
        stated: u64,
        /// The size storage reports.
        actual: u64,
    },

    /// The dataset does not exist.
    #[error("dataset {name:?} not found")]
    NotFound {
        /// The name.
        name: String,
    },

    /// CreateDataset found the name taken.
    #[error("dataset {name:?} already exists; get it, or delete it first")]
    AlreadyExists {
        /// The name.
        name: String,
    },

    /// The dataset is not at the version the caller expected (or a
    /// concurrent change won the race); nothing was changed.
    #[error(
        "dataset {name:?} is at version {actual}, not the expected {expected}; nothing was changed: get the dataset and retry against its current version"
    )]
    VersionConflict {
        /// The name.
        name: String,
        /// The version the caller expected (0: must not exist).
        expected: u64,
        /// The version found (0: does not exist).
        actual: u64,
    },

    /// The commit contradicts the dataset's current state.
    #[error("dataset {name:?}: {reason}; nothing was changed")]
    Precondition {
        /// The name.
        name: String,
        /// What contradicts.
        reason: String,
    },

    /// A resync would drop manifest files (vanished from storage or
    /// unreadable) and the caller did not allow it; nothing was changed.
    #[error(
        "resync of dataset {name:?} would drop {files} file(s) with {rows} row(s) that the manifest holds but storage no longer serves; nothing was changed: check the files (a dry run lists them), then pass allow_row_loss to accept the loss"
    )]
    RowLoss {
        /// The dataset.
        name: String,
        /// Rows the dropped files hold, by the manifest.
        rows: u64,
        /// Files that would be dropped.
        files: u64,
        /// The first few of their keys (see [`ROW_LOSS_KEYS_SHOWN`]).
        keys: Vec<String>,
    },

    /// The catalog database failed.
    #[error("catalog database failed during {operation}: {source}")]
    Database {
        /// What was being done, such as "commit".
        operation: &'static str,
        /// The driver's error (logged, never sent to clients).
        source: sqlx::Error,
    },

    /// The database schema could not be brought up to date at start.
    #[error("catalog database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// The catalog URL is not usable.
    #[error("invalid --catalog-url {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password redacted.
        url: String,
        /// Why.
        reason: String,
    },

    /// The SQLite file's folder could not be created.
    #[error("cannot create the catalog folder {path}: {source}", path = path.display())]
    CreateFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A stored row could not be read back.
    #[error("catalog row of dataset {name:?} is corrupt: {reason}")]
    Corrupt {
        /// The dataset.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// The storage service answered with an error (its status is kept: its
    /// messages are already meant for clients).
    #[error("storage {operation} failed: {status}")]
    Storage {
        /// What was being done, such as "list files".
        operation: &'static str,
        /// The storage service's answer.
        status: Box<Status>,
    },

    /// The storage address is not valid.
    #[error(transparent)]
    Client(#[from] lakehouse_client::Error),
}

/// How many keys of the files a refused resync would drop go into the
/// ROW_LOSS error's metadata (`file_keys`); a dry run lists them all.
pub const ROW_LOSS_KEYS_SHOWN: usize = 10;

/// Result with the catalog [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a database error, naming the operation for the log.
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }

    /// Wraps a storage status.
    pub(crate) fn storage(operation: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| Self::Storage {
            operation,
            status: Box::new(status),
        }
    }
}

/// Whether a database error means "the database is not reachable or busy
/// right now" (retry later) rather than a bug or corrupt data.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // SQLite: SQLITE_BUSY (5) / SQLITE_LOCKED (6); PostgreSQL class
            // 08 (connection), 40 (transaction rollback), 57P (shutdown).
            let code = db.code().unwrap_or_default();
            matches!(code.as_ref(), "5" | "6" | "517")
                || code.starts_with("08")
                || code.starts_with("40")
                || code.starts_with("57P")
        }
        _ => false,
    }
}

/// The stable `google.rpc.ErrorInfo` reason of an error and the values a
/// client needs to act on it (the current version on a conflict, say).
fn error_info(error: &Error, code: Code) -> (&'static str, Vec<(&'static str, String)>) {
    match error {
        Error::InvalidName { name, .. } => ("INVALID_NAME", vec![("name", name.clone())]),
        Error::InvalidKey { key, .. } => ("INVALID_KEY", vec![("key", key.clone())]),
        Error::InvalidSchema(_) => ("INVALID_SCHEMA", vec![]),
        Error::InvalidRequest(_) => ("INVALID_ARGUMENT", vec![]),
        Error::InvalidRequestId(_) => ("INVALID_REQUEST_ID", vec![]),
        Error::InvalidPageToken(_) => ("INVALID_PAGE_TOKEN", vec![]),
        Error::RequestIdReused {
            request_id,
            used_for,
            name,
        } => (
            "REQUEST_ID_REUSED",
            vec![
                ("request_id", request_id.clone()),
                ("used_for", used_for.clone()),
                ("dataset", name.clone()),
            ],
        ),
        Error::BucketMismatch {
            name,
            bucket,
            given,
        } => (
            "BUCKET_MISMATCH",
            vec![
                ("dataset", name.clone()),
                ("bucket", bucket.clone()),
                ("given_bucket", given.clone()),
            ],
        ),
        Error::KeyOutsideDataset { name, key, prefix } => (
            "KEY_OUTSIDE_DATASET",
            vec![
                ("dataset", name.clone()),
                ("key", key.clone()),
                ("prefix", prefix.clone()),
            ],
        ),
        Error::FileNotFound { name, bucket, key } => (
            "FILE_NOT_FOUND",
            vec![
                ("dataset", name.clone()),
                ("bucket", bucket.clone()),
                ("key", key.clone()),
            ],
        ),
        Error::FileSizeMismatch {
            name,
            key,
            stated,
            actual,
        } => (
            "FILE_SIZE_MISMATCH",
            vec![
                ("dataset", name.clone()),
                ("key", key.clone()),
                ("stated_size", stated.to_string()),
                ("actual_size", actual.to_string()),
            ],
        ),
        Error::NotFound { name } => ("DATASET_NOT_FOUND", vec![("dataset", name.clone())]),
        Error::AlreadyExists { name } => ("DATASET_EXISTS", vec![("dataset", name.clone())]),
        Error::VersionConflict {
            name,
            expected,
            actual,
        } => (
            "VERSION_MISMATCH",
            vec![
                ("dataset", name.clone()),
                ("expected_version", expected.to_string()),
                ("current_version", actual.to_string()),
            ],
        ),
        Error::Precondition { name, .. } => {
            ("FAILED_PRECONDITION", vec![("dataset", name.clone())])
        }
        Error::RowLoss {
            name,
            rows,
            files,
            keys,
        } => (
            "ROW_LOSS",
            vec![
                ("dataset", name.clone()),
                ("rows_lost", rows.to_string()),
                ("files_lost", files.to_string()),
                ("file_keys", keys.join(",")),
            ],
        ),
        Error::Storage { .. } if lakehouse_shared::status::is_caller_error(code) => {
            ("STORAGE_REFUSED", vec![])
        }
        Error::Storage { .. } => ("STORAGE_UNAVAILABLE", vec![]),
        Error::Database { .. } if code == Code::Unavailable => ("DATABASE_UNAVAILABLE", vec![]),
        Error::Database { .. }
        | Error::Corrupt { .. }
        | Error::Migrate(_)
        | Error::InvalidUrl { .. }
        | Error::CreateFolder { .. }
        | Error::Client(_) => ("INTERNAL", vec![]),
    }
}

impl StatusError for Error {
    fn code(&self) -> Code {
        match self {
            Error::InvalidName { .. }
            | Error::InvalidKey { .. }
            | Error::InvalidSchema(_)
            | Error::InvalidRequest(_)
            | Error::InvalidRequestId(_)
            | Error::InvalidPageToken(_)
            | Error::RequestIdReused { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::VersionConflict { .. } => Code::Aborted,
            Error::Precondition { .. }
            | Error::RowLoss { .. }
            | Error::BucketMismatch { .. }
            | Error::KeyOutsideDataset { .. }
            | Error::FileNotFound { .. }
            | Error::FileSizeMismatch { .. } => Code::FailedPrecondition,
            Error::Database { source, .. } if is_transient(source) => Code::Unavailable,
            Error::Database { .. } | Error::Corrupt { .. } => Code::Internal,
            Error::Migrate(_) | Error::InvalidUrl { .. } | Error::CreateFolder { .. } => {
                Code::Internal
            }
            Error::Storage { status, .. } => match status.code() {
                // A storage failure that is the caller's to fix (an unknown
                // bucket, say) keeps its code; anything else means storage
                // could not do its part right now.
                c if lakehouse_shared::status::is_caller_error(c) => c,
                _ => Code::Unavailable,
            },
            Error::Client(_) => Code::Internal,
        }
    }

    /// Database and storage text stays in the log: a client learns what
    /// failed and where to look.
    fn client_message(&self) -> String {
        let code = self.code();
        match self {
            Error::Database { operation, .. } if code == Code::Unavailable => format!(
                "the catalog database is unavailable during {operation}; retry later, and see the catalog server's log if it persists"
            ),
            Error::Database { operation, .. } => format!(
                "the catalog database failed during {operation}; see the catalog server's log"
            ),
            Error::Corrupt { name, .. } => format!(
                "the manifest of dataset {name:?} could not be read; see the catalog server's log"
            ),
            Error::Migrate(_) | Error::InvalidUrl { .. } | Error::CreateFolder { .. } => {
                "the catalog is misconfigured; see the catalog server's log".to_owned()
            }
            Error::Storage { operation, status } => match status.code() {
                c if lakehouse_shared::status::is_caller_error(c) => {
                    format!("storage refused to {operation}: {}", status.message())
                }
                _ => format!(
                    "storage could not {operation} (it may be unreachable); retry later, and see ListErrors on the storage service"
                ),
            },
            Error::Client(_) => {
                "the catalog's storage address is invalid; see the catalog server's log".to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_text_never_reaches_clients() {
        let status = Status::from(Error::Database {
            operation: "commit",
            source: sqlx::Error::Protocol("SELECT secret FROM x".into()),
        });
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"), "{}", status.message());
        let status = Status::from(Error::Database {
            operation: "commit",
            source: sqlx::Error::PoolTimedOut,
        });
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn conflicts_are_aborted() {
        let status = Status::from(Error::VersionConflict {
            name: "a".into(),
            expected: 1,
            actual: 2,
        });
        assert_eq!(status.code(), Code::Aborted);
        assert!(status.message().contains("version 2"));
    }
}
