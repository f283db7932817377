//! Eval sets: created from sampled, given or dataset-column queries with
//! their exact ground truth, read, listed and deleted.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use arrow::array::{Array as _, StringArray};
use chrono::Utc;

use super::eval_set::{self, EvalSetRecord, Query, Source};
use super::service::TrialService;
use super::state::{EvalQueries, MAX_QUERY_COUNT, NewEvalSet};
use crate::checks::prepare_vector;
use crate::embeddings::{self, DataFile, LoadSpec};
use crate::error::{Error, Result};

impl TrialService {
    /// Creates an eval set: queries and their exact top-k, stored.
    pub async fn create_eval_set(&self, new: NewEvalSet) -> Result<EvalSetRecord> {
        self.context.check_ready()?;
        if let Some(existing) = self.state.evals.read(&new.name).await? {
            if new.request_id.is_some() && existing.request_id == new.request_id {
                return Ok(existing);
            }
            return Err(Error::EvalSetExists { name: new.name });
        }
        let entry = self.registry.usable(&new.index)?;
        let active = entry.active();
        let Some(active) = active else {
            return Err(entry.not_ready());
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
        let passing = match &new.filter {
            None => None,
            Some(filter) => {
                let predicate = bind_filter(&entry, &active, &new.index, filter)?;
                Some(predicate.matching_rows(n))
            }
        };
        let (k, pool) = (new.k, self.state.pool.clone());
        let started = Instant::now();
        let truth = tokio::task::spawn_blocking(move || {
            pool.install(|| {
                eval_set::ground_truth(&vectors, dim, metric, queries, k, passing.as_deref())
            })
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
            filter: new.filter,
        };
        self.state.evals.write(&record, parquet).await?;
        tracing::info!(eval_set = %record.name, index = %record.index, queries = query_count, k, ground_truth_ms, "eval set created");
        Ok(record)
    }

    /// Vectors of a dataset column, through the embedding cache.
    pub(super) async fn column_vectors(
        &self,
        dataset: &str,
        column: &str,
        normalize: bool,
    ) -> Result<Arc<embeddings::Embeddings>> {
        let manifest = self.context.dataset(dataset, true).await?;
        let spec = LoadSpec {
            dataset: dataset.to_owned(),
            version: manifest.version,
            vector_column: column.to_owned(),
            row_columns: Vec::new(),
            normalize,
        };
        let files = DataFile::of(&manifest);
        let estimate = files.iter().map(|f| f.size).sum();
        let store = self.context.bucket(&manifest.bucket);
        self.context
            .cache()
            .get_or_load(&spec, estimate, || {
                embeddings::load(store, &files, &spec, Arc::new(AtomicU64::new(0)))
            })
            .await
    }

    /// One eval set.
    pub async fn get_eval_set(&self, name: &str) -> Result<EvalSetRecord> {
        self.state
            .evals
            .read(name)
            .await?
            .ok_or_else(|| Error::EvalSetNotFound {
                name: name.to_owned(),
            })
    }

    /// Every eval set (of `index`, when given), by name.
    pub async fn list_eval_sets(&self, index: Option<&str>) -> Result<Vec<EvalSetRecord>> {
        let mut sets = self.state.evals.list().await?;
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
            .is_some_and(|k| self.state.replies.get(k).is_some())
        {
            return Ok(());
        }
        if !self.state.evals.delete(name).await? {
            return Err(Error::EvalSetNotFound {
                name: name.to_owned(),
            });
        }
        if let Some(key) = key {
            self.state.replies.record(key, name.to_owned());
        }
        Ok(())
    }
}

/// `filter` bound to `generation`'s rows, checked against the index's
/// payload columns as a search's filter is.
pub(super) fn bind_filter(
    entry: &crate::registry::IndexEntry,
    generation: &crate::generation::LoadedGeneration,
    index: &str,
    filter: &crate::filter::Filter,
) -> Result<crate::filter::predicate::Predicate> {
    filter.validate()?;
    let payload = entry.with_record(|record| record.payload_columns.clone());
    crate::filter::predicate::bind(
        filter,
        index,
        &payload,
        &generation.rows,
        &generation.indexes,
    )
}
