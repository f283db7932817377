//! Search hits as proto messages: ids, texts and payload columns (Arrow
//! values encoded as `google.protobuf.Value`).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use lakehouse_proto::vector::v1::{self as pb};
use prost_types::value::Kind;

use crate::generation::LoadedGeneration;
use crate::search::SearchResult;

pub(super) fn payload_value(array: &dyn Array, row: usize) -> prost_types::Value {
    use arrow::datatypes::*;
    let kind = if array.is_null(row) {
        Kind::NullValue(0)
    } else {
        match array.data_type() {
            DataType::Boolean => Kind::BoolValue(array.as_boolean().value(row)),
            DataType::Int8 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int8Type>().value(row)))
            }
            DataType::Int16 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int16Type>().value(row)))
            }
            DataType::Int32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Int32Type>().value(row)))
            }
            DataType::UInt8 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt8Type>().value(row)))
            }
            DataType::UInt16 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt16Type>().value(row)))
            }
            DataType::UInt32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<UInt32Type>().value(row)))
            }
            DataType::Float32 => {
                Kind::NumberValue(f64::from(array.as_primitive::<Float32Type>().value(row)))
            }
            DataType::Float64 => Kind::NumberValue(array.as_primitive::<Float64Type>().value(row)),
            _ => Kind::StringValue(display(array, row)),
        }
    };
    prost_types::Value { kind: Some(kind) }
}

/// A value as Arrow prints it (int64 stays exact as text).
pub(super) fn display(array: &dyn Array, row: usize) -> String {
    let options = arrow::util::display::FormatOptions::default();
    arrow::util::display::ArrayFormatter::try_new(array, &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

pub(super) fn hits_pb(
    generation: &LoadedGeneration,
    hits: &[crate::hnsw::Near],
    has_text: bool,
    payload: &[String],
    with_vectors: bool,
) -> Vec<pb::SearchHit> {
    let rows: &RecordBatch = &generation.rows;
    let dim = generation.graph.dim();
    hits.iter()
        .map(|hit| {
            let row = hit.id as usize;
            let text = if has_text {
                let column = rows.column(1);
                match column.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                        if column.is_null(row) =>
                    {
                        String::new()
                    }
                    _ => display(column.as_ref(), row),
                }
            } else {
                String::new()
            };
            pb::SearchHit {
                id: display(rows.column(0).as_ref(), row),
                distance: hit.distance,
                text,
                payload: payload
                    .iter()
                    .filter_map(|name| {
                        rows.column_by_name(name)
                            .map(|c| (name.clone(), payload_value(c.as_ref(), row)))
                    })
                    .collect(),
                vector: if with_vectors {
                    generation.graph.vectors()[row * dim..(row + 1) * dim].to_vec()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

pub(super) fn search_hits(
    result: &SearchResult,
    payload: &[String],
    with_vectors: bool,
) -> Vec<Vec<pb::SearchHit>> {
    result
        .hits
        .iter()
        .map(|hits| {
            hits_pb(
                &result.generation,
                hits,
                result.has_text,
                payload,
                with_vectors,
            )
        })
        .collect()
}
