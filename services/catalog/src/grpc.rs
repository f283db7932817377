//! The tonic adapter. It only converts and delegates.

use lakehouse_proto::catalog::v1;
use lakehouse_shared::status::not_yet_implemented;
use tonic::{Request, Response, Status};

/// Implements `lakehouse.catalog.v1.CatalogService`.
#[derive(Debug, Default, Clone)]
pub struct CatalogServiceImpl {
    _private: (),
}

#[tonic::async_trait]
impl v1::catalog_service_server::CatalogService for CatalogServiceImpl {
    async fn create_dataset(
        &self,
        _request: Request<v1::CreateDatasetRequest>,
    ) -> Result<Response<v1::CreateDatasetResponse>, Status> {
        Err(not_yet_implemented("catalog (CreateDataset)"))
    }

    async fn get_dataset(
        &self,
        _request: Request<v1::GetDatasetRequest>,
    ) -> Result<Response<v1::GetDatasetResponse>, Status> {
        Err(not_yet_implemented("catalog (GetDataset)"))
    }

    async fn list_datasets(
        &self,
        _request: Request<v1::ListDatasetsRequest>,
    ) -> Result<Response<v1::ListDatasetsResponse>, Status> {
        Err(not_yet_implemented("catalog (ListDatasets)"))
    }

    async fn delete_dataset(
        &self,
        _request: Request<v1::DeleteDatasetRequest>,
    ) -> Result<Response<v1::DeleteDatasetResponse>, Status> {
        Err(not_yet_implemented("catalog (DeleteDataset)"))
    }

    async fn commit_files(
        &self,
        _request: Request<v1::CommitFilesRequest>,
    ) -> Result<Response<v1::CommitFilesResponse>, Status> {
        Err(not_yet_implemented("catalog (CommitFiles)"))
    }

    async fn resync_dataset(
        &self,
        _request: Request<v1::ResyncDatasetRequest>,
    ) -> Result<Response<v1::ResyncDatasetResponse>, Status> {
        Err(not_yet_implemented("catalog (ResyncDataset)"))
    }

    async fn resync_missing(
        &self,
        _request: Request<v1::ResyncMissingRequest>,
    ) -> Result<Response<v1::ResyncMissingResponse>, Status> {
        Err(not_yet_implemented("catalog (ResyncMissing)"))
    }
}
