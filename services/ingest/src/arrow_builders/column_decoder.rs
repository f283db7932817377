//! [`ColumnDecoder`]: one column's Arrow builder, and the dispatch from a
//! PostgreSQL type to the decoding of its values. Fixed-width, text and
//! date/time values are decoded here; `numeric`, vectors and arrays in
//! their own modules.

use std::sync::Arc;

use arrow::array::builder::{
    ArrayBuilder as _, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, NullBufferBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, ListArray, StructArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef};
use arrow::error::ArrowError;

use super::numeric::decode_numeric;
use super::vectors_and_arrays::{decode_array, decode_vector, offset};
use super::{ValueError, ValueResult};
use crate::pg_types::{PgType, interval_fields};

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Appends decoded values of one column to an Arrow builder.
#[derive(Debug)]
pub enum ColumnDecoder {
    /// bool
    Bool(BooleanBuilder),
    /// int2
    Int2(Int16Builder),
    /// int4
    Int4(Int32Builder),
    /// int8
    Int8(Int64Builder),
    /// float4
    Float4(Float32Builder),
    /// float8
    Float8(Float64Builder),
    /// numeric
    Numeric {
        /// Unscaled values.
        builder: Decimal128Builder,
        /// Target precision.
        precision: u8,
        /// Target scale.
        scale: i8,
    },
    /// Text types and json.
    Text(StringBuilder),
    /// jsonb: a version byte, then text.
    Jsonb(StringBuilder),
    /// bytea
    Bytea(BinaryBuilder),
    /// date
    Date(Date32Builder),
    /// time
    Time(Time64MicrosecondBuilder),
    /// timestamp, and timestamptz when `utc`.
    Timestamp {
        /// Microseconds since 1970.
        builder: TimestampMicrosecondBuilder,
        /// Label the array "UTC".
        utc: bool,
    },
    /// interval as {months, days, microseconds}.
    Interval {
        /// Months.
        months: Vec<i32>,
        /// Days.
        days: Vec<i32>,
        /// Microseconds.
        micros: Vec<i64>,
        /// Validity.
        nulls: NullBufferBuilder,
    },
    /// uuid
    Uuid(FixedSizeBinaryBuilder),
    /// pgvector
    Vector {
        /// All elements, concatenated.
        values: Vec<f32>,
        /// List offsets (unused for fixed dimensions).
        offsets: Vec<i32>,
        /// Validity.
        nulls: NullBufferBuilder,
        /// Declared dimension.
        dimension: Option<i32>,
    },
    /// One-dimensional arrays.
    List {
        /// List offsets into the child.
        offsets: Vec<i32>,
        /// Validity.
        nulls: NullBufferBuilder,
        /// The list's item field.
        item: FieldRef,
        /// The elements.
        child: Box<ColumnDecoder>,
    },
}

