//! How a vector error becomes a `tonic::Status` (the workspace's one shape,
//! `lakehouse_shared::status::StatusError`): the code by meaning, a stable
//! `ErrorInfo` reason and the values a client needs. The gRPC adapter only
//! converts.

use lakehouse_shared::status::{ErrorInfo, StatusError, to_status};
use tonic::{Code, Status};

use super::Error;

impl StatusError for Error {
    fn code(&self) -> Code {
        match self {
            Error::Replayed { failure, .. } => Code::from(failure.code),
            other => classify(other).0,
        }
    }

    fn error_info(&self) -> ErrorInfo {
        match self {
            Error::Replayed { failure, .. } => {
                (failure.reason.clone(), failure.metadata.clone()).into()
            }
            other => {
                let (_, reason, metadata) = classify(other);
                (reason, metadata).into()
            }
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        to_status(&error)
    }
}

/// The code by meaning, the stable `ErrorInfo` reason and the values a
/// client needs, by variant.
fn classify(error: &Error) -> (Code, &'static str, Vec<(&'static str, String)>) {
    match error {
        Error::InvalidName(e) => (
            Code::InvalidArgument,
            "INVALID_NAME",
            vec![("kind", e.kind.to_owned())],
        ),
        Error::InvalidArgument { field, .. } => (
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            vec![("field", (*field).to_owned())],
        ),
        Error::InvalidRequestId(_) => (Code::InvalidArgument, "INVALID_REQUEST_ID", vec![]),
        Error::PageToken(_) => (Code::InvalidArgument, "INVALID_PAGE_TOKEN", vec![]),
        Error::PageSize(_) => (Code::InvalidArgument, "INVALID_PAGE_SIZE", vec![]),
        Error::IndexNotFound { name } => (
            Code::NotFound,
            "INDEX_NOT_FOUND",
            vec![("index", name.clone())],
        ),
        Error::IndexExists { name } => (
            Code::AlreadyExists,
            "INDEX_EXISTS",
            vec![("index", name.clone())],
        ),
        Error::GenerationNotFound { index, generation } => (
            Code::NotFound,
            "GENERATION_NOT_FOUND",
            vec![
                ("index", index.clone()),
                ("generation", generation.to_string()),
            ],
        ),
        Error::IndexNotReady { index, .. } => (
            Code::FailedPrecondition,
            "INDEX_NOT_READY",
            vec![("index", index.clone())],
        ),
        Error::IndexDamaged { index, .. } => (
            Code::DataLoss,
            "INDEX_DAMAGED",
            vec![("index", index.clone())],
        ),
        Error::NotDamaged { index } => (
            Code::FailedPrecondition,
            "INDEX_NOT_DAMAGED",
            vec![("index", index.clone())],
        ),
        Error::Unrepairable { index, .. } => (
            Code::FailedPrecondition,
            "UNREPAIRABLE",
            vec![("index", index.clone())],
        ),
        Error::IndexUnavailable { index, .. } => (
            Code::FailedPrecondition,
            "INDEX_UNAVAILABLE",
            vec![("index", index.clone())],
        ),
        Error::GenerationState {
            index,
            generation,
            state,
            ..
        } => (
            Code::FailedPrecondition,
            "GENERATION_STATE",
            vec![
                ("index", index.clone()),
                ("generation", generation.to_string()),
                ("state", (*state).to_owned()),
            ],
        ),
        Error::ActiveGenerationMismatch { index, actual, .. } => (
            Code::Aborted,
            "ACTIVE_GENERATION_MISMATCH",
            vec![
                ("index", index.clone()),
                ("active_generation", actual.to_string()),
            ],
        ),
        Error::NoPreviousGeneration { index } => (
            Code::FailedPrecondition,
            "NO_PREVIOUS_GENERATION",
            vec![("index", index.clone())],
        ),
        Error::WrongDimensions { expected, got, .. } => (
            Code::InvalidArgument,
            "WRONG_DIMENSIONS",
            vec![("expected", expected.to_string()), ("got", got.to_string())],
        ),
        Error::UnknownPayloadColumn { column, .. } => (
            Code::InvalidArgument,
            "UNKNOWN_PAYLOAD_COLUMN",
            vec![("column", column.clone())],
        ),
        Error::DatasetNotFound { dataset } => (
            Code::NotFound,
            "DATASET_NOT_FOUND",
            vec![("dataset", dataset.clone())],
        ),
        Error::ColumnNotFound { column, .. } => (
            Code::InvalidArgument,
            "COLUMN_NOT_FOUND",
            vec![("column", column.clone())],
        ),
        Error::ColumnType { column, found, .. } => (
            Code::FailedPrecondition,
            "COLUMN_TYPE",
            vec![("column", column.clone()), ("type", found.clone())],
        ),
        Error::BadRow { row, .. } => (
            Code::FailedPrecondition,
            "BAD_ROW",
            vec![("row", row.to_string())],
        ),
        Error::EmptyDataset { dataset } => (
            Code::FailedPrecondition,
            "EMPTY_DATASET",
            vec![("dataset", dataset.clone())],
        ),
        Error::CacheBudget { needed, budget, .. } => (
            Code::ResourceExhausted,
            "CACHE_BUDGET",
            vec![
                ("needed_bytes", needed.to_string()),
                ("budget_bytes", budget.to_string()),
            ],
        ),
        Error::Catalog { status, .. } => (status.code(), "CATALOG_FAILED", vec![]),
        Error::Storage { key, .. } => (
            Code::Unavailable,
            "STORAGE_FAILED",
            vec![("key", key.clone())],
        ),
        Error::Parquet { key, .. } | Error::Arrow { key, .. } => (
            Code::FailedPrecondition,
            "UNREADABLE_FILE",
            vec![("key", key.clone())],
        ),
        Error::Corrupt { key, .. } => (Code::DataLoss, "CORRUPT", vec![("key", key.clone())]),
        Error::Cancelled { index, generation } => (
            Code::Cancelled,
            "BUILD_CANCELLED",
            vec![
                ("index", index.clone()),
                ("generation", generation.to_string()),
            ],
        ),
        Error::BuildFailed {
            index, generation, ..
        } => (
            Code::FailedPrecondition,
            "BUILD_FAILED",
            vec![
                ("index", index.clone()),
                ("generation", generation.to_string()),
            ],
        ),
        // Answered from its record (StatusError above); not classified.
        Error::Replayed { .. } => (Code::Unknown, "REPLAYED", vec![]),
        Error::Loading => (Code::Unavailable, "LOADING", vec![]),
        Error::ShuttingDown => (Code::Unavailable, "SHUTTING_DOWN", vec![]),
        Error::ResponseTooLarge { bytes, limit } => (
            Code::ResourceExhausted,
            "RESPONSE_TOO_LARGE",
            vec![("bytes", bytes.to_string()), ("limit", limit.to_string())],
        ),
        Error::FilterType { column, .. } => (
            Code::InvalidArgument,
            "FILTER_TYPE_MISMATCH",
            vec![("column", column.clone())],
        ),
        Error::RowNotFound { id, generation, .. } => (
            Code::NotFound,
            "ROW_NOT_FOUND",
            vec![("id", id.clone()), ("generation", generation.to_string())],
        ),
        Error::EvalSetNotFound { name } => (
            Code::NotFound,
            "EVAL_SET_NOT_FOUND",
            vec![("eval_set", name.clone())],
        ),
        Error::EvalSetExists { name } => (
            Code::AlreadyExists,
            "EVAL_SET_EXISTS",
            vec![("eval_set", name.clone())],
        ),
        Error::EvalSetOtherIndex {
            eval_set,
            belongs_to,
            ..
        } => (
            Code::FailedPrecondition,
            "EVAL_SET_OTHER_INDEX",
            vec![
                ("eval_set", eval_set.clone()),
                ("index", belongs_to.clone()),
            ],
        ),
        Error::EvalSetStale {
            eval_set,
            eval_version,
            active_version,
            ..
        } => (
            Code::FailedPrecondition,
            "EVAL_SET_STALE",
            vec![
                ("eval_set", eval_set.clone()),
                ("eval_dataset_version", eval_version.to_string()),
                ("active_dataset_version", active_version.to_string()),
            ],
        ),
        Error::TrialRunNotFound { run_id } => (
            Code::NotFound,
            "TRIAL_RUN_NOT_FOUND",
            vec![("run_id", run_id.clone())],
        ),
        Error::TrialNotFound { trial_id, .. } => (
            Code::NotFound,
            "TRIAL_NOT_FOUND",
            vec![("trial_id", trial_id.clone())],
        ),
        Error::NoTrialMeetsRecall {
            min_recall,
            best_recall,
            considered,
            ..
        } => (
            Code::NotFound,
            "NO_TRIAL_MEETS_RECALL",
            vec![
                ("min_recall", min_recall.to_string()),
                (
                    "best_recall",
                    best_recall.map_or_else(String::new, |r| r.to_string()),
                ),
                ("considered", considered.to_string()),
            ],
        ),
        Error::TrialMemoryBudget { needed, budget } => (
            Code::ResourceExhausted,
            "TRIAL_MEMORY_BUDGET",
            vec![
                ("needed_bytes", needed.to_string()),
                ("budget_bytes", budget.to_string()),
            ],
        ),
        Error::TrialRunCancelled { run_id } => (
            Code::Cancelled,
            "CANCELLED",
            vec![("run_id", run_id.clone())],
        ),
        Error::Journal(_) => (Code::Unavailable, "JOURNAL_UNAVAILABLE", vec![]),
        Error::EvalSetEncode(_) | Error::EvalSetParquet(_) => (Code::Internal, "INTERNAL", vec![]),
        Error::Threads(_) | Error::Client(_) | Error::Task(_) => {
            (Code::Internal, "INTERNAL", vec![])
        }
    }
}
