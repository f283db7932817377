//! Checks of what a load reads: the spec's columns exist in each file,
//! ids are integers or strings and never null, every vector has one
//! dimension, finite components and (when normalising) a non-zero norm.
//! Each failure names the dataset's row.

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

use super::{DataFile, LoadSpec};
use crate::error::{Error, Result};

/// Root column indices of the vector and row columns in a file, checking
/// they exist.
pub(super) fn spec_columns(
    spec: &LoadSpec,
    meta: &ArrowReaderMetadata,
    file: &DataFile,
) -> Result<Vec<usize>> {
    let schema = meta.schema();
    std::iter::once(&spec.vector_column)
        .chain(&spec.row_columns)
        .map(|name| {
            schema.index_of(name).map_err(|_| Error::ColumnNotFound {
                dataset: format!("{} (file {})", spec.dataset, file.key),
                column: name.clone(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
        })
        .collect()
}

pub(super) fn bad_row(spec: &LoadSpec, row: u64, problem: impl Into<String>) -> Error {
    Error::BadRow {
        dataset: spec.dataset.clone(),
        row,
        problem: problem.into(),
    }
}

/// Checks a row's components and returns the length it is divided by:
/// its norm when `spec` normalises (never 0), else 1.
pub(super) fn checked_norm(spec: &LoadSpec, row: &[f32], row_number: u64) -> Result<f32> {
    if let Some(c) = row.iter().position(|v| !v.is_finite()) {
        return Err(bad_row(
            spec,
            row_number,
            format!("component {c} is {}", row[c]),
        ));
    }
    // One SIMD pass: the squared norm checks the magnitude and, for
    // cosine, gives the norm (the same bits as `Metric::norm`).
    let squared = crate::checks::squared_norm(row);
    if let Some(problem) = crate::checks::magnitude_problem(row, squared) {
        return Err(bad_row(spec, row_number, problem));
    }
    if !spec.normalize {
        return Ok(1.0);
    }
    let norm = squared.sqrt();
    if norm == 0.0 {
        return Err(bad_row(
            spec,
            row_number,
            "vector is all zeros, which has no cosine direction",
        ));
    }
    Ok(norm)
}

/// Ids must be integers or strings, never null.
pub(super) fn check_ids(spec: &LoadSpec, ids: &ArrayRef, first_row: u64) -> Result<()> {
    let usable = ids.data_type().is_integer()
        || matches!(
            ids.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
    if !usable {
        return Err(Error::ColumnType {
            dataset: spec.dataset.clone(),
            column: spec.row_columns[0].clone(),
            found: ids.data_type().to_string(),
            expected: "an integer or string column for ids",
        });
    }
    if let Some(i) = (0..ids.len()).find(|&i| ids.is_null(i)) {
        return Err(bad_row(spec, first_row + i as u64, "id is null"));
    }
    Ok(())
}

/// Whether `data_type` is a number a vector component can be read from.
pub(super) fn is_number(data_type: &DataType) -> bool {
    data_type.is_floating() || data_type.is_integer()
}
