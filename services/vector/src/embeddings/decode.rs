//! Decoding one row slice: its Parquet pages to Arrow batches, the vector
//! column to `f32` rows (lists of other numbers converted to Float32), and
//! the row columns kept for hits, as the slice's [`Part`] of the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use futures::StreamExt as _;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use super::ranged_fetch::StorageReader;
use super::row_slicing::RowGroupSlice;
use super::validation::{bad_row, check_ids, checked_norm, is_number};
use super::vector_buffer::{Destination, write_rows};
use super::{DataFile, LoadSpec};
use crate::error::{Error, Result};

/// Rows per decoded batch: ~3 MB of 768-d vectors, which stays in cache from
/// decode to copy, and whose decoder buffers the heap reuses (25 MB batches
/// were fresh mappings, faulted in each time: loads 1.46 -> 1.18 s). The
/// task yields between batches: in `serve all` the storage calls that feed
/// the other slices run on the same workers.
const BATCH_ROWS: usize = 1_024;

/// One row group's share of the load.
pub(super) struct Part {
    pub(super) vectors: Vec<f32>,
    pub(super) dim: Option<usize>,
    pub(super) batches: Vec<RecordBatch>,
    pub(super) first_row: u64,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn load_slice(
    reader: StorageReader,
    file: DataFile,
    meta: ArrowReaderMetadata,
    slice: RowGroupSlice,
    mut indices: Vec<usize>,
    spec: LoadSpec,
    first_row: u64,
    destination: Option<Destination>,
    rows_loaded: Arc<AtomicU64>,
) -> Result<Part> {
    let parquet_error = |source| Error::Parquet {
        key: file.key.clone(),
        source,
    };
    indices.sort_unstable();
    indices.dedup();
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
        .with_projection(mask)
        .with_row_groups(vec![slice.row_group])
        .with_batch_size(BATCH_ROWS);
    if !slice.whole {
        builder = builder.with_row_selection(RowSelection::from(vec![
            RowSelector::skip(slice.rows.start as usize),
            RowSelector::select((slice.rows.end - slice.rows.start) as usize),
        ]));
    }
    let mut stream = builder.build().map_err(parquet_error)?;
    let mut part = Part {
        vectors: Vec::new(),
        dim: None,
        batches: Vec::new(),
        first_row,
    };
    let mut row = first_row;
    let slice_rows = (slice.rows.end - slice.rows.start) as usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(parquet_error)?;
        let Some(column) = batch.column_by_name(&spec.vector_column) else {
            return Err(Error::Task("embedding load: projected column missing"));
        };
        append_vectors(&spec, column, row, &mut part, destination.as_ref())?;
        if let (Some(dim), None) = (part.dim, &destination) {
            // The whole slice at once, once the first batch told the
            // dimensions: no regrowth (each would copy what was decoded).
            part.vectors.reserve(
                slice_rows
                    .saturating_mul(dim)
                    .saturating_sub(part.vectors.len()),
            );
        }
        let columns = spec
            .row_columns
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or(Error::Task("embedding load: projected column missing"))
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        if let Some(ids) = columns.first() {
            check_ids(&spec, ids, row)?;
        }
        // No row columns (eval-set queries from a dataset): the batch keeps
        // only its row count.
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let projected = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(
                spec.row_columns
                    .iter()
                    .zip(&columns)
                    .map(|(name, c)| {
                        arrow::datatypes::Field::new(name, c.data_type().clone(), true)
                    })
                    .collect::<Vec<_>>(),
            )),
            columns,
            &options,
        )
        .map_err(|source| Error::Arrow {
            key: file.key.clone(),
            source,
        })?;
        row += batch.num_rows() as u64;
        rows_loaded.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        part.batches.push(projected);
        tokio::task::yield_now().await;
    }
    Ok(part)
}

