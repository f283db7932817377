//! The ingest service's domain object: starts ingests as tasks of their own
//! (so a client that goes away cancels them cleanly instead of dropping them
//! mid-write), bounds how many run at once, keeps their history (journaled,
//! so it survives a restart), cancels them on request and replays them by
//! request id.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use lakehouse_shared::request_id::RequestLog;
use lakehouse_shared::secrets::SecretsProvider;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::IngestConfig;
use crate::error::{Error, Result};
use crate::file_ingest::{self, FileRequest};
use crate::history::History;
use crate::pipeline::{self, Context, Target};
use crate::postgres_ingest::{self, PostgresRequest, ReadOptions};
use crate::registry::{
    CancelOutcome, Failure, IngestRecord, Progress, ProgressSnapshot, Registry, State,
};
use crate::sweeper::{self, SweepOptions, SweepReport};
use lakehouse_shared::status::StatusError as _;

/// How long a request with a request_id waits for the history to load
/// before it is refused (so a retry can never run an ingest twice because
/// the first one's record was not read back yet).
const HISTORY_WAIT: Duration = Duration::from_secs(15);

/// How often a running IngestPostgres streams a progress event.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// SweepOrphans results kept for replay by request id.
const SWEEPS_REMEMBERED: usize = 1024;

/// One event of an IngestPostgres stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// What was started; the first event.
    Started {
        /// The ingest.
        ingest_id: String,
        /// Target dataset.
        dataset: String,
        /// True when following an ingest started earlier with the same
        /// request id.
        replayed: bool,
    },
    /// Still running.
    Progress {
        /// The ingest.
        ingest_id: String,
        /// Counters.
        progress: ProgressSnapshot,
    },
    /// Finished, for every outcome; the last event.
    Finished(Box<IngestRecord>),
}

/// The ingest service.
#[derive(Debug)]
pub struct Ingestor {
    config: IngestConfig,
    secrets: Arc<dyn SecretsProvider>,
    ctx: Context,
    registry: Registry,
    history: History,
    history_loaded: tokio::sync::watch::Sender<bool>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Set when the process is stopping: new ingests are refused while the
    /// running ones finish.
    draining: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    /// One orphan sweep at a time (the periodic one and SweepOrphans).
    sweeping: tokio::sync::Mutex<()>,
    /// Recent SweepOrphans results by request id, for retries.
    sweeps: RequestLog<SweepReport>,
}

