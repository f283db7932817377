//! The tonic adapter of the tuning half: eval sets, trials, BestTrial and
//! TuneIndex. Same rules as the parent module: destructure every message,
//! validate, delegate, convert.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::paging::{self, PageToken, paginate};
use lakehouse_shared::status::{ok_rpc_status, to_rpc_status};
use lakehouse_shared::time::to_proto as timestamp;
use tonic::{Response, Status};

use super::EventStream;
use super::convert::{k, name, params, params_pb, progress_pb, request_id_of};
use crate::error::Error;
use crate::hnsw::HnswParams;
use crate::trials::eval_set::{EvalSetRecord, Source};
use crate::trials::rank::{Figure, Objective};
use crate::trials::record::TrialRecord;
use crate::trials::run::{Run, RunEvent, RunOutcome};
use crate::trials::tune::{DEFAULT_MAX_BUILDS, DEFAULT_MIN_RECALL};
use crate::trials::{
    DEFAULT_QUERY_COUNT, EvalQueries, NewEvalSet, NewTrial, TrialFilter, TrialService, TrialTicket,
    TuneRequest,
};
use lakehouse_shared::status::to_status;

fn eval_set_pb(r: &EvalSetRecord) -> pb::EvalSet {
    pb::EvalSet {
        name: r.name.clone(),
        index: r.index.clone(),
        query_count: r.query_count,
        k: r.k,
        object_key: r.object_key.clone(),
        create_time: Some(timestamp(r.create_time)),
        source: match r.source {
            Source::Sampled => pb::EvalSetSource::Sampled,
            Source::DatasetColumn => pb::EvalSetSource::DatasetColumn,
            Source::Given => pb::EvalSetSource::Given,
        } as i32,
        seed: r.seed,
        dataset_version: r.dataset_version,
        ground_truth_duration_ms: r.ground_truth_ms,
        filter: r.filter.as_ref().map(super::filter::filter_pb),
    }
}

fn trial_pb(t: &TrialRecord) -> pb::Trial {
    pb::Trial {
        trial_id: t.trial_id.clone(),
        index: t.index.clone(),
        eval_set: t.eval_set.clone(),
        config: Some(params_pb(t.params)),
        recall: t.recall,
        k: t.k,
        latency: Some(pb::LatencyStats {
            p50_us: t.latency.p50_us,
            p95_us: t.latency.p95_us,
            p99_us: t.latency.p99_us,
            mean_us: t.latency.mean_us,
        }),
        build_duration_ms: t.build_duration_ms,
        memory_bytes: t.memory_bytes,
        create_time: Some(timestamp(t.create_time)),
        generation: t.generation,
        ef_search: t.ef_search,
        run_id: t.run_id.clone(),
        queries_per_second: t.queries_per_second,
        dataset_version: t.dataset_version,
        vector_count: t.vector_count,
        build_threads: t.build_threads,
    }
}

fn objective(value: i32) -> Result<Objective, Error> {
    match pb::TrialObjective::try_from(value) {
        Ok(pb::TrialObjective::Unspecified | pb::TrialObjective::Latency) => Ok(Objective::Latency),
        Ok(pb::TrialObjective::Recall) => Ok(Objective::Recall),
        Ok(pb::TrialObjective::BuildTime) => Ok(Objective::BuildTime),
        Ok(pb::TrialObjective::Memory) => Ok(Objective::Memory),
        Ok(pb::TrialObjective::Throughput) => Ok(Objective::Throughput),
        Err(_) => Err(Error::invalid(
            "objective",
            format!("unknown objective {value}"),
        )),
    }
}

fn figure(value: i32) -> Result<Figure, Error> {
    match pb::TrialFigure::try_from(value) {
        Ok(pb::TrialFigure::Unspecified | pb::TrialFigure::CreateTime) => Ok(Figure::CreateTime),
        Ok(pb::TrialFigure::Recall) => Ok(Figure::Recall),
        Ok(pb::TrialFigure::P50Latency) => Ok(Figure::P50),
        Ok(pb::TrialFigure::P99Latency) => Ok(Figure::P99),
        Ok(pb::TrialFigure::BuildDuration) => Ok(Figure::BuildDuration),
        Ok(pb::TrialFigure::Memory) => Ok(Figure::Memory),
        Ok(pb::TrialFigure::Throughput) => Ok(Figure::Throughput),
        Err(_) => Err(Error::invalid(
            "order_by",
            format!("unknown figure {value}"),
        )),
    }
}

