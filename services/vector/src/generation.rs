//! A generation in memory: the frozen graph with its row columns, shared by
//! every search through an `Arc`, so a promotion swaps one pointer while
//! searches in flight finish on the generation they started with.

use arrow::array::RecordBatch;

use crate::filter::column::RowIndexes;
use crate::hnsw::exact_search;
use crate::hnsw::{Graph, Near};

/// A searchable generation.
#[derive(Debug)]
pub struct LoadedGeneration {
    /// Its number.
    pub generation: u64,
    /// The graph and its vectors.
    pub graph: Graph,
    /// Id, text and payload columns, row `i` for node `i`.
    pub rows: RecordBatch,
    /// The dataset version it was built from.
    pub dataset_version: u64,
    /// Filter columns and the id lookup, built on first use.
    pub indexes: RowIndexes,
}

impl LoadedGeneration {
    /// Bytes held: links, vectors, row columns and the lookups built so far.
    pub fn memory_bytes(&self) -> u64 {
        (self.graph.links_bytes()
            + self.graph.vectors().capacity() * 4
            + self.rows.get_array_memory_size()
            + self.indexes.memory_bytes()) as u64
    }

    /// The `k` nearest rows by HNSW with `ef` candidates, or exactly.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, exact: bool) -> Vec<Near> {
        if exact {
            exact_search(
                self.graph.vectors(),
                self.graph.dim(),
                self.graph.metric(),
                query,
                k,
                None,
            )
        } else {
            self.graph.search(query, k, ef)
        }
    }
}
