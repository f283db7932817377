//! A filter bound to one generation's payload columns: values converted to
//! the column's form once per query (a string to its dictionary code, a
//! double bound on an integer column to the integer bound it means), so the
//! check per row is a load and a compare.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::column::{ColumnIndex, Keys, KeywordKind, NULL_CODE, Ordered, OrderedKind, RowIndexes};
use super::{Bound, Filter, Value};
use crate::error::{Error, Result};

/// A filter ready to check rows of one generation.
#[derive(Debug)]
pub enum Predicate {
    /// Known without looking at a row (a value no row holds).
    Const(bool),
    /// A keyword column's code is one of a set.
    Codes {
        /// The column.
        column: Arc<ColumnIndex>,
        /// Accepted codes.
        codes: CodeSet,
    },
    /// The column is null.
    Null(Arc<ColumnIndex>),
    /// An integer or time column within `lo..=hi`.
    IntRange {
        /// The column.
        column: Arc<ColumnIndex>,
        /// Lowest accepted.
        lo: i64,
        /// Highest accepted.
        hi: i64,
    },
    /// A float column within the bounds.
    FloatRange {
        /// The column.
        column: Arc<ColumnIndex>,
        /// Lower bound and whether it is accepted.
        lo: (f64, bool),
        /// Upper bound and whether it is accepted.
        hi: (f64, bool),
    },
    /// Every one holds.
    All(Vec<Predicate>),
    /// At least one holds.
    Any(Vec<Predicate>),
    /// It does not hold.
    Not(Box<Predicate>),
}

/// Dictionary codes a condition accepts.
#[derive(Debug)]
pub enum CodeSet {
    /// One code (`eq`).
    One(u32),
    /// A bitmap over the dictionary (`in`).
    Many(Vec<u64>),
}

/// Binds `filter` to the payload columns of a generation's `rows`. A column
/// outside `payload` is refused (naming the kept ones), as is a value of the
/// wrong type for its column.
pub fn bind(
    filter: &Filter,
    index: &str,
    payload: &[String],
    rows: &RecordBatch,
    columns: &RowIndexes,
) -> Result<Predicate> {
    let column = |name: &str| -> Result<Arc<ColumnIndex>> {
        let unknown = || Error::UnknownPayloadColumn {
            index: index.to_owned(),
            column: name.to_owned(),
            available: payload.to_vec(),
        };
        if !payload.iter().any(|p| p == name) {
            return Err(unknown());
        }
        let built = columns.get(rows, name).ok_or_else(unknown)?;
        built.map_err(|unfilterable| Error::FilterType {
            column: name.to_owned(),
            reason: format!(
                "its type {} cannot be filtered on (text, booleans, numbers, dates and timestamps can)",
                unfilterable.0
            ),
        })
    };
    bind_with(filter, &column)
}

fn bind_with(
    filter: &Filter,
    column: &dyn Fn(&str) -> Result<Arc<ColumnIndex>>,
) -> Result<Predicate> {
    Ok(match filter {
        Filter::Equal {
            column: name,
            value,
        } => {
            let c = column(name)?;
            point(name, &c, value)?
        }
        Filter::InList {
            column: name,
            values,
        } => {
            let c = column(name)?;
            let points = values
                .iter()
                .map(|v| point(name, &c, v))
                .collect::<Result<Vec<_>>>()?;
            match &*c {
                ColumnIndex::Keyword(k) => {
                    let mut bits = vec![0u64; k.postings.len().div_ceil(64)];
                    for p in &points {
                        if let Predicate::Codes {
                            codes: CodeSet::One(code),
                            ..
                        } = p
                        {
                            bits[*code as usize / 64] |= 1 << (code % 64);
                        }
                    }
                    Predicate::Codes {
                        column: c.clone(),
                        codes: CodeSet::Many(bits),
                    }
                }
                ColumnIndex::Ordered(_) => Predicate::Any(points),
            }
        }
        Filter::Range {
            column: name,
            lower,
            upper,
        } => {
            let c = column(name)?;
            range(name, &c, lower.as_ref(), upper.as_ref())?
        }
        Filter::IsNull { column: name } => Predicate::Null(column(name)?),
        Filter::AllOf(list) => Predicate::All(bind_list(list, column)?),
        Filter::AnyOf(list) => Predicate::Any(bind_list(list, column)?),
        Filter::NoneOf(list) => Predicate::Not(Box::new(Predicate::Any(bind_list(list, column)?))),
    })
}

