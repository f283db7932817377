//! The tonic adapter: validates and converts requests (destructuring every
//! message, so a new proto field fails the build until it is handled),
//! delegates to [`Catalog`], converts results. No catalog logic lives here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lakehouse_proto::catalog::v1::{self as pb, catalog_service_server::CatalogService};
use lakehouse_shared::paging::PageToken;
use lakehouse_shared::time::to_proto as timestamp;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::model::{
    Column, Commit, CommitMode, DataFile, Dataset, DatasetName, Lineage, LineageEvent,
    LineageEventKind, ListQuery, NewDataset, Schema, SourceKind, View, is_name_byte,
};
use crate::resync::{FileChangeKind, FileProblem, ResyncReport};
use crate::{Catalog, Deleted};

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
            Column::parse(name, &data_type, nullable)
        })
        .collect::<Result<Vec<_>, Error>>()?;
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
                    data_type: data_type.to_string(),
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
        lineage_history,
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
        lineage_history: lineage_history.into_iter().map(event_to_pb).collect(),
    }
}

fn event_to_pb(event: LineageEvent) -> pb::LineageEvent {
    let LineageEvent {
        dataset_version,
        kind,
        lineage,
        added_columns,
        time,
    } = event;
    let kind = match kind {
        LineageEventKind::Unspecified => pb::LineageEventKind::Unspecified,
        LineageEventKind::Commit => pb::LineageEventKind::Commit,
        LineageEventKind::Resync => pb::LineageEventKind::Resync,
        LineageEventKind::SchemaChange => pb::LineageEventKind::SchemaChange,
    };
    pb::LineageEvent {
        dataset_version,
        kind: kind as i32,
        lineage: Some(lineage_to_pb(lineage)),
        added_columns,
        time: Some(timestamp(time)),
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
        uncommitted_keys,
        rows_lost,
        files_lost,
        refused_row_loss,
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
        problems: problems.into_iter().map(report_problem_to_pb).collect(),
        bytes_read,
        version,
        uncommitted_keys,
        rows_lost,
        files_lost,
        refused_row_loss,
    }
}

/// The shared page-size rule (0: 100, capped at 1000, negative refused).
fn page_size(requested: i32) -> Result<usize, Error> {
    lakehouse_shared::paging::page_size(requested).map_err(|e| Error::InvalidRequest(e.to_string()))
}

/// The position a page token continues after, checked against the
/// request's filters (the shared v1 token).
fn decode_token(token: &str, filters: &[&str]) -> Result<Option<String>, Error> {
    Ok(PageToken::decode(token, filters)?.map(|t| t.after))
}

/// Splits `items` (fetched with one more than `limit`) into the page and
/// the token for the next page, which exists only if more items follow:
/// no empty last page.
fn page<T>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> &str,
    filters: &[&str],
) -> (Vec<T>, String) {
    if items.len() <= limit {
        return (items, String::new());
    }
    items.truncate(limit);
    let next = items
        .last()
        .map(|last| PageToken::encode(key(last), filters))
        .unwrap_or_default();
    (items, next)
}

fn view_filter(view: View) -> &'static str {
    match view {
        View::Basic => "basic",
        View::Full => "full",
    }
}

