//! Parallel insertion (hnswlib's algorithm) into per-node neighbour lists
//! behind small locks, then [`Graph::freeze`] into fixed-stride arrays.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::scratch::with_scratch;
use super::{
    Graph, HnswParams, Links, Near, Rows, greedy, random_level, search_layer, select_neighbors,
};
use crate::Metric;

/// Shared with a running build: progress out, cancellation in.
#[derive(Debug, Default)]
pub struct BuildControl {
    /// Vectors inserted so far.
    pub inserted: AtomicU64,
    /// Set to stop the build; it ends with [`Cancelled`] soon after.
    pub cancel: AtomicBool,
}

/// The build was cancelled through its [`BuildControl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the build was cancelled")]
pub struct Cancelled;

struct Building<'a> {
    rows: Rows<'a>,
    metric: Metric,
    params: HnswParams,
    levels: Vec<u8>,
    base: Vec<Mutex<Vec<u32>>>,
    upper: Vec<Vec<Mutex<Vec<u32>>>>,
    /// Entry point and top layer.
    entry: RwLock<(u32, usize)>,
    /// Held through the whole insertion of a node that raises the top layer
    /// (rare: about one node in m per new layer), as hnswlib does.
    grow: Mutex<()>,
}

impl Links for Building<'_> {
    #[inline]
    fn with_neighbors<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        f(&self.list(node, level).lock())
    }
}

impl Building<'_> {
    fn list(&self, node: u32, level: usize) -> &Mutex<Vec<u32>> {
        if level == 0 {
            &self.base[node as usize]
        } else {
            &self.upper[node as usize][level - 1]
        }
    }

    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    fn insert(&self, q: u32) {
        let level = usize::from(self.levels[q as usize]);
        // Read the top layer into a local first: a read guard kept alive
        // while waiting for `grow` would deadlock with the holder of `grow`,
        // which takes the write lock to raise the entry point.
        let top_now = self.entry.read().1;
        let _grow = (level > top_now).then(|| self.grow.lock());
        let (entry, top) = *self.entry.read();
        let query = self.rows.row(q);
        let mut current = Near {
            distance: self.metric.distance(query, self.rows.row(entry)),
            id: entry,
        };
        for l in (level + 1..=top).rev() {
            current = greedy(self, self.rows, self.metric, query, current, l);
        }
        let mut selected = Vec::with_capacity(self.params.m);
        for l in (0..=level.min(top)).rev() {
            let mut found: Vec<Near> = with_scratch(|scratch| {
                search_layer(
                    self,
                    self.rows,
                    self.metric,
                    query,
                    current,
                    self.params.ef_construction,
                    l,
                    scratch,
                );
                scratch.results.drain().filter(|n| n.id != q).collect()
            });
            found.sort_unstable();
            select_neighbors(self.rows, self.metric, &found, self.params.m, &mut selected);
            {
                let mut own = self.list(q, l).lock();
                own.clear();
                own.extend(selected.iter().map(|n| n.id));
            }
            for neighbor in &selected {
                self.connect(neighbor.id, q, neighbor.distance, l);
            }
            if let Some(&nearest) = found.first() {
                current = nearest;
            }
        }
        if level > top {
            *self.entry.write() = (q, level);
        }
    }

    /// Adds `q` to `node`'s list on `level`, re-selecting the list by the
    /// heuristic when it is full.
    fn connect(&self, node: u32, q: u32, distance: f32, level: usize) {
        let max = self.max_links(level);
        let mut list = self.list(node, level).lock();
        if list.contains(&q) {
            return;
        }
        if list.len() < max {
            list.push(q);
            return;
        }
        let base = self.rows.row(node);
        let mut candidates: Vec<Near> = list
            .iter()
            .map(|&id| Near {
                distance: self.metric.distance(base, self.rows.row(id)),
                id,
            })
            .collect();
        candidates.push(Near { distance, id: q });
        candidates.sort_unstable();
        let mut kept = Vec::with_capacity(max);
        select_neighbors(self.rows, self.metric, &candidates, max, &mut kept);
        list.clear();
        list.extend(kept.iter().map(|n| n.id));
    }
}

/// Builds the graph of `vectors` (`dim` floats per row, normalised already
/// for cosine) on `pool`'s threads. Levels come from `seed`, so two builds
/// differ only by the order threads happen to insert in.
pub fn build(
    vectors: Arc<Vec<f32>>,
    dim: usize,
    metric: Metric,
    params: HnswParams,
    seed: u64,
    pool: &rayon::ThreadPool,
    control: &BuildControl,
) -> Result<Graph, Cancelled> {
    let rows = Rows {
        data: &vectors,
        dim,
    };
    let n = rows.len();
    let levels: Vec<u8> = (0..n as u32)
        .map(|i| random_level(seed, i, params.m) as u8)
        .collect();
    let base = (0..n)
        .map(|_| Mutex::new(Vec::with_capacity(2 * params.m)))
        .collect();
    let upper = levels
        .iter()
        .map(|&l| {
            (0..l)
                .map(|_| Mutex::new(Vec::with_capacity(params.m)))
                .collect()
        })
        .collect();
    let building = Building {
        rows,
        metric,
        params,
        entry: RwLock::new((0, levels.first().map_or(0, |&l| usize::from(l)))),
        levels,
        base,
        upper,
        grow: Mutex::new(()),
    };
    if n > 0 {
        control.inserted.fetch_add(1, Ordering::Relaxed);
        pool.install(|| {
            (1..n as u32).into_par_iter().try_for_each(|q| {
                if control.cancel.load(Ordering::Relaxed) {
                    return Err(Cancelled);
                }
                building.insert(q);
                control.inserted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
        })?;
    }
    let Building {
        levels,
        base,
        upper,
        entry,
        ..
    } = building;
    let base: Vec<Vec<u32>> = base.into_iter().map(Mutex::into_inner).collect();
    let upper: Vec<Vec<Vec<u32>>> = upper
        .into_iter()
        .map(|lists| lists.into_iter().map(Mutex::into_inner).collect())
        .collect();
    let (entry, top) = entry.into_inner();
    Ok(Graph::freeze(
        vectors, dim, metric, params, levels, &base, &upper, entry, top,
    ))
}
