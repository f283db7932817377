//! The tonic adapter: validates and converts requests (destructuring every
//! message, so a new proto field fails the build until it is handled),
//! delegates to [`VectorService`], converts results. Errors become statuses
//! with `google.rpc.ErrorInfo` here and nowhere else.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use futures::Stream;
use lakehouse_proto::vector::v1::{self as pb, vector_service_server::VectorService as Rpc};
use lakehouse_shared::paging::{PageToken, paginate};
use lakehouse_shared::status::{ok_rpc_status, to_rpc_status, to_status};
use lakehouse_shared::time::to_proto as timestamp;
use lakehouse_shared::{names, paging, request_id};
use prost_types::value::Kind;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::Metric;
use crate::error::Error;
use crate::generation::LoadedGeneration;
use crate::hnsw::HnswParams;
use crate::progress::{BuildEvent, BuildTicket, Phase, Progress};
use crate::record::{GenerationRecord, GenerationState};
use crate::search::{SearchQuery, SearchResult};
use crate::service::{
    DEFAULT_EF_SEARCH, DEFAULT_K, DEFAULT_RETAINED, IndexView, MAX_BATCH_QUERIES, MAX_EF_SEARCH,
    MAX_K, NewIndex, VectorService,
};

mod trials;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Implements `lakehouse.vector.v1.VectorService`.
#[derive(Debug, Clone)]
pub struct VectorGrpc {
    service: Arc<VectorService>,
    max_message_bytes: usize,
}

