//! Choosing among trials: the best under a recall floor by an objective,
//! the Pareto frontier, and the sort keys ListTrials pages by.

use std::cmp::Ordering;

use super::record::TrialRecord;

/// What "best" means (BestTrial, TuneIndex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Lowest p50 latency.
    #[default]
    Latency,
    /// Highest recall.
    Recall,
    /// Shortest build.
    BuildTime,
    /// Least memory.
    Memory,
    /// Highest throughput.
    Throughput,
}

/// A figure to order trials by (ListTrials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Figure {
    /// Oldest first.
    #[default]
    CreateTime,
    /// Highest first.
    Recall,
    /// Lowest first.
    P50,
    /// Lowest first.
    P99,
    /// Lowest first.
    BuildDuration,
    /// Lowest first.
    Memory,
    /// Highest first.
    Throughput,
}

/// `a` against `b` by the objective alone: `Less` when `a` is better.
fn by_objective(objective: Objective, a: &TrialRecord, b: &TrialRecord) -> Ordering {
    match objective {
        Objective::Latency => a.latency.p50_us.cmp(&b.latency.p50_us),
        Objective::Recall => b.recall.total_cmp(&a.recall),
        Objective::BuildTime => a.build_duration_ms.cmp(&b.build_duration_ms),
        Objective::Memory => a.memory_bytes.cmp(&b.memory_bytes),
        Objective::Throughput => b.queries_per_second.total_cmp(&a.queries_per_second),
    }
}

/// `a` against `b`: the objective, then memory, build time, and the older
/// trial, so the choice is deterministic.
pub fn better(objective: Objective, a: &TrialRecord, b: &TrialRecord) -> Ordering {
    by_objective(objective, a, b)
        .then(a.memory_bytes.cmp(&b.memory_bytes))
        .then(a.build_duration_ms.cmp(&b.build_duration_ms))
        .then(a.create_time.cmp(&b.create_time))
        .then_with(|| a.trial_id.cmp(&b.trial_id))
}

/// What BestTrial found.
#[derive(Debug, Clone, PartialEq)]
pub enum Best<'a> {
    /// The best trial meeting the floor.
    Found(&'a TrialRecord),
    /// None meets it; the best recall among the candidates (None: no trials).
    NoneMeets {
        /// Highest recall seen.
        best_recall: Option<f64>,
    },
}

/// The best of `trials` with recall >= `min_recall` by `objective`.
pub fn best<'a>(
    trials: impl IntoIterator<Item = &'a TrialRecord>,
    min_recall: f64,
    objective: Objective,
) -> Best<'a> {
    let mut best_recall: Option<f64> = None;
    let mut winner: Option<&TrialRecord> = None;
    for trial in trials {
        best_recall = Some(best_recall.map_or(trial.recall, |r| r.max(trial.recall)));
        if trial.recall >= min_recall
            && winner.is_none_or(|w| better(objective, trial, w) == Ordering::Less)
        {
            winner = Some(trial);
        }
    }
    match winner {
        Some(trial) => Best::Found(trial),
        None => Best::NoneMeets { best_recall },
    }
}

/// Whether `a` dominates `b`: at least as good on recall, p50, build time
/// and memory, and better on one.
pub fn dominates(a: &TrialRecord, b: &TrialRecord) -> bool {
    let no_worse = a.recall >= b.recall
        && a.latency.p50_us <= b.latency.p50_us
        && a.build_duration_ms <= b.build_duration_ms
        && a.memory_bytes <= b.memory_bytes;
    let better = a.recall > b.recall
        || a.latency.p50_us < b.latency.p50_us
        || a.build_duration_ms < b.build_duration_ms
        || a.memory_bytes < b.memory_bytes;
    no_worse && better
}

/// The trials no other trial dominates, by recall descending.
pub fn pareto(trials: &[TrialRecord]) -> Vec<TrialRecord> {
    let mut front: Vec<TrialRecord> = trials
        .iter()
        .filter(|t| !trials.iter().any(|o| dominates(o, t)))
        .cloned()
        .collect();
    front.sort_by(|a, b| {
        b.recall
            .total_cmp(&a.recall)
            .then(a.latency.p50_us.cmp(&b.latency.p50_us))
            .then_with(|| a.trial_id.cmp(&b.trial_id))
    });
    front.dedup_by(|a, b| {
        a.recall == b.recall
            && a.latency.p50_us == b.latency.p50_us
            && a.build_duration_ms == b.build_duration_ms
            && a.memory_bytes == b.memory_bytes
            && a.params == b.params
            && a.ef_search == b.ef_search
    });
    front
}

