//! Checks every vector and id must pass before it is indexed, searched or
//! used as an eval query: the index's dimensions, finite components,
//! distances that fit in f32, and one row per id.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::row::{RowConverter, SortField};

use crate::Metric;
use crate::error::{Error, Result};

/// Largest squared norm a vector may have: any two such vectors are at an
/// L2 distance of at most `4 * MAX_SQUARED_NORM` = f32::MAX, and their dot
/// product stays within f32 too, so no distance overflows to infinity.
pub const MAX_SQUARED_NORM: f32 = f32::MAX / 4.0;

/// The squared norm of `vector` with the engine's SIMD kernel (the one
/// cosine normalisation uses, so the check costs no extra pass there).
pub fn squared_norm(vector: &[f32]) -> f32 {
    crate::hnsw::simd::dot(vector, vector)
}

/// Why a vector (finite components already checked) with this `squared`
/// norm cannot be compared in f32, if it cannot: past
/// [`MAX_SQUARED_NORM`] (an overflow to infinity included).
pub fn magnitude_problem(vector: &[f32], squared: f32) -> Option<String> {
    // Written so that NaN (an overflow inside the sum) is refused too.
    let fits = squared <= MAX_SQUARED_NORM;
    (!fits).then(|| {
        let (c, v) = vector
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map_or((0, 0.0), |(c, v)| (c, *v));
        format!(
            "its squared norm {squared:e} is past {MAX_SQUARED_NORM:e}, where distances overflow f32 (largest: component {c} = {v:e}); scale the vectors down"
        )
    })
}

/// Checks one vector against an index and prepares it for the metric.
pub fn prepare_vector(index: &str, dim: usize, metric: Metric, vector: &mut [f32]) -> Result<()> {
    if vector.len() != dim {
        return Err(Error::WrongDimensions {
            index: index.to_owned(),
            expected: dim,
            got: vector.len(),
        });
    }
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "vector",
            "components must be finite numbers",
        ));
    }
    if let Some(problem) = magnitude_problem(vector, squared_norm(vector)) {
        return Err(Error::invalid("vector", problem));
    }
    if metric.normalizes() {
        let norm = Metric::norm(vector);
        if norm == 0.0 {
            return Err(Error::invalid(
                "vector",
                "a zero vector has no cosine direction",
            ));
        }
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(())
}

/// Refuses a dataset with two rows of one id, naming both rows (ids are the
/// first row column). Without this a search could return one id twice.
pub fn check_unique_ids(dataset: &str, rows: &RecordBatch) -> Result<()> {
    let Some(ids) = rows.columns().first() else {
        return Ok(());
    };
    let converter = RowConverter::new(vec![SortField::new(ids.data_type().clone())])
        .map_err(|e| Error::invalid("id_column", e.to_string()))?;
    let encoded = converter
        .convert_columns(std::slice::from_ref(ids))
        .map_err(|e| Error::invalid("id_column", e.to_string()))?;
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(encoded.num_rows());
    for (row, id) in encoded.iter().enumerate() {
        if let Some(first) = seen.insert(id.data(), row) {
            let shown = arrow::util::display::array_value_to_string(ids, row)
                .unwrap_or_else(|_| "?".to_owned());
            return Err(Error::BadRow {
                dataset: dataset.to_owned(),
                row: row as u64,
                problem: format!("id {shown} is also the id of row {first}; ids must be unique"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    #[test]
    fn a_duplicate_id_is_refused_naming_both_rows() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "b"]));
        let rows = RecordBatch::try_from_iter([("id", ids)]).expect("batch");
        let error = check_unique_ids("docs", &rows).expect_err("duplicate");
        let text = error.to_string();
        assert!(text.contains("row 3") && text.contains("row 1"), "{text}");
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let rows = RecordBatch::try_from_iter([("id", ids)]).expect("batch");
        check_unique_ids("docs", &rows).expect("unique");
    }

    #[test]
    fn vectors_whose_distances_overflow_f32_are_refused() {
        let problem = |v: &[f32]| magnitude_problem(v, squared_norm(v));
        assert!(problem(&[1e38; 128]).is_some(), "overflows to infinity");
        assert!(problem(&[1e19; 2]).is_some(), "2e38 is past f32::MAX / 4");
        assert!(problem(&[1e18; 4]).is_none());
        assert!(problem(&[0.5; 768]).is_none());
        assert!(magnitude_problem(&[1.0], f32::NAN).is_some());
    }
}
