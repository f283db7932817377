//! The HNSW engine (ADR 0008): HNSW (Malkov & Yashunin) built and
//! searched over flat arrays, the distance kernels, metrics and exact
//! search. No gRPC, Parquet, object store or async here: it is the engine
//! the vector service drives, the workspace's only crate that allows
//! `unsafe` (in [`simd`] alone, each block with its safety argument).
//! Test-data generators are in [`testing`], behind the `testing` feature.
//!
//! [`build`] inserts vectors in parallel into per-node neighbour lists
//! (hnswlib's algorithm: heuristic neighbour selection, 2·M links on the base
//! layer, level multiplier 1/ln M); [`Graph`] is the frozen result that
//! searches use: neighbour lists in fixed-stride arrays next to the vectors
//! in one contiguous buffer, a visited array stamped with an epoch and reused
//! per thread, and prefetching of the next candidate's vector. ADR 0008 says
//! why this is ours rather than `hnsw_rs`'s loop, with the figures.

mod build;
mod exact;
mod filtered;
mod graph;
pub mod metric;
mod scratch;
pub mod simd;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use build::{BuildControl, Cancelled, build};
pub use exact::exact_search;
pub use filtered::exact_search_rows;
pub use graph::{Graph, GraphFormatError};
pub use metric::Metric;

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Build parameters, resolved (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers; the base layer keeps `2 * m`.
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
}

impl HnswParams {
    /// Default links per node (hnswlib's and FAISS's usual choice).
    pub const DEFAULT_M: usize = 16;
    /// Default build candidate list: reaches recall@10 >= 0.99 on 768-d
    /// embeddings at ef_search 40 in our benchmark.
    pub const DEFAULT_EF_CONSTRUCTION: usize = 80;
    /// Accepted range of `m`.
    pub const M_RANGE: (usize, usize) = (2, 128);
    /// Largest `ef_construction`.
    pub const MAX_EF: usize = 4096;
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: Self::DEFAULT_M,
            ef_construction: Self::DEFAULT_EF_CONSTRUCTION,
        }
    }
}

/// A node and its distance to the query; ordered by distance (ties by id,
/// so results are deterministic).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    /// Distance to the query.
    pub distance: f32,
    /// Row number of the vector.
    pub id: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.id.cmp(&other.id))
    }
}

/// The graph's view of its vectors: row `i` is `data[i*dim..(i+1)*dim]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl<'a> Rows<'a> {
    #[inline]
    pub fn row(&self, i: u32) -> &'a [f32] {
        let start = i as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Neighbour lists by node and layer: locked lists while building, fixed
/// arrays once frozen. `with_neighbors` hands out the list for the duration
/// of `f` (under the node's lock while building, as hnswlib does).
pub(crate) trait Links {
    fn with_neighbors<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R;

    /// Asks the CPU to start loading `node`'s list on `level`: the search
    /// calls it for the candidate it will expand next, as hnswlib does, so
    /// the list is in cache when its turn comes. Nothing by default.
    #[inline]
    fn prefetch_neighbors(&self, _node: u32, _level: usize) {}
}

/// Greedy walk on one upper layer: moves to a nearer neighbour until none is.
pub(crate) fn greedy<L: Links>(
    links: &L,
    rows: Rows<'_>,
    metric: crate::Metric,
    query: &[f32],
    mut current: Near,
    level: usize,
) -> Near {
    loop {
        let next = links.with_neighbors(current.id, level, |neighbors| {
            let mut best = current;
            for &n in neighbors {
                let d = metric.distance(query, rows.row(n));
                if d < best.distance {
                    best = Near { distance: d, id: n };
                }
            }
            best
        });
        if next.id == current.id {
            return current;
        }
        current = next;
    }
}

