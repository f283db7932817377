//! Request fields checked and converted to domain values, and domain
//! records converted to proto messages.

use lakehouse_proto::vector::v1::{self as pb};
use lakehouse_shared::time::to_proto as timestamp;
use lakehouse_shared::{names, request_id};

use crate::Metric;
use crate::error::Error;
use crate::hnsw::HnswParams;
use crate::limits::{DEFAULT_K, MAX_EF_SEARCH, MAX_K};
use crate::progress::{Phase, Progress};
use crate::record::{GenerationRecord, GenerationState};
use crate::service::IndexView;

pub(super) fn name(kind: &'static str, text: &str) -> Result<String, Error> {
    names::validate(kind, text)?;
    Ok(text.to_owned())
}

pub(super) fn request_id_of(id: &str) -> Result<Option<String>, Error> {
    Ok(request_id::parse(id)?)
}

pub(super) fn column(field: &'static str, text: &str) -> Result<String, Error> {
    if text.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(text.to_owned())
}

pub(super) fn metric(value: i32) -> Result<Metric, Error> {
    match pb::Metric::try_from(value) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Ok(Metric::Cosine),
        Ok(pb::Metric::L2) => Ok(Metric::L2),
        Ok(pb::Metric::Dot) => Ok(Metric::Dot),
        Err(_) => Err(Error::invalid("metric", format!("unknown metric {value}"))),
    }
}

pub(super) fn metric_pb(metric: Metric) -> pb::Metric {
    match metric {
        Metric::Cosine => pb::Metric::Cosine,
        Metric::L2 => pb::Metric::L2,
        Metric::Dot => pb::Metric::Dot,
    }
}

/// Build parameters with defaults and ranges applied; `None` when unset.
pub(super) fn params(config: Option<pb::HnswConfig>) -> Result<Option<HnswParams>, Error> {
    params_over(config, HnswParams::default())
}

/// Build parameters where a field left 0 takes its value from `base`
/// (the defaults for a new index, the active generation's for a rebuild:
/// one meaning of zero, "unset keeps"); `None` when no config is given.
pub(super) fn params_over(
    config: Option<pb::HnswConfig>,
    base: HnswParams,
) -> Result<Option<HnswParams>, Error> {
    let Some(pb::HnswConfig { m, ef_construction }) = config else {
        return Ok(None);
    };
    let m = match m {
        0 => base.m,
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
        0 => base.ef_construction.max(m),
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

pub(super) fn params_pb(params: HnswParams) -> pb::HnswConfig {
    pb::HnswConfig {
        m: params.m as u32,
        ef_construction: params.ef_construction as u32,
    }
}

pub(super) fn ef_search(field: &'static str, value: u32) -> Result<u32, Error> {
    if value == 0 || value > MAX_EF_SEARCH {
        return Err(Error::invalid(
            field,
            format!("{value} is out of range 1 to {MAX_EF_SEARCH}"),
        ));
    }
    Ok(value)
}

pub(super) fn k(value: u32) -> Result<usize, Error> {
    match value as usize {
        0 => Ok(DEFAULT_K),
        k if k > MAX_K => Err(Error::invalid(
            "k",
            format!("{k} is above the maximum of {MAX_K}"),
        )),
        k => Ok(k),
    }
}

pub(super) fn generation_state(state: GenerationState) -> pb::GenerationState {
    match state {
        GenerationState::Building => pb::GenerationState::Building,
        GenerationState::Ready => pb::GenerationState::Ready,
        GenerationState::Failed => pb::GenerationState::Failed,
        GenerationState::Cancelled => pb::GenerationState::Cancelled,
        GenerationState::Damaged => pb::GenerationState::Damaged,
    }
}

pub(super) fn generation_pb(g: &GenerationRecord, active: u64) -> pb::Generation {
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

pub(super) fn index_pb(view: &IndexView) -> pb::Index {
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

pub(super) fn progress_pb(p: Progress) -> pb::BuildProgress {
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

pub(super) fn retained(value: u32) -> Result<u32, Error> {
    if value > 100 {
        return Err(Error::invalid(
            "retained_generations",
            format!("{value} is above the maximum of 100"),
        ));
    }
    Ok(value)
}