fn report_problem_to_pb(problem: FileProblem) -> pb::FileProblem {
    let FileProblem { key, error } = problem;
    pb::FileProblem { key, error }
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
        let view = view(given_view, View::Basic)?;
        let filters = [name_prefix.as_str(), view_filter(view)];
        let after = decode_token(&page_token, &filters)?;
        let query = ListQuery {
            prefix: name_prefix.clone(),
            after,
            // One more than the page, to know whether another page follows.
            limit: limit + 1,
            view,
        };
        let datasets = self.catalog.list(&query).await?;
        let (datasets, next_page_token) = page(datasets, limit, |d| d.name.as_str(), &filters);
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
        let Deleted { files, left } = deleted;
        Ok(Response::new(pb::DeleteDatasetResponse {
            deleted_files: files,
            files_left: left.into_iter().map(report_problem_to_pb).collect(),
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
            request_id,
        } = request.into_inner();
        let request_id = lakehouse_shared::request_id::parse(&request_id).map_err(Error::from)?;
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
            request_id,
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
            allow_row_loss,
        } = request.into_inner();
        let report = self
            .catalog
            .resync(&name(&dataset_name)?, dry_run, allow_row_loss)
            .await?;
        Ok(Response::new(pb::ResyncDatasetResponse {
            report: Some(report_to_pb(report)),
        }))
    }

    async fn list_dataset_files(
        &self,
        request: Request<pb::ListDatasetFilesRequest>,
    ) -> Result<Response<pb::ListDatasetFilesResponse>, Status> {
        let pb::ListDatasetFilesRequest {
            name: dataset_name,
            page_size: given_page_size,
            page_token,
        } = request.into_inner();
        let dataset_name = name(&dataset_name)?;
        let limit = page_size(given_page_size)?;
        let filters = [dataset_name.as_str()];
        let after = decode_token(&page_token, &filters)?;
        let (version, files) = self
            .catalog
            .list_files(&dataset_name, after.as_deref(), limit + 1)
            .await?;
        let (files, next_page_token) = page(files, limit, |f| f.key.as_str(), &filters);
        Ok(Response::new(pb::ListDatasetFilesResponse {
            files: files.into_iter().map(file_to_pb).collect(),
            next_page_token,
            version,
        }))
    }

    async fn list_lineage_events(
        &self,
        request: Request<pb::ListLineageEventsRequest>,
    ) -> Result<Response<pb::ListLineageEventsResponse>, Status> {
        let pb::ListLineageEventsRequest {
            name: dataset_name,
            page_size: given_page_size,
            page_token,
        } = request.into_inner();
        let dataset_name = name(&dataset_name)?;
        let limit = page_size(given_page_size)?;
        // Bound to the name and to this listing, so a ListDatasetFiles
        // token for the same dataset is refused here.
        let filters = [dataset_name.as_str(), "lineage"];
        let before = decode_token(&page_token, &filters)?
            .map(|after| after.parse::<i64>())
            .transpose()
            .map_err(|_| {
                Error::InvalidRequest("page_token is not from ListLineageEvents".into())
            })?;
        let (version, events) = self
            .catalog
            .list_lineage(&dataset_name, before, limit + 1)
            .await?;
        let numbered: Vec<(String, LineageEvent)> = events
            .into_iter()
            .map(|(number, event)| (number.to_string(), event))
            .collect();
        let (events, next_page_token) = page(numbered, limit, |(n, _)| n.as_str(), &filters);
        Ok(Response::new(pb::ListLineageEventsResponse {
            events: events.into_iter().map(|(_, e)| event_to_pb(e)).collect(),
            next_page_token,
            version,
        }))
    }

    async fn resync_missing(
        &self,
        request: Request<pb::ResyncMissingRequest>,
    ) -> Result<Response<pb::ResyncMissingResponse>, Status> {
        let pb::ResyncMissingRequest {
            dry_run,
            allow_row_loss,
        } = request.into_inner();
        let report = self.catalog.resync_missing(dry_run, allow_row_loss).await?;
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
    fn tokens_round_trip_and_bind_filters() {
        let token = PageToken::encode("hr.employees", &["hr.", "basic"]);
        assert_eq!(
            decode_token(&token, &["hr.", "basic"])
                .expect("valid")
                .as_deref(),
            Some("hr.employees")
        );
        assert!(decode_token(&token, &["hr.", "full"]).is_err());
        assert!(decode_token("zz", &[]).is_err());
        assert!(decode_token("abc", &[]).is_err());
    }

    #[test]
    fn pages_have_no_empty_last_page() {
        let (items, next) = page(vec!["a", "b"], 2, |s| s, &[]);
        assert_eq!((items.len(), next.as_str()), (2, ""));
        let (items, next) = page(vec!["a", "b", "c"], 2, |s| s, &[]);
        assert_eq!(items, ["a", "b"]);
        assert!(!next.is_empty());
    }
}