fn recall_floor(field: &'static str, value: f64) -> Result<f64, Error> {
    if !(0.0..=1.0).contains(&value) {
        return Err(Error::invalid(
            field,
            format!("{value} is not within 0 to 1"),
        ));
    }
    Ok(value)
}

/// An optional k (0: the eval set's).
fn trial_k(value: u32) -> Result<Option<usize>, Error> {
    if value == 0 {
        Ok(None)
    } else {
        k(value).map(Some)
    }
}

pub(super) async fn create_eval_set(
    service: &Arc<TrialService>,
    request: pb::CreateEvalSetRequest,
) -> Result<Response<pb::CreateEvalSetResponse>, Status> {
    let pb::CreateEvalSetRequest {
        name: set_name,
        index,
        query_count,
        k: truth_k,
        seed,
        queries,
        request_id,
        filter,
    } = request;
    let queries = match queries {
        None => {
            let count = match query_count {
                0 => DEFAULT_QUERY_COUNT,
                n => n as usize,
            };
            EvalQueries::Sample { count }
        }
        Some(pb::create_eval_set_request::Queries::Given(pb::GivenQueries { queries })) => {
            EvalQueries::Given(queries.into_iter().map(|q| q.vector).collect())
        }
        Some(pb::create_eval_set_request::Queries::DatasetColumn(pb::DatasetColumnQueries {
            dataset,
            vector_column,
            limit,
        })) => EvalQueries::DatasetColumn {
            dataset: name("dataset", &dataset)?,
            column: super::column("dataset_column.vector_column", &vector_column)?,
            limit: limit as usize,
        },
    };
    let record = service
        .create_eval_set(NewEvalSet {
            name: name("eval set", &set_name)?,
            index: name("index", &index)?,
            k: k(truth_k)?,
            seed,
            queries,
            filter: super::filter::filter_of(filter)?,
            request_id: request_id_of(&request_id)?,
        })
        .await?;
    Ok(Response::new(pb::CreateEvalSetResponse {
        eval_set: Some(eval_set_pb(&record)),
    }))
}

pub(super) async fn get_eval_set(
    service: &Arc<TrialService>,
    request: pb::GetEvalSetRequest,
) -> Result<Response<pb::GetEvalSetResponse>, Status> {
    let pb::GetEvalSetRequest { name: set_name } = request;
    let record = service.get_eval_set(&name("eval set", &set_name)?).await?;
    Ok(Response::new(pb::GetEvalSetResponse {
        eval_set: Some(eval_set_pb(&record)),
    }))
}

pub(super) async fn list_eval_sets(
    service: &Arc<TrialService>,
    request: pb::ListEvalSetsRequest,
) -> Result<Response<pb::ListEvalSetsResponse>, Status> {
    let pb::ListEvalSetsRequest {
        index,
        page_size,
        page_token,
    } = request;
    let size = paging::page_size(page_size).map_err(Error::from)?;
    let filters = [index.as_str()];
    let after = PageToken::decode(&page_token, &filters).map_err(Error::from)?;
    let sets = service
        .list_eval_sets((!index.is_empty()).then_some(index.as_str()))
        .await?;
    let (page, next) = paginate(sets, |s| s.name.clone(), after.as_ref(), size, &filters);
    Ok(Response::new(pb::ListEvalSetsResponse {
        eval_sets: page.iter().map(eval_set_pb).collect(),
        next_page_token: next.unwrap_or_default(),
    }))
}

pub(super) async fn delete_eval_set(
    service: &Arc<TrialService>,
    request: pb::DeleteEvalSetRequest,
) -> Result<Response<pb::DeleteEvalSetResponse>, Status> {
    let pb::DeleteEvalSetRequest {
        name: set_name,
        request_id,
    } = request;
    service
        .delete_eval_set(&name("eval set", &set_name)?, request_id_of(&request_id)?)
        .await?;
    Ok(Response::new(pb::DeleteEvalSetResponse {}))
}

