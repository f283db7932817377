//! Filters from their proto form: shape errors (no kind set, both gt and
//! gte) are INVALID_ARGUMENT naming the field; columns and types are
//! checked against the index by the search itself.

use lakehouse_proto::vector::v1 as pb;

use crate::error::{Error, Result};
use crate::filter::{Bound, Filter, MAX_DEPTH, Value};

/// The request's filter, if set.
pub(super) fn filter_of(filter: Option<pb::Filter>) -> Result<Option<Filter>> {
    filter.map(|f| convert(f, 0)).transpose()
}

fn convert(filter: pb::Filter, depth: usize) -> Result<Filter> {
    use pb::filter::Kind;
    if depth > MAX_DEPTH {
        return Err(Error::invalid(
            "filter",
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let list = |list: pb::FilterList| -> Result<Vec<Filter>> {
        list.filters
            .into_iter()
            .map(|f| convert(f, depth + 1))
            .collect()
    };
    Ok(match filter.kind {
        None => return Err(Error::invalid("filter", "a filter sets none of its kinds")),
        Some(Kind::Equal(c)) => Filter::Equal {
            value: value(c.value, &c.column, "equal.value")?,
            column: c.column,
        },
        Some(Kind::InList(c)) => Filter::InList {
            values: c
                .values
                .into_iter()
                .map(|v| value(Some(v), &c.column, "in_list.values"))
                .collect::<Result<_>>()?,
            column: c.column,
        },
        Some(Kind::Range(c)) => {
            let bound = |open: Option<pb::FilterValue>,
                         closed: Option<pb::FilterValue>,
                         names: &str|
             -> Result<Option<Bound>> {
                match (open, closed) {
                    (Some(_), Some(_)) => Err(Error::invalid(
                        "filter",
                        format!("the range on {:?} sets both {names}", c.column),
                    )),
                    (Some(v), None) => Ok(Some(Bound {
                        value: value(Some(v), &c.column, "range")?,
                        inclusive: false,
                    })),
                    (None, Some(v)) => Ok(Some(Bound {
                        value: value(Some(v), &c.column, "range")?,
                        inclusive: true,
                    })),
                    (None, None) => Ok(None),
                }
            };
            Filter::Range {
                lower: bound(c.gt, c.gte, "gt and gte")?,
                upper: bound(c.lt, c.lte, "lt and lte")?,
                column: c.column,
            }
        }
        Some(Kind::IsNull(c)) => Filter::IsNull { column: c.column },
        Some(Kind::AllOf(l)) => Filter::AllOf(list(l)?),
        Some(Kind::AnyOf(l)) => Filter::AnyOf(list(l)?),
        Some(Kind::NoneOf(l)) => Filter::NoneOf(list(l)?),
    })
}

fn value(value: Option<pb::FilterValue>, column: &str, field: &str) -> Result<Value> {
    use pb::filter_value::Kind;
    let missing = || Error::invalid("filter", format!("{field} on {column:?} sets no value"));
    Ok(match value.and_then(|v| v.kind).ok_or_else(missing)? {
        Kind::StringValue(s) => Value::String(s),
        Kind::Int64Value(i) => Value::Int(i),
        Kind::DoubleValue(d) if d.is_nan() => {
            return Err(Error::invalid(
                "filter",
                format!("{field} on {column:?} is NaN, which no row equals or bounds"),
            ));
        }
        Kind::DoubleValue(d) => Value::Double(d),
        Kind::BoolValue(b) => Value::Bool(b),
        Kind::TimestampValue(t) => Value::TimestampMicros(
            t.seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(t.nanos) / 1000),
        ),
    })
}

/// A stored filter in its proto form (eval sets echo theirs).
pub(super) fn filter_pb(filter: &Filter) -> pb::Filter {
    use pb::filter::Kind;
    let list = |filters: &[Filter]| pb::FilterList {
        filters: filters.iter().map(filter_pb).collect(),
    };
    let kind = match filter {
        Filter::Equal { column, value } => Kind::Equal(pb::ColumnEquals {
            column: column.clone(),
            value: Some(value_pb(value)),
        }),
        Filter::InList { column, values } => Kind::InList(pb::ColumnIn {
            column: column.clone(),
            values: values.iter().map(value_pb).collect(),
        }),
        Filter::Range {
            column,
            lower,
            upper,
        } => {
            let mut range = pb::ColumnRange {
                column: column.clone(),
                ..Default::default()
            };
            if let Some(b) = lower {
                let v = Some(value_pb(&b.value));
                if b.inclusive {
                    range.gte = v
                } else {
                    range.gt = v
                }
            }
            if let Some(b) = upper {
                let v = Some(value_pb(&b.value));
                if b.inclusive {
                    range.lte = v
                } else {
                    range.lt = v
                }
            }
            Kind::Range(range)
        }
        Filter::IsNull { column } => Kind::IsNull(pb::ColumnIsNull {
            column: column.clone(),
        }),
        Filter::AllOf(l) => Kind::AllOf(list(l)),
        Filter::AnyOf(l) => Kind::AnyOf(list(l)),
        Filter::NoneOf(l) => Kind::NoneOf(list(l)),
    };
    pb::Filter { kind: Some(kind) }
}

fn value_pb(value: &Value) -> pb::FilterValue {
    use pb::filter_value::Kind;
    let kind = match value {
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Int(i) => Kind::Int64Value(*i),
        Value::Double(d) => Kind::DoubleValue(*d),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::TimestampMicros(t) => Kind::TimestampValue(prost_types::Timestamp {
            seconds: t.div_euclid(1_000_000),
            nanos: (t.rem_euclid(1_000_000) * 1000) as i32,
        }),
    };
    pb::FilterValue { kind: Some(kind) }
}
