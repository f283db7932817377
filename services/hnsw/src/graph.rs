//! The frozen graph that searches walk, and its byte format for storage.
//!
//! Layout: the vectors in one contiguous buffer (row = node id); the base
//! layer as fixed-stride blocks `[count, 2m slots]`; upper layers as blocks
//! `[count, m slots]` per level, found through a per-node offset. Reading a
//! node's neighbours is one slice, with no pointer chasing and no lock.

use std::borrow::Cow;
use std::sync::Arc;

use super::scratch::with_scratch;
use super::{HnswParams, Links, Near, Rows, greedy, search_layer};
use crate::Metric;

/// Marks a node without upper layers in `upper_offsets`.
const NO_UPPER: u32 = u32::MAX;
/// First bytes of a stored graph; the last byte is the format version.
const MAGIC: [u8; 8] = *b"LKHNSW\x00\x01";
/// Header: magic then eight little-endian u64.
const HEADER_BYTES: usize = 8 + 8 * 8;

/// A searchable HNSW graph.
#[derive(Debug, Clone)]
pub struct Graph {
    dim: usize,
    metric: Metric,
    params: HnswParams,
    vectors: Arc<Vec<f32>>,
    levels: Vec<u8>,
    base: Vec<u32>,
    upper_offsets: Vec<u32>,
    upper: Vec<u32>,
    entry: u32,
    top: usize,
}

/// A stored graph that is not one this version wrote whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored graph is damaged or of another format: {0}")]
pub struct GraphFormatError(pub &'static str);

impl Links for Graph {
    #[inline]
    fn with_neighbors<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        f(self.neighbors(node, level))
    }

    #[inline]
    fn prefetch_neighbors(&self, node: u32, level: usize) {
        let (array, start, len) = self.block(node, level);
        // A block is 1 + 2m slots: 132 bytes (3 lines) at m = 16.
        let mut at = start;
        while at < start + len {
            crate::simd::prefetch_u32(array, at);
            at += 16;
        }
    }
}

/// `bytes` (a whole number of values, any alignment) as values, in a
/// buffer on huge pages: searches read it at random.
fn huge_copy<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut out = crate::simd::huge_zeroed::<T>(bytes.len() / std::mem::size_of::<T>());
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    out
}

impl Graph {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn freeze(
        vectors: Arc<Vec<f32>>,
        dim: usize,
        metric: Metric,
        params: HnswParams,
        levels: Vec<u8>,
        base_lists: &[Vec<u32>],
        upper_lists: &[Vec<Vec<u32>>],
        entry: u32,
        top: usize,
    ) -> Self {
        let stride0 = 1 + 2 * params.m;
        let stride = 1 + params.m;
        let mut base = crate::simd::huge_zeroed::<u32>(base_lists.len() * stride0);
        for (block, list) in base.chunks_exact_mut(stride0).zip(base_lists) {
            block[0] = list.len() as u32;
            block[1..=list.len()].copy_from_slice(list);
        }
        let mut upper_offsets = vec![NO_UPPER; upper_lists.len()];
        let mut upper = Vec::new();
        for (node, lists) in upper_lists.iter().enumerate() {
            if lists.is_empty() {
                continue;
            }
            upper_offsets[node] = upper.len() as u32;
            for list in lists {
                let start = upper.len();
                upper.resize(start + stride, 0);
                upper[start] = list.len() as u32;
                upper[start + 1..=start + list.len()].copy_from_slice(list);
            }
        }
        Self {
            dim,
            metric,
            params,
            vectors,
            levels,
            base,
            upper_offsets,
            upper,
            entry,
            top,
        }
    }

    /// Vectors in the graph.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether the graph holds no vector.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Dimensions per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric the graph was built for.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The build parameters.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// The vectors, row `i` for node `i`.
    pub fn vectors(&self) -> &Arc<Vec<f32>> {
        &self.vectors
    }

