//! Exact k-nearest search by brute force: the ground truth HNSW is measured
//! against. Rows are split into chunks scanned in parallel, each keeping its
//! own bounded heap; the heaps are merged at the end.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::Metric;
use crate::Near;

/// Rows per parallel chunk: large enough to amortise the task, small enough
/// to balance two to a few dozen cores.
const CHUNK_ROWS: usize = 4096;

/// The `k` rows of `vectors` nearest to `query`, nearest first, skipping the
/// row `exclude` (a query sampled from the data is not its own neighbour).
pub fn exact_search(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    query: &[f32],
    k: usize,
    exclude: Option<u32>,
) -> Vec<Near> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let heaps: Vec<BinaryHeap<Near>> = vectors
        .par_chunks(CHUNK_ROWS * dim)
        .enumerate()
        .map(|(chunk, rows)| {
            let first = chunk * CHUNK_ROWS;
            let mut heap = BinaryHeap::with_capacity(k + 1);
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                let id = (first + i) as u32;
                if Some(id) == exclude {
                    continue;
                }
                let near = Near {
                    distance: metric.distance(query, row),
                    id,
                };
                keep_nearest(&mut heap, near, k);
            }
            heap
        })
        .collect();
    let mut all: Vec<Near> = heaps.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(k);
    all
}

/// Adds `near` to `heap` (farthest on top) if it is among the `k`
/// nearest seen so far.
#[inline]
pub(crate) fn keep_nearest(heap: &mut BinaryHeap<Near>, near: Near, k: usize) {
    if heap.len() < k {
        heap.push(near);
    } else if heap.peek().is_some_and(|worst| near < *worst) {
        heap.pop();
        heap.push(near);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hand_checked_neighbours() {
        // Four points on a line; the query sits at 1.2.
        let vectors = [0.0f32, 1.0, 2.0, 10.0];
        let found = exact_search(&vectors, 1, Metric::L2, &[1.2], 2, None);
        assert_eq!(found.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2]);
        assert!((found[0].distance - 0.04).abs() < 1e-6, "squared L2");
        let found = exact_search(&vectors, 1, Metric::L2, &[1.2], 2, Some(1));
        assert_eq!(found.iter().map(|n| n.id).collect::<Vec<_>>(), [2, 0]);
        let found = exact_search(&vectors, 1, Metric::Dot, &[1.0], 1, None);
        assert_eq!((found[0].id, found[0].distance), (3, -10.0));
    }
}
