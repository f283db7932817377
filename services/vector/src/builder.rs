//! Builds: a generation is reserved in the registry, then loaded, inserted
//! and persisted here (slots, the thread pool, progress, cancel), and its
//! outcome handed back to the registry's state machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::embeddings::{self, DataFile, LoadSpec};
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::{self, BuildControl, HnswParams};
use crate::limits::LEVEL_SEED;
use crate::progress::{BuildEvent, BuildTicket, Phase, Progress, RunningBuild};
use crate::record::{GenerationRecord, GenerationState};
use crate::registry::{IndexEntry, Outcome};
use crate::service::VectorService;

/// How often a build reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

impl VectorService {
    /// A stream for a build started earlier: its live events, or its
    /// recorded outcome.
    pub(crate) fn replay(&self, entry: &Arc<IndexEntry>, generation: u64) -> BuildTicket {
        let name = entry.name().to_owned();
        let running = entry.builds.lock().get(&generation).cloned();
        let events = match running {
            Some(build) => build.events.subscribe(),
            None => {
                let outcome = entry.with_record(|record| match record.generation(generation) {
                    Some(g) if g.state == GenerationState::Ready => Ok(()),
                    Some(g) if g.state == GenerationState::Cancelled => {
                        Err(Arc::new(Error::Cancelled {
                            index: name.clone(),
                            generation,
                        }))
                    }
                    Some(g) => Err(Arc::new(match &g.failure {
                        // Answered as the build itself was.
                        Some(failure) => Error::Replayed {
                            message: g.error.clone().unwrap_or_default(),
                            failure: failure.clone(),
                        },
                        None => Error::BuildFailed {
                            index: name.clone(),
                            generation,
                            reason: g.error.clone().unwrap_or_default(),
                        },
                    })),
                    None => Err(Arc::new(Error::GenerationNotFound {
                        index: name.clone(),
                        generation,
                    })),
                });
                watch::Sender::new(BuildEvent::Finished(outcome)).subscribe()
            }
        };
        BuildTicket {
            index: name,
            generation,
            replayed: true,
            events,
        }
    }

    pub(crate) fn start_build(
        self: &Arc<Self>,
        entry: Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        promote: bool,
    ) -> BuildTicket {
        let build = Arc::new(RunningBuild {
            control: Arc::new(BuildControl::default()),
            events: watch::Sender::new(BuildEvent::Progress(Progress {
                phase: Phase::Queued,
                done: 0,
                total: 0,
                elapsed_ms: 0,
            })),
        });
        entry.builds.lock().insert(generation, build.clone());
        let events = build.events.subscribe();
        let name = entry.name().to_owned();
        // Detached: a client that disconnects does not stop the build; it
        // can be watched with GetIndex / ListGenerations and cancelled.
        let service = self.clone();
        // Detached, but in a span under the request's: the catalog and
        // storage calls of the build join the caller's trace.
        let span = tracing::info_span!("index_build", index = %name, generation);
        tokio::spawn(
            async move {
                service
                    .run_build(entry, generation, params, promote, build)
                    .await;
            }
            .instrument(span),
        );
        BuildTicket {
            index: name,
            generation,
            replayed: false,
            events,
        }
    }

    async fn run_build(
        &self,
        entry: Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        promote: bool,
        build: Arc<RunningBuild>,
    ) {
        let started = Instant::now();
        let name = entry.name().to_owned();
        let built = self
            .build_generation(&entry, generation, params, &build, started)
            .await;
        let build_ms = started.elapsed().as_millis() as u64;
        let (outcome, result) = match built {
            Ok(loaded) => (
                Outcome::Ready {
                    loaded,
                    build_ms,
                    promote,
                },
                Ok(()),
            ),
            Err(error) => (
                Outcome::Ended {
                    state: if matches!(error, Error::Cancelled { .. }) {
                        GenerationState::Cancelled
                    } else {
                        GenerationState::Failed
                    },
                    error: error.to_string(),
                    failure: Some(recorded_failure(&error)),
                    build_ms,
                },
                Err(error),
            ),
        };
        let recorded = self.registry.finish(&entry, generation, outcome).await;
        let result = result.and(recorded);
        entry.builds.lock().remove(&generation);
        match &result {
            Ok(()) => {
                tracing::info!(index = %name, generation, ms = build_ms, "generation ready")
            }
            Err(error) => {
                tracing::warn!(index = %name, generation, %error, "build ended without a generation")
            }
        }
        build
            .events
            .send_replace(BuildEvent::Finished(result.map_err(Arc::new)));
    }

