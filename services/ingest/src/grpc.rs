//! The tonic adapter: validates and converts requests (destructuring every
//! field, so a new proto field breaks the build until it is handled),
//! delegates to [`Ingestor`], converts results. No ingest logic lives here.
//!
//! A failed IngestPostgres ends its stream with the error status (its code
//! says why: UNAUTHENTICATED for refused credentials, INVALID_ARGUMENT for
//! an unsupported column type, …); a successful one ends with the finished
//! `Ingest`. Both are recorded for ListIngests/GetIngest.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use lakehouse_proto::ingest::v1::{self as pb, ingest_service_server::IngestService};
use lakehouse_shared::secrets::SecretString;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::file_ingest::{CsvSettings, DEFAULT_INFER_ROWS, FileFormat, FileRequest};
use crate::pg_schema::{Source, normalise_query};
use crate::pipeline::{Mode, Target, timestamp};
use crate::postgres_ingest::PostgresRequest;
use crate::registry::{IngestRecord, Phase, State};
use crate::service::{Event, Ingestor};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Default and largest page of ListIngests.
const PAGE: (usize, usize) = (50, 1000);

/// Implements `lakehouse.ingest.v1.IngestService`.
#[derive(Debug, Clone)]
pub struct IngestGrpc {
    ingestor: Arc<Ingestor>,
}

impl IngestGrpc {
    /// The adapter over `ingestor`.
    pub fn new(ingestor: Arc<Ingestor>) -> Self {
        Self { ingestor }
    }
}

/// A new ingest id: UTC time first, so ids (and part prefixes) sort by start.
fn new_ingest_id() -> String {
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn mode(value: i32) -> Result<Mode, Status> {
    match pb::IngestMode::try_from(value) {
        Ok(pb::IngestMode::Unspecified | pb::IngestMode::Create) => Ok(Mode::Create),
        Ok(pb::IngestMode::Append) => Ok(Mode::Append),
        Ok(pb::IngestMode::Replace) => Ok(Mode::Replace),
        Err(_) => Err(Status::invalid_argument(format!(
            "mode {value} is not an IngestMode (CREATE, APPEND, REPLACE)"
        ))),
    }
}

fn non_empty(value: String) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn postgres_request(request: pb::IngestPostgresRequest) -> Result<PostgresRequest, Status> {
    let pb::IngestPostgresRequest {
        dataset,
        dsn,
        password_secret,
        source,
        mode: request_mode,
        parallelism,
        split_column,
        row_group_rows,
        bucket,
    } = request;
    let source = match source {
        Some(pb::ingest_postgres_request::Source::Table(pb::TableSource {
            schema,
            table,
            columns,
            filter,
        })) => {
            if table.trim().is_empty() {
                return Err(Status::invalid_argument("table.table is required"));
            }
            if columns.iter().any(|c| c.is_empty()) {
                return Err(Status::invalid_argument(
                    "table.columns must not hold empty names",
                ));
            }
            Source::Table {
                schema,
                table,
                columns,
                filter,
            }
        }
        Some(pb::ingest_postgres_request::Source::Query(query)) => {
            let query = normalise_query(&query);
            if query.is_empty() {
                return Err(Status::invalid_argument("query must not be empty"));
            }
            Source::Query(query)
        }
        None => {
            return Err(Status::invalid_argument(
                "set a source: table (with optional columns and filter) or query",
            ));
        }
    };
    Ok(PostgresRequest {
        target: Target {
            dataset,
            bucket,
            mode: mode(request_mode)?,
            ingest_id: new_ingest_id(),
        },
        dsn: SecretString::new(dsn),
        password_secret: non_empty(password_secret),
        source,
        parallelism,
        split_column: non_empty(split_column),
        row_group_rows: (row_group_rows > 0).then_some(row_group_rows),
    })
}

fn file_request(header: pb::IngestFileHeader) -> Result<FileRequest, Status> {
    let pb::IngestFileHeader {
        dataset,
        file_name,
        format,
        csv,
        mode: request_mode,
        bucket,
    } = header;
    let format = match pb::FileFormat::try_from(format) {
        Ok(pb::FileFormat::Csv) => {
            let pb::CsvOptions {
                has_header,
                delimiter,
                infer_sample_rows,
                columns,
            } = csv.unwrap_or_default();
            let delimiter = match delimiter.as_bytes() {
                [] => b',',
                [d] if d.is_ascii() && *d != b'\n' && *d != b'\r' && *d != b'"' => *d,
                _ => {
                    return Err(Status::invalid_argument(
                        "csv.delimiter must be one ASCII character other than a quote or newline",
                    ));
                }
            };
            let columns = columns
                .into_iter()
                .map(
                    |pb::ColumnSpec {
                         name,
                         data_type,
                         nullable,
                     }| (name, data_type, nullable),
                )
                .collect();
            FileFormat::Csv(CsvSettings {
                has_header,
                delimiter,
                infer_rows: match infer_sample_rows {
                    0 => DEFAULT_INFER_ROWS,
                    n => usize::try_from(n).unwrap_or(DEFAULT_INFER_ROWS),
                },
                columns,
            })
        }
        Ok(pb::FileFormat::Ndjson) => FileFormat::Ndjson,
        Ok(pb::FileFormat::Parquet) => FileFormat::Parquet,
        Ok(pb::FileFormat::Unspecified) | Err(_) => {
            return Err(Status::invalid_argument(
                "format must be CSV, NDJSON or PARQUET",
            ));
        }
    };
    Ok(FileRequest {
        target: Target {
            dataset,
            bucket,
            mode: mode(request_mode)?,
            ingest_id: new_ingest_id(),
        },
        file_name: if file_name.is_empty() {
            "upload".to_owned()
        } else {
            file_name
        },
        format,
    })
}

fn ingest(record: IngestRecord) -> pb::Ingest {
    let IngestRecord {
        id,
        dataset,
        state,
        source,
        rows,
        bytes,
        parts,
        start_time,
        finish_time,
        error,
        dataset_version,
    } = record;
    pb::Ingest {
        ingest_id: id,
        dataset,
        state: match state {
            State::Running => pb::IngestState::Running,
            State::Succeeded => pb::IngestState::Succeeded,
            State::Failed => pb::IngestState::Failed,
            State::Cancelled => pb::IngestState::Cancelled,
        } as i32,
        source,
        rows,
        bytes,
        parts,
        start_time: Some(timestamp(start_time)),
        finish_time: finish_time.map(timestamp),
        error,
        dataset_version,
    }
}

fn event(event: Event) -> pb::IngestPostgresResponse {
    use pb::ingest_postgres_response::Event as E;
    pb::IngestPostgresResponse {
        event: Some(match event {
            Event::Progress {
                ingest_id,
                progress,
            } => E::Progress(pb::IngestProgress {
                ingest_id,
                phase: match progress.phase {
                    Phase::Preparing => pb::IngestPhase::Preparing,
                    Phase::Streaming => pb::IngestPhase::Streaming,
                    Phase::Committing => pb::IngestPhase::Committing,
                } as i32,
                rows: progress.rows,
                bytes_written: progress.bytes,
                parts_written: progress.parts,
                elapsed_ms: progress.elapsed_ms,
            }),
            Event::Finished(record) => E::Ingest(ingest(record)),
        }),
    }
}

/// The upload's chunks after the header. A broken or cancelled request
/// stream cancels the ingest: a truncated file is never committed.
fn chunks(
    stream: Streaming<pb::IngestFileRequest>,
) -> impl Stream<Item = crate::Result<Bytes>> + Send + Unpin + 'static {
    stream.map(|message| match message {
        Ok(pb::IngestFileRequest {
            part: Some(pb::ingest_file_request::Part::Chunk(bytes)),
        }) => Ok(bytes),
        Ok(pb::IngestFileRequest {
            part: Some(pb::ingest_file_request::Part::Header(_)),
        }) => Err(Error::InvalidRequest(
            "only the first message may be a header".to_owned(),
        )),
        Ok(pb::IngestFileRequest { part: None }) => Err(Error::InvalidRequest(
            "a message after the header carries no chunk".to_owned(),
        )),
        Err(status) => {
            tracing::info!(code = ?status.code(), "upload stream ended with an error");
            Err(Error::Cancelled)
        }
    })
}

