//! Decoding of binary COPY field values straight into Arrow builders.
//!
//! One [`ColumnDecoder`] per column appends each field's bytes (PostgreSQL's
//! `*_send` representation) to an Arrow builder; a [`BatchBuilder`] holds one
//! per column and cuts record batches by rows or bytes, whichever comes
//! first, so a batch of wide rows stays small. No intermediate row or string
//! representation is built.

use std::sync::Arc;

use arrow::array::builder::{
    ArrayBuilder as _, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, NullBufferBuilder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StructArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::error::ArrowError;

use crate::copy_binary::TupleSink;
use crate::error::Error;
use crate::pg_types::{PgType, interval_fields};

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Why one value could not be decoded; the caller names the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// What is wrong with the value.
    pub reason: String,
    /// A cast or filter that avoids it.
    pub hint: &'static str,
}

impl ValueError {
    fn malformed(what: &str) -> Self {
        Self {
            reason: format!("malformed binary {what} value from the server"),
            hint: "report this; casting the column to text avoids it",
        }
    }
}

type ValueResult = Result<(), ValueError>;

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

fn offset(len: usize) -> Result<i32, ValueError> {
    i32::try_from(len).map_err(|_| ValueError {
        reason: "a batch holds more than 2^31 list elements".to_owned(),
        hint: "lower --ingest-batch-rows",
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

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// numeric's send format: ndigits, weight, sign, dscale (`int16` each), then
/// `ndigits` base-10000 digits; value = Σ digit[i] · 10000^(weight − i).
/// Returns the value unscaled to `scale`, refusing to round.
fn decode_numeric(bytes: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    let word = |i: usize| -> Result<u16, ValueError> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| ValueError::malformed("numeric"))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    if bytes.len() != 8 + 2 * ndigits {
        return Err(ValueError::malformed("numeric"));
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(special("NaN")),
        0xD000 => return Err(special("Infinity")),
        0xF000 => return Err(special("-Infinity")),
        _ => return Err(ValueError::malformed("numeric")),
    }
    let too_wide = || ValueError {
        reason: format!("numeric value does not fit Decimal128({precision}, {scale})"),
        hint: "cast it to a numeric(p,s) that fits, e.g. ::numeric(38,10), or to float8 or text",
    };
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        if digit >= 10_000 {
            return Err(ValueError::malformed("numeric"));
        }
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(i128::from(digit)))
            .ok_or_else(too_wide)?;
    }
    // value = acc · 10^(4·(weight − ndigits + 1)); unscaled = value · 10^scale.
    let ndigits = i32::try_from(ndigits).map_err(|_| ValueError::malformed("numeric"))?;
    let exponent = 4 * (weight - ndigits + 1) + i32::from(scale);
    let unscaled = if acc == 0 {
        0
    } else if exponent >= 0 {
        let factor = usize::try_from(exponent)
            .ok()
            .and_then(|e| POW10.get(e))
            .ok_or_else(too_wide)?;
        acc.checked_mul(*factor).ok_or_else(too_wide)?
    } else {
        let divisor = usize::try_from(-exponent)
            .ok()
            .and_then(|e| POW10.get(e))
            .copied();
        match divisor {
            Some(d) if acc % d == 0 => acc / d,
            _ => {
                return Err(ValueError {
                    reason: format!(
                        "numeric value has more than {scale} fractional digits, and the ingest never rounds"
                    ),
                    hint: "cast it in a query to the scale you want, e.g. ::numeric(38,16), or to float8",
                });
            }
        }
    };
    if unscaled >= POW10[usize::from(precision.min(38))] {
        return Err(too_wide());
    }
    Ok(if sign == 0x4000 { -unscaled } else { unscaled })
}

fn special(what: &str) -> ValueError {
    ValueError {
        reason: format!("numeric value is {what}, which Decimal128 cannot represent"),
        hint: "cast the column to float8, or filter the value out",
    }
}