    async fn build_generation(
        &self,
        entry: &Arc<IndexEntry>,
        generation: u64,
        params: HnswParams,
        build: &Arc<RunningBuild>,
        started: Instant,
    ) -> Result<Arc<LoadedGeneration>> {
        let record = entry.record();
        let name = record.name.clone();
        let cancelled = || Error::Cancelled {
            index: name.clone(),
            generation,
        };
        let report = |phase, done, total| {
            build.events.send_replace(BuildEvent::Progress(Progress {
                phase,
                done,
                total,
                elapsed_ms: started.elapsed().as_millis() as u64,
            }));
        };
        let _slot = tokio::select! {
            permit = self.build_slots.clone().acquire_owned() => permit.map_err(|_| Error::Task("build slot"))?,
            () = wait_cancel(&build.control) => return Err(cancelled()),
        };
        let dataset = self.context.dataset(&record.dataset, true).await?;
        let spec = LoadSpec {
            dataset: record.dataset.clone(),
            version: dataset.version,
            vector_column: record.vector_column.clone(),
            row_columns: record.row_columns(),
            normalize: record.metric.normalizes(),
        };
        let files = DataFile::of(&dataset);
        let estimate: u64 = files.iter().map(|f| f.size).sum();
        let rows_loaded = Arc::new(AtomicU64::new(0));
        report(Phase::Loading, 0, dataset.row_count);
        let store = self.context.bucket(&dataset.bucket);
        let load = self.cache().get_or_load(&spec, estimate, || {
            embeddings::load(store, &files, &spec, rows_loaded.clone())
        });
        let embeddings = with_progress(load, &build.control, || {
            report(
                Phase::Loading,
                rows_loaded.load(Ordering::Relaxed),
                dataset.row_count,
            )
        })
        .await
        .ok_or_else(cancelled)??;
        crate::checks::check_unique_ids(&record.dataset, &embeddings.rows)?;

        let total = embeddings.len() as u64;
        report(Phase::Inserting, 0, total);
        let (vectors, dim, metric, pool, control) = (
            embeddings.vectors.clone(),
            embeddings.dim,
            record.metric,
            self.pool.clone(),
            build.control.clone(),
        );
        let insert = tokio::task::spawn_blocking(move || {
            hnsw::build(vectors, dim, metric, params, LEVEL_SEED, &pool, &control)
        });
        let graph = with_progress(insert, &build.control, || {
            report(
                Phase::Inserting,
                build.control.inserted.load(Ordering::Relaxed),
                total,
            )
        })
        .await
        .ok_or_else(cancelled)?
        .map_err(|_| Error::Task("graph build"))?
        .map_err(|_| cancelled())?;

        report(Phase::Persisting, 0, 1);
        self.registry
            .store()
            .write_generation(
                &record,
                generation,
                &graph,
                &embeddings.rows,
                dataset.version,
            )
            .await?;
        if build.control.cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        report(Phase::Persisting, 1, 1);
        Ok(Arc::new(LoadedGeneration {
            generation,
            graph,
            rows: embeddings.rows.clone(),
            dataset_version: dataset.version,
            indexes: Default::default(),
        }))
    }

    /// Tells every running build to stop (the process is stopping); returns
    /// how many were running. Each still records its end (CANCELLED, its
    /// files removed) while storage answers: see `VectorRuntime::drain`.
    pub(crate) fn cancel_builds(&self) -> usize {
        self.registry
            .all()
            .iter()
            .map(|entry| {
                let builds = entry.builds.lock();
                for build in builds.values() {
                    build.control.cancel.store(true, Ordering::Relaxed);
                }
                builds.len()
            })
            .sum()
    }

    /// Builds not yet ended.
    pub(crate) fn running_builds(&self) -> usize {
        self.registry
            .all()
            .iter()
            .map(|entry| entry.builds.lock().len())
            .sum()
    }

    /// Stops a running build.
    pub fn cancel_build(&self, index: &str, generation: u64) -> Result<GenerationRecord> {
        let entry = self.registry.usable(index)?;
        let running = entry.builds.lock().get(&generation).cloned();
        let g = entry
            .with_record(|record| record.generation(generation).cloned())
            .ok_or_else(|| Error::GenerationNotFound {
                index: index.to_owned(),
                generation,
            })?;
        match running {
            Some(build) => {
                build.control.cancel.store(true, Ordering::Relaxed);
                Ok(g)
            }
            // A retried cancel finds the build already stopped: same answer.
            None if g.state == GenerationState::Cancelled => Ok(g),
            None => Err(Error::GenerationState {
                index: index.to_owned(),
                generation,
                state: g.state.name(),
                hint: "only a running build can be cancelled",
            }),
        }
    }
}

async fn wait_cancel(control: &BuildControl) {
    while !control.cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `work`, calling `tick` every [`PROGRESS_EVERY`]; `None` when the
/// build is cancelled first.
async fn with_progress<T>(
    work: impl std::future::Future<Output = T>,
    control: &BuildControl,
    tick: impl Fn(),
) -> Option<T> {
    tokio::pin!(work);
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            _ = every.tick() => {
                if control.cancel.load(Ordering::Relaxed) {
                    return None;
                }
                tick();
            }
        }
    }
}

/// How `error` is answered, kept with the failed generation for replays.
fn recorded_failure(error: &Error) -> crate::error::RecordedFailure {
    use lakehouse_shared::status::StatusError as _;
    let info = error.error_info();
    crate::error::RecordedFailure {
        code: error.code() as i32,
        reason: info.reason,
        metadata: info.metadata,
    }
}
