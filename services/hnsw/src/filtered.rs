//! Search restricted to the rows a predicate accepts (ADR 0017).
//!
//! Two plans, chosen by the caller from the number of accepted rows:
//!
//! - [`Graph::search_filtered`] walks the graph but only ever measures,
//!   queues and returns accepted rows. A rejected neighbour is not a dead
//!   end: when a node has few accepted neighbours, the walk looks through
//!   the rejected ones at *their* neighbours (two hops, ACORN-1's
//!   neighbourhood expansion) so the accepted rows stay connected even when
//!   only a few percent pass. Checking a predicate costs nanoseconds; a
//!   distance costs tens: the walk spends distances on accepted rows only.
//! - [`exact_search_rows`] measures every listed row: when few rows match it
//!   is both exact and cheaper than any walk.
//!
//! Plain post-filtering (search, then drop the rejected hits) is neither:
//! at 1 % selectivity it returns almost nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::graph::Graph;
use crate::scratch::with_scratch;
use crate::{Links, Metric, Near, greedy};

/// Rows per parallel chunk of [`exact_search_rows`].
const CHUNK_ROWS: usize = 4096;

impl Graph {
    /// The `k` nearest rows that `accept` accepts, nearest first, searching
    /// with `max(ef, k)` accepted candidates. The upper layers route without
    /// the predicate (they only find a start near the query); the base layer
    /// measures accepted rows only, with two-hop expansion through rejected
    /// neighbours where accepted ones are sparse. May return fewer than `k`
    /// when the accepted rows are very few or not reachable: callers plan an
    /// exact scan for those (see the module doc).
    pub fn search_filtered<F: Fn(u32) -> bool>(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: F,
    ) -> Vec<Near> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let rows = self.rows();
        let metric = self.metric();
        let mut current = Near {
            distance: metric.distance(query, rows.row(self.entry())),
            id: self.entry(),
        };
        for level in (1..=self.top()).rev() {
            current = greedy(self, rows, metric, query, current, level);
        }
        let ef = ef.max(k);
        // Expand through rejected neighbours while fewer than this many
        // accepted ones were found (a quarter of the base layer's degree):
        // where half the rows pass, most nodes keep enough accepted
        // neighbours and the walk measures about what an unfiltered one
        // does; where few pass, nearly every node expands.
        let sparse = self.params().m / 2;
        let cap = 2 * self.params().m;
        with_scratch(|scratch| {
            scratch.start(rows.len());
            scratch.visit(current.id);
            scratch.candidates.push(Reverse(current));
            if accept(current.id) {
                scratch.results.push(current);
            }
            let mut rejected: Vec<u32> = Vec::with_capacity(cap);
            // Accepted rows not measured yet: gathered first (a predicate
            // check is nanoseconds), then measured with the next one's
            // vector prefetched, so no bandwidth goes to rejected vectors.
            let mut fresh: Vec<u32> = Vec::with_capacity(2 * cap);
            while let Some(Reverse(candidate)) = scratch.candidates.pop() {
                let worst = scratch.results.peek().map_or(f32::INFINITY, |n| n.distance);
                if scratch.results.len() >= ef && candidate.distance > worst {
                    break;
                }
                rejected.clear();
                fresh.clear();
                // Accepted neighbours, measured now or before: how dense
                // the accepted rows are around this node.
                let mut accepted = 0usize;
                for &n in self.neighbors_of(candidate.id) {
                    if accept(n) {
                        accepted += 1;
                        if scratch.visit(n) {
                            fresh.push(n);
                        }
                    } else {
                        rejected.push(n);
                    }
                }
                if accepted < sparse {
                    // Start loading every list the expansion will read, so
                    // their cache misses overlap instead of queueing.
                    for &via in &rejected {
                        self.prefetch_neighbors(via, 0);
                    }
                    'two_hop: for &via in &rejected {
                        // A rejected row is marked when looked through, so
                        // each is looked through once.
                        if !scratch.visit(via) {
                            continue;
                        }
                        for &n in self.neighbors_of(via) {
                            // Rejected rows two hops out are not marked:
                            // they may still be a bridge one hop from a
                            // later candidate.
                            if accept(n) {
                                accepted += 1;
                                if scratch.visit(n) {
                                    fresh.push(n);
                                }
                                if accepted >= cap {
                                    break 'two_hop;
                                }
                            }
                        }
                    }
                }
                if let Some(&first) = fresh.first() {
                    crate::simd::prefetch(rows.row(first));
                }
                for (j, &n) in fresh.iter().enumerate() {
                    if let Some(&next) = fresh.get(j + 1) {
                        crate::simd::prefetch(rows.row(next));
                    }
                    let d = metric.distance(query, rows.row(n));
                    let worst = scratch.results.peek().map_or(f32::INFINITY, |w| w.distance);
                    if scratch.results.len() < ef || d < worst {
                        let near = Near { distance: d, id: n };
                        scratch.candidates.push(Reverse(near));
                        scratch.results.push(near);
                        if scratch.results.len() > ef {
                            scratch.results.pop();
                        }
                    }
                }
                if let Some(Reverse(next)) = scratch.candidates.peek() {
                    self.prefetch_neighbors(next.id, 0);
                }
            }
            let mut found: Vec<Near> = scratch.results.drain().collect();
            found.sort_unstable();
            found.truncate(k);
            found
        })
    }
}

