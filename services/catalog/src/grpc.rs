//! The tonic adapter: validates and converts requests (destructuring every
//! message, so a new proto field fails the build until it is handled),
//! delegates to [`Catalog`], converts results. No catalog logic lives here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lakehouse_proto::catalog::v1::{self as pb, catalog_service_server::CatalogService};
use lakehouse_shared::paging::{decode_token as decode_page_token, encode_token};
use lakehouse_shared::time::to_proto as timestamp;
use tonic::{Request, Response, Status};

use crate::Catalog;
use crate::error::Error;
use crate::model::{
    Column, Commit, CommitMode, DataFile, Dataset, DatasetName, Lineage, ListQuery, NewDataset,
    Schema, SourceKind, View, is_name_byte,
};
use crate::resync::{FileChangeKind, ResyncReport};

/// Default and largest page of ListDatasets.
const LIST_PAGE: (usize, usize) = (100, 1000);

/// Implements `lakehouse.catalog.v1.CatalogService`.
#[derive(Debug, Clone)]
pub struct CatalogGrpc {
    catalog: Arc<Catalog>,
}

impl CatalogGrpc {
    /// The adapter over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }
}

fn from_timestamp(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let Some(ts) = ts else { return Ok(None) };
    lakehouse_shared::time::from_proto(&ts)
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidRequest(format!("{field} is out of range or has negative nanos"))
        })
}

fn name(text: &str) -> Result<DatasetName, Error> {
    DatasetName::parse(text)
}

fn view(value: i32, default: View) -> Result<View, Error> {
    match pb::DatasetView::try_from(value) {
        Ok(pb::DatasetView::Unspecified) => Ok(default),
        Ok(pb::DatasetView::Basic) => Ok(View::Basic),
        Ok(pb::DatasetView::Full) => Ok(View::Full),
        Err(_) => Err(Error::InvalidRequest(format!("unknown view {value}"))),
    }
}

fn schema(given: Option<pb::Schema>) -> Result<Option<Schema>, Error> {
    let Some(pb::Schema { columns }) = given else {
        return Ok(None);
    };
    let columns = columns
        .into_iter()
        .map(|c| {
            let pb::Column {
                name,
                data_type,
                nullable,
            } = c;
            Column {
                name,
                data_type,
                nullable,
            }
        })
        .collect();
    Schema::new(columns).map(Some)
}

fn schema_to_pb(schema: Schema) -> pb::Schema {
    pb::Schema {
        columns: schema
            .columns
            .into_iter()
            .map(|c| {
                let Column {
                    name,
                    data_type,
                    nullable,
                } = c;
                pb::Column {
                    name,
                    data_type,
                    nullable,
                }
            })
            .collect(),
    }
}

fn file(given: pb::DataFile) -> DataFile {
    let pb::DataFile {
        key,
        size_bytes,
        row_count,
        etag,
    } = given;
    DataFile {
        key,
        size_bytes,
        row_count,
        etag,
    }
}

fn file_to_pb(file: DataFile) -> pb::DataFile {
    let DataFile {
        key,
        size_bytes,
        row_count,
        etag,
    } = file;
    pb::DataFile {
        key,
        size_bytes,
        row_count,
        etag,
    }
}

fn lineage(given: Option<pb::Lineage>) -> Result<Option<Lineage>, Error> {
    let Some(pb::Lineage {
        source_kind,
        source,
        query,
        ingest_id,
        start_time,
        finish_time,
        snapshot_time,
        rows,
        bytes,
    }) = given
    else {
        return Ok(None);
    };
    let source_kind = match pb::SourceKind::try_from(source_kind) {
        Ok(pb::SourceKind::Unspecified) => SourceKind::Unspecified,
        Ok(pb::SourceKind::Postgres) => SourceKind::Postgres,
        Ok(pb::SourceKind::File) => SourceKind::File,
        Ok(pb::SourceKind::Manual) => SourceKind::Manual,
        Ok(pb::SourceKind::Resync) => SourceKind::Resync,
        Err(_) => {
            return Err(Error::InvalidRequest(format!(
                "unknown lineage source_kind {source_kind}"
            )));
        }
    };
    Ok(Some(
        Lineage {
            source_kind,
            source,
            query,
            ingest_id,
            start_time: from_timestamp("lineage.start_time", start_time)?,
            finish_time: from_timestamp("lineage.finish_time", finish_time)?,
            snapshot_time: from_timestamp("lineage.snapshot_time", snapshot_time)?,
            rows,
            bytes,
        }
        .redacted(),
    ))
}