fn bind_list(
    list: &[Filter],
    column: &dyn Fn(&str) -> Result<Arc<ColumnIndex>>,
) -> Result<Vec<Predicate>> {
    list.iter().map(|f| bind_with(f, column)).collect()
}

fn mismatch(name: &str, c: &ColumnIndex, value: &Value) -> Error {
    Error::FilterType {
        column: name.to_owned(),
        reason: format!(
            "it is a {} column; the filter compares it with {}",
            c.type_name(),
            value.kind()
        ),
    }
}

/// `column = value`.
fn point(name: &str, c: &Arc<ColumnIndex>, value: &Value) -> Result<Predicate> {
    match &**c {
        ColumnIndex::Keyword(k) => {
            let key = match (k.kind, value) {
                (KeywordKind::Text, Value::String(s)) => s.as_str(),
                (KeywordKind::Bool, Value::Bool(b)) => {
                    if *b {
                        "true"
                    } else {
                        "false"
                    }
                }
                _ => return Err(mismatch(name, c, value)),
            };
            Ok(match k.dictionary.get(key) {
                Some(&code) => Predicate::Codes {
                    column: c.clone(),
                    codes: CodeSet::One(code),
                },
                None => Predicate::Const(false),
            })
        }
        ColumnIndex::Ordered(_) => {
            let at = Bound {
                value: value.clone(),
                inclusive: true,
            };
            range(name, c, Some(&at), Some(&at))
        }
    }
}

/// `column` within bounds, converted to the column's key type.
fn range(
    name: &str,
    c: &Arc<ColumnIndex>,
    lower: Option<&Bound>,
    upper: Option<&Bound>,
) -> Result<Predicate> {
    let ColumnIndex::Ordered(o) = &**c else {
        let value = lower.or(upper).map_or(Value::Int(0), |b| b.value.clone());
        return Err(Error::FilterType {
            column: name.to_owned(),
            reason: format!(
                "a range needs a number, date or timestamp column; it is a {} column (compared with {})",
                c.type_name(),
                value.kind()
            ),
        });
    };
    match o.kind {
        OrderedKind::Float => {
            let bound = |b: Option<&Bound>, open: f64| -> Result<(f64, bool)> {
                Ok(match b {
                    None => (open, true),
                    Some(b) => match &b.value {
                        Value::Int(i) => (*i as f64, b.inclusive),
                        Value::Double(d) => (*d, b.inclusive),
                        other => return Err(mismatch(name, c, other)),
                    },
                })
            };
            Ok(Predicate::FloatRange {
                column: c.clone(),
                lo: bound(lower, f64::NEG_INFINITY)?,
                hi: bound(upper, f64::INFINITY)?,
            })
        }
        OrderedKind::Integer | OrderedKind::Time => {
            let lo = match lower {
                None => i64::MIN,
                Some(b) => match int_key(name, c, o, &b.value)? {
                    // The smallest integer the bound accepts.
                    Key::Exact(i) if b.inclusive => i,
                    Key::Exact(i) => match i.checked_add(1) {
                        Some(i) => i,
                        None => return Ok(Predicate::Const(false)),
                    },
                    Key::Between(floor) => floor.saturating_add(1),
                },
            };
            let hi = match upper {
                None => i64::MAX,
                Some(b) => match int_key(name, c, o, &b.value)? {
                    Key::Exact(i) if b.inclusive => i,
                    Key::Exact(i) => match i.checked_sub(1) {
                        Some(i) => i,
                        None => return Ok(Predicate::Const(false)),
                    },
                    Key::Between(floor) => floor,
                },
            };
            Ok(if lo > hi {
                Predicate::Const(false)
            } else {
                Predicate::IntRange {
                    column: c.clone(),
                    lo,
                    hi,
                }
            })
        }
    }
}

/// A bound on an integer or time column: an integer, or a value strictly
/// between `floor` and `floor + 1` (59.5 on an integer column).
enum Key {
    Exact(i64),
    Between(i64),
}

