//! RunTrial: a build on the index's in-memory vectors measured against an
//! eval set for each ef_search of a sweep, every point journaled; runs,
//! their slots, memory checks and cancellation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;

use super::measure::{self, EvalQuery};
use super::record::TrialRecord;
use super::run::{Run, RunOutcome};
use super::service::TrialService;
use super::state::{MAX_SWEEP, NewTrial, Setup, TrialTicket, trial_memory};
use crate::Metric;
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::{self, Graph, HnswParams};
use crate::limits::{LEVEL_SEED, MAX_EF_SEARCH};
use crate::progress::{Phase, Progress};

impl TrialService {
    /// Stops a run; false when it had already ended.
    pub fn cancel_trial_run(&self, run_id: &str) -> Result<bool> {
        let run = self
            .state
            .runs
            .get(run_id)
            .ok_or_else(|| Error::TrialRunNotFound {
                run_id: run_id.to_owned(),
            })?;
        if run.is_finished() {
            return Ok(false);
        }
        run.control.cancel.store(true, Ordering::Relaxed);
        Ok(true)
    }

    pub(super) fn replayed_run(&self, key: Option<&str>) -> Option<TrialTicket> {
        let run_id = self.state.replies.get(key?)?;
        let run = self.state.runs.get(&run_id)?;
        Some(TrialTicket {
            run,
            replayed: true,
        })
    }

    /// Checks an index and eval set for a run and reads the queries.
    pub(super) async fn setup(
        &self,
        index: &str,
        eval_set: &str,
        k: Option<usize>,
    ) -> Result<Setup> {
        let entry = self.registry.usable(index)?;
        let active = entry.active();
        let Some(active) = active else {
            return Err(entry.not_ready());
        };
        let eval = self.get_eval_set(eval_set).await?;
        if eval.index != index {
            return Err(Error::EvalSetOtherIndex {
                eval_set: eval_set.to_owned(),
                index: index.to_owned(),
                belongs_to: eval.index,
            });
        }
        if eval.dataset_version != active.dataset_version
            || eval.dimensions as usize != active.graph.dim()
            || eval.corpus_vectors != active.graph.len() as u64
        {
            return Err(Error::EvalSetStale {
                eval_set: eval_set.to_owned(),
                index: index.to_owned(),
                eval_version: eval.dataset_version,
                active_version: active.dataset_version,
            });
        }
        let k = match k {
            None => eval.k as usize,
            Some(k) if k <= eval.k as usize => k,
            Some(k) => {
                return Err(Error::invalid(
                    "k",
                    format!(
                        "eval set {eval_set:?} has ground truth for k up to {}; got {k}",
                        eval.k
                    ),
                ));
            }
        };
        let queries = Arc::new(self.state.evals.queries(&eval).await?);
        let filter = match &eval.filter {
            None => None,
            Some(filter) => Some(Arc::new(super::eval_ops::bind_filter(
                &entry, &active, index, filter,
            )?)),
        };
        Ok(Setup {
            entry,
            active,
            eval,
            queries,
            k,
            filter,
        })
    }

    pub(super) fn check_trial_memory(
        &self,
        n: usize,
        dim: usize,
        params: HnswParams,
        sample: bool,
    ) -> Result<()> {
        let needed = trial_memory(n, dim, params, sample);
        if needed > self.state.memory_budget {
            return Err(Error::TrialMemoryBudget {
                needed,
                budget: self.state.memory_budget,
            });
        }
        Ok(())
    }