    /// Bytes of the graph's own arrays (links and levels), without vectors.
    pub fn links_bytes(&self) -> usize {
        self.levels.len() + 4 * (self.base.len() + self.upper_offsets.len() + self.upper.len())
    }

    /// The array holding `node`'s block on `level`, where the block starts,
    /// and its length in slots (count included).
    #[inline]
    fn block(&self, node: u32, level: usize) -> (&[u32], usize, usize) {
        if level == 0 {
            let stride = 1 + 2 * self.params.m;
            (&self.base, node as usize * stride, stride)
        } else {
            let stride = 1 + self.params.m;
            let offset = self.upper_offsets[node as usize] as usize;
            (&self.upper, offset + (level - 1) * stride, stride)
        }
    }

    #[inline]
    fn neighbors(&self, node: u32, level: usize) -> &[u32] {
        let (array, start, _) = self.block(node, level);
        let count = array[start] as usize;
        &array[start + 1..start + 1 + count]
    }

    /// A base-layer node's neighbours.
    #[inline]
    pub(crate) fn neighbors_of(&self, node: u32) -> &[u32] {
        self.neighbors(node, 0)
    }

    /// The node searches start from, and its level.
    pub(crate) fn entry(&self) -> u32 {
        self.entry
    }

    pub(crate) fn top(&self) -> usize {
        self.top
    }

