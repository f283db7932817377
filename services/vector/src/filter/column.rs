//! A payload column in the form filters are evaluated on: one check per
//! row is a load and a compare, never a string comparison.
//!
//! - text and booleans become dictionary codes (`u32` per row) with a
//!   posting list (sorted row ids) per distinct value;
//! - integers, floats, decimals, dates and timestamps become typed values
//!   (`i64`, or `f64` for floats and decimals; times as microseconds since
//!   the epoch, UTC) with the rows sorted by value, so a range's match
//!   count is two binary searches and its rows one slice.
//!
//! Built from the generation's row columns on first use and kept with the
//! generation (its memory counts in the generation's).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};

/// The code of a null in [`Keyword::codes`].
pub const NULL_CODE: u32 = u32::MAX;

/// A payload column ready for filters.
#[derive(Debug)]
pub enum ColumnIndex {
    /// Text or booleans, by dictionary code.
    Keyword(Keyword),
    /// Numbers and times, by value.
    Ordered(Ordered),
}

/// What a keyword column holds: which values a condition may compare it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordKind {
    /// Strings.
    Text,
    /// Booleans (codes 0 = false, 1 = true).
    Bool,
}

/// Dictionary-coded values.
#[derive(Debug)]
pub struct Keyword {
    /// Text or booleans.
    pub kind: KeywordKind,
    /// Per row, its value's code, or [`NULL_CODE`].
    pub codes: Vec<u32>,
    /// Value to code.
    pub dictionary: HashMap<String, u32>,
    /// Per code, the rows holding it, ascending.
    pub postings: Vec<Vec<u32>>,
    /// Rows holding null, ascending.
    pub nulls: Vec<u32>,
}

/// What an ordered column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderedKind {
    /// Whole numbers (exact as `i64`).
    Integer,
    /// Floats and decimals (as `f64`).
    Float,
    /// Dates and timestamps, as microseconds since the epoch (UTC).
    Time,
}

/// Typed values.
#[derive(Debug)]
pub enum Keys {
    /// Integers and times.
    Int(Vec<i64>),
    /// Floats.
    Float(Vec<f64>),
}

/// Typed values with the rows in value order.
#[derive(Debug)]
pub struct Ordered {
    /// Integers, floats or times.
    pub kind: OrderedKind,
    /// Per row, its value (meaningless where null).
    pub keys: Keys,
    /// Bit `row` set where the row is null.
    pub null_bits: Vec<u64>,
    /// Non-null rows sorted by value (NaN left out: it matches no range).
    pub order: Vec<u32>,
    /// Rows holding null, ascending.
    pub nulls: Vec<u32>,
}

impl Ordered {
    /// Whether `row` is null.
    #[inline]
    pub fn is_null(&self, row: u32) -> bool {
        self.null_bits[row as usize / 64] >> (row % 64) & 1 == 1
    }
}

/// Why a column cannot be filtered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilterable(pub String);

impl ColumnIndex {
    /// The column as filters see it; `Err` names its type when filters
    /// cannot use it (lists, structs, binary).
    pub fn build(array: &ArrayRef) -> Result<Self, Unfilterable> {
        let data_type = array.data_type().clone();
        let unsupported = || Unfilterable(data_type.to_string());
        let cast = |to: &DataType| arrow::compute::cast(array, to).map_err(|_| unsupported());
        match &data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(ColumnIndex::Keyword(keyword_text(&cast(&DataType::Utf8)?)))
            }
            DataType::Dictionary(_, value) if value.is_string() => {
                Ok(ColumnIndex::Keyword(keyword_text(&cast(&DataType::Utf8)?)))
            }
            DataType::Boolean => Ok(ColumnIndex::Keyword(keyword_bool(array))),
            DataType::UInt64 => {
                // u64 past i64::MAX cannot be an exact i64: such a column is
                // compared as floats.
                let fits =
                    arrow::compute::max(array.as_primitive::<arrow::datatypes::UInt64Type>())
                        .is_none_or(|max| max <= i64::MAX as u64);
                if fits {
                    Ok(ordered_int(&cast(&DataType::Int64)?, OrderedKind::Integer))
                } else {
                    Ok(ordered_float(&cast(&DataType::Float64)?))
                }
            }
            t if t.is_integer() => Ok(ordered_int(&cast(&DataType::Int64)?, OrderedKind::Integer)),
            t if t.is_floating()
                || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
            {
                Ok(ordered_float(&cast(&DataType::Float64)?))
            }
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
                let micros = cast(&DataType::Timestamp(TimeUnit::Microsecond, None))?;
                Ok(ordered_time(&micros))
            }
            _ => Err(unsupported()),
        }
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        match self {
            ColumnIndex::Keyword(k) => {
                k.codes.capacity() * 4
                    + k.postings
                        .iter()
                        .map(|p| p.capacity() * 4 + 24)
                        .sum::<usize>()
                    + k.dictionary
                        .keys()
                        .map(|s| s.capacity() + 40)
                        .sum::<usize>()
                    + k.nulls.capacity() * 4
            }
            ColumnIndex::Ordered(o) => {
                let keys = match &o.keys {
                    Keys::Int(v) => v.capacity() * 8,
                    Keys::Float(v) => v.capacity() * 8,
                };
                keys + o.null_bits.capacity() * 8 + o.order.capacity() * 4 + o.nulls.capacity() * 4
            }
        }
    }

    /// The column's type as error messages name it.
    pub fn type_name(&self) -> &'static str {
        match self {
            ColumnIndex::Keyword(k) if k.kind == KeywordKind::Text => "text",
            ColumnIndex::Keyword(_) => "boolean",
            ColumnIndex::Ordered(o) => match o.kind {
                OrderedKind::Integer => "integer",
                OrderedKind::Float => "float",
                OrderedKind::Time => "date/timestamp",
            },
        }
    }
}

