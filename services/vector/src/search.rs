//! Search over an index's active generation: checks the query against
//! the index, then runs HNSW (inline for one query) or exact search (on
//! the blocking pool, spread over the cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::generation::LoadedGeneration;
use crate::hnsw::Near;
use crate::service::VectorService;

/// A search request, validated except against the index.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Index.
    pub index: String,
    /// One or more query vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Neighbours per query (resolved).
    pub k: usize,
    /// Override of the index's ef_search.
    pub ef_search: Option<u32>,
    /// Brute force.
    pub exact: bool,
    /// Payload columns to return.
    pub payload_columns: Vec<String>,
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
        let active = entry.active();
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
        let mut queries = query.vectors;
        for vector in &mut queries {
            crate::checks::prepare_vector(&query.index, dim, metric, vector)?;
        }
        let k = query.k;
        let ef = query.ef_search.unwrap_or(ef_default).max(k as u32);
        let started = Instant::now();
        let exact = query.exact;
        let hits = if queries.len() == 1 && !exact {
            // One HNSW query is ~100 µs of work: cheaper inline than a hop
            // to another thread.
            vec![active.search(&queries[0], k, ef as usize, false)]
        } else {
            let generation = active.clone();
            tokio::task::spawn_blocking(move || {
                use rayon::prelude::*;
                queries
                    .par_iter()
                    .map(|q| generation.search(q, k, ef as usize, exact))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|_| Error::Task("search"))?
        };
        Ok(SearchResult {
            generation: active,
            hits,
            ef_search: if exact { 0 } else { ef },
            k,
            took: started.elapsed(),
            has_text,
        })
    }
}
