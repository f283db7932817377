//! The tonic adapter: validates and converts requests (destructuring every
//! message, so a new proto field fails the build until it is handled),
//! delegates to [`VectorService`] (indexes, search, generations, cache) or
//! [`TrialService`] (eval sets, trials, tuning), converts results. Errors become statuses
//! with `google.rpc.ErrorInfo` here and nowhere else.

use std::sync::Arc;

use lakehouse_proto::vector::v1::{self as pb, vector_service_server::VectorService as Rpc};
use lakehouse_shared::paging;
use lakehouse_shared::paging::{PageToken, paginate};
use lakehouse_shared::time::to_proto as timestamp;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::filter::plan::Plan;
use crate::limits::{DEFAULT_EF_SEARCH, DEFAULT_RETAINED, MAX_BATCH_QUERIES};
use crate::record::{GenerationRecord, IndexDefinition};
use crate::search::{Queries, SearchQuery};
use crate::service::{NewIndex, VectorService};
use crate::trials::TrialService;

mod build_stream;
mod convert;
mod filter;
mod payload;
mod trials;

use build_stream::{EventStream, build_stream};
use convert::{
    column, ef_search, generation_pb, index_pb, k, metric, name, params, request_id_of, retained,
};
use payload::search_hits;

/// Implements `lakehouse.vector.v1.VectorService`.
#[derive(Debug, Clone)]
pub struct VectorGrpc {
    service: Arc<VectorService>,
    trials: Arc<TrialService>,
    max_message_bytes: usize,
}