fn keyword_text(array: &ArrayRef) -> Keyword {
    let strings = array.as_string::<i32>();
    let mut dictionary: HashMap<String, u32> = HashMap::new();
    let mut postings: Vec<Vec<u32>> = Vec::new();
    let mut codes = Vec::with_capacity(strings.len());
    let mut nulls = Vec::new();
    for (row, value) in strings.iter().enumerate() {
        let row = row as u32;
        match value {
            None => {
                codes.push(NULL_CODE);
                nulls.push(row);
            }
            Some(value) => {
                let code = match dictionary.get(value) {
                    Some(&code) => code,
                    None => {
                        let code = postings.len() as u32;
                        dictionary.insert(value.to_owned(), code);
                        postings.push(Vec::new());
                        code
                    }
                };
                codes.push(code);
                postings[code as usize].push(row);
            }
        }
    }
    Keyword {
        kind: KeywordKind::Text,
        codes,
        dictionary,
        postings,
        nulls,
    }
}

fn keyword_bool(array: &ArrayRef) -> Keyword {
    let booleans = array.as_boolean();
    let mut postings = vec![Vec::new(), Vec::new()];
    let mut codes = Vec::with_capacity(booleans.len());
    let mut nulls = Vec::new();
    for (row, value) in booleans.iter().enumerate() {
        let row = row as u32;
        match value {
            None => {
                codes.push(NULL_CODE);
                nulls.push(row);
            }
            Some(value) => {
                codes.push(u32::from(value));
                postings[usize::from(value)].push(row);
            }
        }
    }
    Keyword {
        kind: KeywordKind::Bool,
        codes,
        dictionary: [("false".to_owned(), 0), ("true".to_owned(), 1)].into(),
        postings,
        nulls,
    }
}

fn null_parts(array: &dyn Array) -> (Vec<u64>, Vec<u32>) {
    let mut bits = vec![0u64; array.len().div_ceil(64)];
    let mut nulls = Vec::new();
    for row in 0..array.len() {
        if array.is_null(row) {
            bits[row / 64] |= 1 << (row % 64);
            nulls.push(row as u32);
        }
    }
    (bits, nulls)
}

fn ordered_int(array: &ArrayRef, kind: OrderedKind) -> ColumnIndex {
    let values = array.as_primitive::<Int64Type>();
    ordered_i64(values.values().to_vec(), array.as_ref(), kind)
}

fn ordered_time(array: &ArrayRef) -> ColumnIndex {
    let values = array.as_primitive::<TimestampMicrosecondType>();
    ordered_i64(values.values().to_vec(), array.as_ref(), OrderedKind::Time)
}

fn ordered_i64(keys: Vec<i64>, array: &dyn Array, kind: OrderedKind) -> ColumnIndex {
    let (null_bits, nulls) = null_parts(array);
    let mut order: Vec<u32> = (0..keys.len() as u32)
        .filter(|&row| !array.is_null(row as usize))
        .collect();
    order.sort_unstable_by_key(|&row| keys[row as usize]);
    ColumnIndex::Ordered(Ordered {
        kind,
        keys: Keys::Int(keys),
        null_bits,
        order,
        nulls,
    })
}

fn ordered_float(array: &ArrayRef) -> ColumnIndex {
    let keys = array.as_primitive::<Float64Type>().values().to_vec();
    let (null_bits, nulls) = null_parts(array.as_ref());
    let mut order: Vec<u32> = (0..keys.len() as u32)
        .filter(|&row| !array.is_null(row as usize) && !keys[row as usize].is_nan())
        .collect();
    order.sort_unstable_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
    ColumnIndex::Ordered(Ordered {
        kind: OrderedKind::Float,
        keys: Keys::Float(keys),
        null_bits,
        order,
        nulls,
    })
}