/// A string that sorts trials by `figure`, best first, ties by trial id:
/// the position ListTrials' page tokens carry.
pub fn sort_key(figure: Figure, trial: &TrialRecord) -> String {
    /// Order-preserving bits of a non-negative or negative f64.
    fn ordered(v: f64) -> u64 {
        let bits = v.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    }
    let rank: u64 = match figure {
        Figure::CreateTime => trial.create_time.timestamp_micros().max(0) as u64,
        Figure::Recall => !ordered(trial.recall),
        Figure::P50 => trial.latency.p50_us,
        Figure::P99 => trial.latency.p99_us,
        Figure::BuildDuration => trial.build_duration_ms,
        Figure::Memory => trial.memory_bytes,
        Figure::Throughput => !ordered(trial.queries_per_second),
    };
    format!("{rank:016x}{}", trial.trial_id)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;
    use crate::hnsw::HnswParams;
    use crate::trials::measure::Latency;

    fn trial(id: &str, recall: f64, p50: u64, build: u64, memory: u64) -> TrialRecord {
        TrialRecord {
            trial_id: id.to_owned(),
            run_id: "r".into(),
            index: "i".into(),
            eval_set: "e".into(),
            params: HnswParams::default(),
            ef_search: 40,
            k: 10,
            recall,
            latency: Latency {
                p50_us: p50,
                p95_us: p50,
                p99_us: p50,
                mean_us: p50,
            },
            queries_per_second: 1e6 / p50 as f64,
            build_duration_ms: build,
            build_threads: 1,
            memory_bytes: memory,
            vector_count: 100,
            dataset_version: 1,
            generation: 0,
            create_time: Utc.timestamp_opt(1_700_000_000, 0).single().expect("time"),
        }
    }

    #[test]
    fn best_meets_the_floor_and_breaks_ties_by_memory() {
        let trials = [
            trial("a", 0.97, 100, 10, 500),
            trial("b", 0.99, 150, 10, 900),
            trial("c", 0.995, 150, 10, 800),
            trial("d", 0.999, 300, 10, 100),
        ];
        // b and c tie on p50; c uses less memory.
        assert_eq!(
            best(&trials, 0.99, Objective::Latency),
            Best::Found(&trials[2])
        );
        assert_eq!(
            best(&trials, 0.9, Objective::Latency),
            Best::Found(&trials[0])
        );
        assert_eq!(
            best(&trials, 0.9, Objective::Recall),
            Best::Found(&trials[3])
        );
        assert_eq!(
            best(&trials, 0.9, Objective::Memory),
            Best::Found(&trials[3])
        );
        assert_eq!(
            best(&trials, 0.9999, Objective::Latency),
            Best::NoneMeets {
                best_recall: Some(0.999)
            }
        );
        assert_eq!(
            best(&[], 0.5, Objective::Latency),
            Best::NoneMeets { best_recall: None }
        );
    }

    #[test]
    fn pareto_keeps_only_undominated_trials() {
        let trials = vec![
            trial("fast", 0.90, 50, 10, 100),
            trial("good", 0.99, 120, 10, 100),
            trial("worse", 0.98, 130, 10, 100), // dominated by "good"
            trial("slow-build", 0.995, 200, 40, 300),
            trial("same-but-bigger", 0.99, 120, 10, 200), // dominated by "good"
        ];
        let front = pareto(&trials);
        let ids: Vec<&str> = front.iter().map(|t| t.trial_id.as_str()).collect();
        assert_eq!(ids, ["slow-build", "good", "fast"]);
        for a in &front {
            assert!(!trials.iter().any(|o| dominates(o, a)));
        }
    }

    #[test]
    fn sort_keys_order_best_first() {
        let (low, high) = (trial("x", 0.5, 10, 1, 1), trial("y", 0.9, 20, 1, 1));
        assert!(sort_key(Figure::Recall, &high) < sort_key(Figure::Recall, &low));
        assert!(sort_key(Figure::P50, &low) < sort_key(Figure::P50, &high));
        assert!(sort_key(Figure::Throughput, &low) < sort_key(Figure::Throughput, &high));
    }
}
