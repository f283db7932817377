use lakehouse_shared::names::InvalidName;
use lakehouse_shared::paging::{NegativePageSize, PageTokenError};
use lakehouse_shared::request_id::InvalidRequestId;

mod status;

/// Errors of the vector service: one variant per cause. `grpc` maps each to
/// a status code and a stable `ErrorInfo` reason; storage and catalog text
/// is passed on only where it is already meant for clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An index, dataset or eval set name breaks the naming rule.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),

    /// A request field is out of range or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// The request id is not acceptable.
    #[error(transparent)]
    InvalidRequestId(#[from] InvalidRequestId),

    /// The page token is not usable for this request.
    #[error(transparent)]
    PageToken(#[from] PageTokenError),

    /// The page size is negative.
    #[error(transparent)]
    PageSize(#[from] NegativePageSize),

    /// No index has this name.
    #[error("index {name:?} not found; ListIndexes shows the existing ones")]
    IndexNotFound {
        /// The name.
        name: String,
    },

    /// CreateIndex found the name taken.
    #[error(
        "index {name:?} already exists; get it, rebuild it with RebuildIndex, or delete it first"
    )]
    IndexExists {
        /// The name.
        name: String,
    },

    /// The index has no such generation.
    #[error("index {index:?} has no generation {generation}; ListGenerations shows them")]
    GenerationNotFound {
        /// The index.
        index: String,
        /// The generation asked for.
        generation: u64,
    },

    /// The index has no searchable generation yet.
    #[error("index {index:?} is {state}, not searchable yet; {hint}")]
    IndexNotReady {
        /// The index.
        index: String,
        /// Its state, such as "still building".
        state: &'static str,
        /// What to do.
        hint: &'static str,
    },

    /// The index's record cannot be read: it can only be listed and deleted.
    #[error(
        "index {index:?} is damaged: {reason}; RepairIndex rebuilds its record from its generations (or loads it again), DeleteIndex removes it with its files"
    )]
    IndexDamaged {
        /// The index.
        index: String,
        /// Why its record cannot be read.
        reason: String,
    },

    /// RepairIndex on an index whose record is readable.
    #[error("index {index:?} is not damaged; RepairIndex only rebuilds an unreadable record")]
    NotDamaged {
        /// The index.
        index: String,
    },

    /// RepairIndex found nothing to rebuild the record from.
    #[error("index {index:?} cannot be repaired: {reason}; DeleteIndex removes it")]
    Unrepairable {
        /// The index.
        index: String,
        /// Why.
        reason: String,
    },

    /// The index's active generation cannot be loaded (damaged files, or
    /// storage unreachable at start).
    #[error(
        "index {index:?} cannot be searched: {reason}; see ListErrors, then RebuildIndex or PromoteGeneration to a READY generation"
    )]
    IndexUnavailable {
        /// The index.
        index: String,
        /// Why.
        reason: String,
    },

    /// The generation is not in a state that allows the operation.
    #[error("generation {generation} of index {index:?} is {state}; {hint}")]
    GenerationState {
        /// The index.
        index: String,
        /// The generation.
        generation: u64,
        /// Its state.
        state: &'static str,
        /// What the operation needs.
        hint: &'static str,
    },

    /// Another promoter won: the active generation is not the expected one.
    #[error(
        "index {index:?} has generation {actual} active, not the expected {expected}; nothing was changed: get the index and decide again"
    )]
    ActiveGenerationMismatch {
        /// The index.
        index: String,
        /// What the caller expected.
        expected: u64,
        /// What is active.
        actual: u64,
    },

    /// Rollback with no earlier active generation to return to.
    #[error("index {index:?} has no earlier active generation to roll back to")]
    NoPreviousGeneration {
        /// The index.
        index: String,
    },

    /// A query vector of the wrong length.
    #[error("query vector has {got} dimensions; index {index:?} has {expected}")]
    WrongDimensions {
        /// The index.
        index: String,
        /// The index's dimensions.
        expected: usize,
        /// The query's.
        got: usize,
    },

    /// A payload column the index does not keep.
    #[error("index {index:?} keeps no payload column {column:?}; it keeps {available:?}")]
    UnknownPayloadColumn {
        /// The index.
        index: String,
        /// The column asked for.
        column: String,
        /// The columns it keeps.
        available: Vec<String>,
    },

    /// The catalog has no such dataset.
    #[error("dataset {dataset:?} not found in the catalog")]
    DatasetNotFound {
        /// The dataset.
        dataset: String,
    },

    /// The dataset has no such column.
    #[error("dataset {dataset:?} has no column {column:?}; its columns are {available:?}")]
    ColumnNotFound {
        /// The dataset.
        dataset: String,
        /// The column.
        column: String,
        /// Its columns.
        available: Vec<String>,
    },

    /// A column has a type the index cannot use.
    #[error("column {column:?} of dataset {dataset:?} is {found}; {expected} is needed")]
    ColumnType {
        /// The dataset.
        dataset: String,
        /// The column.
        column: String,
        /// Its Arrow type.
        found: String,
        /// What the role needs.
        expected: &'static str,
    },

    /// A row's vector or id cannot be indexed.
    #[error("dataset {dataset:?} row {row}: {problem}; fix or drop the row, then rebuild")]
    BadRow {
        /// The dataset.
        dataset: String,
        /// 0-based row number across the dataset's files in catalog order.
        row: u64,
        /// What is wrong.
        problem: String,
    },

    /// The dataset has no rows.
    #[error("dataset {dataset:?} has no rows to index")]
    EmptyDataset {
        /// The dataset.
        dataset: String,
    },

    /// Loading would exceed the cache's memory budget.
    #[error(
        "embeddings of dataset {dataset:?} need {needed} bytes, more than the cache budget of {budget} bytes (--vector-cache-bytes); raise the budget or evict other entries"
    )]
    CacheBudget {
        /// The dataset.
        dataset: String,
        /// Bytes the load needs.
        needed: u64,
        /// The budget.
        budget: u64,
    },

    /// The catalog answered with an error (its message is meant for clients).
    #[error("catalog {operation} failed: {}", status.message())]
    Catalog {
        /// What was being done.
        operation: &'static str,
        /// The catalog's answer.
        status: Box<tonic::Status>,
    },

    /// Reading or writing through the storage service failed.
    #[error("storage {operation} of {key} failed: {source}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The object key.
        key: String,
        /// The object store error.
        source: object_store::Error,
    },

    /// A dataset file is not readable Parquet.
    #[error("dataset file {key} is not readable Parquet: {source}")]
    Parquet {
        /// The object key.
        key: String,
        /// The decoder's error.
        source: parquet::errors::ParquetError,
    },

    /// Converting a dataset column failed.
    #[error("dataset file {key}: {source}")]
    Arrow {
        /// The object key.
        key: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },

    /// A stored generation or index record is damaged.
    #[error("stored {what} {key} is damaged: {reason}")]
    Corrupt {
        /// "graph", "rows" or "index record".
        what: &'static str,
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The build was cancelled.
    #[error("the build of generation {generation} of index {index:?} was cancelled")]
    Cancelled {
        /// The index.
        index: String,
        /// The generation.
        generation: u64,
    },

    /// A build ended without a generation (recorded earlier).
    #[error("the build of generation {generation} of index {index:?} failed: {reason}")]
    BuildFailed {
        /// The index.
        index: String,
        /// The generation.
        generation: u64,
        /// The recorded reason.
        reason: String,
    },

    /// A recorded failure, replayed for a retried request: the same code,
    /// reason, metadata and message as the original answer.
    #[error("{message}")]
    Replayed {
        /// The original message.
        message: String,
        /// The original code, reason and metadata.
        failure: RecordedFailure,
    },

    /// The service is still loading its persisted indexes.
    #[error("the vector service is loading its indexes; retry in a moment")]
    Loading,

    /// The answer would exceed the vector service's message limit.
    #[error(
        "the answer would be {bytes} bytes, past the message limit of {limit} bytes (--vector-max-message-bytes); ask for fewer queries, a smaller k or fewer payload columns per call"
    )]
    ResponseTooLarge {
        /// Encoded size of the answer.
        bytes: u64,
        /// The limit.
        limit: u64,
    },

    /// The process is stopping: no new build or trial starts.
    #[error("the vector service is shutting down; start the build again once it is back")]
    ShuttingDown,

    /// A filter compares a column with a value of another type, or the
    /// column's type cannot be filtered on.
    #[error("filter on column {column:?}: {reason}")]
    FilterType {
        /// The column.
        column: String,
        /// What does not fit and what would.
        reason: String,
    },

    /// A search by id names an id the generation does not hold.
    #[error("index {index:?} has no row with id {id:?} (generation {generation})")]
    RowNotFound {
        /// The index.
        index: String,
        /// The id asked for.
        id: String,
        /// The generation searched.
        generation: u64,
    },

    /// No eval set has this name.
    #[error("eval set {name:?} not found; ListEvalSets shows the existing ones")]
    EvalSetNotFound {
        /// The name.
        name: String,
    },

    /// CreateEvalSet found the name taken.
    #[error("eval set {name:?} already exists; use it, or delete it first")]
    EvalSetExists {
        /// The name.
        name: String,
    },

    /// The eval set was made for another index.
    #[error("eval set {eval_set:?} belongs to index {belongs_to:?}, not {index:?}")]
    EvalSetOtherIndex {
        /// The eval set.
        eval_set: String,
        /// The index asked about.
        index: String,
        /// Its index.
        belongs_to: String,
    },

    /// The index's vectors moved on since the eval set's truth was computed.
    #[error(
        "eval set {eval_set:?} has ground truth for dataset version {eval_version}, but the active generation of index {index:?} is built from version {active_version}; create a new eval set"
    )]
    EvalSetStale {
        /// The eval set.
        eval_set: String,
        /// The index.
        index: String,
        /// Version the truth is for.
        eval_version: u64,
        /// Version of the active generation.
        active_version: u64,
    },

    /// No running or recent trial run has this id.
    #[error("no trial run {run_id:?}: it never existed or ended long ago")]
    TrialRunNotFound {
        /// The run id.
        run_id: String,
    },

    /// The index has no such trial.
    #[error("index {index:?} has no trial {trial_id:?}; ListTrials shows them")]
    TrialNotFound {
        /// The index.
        index: String,
        /// The trial id.
        trial_id: String,
    },

    /// No journaled trial reaches the recall floor.
    #[error("{}", no_trial_message(index, *min_recall, *best_recall, *considered))]
    NoTrialMeetsRecall {
        /// The index.
        index: String,
        /// The floor asked for.
        min_recall: f64,
        /// Highest recall among the trials considered.
        best_recall: Option<f64>,
        /// Trials considered.
        considered: usize,
    },

    /// A trial's build would exceed the trial memory budget.
    #[error(
        "the trial build needs about {needed} bytes, more than the trial budget of {budget} bytes (--vector-trial-memory-bytes); use a smaller M or raise the budget"
    )]
    TrialMemoryBudget {
        /// Estimated bytes.
        needed: u64,
        /// The budget.
        budget: u64,
    },

    /// The trial run was cancelled.
    #[error("trial run {run_id:?} was cancelled")]
    TrialRunCancelled {
        /// The run.
        run_id: String,
    },

    /// Writing the trial journal failed.
    #[error("cannot write the trial journal: {0}")]
    Journal(lakehouse_shared::Error),

    /// Building an eval set's columns failed.
    #[error("cannot encode the eval set: {0}")]
    EvalSetEncode(arrow::error::ArrowError),

    /// Writing an eval set's Parquet failed.
    #[error("cannot write the eval set as Parquet: {0}")]
    EvalSetParquet(parquet::errors::ParquetError),

    /// The build thread pool could not start.
    #[error("cannot start build threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),

    /// A peer address is not valid.
    #[error(transparent)]
    Client(#[from] lakehouse_client::Error),

    /// A worker task panicked or was dropped; the details are in the log.
    #[error("a vector worker task failed unexpectedly during {0}")]
    Task(&'static str),
}

fn no_trial_message(index: &str, min: f64, best: Option<f64>, considered: usize) -> String {
    match best {
        Some(best) => format!(
            "no trial of index {index:?} reaches recall {min}: the best of {considered} trials has {best:.4}; run trials with larger ef_search, M or ef_construction (or TuneIndex)"
        ),
        None => {
            format!("index {index:?} has no trials to choose from; run RunTrial or TuneIndex first")
        }
    }
}

/// Result with the vector [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn storage(
        operation: &'static str,
        key: impl Into<String>,
    ) -> impl FnOnce(object_store::Error) -> Self {
        let key = key.into();
        move |source| Self::Storage {
            operation,
            key,
            source,
        }
    }

    pub(crate) fn catalog(operation: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Catalog {
            operation,
            status: Box::new(status),
        }
    }
}

/// A failure as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedFailure {
    /// The gRPC code, as a number.
    pub code: i32,
    /// The ErrorInfo reason, such as `COLUMN_TYPE`.
    pub reason: String,
    /// The ErrorInfo metadata.
    pub metadata: std::collections::BTreeMap<String, String>,
}