/// Lookups over a generation's row columns, each built on first use (an
/// index nobody filters or searches by id pays nothing): payload columns as
/// filters see them, and ids to rows for search by id.
#[derive(Debug, Default)]
pub struct RowIndexes {
    built: parking_lot::Mutex<HashMap<String, Result<Arc<ColumnIndex>, Unfilterable>>>,
    ids: std::sync::OnceLock<HashMap<String, u32>>,
}

impl RowIndexes {
    /// The row whose id (column 0, as the API shows ids) is `id`.
    pub fn row_of(&self, rows: &arrow::array::RecordBatch, id: &str) -> Option<u32> {
        self.ids
            .get_or_init(|| {
                let column = rows.column(0);
                let options = arrow::util::display::FormatOptions::default();
                let Ok(format) =
                    arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options)
                else {
                    return HashMap::new();
                };
                (0..column.len())
                    .filter(|&row| !column.is_null(row))
                    .map(|row| (format.value(row).to_string(), row as u32))
                    .collect()
            })
            .get(id)
            .copied()
    }

    /// The column `name` of `rows`, built now if no search built it yet;
    /// `None` when `rows` has no such column.
    pub fn get(
        &self,
        rows: &arrow::array::RecordBatch,
        name: &str,
    ) -> Option<Result<Arc<ColumnIndex>, Unfilterable>> {
        if let Some(built) = self.built.lock().get(name) {
            return Some(built.clone());
        }
        let array = rows.column_by_name(name)?;
        let built = ColumnIndex::build(array).map(Arc::new);
        self.built
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| built.clone());
        Some(built)
    }

    /// Bytes held by the lookups built so far.
    pub fn memory_bytes(&self) -> usize {
        let ids = self
            .ids
            .get()
            .map_or(0, |ids| ids.keys().map(|k| k.capacity() + 48).sum());
        ids + self
            .built
            .lock()
            .values()
            .map(|c| c.as_ref().map_or(0, |c| c.memory_bytes()))
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Date32Array, Float32Array, Int32Array, StringArray, UInt64Array,
    };

    #[test]
    fn columns_take_their_typed_forms() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("b"),
            None,
            Some("a"),
            Some("b"),
        ]));
        let ColumnIndex::Keyword(k) = ColumnIndex::build(&text).expect("text") else {
            panic!("text is a keyword column");
        };
        assert_eq!(k.codes, [0, NULL_CODE, 1, 0]);
        assert_eq!(k.postings, [vec![0, 3], vec![2]]);
        assert_eq!(k.nulls, [1]);

        let flags: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), Some(false), None]));
        let ColumnIndex::Keyword(k) = ColumnIndex::build(&flags).expect("bool") else {
            panic!("booleans are a keyword column");
        };
        assert_eq!(
            (k.kind, k.codes),
            (KeywordKind::Bool, vec![1, 0, NULL_CODE])
        );

        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None, Some(-3), Some(9)]));
        let ColumnIndex::Ordered(o) = ColumnIndex::build(&ints).expect("ints") else {
            panic!("ints are ordered");
        };
        assert_eq!(o.kind, OrderedKind::Integer);
        assert_eq!(o.order, [2, 0, 3]);
        assert!(o.is_null(1) && !o.is_null(0));

        let floats: ArrayRef = Arc::new(Float32Array::from(vec![1.5, f32::NAN, -0.5]));
        let ColumnIndex::Ordered(o) = ColumnIndex::build(&floats).expect("floats") else {
            panic!("floats are ordered");
        };
        assert_eq!((o.kind, o.order.clone()), (OrderedKind::Float, vec![2, 0]));

        let days: ArrayRef = Arc::new(Date32Array::from(vec![1, 0]));
        let ColumnIndex::Ordered(o) = ColumnIndex::build(&days).expect("dates") else {
            panic!("dates are ordered");
        };
        let Keys::Int(keys) = &o.keys else {
            panic!("times are i64");
        };
        assert_eq!(
            (o.kind, keys.clone()),
            (OrderedKind::Time, vec![86_400_000_000, 0])
        );

        // A u64 past i64::MAX is compared as a float, not wrapped or nulled.
        let big: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX, 1]));
        let ColumnIndex::Ordered(o) = ColumnIndex::build(&big).expect("u64") else {
            panic!("u64 is ordered");
        };
        assert_eq!((o.kind, o.order.clone()), (OrderedKind::Float, vec![1, 0]));
    }

    #[test]
    fn lists_are_refused_with_their_type() {
        let list: ArrayRef = Arc::new(arrow::array::ListArray::from_iter_primitive::<
            arrow::datatypes::Int32Type,
            _,
            _,
        >(vec![Some(vec![Some(1)])]));
        let error = ColumnIndex::build(&list).expect_err("lists are not filterable");
        assert!(error.0.contains("List"), "{error:?}");
    }
}
