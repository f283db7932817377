//! The tonic adapter. It only converts and delegates.

use std::pin::Pin;

use futures_core::Stream;
use lakehouse_proto::vector::v1;
use lakehouse_shared::status::not_yet_implemented;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `lakehouse.vector.v1.VectorService`.
#[derive(Debug, Default, Clone)]
pub struct VectorServiceImpl {
    _private: (),
}

#[tonic::async_trait]
impl v1::vector_service_server::VectorService for VectorServiceImpl {
    type CreateIndexStream = BoxStream<v1::CreateIndexResponse>;
    type RunTrialStream = BoxStream<v1::RunTrialResponse>;
    type TuneIndexStream = BoxStream<v1::TuneIndexResponse>;

    async fn create_index(
        &self,
        _request: Request<v1::CreateIndexRequest>,
    ) -> Result<Response<Self::CreateIndexStream>, Status> {
        Err(not_yet_implemented("vector search (CreateIndex)"))
    }

    async fn get_index(
        &self,
        _request: Request<v1::GetIndexRequest>,
    ) -> Result<Response<v1::GetIndexResponse>, Status> {
        Err(not_yet_implemented("vector search (GetIndex)"))
    }

    async fn list_indexes(
        &self,
        _request: Request<v1::ListIndexesRequest>,
    ) -> Result<Response<v1::ListIndexesResponse>, Status> {
        Err(not_yet_implemented("vector search (ListIndexes)"))
    }

    async fn delete_index(
        &self,
        _request: Request<v1::DeleteIndexRequest>,
    ) -> Result<Response<v1::DeleteIndexResponse>, Status> {
        Err(not_yet_implemented("vector search (DeleteIndex)"))
    }

    async fn search(
        &self,
        _request: Request<v1::SearchRequest>,
    ) -> Result<Response<v1::SearchResponse>, Status> {
        Err(not_yet_implemented("vector search (Search)"))
    }

    async fn autogen_eval_set(
        &self,
        _request: Request<v1::AutogenEvalSetRequest>,
    ) -> Result<Response<v1::AutogenEvalSetResponse>, Status> {
        Err(not_yet_implemented("vector search (AutogenEvalSet)"))
    }

    async fn run_trial(
        &self,
        _request: Request<v1::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        Err(not_yet_implemented("vector search (RunTrial)"))
    }

    async fn list_trials(
        &self,
        _request: Request<v1::ListTrialsRequest>,
    ) -> Result<Response<v1::ListTrialsResponse>, Status> {
        Err(not_yet_implemented("vector search (ListTrials)"))
    }

    async fn get_trial(
        &self,
        _request: Request<v1::GetTrialRequest>,
    ) -> Result<Response<v1::GetTrialResponse>, Status> {
        Err(not_yet_implemented("vector search (GetTrial)"))
    }

    async fn best_trial(
        &self,
        _request: Request<v1::BestTrialRequest>,
    ) -> Result<Response<v1::BestTrialResponse>, Status> {
        Err(not_yet_implemented("vector search (BestTrial)"))
    }

    async fn tune_index(
        &self,
        _request: Request<v1::TuneIndexRequest>,
    ) -> Result<Response<Self::TuneIndexStream>, Status> {
        Err(not_yet_implemented("vector search (TuneIndex)"))
    }

    async fn get_cache_stats(
        &self,
        _request: Request<v1::GetCacheStatsRequest>,
    ) -> Result<Response<v1::GetCacheStatsResponse>, Status> {
        Err(not_yet_implemented("vector search (GetCacheStats)"))
    }

    async fn evict_cache(
        &self,
        _request: Request<v1::EvictCacheRequest>,
    ) -> Result<Response<v1::EvictCacheResponse>, Status> {
        Err(not_yet_implemented("vector search (EvictCache)"))
    }

    async fn list_generations(
        &self,
        _request: Request<v1::ListGenerationsRequest>,
    ) -> Result<Response<v1::ListGenerationsResponse>, Status> {
        Err(not_yet_implemented("vector search (ListGenerations)"))
    }

    async fn promote_generation(
        &self,
        _request: Request<v1::PromoteGenerationRequest>,
    ) -> Result<Response<v1::PromoteGenerationResponse>, Status> {
        Err(not_yet_implemented("vector search (PromoteGeneration)"))
    }

    async fn rollback_generation(
        &self,
        _request: Request<v1::RollbackGenerationRequest>,
    ) -> Result<Response<v1::RollbackGenerationResponse>, Status> {
        Err(not_yet_implemented("vector search (RollbackGeneration)"))
    }
}