    pub(crate) fn rows(&self) -> Rows<'_> {
        Rows {
            data: &self.vectors,
            dim: self.dim,
        }
    }

    /// The `k` nearest nodes to `query` (prepared for the metric: normalised
    /// for cosine), nearest first, searching with `max(ef, k)` candidates.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<Near> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let rows = self.rows();
        let mut current = Near {
            distance: self.metric.distance(query, rows.row(self.entry)),
            id: self.entry,
        };
        for level in (1..=self.top).rev() {
            current = greedy(self, rows, self.metric, query, current, level);
        }
        with_scratch(|scratch| {
            search_layer(
                self,
                rows,
                self.metric,
                query,
                current,
                ef.max(k),
                0,
                scratch,
            );
            let mut found: Vec<Near> = scratch.results.drain().collect();
            found.sort_unstable();
            found.truncate(k);
            found
        })
    }

    /// The stored form, as consecutive byte sections (written in order, they
    /// make one object): header, levels (padded to 4 bytes), base links,
    /// upper offsets, upper links, vectors. Little-endian, as on every
    /// platform we build for.
    pub fn to_sections(&self) -> Vec<Cow<'_, [u8]>> {
        const PADDING: [u8; 3] = [0; 3];
        let pad = (4 - self.levels.len() % 4) % 4;
        vec![
            Cow::Owned(self.header_bytes()),
            Cow::Borrowed(&self.levels[..]),
            Cow::Borrowed(&PADDING[..pad]),
            Cow::Borrowed(bytemuck::cast_slice(&self.base)),
            Cow::Borrowed(bytemuck::cast_slice(&self.upper_offsets)),
            Cow::Borrowed(bytemuck::cast_slice(&self.upper)),
            Cow::Borrowed(bytemuck::cast_slice(&self.vectors)),
        ]
    }

    /// Reads a graph written by [`Graph::to_sections`], checking every link,
    /// count and offset, so a damaged object is refused instead of making
    /// searches panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GraphFormatError> {
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or(GraphFormatError("shorter than its header"))?;
        if header[..8] != MAGIC {
            return Err(GraphFormatError("unknown magic or format version"));
        }
        let field = |i: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&header[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(raw)
        };
        let too_big = GraphFormatError("a size in the header is out of range");
        let size = |v: u64| usize::try_from(v).map_err(|_| too_big.clone());
        let n = size(field(0))?;
        let dim = size(field(1))?;
        let metric = match field(2) {
            0 => Metric::Cosine,
            1 => Metric::L2,
            2 => Metric::Dot,
            _ => return Err(GraphFormatError("unknown metric")),
        };
        let params = HnswParams {
            m: size(field(3))?,
            ef_construction: size(field(4))?,
        };
        let entry = u32::try_from(field(5)).map_err(|_| too_big.clone())?;
        let top = size(field(6))?;
        let upper_len = size(field(7))?;
        if params.m < HnswParams::M_RANGE.0 || params.m > HnswParams::M_RANGE.1 || top > 15 {
            return Err(GraphFormatError("parameters out of range"));
        }
        let stride0 = 1 + 2 * params.m;
        let pad = (4 - n % 4) % 4;
        let mut at = HEADER_BYTES;
        let mut take = |len: Option<usize>| -> Result<&[u8], GraphFormatError> {
            let len = len.ok_or(too_big.clone())?;
            let end = at.checked_add(len).ok_or(too_big.clone())?;
            let part = bytes
                .get(at..end)
                .ok_or(GraphFormatError("shorter than its header says"))?;
            at = end;
            Ok(part)
        };
        let levels = take(Some(n))?.to_vec();
        take(Some(pad))?;
        let base: Vec<u32> = huge_copy(take(n.checked_mul(stride0 * 4))?);
        let upper_offsets: Vec<u32> = bytemuck::pod_collect_to_vec(take(n.checked_mul(4))?);
        let upper: Vec<u32> = bytemuck::pod_collect_to_vec(take(upper_len.checked_mul(4))?);
        let vectors: Vec<f32> = huge_copy(take(n.checked_mul(dim).and_then(|v| v.checked_mul(4)))?);
        if at != bytes.len() {
            return Err(GraphFormatError("longer than its header says"));
        }
        if n > 0 && (entry as usize >= n || usize::from(levels[entry as usize]) != top) {
            return Err(GraphFormatError("entry point out of range"));
        }
        let n32 = n as u32;
        let valid_block = |block: &[u32], slots: usize| {
            let count = block[0] as usize;
            count <= slots && block[1..=count].iter().all(|&id| id < n32)
        };
        if !base
            .chunks_exact(stride0)
            .all(|b| valid_block(b, 2 * params.m))
        {
            return Err(GraphFormatError("a base-layer link is out of range"));
        }
        let stride = 1 + params.m;
        for (&offset, &level) in upper_offsets.iter().zip(&levels) {
            if level == 0 || level > 15 {
                if level > 15 || offset != NO_UPPER {
                    return Err(GraphFormatError("a level or upper offset is out of range"));
                }
                continue;
            }
            let start = offset as usize;
            let end = start + usize::from(level) * stride;
            let blocks = upper
                .get(start..end)
                .ok_or(GraphFormatError("an upper offset is out of range"))?;
            if !blocks
                .chunks_exact(stride)
                .all(|b| valid_block(b, params.m))
            {
                return Err(GraphFormatError("an upper-layer link is out of range"));
            }
            // A link on layer l must lead to a node that has layer l, or a
            // search would look up upper links the node does not have.
            let reaches = blocks.chunks_exact(stride).enumerate().all(|(i, b)| {
                b[1..=b[0] as usize]
                    .iter()
                    .all(|&id| usize::from(levels[id as usize]) > i)
            });
            if !reaches {
                return Err(GraphFormatError(
                    "an upper-layer link leads to a node without that layer",
                ));
            }
        }
        Ok(Self {
            dim,
            metric,
            params,
            vectors: Arc::new(vectors),
            levels,
            base,
            upper_offsets,
            upper,
            entry,
            top,
        })
    }

    fn header_bytes(&self) -> Vec<u8> {
        let metric = match self.metric {
            Metric::Cosine => 0u64,
            Metric::L2 => 1,
            Metric::Dot => 2,
        };
        let fields = [
            self.levels.len() as u64,
            self.dim as u64,
            metric,
            self.params.m as u64,
            self.params.ef_construction as u64,
            u64::from(self.entry),
            self.top as u64,
            self.upper.len() as u64,
        ];
        let mut out = MAGIC.to_vec();
        for field in fields {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out
    }
}