#[tonic::async_trait]
impl IngestService for IngestGrpc {
    type IngestPostgresStream = BoxStream<pb::IngestPostgresResponse>;

    async fn ingest_postgres(
        &self,
        request: Request<pb::IngestPostgresRequest>,
    ) -> Result<Response<Self::IngestPostgresStream>, Status> {
        let request = postgres_request(request.into_inner())?;
        let receiver = self.ingestor.ingest_postgres(request)?;
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((item.map(event).map_err(Status::from), receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ingest_file(
        &self,
        request: Request<Streaming<pb::IngestFileRequest>>,
    ) -> Result<Response<pb::IngestFileResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::IngestFileRequest {
                part: Some(pb::ingest_file_request::Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be an IngestFileHeader",
                ));
            }
        };
        let request = file_request(header)?;
        let record = self.ingestor.ingest_file(request, chunks(stream)).await?;
        Ok(Response::new(pb::IngestFileResponse {
            ingest: Some(ingest(record)),
        }))
    }

    async fn list_ingests(
        &self,
        request: Request<pb::ListIngestsRequest>,
    ) -> Result<Response<pb::ListIngestsResponse>, Status> {
        let pb::ListIngestsRequest {
            dataset,
            page_size,
            page_token,
        } = request.into_inner();
        let limit = match usize::try_from(page_size) {
            Ok(0) | Err(_) => PAGE.0,
            Ok(n) => n.min(PAGE.1),
        };
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<u64>().map_err(|_| {
                Status::invalid_argument(lakehouse_shared::paging::InvalidPageToken.to_string())
            })?)
        };
        let (records, next) = self.ingestor.registry().list(&dataset, before, limit);
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: records.into_iter().map(ingest).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_ingest(
        &self,
        request: Request<pb::GetIngestRequest>,
    ) -> Result<Response<pb::GetIngestResponse>, Status> {
        let pb::GetIngestRequest { ingest_id } = request.into_inner();
        let record = self
            .ingestor
            .registry()
            .get(&ingest_id)
            .ok_or(Error::NotFound(ingest_id))?;
        Ok(Response::new(pb::GetIngestResponse {
            ingest: Some(ingest(record)),
        }))
    }
}
