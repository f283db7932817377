//! The ingest service's domain object: starts ingests as tasks of their own
//! (so a client that goes away cancels them cleanly instead of dropping them
//! mid-write), bounds how many run at once, and keeps their history.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use lakehouse_shared::secrets::SecretsProvider;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::IngestConfig;
use crate::error::{Error, Result};
use crate::file_ingest::{self, FileRequest};
use crate::pipeline::{self, Context, Target};
use crate::postgres_ingest::{self, PostgresRequest, ReadOptions};
use crate::registry::{IngestRecord, Progress, ProgressSnapshot, Registry, State};

/// How often a running IngestPostgres streams a progress event.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// One event of an IngestPostgres stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// Still running.
    Progress {
        /// The ingest.
        ingest_id: String,
        /// Counters.
        progress: ProgressSnapshot,
    },
    /// Finished successfully; the last event.
    Finished(IngestRecord),
}

/// The ingest service.
#[derive(Debug)]
pub struct Ingestor {
    config: IngestConfig,
    secrets: Arc<dyn SecretsProvider>,
    ctx: Context,
    registry: Registry,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Ingestor {
    /// A service over the given clients.
    pub fn new(config: IngestConfig, secrets: Arc<dyn SecretsProvider>, ctx: Context) -> Self {
        Self {
            registry: Registry::new(usize::try_from(config.history).unwrap_or(usize::MAX)),
            permits: Arc::new(Semaphore::new(
                usize::try_from(config.max_concurrent).unwrap_or(1),
            )),
            config,
            secrets,
            ctx,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            batch_rows: usize::try_from(self.config.batch_rows).unwrap_or(16_384),
            batch_bytes: usize::try_from(self.config.batch_bytes).unwrap_or(16 << 20),
            connect_timeout: self.config.connect_timeout,
            max_parallelism: self.config.max_parallelism,
        }
    }

    /// The history.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts a PostgreSQL ingest; the receiver yields progress, then the
    /// finished ingest or the error. Dropping the receiver cancels it.
    pub fn ingest_postgres(
        self: &Arc<Self>,
        request: PostgresRequest,
    ) -> Result<mpsc::Receiver<Result<Event>>> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        pipeline::validate_dataset(&request.target.dataset)?;
        // DSN and secret problems are the caller's to fix: answer at once.
        let dsn = postgres_ingest::resolve_dsn(&request, self.secrets.as_ref())?;
        let progress = Arc::new(Progress::default());
        let target = request.target.clone();
        self.registry
            .start(new_record(&target, dsn.redacted()), progress.clone());
        let (events, receiver) = mpsc::channel(16);
        let this = self.clone();
        // The task runs under a child of the RPC's span, so every call it
        // makes to storage and the catalog joins the caller's trace: one
        // ingest, one trace.
        let span = tracing::info_span!("ingest_postgres", ingest_id = %target.ingest_id);
        self.tasks.spawn(async move {
            let cancel = this.shutdown.child_token();
            let work = async {
                let _permit = this.permit(&cancel).await?;
                postgres_ingest::run(
                    &this.ctx,
                    request,
                    dsn,
                    this.read_options(),
                    progress.clone(),
                    &cancel,
                )
                .await
            };
            tokio::pin!(work);
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            let result = loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = ticker.tick() => {
                        // A slow reader misses progress events, not data.
                        let _ = events.try_send(Ok(Event::Progress {
                            ingest_id: target.ingest_id.clone(),
                            progress: progress.snapshot(),
                        }));
                    }
                    _ = events.closed(), if !cancel.is_cancelled() => {
                        tracing::info!(ingest_id = %target.ingest_id, "client went away; cancelling the ingest");
                        cancel.cancel();
                    }
                }
            };
            let record = this.conclude(&target, "IngestPostgres", result).await;
            let _ = events
                .send(match record {
                    Ok(record) => Ok(Event::Finished(record)),
                    Err(error) => Err(error),
                })
                .await;
        }.instrument(span));
        Ok(receiver)
    }

    /// Runs a file ingest over `chunks` to its end.
    pub async fn ingest_file<S>(
        self: &Arc<Self>,
        request: FileRequest,
        chunks: S,
    ) -> Result<IngestRecord>
    where
        S: Stream<Item = Result<bytes::Bytes>> + Send + Unpin + 'static,
    {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        pipeline::validate_dataset(&request.target.dataset)?;
        let progress = Arc::new(Progress::default());
        let target = request.target.clone();
        self.registry.start(
            new_record(&target, request.file_name.clone()),
            progress.clone(),
        );
        let (done, outcome) = oneshot::channel();
        let cancel = self.shutdown.child_token();
        // The RPC handler is dropped when the client goes away; the guard
        // then cancels the task, which cleans up instead of vanishing.
        let guard = cancel.clone().drop_guard();
        let this = self.clone();
        let span = tracing::info_span!("ingest_file", ingest_id = %target.ingest_id);
        self.tasks.spawn(
            async move {
                let result = async {
                    let _permit = this.permit(&cancel).await?;
                    file_ingest::run(
                        &this.ctx,
                        request,
                        chunks,
                        this.file_options(),
                        progress,
                        &cancel,
                    )
                    .await
                }
                .await;
                let record = this.conclude(&target, "IngestFile", result).await;
                let _ = done.send(record);
            }
            .instrument(span),
        );
        let record = outcome
            .await
            .map_err(|_| Error::Internal("the ingest task ended without an outcome".to_owned()))?;
        guard.disarm();
        record
    }

    fn file_options(&self) -> file_ingest::FileOptions {
        file_ingest::FileOptions {
            batch_rows: usize::try_from(self.config.batch_rows).unwrap_or(16_384),
            max_upload_bytes: self.config.max_upload_bytes,
        }
    }

    async fn permit(
        &self,
        cancel: &CancellationToken,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.map_err(|_| Error::ShuttingDown),
            _ = cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    /// Records the outcome, journals failures, and returns the record.
    async fn conclude(
        &self,
        target: &Target,
        operation: &str,
        result: Result<pipeline::Committed>,
    ) -> Result<IngestRecord> {
        let finished = Utc::now();
        match result {
            Ok(committed) => {
                self.registry.finish(&target.ingest_id, |r| {
                    r.state = State::Succeeded;
                    r.finish_time = Some(finished);
                    r.dataset_version = committed.version;
                });
                let record = self
                    .registry
                    .get(&target.ingest_id)
                    .ok_or_else(|| Error::Internal("the ingest left the history".to_owned()))?;
                tracing::info!(
                    ingest_id = %record.id,
                    dataset = %record.dataset,
                    rows = record.rows,
                    bytes = record.bytes,
                    parts = record.parts,
                    version = record.dataset_version,
                    "ingest committed"
                );
                Ok(record)
            }
            Err(error) => {
                let state = if matches!(error, Error::Cancelled) {
                    State::Cancelled
                } else {
                    State::Failed
                };
                let message = error.client_message();
                self.registry.finish(&target.ingest_id, |r| {
                    r.state = state;
                    r.finish_time = Some(finished);
                    r.error = message.clone();
                });
                tracing::warn!(ingest_id = %target.ingest_id, dataset = %target.dataset, error = %message, "ingest failed; the dataset is unchanged");
                pipeline::journal_failure(
                    &self.ctx.storage,
                    operation,
                    &target.bucket,
                    &crate::parquet_parts::ingest_prefix(&target.dataset, &target.ingest_id),
                    &error,
                )
                .await;
                Err(error)
            }
        }
    }

    /// Cancels running ingests (each cleans up) and waits for them, at
    /// most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.permits.close();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "ingests still cleaning up at shutdown; their parts stay under their ingest prefixes"
            );
        }
    }
}

fn new_record(target: &Target, source: String) -> IngestRecord {
    IngestRecord {
        id: target.ingest_id.clone(),
        dataset: target.dataset.clone(),
        state: State::Running,
        source,
        rows: 0,
        bytes: 0,
        parts: 0,
        start_time: Utc::now(),
        finish_time: None,
        error: String::new(),
        dataset_version: 0,
    }
}
