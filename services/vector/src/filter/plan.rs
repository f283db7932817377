//! The planner: per query, from the filter's estimated match count, either
//! an exact scan of the matching rows (few match: a scan is exact and
//! cheaper than any walk) or a filtered graph walk (many match). A walk that
//! finds fewer than `k` rows while more match falls back to the scan, so a
//! filtered search never answers with fewer than `k` hits when `k` rows
//! match. Post-filtering (search, then drop rejected hits) is never used.

use crate::generation::LoadedGeneration;
use crate::hnsw::{Near, exact_search, exact_search_rows};

use super::predicate::Predicate;

/// Below this share of the rows, the walk's accepted rows thin out past
/// what two-hop expansion reconnects: scan them instead.
pub const EXACT_BELOW_SHARE: f64 = 0.02;
/// Up to this many matching rows per unit of ef, a scan measures no more
/// rows than a walk would (an unfiltered walk measures ~30·ef rows at the
/// default parameters on our benchmark set).
pub const EXACT_ROWS_PER_EF: f64 = 30.0;

/// How a search ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The HNSW graph, no filter.
    Graph,
    /// The HNSW graph, measuring and returning only rows the filter passes.
    FilteredGraph,
    /// An exact scan of the rows the filter passes.
    ExactRows,
    /// An exact scan of every row (asked for with `exact`).
    Exact,
}

impl Plan {
    /// The plan's name in logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Graph => "GRAPH",
            Plan::FilteredGraph => "FILTERED_GRAPH",
            Plan::ExactRows => "EXACT_ROWS",
            Plan::Exact => "EXACT",
        }
    }
}

/// Whether a filter expected to pass `estimate` of `rows` rows is scanned.
pub fn scan_is_cheaper(estimate: f64, rows: usize, ef: usize) -> bool {
    estimate < EXACT_BELOW_SHARE * rows as f64 || estimate <= EXACT_ROWS_PER_EF * ef as f64
}

/// What one query asks of a generation.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The query, prepared for the metric.
    pub query: &'a [f32],
    /// Neighbours wanted.
    pub k: usize,
    /// Candidate list size.
    pub ef: usize,
    /// Brute force over every (passing) row.
    pub exact: bool,
    /// A row never returned (the query's own row in a search by id).
    pub exclude: Option<u32>,
}

/// Runs one query on `generation` under `filter`; returns the hits and the
/// plan that produced them.
pub fn run(
    generation: &LoadedGeneration,
    ask: Ask<'_>,
    filter: Option<&Predicate>,
) -> (Vec<Near>, Plan) {
    let graph = &generation.graph;
    let rows = graph.len();
    let scan = |matching: Vec<u32>| {
        let matching: Vec<u32> = match ask.exclude {
            Some(own) => matching.into_iter().filter(|&r| r != own).collect(),
            None => matching,
        };
        exact_search_rows(
            graph.vectors(),
            graph.dim(),
            graph.metric(),
            ask.query,
            ask.k,
            &matching,
        )
    };
    let Some(filter) = filter else {
        if ask.exact {
            let hits = exact_search(
                graph.vectors(),
                graph.dim(),
                graph.metric(),
                ask.query,
                ask.k,
                ask.exclude,
            );
            return (hits, Plan::Exact);
        }
        return (graph_without(generation, ask), Plan::Graph);
    };
    if ask.exact || scan_is_cheaper(filter.estimate(rows), rows, ask.ef) {
        let plan = if ask.exact {
            Plan::Exact
        } else {
            Plan::ExactRows
        };
        return (scan(filter.matching_rows(rows)), plan);
    }
    let exclude = ask.exclude.unwrap_or(u32::MAX);
    let hits = graph.search_filtered(ask.query, ask.k, ask.ef, |row| {
        row != exclude && filter.matches(row)
    });
    if hits.len() >= ask.k {
        return (hits, Plan::FilteredGraph);
    }
    // The walk could not reach k passing rows: if more pass, scan them.
    let matching = filter.matching_rows(rows);
    let passing = matching.len()
        - usize::from(
            ask.exclude
                .is_some_and(|own| matching.binary_search(&own).is_ok()),
        );
    if passing > hits.len() {
        return (scan(matching), Plan::ExactRows);
    }
    (hits, Plan::FilteredGraph)
}

/// An unfiltered walk, leaving out the excluded row (one more neighbour is
/// asked for, so `k` remain).
fn graph_without(generation: &LoadedGeneration, ask: Ask<'_>) -> Vec<Near> {
    let graph = &generation.graph;
    match ask.exclude {
        None => graph.search(ask.query, ask.k, ask.ef),
        Some(own) => {
            let mut hits = graph.search(ask.query, ask.k + 1, ask.ef.max(ask.k + 1));
            hits.retain(|h| h.id != own);
            hits.truncate(ask.k);
            hits
        }
    }
}
