//! The tonic adapter. It only converts and delegates.

use std::pin::Pin;

use futures_core::Stream;
use lakehouse_proto::ingest::v1;
use lakehouse_shared::status::not_yet_implemented;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `lakehouse.ingest.v1.IngestService`.
#[derive(Debug, Default, Clone)]
pub struct IngestServiceImpl {
    _private: (),
}

#[tonic::async_trait]
impl v1::ingest_service_server::IngestService for IngestServiceImpl {
    type IngestPostgresStream = BoxStream<v1::IngestPostgresResponse>;

    async fn ingest_postgres(
        &self,
        _request: Request<v1::IngestPostgresRequest>,
    ) -> Result<Response<Self::IngestPostgresStream>, Status> {
        Err(not_yet_implemented("ingest (IngestPostgres)"))
    }

    async fn ingest_file(
        &self,
        _request: Request<Streaming<v1::IngestFileRequest>>,
    ) -> Result<Response<v1::IngestFileResponse>, Status> {
        Err(not_yet_implemented("ingest (IngestFile)"))
    }

    async fn list_ingests(
        &self,
        _request: Request<v1::ListIngestsRequest>,
    ) -> Result<Response<v1::ListIngestsResponse>, Status> {
        Err(not_yet_implemented("ingest (ListIngests)"))
    }

    async fn get_ingest(
        &self,
        _request: Request<v1::GetIngestRequest>,
    ) -> Result<Response<v1::GetIngestResponse>, Status> {
        Err(not_yet_implemented("ingest (GetIngest)"))
    }
}