impl VectorGrpc {
    /// The adapter over `service`, whose messages may reach
    /// `max_message_bytes`.
    pub fn new(service: Arc<VectorService>, max_message_bytes: usize) -> Self {
        Self {
            service,
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

fn name(kind: &'static str, text: &str) -> Result<String, Error> {
    names::validate(kind, text)?;
    Ok(text.to_owned())
}

fn request_id_of(id: &str) -> Result<Option<String>, Error> {
    Ok(request_id::parse(id)?)
}

fn column(field: &'static str, text: &str) -> Result<String, Error> {
    if text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(text.to_owned())
}

fn metric(value: i32) -> Result<Metric, Error> {
    match pb::Metric::try_from(value) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Ok(Metric::Cosine),
        Ok(pb::Metric::L2) => Ok(Metric::L2),
        Ok(pb::Metric::Dot) => Ok(Metric::Dot),
        Err(_) => Err(Error::invalid("metric", format!("unknown metric {value}"))),
    }
}

fn metric_pb(metric: Metric) -> pb::Metric {
    match metric {
        Metric::Cosine => pb::Metric::Cosine,
        Metric::L2 => pb::Metric::L2,
        Metric::Dot => pb::Metric::Dot,
    }
}

/// Build parameters with defaults and ranges applied; `None` when unset.
fn params(config: Option<pb::HnswConfig>) -> Result<Option<HnswParams>, Error> {
    let Some(pb::HnswConfig { m, ef_construction }) = config else {
        return Ok(None);
    };
    let m = match m {
        0 => HnswParams::DEFAULT_M,
        m => m as usize,
    };
    let (lo, hi) = HnswParams::M_RANGE;
    if !(lo..=hi).contains(&m) {
        return Err(Error::invalid(
            "config.m",
            format!("{m} is out of range {lo} to {hi}"),
        ));
    }
    let ef_construction = match ef_construction {
        0 => HnswParams::DEFAULT_EF_CONSTRUCTION.max(m),
        ef => ef as usize,
    };
    if ef_construction < m || ef_construction > HnswParams::MAX_EF {
        return Err(Error::invalid(
            "config.ef_construction",
            format!(
                "{ef_construction} is out of range: at least m ({m}), at most {}",
                HnswParams::MAX_EF
            ),
        ));
    }
    Ok(Some(HnswParams { m, ef_construction }))
}

fn params_pb(params: HnswParams) -> pb::HnswConfig {
    pb::HnswConfig {
        m: params.m as u32,
        ef_construction: params.ef_construction as u32,
    }
}

fn ef_search(field: &'static str, value: u32) -> Result<u32, Error> {
    if value == 0 || value > MAX_EF_SEARCH {
        return Err(Error::invalid(
            field,
            format!("{value} is out of range 1 to {MAX_EF_SEARCH}"),
        ));
    }
    Ok(value)
}

fn k(value: u32) -> Result<usize, Error> {
    match value as usize {
        0 => Ok(DEFAULT_K),
        k if k > MAX_K => Err(Error::invalid(
            "k",
            format!("{k} is above the maximum of {MAX_K}"),
        )),
        k => Ok(k),
    }
}

fn generation_state(state: GenerationState) -> pb::GenerationState {
    match state {
        GenerationState::Building => pb::GenerationState::Building,
        GenerationState::Ready => pb::GenerationState::Ready,
        GenerationState::Failed => pb::GenerationState::Failed,
        GenerationState::Cancelled => pb::GenerationState::Cancelled,
        GenerationState::Damaged => pb::GenerationState::Damaged,
    }
}

fn generation_pb(g: &GenerationRecord, active: u64) -> pb::Generation {
    pb::Generation {
        generation: g.generation,
        config: Some(params_pb(g.params)),
        vector_count: g.vector_count,
        create_time: Some(timestamp(g.create_time)),
        active: g.generation == active,
        trial_id: String::new(),
        state: generation_state(g.state) as i32,
        dataset_version: g.dataset_version,
        build_duration_ms: g.build_ms,
        memory_bytes: g.memory_bytes,
        error: g.error.clone().unwrap_or_default(),
    }
}

fn index_pb(view: &IndexView) -> pb::Index {
    let r = &view.record;
    let active = r.generation(r.active);
    let state = if view.damaged.is_some() {
        pb::IndexState::Damaged
    } else if view.load_error.is_some() {
        pb::IndexState::LoadFailed
    } else if r.active > 0 {
        pb::IndexState::Ready
    } else if r
        .generations
        .iter()
        .any(|g| g.state == GenerationState::Building)
    {
        pb::IndexState::Building
    } else {
        pb::IndexState::Failed
    };
    let error = view
        .damaged
        .clone()
        .or_else(|| view.load_error.clone())
        .or_else(|| r.generations.last().and_then(|g| g.error.clone()))
        .unwrap_or_default();
    let dataset_version = active.map_or(0, |g| g.dataset_version);
    let current = view.current_dataset_version.unwrap_or(0);
    pb::Index {
        name: r.name.clone(),
        dataset: r.dataset.clone(),
        id_column: r.id_column.clone(),
        text_column: r.text_column.clone().unwrap_or_default(),
        vector_column: r.vector_column.clone(),
        metric: metric_pb(r.metric) as i32,
        config: Some(params_pb(
            active
                .or(r.generations.last())
                .map_or_else(HnswParams::default, |g| g.params),
        )),
        dimensions: active.map_or(0, |g| g.dimensions),
        vector_count: active.map_or(0, |g| g.vector_count),
        active_generation: r.active,
        state: state as i32,
        error,
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        ef_search: r.ef_search,
        dataset_version,
        current_dataset_version: current,
        stale: r.active > 0 && view.current_dataset_version.is_some() && current != dataset_version,
        payload_columns: r.payload_columns.clone(),
        memory_bytes: view.memory_bytes,
        retained_generations: r.retained_generations,
    }
}

fn progress_pb(p: Progress) -> pb::BuildProgress {
    let phase = match p.phase {
        Phase::Queued => pb::BuildPhase::Queued,
        Phase::Loading => pb::BuildPhase::Loading,
        Phase::Inserting => pb::BuildPhase::Inserting,
        Phase::Persisting => pb::BuildPhase::Persisting,
        Phase::Evaluating => pb::BuildPhase::Evaluating,
    };
    pb::BuildProgress {
        phase: phase as i32,
        done: p.done,
        total: p.total,
        elapsed_ms: p.elapsed_ms,
        percent: if p.total == 0 {
            0.0
        } else {
            (p.done as f64 * 100.0 / p.total as f64) as f32
        },
    }
}

/// The messages of a build stream, in the contract's shape: `started`,
/// progress, and one `finished` for every outcome.
enum BuildMessage {
    Started(pb::BuildStarted),
    Progress(pb::BuildProgress),
    Finished(Box<pb::BuildFinished>),
}

/// Both build RPCs answer with the same three events, each in its own
/// response type (AIP: one response message per RPC).
macro_rules! build_response {
    ($response:ty, $event:ident) => {
        impl From<BuildMessage> for $response {
            fn from(message: BuildMessage) -> Self {
                use pb::$event::Event;
                Self {
                    event: Some(match message {
                        BuildMessage::Started(s) => Event::Started(s),
                        BuildMessage::Progress(p) => Event::Progress(p),
                        BuildMessage::Finished(f) => Event::Finished(*f),
                    }),
                }
            }
        }
    };
}
build_response!(pb::CreateIndexResponse, create_index_response);
build_response!(pb::RebuildIndexResponse, rebuild_index_response);

fn build_stream<T: From<BuildMessage> + Send + 'static>(
    service: Arc<VectorService>,
    ticket: BuildTicket,
) -> EventStream<T> {
    let wrap = T::from;
    let BuildTicket {
        index,
        generation,
        replayed,
        mut events,
    } = ticket;
    let stream = async_stream(move |tx| async move {
        let started = pb::BuildStarted {
            index: index.clone(),
            generation,
            replayed,
        };
        if tx
            .send(Ok(wrap(BuildMessage::Started(started))))
            .await
            .is_err()
        {
            return;
        }
        let mut last: Option<Progress> = None;
        loop {
            let event = events.borrow_and_update().clone();
            match event {
                BuildEvent::Progress(p) => {
                    let closing = last.and_then(|l| l.closing(&p));
                    for p in closing.into_iter().chain([p]) {
                        if tx
                            .send(Ok(wrap(BuildMessage::Progress(progress_pb(p)))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    last = Some(p);
                }
                BuildEvent::Finished(outcome) => {
                    let status = match &outcome {
                        Ok(()) => ok_rpc_status(),
                        Err(error) => to_rpc_status(&to_status(&**error)),
                    };
                    let view = service.list_generations(&index).ok();
                    let finished = pb::BuildFinished {
                        status: Some(status),
                        index: view.as_ref().map(|(record, _)| {
                            index_pb(&IndexView {
                                record: record.clone(),
                                memory_bytes: 0,
                                current_dataset_version: None,
                                load_error: None,
                                damaged: None,
                            })
                        }),
                        generation: view.as_ref().and_then(|(record, gens)| {
                            gens.iter()
                                .find(|g| g.generation == generation)
                                .map(|g| generation_pb(g, record.active))
                        }),
                    };
                    let _ = tx
                        .send(Ok(wrap(BuildMessage::Finished(Box::new(finished)))))
                        .await;
                    return;
                }
            }
            if events.changed().await.is_err() {
                // The build's sender is gone without an outcome: say so.
                let lost = Status::internal("the build stopped without reporting an outcome");
                let _ = tx
                    .send(Ok(wrap(BuildMessage::Finished(Box::new(
                        pb::BuildFinished {
                            status: Some(to_rpc_status(&lost)),
                            index: None,
                            generation: None,
                        },
                    )))))
                    .await;
                return;
            }
        }
    });
    Box::pin(stream)
}

/// A stream fed by a task through a small channel.
fn async_stream<T, F, Fut>(body: F) -> impl Stream<Item = Result<T, Status>> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // In the call's span, so what the task calls joins the call's trace.
    tokio::spawn(body(tx).in_current_span());
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn payload_value(array: &dyn Array, row: usize) -> prost_types::Value {
    use arrow::datatypes::*;
    let kind = if array.is_null(row) {
        Kind::NullValue(0)
    } else {
        match array.data_type() {
            DataType::Boolean => Kind::BoolValue(array.as_boolean().value(row)),
            DataType::Int8 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int8Type>().value(row)))
            }
            DataType::Int16 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int16Type>().value(row)))
            }
            DataType::Int32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int32Type>().value(row)))
            }
            DataType::UInt8 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt8Type>().value(row)))
            }
            DataType::UInt16 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt16Type>().value(row)))
            }
            DataType::UInt32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt32Type>().value(row)))
            }
            DataType::Float32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Float32Type>().value(row)))
            }
            DataType::Float64 => Kind::NumberValue(array.as_primitive::<Float64Type>().value(row)),
            _ => Kind::StringValue(display(array, row)),
        }
    };
    prost_types::Value { kind: Some(kind) }
}

