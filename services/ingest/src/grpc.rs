//! The tonic adapter: validates and converts requests (destructuring every
//! field, so a new proto field breaks the build until it is handled),
//! delegates to [`Ingestor`], converts results. No ingest logic lives here.
//!
//! IngestPostgres follows the long-operation contract (ADR 0012): a request
//! refused before anything starts (a bad DSN, an invalid name) is an error
//! status; once started, the stream is `started`, progress, and one
//! `finished` whose google.rpc.Status says how it ended (OK, the error with
//! its ErrorInfo, or CANCELLED). Every ingest is recorded for ListIngests /
//! GetIngest.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use lakehouse_proto::ingest::v1::{self as pb, ingest_service_server::IngestService};
use lakehouse_shared::ingest_id::new_ingest_id;
use lakehouse_shared::paging::{self, PageToken};
use lakehouse_shared::secrets::SecretString;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::file_ingest::{CsvSettings, DEFAULT_INFER_ROWS, FileFormat, FileRequest};
use crate::pg_schema::{Source, normalise_query};
use crate::pipeline::{Mode, Target, timestamp};
use crate::postgres_ingest::PostgresRequest;
use crate::registry::{IngestRecord, Phase, State};
use crate::service::{Event, Ingestor};
use crate::sweeper::{SweepReport, Swept};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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

fn request_id(value: &str) -> Result<String, Status> {
    match lakehouse_shared::request_id::parse(value) {
        Ok(id) => Ok(id.unwrap_or_default()),
        Err(error) => Err(lakehouse_shared::status::with_error_info(
            tonic::Code::InvalidArgument,
            error.to_string(),
            "INVALID_REQUEST_ID",
            [],
        )),
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
        request_id: id,
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
            request_id: request_id(&id)?,
            dataset_nullability: Vec::new(),
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
        request_id: id,
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
            request_id: request_id(&id)?,
            dataset_nullability: Vec::new(),
        },
        file_name: if file_name.is_empty() {
            "upload".to_owned()
        } else {
            file_name
        },
        format,
    })
}

/// The terminal status of a finished ingest; `None` while it runs.
fn outcome(record: &IngestRecord) -> Option<lakehouse_proto::google::rpc::Status> {
    match (&record.state, &record.failure) {
        (State::Running, _) => None,
        (State::Succeeded, _) => Some(lakehouse_shared::status::ok_rpc_status()),
        (_, Some(failure)) => Some(lakehouse_shared::status::to_rpc_status(
            &lakehouse_shared::status::with_recorded_error_info(
                tonic::Code::from_i32(failure.code),
                record.error.clone(),
                &failure.reason,
                &failure.metadata,
            ),
        )),
        (State::Cancelled, None) => Some(lakehouse_shared::status::to_rpc_status(
            &Status::cancelled(record.error.clone()),
        )),
        (State::Failed, None) => Some(lakehouse_shared::status::to_rpc_status(&Status::unknown(
            record.error.clone(),
        ))),
    }
}

fn ingest(record: IngestRecord) -> pb::Ingest {
    let status = outcome(&record);
    let IngestRecord {
        id,
        dataset,
        bucket,
        request_id,
        state,
        source,
        rows,
        bytes,
        parts,
        start_time,
        finish_time,
        error,
        failure: _,
        dataset_version,
        split_column,
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
        status,
        request_id,
        bucket,
        split_column,
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
            Event::Started {
                ingest_id,
                dataset,
                replayed,
            } => E::Started(pb::IngestStarted {
                ingest_id,
                dataset,
                replayed,
            }),
            Event::Finished(record) => E::Finished(pb::IngestFinished {
                status: outcome(&record),
                ingest: Some(ingest(*record)),
            }),
        }),
    }
}

/// Where an upload is: bytes and CRC32C so far, and whether its commit
/// arrived.
struct Upload {
    stream: Streaming<pb::IngestFileRequest>,
    size: u64,
    crc: u32,
    done: bool,
}