/// The arguments are the hot loop's whole state; a struct would only add a
/// level of indirection to every access.
///
/// Best-first search of one layer from `entry`, keeping the `ef` nearest in
/// `scratch.results` (farthest on top). The hot loop of both build and
/// search: no allocation, visited marks by epoch, the next neighbour's
/// vector prefetched while the current one is measured.
#[allow(clippy::too_many_arguments)]
pub(crate) fn search_layer<L: Links>(
    links: &L,
    rows: Rows<'_>,
    metric: crate::Metric,
    query: &[f32],
    entry: Near,
    ef: usize,
    level: usize,
    scratch: &mut scratch::Scratch,
) {
    use std::cmp::Reverse;
    scratch.start(rows.len());
    scratch.visit(entry.id);
    scratch.candidates.push(Reverse(entry));
    scratch.results.push(entry);
    while let Some(Reverse(candidate)) = scratch.candidates.pop() {
        let worst = scratch.results.peek().map_or(f32::INFINITY, |n| n.distance);
        if candidate.distance > worst && scratch.results.len() >= ef {
            break;
        }
        links.with_neighbors(candidate.id, level, |neighbors| {
            if let Some(&first) = neighbors.first() {
                crate::simd::prefetch_u32(&scratch.marks, first as usize);
                crate::simd::prefetch(rows.row(first));
            }
            for (j, &n) in neighbors.iter().enumerate() {
                if let Some(&next) = neighbors.get(j + 1) {
                    crate::simd::prefetch_u32(&scratch.marks, next as usize);
                    crate::simd::prefetch(rows.row(next));
                }
                if !scratch.visit(n) {
                    continue;
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
        });
        if let Some(Reverse(next)) = scratch.candidates.peek() {
            links.prefetch_neighbors(next.id, level);
        }
    }
}

/// hnswlib's neighbour heuristic: from `candidates` (nearest first), keep a
/// candidate only if it is nearer to the base than to every one kept so
/// far, up to `max`. Keeps links pointing in diverse directions, which is
/// what makes the graph navigable on clustered data.
pub(crate) fn select_neighbors(
    rows: Rows<'_>,
    metric: crate::Metric,
    candidates: &[Near],
    max: usize,
    out: &mut Vec<Near>,
) {
    out.clear();
    if candidates.len() <= max {
        out.extend_from_slice(candidates);
        return;
    }
    for &candidate in candidates {
        if out.len() >= max {
            break;
        }
        let row = rows.row(candidate.id);
        let diverse = out
            .iter()
            .all(|kept| metric.distance(row, rows.row(kept.id)) >= candidate.distance);
        if diverse {
            out.push(candidate);
        }
    }
}

/// The level of node `i`: `floor(-ln(u) / ln(m))` for a uniform `u` drawn
/// from a hash of (seed, i), so a build's levels do not depend on thread
/// timing. Capped at 15.
pub(crate) fn random_level(seed: u64, i: u32, m: usize) -> usize {
    let mut z = seed ^ (u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 53 random bits in (0, 1].
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = -u.ln() / (m as f64).ln();
    (level as usize).min(15)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::clustered_vectors;
    use crate::{Metric, exact_search};

    fn recall(
        graph: &Graph,
        vectors: &[f32],
        dim: usize,
        queries: &[f32],
        k: usize,
        ef: usize,
    ) -> f64 {
        let mut found = 0;
        for q in queries.chunks_exact(dim) {
            let truth: Vec<u32> = exact_search(vectors, dim, graph.metric(), q, k, None)
                .iter()
                .map(|n| n.id)
                .collect();
            found += graph
                .search(q, k, ef)
                .iter()
                .filter(|n| truth.contains(&n.id))
                .count();
        }
        found as f64 / (queries.len() / dim * k) as f64
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool")
    }

    #[test]
    fn recall_at_default_parameters_on_clustered_data() {
        let (n, dim) = (6000, 64);
        // Queries from the same distribution, held out of the index.
        let all = clustered_vectors(n + 100, dim, 20, 7);
        let (vectors, queries) = all.split_at(n * dim);
        let (vectors, queries) = (vectors.to_vec(), queries.to_vec());
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let graph = build(
                Arc::new(vectors.clone()),
                dim,
                metric,
                HnswParams::default(),
                1,
                &pool(),
                &BuildControl::default(),
            )
            .expect("build");
            assert_eq!(graph.len(), n);
            for ef in [10, 100, 400] {
                eprintln!(
                    "{metric:?}: recall@10 at ef {ef} = {:.4}",
                    recall(&graph, &vectors, dim, &queries, 10, ef)
                );
            }
            let r = recall(
                &graph, &vectors, dim, &queries, 10,
                40, /* the vector service's default ef_search */
            );
            eprintln!("{metric:?}: recall@10 at the default ef_search = {r:.4}");
            assert!(r >= 0.95, "{metric:?}: recall@10 {r} < 0.95");
        }
    }

    #[test]
    fn stored_graph_round_trips_and_damage_is_refused() {
        let dim = 16;
        let vectors = clustered_vectors(500, dim, 5, 3);
        let graph = build(
            Arc::new(vectors.clone()),
            dim,
            Metric::L2,
            HnswParams {
                m: 8,
                ef_construction: 40,
            },
            1,
            &pool(),
            &BuildControl::default(),
        )
        .expect("build");
        let bytes: Vec<u8> = graph.to_sections().concat();
        let back = Graph::from_bytes(&bytes).expect("round trip");
        let q = &vectors[..dim];
        assert_eq!(graph.search(q, 5, 20), back.search(q, 5, 20));
        assert!(
            Graph::from_bytes(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        let mut forged = bytes.clone();
        // The first base-layer link of node 0 points past the graph.
        // Header 72 bytes, 500 level bytes (a multiple of 4: no padding),
        // then node 0's block: its count, then its first link.
        let links_at = 72 + 500 + 4;
        forged[links_at..links_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Graph::from_bytes(&forged).is_err(), "out-of-range link");
    }

    /// Regression: a thread that held the entry point's read guard while
    /// waiting for `grow` deadlocked with the thread raising the top layer.
    /// m = 2 gives a new top layer to every other node early on, so threads
    /// race for it constantly.
    #[test]
    fn concurrent_top_layer_raises_do_not_deadlock() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .expect("pool");
            for seed in 0..20 {
                let vectors = clustered_vectors(1500, 8, 4, seed + 1);
                let params = HnswParams {
                    m: 2,
                    ef_construction: 8,
                };
                let graph = build(
                    Arc::new(vectors),
                    8,
                    Metric::L2,
                    params,
                    seed,
                    &pool,
                    &BuildControl::default(),
                )
                .expect("build");
                assert_eq!(graph.len(), 1500);
            }
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("20 builds with racing top-layer raises finish (no deadlock)");
    }

    #[test]
    fn a_cancelled_build_stops() {
        let control = BuildControl::default();
        control
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let vectors = clustered_vectors(2000, 8, 4, 1);
        let result = build(
            Arc::new(vectors),
            8,
            Metric::L2,
            HnswParams::default(),
            1,
            &pool(),
            &control,
        );
        assert_eq!(result.err(), Some(Cancelled));
    }
}