fn int_key(name: &str, c: &ColumnIndex, o: &Ordered, value: &Value) -> Result<Key> {
    match (o.kind, value) {
        (OrderedKind::Integer, Value::Int(i)) => Ok(Key::Exact(*i)),
        (OrderedKind::Integer, Value::Double(d)) if d.is_finite() => {
            let floor = d.floor();
            let clamped = floor.clamp(i64::MIN as f64, i64::MAX as f64) as i64;
            Ok(if floor == *d {
                Key::Exact(clamped)
            } else {
                Key::Between(clamped)
            })
        }
        (OrderedKind::Integer, Value::Double(d)) => {
            Ok(Key::Exact(if *d > 0.0 { i64::MAX } else { i64::MIN }))
        }
        (OrderedKind::Time, Value::TimestampMicros(t)) => Ok(Key::Exact(*t)),
        (OrderedKind::Time, Value::String(s)) => {
            let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).map_err(|_| Error::FilterType {
                column: name.to_owned(),
                reason: format!(
                    "{s:?} is not a time; use RFC 3339 (2024-05-01T12:00:00Z) or a date (2024-05-01), or a timestamp value"
                ),
            })?;
            // Sub-microsecond parts round down: the column is compared in µs.
            Ok(Key::Exact(nanos.div_euclid(1000)))
        }
        _ => Err(mismatch(name, c, value)),
    }
}

impl Predicate {
    /// Whether `row` passes. A load and a compare per leaf.
    #[inline]
    pub fn matches(&self, row: u32) -> bool {
        match self {
            Predicate::Const(b) => *b,
            Predicate::Codes { column, codes } => {
                let ColumnIndex::Keyword(k) = &**column else {
                    return false;
                };
                let code = k.codes[row as usize];
                match codes {
                    CodeSet::One(c) => code == *c,
                    CodeSet::Many(bits) => {
                        code != NULL_CODE && bits[code as usize / 64] >> (code % 64) & 1 == 1
                    }
                }
            }
            Predicate::Null(column) => match &**column {
                ColumnIndex::Keyword(k) => k.codes[row as usize] == NULL_CODE,
                ColumnIndex::Ordered(o) => o.is_null(row),
            },
            Predicate::IntRange { column, lo, hi } => {
                let ColumnIndex::Ordered(o) = &**column else {
                    return false;
                };
                let Keys::Int(keys) = &o.keys else {
                    return false;
                };
                let v = keys[row as usize];
                *lo <= v && v <= *hi && (o.nulls.is_empty() || !o.is_null(row))
            }
            Predicate::FloatRange { column, lo, hi } => {
                let ColumnIndex::Ordered(o) = &**column else {
                    return false;
                };
                let Keys::Float(keys) = &o.keys else {
                    return false;
                };
                let v = keys[row as usize];
                let above = if lo.1 { v >= lo.0 } else { v > lo.0 };
                let below = if hi.1 { v <= hi.0 } else { v < hi.0 };
                above && below && (o.nulls.is_empty() || !o.is_null(row))
            }
            Predicate::All(list) => list.iter().all(|p| p.matches(row)),
            Predicate::Any(list) => list.iter().any(|p| p.matches(row)),
            Predicate::Not(p) => !p.matches(row),
        }
    }

    /// The number of rows (of `n`) expected to pass: exact for a single
    /// condition; for combinations, as if conditions were independent.
    pub fn estimate(&self, n: usize) -> f64 {
        let n_f = n.max(1) as f64;
        match self {
            Predicate::All(list) => n_f * list.iter().map(|p| p.estimate(n) / n_f).product::<f64>(),
            Predicate::Any(list) => {
                n_f * (1.0
                    - list
                        .iter()
                        .map(|p| 1.0 - p.estimate(n) / n_f)
                        .product::<f64>())
            }
            Predicate::Not(p) => n_f - p.estimate(n),
            leaf => leaf.count().map_or(n_f, |count| count as f64),
        }
    }

    /// A single condition's exact match count, without listing the rows.
    fn count(&self) -> Option<usize> {
        match self {
            Predicate::Codes {
                column,
                codes: CodeSet::One(c),
            } => match &**column {
                ColumnIndex::Keyword(k) => Some(k.postings[*c as usize].len()),
                ColumnIndex::Ordered(_) => None,
            },
            Predicate::Codes {
                column,
                codes: CodeSet::Many(bits),
            } => match &**column {
                ColumnIndex::Keyword(k) => Some(
                    (0..k.postings.len())
                        .filter(|c| bits[c / 64] >> (c % 64) & 1 == 1)
                        .map(|c| k.postings[c].len())
                        .sum(),
                ),
                ColumnIndex::Ordered(_) => None,
            },
            Predicate::IntRange { .. } | Predicate::FloatRange { .. } => {
                self.order_span().map(|(start, end)| end - start)
            }
            other => other.candidates().map(|rows| rows.len()),
        }
    }