    /// Starts a RunTrial (or replays one with the same request id).
    pub async fn run_trial(self: &Arc<Self>, new: NewTrial) -> Result<TrialTicket> {
        self.context.check_ready()?;
        self.context.check_accepting_work()?;
        let key = new
            .request_id
            .as_ref()
            .map(|id| format!("trial/{}/{id}", new.index));
        if let Some(ticket) = self.replayed_run(key.as_deref()) {
            return Ok(ticket);
        }
        let setup = self.setup(&new.index, &new.eval_set, new.k).await?;
        let sweep = if new.ef_search.is_empty() {
            vec![setup.entry.with_record(|r| r.ef_search)]
        } else {
            new.ef_search.clone()
        };
        if sweep.len() > MAX_SWEEP {
            return Err(Error::invalid(
                "ef_search",
                format!("at most {MAX_SWEEP} values; got {}", sweep.len()),
            ));
        }
        if let Some(bad) = sweep.iter().find(|&&e| e == 0 || e > MAX_EF_SEARCH) {
            return Err(Error::invalid(
                "ef_search",
                format!("each value must be 1 to {MAX_EF_SEARCH}; got {bad}"),
            ));
        }
        self.check_trial_memory(
            setup.active.graph.len(),
            setup.active.graph.dim(),
            new.params,
            false,
        )?;
        let run = self.state.runs.start("trial", &new.index, &new.eval_set);
        if let Some(key) = key {
            self.state.replies.record(key, run.id.clone());
        }
        let service = self.clone();
        let task_run = run.clone();
        tokio::spawn(
            async move {
                let outcome = service
                    .trial_task(&task_run, setup, new.params, sweep, new.keep_generation)
                    .await;
                task_run.finish(outcome);
            }
            .in_current_span(),
        );
        Ok(TrialTicket {
            run,
            replayed: false,
        })
    }

    pub(super) async fn trial_slot(
        &self,
        run: &Run,
        started: Instant,
    ) -> Result<OwnedSemaphorePermit> {
        run.progress(progress(Phase::Queued, 0, 0, started));
        tokio::select! {
            permit = self.state.slots.clone().acquire_owned() => permit.map_err(|_| Error::Task("trial slot")),
            () = wait_cancelled(run) => Err(Error::TrialRunCancelled { run_id: run.id.clone() }),
        }
    }

    /// Builds a graph of `vectors` on the trial pool, reporting progress.
    pub(super) async fn trial_build(
        &self,
        run: &Arc<Run>,
        vectors: Arc<Vec<f32>>,
        dim: usize,
        metric: Metric,
        params: HnswParams,
        started: Instant,
    ) -> Result<(Graph, u64)> {
        let total = (vectors.len() / dim.max(1)) as u64;
        run.control.inserted.store(0, Ordering::Relaxed);
        run.progress(progress(Phase::Inserting, 0, total, started));
        let (pool, control) = (self.state.pool.clone(), run.control.clone());
        let build_started = Instant::now();
        let mut work = tokio::task::spawn_blocking(move || {
            hnsw::build(vectors, dim, metric, params, LEVEL_SEED, &pool, &control)
        });
        let mut every = tokio::time::interval(Duration::from_millis(250));
        let built = loop {
            tokio::select! {
                done = &mut work => break done,
                _ = every.tick() => run.progress(progress(
                    Phase::Inserting,
                    run.control.inserted.load(Ordering::Relaxed),
                    total,
                    started,
                )),
            }
        };
        let graph = built
            .map_err(|_| Error::Task("trial build"))?
            .map_err(|_| Error::TrialRunCancelled {
                run_id: run.id.clone(),
            })?;
        Ok((graph, build_started.elapsed().as_millis() as u64))
    }