/// pgvector's send format: `int16` dimension, `int16` unused, then floats.
fn decode_vector(bytes: &[u8], dimension: Option<i32>, values: &mut Vec<f32>) -> ValueResult {
    let header: [u8; 4] = bytes
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| ValueError::malformed("vector"))?;
    let dim = u16::from_be_bytes([header[0], header[1]]);
    let body = &bytes[4..];
    if body.len() != usize::from(dim) * 4 {
        return Err(ValueError::malformed("vector"));
    }
    if let Some(expected) = dimension
        && i32::from(dim) != expected
    {
        return Err(ValueError {
            reason: format!("vector has {dim} dimensions, the column declares {expected}"),
            hint: "report this: the server sent a vector of another dimension",
        });
    }
    values.extend(
        body.chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// array_send: `int32` ndim, `int32` has-nulls flag, element OID, then per
/// dimension `int32` size and lower bound, then the elements as COPY fields.
fn decode_array(bytes: &[u8], child: &mut ColumnDecoder) -> ValueResult {
    let int = |at: usize| -> Result<i32, ValueError> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| ValueError::malformed("array"))
    };
    let ndim = int(0)?;
    match ndim {
        0 => return Ok(()),
        1 => {}
        _ => {
            return Err(ValueError {
                reason: format!(
                    "array value has {ndim} dimensions; only one-dimensional arrays map to Arrow lists"
                ),
                hint: "flatten it in a query, e.g. ARRAY(SELECT unnest(col)), or cast it to text",
            });
        }
    }
    let count = usize::try_from(int(12)?).map_err(|_| ValueError::malformed("array"))?;
    let mut pos = 20;
    for _ in 0..count {
        let len = int(pos)?;
        pos += 4;
        if len == -1 {
            child.append(None)?;
            continue;
        }
        let len = usize::try_from(len).map_err(|_| ValueError::malformed("array"))?;
        let element = bytes
            .get(pos..pos + len)
            .ok_or_else(|| ValueError::malformed("array"))?;
        child.append(Some(element))?;
        pos += len;
    }
    if pos != bytes.len() {
        return Err(ValueError::malformed("array"));
    }
    Ok(())
}

/// Builds record batches from COPY tuples.
#[derive(Debug)]
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnDecoder>,
    rows: usize,
    bytes: usize,
    max_rows: usize,
    max_bytes: usize,
    ready: Option<RecordBatch>,
}

impl BatchBuilder {
    /// A builder of batches of at most `max_rows` rows and about
    /// `max_bytes` of field data.
    pub fn new(schema: SchemaRef, types: &[PgType], max_rows: usize, max_bytes: usize) -> Self {
        let capacity = max_rows.min(8192);
        Self {
            columns: types
                .iter()
                .map(|t| ColumnDecoder::new(t, capacity))
                .collect(),
            schema,
            rows: 0,
            bytes: 0,
            max_rows: max_rows.max(1),
            max_bytes: max_bytes.max(1),
            ready: None,
        }
    }

    /// Takes the batch completed by the last tuples, if any.
    pub fn take_ready(&mut self) -> Option<RecordBatch> {
        self.ready.take()
    }

    /// Builds a batch of what is buffered (the tail at the end of a stream).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, Error> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays = self
            .columns
            .iter_mut()
            .map(ColumnDecoder::finish)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Arrow)?;
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(Error::Arrow)
    }
}

impl TupleSink for BatchBuilder {
    type Error = Error;