/// A value as Arrow prints it (int64 stays exact as text).
fn display(array: &dyn Array, row: usize) -> String {
    let options = arrow::util::display::FormatOptions::default();
    arrow::util::display::ArrayFormatter::try_new(array, &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

fn hits_pb(
    rows: &RecordBatch,
    hits: &[crate::hnsw::Near],
    has_text: bool,
    payload: &[String],
) -> Vec<pb::SearchHit> {
    hits.iter()
        .map(|hit| {
            let row = hit.id as usize;
            let text = if has_text {
                let column = rows.column(1);
                match column.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                        if column.is_null(row) =>
                    {
                        String::new()
                    }
                    _ => display(column.as_ref(), row),
                }
            } else {
                String::new()
            };
            pb::SearchHit {
                id: display(rows.column(0).as_ref(), row),
                distance: hit.distance,
                text,
                payload: payload
                    .iter()
                    .filter_map(|name| {
                        rows.column_by_name(name)
                            .map(|c| (name.clone(), payload_value(c.as_ref(), row)))
                    })
                    .collect(),
            }
        })
        .collect()
}

fn search_hits(result: &SearchResult, payload: &[String]) -> Vec<Vec<pb::SearchHit>> {
    let generation: &LoadedGeneration = &result.generation;
    result
        .hits
        .iter()
        .map(|hits| hits_pb(&generation.rows, hits, result.has_text, payload))
        .collect()
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
            dataset: name("dataset", &dataset)?,
            id_column: column("id_column", &id_column)?,
            text_column: (!text_column.is_empty()).then_some(text_column),
            vector_column: column("vector_column", &vector_column)?,
            payload_columns,
            metric: metric(metric_value)?,
            params: params(config)?.unwrap_or_default(),
            ef_search: match ef {
                0 => DEFAULT_EF_SEARCH,
                ef => ef_search("ef_search", ef)?,
            },
            retained_generations: retained(retained_generations.unwrap_or(DEFAULT_RETAINED))?,
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
        let ticket = self
            .service
            .rebuild_index(
                &name("index", &index_name)?,
                params(config)?,
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
        } = request.into_inner();
        if !filter.is_empty() {
            return Err(Error::FilterNotSupported.into());
        }
        let query = SearchQuery {
            index: name("index", &index)?,
            vectors: vec![vector],
            k: k(k_value)?,
            ef_search: ef.map(|v| ef_search("ef_search", v)).transpose()?,
            exact,
            payload_columns: payload_columns.clone(),
        };
        let result = self.service.search(query).await?;
        let hits = search_hits(&result, &payload_columns)
            .pop()
            .unwrap_or_default();
        Ok(Response::new(pb::SearchResponse {
            hits,
            generation: result.generation.generation,
            search_duration_us: result.took.as_micros() as u64,
            ef_search: result.ef_search,
            k: result.k as u32,
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
        } = request.into_inner();
        if !filter.is_empty() {
            return Err(Error::FilterNotSupported.into());
        }
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
            vectors: queries.into_iter().map(|q| q.vector).collect(),
            k: k(k_value)?,
            ef_search: ef.map(|v| ef_search("ef_search", v)).transpose()?,
            exact,
            payload_columns: payload_columns.clone(),
        };
        let result = self.service.search(query).await?;
        self.bounded(pb::BatchSearchResponse {
            results: search_hits(&result, &payload_columns)
                .into_iter()
                .map(|hits| pb::QueryResult { hits })
                .collect(),
            generation: result.generation.generation,
            search_duration_us: result.took.as_micros() as u64,
            ef_search: result.ef_search,
            k: result.k as u32,
        })
    }

    async fn create_eval_set(
        &self,
        request: Request<pb::CreateEvalSetRequest>,
    ) -> Result<Response<pb::CreateEvalSetResponse>, Status> {
        trials::create_eval_set(&self.service, request.into_inner()).await
    }

    async fn get_eval_set(
        &self,
        request: Request<pb::GetEvalSetRequest>,
    ) -> Result<Response<pb::GetEvalSetResponse>, Status> {
        trials::get_eval_set(&self.service, request.into_inner()).await
    }

    async fn list_eval_sets(
        &self,
        request: Request<pb::ListEvalSetsRequest>,
    ) -> Result<Response<pb::ListEvalSetsResponse>, Status> {
        trials::list_eval_sets(&self.service, request.into_inner()).await
    }

    async fn delete_eval_set(
        &self,
        request: Request<pb::DeleteEvalSetRequest>,
    ) -> Result<Response<pb::DeleteEvalSetResponse>, Status> {
        trials::delete_eval_set(&self.service, request.into_inner()).await
    }

    async fn run_trial(
        &self,
        request: Request<pb::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        trials::run_trial(&self.service, request.into_inner()).await
    }

    async fn cancel_trial_run(
        &self,
        request: Request<pb::CancelTrialRunRequest>,
    ) -> Result<Response<pb::CancelTrialRunResponse>, Status> {
        trials::cancel_trial_run(&self.service, request.into_inner())
    }

    async fn list_trials(
        &self,
        request: Request<pb::ListTrialsRequest>,
    ) -> Result<Response<pb::ListTrialsResponse>, Status> {
        trials::list_trials(&self.service, request.into_inner()).await
    }

    async fn get_trial(
        &self,
        request: Request<pb::GetTrialRequest>,
    ) -> Result<Response<pb::GetTrialResponse>, Status> {
        trials::get_trial(&self.service, request.into_inner()).await
    }

    async fn best_trial(
        &self,
        request: Request<pb::BestTrialRequest>,
    ) -> Result<Response<pb::BestTrialResponse>, Status> {
        trials::best_trial(&self.service, request.into_inner()).await
    }

    async fn tune_index(
        &self,
        request: Request<pb::TuneIndexRequest>,
    ) -> Result<Response<Self::TuneIndexStream>, Status> {
        trials::tune_index(&self.service, request.into_inner()).await
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
                vectors: e.len() as u64,
                dimensions: e.dim as u32,
                memory_bytes: e.memory_bytes(),
                load_ms: e.load_ms,
                load_time: Some(timestamp(e.load_time)),
                dataset_version: e.spec.version,
                normalized: e.spec.normalize,
                row_columns: e.spec.row_columns.clone(),
                held_by: self.service.holders(e),
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
            pinned_by: evicted.pinned_by,
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

fn retained(value: u32) -> Result<u32, Error> {
    if value > 100 {
        return Err(Error::invalid(
            "retained_generations",
            format!("{value} is above the maximum of 100"),
        ));
    }
    Ok(value)
}