/// Appends a batch's vectors to `part`, checking every row: not null, one
/// dimension, finite components, non-zero when normalising.
fn append_vectors(
    spec: &LoadSpec,
    column: &ArrayRef,
    first_row: u64,
    part: &mut Part,
    destination: Option<&Destination>,
) -> Result<()> {
    let type_error = || Error::ColumnType {
        dataset: spec.dataset.clone(),
        column: spec.vector_column.clone(),
        found: column.data_type().to_string(),
        expected: "a list of numbers (FixedSizeList or List of Float32, or of other floats or integers, converted to Float32)",
    };
    if let Some(i) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err(bad_row(spec, first_row + i as u64, "vector is null"));
    }
    // Lists of other numbers become Float32 lists: NDJSON arrays arrive as
    // Float64 (or Int64 for whole numbers), some writers emit float64
    // embeddings. A value past f32's range becomes infinite and is refused
    // below with its row, like any non-finite component.
    let converted;
    let column = match float32_list_type(column.data_type()) {
        Some(target) => {
            converted = arrow::compute::cast(column, &target).map_err(|_| type_error())?;
            &converted
        }
        None => column,
    };
    let start = part.vectors.len();
    match column.data_type() {
        DataType::FixedSizeList(field, size) if field.data_type() == &DataType::Float32 => {
            let list = column.as_fixed_size_list();
            let size = *size as usize;
            let values = list.values().as_primitive::<Float32Type>();
            let begin = if list.is_empty() {
                0
            } else {
                list.value_offset_at(0)
            };
            let slice = values
                .values()
                .get(begin..begin + list.len() * size)
                .ok_or_else(type_error)?;
            if values.null_count() > 0 {
                return Err(bad_row(spec, first_row, "a vector has a null component"));
            }
            check_dim(spec, part, size, first_row)?;
            if let Some(destination) = destination {
                if destination.dim != size {
                    return Err(bad_row(
                        spec,
                        first_row,
                        format!(
                            "vector has {size} dimensions, the other files' schemas say {}",
                            destination.dim
                        ),
                    ));
                }
                return write_rows(spec, slice, size, first_row, destination);
            }
            part.vectors.extend_from_slice(slice);
        }
        DataType::List(field) if field.data_type() == &DataType::Float32 => {
            let list = column.as_list::<i32>();
            append_variable(
                spec,
                part,
                list.values(),
                list.offsets()
                    .windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize)),
                first_row,
            )?;
        }
        DataType::LargeList(field) if field.data_type() == &DataType::Float32 => {
            let list = column.as_list::<i64>();
            append_variable(
                spec,
                part,
                list.values(),
                list.offsets()
                    .windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize)),
                first_row,
            )?;
        }
        _ => return Err(type_error()),
    }
    let dim = part.dim.unwrap_or(0);
    if dim == 0 {
        return Err(bad_row(spec, first_row, "vector is empty"));
    }
    for (i, row) in part.vectors[start..].chunks_exact_mut(dim).enumerate() {
        let norm = checked_norm(spec, row, first_row + i as u64)?;
        if spec.normalize {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(())
}

/// The Float32 list type a list of other numbers converts to; `None` when
/// the column needs no conversion (or cannot have one).
fn float32_list_type(data_type: &DataType) -> Option<DataType> {
    let numeric = |field: &arrow::datatypes::FieldRef| {
        let item = field.data_type();
        item != &DataType::Float32 && is_number(item)
    };
    let float32 = |field: &arrow::datatypes::FieldRef| {
        Arc::new(arrow::datatypes::Field::new(
            field.name(),
            DataType::Float32,
            field.is_nullable(),
        ))
    };
    match data_type {
        DataType::FixedSizeList(field, size) if numeric(field) => {
            Some(DataType::FixedSizeList(float32(field), *size))
        }
        DataType::List(field) if numeric(field) => Some(DataType::List(float32(field))),
        DataType::LargeList(field) if numeric(field) => Some(DataType::LargeList(float32(field))),
        _ => None,
    }
}

fn append_variable(
    spec: &LoadSpec,
    part: &mut Part,
    values: &ArrayRef,
    ranges: impl Iterator<Item = (usize, usize)>,
    first_row: u64,
) -> Result<()> {
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() > 0 {
        return Err(bad_row(spec, first_row, "a vector has a null component"));
    }
    let floats = values.values();
    for (i, (begin, end)) in ranges.enumerate() {
        check_dim(spec, part, end - begin, first_row + i as u64)?;
        let row = floats
            .get(begin..end)
            .ok_or_else(|| bad_row(spec, first_row + i as u64, "list offsets out of range"))?;
        part.vectors.extend_from_slice(row);
    }
    Ok(())
}

fn check_dim(spec: &LoadSpec, part: &mut Part, found: usize, row: u64) -> Result<()> {
    match part.dim {
        None => {
            part.dim = Some(found);
            Ok(())
        }
        Some(dim) if dim == found => Ok(()),
        Some(dim) => Err(bad_row(
            spec,
            row,
            format!("vector has {found} dimensions, earlier rows have {dim}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Builder, Int64Builder, ListBuilder};

    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            dataset: "docs".to_owned(),
            version: 1,
            vector_column: "embedding".to_owned(),
            row_columns: vec!["id".to_owned()],
            normalize: false,
        }
    }

    fn part() -> Part {
        Part {
            vectors: Vec::new(),
            dim: None,
            batches: Vec::new(),
            first_row: 0,
        }
    }

    /// NDJSON arrays arrive as lists of Float64 (or Int64): they load as
    /// Float32 vectors, and a value f32 cannot hold is refused with its row.
    #[test]
    fn lists_of_other_numbers_load_as_float32() {
        let mut floats = ListBuilder::new(Float64Builder::new());
        floats.values().append_slice(&[1.0, 0.5]);
        floats.append(true);
        floats.values().append_slice(&[0.25, -2.0]);
        floats.append(true);
        let column: ArrayRef = Arc::new(floats.finish());
        let mut loaded = part();
        append_vectors(&spec(), &column, 0, &mut loaded, None).expect("float64 lists load");
        assert_eq!(loaded.vectors, vec![1.0, 0.5, 0.25, -2.0]);
        assert_eq!(loaded.dim, Some(2));

        let mut ints = ListBuilder::new(Int64Builder::new());
        ints.values().append_slice(&[1, 0]);
        ints.append(true);
        let column: ArrayRef = Arc::new(ints.finish());
        let mut loaded = part();
        append_vectors(&spec(), &column, 0, &mut loaded, None).expect("int64 lists load");
        assert_eq!(loaded.vectors, vec![1.0, 0.0]);

        let mut huge = ListBuilder::new(Float64Builder::new());
        huge.values().append_slice(&[1.0, 1e300]);
        huge.append(true);
        let column: ArrayRef = Arc::new(huge.finish());
        let error =
            append_vectors(&spec(), &column, 7, &mut part(), None).expect_err("overflows f32");
        assert!(matches!(error, Error::BadRow { row: 7, .. }), "{error:?}");
    }
}