    fn tuple(&mut self, data: &[u8], fields: &[Option<(usize, usize)>]) -> Result<(), Error> {
        for (index, (decoder, field)) in self.columns.iter_mut().zip(fields).enumerate() {
            let value = field.map(|(start, len)| &data[start..start + len]);
            if value.is_none() && !self.schema.field(index).is_nullable() {
                return Err(Error::UnexpectedNull {
                    column: self.schema.field(index).name().clone(),
                });
            }
            decoder.append(value).map_err(|source| Error::Value {
                column: self.schema.field(index).name().clone(),
                reason: source.reason,
                hint: source.hint,
            })?;
        }
        self.rows += 1;
        self.bytes += data.len();
        if self.rows >= self.max_rows || self.bytes >= self.max_bytes {
            // A full batch must be taken before more tuples arrive; the
            // reader takes it after every chunk, and a chunk holding many
            // tuples simply makes a slightly larger batch.
            if let Some(batch) = self.flush()? {
                match &mut self.ready {
                    None => self.ready = Some(batch),
                    Some(previous) => {
                        let merged =
                            arrow::compute::concat_batches(&self.schema, [&*previous, &batch])
                                .map_err(Error::Arrow)?;
                        *previous = merged;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array as _, AsArray as _, Decimal128Array};
    use arrow::datatypes::{Decimal128Type, Int32Type};

    use super::*;

    fn numeric_bytes(ndigits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(ndigits.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly_or_refuse() {
        // 12345.67 = [1, 2345, 6700], weight 1
        let value = numeric_bytes(&[1, 2345, 6700], 1, false, 2);
        assert_eq!(decode_numeric(&value, 10, 2), Ok(1_234_567));
        let value = numeric_bytes(&[1, 2345, 6700], 1, true, 2);
        assert_eq!(decode_numeric(&value, 10, 2), Ok(-1_234_567));
        // 0.0001 = [1], weight -1
        let value = numeric_bytes(&[1], -1, false, 4);
        assert_eq!(decode_numeric(&value, 38, 10), Ok(1_000_000));
        // 10000 = [1], weight 1
        let value = numeric_bytes(&[1], 1, false, 0);
        assert_eq!(decode_numeric(&value, 38, 10), Ok(10_000 * POW10[10]));
        // zero
        assert_eq!(
            decode_numeric(&numeric_bytes(&[], 0, false, 0), 10, 2),
            Ok(0)
        );
        // 1.00000000001 has 11 fractional digits: refused at scale 10.
        let value = numeric_bytes(&[1, 0, 0, 10], 0, false, 11);
        let error = decode_numeric(&value, 38, 10).expect_err("no rounding");
        assert!(error.reason.contains("fractional"), "{}", error.reason);
        // 10^30 does not fit Decimal128(38, 10).
        let value = numeric_bytes(&[1], 7, false, 0);
        assert!(decode_numeric(&value, 38, 10).is_err());
        // NaN
        let mut nan = numeric_bytes(&[], 0, false, 0);
        nan[4] = 0xC0;
        assert!(
            decode_numeric(&nan, 10, 2)
                .expect_err("NaN")
                .reason
                .contains("NaN")
        );
    }

    #[test]
    fn arrays_with_nulls_and_empty_arrays_build_lists() {
        let pg = PgType::Array(Box::new(PgType::Int4));
        let mut decoder = ColumnDecoder::new(&pg, 4);
        let mut array = Vec::new();
        array.extend_from_slice(&1i32.to_be_bytes()); // ndim
        array.extend_from_slice(&1i32.to_be_bytes()); // has nulls
        array.extend_from_slice(&23u32.to_be_bytes()); // int4
        array.extend_from_slice(&2i32.to_be_bytes()); // size
        array.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        array.extend_from_slice(&4i32.to_be_bytes());
        array.extend_from_slice(&7i32.to_be_bytes());
        array.extend_from_slice(&(-1i32).to_be_bytes());
        decoder.append(Some(&array)).expect("array");
        decoder.append(None).expect("null");
        let mut empty = Vec::new();
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&23u32.to_be_bytes());
        decoder.append(Some(&empty)).expect("empty");
        let built = decoder.finish().expect("finish");
        let list = built.as_list::<i32>();
        assert_eq!(list.len(), 3);
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);
        let first = list.value(0);
        let first = first.as_primitive::<Int32Type>();
        assert_eq!(first.value(0), 7);
        assert!(first.is_null(1));
    }

    #[test]
    fn decimal_arrays_carry_precision_and_scale() {
        let mut decoder = ColumnDecoder::new(
            &PgType::Numeric {
                precision: 10,
                scale: 2,
                declared: true,
            },
            1,
        );
        decoder
            .append(Some(&numeric_bytes(&[1, 2345, 6700], 1, false, 2)))
            .expect("value");
        let array = decoder.finish().expect("finish");
        let decimals: &Decimal128Array = array.as_primitive::<Decimal128Type>();
        assert_eq!(decimals.precision(), 10);
        assert_eq!(decimals.scale(), 2);
        assert_eq!(decimals.value_as_string(0), "12345.67");
    }

    #[test]
    fn vectors_check_their_dimension() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2u16.to_be_bytes());
        bytes.extend_from_slice(&0u16.to_be_bytes());
        bytes.extend_from_slice(&1.5f32.to_be_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_be_bytes());
        let mut fixed = ColumnDecoder::new(&PgType::Vector { dimension: Some(2) }, 2);
        fixed.append(Some(&bytes)).expect("vector");
        fixed.append(None).expect("null");
        let array = fixed.finish().expect("finish");
        let list = array.as_fixed_size_list();
        assert_eq!(
            list.value(0)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec(),
            vec![1.5, -2.0]
        );
        assert!(list.is_null(1));
        let mut wrong = ColumnDecoder::new(&PgType::Vector { dimension: Some(3) }, 1);
        assert!(wrong.append(Some(&bytes)).is_err());
    }
}
