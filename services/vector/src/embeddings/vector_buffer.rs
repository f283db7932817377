//! Assembling the one vector buffer: on huge pages, written in place by
//! each slice when every file fixes the same dimension ([`Destination`]),
//! else gathered from the slices' own buffers once all have loaded.

use std::sync::Arc;

use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

use super::validation::{bad_row, checked_norm, is_number};
use super::{DataFile, LoadSpec};
use crate::error::Result;

/// The load's one buffer, when every file's vector column has the same
/// fixed size (FixedSizeList): each slice copies its rows straight to their
/// place, so there is no buffer per slice and nothing to gather after.
/// Slices hold the lock only to copy a checked batch (~3 MB).
#[derive(Debug, Clone)]
pub(super) struct Destination {
    pub(super) buffer: Arc<parking_lot::Mutex<Vec<f32>>>,
    pub(super) dim: usize,
}

impl Destination {
    /// A zeroed buffer for `rows` vectors of `dim`, on huge pages; `None`
    /// when the footers' row count cannot be a buffer on this machine.
    pub(super) fn new(rows: u64, dim: usize) -> Option<Self> {
        let len = usize::try_from(rows).ok()?.checked_mul(dim)?;
        len.checked_mul(std::mem::size_of::<f32>())
            .filter(|&bytes| bytes <= isize::MAX as usize)?;
        Some(Self {
            buffer: Arc::new(parking_lot::Mutex::new(huge_buffer(len))),
            dim,
        })
    }
}

/// A zeroed buffer of `len` floats for the vectors, on huge pages (builds
/// and searches read it at random). Zeroed by the allocator (calloc), so no
/// page is touched before the advice and the first writes fault huge pages
/// in; `simd::huge_zeroed` writes its zeros, a pass this buffer, about to
/// be overwritten, does not need.
fn huge_buffer(len: usize) -> Vec<f32> {
    let buffer = vec![0f32; len];
    crate::hnsw::simd::advise_huge_pages(&buffer);
    buffer
}

/// The dimension every file's vector column fixes in its schema
/// (FixedSizeList of numbers, one size everywhere), if it does.
pub(super) fn fixed_dimension(
    spec: &LoadSpec,
    metas: &[(DataFile, ArrowReaderMetadata)],
) -> Option<usize> {
    let mut dim = None;
    for (_, meta) in metas {
        let field = meta.schema().field_with_name(&spec.vector_column).ok()?;
        let DataType::FixedSizeList(item, size) = field.data_type() else {
            return None;
        };
        let numeric = is_number(item.data_type());
        let size = usize::try_from(*size).ok().filter(|&s| s > 0 && numeric)?;
        if *dim.get_or_insert(size) != size {
            return None;
        }
    }
    dim
}

/// The slices' vectors in one buffer, on huge pages (builds and searches
/// read it at random). Copied by all cores at once: writing 300 MB of fresh
/// memory is as much page faults as copying, ~0.3 s on one core here.
pub(super) fn gather(slices: Vec<Vec<f32>>) -> Vec<f32> {
    use rayon::prelude::*;
    if slices.len() == 1 {
        // One slice: its buffer is the result, no copy.
        return slices.into_iter().next().unwrap_or_default();
    }
    let mut out = huge_buffer(slices.iter().map(Vec::len).sum());
    let mut regions = Vec::with_capacity(slices.len());
    let mut rest = &mut out[..];
    for slice in &slices {
        let (head, tail) = rest.split_at_mut(slice.len());
        regions.push(head);
        rest = tail;
    }
    regions
        .into_par_iter()
        .zip(slices.into_par_iter())
        .for_each(|(region, slice)| region.copy_from_slice(&slice));
    out
}

/// Checks `values` (whole rows of `dim`, the first at `first_row`) and
/// writes them, normalised when asked, at their place in the one buffer.
/// Checked before the lock: a bad row writes nothing, and the lock covers
/// only the copy.
pub(super) fn write_rows(
    spec: &LoadSpec,
    values: &[f32],
    dim: usize,
    first_row: u64,
    destination: &Destination,
) -> Result<()> {
    let norms = values
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, row)| checked_norm(spec, row, first_row + i as u64))
        .collect::<Result<Vec<f32>>>()?;
    let start = usize::try_from(first_row)
        .ok()
        .and_then(|row| row.checked_mul(dim));
    let mut buffer = destination.buffer.lock();
    let Some(out) = start.and_then(|s| buffer.get_mut(s..s.checked_add(values.len())?)) else {
        return Err(bad_row(
            spec,
            first_row,
            "the file holds more rows than its footer counts",
        ));
    };
    for ((out, row), norm) in out
        .chunks_exact_mut(dim)
        .zip(values.chunks_exact(dim))
        .zip(norms)
    {
        if spec.normalize {
            out.iter_mut().zip(row).for_each(|(o, v)| *o = v / norm);
        } else {
            out.copy_from_slice(row);
        }
    }
    Ok(())
}
