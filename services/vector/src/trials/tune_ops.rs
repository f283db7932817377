//! TuneIndex: successive halving over build parameters toward a recall
//! target, and adopting the winner's graph as a generation through the
//! registry's state machine.

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

use super::eval_set::{self, Query};
use super::measure::EvalQuery;
use super::rank::{self, Best};
use super::record::TrialRecord;
use super::run::{Run, RunOutcome};
use super::run_ops::progress;
use super::service::TrialService;
use super::state::{Setup, TrialTicket, TuneRequest};
use super::tune;
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::HnswParams;
use crate::progress::Phase;
use crate::record::GenerationState;
use crate::registry::{IndexEntry, Outcome, Reserved};

impl TrialService {
    /// Starts a TuneIndex (or replays one with the same request id).
    pub async fn tune_index(self: &Arc<Self>, request: TuneRequest) -> Result<TrialTicket> {
        self.context.check_ready()?;
        self.context.check_accepting_work()?;
        let key = request
            .request_id
            .as_ref()
            .map(|id| format!("tune/{}/{id}", request.index));
        if let Some(ticket) = self.replayed_run(key.as_deref()) {
            return Ok(ticket);
        }
        let setup = self
            .setup(&request.index, &request.eval_set, request.k)
            .await?;
        if setup.filter.is_some() {
            // Early rounds build on samples of the rows, which a filter
            // bound to the whole generation's rows cannot follow.
            return Err(Error::invalid(
                "eval_set",
                format!(
                    "eval set {:?} has a filter; TuneIndex does not tune on filtered eval sets yet — RunTrial measures filtered recall per build",
                    request.eval_set
                ),
            ));
        }
        let candidates = if request.candidates.is_empty() {
            tune::default_grid()
        } else {
            request.candidates.clone()
        };
        let (n, dim) = (setup.active.graph.len(), setup.active.graph.dim());
        for params in &candidates {
            self.check_trial_memory(n, dim, *params, false)?;
        }
        let run = self
            .state
            .runs
            .start("tune", &request.index, &request.eval_set);
        if let Some(key) = key {
            self.state.replies.record(key, run.id.clone());
        }
        let service = self.clone();
        let task_run = run.clone();
        tokio::spawn(
            async move {
                let outcome = service
                    .tune_task(&task_run, setup, request, candidates)
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

    pub(super) async fn tune_task(
        self: &Arc<Self>,
        run: &Arc<Run>,
        setup: Setup,
        request: TuneRequest,
        candidates: Vec<HnswParams>,
    ) -> RunOutcome {
        let started = Instant::now();
        let mut trials = Vec::new();
        match self
            .tune_steps(run, &setup, &request, candidates, started, &mut trials)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(run = %run.id, %error, "tune run ended early");
                RunOutcome::failed(error, trials)
            }
        }
    }

    pub(super) async fn tune_steps(
        self: &Arc<Self>,
        run: &Arc<Run>,
        setup: &Setup,
        request: &TuneRequest,
        candidates: Vec<HnswParams>,
        started: Instant,
        trials: &mut Vec<TrialRecord>,
    ) -> Result<RunOutcome> {
        let _slot = self.trial_slot(run, started).await?;
        let graph = &setup.active.graph;
        let (n, dim, metric) = (graph.len(), graph.dim(), graph.metric());
        let plan = tune::plan(n, candidates.len(), request.max_builds);
        let mut alive: Vec<(usize, HnswParams)> = candidates.into_iter().enumerate().collect();
        let mut full: Vec<(usize, Arc<LoadedGeneration>, u64)> = Vec::new();
        let mut full_trials: Vec<TrialRecord> = Vec::new();
        let last_rung = plan.len().saturating_sub(1);
        let mut out_of_time = false;
        for (r, rung) in plan.iter().enumerate() {
            let is_full = r == last_rung || out_of_time;
            if out_of_time {
                alive.truncate(1);
            } else {
                alive.truncate(rung.builds);
            }
            let (corpus, queries) = if is_full {
                (graph.vectors().clone(), setup.queries.clone())
            } else {
                self.check_trial_memory(rung.sample, dim, alive[0].1, true)?;
                self.sample_corpus(setup, rung.sample, r as u64).await?
            };
            let mut scored: Vec<(usize, HnswParams, Option<TrialRecord>, f64)> = Vec::new();
            for &(b, params) in &alive {
                if run.is_cancelled() {
                    return Err(Error::TrialRunCancelled {
                        run_id: run.id.clone(),
                    });
                }
                let (built, build_ms) = self
                    .trial_build(run, corpus.clone(), dim, metric, params, started)
                    .await?;
                let generation = Arc::new(LoadedGeneration {
                    generation: 0,
                    graph: built,
                    rows: setup.active.rows.clone(),
                    dataset_version: setup.active.dataset_version,
                    indexes: Default::default(),
                });
                let label = format!("r{r}b{b}");
                let mut reached: Option<TrialRecord> = None;
                let mut best_recall = 0.0f64;
                let ladder: Vec<u32> = tune::EF_LADDER
                    .iter()
                    .map(|&e| e.max(setup.k as u32))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for (i, &ef) in ladder.iter().enumerate() {
                    let step = (i, ladder.len(), started);
                    let measured = self
                        .measure_point(
                            run,
                            step,
                            &generation,
                            super::run_ops::Scoring {
                                queries: &queries,
                                k: setup.k,
                                filter: None,
                            },
                            ef,
                        )
                        .await?;
                    let trial = self.trial_record(
                        run,
                        &label,
                        setup,
                        &generation,
                        params,
                        ef,
                        measured,
                        build_ms,
                    );
                    let trial = self.journal_trial(run, trial).await?;
                    trials.push(trial.clone());
                    best_recall = best_recall.max(trial.recall);
                    if is_full {
                        full_trials.push(trial.clone());
                    }
                    let meets = trial.recall >= request.min_recall;
                    if reached.is_some() {
                        // One point past the target, for the frontier.
                        break;
                    }
                    if meets {
                        reached = Some(trial);
                        if !is_full {
                            break;
                        }
                    }
                }
                if is_full {
                    full.push((b, generation, build_ms));
                }
                scored.push((b, params, reached, best_recall));
                if let Some(budget) = request.time_budget
                    && started.elapsed() >= budget
                    && !is_full
                {
                    out_of_time = true;
                    break;
                }
            }
            // Reaching the target first, by the objective; then by recall.
            scored.sort_by(|a, b| match (&a.2, &b.2) {
                (Some(x), Some(y)) => rank::better(request.objective, x, y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => b.3.total_cmp(&a.3),
            });
            alive = scored.iter().map(|s| (s.0, s.1)).collect();
            if is_full {
                break;
            }
        }
        let pareto = rank::pareto(&full_trials);
        let best = match rank::best(&full_trials, request.min_recall, request.objective) {
            Best::Found(trial) => trial.clone(),
            Best::NoneMeets { best_recall } => {
                return Ok(RunOutcome {
                    status: Err(Arc::new(Error::NoTrialMeetsRecall {
                        index: setup.eval.index.clone(),
                        min_recall: request.min_recall,
                        best_recall,
                        considered: full_trials.len(),
                    })),
                    trials: std::mem::take(trials),
                    best: None,
                    pareto,
                    promoted_generation: 0,
                });
            }
        };
        let mut promoted_generation = 0;
        if request.promote {
            let winner = full
                .iter()
                .position(|(_, g, _)| {
                    g.graph.params() == best.params && g.graph.len() as u64 == best.vector_count
                })
                .ok_or(Error::Task("tune winner"))?;
            let (_, generation, build_ms) = full.swap_remove(winner);
            drop(full);
            let generation = Arc::try_unwrap(generation).map_err(|_| Error::Task("tune winner"))?;
            run.progress(progress(Phase::Persisting, 0, 1, started));
            let adopted = self
                .adopt_generation(&setup.entry, generation, best.params, build_ms, true)
                .await?;
            promoted_generation = adopted.generation;
        }
        tracing::info!(run = %run.id, m = best.params.m, ef_construction = best.params.ef_construction, ef_search = best.ef_search, recall = best.recall, "tune found a winner");
        Ok(RunOutcome {
            status: Ok(()),
            trials: std::mem::take(trials),
            best: Some(best),
            pareto,
            promoted_generation,
        })
    }

    /// A seeded sample of `size` of the index's vectors, with the eval
    /// set's queries and their exact truth over the sample.
    pub(super) async fn sample_corpus(
        &self,
        setup: &Setup,
        size: usize,
        seed: u64,
    ) -> Result<(Arc<Vec<f32>>, Arc<Vec<EvalQuery>>)> {
        let graph = &setup.active.graph;
        let (dim, metric, n, k) = (graph.dim(), graph.metric(), graph.len(), setup.k);
        let vectors = graph.vectors().clone();
        let queries = setup.queries.clone();
        let pool = self.state.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut rows = eval_set::sample_rows(n, size, seed ^ 0x5a3c_0de5);
            rows.sort_unstable();
            let mut corpus = Vec::with_capacity(rows.len() * dim);
            for &r in &rows {
                corpus.extend_from_slice(&vectors[r as usize * dim..(r as usize + 1) * dim]);
            }
            let sample_queries = queries
                .iter()
                .map(|q| Query {
                    vector: q.vector.clone(),
                    source_row: q
                        .exclude
                        .and_then(|own| rows.binary_search(&own).ok())
                        .map(|i| i as u32),
                })
                .collect();
            let truth = pool
                .install(|| eval_set::ground_truth(&corpus, dim, metric, sample_queries, k, None));
            (Arc::new(corpus), Arc::new(truth.queries))
        })
        .await
        .map_err(|_| Error::Task("tuning sample"))
    }

