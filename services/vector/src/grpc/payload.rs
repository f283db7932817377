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

/// A value as text: Arrow's display (int64 stays exact, decimals keep
/// their scale, dates are ISO 8601), except zoned timestamps, which are
/// RFC 3339 in UTC (`2024-05-01T12:00:00Z`): Arrow cannot print a named
/// zone without the tz database, and the instant is what matters.
pub(super) fn display(array: &dyn Array, row: usize) -> String {
    if let DataType::Timestamp(unit, Some(_)) = array.data_type()
        && let Some(text) = utc_timestamp(array, *unit, row)
    {
        return text;
    }
    let options = arrow::util::display::FormatOptions::default();
    match arrow::util::display::ArrayFormatter::try_new(array, &options) {
        Ok(format) => format.value(row).to_string(),
        // Never an empty string that looks like a value.
        Err(_) => format!("<{} value>", array.data_type()),
    }
}

fn utc_timestamp(
    array: &dyn Array,
    unit: arrow::datatypes::TimeUnit,
    row: usize,
) -> Option<String> {
    use arrow::datatypes::{Int64Type, TimeUnit};
    let raw = arrow::compute::cast(&array.slice(row, 1), &DataType::Int64).ok()?;
    let value = raw.as_primitive::<Int64Type>().value(0);
    let at = match unit {
        TimeUnit::Second => chrono::DateTime::from_timestamp(value, 0),
        TimeUnit::Millisecond => chrono::DateTime::from_timestamp_millis(value),
        TimeUnit::Microsecond => chrono::DateTime::from_timestamp_micros(value),
        TimeUnit::Nanosecond => Some(chrono::DateTime::from_timestamp_nanos(value)),
    }?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
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
