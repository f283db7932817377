//! Search over an index's active generation: checks the query against
//! the index, then runs HNSW (inline for one query) or exact search (on
//! the blocking pool, spread over the cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::filter::plan::{Ask, Plan};
use crate::filter::predicate::{Predicate, bind};
use crate::generation::LoadedGeneration;
use crate::hnsw::Near;
use crate::record::GenerationState;
use crate::registry::IndexEntry;
use crate::service::VectorService;

/// A search request, validated except against the index.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Index.
    pub index: String,
    /// What the queries are.
    pub queries: Queries,
    /// Neighbours per query (resolved).
    pub k: usize,
    /// Override of the index's ef_search.
    pub ef_search: Option<u32>,
    /// Brute force.
    pub exact: bool,
    /// Payload columns to return.
    pub payload_columns: Vec<String>,
    /// Only rows passing this are returned.
    pub filter: Option<Filter>,
    /// Hits farther than this are left out.
    pub max_distance: Option<f32>,
    /// Search this READY generation instead of the active one.
    pub generation: Option<u64>,
}

/// The queries of a search.
#[derive(Debug, Clone)]
pub enum Queries {
    /// One or more query vectors.
    Vectors(Vec<Vec<f32>>),
    /// The vector of the row with this id; the row itself is not a hit.
    Id(String),
}

/// Hits of a search, with the generation that answered.
#[derive(Debug)]
pub struct SearchResult {
    /// The generation (its rows give ids, texts, payload).
    pub generation: Arc<LoadedGeneration>,
    /// Per query, nearest first.
    pub hits: Vec<Vec<Near>>,
    /// The ef used; 0 for exact.
    pub ef_search: u32,
    /// The k used.
    pub k: usize,
    /// Search time.
    pub took: Duration,
    /// Whether the index keeps a text column (the row column after the id).
    pub has_text: bool,
    /// Per query, the plan that ran.
    pub plans: Vec<Plan>,
}

impl VectorService {
    /// Searches the active generation.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchResult> {
        self.context.check_ready()?;
        let entry = self.registry.usable(&query.index)?;
        let (ef_default, payload, has_text) = entry.with_record(|record| {
            (
                record.ef_search,
                record.payload_columns.clone(),
                record.text_column.is_some(),
            )
        });
        let active = match query.generation {
            None => entry.active(),
            Some(number) => Some(self.pinned(&query.index, &entry, number).await?),
        };
        let Some(active) = active else {
            return Err(entry.not_ready());
        };
        for column in &query.payload_columns {
            if !payload.contains(column) {
                return Err(Error::UnknownPayloadColumn {
                    index: query.index.clone(),
                    column: column.clone(),
                    available: payload,
                });
            }
        }
        let dim = active.graph.dim();
        let metric = active.graph.metric();
        let (mut queries, exclude) =
            match query.queries {
                Queries::Vectors(vectors) => (vectors, None),
                Queries::Id(id) => {
                    let row = active.indexes.row_of(&active.rows, &id).ok_or_else(|| {
                        Error::RowNotFound {
                            index: query.index.clone(),
                            id: id.clone(),
                            generation: active.generation,
                        }
                    })?;
                    let start = row as usize * dim;
                    (
                        vec![active.graph.vectors()[start..start + dim].to_vec()],
                        Some(row),
                    )
                }
            };
        for vector in &mut queries {
            crate::checks::prepare_vector(&query.index, dim, metric, vector)?;
        }
        let predicate: Option<Arc<Predicate>> = match &query.filter {
            None => None,
            Some(filter) => {
                filter.validate()?;
                Some(Arc::new(bind(
                    filter,
                    &query.index,
                    &payload,
                    &active.rows,
                    &active.indexes,
                )?))
            }
        };
        let k = query.k;
        let ef = query.ef_search.unwrap_or(ef_default).max(k as u32);
        let started = Instant::now();
        let exact = query.exact;
        let max_distance = query.max_distance;
        let one = move |generation: &LoadedGeneration, q: &[f32]| {
            let ask = Ask {
                query: q,
                k,
                ef: ef as usize,
                exact,
                exclude,
            };
            let (mut hits, plan) = crate::filter::plan::run(generation, ask, predicate.as_deref());
            if let Some(max) = max_distance {
                hits.retain(|h| h.distance <= max);
            }
            (hits, plan)
        };
        let answers: Vec<(Vec<Near>, Plan)> = if queries.len() == 1 && !exact {
            // One HNSW query is ~100 µs of work: cheaper inline than a hop
            // to another thread.
            vec![one(&active, &queries[0])]
        } else {
            let generation = active.clone();
            tokio::task::spawn_blocking(move || {
                use rayon::prelude::*;
                queries
                    .par_iter()
                    .map(|q| one(&generation, q))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|_| Error::Task("search"))?
        };
        let (hits, plans) = answers.into_iter().unzip();
        Ok(SearchResult {
            generation: active,
            hits,
            ef_search: if exact { 0 } else { ef },
            k,
            took: started.elapsed(),
            has_text,
            plans,
        })
    }

    /// Generation `number` of the index: the active one, or a READY one
    /// read from storage and kept loaded for the next pinned searches.
    async fn pinned(
        &self,
        index: &str,
        entry: &IndexEntry,
        number: u64,
    ) -> Result<Arc<LoadedGeneration>> {
        if let Some(active) = entry.active().filter(|a| a.generation == number) {
            return Ok(active);
        }
        let state = entry.with_record(|record| {
            record
                .generations
                .iter()
                .find(|g| g.generation == number)
                .map(|g| g.state)
        });
        match state {
            None => {
                return Err(Error::GenerationNotFound {
                    index: index.to_owned(),
                    generation: number,
                });
            }
            Some(GenerationState::Ready) => {}
            Some(state) => {
                return Err(Error::GenerationState {
                    index: index.to_owned(),
                    generation: number,
                    state: state.name(),
                    hint: "only a READY generation can be searched",
                });
            }
        }
        if let Some(loaded) = entry.pinned(number) {
            return Ok(loaded);
        }
        let loaded = Arc::new(self.registry.read_generation(index, number).await?);
        entry.pin(loaded.clone());
        Ok(loaded)
    }
}