/// The upload's chunks after the header, ending with its commit: a stream
/// that ends without a commit (cut short), or whose commit does not match
/// the bytes, yields an error, so a truncated file is never committed. A
/// broken or cancelled request stream cancels the ingest.
fn chunks(
    stream: Streaming<pb::IngestFileRequest>,
) -> impl Stream<Item = crate::Result<Bytes>> + Send + Unpin + 'static {
    use pb::ingest_file_request::Part;
    let upload = Upload {
        stream,
        size: 0,
        crc: 0,
        done: false,
    };
    Box::pin(
        futures::stream::unfold(upload, |mut up| async move {
            if up.done {
                return None;
            }
            let message = up.stream.next().await;
            let item = match message {
                Some(Ok(pb::IngestFileRequest {
                    part: Some(Part::Chunk(bytes)),
                })) => {
                    up.size += bytes.len() as u64;
                    up.crc = crc32c::crc32c_append(up.crc, &bytes);
                    Ok(bytes)
                }
                Some(Ok(pb::IngestFileRequest {
                    part: Some(Part::Commit(pb::IngestFileCommit { size_bytes, crc32c })),
                })) => {
                    up.done = true;
                    if size_bytes == up.size && crc32c == up.crc {
                        return None;
                    }
                    Err(Error::UploadCorrupt {
                        received_bytes: up.size,
                        received_crc32c: up.crc,
                        size_bytes,
                        crc32c,
                    })
                }
                Some(Ok(pb::IngestFileRequest {
                    part: Some(Part::Header(_)),
                })) => Err(Error::InvalidRequest(
                    "only the first message may be a header".to_owned(),
                )),
                Some(Ok(pb::IngestFileRequest { part: None })) => Err(Error::InvalidRequest(
                    "a message after the header carries no chunk".to_owned(),
                )),
                Some(Err(status)) => {
                    tracing::info!(code = ?status.code(), "upload stream ended with an error");
                    Err(Error::Cancelled)
                }
                None => Err(Error::UploadIncomplete),
            };
            if item.is_err() {
                up.done = true;
            }
            Some((item, up))
        })
        // Readers may poll again after the end (sampling, then decoding).
        .fuse(),
    )
}

#[tonic::async_trait]
impl IngestService for IngestGrpc {
    type IngestPostgresStream = BoxStream<pb::IngestPostgresResponse>;

    async fn ingest_postgres(
        &self,
        request: Request<pb::IngestPostgresRequest>,
    ) -> Result<Response<Self::IngestPostgresStream>, Status> {
        let request = postgres_request(request.into_inner())?;
        let receiver = self.ingestor.ingest_postgres(request).await?;
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((Ok(event(item)), receiver))
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
            state,
        } = request.into_inner();
        let state_filter = match pb::IngestState::try_from(state) {
            Ok(pb::IngestState::Unspecified) => None,
            Ok(pb::IngestState::Running) => Some(State::Running),
            Ok(pb::IngestState::Succeeded) => Some(State::Succeeded),
            Ok(pb::IngestState::Failed) => Some(State::Failed),
            Ok(pb::IngestState::Cancelled) => Some(State::Cancelled),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state {state} is not an IngestState"
                )));
            }
        };
        let state_text = state.to_string();
        let filters = [dataset.as_str(), state_text.as_str()];
        let limit =
            paging::page_size(page_size).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let before = match PageToken::decode(&page_token, &filters) {
            Ok(None) => None,
            Ok(Some(token)) => Some(token.after.parse::<u64>().map_err(|_| {
                Status::invalid_argument(paging::PageTokenError::Invalid.to_string())
            })?),
            Err(error) => return Err(Status::invalid_argument(error.to_string())),
        };
        self.ingestor.history_ready().await?;
        let (records, next) = self
            .ingestor
            .registry()
            .list(&dataset, state_filter, before, limit);
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: records.into_iter().map(ingest).collect(),
            next_page_token: next
                .map(|n| PageToken::encode(&n.to_string(), &filters))
                .unwrap_or_default(),
        }))
    }

    async fn get_ingest(
        &self,
        request: Request<pb::GetIngestRequest>,
    ) -> Result<Response<pb::GetIngestResponse>, Status> {
        let pb::GetIngestRequest { ingest_id } = request.into_inner();
        self.ingestor.history_ready().await?;
        let record = self
            .ingestor
            .registry()
            .get(&ingest_id)
            .ok_or(Error::NotFound(ingest_id))?;
        Ok(Response::new(pb::GetIngestResponse {
            ingest: Some(ingest(record)),
        }))
    }

    async fn cancel_ingest(
        &self,
        request: Request<pb::CancelIngestRequest>,
    ) -> Result<Response<pb::CancelIngestResponse>, Status> {
        let pb::CancelIngestRequest { ingest_id } = request.into_inner();
        let outcome = self.ingestor.cancel(&ingest_id)?;
        Ok(Response::new(pb::CancelIngestResponse {
            cancelled: outcome.cancelled,
            ingest: Some(ingest(outcome.record)),
        }))
    }

    async fn sweep_orphans(
        &self,
        request: Request<pb::SweepOrphansRequest>,
    ) -> Result<Response<pb::SweepOrphansResponse>, Status> {
        let pb::SweepOrphansRequest {
            dry_run,
            grace_seconds,
            request_id: id,
        } = request.into_inner();
        let id = request_id(&id)?;
        let report = self
            .ingestor
            .sweep_orphans(
                grace_seconds.map(Duration::from_secs),
                dry_run,
                (!id.is_empty()).then_some(id),
            )
            .await?;
        let SweepReport {
            removed,
            bytes_removed,
        } = report;
        Ok(Response::new(pb::SweepOrphansResponse {
            removed: removed
                .into_iter()
                .map(
                    |Swept {
                         bucket,
                         key,
                         size_bytes,
                         ingest_id,
                         dataset,
                     }| pb::SweptObject {
                        bucket,
                        key,
                        size_bytes,
                        ingest_id,
                        dataset,
                    },
                )
                .collect(),
            bytes_removed,
        }))
    }
}