    /// One point of a sweep: stops if the run was cancelled, reports
    /// EVALUATING (`step` = point, points, run start), measures.
    pub(super) async fn measure_point(
        &self,
        run: &Run,
        step: (usize, usize, Instant),
        generation: &Arc<LoadedGeneration>,
        scoring: Scoring<'_>,
        ef: u32,
    ) -> Result<measure::Measured> {
        let Scoring { queries, k, filter } = scoring;
        if run.is_cancelled() {
            return Err(Error::TrialRunCancelled {
                run_id: run.id.clone(),
            });
        }
        let (point, points, started) = step;
        run.progress(progress(
            Phase::Evaluating,
            point as u64,
            points as u64,
            started,
        ));
        let (generation, queries) = (generation.clone(), queries.clone());
        let pool = self.state.pool.clone();
        tokio::task::spawn_blocking(move || {
            pool.install(|| {
                measure::measure(&generation, &queries, k, ef as usize, filter.as_deref())
            })
        })
        .await
        .map_err(|_| Error::Task("trial measurement"))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn trial_record(
        &self,
        run: &Run,
        build: &str,
        setup: &Setup,
        generation: &LoadedGeneration,
        params: HnswParams,
        ef: u32,
        measured: measure::Measured,
        build_ms: u64,
    ) -> TrialRecord {
        let n = generation.graph.len();
        let row_bytes = setup.active.rows.get_array_memory_size() as u64
            / setup.active.graph.len().max(1) as u64;
        TrialRecord {
            trial_id: format!("{}.{build}.ef{ef}", run.id),
            run_id: run.id.clone(),
            index: setup.eval.index.clone(),
            eval_set: setup.eval.name.clone(),
            params,
            ef_search: ef,
            k: setup.k as u32,
            recall: measured.recall,
            latency: measured.latency,
            queries_per_second: measured.queries_per_second,
            build_duration_ms: build_ms,
            build_threads: self.state.threads as u32,
            memory_bytes: (generation.graph.links_bytes() + generation.graph.vectors().len() * 4)
                as u64
                + row_bytes * n as u64,
            vector_count: n as u64,
            dataset_version: generation.dataset_version,
            generation: generation.generation,
            create_time: Utc::now(),
        }
    }

    /// Journals a trial, then shows it on the run's stream.
    pub(super) async fn journal_trial(&self, run: &Run, trial: TrialRecord) -> Result<TrialRecord> {
        self.state
            .journal
            .append(&trial.index, std::slice::from_ref(&trial))
            .await?;
        run.trial(trial.clone());
        Ok(trial)
    }

    pub(super) async fn trial_task(
        self: &Arc<Self>,
        run: &Arc<Run>,
        setup: Setup,
        params: HnswParams,
        sweep: Vec<u32>,
        keep: bool,
    ) -> RunOutcome {
        let started = Instant::now();
        let mut trials = Vec::new();
        let result = self
            .trial_steps(run, &setup, params, &sweep, keep, started, &mut trials)
            .await;
        match result {
            Ok(()) => RunOutcome {
                status: Ok(()),
                trials,
                best: None,
                pareto: Vec::new(),
                promoted_generation: 0,
            },
            Err(error) => {
                tracing::warn!(run = %run.id, %error, "trial run ended early");
                RunOutcome::failed(error, trials)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn trial_steps(
        self: &Arc<Self>,
        run: &Arc<Run>,
        setup: &Setup,
        params: HnswParams,
        sweep: &[u32],
        keep: bool,
        started: Instant,
        trials: &mut Vec<TrialRecord>,
    ) -> Result<()> {
        let _slot = self.trial_slot(run, started).await?;
        let graph = &setup.active.graph;
        let (built, build_ms) = self
            .trial_build(
                run,
                graph.vectors().clone(),
                graph.dim(),
                graph.metric(),
                params,
                started,
            )
            .await?;
        let candidate = LoadedGeneration {
            generation: 0,
            graph: built,
            rows: setup.active.rows.clone(),
            dataset_version: setup.active.dataset_version,
            indexes: Default::default(),
        };
        let generation = if keep {
            run.progress(progress(Phase::Persisting, 0, 1, started));
            self.adopt_generation(&setup.entry, candidate, params, build_ms, false)
                .await?
        } else {
            Arc::new(candidate)
        };
        for (i, &ef) in sweep.iter().enumerate() {
            let step = (i, sweep.len(), started);
            let measured = self
                .measure_point(run, step, &generation, setup.scoring(), ef)
                .await?;
            let trial = self.trial_record(
                run,
                "b0",
                setup,
                &generation,
                params,
                ef,
                measured,
                build_ms,
            );
            trials.push(self.journal_trial(run, trial).await?);
        }
        Ok(())
    }
}

pub(super) fn progress(phase: Phase, done: u64, total: u64, started: Instant) -> Progress {
    Progress {
        phase,
        done,
        total,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

pub(super) async fn wait_cancelled(run: &Run) {
    while !run.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a trial's results are scored against: the eval set's queries and
/// truth depth, and its filter bound to the generation's rows.
#[derive(Debug, Clone)]
pub(super) struct Scoring<'a> {
    pub(super) queries: &'a Arc<Vec<EvalQuery>>,
    pub(super) k: usize,
    pub(super) filter: Option<Arc<crate::filter::predicate::Predicate>>,
}

impl Setup {
    /// The scoring of this setup's eval set.
    pub(super) fn scoring(&self) -> Scoring<'_> {
        Scoring {
            queries: &self.queries,
            k: self.k,
            filter: self.filter.clone(),
        }
    }
}