impl ColumnDecoder {
    /// A decoder for `pg_type`, sized for `capacity` rows.
    pub fn new(pg_type: &PgType, capacity: usize) -> Self {
        match pg_type {
            PgType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => Self::Int2(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => Self::Int4(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => Self::Int8(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => Self::Float4(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => Self::Float8(Float64Builder::with_capacity(capacity)),
            PgType::Numeric {
                precision, scale, ..
            } => Self::Numeric {
                builder: Decimal128Builder::with_capacity(capacity),
                precision: *precision,
                scale: *scale,
            },
            PgType::Text | PgType::Json => Self::Text(StringBuilder::with_capacity(capacity, 0)),
            PgType::Jsonb => Self::Jsonb(StringBuilder::with_capacity(capacity, 0)),
            PgType::Bytea => Self::Bytea(BinaryBuilder::with_capacity(capacity, 0)),
            PgType::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => Self::Timestamp {
                builder: TimestampMicrosecondBuilder::with_capacity(capacity),
                utc: false,
            },
            PgType::Timestamptz => Self::Timestamp {
                builder: TimestampMicrosecondBuilder::with_capacity(capacity),
                utc: true,
            },
            PgType::Interval => Self::Interval {
                months: Vec::with_capacity(capacity),
                days: Vec::with_capacity(capacity),
                micros: Vec::with_capacity(capacity),
                nulls: NullBufferBuilder::new(capacity),
            },
            PgType::Uuid => Self::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
            PgType::Vector { dimension } => Self::Vector {
                values: Vec::new(),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(capacity),
                dimension: *dimension,
            },
            PgType::Array(element) => {
                let item = match pg_type.data_type() {
                    DataType::List(item) => item,
                    // data_type() of an array is always a List.
                    _ => Arc::new(element.field("item", true)),
                };
                Self::List {
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(capacity),
                    item,
                    child: Box::new(Self::new(element, capacity)),
                }
            }
        }
    }

    /// Appends one value (`None` for NULL).
    pub fn append(&mut self, value: Option<&[u8]>) -> ValueResult {
        let Some(bytes) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Self::Bool(b) => match bytes {
                [v] => b.append_value(*v != 0),
                _ => return Err(ValueError::malformed("bool")),
            },
            Self::Int2(b) => b.append_value(i16::from_be_bytes(fixed(bytes, "int2")?)),
            Self::Int4(b) => b.append_value(i32::from_be_bytes(fixed(bytes, "int4")?)),
            Self::Int8(b) => b.append_value(i64::from_be_bytes(fixed(bytes, "int8")?)),
            Self::Float4(b) => b.append_value(f32::from_be_bytes(fixed(bytes, "float4")?)),
            Self::Float8(b) => b.append_value(f64::from_be_bytes(fixed(bytes, "float8")?)),
            Self::Numeric {
                builder,
                precision,
                scale,
            } => builder.append_value(decode_numeric(bytes, *precision, *scale)?),
            Self::Text(b) => b.append_value(utf8(bytes)?),
            Self::Jsonb(b) => match bytes.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err(ValueError::malformed("jsonb")),
            },
            Self::Bytea(b) => b.append_value(bytes),
            Self::Date(b) => {
                let days = i32::from_be_bytes(fixed(bytes, "date")?);
                if days == i32::MAX || days == i32::MIN {
                    return Err(infinite("date"));
                }
                let days = days
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or_else(|| out_of_range("date"))?;
                b.append_value(days);
            }
            Self::Time(b) => b.append_value(i64::from_be_bytes(fixed(bytes, "time")?)),
            Self::Timestamp { builder, .. } => {
                let micros = i64::from_be_bytes(fixed(bytes, "timestamp")?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err(infinite("timestamp"));
                }
                let micros = micros
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or_else(|| out_of_range("timestamp"))?;
                builder.append_value(micros);
            }
            Self::Interval {
                months,
                days,
                micros,
                nulls,
            } => {
                let raw: [u8; 16] = fixed(bytes, "interval")?;
                let (m, rest) = raw.split_at(8);
                let mut us = [0u8; 8];
                us.copy_from_slice(m);
                micros.push(i64::from_be_bytes(us));
                days.push(i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
                months.push(i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]));
                nulls.append_non_null();
            }
            Self::Uuid(b) => {
                if bytes.len() != 16 {
                    return Err(ValueError::malformed("uuid"));
                }
                b.append_value(bytes)
                    .map_err(|_| ValueError::malformed("uuid"))?;
            }
            Self::Vector {
                values,
                offsets,
                nulls,
                dimension,
            } => {
                decode_vector(bytes, *dimension, values)?;
                offsets.push(offset(values.len())?);
                nulls.append_non_null();
            }
            Self::List {
                offsets,
                nulls,
                child,
                ..
            } => {
                decode_array(bytes, child)?;
                offsets.push(offset(child.len())?);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int2(b) => b.append_null(),
            Self::Int4(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Float4(b) => b.append_null(),
            Self::Float8(b) => b.append_null(),
            Self::Numeric { builder, .. } => builder.append_null(),
            Self::Text(b) | Self::Jsonb(b) => b.append_null(),
            Self::Bytea(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Timestamp { builder, .. } => builder.append_null(),
            Self::Interval {
                months,
                days,
                micros,
                nulls,
            } => {
                months.push(0);
                days.push(0);
                micros.push(0);
                nulls.append_null();
            }
            Self::Uuid(b) => b.append_null(),
            Self::Vector {
                values,
                offsets,
                nulls,
                dimension,
            } => {
                if let Some(n) = dimension {
                    values.extend(std::iter::repeat_n(0.0, usize::try_from(*n).unwrap_or(0)));
                }
                offsets.push(i32::try_from(values.len()).unwrap_or(i32::MAX));
                nulls.append_null();
            }
            Self::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Values appended since the last finish (for lists: elements).
    fn len(&self) -> usize {
        match self {
            Self::Bool(b) => b.len(),
            Self::Int2(b) => b.len(),
            Self::Int4(b) => b.len(),
            Self::Int8(b) => b.len(),
            Self::Float4(b) => b.len(),
            Self::Float8(b) => b.len(),
            Self::Numeric { builder, .. } => builder.len(),
            Self::Text(b) | Self::Jsonb(b) => b.len(),
            Self::Bytea(b) => b.len(),
            Self::Date(b) => b.len(),
            Self::Time(b) => b.len(),
            Self::Timestamp { builder, .. } => builder.len(),
            Self::Interval { months, .. } => months.len(),
            Self::Uuid(b) => b.len(),
            Self::Vector { nulls, .. } | Self::List { nulls, .. } => nulls.len(),
        }
    }

    /// Builds the array of everything appended, and resets.
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int2(b) => Arc::new(b.finish()),
            Self::Int4(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Float4(b) => Arc::new(b.finish()),
            Self::Float8(b) => Arc::new(b.finish()),
            Self::Numeric {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)?,
            ),
            Self::Text(b) | Self::Jsonb(b) => Arc::new(b.finish()),
            Self::Bytea(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Timestamp { builder, utc } => {
                let array = builder.finish();
                if *utc {
                    Arc::new(array.with_timezone("UTC"))
                } else {
                    Arc::new(array)
                }
            }
            Self::Interval {
                months,
                days,
                micros,
                nulls,
            } => {
                let children: Vec<ArrayRef> = vec![
                    Arc::new(Int32Array::from(std::mem::take(months))),
                    Arc::new(Int32Array::from(std::mem::take(days))),
                    Arc::new(Int64Array::from(std::mem::take(micros))),
                ];
                Arc::new(StructArray::try_new(
                    interval_fields(),
                    children,
                    nulls.finish(),
                )?)
            }
            Self::Uuid(b) => Arc::new(b.finish()),
            Self::Vector {
                values,
                offsets,
                nulls,
                dimension,
            } => {
                let values = Arc::new(Float32Array::from(std::mem::take(values)));
                let nulls = nulls.finish();
                let offsets = std::mem::replace(offsets, vec![0]);
                let item = Arc::new(arrow::datatypes::Field::new(
                    "item",
                    DataType::Float32,
                    false,
                ));
                match dimension {
                    Some(n) => Arc::new(FixedSizeListArray::try_new(item, *n, values, nulls)?),
                    None => Arc::new(ListArray::try_new(
                        item,
                        OffsetBuffer::new(ScalarBuffer::from(offsets)),
                        values,
                        nulls,
                    )?),
                }
            }
            Self::List {
                offsets,
                nulls,
                item,
                child,
            } => {
                let values = child.finish()?;
                let offsets = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::try_new(
                    item.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    nulls.finish(),
                )?)
            }
        })
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], ValueError> {
    bytes.try_into().map_err(|_| ValueError::malformed(what))
}

fn utf8(bytes: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(bytes).map_err(|_| ValueError {
        reason: "text is not valid UTF-8".to_owned(),
        hint: "connect with client_encoding UTF8 (the default) or cast the column to bytea",
    })
}

fn infinite(what: &str) -> ValueError {
    ValueError {
        reason: format!("{what} value is infinity, which Arrow cannot represent"),
        hint: "filter it out or map it in a query, e.g. NULLIF(col, 'infinity')",
    }
}

fn out_of_range(what: &str) -> ValueError {
    ValueError {
        reason: format!("{what} value is outside Arrow's range"),
        hint: "filter it out in a query",
    }
}