fn lineage_to_pb(lineage: Lineage) -> pb::Lineage {
    let Lineage {
        source_kind,
        source,
        query,
        ingest_id,
        start_time,
        finish_time,
        snapshot_time,
        rows,
        bytes,
    } = lineage;
    let source_kind = match source_kind {
        SourceKind::Unspecified => pb::SourceKind::Unspecified,
        SourceKind::Postgres => pb::SourceKind::Postgres,
        SourceKind::File => pb::SourceKind::File,
        SourceKind::Manual => pb::SourceKind::Manual,
        SourceKind::Resync => pb::SourceKind::Resync,
    };
    pb::Lineage {
        source_kind: source_kind as i32,
        source,
        query,
        ingest_id,
        start_time: start_time.map(timestamp),
        finish_time: finish_time.map(timestamp),
        snapshot_time: snapshot_time.map(timestamp),
        rows,
        bytes,
    }
}

fn dataset_to_pb(dataset: Dataset) -> pb::Dataset {
    let Dataset {
        name,
        bucket,
        description,
        files,
        file_count,
        schema,
        row_count,
        size_bytes,
        lineage,
        create_time,
        update_time,
        version,
    } = dataset;
    pb::Dataset {
        name: name.as_str().to_owned(),
        bucket,
        description,
        files: files
            .unwrap_or_default()
            .into_iter()
            .map(file_to_pb)
            .collect(),
        file_count,
        schema: Some(schema_to_pb(schema)),
        row_count,
        size_bytes,
        lineage: Some(lineage_to_pb(lineage)),
        create_time: Some(timestamp(create_time)),
        update_time: Some(timestamp(update_time)),
        version,
    }
}

fn report_to_pb(report: ResyncReport) -> pb::ResyncReport {
    let ResyncReport {
        dataset,
        drifted,
        applied,
        field_changes,
        file_changes,
        problems,
        bytes_read,
        version,
    } = report;
    pb::ResyncReport {
        dataset,
        drifted,
        applied,
        field_changes: field_changes
            .into_iter()
            .map(|c| pb::FieldChange {
                field: c.field,
                before: c.before,
                after: c.after,
            })
            .collect(),
        file_changes: file_changes
            .into_iter()
            .map(|c| pb::FileChange {
                key: c.key,
                kind: match c.kind {
                    FileChangeKind::Added => pb::FileChangeKind::Added,
                    FileChangeKind::Removed => pb::FileChangeKind::Removed,
                    FileChangeKind::Updated => pb::FileChangeKind::Updated,
                } as i32,
                before: c.before.map(file_to_pb),
                after: c.after.map(file_to_pb),
            })
            .collect(),
        problems: problems
            .into_iter()
            .map(|p| pb::FileProblem {
                key: p.key,
                error: p.error,
            })
            .collect(),
        bytes_read,
        version,
    }
}

fn page_size(requested: i32) -> Result<usize, Error> {
    let (default, max) = LIST_PAGE;
    match usize::try_from(requested) {
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
        Err(_) => Err(Error::InvalidRequest(
            "page_size must not be negative".to_owned(),
        )),
    }
}

