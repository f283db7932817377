//! The trial operations of [`VectorService`]: eval sets, RunTrial,
//! TuneIndex, and reading the journal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use arrow::array::{Array as _, StringArray};
use chrono::Utc;
use lakehouse_client::GrpcObjectStore;
use lakehouse_shared::request_id::RequestLog;
use object_store::ObjectStore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::eval_set::{self, EvalSetRecord, EvalSetStore, Query, Source};
use super::journal::TrialJournal;
use super::measure::{self, EvalQuery};
use super::rank::{self, Best, Figure, Objective};
use super::record::TrialRecord;
use super::run::{Run, RunOutcome, Runs};
use super::tune;
use crate::Metric;
use crate::config::VectorConfig;
use crate::embeddings::{self, DataFile, LoadSpec};
use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::{self, Graph, HnswParams};
use crate::progress::{Phase, Progress};
use crate::record::GenerationState;
use crate::registry::{IndexEntry, Outcome, Reserved};
use crate::service::{LEVEL_SEED, MAX_EF_SEARCH, VectorService};

/// Default queries of a sampled eval set.
pub const DEFAULT_QUERY_COUNT: usize = 100;
/// Most queries of an eval set.
pub const MAX_QUERY_COUNT: usize = 10_000;
/// Most ef_search values of one RunTrial.
pub const MAX_SWEEP: usize = 32;

/// Shared state of the trial operations.
#[derive(Debug)]
pub struct TrialState {
    evals: EvalSetStore,
    journal: TrialJournal,
    runs: Runs,
    slots: Arc<Semaphore>,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    memory_budget: u64,
    replies: RequestLog<String>,
}

impl TrialState {
    /// Trial state over `store` (the default bucket).
    pub fn new(config: &VectorConfig, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let threads = match config.trial_threads {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vector-trial-{i}"))
            .build()?;
        Ok(Self {
            evals: EvalSetStore::new(store.clone()),
            journal: TrialJournal::new(store),
            runs: Runs::default(),
            slots: Arc::new(Semaphore::new(config.max_trials as usize)),
            pool: Arc::new(pool),
            threads,
            memory_budget: config.trial_memory_bytes,
            replies: RequestLog::new(1024),
        })
    }
}

/// Where an eval set's queries come from.
#[derive(Debug, Clone)]
pub enum EvalQueries {
    /// Sample this many of the index's vectors with this seed.
    Sample {
        /// Queries.
        count: usize,
    },
    /// These vectors.
    Given(Vec<Vec<f32>>),
    /// A dataset's vector column (its first `limit` rows; 0 for all).
    DatasetColumn {
        /// Dataset.
        dataset: String,
        /// Column.
        column: String,
        /// Most rows.
        limit: usize,
    },
}

/// What CreateEvalSet asks for, validated except against the index.
#[derive(Debug, Clone)]
pub struct NewEvalSet {
    /// Name.
    pub name: String,
    /// Index.
    pub index: String,
    /// Truth neighbours per query.
    pub k: usize,
    /// Sampler seed.
    pub seed: u64,
    /// Queries.
    pub queries: EvalQueries,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// What RunTrial asks for.
#[derive(Debug, Clone)]
pub struct NewTrial {
    /// Index.
    pub index: String,
    /// Eval set.
    pub eval_set: String,
    /// Build parameters.
    pub params: HnswParams,
    /// The sweep; empty measures the index's ef_search.
    pub ef_search: Vec<u32>,
    /// k of recall@k; None uses the eval set's.
    pub k: Option<usize>,
    /// Keep the build as an inactive generation.
    pub keep_generation: bool,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// What TuneIndex asks for.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// Index.
    pub index: String,
    /// Eval set.
    pub eval_set: String,
    /// Starting candidates; empty uses the built-in grid.
    pub candidates: Vec<HnswParams>,
    /// Recall target.
    pub min_recall: f64,
    /// Objective.
    pub objective: Objective,
    /// Promote the winner.
    pub promote: bool,
    /// Full-size builds.
    pub max_builds: usize,
    /// Stop starting builds after this long.
    pub time_budget: Option<Duration>,
    /// k of recall@k; None uses the eval set's.
    pub k: Option<usize>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// A started (or replayed) run.
#[derive(Debug)]
pub struct TrialTicket {
    /// The run.
    pub run: Arc<Run>,
    /// A retry of an earlier request.
    pub replayed: bool,
}

/// What a run works on, checked before it starts.
struct Setup {
    entry: Arc<IndexEntry>,
    active: Arc<LoadedGeneration>,
    eval: EvalSetRecord,
    queries: Arc<Vec<EvalQuery>>,
    k: usize,
}

/// Filters of ListTrials.
#[derive(Debug, Clone, Default)]
pub struct TrialFilter {
    /// Eval set.
    pub eval_set: Option<String>,
    /// M.
    pub m: Option<usize>,
    /// ef_construction.
    pub ef_construction: Option<usize>,
    /// ef_search.
    pub ef_search: Option<u32>,
    /// Run.
    pub run_id: Option<String>,
}

impl TrialFilter {
    fn keeps(&self, t: &TrialRecord) -> bool {
        self.eval_set.as_ref().is_none_or(|e| *e == t.eval_set)
            && self.m.is_none_or(|m| m == t.params.m)
            && self
                .ef_construction
                .is_none_or(|e| e == t.params.ef_construction)
            && self.ef_search.is_none_or(|e| e == t.ef_search)
            && self.run_id.as_ref().is_none_or(|r| *r == t.run_id)
    }
}

/// Bytes a build of `n` vectors with `params` takes at its peak (the
/// building lists and the frozen arrays), plus a sample's vectors.
pub fn trial_memory(n: usize, dim: usize, params: HnswParams, sample: bool) -> u64 {
    let links = (n as u64) * (16 * params.m as u64 + 40) * 11 / 10;
    let copy = if sample { (n * dim * 4) as u64 } else { 0 };
    links + copy
}

/// Checks one vector against an index and prepares it for the metric.
pub fn prepare_vector(index: &str, dim: usize, metric: Metric, vector: &mut [f32]) -> Result<()> {
    if vector.len() != dim {
        return Err(Error::WrongDimensions {
            index: index.to_owned(),
            expected: dim,
            got: vector.len(),
        });
    }
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "vector",
            "components must be finite numbers",
        ));
    }
    if let Some(problem) = crate::checks::magnitude_problem(vector) {
        return Err(Error::invalid("vector", problem));
    }
    if metric.normalizes() {
        let norm = Metric::norm(vector);
        if norm == 0.0 {
            return Err(Error::invalid(
                "vector",
                "a zero vector has no cosine direction",
            ));
        }
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(())
}

impl VectorService {
    // ---- eval sets ----