pub(super) async fn run_trial(
    service: &Arc<TrialService>,
    request: pb::RunTrialRequest,
) -> Result<Response<EventStream<pb::RunTrialResponse>>, Status> {
    let pb::RunTrialRequest {
        index,
        eval_set,
        config,
        keep_generation,
        ef_search,
        k: trial_k_value,
        request_id,
    } = request;
    let ticket = service
        .run_trial(NewTrial {
            index: name("index", &index)?,
            eval_set: name("eval set", &eval_set)?,
            params: params(config)?.unwrap_or_default(),
            ef_search,
            k: trial_k(trial_k_value)?,
            keep_generation,
            request_id: request_id_of(&request_id)?,
        })
        .await?;
    use pb::run_trial_response::Event;
    let stream = run_stream(ticket, |event| match event {
        Message::Started(s) => Event::Started(s),
        Message::Progress(p) => Event::Progress(p),
        Message::Trial(t) => Event::Trial(*t),
        Message::Finished(outcome) => Event::Finished(pb::RunTrialFinished {
            status: Some(outcome_status(&outcome)),
            trials: outcome.trials.iter().map(trial_pb).collect(),
        }),
    })
    .map(|event| Ok(pb::RunTrialResponse { event: Some(event) }));
    Ok(Response::new(Box::pin(stream)))
}

pub(super) fn cancel_trial_run(
    service: &Arc<TrialService>,
    request: pb::CancelTrialRunRequest,
) -> Result<Response<pb::CancelTrialRunResponse>, Status> {
    let pb::CancelTrialRunRequest { run_id } = request;
    if run_id.is_empty() {
        return Err(Error::invalid("run_id", "is required").into());
    }
    let cancelled = service.cancel_trial_run(&run_id)?;
    Ok(Response::new(pb::CancelTrialRunResponse { cancelled }))
}

pub(super) async fn list_trials(
    service: &Arc<TrialService>,
    request: pb::ListTrialsRequest,
) -> Result<Response<pb::ListTrialsResponse>, Status> {
    let pb::ListTrialsRequest {
        index,
        page_size,
        page_token,
        eval_set,
        m,
        ef_construction,
        ef_search,
        run_id,
        order_by,
    } = request;
    let index = name("index", &index)?;
    let size = paging::page_size(page_size).map_err(Error::from)?;
    let order = figure(order_by)?;
    let (m_text, efc_text, ef_text, order_text) = (
        format!("{m:?}"),
        format!("{ef_construction:?}"),
        format!("{ef_search:?}"),
        order_by.to_string(),
    );
    let filters = [
        index.as_str(),
        eval_set.as_str(),
        m_text.as_str(),
        efc_text.as_str(),
        ef_text.as_str(),
        run_id.as_str(),
        order_text.as_str(),
    ];
    let after = PageToken::decode(&page_token, &filters).map_err(Error::from)?;
    let filter = TrialFilter {
        eval_set: (!eval_set.is_empty()).then_some(eval_set.clone()),
        m: m.map(|m| m as usize),
        ef_construction: ef_construction.map(|e| e as usize),
        ef_search,
        run_id: (!run_id.is_empty()).then_some(run_id.clone()),
    };
    let trials = service.list_trials(&index, &filter, order).await?;
    let (page, next) = paginate(
        trials,
        |(key, _)| key.clone(),
        after.as_ref(),
        size,
        &filters,
    );
    Ok(Response::new(pb::ListTrialsResponse {
        trials: page.iter().map(|(_, t)| trial_pb(t)).collect(),
        next_page_token: next.unwrap_or_default(),
    }))
}

pub(super) async fn get_trial(
    service: &Arc<TrialService>,
    request: pb::GetTrialRequest,
) -> Result<Response<pb::GetTrialResponse>, Status> {
    let pb::GetTrialRequest { index, trial_id } = request;
    let trial = service
        .get_trial(&name("index", &index)?, &trial_id)
        .await?;
    Ok(Response::new(pb::GetTrialResponse {
        trial: Some(trial_pb(&trial)),
    }))
}