fn decode_token(token: &str) -> Result<Option<String>, Error> {
    decode_page_token(token).map_err(|e| Error::InvalidRequest(e.to_string()))
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn create_dataset(
        &self,
        request: Request<pb::CreateDatasetRequest>,
    ) -> Result<Response<pb::CreateDatasetResponse>, Status> {
        let pb::CreateDatasetRequest {
            name: dataset_name,
            bucket,
            description,
            schema: given_schema,
        } = request.into_inner();
        let dataset = NewDataset {
            name: name(&dataset_name)?,
            bucket,
            description,
            schema: schema(given_schema)?.unwrap_or_default(),
        };
        let dataset = self.catalog.create(dataset).await?;
        Ok(Response::new(pb::CreateDatasetResponse {
            dataset: Some(dataset_to_pb(dataset)),
        }))
    }

    async fn get_dataset(
        &self,
        request: Request<pb::GetDatasetRequest>,
    ) -> Result<Response<pb::GetDatasetResponse>, Status> {
        let pb::GetDatasetRequest {
            name: dataset_name,
            view: given_view,
        } = request.into_inner();
        let dataset = self
            .catalog
            .get(&name(&dataset_name)?, view(given_view, View::Full)?)
            .await?;
        Ok(Response::new(pb::GetDatasetResponse {
            dataset: Some(dataset_to_pb(dataset)),
        }))
    }

    async fn list_datasets(
        &self,
        request: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        let pb::ListDatasetsRequest {
            name_prefix,
            page_size: given_page_size,
            page_token,
            view: given_view,
        } = request.into_inner();
        if !name_prefix.bytes().all(is_name_byte) {
            return Err(Error::InvalidRequest(
                "name_prefix may only hold lowercase letters, digits, '_', '-' and '.'".to_owned(),
            )
            .into());
        }
        let limit = page_size(given_page_size)?;
        let query = ListQuery {
            prefix: name_prefix,
            after: decode_token(&page_token)?,
            limit,
            view: view(given_view, View::Basic)?,
        };
        let datasets = self.catalog.list(&query).await?;
        let next_page_token = match datasets.last() {
            Some(last) if datasets.len() == limit => encode_token(last.name.as_str()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListDatasetsResponse {
            datasets: datasets.into_iter().map(dataset_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn delete_dataset(
        &self,
        request: Request<pb::DeleteDatasetRequest>,
    ) -> Result<Response<pb::DeleteDatasetResponse>, Status> {
        let pb::DeleteDatasetRequest {
            name: dataset_name,
            delete_files,
            expected_version,
        } = request.into_inner();
        let deleted = self
            .catalog
            .delete(&name(&dataset_name)?, expected_version, delete_files)
            .await?;
        Ok(Response::new(pb::DeleteDatasetResponse {
            deleted_files: deleted.files,
        }))
    }

    async fn commit_files(
        &self,
        request: Request<pb::CommitFilesRequest>,
    ) -> Result<Response<pb::CommitFilesResponse>, Status> {
        let pb::CommitFilesRequest {
            name: dataset_name,
            expected_version,
            mode,
            add_files,
            remove_keys,
            schema: given_schema,
            lineage: given_lineage,
            bucket,
        } = request.into_inner();
        let mode = match pb::CommitMode::try_from(mode) {
            Ok(pb::CommitMode::Append) => CommitMode::Append,
            Ok(pb::CommitMode::Replace) => CommitMode::Replace,
            Ok(pb::CommitMode::Unspecified) | Err(_) => {
                return Err(Error::InvalidRequest(
                    "mode must be COMMIT_MODE_APPEND or COMMIT_MODE_REPLACE".to_owned(),
                )
                .into());
            }
        };
        let commit = Commit {
            name: name(&dataset_name)?,
            expected_version,
            mode,
            add_files: add_files.into_iter().map(file).collect(),
            remove_keys,
            schema: schema(given_schema)?,
            lineage: lineage(given_lineage)?,
            bucket,
        };
        let dataset = self.catalog.commit(commit).await?;
        Ok(Response::new(pb::CommitFilesResponse {
            dataset: Some(dataset_to_pb(dataset)),
        }))
    }

    async fn resync_dataset(
        &self,
        request: Request<pb::ResyncDatasetRequest>,
    ) -> Result<Response<pb::ResyncDatasetResponse>, Status> {
        let pb::ResyncDatasetRequest {
            name: dataset_name,
            dry_run,
        } = request.into_inner();
        let report = self.catalog.resync(&name(&dataset_name)?, dry_run).await?;
        Ok(Response::new(pb::ResyncDatasetResponse {
            report: Some(report_to_pb(report)),
        }))
    }

    async fn resync_missing(
        &self,
        request: Request<pb::ResyncMissingRequest>,
    ) -> Result<Response<pb::ResyncMissingResponse>, Status> {
        let pb::ResyncMissingRequest { dry_run } = request.into_inner();
        let report = self.catalog.resync_missing(dry_run).await?;
        Ok(Response::new(pb::ResyncMissingResponse {
            reports: report.reports.into_iter().map(report_to_pb).collect(),
            datasets_checked: report.datasets_checked,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = encode_token("hr.employees");
        assert_eq!(
            decode_token(&token).expect("valid").as_deref(),
            Some("hr.employees")
        );
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }
}