    /// Creates an eval set: queries and their exact top-k, stored.
    pub async fn create_eval_set(&self, new: NewEvalSet) -> Result<EvalSetRecord> {
        self.check_ready()?;
        if let Some(existing) = self.trials.evals.read(&new.name).await? {
            if new.request_id.is_some() && existing.request_id == new.request_id {
                return Ok(existing);
            }
            return Err(Error::EvalSetExists { name: new.name });
        }
        let entry = self.entry(&new.index)?;
        let active = entry.active();
        let Some(active) = active else {
            return Err(self.not_ready(&new.index, &entry));
        };
        let (dim, metric, n) = (
            active.graph.dim(),
            active.graph.metric(),
            active.graph.len(),
        );
        let vectors = active.graph.vectors().clone();
        let (source, queries): (Source, Vec<Query>) = match new.queries {
            EvalQueries::Sample { count } => {
                if count > MAX_QUERY_COUNT {
                    return Err(Error::invalid(
                        "query_count",
                        format!("at most {MAX_QUERY_COUNT}; got {count}"),
                    ));
                }
                let rows = eval_set::sample_rows(n, count, new.seed);
                let queries = rows
                    .iter()
                    .map(|&r| Query {
                        vector: vectors[r as usize * dim..(r as usize + 1) * dim].to_vec(),
                        source_row: Some(r),
                    })
                    .collect();
                (Source::Sampled, queries)
            }
            EvalQueries::Given(given) => {
                let mut queries = Vec::with_capacity(given.len());
                for mut vector in given {
                    prepare_vector(&new.index, dim, metric, &mut vector)?;
                    queries.push(Query {
                        vector,
                        source_row: None,
                    });
                }
                (Source::Given, queries)
            }
            EvalQueries::DatasetColumn {
                dataset,
                column,
                limit,
            } => {
                let loaded = self
                    .column_vectors(&dataset, &column, metric.normalizes())
                    .await?;
                if loaded.dim != dim {
                    return Err(Error::WrongDimensions {
                        index: new.index.clone(),
                        expected: dim,
                        got: loaded.dim,
                    });
                }
                let rows = loaded.len();
                if limit == 0 && rows > MAX_QUERY_COUNT {
                    return Err(Error::invalid(
                        "limit",
                        format!(
                            "column {column:?} of dataset {dataset:?} holds {rows} rows, more than the {MAX_QUERY_COUNT} queries an eval set takes; set limit to take its first rows"
                        ),
                    ));
                }
                let take = if limit == 0 { rows } else { limit };
                let queries = loaded
                    .vectors
                    .chunks_exact(dim)
                    .take(take)
                    .map(|v| Query {
                        vector: v.to_vec(),
                        source_row: None,
                    })
                    .collect();
                (Source::DatasetColumn, queries)
            }
        };
        if queries.is_empty() {
            return Err(Error::invalid("queries", "the eval set has no queries"));
        }
        if queries.len() > MAX_QUERY_COUNT {
            return Err(Error::invalid(
                "queries",
                format!("at most {MAX_QUERY_COUNT} queries; got {}", queries.len()),
            ));
        }
        let query_count = queries.len();
        let (k, pool) = (new.k, self.trials.pool.clone());
        let started = Instant::now();
        let truth = tokio::task::spawn_blocking(move || {
            pool.install(|| eval_set::ground_truth(&vectors, dim, metric, queries, k))
        })
        .await
        .map_err(|_| Error::Task("ground truth"))?;
        let ground_truth_ms = started.elapsed().as_millis() as u64;
        let ids = arrow::compute::cast(active.rows.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(Error::EvalSetEncode)?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or(Error::Task("eval set ids"))?;
        let parquet = eval_set::encode(&truth, dim, ids)?;
        let record = EvalSetRecord {
            name: new.name.clone(),
            index: new.index.clone(),
            source,
            seed: new.seed,
            query_count: query_count as u32,
            k: k as u32,
            dimensions: dim as u32,
            metric,
            dataset_version: active.dataset_version,
            corpus_vectors: n as u64,
            object_key: eval_set::data_key(&new.name),
            create_time: Utc::now(),
            ground_truth_ms,
            request_id: new.request_id,
        };
        self.trials.evals.write(&record, parquet).await?;
        tracing::info!(eval_set = %record.name, index = %record.index, queries = query_count, k, ground_truth_ms, "eval set created");
        Ok(record)
    }

    /// Vectors of a dataset column, through the embedding cache.
    async fn column_vectors(
        &self,
        dataset: &str,
        column: &str,
        normalize: bool,
    ) -> Result<Arc<embeddings::Embeddings>> {
        let manifest = self.dataset(dataset, true).await?;
        let spec = LoadSpec {
            dataset: dataset.to_owned(),
            version: manifest.version,
            vector_column: column.to_owned(),
            row_columns: Vec::new(),
            normalize,
        };
        let files: Vec<DataFile> = manifest
            .files
            .iter()
            .map(|f| DataFile {
                key: f.key.clone(),
                size: f.size_bytes,
            })
            .collect();
        let estimate = files.iter().map(|f| f.size).sum();
        let store: Arc<dyn ObjectStore> = Arc::new(GrpcObjectStore::new(
            self.storage.clone(),
            manifest.bucket.clone(),
        ));
        self.cache()
            .get_or_load(&spec, estimate, || {
                embeddings::load(store, &files, &spec, Arc::new(AtomicU64::new(0)))
            })
            .await
    }

    /// One eval set.
    pub async fn get_eval_set(&self, name: &str) -> Result<EvalSetRecord> {
        self.trials
            .evals
            .read(name)
            .await?
            .ok_or_else(|| Error::EvalSetNotFound {
                name: name.to_owned(),
            })
    }

    /// Every eval set (of `index`, when given), by name.
    pub async fn list_eval_sets(&self, index: Option<&str>) -> Result<Vec<EvalSetRecord>> {
        let mut sets = self.trials.evals.list().await?;
        if let Some(index) = index {
            sets.retain(|s| s.index == index);
        }
        Ok(sets)
    }

    /// Deletes an eval set; a retry with the same request id succeeds again.
    pub async fn delete_eval_set(&self, name: &str, request_id: Option<String>) -> Result<()> {
        let key = request_id.map(|id| format!("delete-eval/{name}/{id}"));
        if key
            .as_ref()
            .is_some_and(|k| self.trials.replies.get(k).is_some())
        {
            return Ok(());
        }
        if !self.trials.evals.delete(name).await? {
            return Err(Error::EvalSetNotFound {
                name: name.to_owned(),
            });
        }
        if let Some(key) = key {
            self.trials.replies.record(key, name.to_owned());
        }
        Ok(())
    }

    // ---- the journal ----

    /// Trials of `index` that pass `filter`, ordered by `order`, each with
    /// its sort key (the page position).
    pub async fn list_trials(
        &self,
        index: &str,
        filter: &TrialFilter,
        order: Figure,
    ) -> Result<Vec<(String, TrialRecord)>> {
        let mut trials: Vec<(String, TrialRecord)> = self
            .trials
            .journal
            .trials(index)
            .await?
            .into_iter()
            .filter(|t| filter.keeps(t))
            .map(|t| (rank::sort_key(order, &t), t))
            .collect();
        trials.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(trials)
    }

    /// One trial.
    pub async fn get_trial(&self, index: &str, trial_id: &str) -> Result<TrialRecord> {
        self.trials
            .journal
            .trials(index)
            .await?
            .into_iter()
            .find(|t| t.trial_id == trial_id)
            .ok_or_else(|| Error::TrialNotFound {
                index: index.to_owned(),
                trial_id: trial_id.to_owned(),
            })
    }

    /// The best journaled trial meeting `min_recall`, with how many were
    /// considered.
    pub async fn best_trial(
        &self,
        index: &str,
        eval_set: Option<&str>,
        min_recall: f64,
        objective: Objective,
    ) -> Result<(TrialRecord, usize)> {
        let trials: Vec<TrialRecord> = self
            .trials
            .journal
            .trials(index)
            .await?
            .into_iter()
            .filter(|t| eval_set.is_none_or(|e| e == t.eval_set))
            .collect();
        match rank::best(&trials, min_recall, objective) {
            Best::Found(trial) => Ok((trial.clone(), trials.len())),
            Best::NoneMeets { best_recall } => Err(Error::NoTrialMeetsRecall {
                index: index.to_owned(),
                min_recall,
                best_recall,
                considered: trials.len(),
            }),
        }
    }

    // ---- runs ----

    /// Tells every running trial run to stop; returns how many were running.
    pub(crate) fn cancel_trial_runs(&self) -> usize {
        self.trials.runs.cancel_all()
    }

    /// Trial runs not yet ended.
    pub(crate) fn running_trial_runs(&self) -> usize {
        self.trials.runs.running()
    }

    /// Stops a run; false when it had already ended.
    pub fn cancel_trial_run(&self, run_id: &str) -> Result<bool> {
        let run = self
            .trials
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

    fn replayed_run(&self, key: Option<&str>) -> Option<TrialTicket> {
        let run_id = self.trials.replies.get(key?)?;
        let run = self.trials.runs.get(&run_id)?;
        Some(TrialTicket {
            run,
            replayed: true,
        })
    }

    /// Checks an index and eval set for a run and reads the queries.
    async fn setup(&self, index: &str, eval_set: &str, k: Option<usize>) -> Result<Setup> {
        let entry = self.entry(index)?;
        let active = entry.active();
        let Some(active) = active else {
            return Err(self.not_ready(index, &entry));
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
        let queries = Arc::new(self.trials.evals.queries(&eval).await?);
        Ok(Setup {
            entry,
            active,
            eval,
            queries,
            k,
        })
    }

    fn check_trial_memory(
        &self,
        n: usize,
        dim: usize,
        params: HnswParams,
        sample: bool,
    ) -> Result<()> {
        let needed = trial_memory(n, dim, params, sample);
        if needed > self.trials.memory_budget {
            return Err(Error::TrialMemoryBudget {
                needed,
                budget: self.trials.memory_budget,
            });
        }
        Ok(())
    }

    /// Starts a RunTrial (or replays one with the same request id).
    pub async fn run_trial(self: &Arc<Self>, new: NewTrial) -> Result<TrialTicket> {
        self.check_ready()?;
        self.check_accepting_work()?;
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
        let run = self.trials.runs.start("trial", &new.index, &new.eval_set);
        if let Some(key) = key {
            self.trials.replies.record(key, run.id.clone());
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

    async fn trial_slot(&self, run: &Run, started: Instant) -> Result<OwnedSemaphorePermit> {
        run.progress(progress(Phase::Queued, 0, 0, started));
        tokio::select! {
            permit = self.trials.slots.clone().acquire_owned() => permit.map_err(|_| Error::Task("trial slot")),
            () = wait_cancelled(run) => Err(Error::TrialRunCancelled { run_id: run.id.clone() }),
        }
    }

    /// Builds a graph of `vectors` on the trial pool, reporting progress.
    async fn trial_build(
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
        let (pool, control) = (self.trials.pool.clone(), run.control.clone());
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
    async fn measure_point(
        &self,
        run: &Run,
        step: (usize, usize, Instant),
        generation: &Arc<LoadedGeneration>,
        queries: &Arc<Vec<EvalQuery>>,
        k: usize,
        ef: u32,
    ) -> Result<measure::Measured> {
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
        let pool = self.trials.pool.clone();
        tokio::task::spawn_blocking(move || {
            pool.install(|| measure::measure(&generation.graph, &queries, k, ef as usize))
        })
        .await
        .map_err(|_| Error::Task("trial measurement"))
    }

    #[allow(clippy::too_many_arguments)]
    fn trial_record(
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
            build_threads: self.trials.threads as u32,
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
    async fn journal_trial(&self, run: &Run, trial: TrialRecord) -> Result<TrialRecord> {
        self.trials
            .journal
            .append(&trial.index, std::slice::from_ref(&trial))
            .await?;
        run.trial(trial.clone());
        Ok(trial)
    }

    async fn trial_task(
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
    async fn trial_steps(
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
                .measure_point(run, step, &generation, &setup.queries, setup.k, ef)
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

    // ---- tuning ----

    /// Starts a TuneIndex (or replays one with the same request id).
    pub async fn tune_index(self: &Arc<Self>, request: TuneRequest) -> Result<TrialTicket> {
        self.check_ready()?;
        self.check_accepting_work()?;
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
            .trials
            .runs
            .start("tune", &request.index, &request.eval_set);
        if let Some(key) = key {
            self.trials.replies.record(key, run.id.clone());
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

    async fn tune_task(
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

    async fn tune_steps(
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
                        .measure_point(run, step, &generation, &queries, setup.k, ef)
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
    async fn sample_corpus(
        &self,
        setup: &Setup,
        size: usize,
        seed: u64,
    ) -> Result<(Arc<Vec<f32>>, Arc<Vec<EvalQuery>>)> {
        let graph = &setup.active.graph;
        let (dim, metric, n, k) = (graph.dim(), graph.metric(), graph.len(), setup.k);
        let vectors = graph.vectors().clone();
        let queries = setup.queries.clone();
        let pool = self.trials.pool.clone();
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
            let truth =
                pool.install(|| eval_set::ground_truth(&corpus, dim, metric, sample_queries, k));
            (Arc::new(corpus), Arc::new(truth.queries))
        })
        .await
        .map_err(|_| Error::Task("tuning sample"))
    }

    /// Persists a built graph as a new generation of `entry`'s index (made
    /// active when `promote`), through the same state machine as a
    /// RebuildIndex generation: reserve, write the files, finish.
    async fn adopt_generation(
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
                    build_ms,
                };
                // The write's error is the one to report; finish only logs.
                let _ = self.registry.finish(entry, generation, outcome).await;
                Err(error)
            }
        }
    }
}

fn progress(phase: Phase, done: u64, total: u64, started: Instant) -> Progress {
    Progress {
        phase,
        done,
        total,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

async fn wait_cancelled(run: &Run) {
    while !run.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimate_grows_with_m_and_samples() {
        let small = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 8,
                ef_construction: 64,
            },
            false,
        );
        let large = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 32,
                ef_construction: 64,
            },
            false,
        );
        assert!(small < large);
        let sampled = trial_memory(
            100_000,
            768,
            HnswParams {
                m: 8,
                ef_construction: 64,
            },
            true,
        );
        assert_eq!(sampled - small, 100_000 * 768 * 4);
    }
}