pub(super) async fn best_trial(
    service: &Arc<TrialService>,
    request: pb::BestTrialRequest,
) -> Result<Response<pb::BestTrialResponse>, Status> {
    let pb::BestTrialRequest {
        index,
        eval_set,
        min_recall,
        objective: objective_value,
    } = request;
    let (trial, considered) = service
        .best_trial(
            &name("index", &index)?,
            (!eval_set.is_empty()).then_some(eval_set.as_str()),
            recall_floor("min_recall", min_recall)?,
            objective(objective_value)?,
        )
        .await?;
    Ok(Response::new(pb::BestTrialResponse {
        trial: Some(trial_pb(&trial)),
        considered: considered as u32,
    }))
}

pub(super) async fn tune_index(
    service: &Arc<TrialService>,
    request: pb::TuneIndexRequest,
) -> Result<Response<EventStream<pb::TuneIndexResponse>>, Status> {
    let pb::TuneIndexRequest {
        index,
        eval_set,
        candidates,
        min_recall,
        objective: objective_value,
        promote,
        max_builds,
        time_budget_seconds,
        k: trial_k_value,
        request_id,
    } = request;
    let candidates = candidates
        .into_iter()
        .map(|c| params(Some(c)).map(Option::unwrap_or_default))
        .collect::<Result<Vec<HnswParams>, Error>>()?;
    let ticket = service
        .tune_index(TuneRequest {
            index: name("index", &index)?,
            eval_set: name("eval set", &eval_set)?,
            candidates,
            min_recall: if min_recall == 0.0 {
                DEFAULT_MIN_RECALL
            } else {
                recall_floor("min_recall", min_recall)?
            },
            objective: objective(objective_value)?,
            promote,
            max_builds: match max_builds {
                0 => DEFAULT_MAX_BUILDS,
                n => n as usize,
            },
            time_budget: (time_budget_seconds > 0)
                .then(|| Duration::from_secs(u64::from(time_budget_seconds))),
            k: trial_k(trial_k_value)?,
            request_id: request_id_of(&request_id)?,
        })
        .await?;
    use pb::tune_index_response::Event;
    let stream = run_stream(ticket, |event| match event {
        Message::Started(s) => Event::Started(s),
        Message::Progress(p) => Event::Progress(p),
        Message::Trial(t) => Event::Trial(*t),
        Message::Finished(outcome) => Event::Finished(pb::TuneIndexFinished {
            status: Some(outcome_status(&outcome)),
            best: outcome.best.as_ref().map(trial_pb),
            pareto: outcome.pareto.iter().map(trial_pb).collect(),
            promoted_generation: outcome.promoted_generation,
            trial_count: outcome.trials.len() as u32,
        }),
    })
    .map(|event| Ok(pb::TuneIndexResponse { event: Some(event) }));
    Ok(Response::new(Box::pin(stream)))
}

/// A run's stream, before wrapping in the RPC's response type.
enum Message {
    Started(pb::TrialRunStarted),
    Progress(pb::BuildProgress),
    Trial(Box<pb::Trial>),
    Finished(Box<RunOutcome>),
}

fn outcome_status(outcome: &RunOutcome) -> lakehouse_proto::google::rpc::Status {
    match &outcome.status {
        Ok(()) => ok_rpc_status(),
        Err(error) => to_rpc_status(&to_status(&**error)),
    }
}

/// `started`, then the run's events until its outcome.
fn run_stream<E>(
    ticket: TrialTicket,
    wrap: impl Fn(Message) -> E + Send + 'static,
) -> impl futures::Stream<Item = E> + Send + 'static {
    let run: Arc<Run> = ticket.run;
    let started = Message::Started(pb::TrialRunStarted {
        run_id: run.id.clone(),
        index: run.index.clone(),
        eval_set: run.eval_set.clone(),
        replayed: ticket.replayed,
    });
    let events = run.events().map(|event| match event {
        RunEvent::Progress(p) => Message::Progress(progress_pb(p)),
        RunEvent::Trial(t) => Message::Trial(Box::new(trial_pb(&t))),
        RunEvent::Finished(outcome) => Message::Finished(outcome),
    });
    futures::stream::once(async move { started })
        .chain(events)
        .map(wrap)
}