impl Ingestor {
    /// A service over the given clients, journaling its history to
    /// `history`. Call [`Ingestor::load_history`] once to read it back.
    pub fn new(
        config: IngestConfig,
        secrets: Arc<dyn SecretsProvider>,
        ctx: Context,
        history: History,
    ) -> Self {
        Self {
            registry: Registry::new(usize::try_from(config.history).unwrap_or(usize::MAX)),
            history,
            history_loaded: tokio::sync::watch::Sender::new(false),
            permits: Arc::new(Semaphore::new(
                usize::try_from(config.max_concurrent).unwrap_or(1),
            )),
            config,
            secrets,
            ctx,
            shutdown: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            tasks: TaskTracker::new(),
            sweeping: tokio::sync::Mutex::new(()),
            sweeps: RequestLog::new(SWEEPS_REMEMBERED),
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

    /// Reads the history journal back into the registry, retrying while
    /// storage is unreachable (it may start after this service) until
    /// shutdown. Requests with a request id wait for this.
    pub async fn load_history(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            let limit = usize::try_from(self.config.history).unwrap_or(usize::MAX);
            match self.history.load(limit).await {
                Ok(records) => {
                    let count = records.len();
                    for record in records {
                        self.registry.restore(record);
                    }
                    self.history_loaded.send_replace(true);
                    tracing::info!(ingests = count, "ingest history loaded");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "reading the ingest history failed; retrying");
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Waits (a bounded time) until the journaled history is read back, so
    /// lists, lookups and replays after a restart see earlier ingests.
    pub async fn history_ready(&self) -> Result<()> {
        let mut loaded = self.history_loaded.subscribe();
        tokio::time::timeout(HISTORY_WAIT, loaded.wait_for(|done| *done))
            .await
            .map_err(|_| Error::HistoryNotLoaded)?
            .map_err(|_| Error::HistoryNotLoaded)?;
        Ok(())
    }

    /// The running or committed ingest a retry with `request_id` follows.
    async fn replay(&self, request_id: &str) -> Result<Option<IngestRecord>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        self.history_ready().await?;
        Ok(self.registry.by_request_id(request_id))
    }

    /// Removes the parts of ingests that died without committing (see
    /// [`crate::sweeper`]); `grace` overrides the configured one. Waits for
    /// the history, which says which ingests committed.
    ///
    /// With a `request_id`, a retry of a recent sweep returns its result:
    /// checked again once this sweep's turn comes, so a retry sent while
    /// the first call still runs waits for it and replays it.
    pub async fn sweep_orphans(
        &self,
        grace: Option<Duration>,
        dry_run: bool,
        request_id: Option<String>,
    ) -> Result<SweepReport> {
        let key = request_id.map(|id| format!("sweep/{id}"));
        let recorded = || key.as_deref().and_then(|k| self.sweeps.get(k));
        if let Some(report) = recorded() {
            return Ok(report);
        }
        self.history_ready().await?;
        let _one_at_a_time = self.sweeping.lock().await;
        if let Some(report) = recorded() {
            return Ok(report);
        }
        let report = sweeper::sweep(
            &self.ctx,
            &self.registry,
            &self.history,
            SweepOptions {
                grace: grace.unwrap_or(self.config.orphan_grace),
                dry_run,
            },
        )
        .await?;
        if let Some(key) = key {
            self.sweeps.record(key, report.clone());
        }
        Ok(report)
    }

    /// Sweeps orphans every `interval` until shutdown, off the request
    /// path. A failed round is logged and the next one tries again.
    pub async fn sweep_periodically(&self, interval: Duration) {
        lakehouse_shared::periodic::every(interval, &self.shutdown, None, || async move {
            if let Err(error) = self.sweep_orphans(None, false, None).await {
                tracing::warn!(%error, "the periodic orphan sweep failed; the next one tries again");
            }
        })
        .await;
    }

    /// Tells a running ingest to stop.
    pub fn cancel(&self, ingest_id: &str) -> Result<CancelOutcome> {
        self.registry
            .cancel(ingest_id)
            .ok_or_else(|| Error::NotFound(ingest_id.to_owned()))
    }

    /// Streams the ingest `record` (started by an earlier request with the
    /// same request id) to its end.
    fn follow(self: &Arc<Self>, record: IngestRecord) -> mpsc::Receiver<Event> {
        let (events, receiver) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            if events
                .send(Event::Started {
                    ingest_id: id.clone(),
                    dataset: record.dataset.clone(),
                    replayed: true,
                })
                .await
                .is_err()
            {
                return;
            }
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(now) = this.registry.get(&id) else {
                    return;
                };
                if now.state != State::Running {
                    let _ = events.send(Event::Finished(Box::new(now))).await;
                    return;
                }
                if let Some(progress) = this.registry.progress(&id) {
                    let _ = events.try_send(Event::Progress {
                        ingest_id: id.clone(),
                        progress: progress.snapshot(),
                    });
                }
                if events.is_closed() {
                    return;
                }
            }
        });
        receiver
    }