impl VectorGrpc {
    /// The adapter over the index and trial services, whose messages may
    /// reach `max_message_bytes`.
    pub fn new(
        service: Arc<VectorService>,
        trials: Arc<TrialService>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            service,
            trials,
            max_message_bytes,
        }
    }

    /// Refuses a response past the message limit before it is sent, with
    /// a reason a client can act on (fewer queries, a smaller k), instead
    /// of a transport error after the work is done.
    fn bounded<T: prost::Message>(&self, response: T) -> Result<Response<T>, Status> {
        let bytes = response.encoded_len();
        if bytes > self.max_message_bytes {
            return Err(Error::ResponseTooLarge {
                bytes: bytes as u64,
                limit: self.max_message_bytes as u64,
            }
            .into());
        }
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl Rpc for VectorGrpc {
    type CreateIndexStream = EventStream<pb::CreateIndexResponse>;
    type RebuildIndexStream = EventStream<pb::RebuildIndexResponse>;
    type RunTrialStream = EventStream<pb::RunTrialResponse>;
    type TuneIndexStream = EventStream<pb::TuneIndexResponse>;

    async fn create_index(
        &self,
        request: Request<pb::CreateIndexRequest>,
    ) -> Result<Response<Self::CreateIndexStream>, Status> {
        let pb::CreateIndexRequest {
            name: index_name,
            dataset,
            id_column,
            text_column,
            vector_column,
            metric: metric_value,
            config,
            ef_search: ef,
            payload_columns,
            retained_generations,
            request_id: rid,
        } = request.into_inner();
        let new = NewIndex {
            name: name("index", &index_name)?,
            definition: IndexDefinition {
                dataset: name("dataset", &dataset)?,
                id_column: column("id_column", &id_column)?,
                text_column: (!text_column.is_empty()).then_some(text_column),
                vector_column: column("vector_column", &vector_column)?,
                payload_columns,
                metric: metric(metric_value)?,
                ef_search: match ef {
                    0 => DEFAULT_EF_SEARCH,
                    ef => ef_search("ef_search", ef)?,
                },
                retained_generations: retained(retained_generations.unwrap_or(DEFAULT_RETAINED))?,
                create_time: chrono::Utc::now(),
            },
            params: params(config)?.unwrap_or_default(),
            request_id: request_id_of(&rid)?,
        };
        let ticket = self.service.create_index(new).await?;
        Ok(Response::new(build_stream(self.service.clone(), ticket)))
    }

    async fn rebuild_index(
        &self,
        request: Request<pb::RebuildIndexRequest>,
    ) -> Result<Response<Self::RebuildIndexStream>, Status> {
        let pb::RebuildIndexRequest {
            name: index_name,
            config,
            promote,
            request_id: rid,
        } = request.into_inner();
        let index_name = name("index", &index_name)?;
        // A field left 0 keeps the active generation's value, not the default.
        let active = self.service.active_params(&index_name).unwrap_or_default();
        let ticket = self
            .service
            .rebuild_index(
                &index_name,
                convert::params_over(config, active)?,
                promote,
                request_id_of(&rid)?,
            )
            .await?;
        Ok(Response::new(build_stream(self.service.clone(), ticket)))
    }

    async fn cancel_build(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::CancelBuildResponse>, Status> {
        let pb::CancelBuildRequest { index, generation } = request.into_inner();
        let g = self
            .service
            .cancel_build(&name("index", &index)?, generation)?;
        Ok(Response::new(pb::CancelBuildResponse {
            generation: Some(generation_pb(&g, 0)),
        }))
    }

    async fn get_index(
        &self,
        request: Request<pb::GetIndexRequest>,
    ) -> Result<Response<pb::GetIndexResponse>, Status> {
        let pb::GetIndexRequest { name: index_name } = request.into_inner();
        let view = self.service.get_index(&name("index", &index_name)?).await?;
        Ok(Response::new(pb::GetIndexResponse {
            index: Some(index_pb(&view)),
        }))
    }

    async fn list_indexes(
        &self,
        request: Request<pb::ListIndexesRequest>,
    ) -> Result<Response<pb::ListIndexesResponse>, Status> {
        let pb::ListIndexesRequest {
            page_size,
            page_token,
            dataset,
        } = request.into_inner();
        let size = paging::page_size(page_size).map_err(Error::from)?;
        let filters = [dataset.as_str()];
        let after = PageToken::decode(&page_token, &filters).map_err(Error::from)?;
        let views = self
            .service
            .list_indexes((!dataset.is_empty()).then_some(dataset.as_str()));
        let (page, next) = paginate(
            views,
            |v| v.record.name.clone(),
            after.as_ref(),
            size,
            &filters,
        );
        Ok(Response::new(pb::ListIndexesResponse {
            indexes: page.iter().map(index_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn update_index(
        &self,
        request: Request<pb::UpdateIndexRequest>,
    ) -> Result<Response<pb::UpdateIndexResponse>, Status> {
        let pb::UpdateIndexRequest {
            name: index_name,
            ef_search: ef,
            retained_generations,
            request_id: rid,
        } = request.into_inner();
        let ef = ef.map(|v| ef_search("ef_search", v)).transpose()?;
        let retained_generations = retained_generations.map(retained).transpose()?;
        let view = self
            .service
            .update_index(
                &name("index", &index_name)?,
                ef,
                retained_generations,
                request_id_of(&rid)?,
            )
            .await?;
        Ok(Response::new(pb::UpdateIndexResponse {
            index: Some(index_pb(&view)),
        }))
    }

    async fn delete_index(
        &self,
        request: Request<pb::DeleteIndexRequest>,
    ) -> Result<Response<pb::DeleteIndexResponse>, Status> {
        let pb::DeleteIndexRequest {
            name: index_name,
            request_id: rid,
        } = request.into_inner();
        self.service
            .delete_index(&name("index", &index_name)?, request_id_of(&rid)?)
            .await?;
        Ok(Response::new(pb::DeleteIndexResponse {}))
    }

    async fn repair_index(
        &self,
        request: Request<pb::RepairIndexRequest>,
    ) -> Result<Response<pb::RepairIndexResponse>, Status> {
        let pb::RepairIndexRequest {
            name: index_name,
            request_id: rid,
        } = request.into_inner();
        let (view, recovered) = self
            .service
            .repair_index(&name("index", &index_name)?, request_id_of(&rid)?)
            .await?;
        Ok(Response::new(pb::RepairIndexResponse {
            index: Some(index_pb(&view)),
            recovered_generations: recovered,
        }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let pb::SearchRequest {
            index,
            vector,
            k: k_value,
            ef_search: ef,
            exact,
            payload_columns,
            filter,
            id,
            max_distance,
            with_vectors,
            generation,
        } = request.into_inner();
        let queries = match (vector.is_empty(), id.is_empty()) {
            (false, true) => Queries::Vectors(vec![vector]),
            (true, false) => Queries::Id(id),
            (false, false) => {
                return Err(Error::invalid("id", "set either vector or id, not both").into());
            }
            (true, true) => {
                return Err(Error::invalid(
                    "vector",
                    "empty; give the query vector, or the id of a row to search by",
                )
                .into());
            }
        };
        let query = SearchQuery {
            index: name("index", &index)?,
            queries,
            k: k(k_value)?,
            ef_search: ef.map(|v| ef_search("ef_search", v)).transpose()?,
            exact,
            payload_columns: payload_columns.clone(),
            filter: filter::filter_of(filter)?,
            max_distance: max_distance_of(max_distance)?,
            generation: (generation != 0).then_some(generation),
        };
        let result = self.service.search(query).await?;
        let hits = search_hits(&result, &payload_columns, with_vectors)
            .pop()
            .unwrap_or_default();
        Ok(Response::new(pb::SearchResponse {
            hits,
            generation: result.generation.generation,
            search_duration_us: result.took.as_micros() as u64,
            ef_search: result.ef_search,
            k: result.k as u32,
            plan: plan_pb(result.plans.first().copied()) as i32,
            dataset_version: result.generation.dataset_version,
        }))
    }

    async fn batch_search(
        &self,
        request: Request<pb::BatchSearchRequest>,
    ) -> Result<Response<pb::BatchSearchResponse>, Status> {
        let pb::BatchSearchRequest {
            index,
            queries,
            k: k_value,
            ef_search: ef,
            exact,
            payload_columns,
            filter,
            max_distance,
            with_vectors,
        } = request.into_inner();
        if queries.is_empty() || queries.len() > MAX_BATCH_QUERIES {
            return Err(Error::invalid(
                "queries",
                format!(
                    "{} queries given; 1 to {MAX_BATCH_QUERIES} are accepted",
                    queries.len()
                ),
            )
            .into());
        }
        let query = SearchQuery {
            index: name("index", &index)?,
            queries: Queries::Vectors(queries.into_iter().map(|q| q.vector).collect()),
            k: k(k_value)?,
            ef_search: ef.map(|v| ef_search("ef_search", v)).transpose()?,
            exact,
            payload_columns: payload_columns.clone(),
            filter: filter::filter_of(filter)?,
            max_distance: max_distance_of(max_distance)?,
            generation: None,
        };
        let result = self.service.search(query).await?;
        self.bounded(pb::BatchSearchResponse {
            results: search_hits(&result, &payload_columns, with_vectors)
                .into_iter()
                .zip(&result.plans)
                .map(|(hits, plan)| pb::QueryResult {
                    hits,
                    plan: plan_pb(Some(*plan)) as i32,
                })
                .collect(),
            generation: result.generation.generation,
            search_duration_us: result.took.as_micros() as u64,
            ef_search: result.ef_search,
            k: result.k as u32,
            dataset_version: result.generation.dataset_version,
        })
    }

    async fn create_eval_set(
        &self,
        request: Request<pb::CreateEvalSetRequest>,
    ) -> Result<Response<pb::CreateEvalSetResponse>, Status> {
        trials::create_eval_set(&self.trials, request.into_inner()).await
    }

    async fn get_eval_set(
        &self,
        request: Request<pb::GetEvalSetRequest>,
    ) -> Result<Response<pb::GetEvalSetResponse>, Status> {
        trials::get_eval_set(&self.trials, request.into_inner()).await
    }

    async fn list_eval_sets(
        &self,
        request: Request<pb::ListEvalSetsRequest>,
    ) -> Result<Response<pb::ListEvalSetsResponse>, Status> {
        trials::list_eval_sets(&self.trials, request.into_inner()).await
    }

    async fn delete_eval_set(
        &self,
        request: Request<pb::DeleteEvalSetRequest>,
    ) -> Result<Response<pb::DeleteEvalSetResponse>, Status> {
        trials::delete_eval_set(&self.trials, request.into_inner()).await
    }

    async fn run_trial(
        &self,
        request: Request<pb::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        trials::run_trial(&self.trials, request.into_inner()).await
    }

    async fn cancel_trial_run(
        &self,
        request: Request<pb::CancelTrialRunRequest>,
    ) -> Result<Response<pb::CancelTrialRunResponse>, Status> {
        trials::cancel_trial_run(&self.trials, request.into_inner())
    }

    async fn list_trials(
        &self,
        request: Request<pb::ListTrialsRequest>,
    ) -> Result<Response<pb::ListTrialsResponse>, Status> {
        trials::list_trials(&self.trials, request.into_inner()).await
    }

    async fn get_trial(
        &self,
        request: Request<pb::GetTrialRequest>,
    ) -> Result<Response<pb::GetTrialResponse>, Status> {
        trials::get_trial(&self.trials, request.into_inner()).await
    }

    async fn best_trial(
        &self,
        request: Request<pb::BestTrialRequest>,
    ) -> Result<Response<pb::BestTrialResponse>, Status> {
        trials::best_trial(&self.trials, request.into_inner()).await
    }

    async fn tune_index(
        &self,
        request: Request<pb::TuneIndexRequest>,
    ) -> Result<Response<Self::TuneIndexStream>, Status> {
        trials::tune_index(&self.trials, request.into_inner()).await
    }

    async fn get_cache_stats(
        &self,
        request: Request<pb::GetCacheStatsRequest>,
    ) -> Result<Response<pb::GetCacheStatsResponse>, Status> {
        let pb::GetCacheStatsRequest {} = request.into_inner();
        let stats = self.service.cache().stats();
        let entries: Vec<pb::CacheEntry> = stats
            .entries
            .iter()
            .map(|e| pb::CacheEntry {
                dataset: e.spec.dataset.clone(),
                vector_column: e.spec.vector_column.clone(),
                vector_count: e.len() as u64,
                dimensions: e.dim as u32,
                memory_bytes: e.memory_bytes(),
                load_duration_ms: e.load_ms,
                load_time: Some(timestamp(e.load_time)),
                dataset_version: e.spec.version,
                normalized: e.spec.normalize,
                row_columns: e.spec.row_columns.clone(),
                held_by: generation_refs(self.service.holders(e)),
            })
            .collect();
        Ok(Response::new(pb::GetCacheStatsResponse {
            total_bytes: entries.iter().map(|e| e.memory_bytes).sum(),
            exclusive_bytes: entries
                .iter()
                .filter(|e| e.held_by.is_empty())
                .map(|e| e.memory_bytes)
                .sum(),
            entries,
            hits: stats.hits,
            misses: stats.misses,
            budget_bytes: stats.budget_bytes,
        }))
    }

    async fn evict_cache(
        &self,
        request: Request<pb::EvictCacheRequest>,
    ) -> Result<Response<pb::EvictCacheResponse>, Status> {
        let pb::EvictCacheRequest { dataset } = request.into_inner();
        let evicted = self
            .service
            .evict_cache((!dataset.is_empty()).then_some(dataset.as_str()));
        Ok(Response::new(pb::EvictCacheResponse {
            evicted_entries: evicted.entries,
            freed_bytes: evicted.freed_bytes,
            pinned_bytes: evicted.pinned_bytes,
            pinned_by: generation_refs(evicted.pinned_by),
        }))
    }

    async fn list_generations(
        &self,
        request: Request<pb::ListGenerationsRequest>,
    ) -> Result<Response<pb::ListGenerationsResponse>, Status> {
        let pb::ListGenerationsRequest {
            index,
            page_size,
            page_token,
        } = request.into_inner();
        let index = name("index", &index)?;
        let size = paging::page_size(page_size).map_err(Error::from)?;
        let filters = [index.as_str()];
        let after = PageToken::decode(&page_token, &filters).map_err(Error::from)?;
        let (record, generations) = self.service.list_generations(&index)?;
        // Newest first: the sort key counts down, zero-padded to sort as text.
        let key = |g: &GenerationRecord| format!("{:020}", u64::MAX - g.generation);
        let (page, next) = paginate(generations, key, after.as_ref(), size, &filters);
        Ok(Response::new(pb::ListGenerationsResponse {
            generations: page
                .iter()
                .map(|g| generation_pb(g, record.active))
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn promote_generation(
        &self,
        request: Request<pb::PromoteGenerationRequest>,
    ) -> Result<Response<pb::PromoteGenerationResponse>, Status> {
        let pb::PromoteGenerationRequest {
            index,
            generation,
            expected_active_generation,
            request_id: rid,
        } = request.into_inner();
        let view = self
            .service
            .promote(
                &name("index", &index)?,
                generation,
                expected_active_generation,
                request_id_of(&rid)?,
            )
            .await?;
        Ok(Response::new(pb::PromoteGenerationResponse {
            index: Some(index_pb(&view)),
        }))
    }

    async fn rollback_generation(
        &self,
        request: Request<pb::RollbackGenerationRequest>,
    ) -> Result<Response<pb::RollbackGenerationResponse>, Status> {
        let pb::RollbackGenerationRequest {
            index,
            expected_active_generation,
            request_id: rid,
        } = request.into_inner();
        let view = self
            .service
            .rollback(
                &name("index", &index)?,
                expected_active_generation,
                request_id_of(&rid)?,
            )
            .await?;
        Ok(Response::new(pb::RollbackGenerationResponse {
            index: Some(index_pb(&view)),
        }))
    }

    async fn delete_generation(
        &self,
        request: Request<pb::DeleteGenerationRequest>,
    ) -> Result<Response<pb::DeleteGenerationResponse>, Status> {
        let pb::DeleteGenerationRequest {
            index,
            generation,
            request_id: rid,
        } = request.into_inner();
        self.service
            .delete_generation(&name("index", &index)?, generation, request_id_of(&rid)?)
            .await?;
        Ok(Response::new(pb::DeleteGenerationResponse {}))
    }
}

/// (index, generation) pairs as proto references.
fn generation_refs(pairs: Vec<(String, u64)>) -> Vec<pb::GenerationRef> {
    pairs
        .into_iter()
        .map(|(index, generation)| pb::GenerationRef { index, generation })
        .collect()
}

fn plan_pb(plan: Option<Plan>) -> pb::SearchPlan {
    match plan {
        None => pb::SearchPlan::Unspecified,
        Some(Plan::Graph) => pb::SearchPlan::Graph,
        Some(Plan::FilteredGraph) => pb::SearchPlan::FilteredGraph,
        Some(Plan::ExactRows) => pb::SearchPlan::ExactRows,
        Some(Plan::Exact) => pb::SearchPlan::Exact,
    }
}

/// A distance threshold: any finite number (dot-product distances are
/// negative).
fn max_distance_of(value: Option<f32>) -> Result<Option<f32>, Error> {
    match value {
        Some(d) if !d.is_finite() => Err(Error::invalid(
            "max_distance",
            format!("{d} is not a finite distance"),
        )),
        other => Ok(other),
    }
}