/// The `k` rows among `rows` (ids into `vectors`, any order) nearest to
/// `query`, nearest first. Runs on the calling thread up to a few thousand
/// rows (a rayon hop would cost more than it saves), in parallel chunks
/// beyond.
pub fn exact_search_rows(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    query: &[f32],
    k: usize,
    rows: &[u32],
) -> Vec<Near> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let scan = |ids: &[u32]| {
        let mut heap = BinaryHeap::with_capacity(k + 1);
        for &id in ids {
            let start = id as usize * dim;
            let Some(row) = vectors.get(start..start + dim) else {
                continue;
            };
            let near = Near {
                distance: metric.distance(query, row),
                id,
            };
            crate::exact::keep_nearest(&mut heap, near, k);
        }
        heap
    };
    let mut all: Vec<Near> = if rows.len() <= CHUNK_ROWS {
        scan(rows).into_vec()
    } else {
        rows.par_chunks(CHUNK_ROWS)
            .map(scan)
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect()
    };
    all.sort_unstable();
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::clustered_vectors;
    use crate::{BuildControl, HnswParams, build};

    #[test]
    fn subset_scan_matches_a_scan_of_the_subset_alone() {
        let dim = 8;
        let vectors = clustered_vectors(10_000, dim, 10, 5);
        let rows: Vec<u32> = (0..10_000).filter(|i| i % 7 == 3).collect();
        let query = &vectors[..dim];
        let found = exact_search_rows(&vectors, dim, Metric::L2, query, 10, &rows);
        let mut truth: Vec<Near> = rows
            .iter()
            .map(|&id| Near {
                distance: Metric::L2.distance(query, &vectors[id as usize * dim..][..dim]),
                id,
            })
            .collect();
        truth.sort_unstable();
        truth.truncate(10);
        assert_eq!(found, truth);
        assert!(found.iter().all(|n| n.id % 7 == 3));
    }

    /// Filtered recall against exact on the subset, at selectivities where
    /// a plain walk that drops rejected hits would collapse.
    #[test]
    fn filtered_walk_keeps_recall_at_low_selectivity() {
        let (n, dim) = (20_000, 16);
        let all = clustered_vectors(n + 50, dim, 16, 11);
        let (vectors, queries) = all.split_at(n * dim);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let graph = build(
            Arc::new(vectors.to_vec()),
            dim,
            Metric::L2,
            HnswParams::default(),
            1,
            &pool,
            &BuildControl::default(),
        )
        .expect("build");
        // Pseudo-random membership, independent of the clusters.
        let member = |percent: u64| {
            move |id: u32| (u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 100 < percent
        };
        // The planner walks the graph only when a few percent or more pass.
        for percent in [50u64, 10, 5] {
            let accept = member(percent);
            let rows: Vec<u32> = (0..n as u32).filter(|&i| accept(i)).collect();
            let (mut found, mut total) = (0, 0);
            for q in queries.chunks_exact(dim) {
                let truth = exact_search_rows(vectors, dim, Metric::L2, q, 10, &rows);
                let hits = graph.search_filtered(q, 10, 64, accept);
                assert!(hits.iter().all(|h| accept(h.id)), "a rejected row returned");
                total += truth.len();
                found += hits
                    .iter()
                    .filter(|h| truth.iter().any(|t| t.id == h.id))
                    .count();
            }
            let recall = found as f64 / total as f64;
            eprintln!("{percent}% pass: filtered recall@10 = {recall:.4}");
            assert!(recall >= 0.95, "{percent}%: recall {recall} < 0.95");
        }
        // A predicate nothing passes returns nothing, without error.
        assert!(
            graph
                .search_filtered(&queries[..dim], 10, 64, |_| false)
                .is_empty()
        );
    }
}