    /// Persists a built graph as a new generation of `entry`'s index (made
    /// active when `promote`), through the same state machine as a
    /// RebuildIndex generation: reserve, write the files, finish.
    pub(super) async fn adopt_generation(
        &self,
        entry: &Arc<IndexEntry>,
        mut built: LoadedGeneration,
        params: HnswParams,
        build_ms: u64,
        promote: bool,
    ) -> Result<Arc<LoadedGeneration>> {
        let name = entry.name().to_owned();
        if !self.registry.is_registered(&name, entry) {
            return Err(Error::IndexNotFound { name });
        }
        let Reserved::New(generation, _) = self.registry.reserve(entry, Some(params), None).await?
        else {
            return Err(Error::Task("reserve a generation"));
        };
        built.generation = generation;
        let written = self
            .registry
            .store()
            .write_generation(
                &entry.record(),
                generation,
                &built.graph,
                &built.rows,
                built.dataset_version,
            )
            .await;
        let loaded = Arc::new(built);
        match written {
            Ok(_) => {
                let outcome = Outcome::Ready {
                    loaded: loaded.clone(),
                    build_ms,
                    promote,
                };
                self.registry.finish(entry, generation, outcome).await?;
                Ok(loaded)
            }
            Err(error) => {
                let outcome = Outcome::Ended {
                    state: GenerationState::Failed,
                    error: error.to_string(),
                    failure: None,
                    build_ms,
                };
                // The write's error is the one to report; finish only logs.
                let _ = self.registry.finish(entry, generation, outcome).await;
                Err(error)
            }
        }
    }
}