    /// Where a range's rows sit in its column's value order.
    fn order_span(&self) -> Option<(usize, usize)> {
        match self {
            Predicate::IntRange { column, lo, hi } => {
                let ColumnIndex::Ordered(o) = &**column else {
                    return None;
                };
                let Keys::Int(keys) = &o.keys else {
                    return None;
                };
                let start = o.order.partition_point(|&r| keys[r as usize] < *lo);
                let end = o.order.partition_point(|&r| keys[r as usize] <= *hi);
                Some((start, end.max(start)))
            }
            Predicate::FloatRange { column, lo, hi } => {
                let ColumnIndex::Ordered(o) = &**column else {
                    return None;
                };
                let Keys::Float(keys) = &o.keys else {
                    return None;
                };
                let key = |r: &u32| keys[*r as usize];
                let start = o
                    .order
                    .partition_point(|r| if lo.1 { key(r) < lo.0 } else { key(r) <= lo.0 });
                let end = o
                    .order
                    .partition_point(|r| if hi.1 { key(r) <= hi.0 } else { key(r) < hi.0 });
                Some((start, end.max(start)))
            }
            _ => None,
        }
    }

    /// Rows that include every passing row (sorted, ascending), when the
    /// columns can list them without a scan: a condition's own rows, the
    /// smallest list of an `all`, the union of an `any`. `None` for `not`.
    pub fn candidates(&self) -> Option<Vec<u32>> {
        match self {
            Predicate::Const(false) => Some(Vec::new()),
            Predicate::Const(true) | Predicate::Not(_) => None,
            Predicate::Codes { column, codes } => {
                let ColumnIndex::Keyword(k) = &**column else {
                    return None;
                };
                Some(match codes {
                    CodeSet::One(c) => k.postings[*c as usize].clone(),
                    CodeSet::Many(bits) => {
                        let mut rows: Vec<u32> = (0..k.postings.len())
                            .filter(|c| bits[c / 64] >> (c % 64) & 1 == 1)
                            .flat_map(|c| k.postings[c].iter().copied())
                            .collect();
                        rows.sort_unstable();
                        rows
                    }
                })
            }
            Predicate::Null(column) => Some(match &**column {
                ColumnIndex::Keyword(k) => k.nulls.clone(),
                ColumnIndex::Ordered(o) => o.nulls.clone(),
            }),
            Predicate::IntRange { column, .. } | Predicate::FloatRange { column, .. } => {
                let ColumnIndex::Ordered(o) = &**column else {
                    return None;
                };
                let (start, end) = self.order_span()?;
                let mut rows = o.order[start..end].to_vec();
                rows.sort_unstable();
                Some(rows)
            }
            // The shortest list, counted before any is listed.
            Predicate::All(list) => list
                .iter()
                .filter_map(|p| p.count().map(|count| (count, p)))
                .min_by_key(|(count, _)| *count)
                .and_then(|(_, p)| p.candidates()),
            Predicate::Any(list) => {
                let mut rows = Vec::new();
                for p in list {
                    rows.extend(p.candidates()?);
                }
                rows.sort_unstable();
                rows.dedup();
                Some(rows)
            }
        }
    }