    /// Starts a PostgreSQL ingest; the receiver yields `Started`, progress,
    /// then `Finished` for every outcome. Dropping the receiver cancels it.
    /// A retry with the request id of a running or committed ingest follows
    /// that one instead.
    pub async fn ingest_postgres(
        self: &Arc<Self>,
        request: PostgresRequest,
    ) -> Result<mpsc::Receiver<Event>> {
        if self.stopping() {
            return Err(Error::ShuttingDown);
        }
        pipeline::validate_dataset(&request.target.dataset)?;
        if let Some(earlier) = self.replay(&request.target.request_id).await? {
            return Ok(self.follow(earlier));
        }
        // DSN and secret problems are the caller's to fix: answer at once.
        let dsn = postgres_ingest::resolve_dsn(&request, self.secrets.as_ref())?;
        let progress = Arc::new(Progress::default());
        let target = request.target.clone();
        let cancel = self.shutdown.child_token();
        let record = new_record(&target, dsn.redacted());
        self.registry
            .start(record.clone(), progress.clone(), cancel.clone());
        self.history.record(record).await;
        let (events, receiver) = mpsc::channel(16);
        let _ = events.try_send(Event::Started {
            ingest_id: target.ingest_id.clone(),
            dataset: target.dataset.clone(),
            replayed: false,
        });
        let this = self.clone();
        // The task runs under a child of the RPC's span, so every call it
        // makes to storage and the catalog joins the caller's trace: one
        // ingest, one trace.
        let span = tracing::info_span!("ingest_postgres", ingest_id = %target.ingest_id);
        self.tasks.spawn(async move {
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
                        let _ = events.try_send(Event::Progress {
                            ingest_id: target.ingest_id.clone(),
                            progress: progress.snapshot(),
                        });
                    }
                    _ = events.closed(), if !cancel.is_cancelled() => {
                        tracing::info!(ingest_id = %target.ingest_id, "client went away; cancelling the ingest");
                        cancel.cancel();
                    }
                }
            };
            let (record, _) = this.conclude(&target, "IngestPostgres", result).await;
            let _ = events.send(Event::Finished(Box::new(record))).await;
        }.instrument(span));
        Ok(receiver)
    }

    /// Runs a file ingest over `chunks` to its end. A retry with the
    /// request id of a committed upload returns it without reading `chunks`.
    pub async fn ingest_file<S>(
        self: &Arc<Self>,
        request: FileRequest,
        chunks: S,
    ) -> Result<IngestRecord>
    where
        S: Stream<Item = Result<bytes::Bytes>> + Send + Unpin + 'static,
    {
        if self.stopping() {
            return Err(Error::ShuttingDown);
        }
        pipeline::validate_dataset(&request.target.dataset)?;
        if let Some(earlier) = self.replay(&request.target.request_id).await? {
            let mut events = self.follow(earlier);
            while let Some(event) = events.recv().await {
                if let Event::Finished(record) = event {
                    return Ok(*record);
                }
            }
            return Err(Error::ShuttingDown);
        }
        let progress = Arc::new(Progress::default());
        let target = request.target.clone();
        let cancel = self.shutdown.child_token();
        let record = new_record(&target, request.file_name.clone());
        self.registry
            .start(record.clone(), progress.clone(), cancel.clone());
        self.history.record(record).await;
        let (done, outcome) = oneshot::channel();
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
                let (record, error) = this.conclude(&target, "IngestFile", result).await;
                let _ = done.send(match error {
                    Some(error) => Err(error),
                    None => Ok(record),
                });
            }
            .instrument(span),
        );
        let record = outcome.await.map_err(|_| Error::ShuttingDown)?;
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

    /// Records the outcome in the history (and journals failures); returns
    /// the finished record and, for a failure, the error.
    async fn conclude(
        &self,
        target: &Target,
        operation: &str,
        result: Result<pipeline::Committed>,
    ) -> (IngestRecord, Option<Error>) {
        let finished = Utc::now();
        let (record, error) = match result {
            Ok(committed) => {
                let record = self.registry.finish(&target.ingest_id, |r| {
                    r.state = State::Succeeded;
                    r.finish_time = Some(finished);
                    r.dataset_version = committed.version;
                    r.bucket = committed.bucket.clone();
                    r.split_column = committed.split_column.clone();
                });
                tracing::info!(
                    ingest_id = %target.ingest_id,
                    dataset = %target.dataset,
                    version = committed.version,
                    "ingest committed"
                );
                (record, None)
            }
            Err(error) => {
                let state = if matches!(error, Error::Cancelled) {
                    State::Cancelled
                } else {
                    State::Failed
                };
                let message = error.client_message();
                let info = error.error_info();
                let failure = Failure {
                    code: error.code() as i32,
                    reason: info.reason,
                    metadata: info.metadata.into_iter().collect(),
                };
                let record = self.registry.finish(&target.ingest_id, |r| {
                    r.state = state;
                    r.finish_time = Some(finished);
                    r.error = message.clone();
                    r.failure = Some(failure);
                });
                tracing::warn!(ingest_id = %target.ingest_id, dataset = %target.dataset, error = %message, "ingest failed; the dataset is unchanged");
                pipeline::journal_failure(
                    &self.ctx.storage,
                    operation,
                    &target.bucket,
                    &lakehouse_shared::ingest_id::ingest_prefix(&target.dataset, &target.ingest_id),
                    &error,
                )
                .await;
                (record, Some(error))
            }
        };
        // The registry holds every running ingest until it finishes, so the
        // record is there; the fallback only keeps the types total.
        let record = record.unwrap_or_else(|| new_record(target, String::new()));
        self.history.record(record.clone()).await;
        (record, error)
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled() || self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The first step of a graceful stop, while the server still answers
    /// (in `serve all` the running ingests still need storage and the
    /// catalog, over this very server): refuses new ingests and waits, at
    /// most `grace`, for the running ones to finish and commit. Whatever
    /// still runs afterwards is cancelled by [`Ingestor::shutdown`].
    pub async fn drain(&self, grace: Duration) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let running = self.tasks.len();
        if running == 0 {
            return;
        }
        tracing::info!(running, ?grace, "stopping: letting running ingests finish");
        let finished = tokio::time::timeout(grace, async {
            while !self.tasks.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                running = self.tasks.len(),
                "ingests still running after the grace period; they are cancelled and commit nothing"
            );
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
        bucket: target.bucket.clone(),
        request_id: target.request_id.clone(),
        state: State::Running,
        source,
        rows: 0,
        bytes: 0,
        parts: 0,
        start_time: Utc::now(),
        finish_time: None,
        error: String::new(),
        failure: None,
        dataset_version: 0,
        split_column: String::new(),
    }
}