    /// Every passing row of `n`, ascending: the candidates (or all rows)
    /// checked one by one.
    pub fn matching_rows(&self, n: usize) -> Vec<u32> {
        match self.candidates() {
            Some(rows) => rows.into_iter().filter(|&r| self.matches(r)).collect(),
            None => (0..n as u32).filter(|&r| self.matches(r)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};

    use super::*;

    fn rows() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..6)) as ArrayRef,
            ),
            (
                "rate",
                Arc::new(Int64Array::from(vec![
                    Some(58),
                    Some(59),
                    Some(60),
                    None,
                    Some(61),
                    Some(59),
                ])),
            ),
            (
                "city",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("a"),
                    Some("c"),
                    Some("a"),
                ])),
            ),
            (
                "score",
                Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5, 3.5, 4.5, f64::NAN])),
            ),
        ])
        .expect("rows")
    }

    fn passing(filter: &Filter) -> Result<Vec<u32>> {
        let rows = rows();
        let indexes = RowIndexes::default();
        let payload = ["rate", "city", "score"].map(String::from);
        let p = bind(filter, "idx", &payload, &rows, &indexes)?;
        let scanned: Vec<u32> = (0..6).filter(|&r| p.matches(r)).collect();
        // Listing the rows and checking them one by one agree.
        assert_eq!(p.matching_rows(6), scanned, "{filter:?}");
        Ok(scanned)
    }

    fn range(column: &str, lower: Option<(Value, bool)>, upper: Option<(Value, bool)>) -> Filter {
        let bound =
            |b: Option<(Value, bool)>| b.map(|(value, inclusive)| Bound { value, inclusive });
        Filter::Range {
            column: column.into(),
            lower: bound(lower),
            upper: bound(upper),
        }
    }

    #[test]
    fn double_bounds_on_integers_mean_what_they_say() {
        let d = |v: f64, incl: bool| Some((Value::Double(v), incl));
        assert_eq!(
            passing(&range("rate", None, d(59.5, false))).expect("binds"),
            [0, 1, 5]
        );
        assert_eq!(
            passing(&range("rate", d(59.5, false), None)).expect("binds"),
            [2, 4]
        );
        assert_eq!(
            passing(&range("rate", d(59.0, false), d(61.0, false))).expect("binds"),
            [2]
        );
        assert_eq!(
            passing(&range("rate", d(60.0, true), d(60.0, true))).expect("binds"),
            [2]
        );
        // Past i64's range: nothing above i64::MAX, everything below it.
        assert!(
            passing(&range("rate", Some((Value::Int(i64::MAX), false)), None))
                .expect("binds")
                .is_empty()
        );
        assert_eq!(
            passing(&range("rate", None, d(1e300, true))).expect("binds"),
            [0, 1, 2, 4, 5]
        );
    }

    #[test]
    fn nulls_and_nan_pass_no_comparison_and_none_of_inverts() {
        let london = Filter::Equal {
            column: "city".into(),
            value: Value::String("a".into()),
        };
        assert_eq!(passing(&london).expect("binds"), [0, 3, 5]);
        assert_eq!(
            passing(&Filter::NoneOf(vec![london.clone()])).expect("binds"),
            [1, 2, 4]
        );
        assert_eq!(
            passing(&Filter::IsNull {
                column: "rate".into()
            })
            .expect("binds"),
            [3]
        );
        assert_eq!(
            passing(&range("score", Some((Value::Int(0), true)), None)).expect("binds"),
            [0, 1, 2, 3, 4],
            "NaN is in no range"
        );
        let both = Filter::AllOf(vec![
            london,
            Filter::InList {
                column: "rate".into(),
                values: vec![Value::Int(59), Value::Int(58)],
            },
        ]);
        assert_eq!(passing(&both).expect("binds"), [0, 5]);
    }

    #[test]
    fn estimates_are_exact_for_one_condition() {
        let rows = rows();
        let indexes = RowIndexes::default();
        let payload = ["rate".to_owned()];
        let p = bind(
            &range("rate", Some((Value::Int(59), true)), None),
            "idx",
            &payload,
            &rows,
            &indexes,
        )
        .expect("bind");
        assert_eq!(p.estimate(6), 4.0);
        assert_eq!(p.candidates().expect("listed"), [1, 2, 4, 5]);
    }

    #[test]
    fn wrong_columns_and_types_are_refused_by_name() {
        let error = passing(&Filter::Equal {
            column: "id".into(),
            value: Value::Int(1),
        })
        .expect_err("not a payload column");
        assert!(matches!(error, Error::UnknownPayloadColumn { ref column, .. } if column == "id"));
        let error = passing(&Filter::Equal {
            column: "city".into(),
            value: Value::Int(1),
        })
        .expect_err("text vs integer");
        assert!(error.to_string().contains("text column"), "{error}");
        let error = passing(&range(
            "city",
            Some((Value::String("a".into()), true)),
            None,
        ))
        .expect_err("range on text");
        assert!(error.to_string().contains("a range needs"), "{error}");
    }
}
