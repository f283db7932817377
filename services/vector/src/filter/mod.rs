//! Filtered search (ADR 0017): a typed condition on an index's payload
//! columns, the per-column forms it is evaluated on, and the planner that
//! picks, per query, between a filtered graph walk and an exact scan of
//! the matching rows.
//!
//! - [`Filter`] is what a request asks, validated only for shape;
//! - [`column`] holds a payload column in a form a row is checked against
//!   in nanoseconds (dictionary codes for text and booleans, typed values
//!   with a sorted row order for numbers and times), built once per
//!   generation and column, on first use;
//! - [`predicate`] binds a filter to a generation's columns (unknown
//!   columns and type mismatches are refused here), estimates how many rows
//!   match, lists them when few do, and checks one row;
//! - [`plan`] chooses and runs the plan.
//!
//! Logic is two-valued: a condition on a null value is false, and
//! `none_of` inverts, so `none_of [city = "London"]` includes rows whose
//! city is null. `is_null` finds those.

pub mod column;
pub mod plan;
pub mod predicate;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Deepest nesting of all_of/any_of/none_of a filter may have.
pub const MAX_DEPTH: usize = 16;
/// Most conditions (leaves) in one filter, and most values in one `in`.
pub const MAX_CONDITIONS: usize = 1024;

/// A value a condition compares a column with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Text (also an RFC 3339 time or `YYYY-MM-DD` date for time columns).
    String(String),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// An instant, in microseconds since the Unix epoch (UTC).
    TimestampMicros(i64),
}

impl Value {
    /// The kind of value, as error messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Double(_) => "a double",
            Value::Bool(_) => "a boolean",
            Value::TimestampMicros(_) => "a timestamp",
        }
    }
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// The value.
    pub value: Value,
    /// Whether the value itself is in the range (gte/lte) or not (gt/lt).
    pub inclusive: bool,
}

/// A condition on payload columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// `column = value`.
    Equal {
        /// Column.
        column: String,
        /// Value.
        value: Value,
    },
    /// `column` equals one of `values`.
    InList {
        /// Column.
        column: String,
        /// Values, at least one.
        values: Vec<Value>,
    },
    /// `column` between bounds (numbers, dates and timestamps).
    Range {
        /// Column.
        column: String,
        /// Lower bound, if any.
        lower: Option<Bound>,
        /// Upper bound, if any (at least one of the two is set).
        upper: Option<Bound>,
    },
    /// `column` is null.
    IsNull {
        /// Column.
        column: String,
    },
    /// Every condition holds.
    AllOf(Vec<Filter>),
    /// At least one condition holds.
    AnyOf(Vec<Filter>),
    /// No condition holds.
    NoneOf(Vec<Filter>),
}

impl Filter {
    /// Checks the filter's shape: bounded depth and size, non-empty lists,
    /// ranges with a bound. Columns and types are checked against the
    /// index in [`predicate::bind`].
    pub fn validate(&self) -> Result<()> {
        let mut leaves = 0;
        self.validate_at(0, &mut leaves)
    }

    fn validate_at(&self, depth: usize, leaves: &mut usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::invalid(
                "filter",
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let mut leaf = |count: usize| {
            *leaves += count;
            if *leaves > MAX_CONDITIONS {
                return Err(Error::invalid(
                    "filter",
                    format!("more than {MAX_CONDITIONS} conditions and values"),
                ));
            }
            Ok(())
        };
        match self {
            Filter::Equal { column, .. } | Filter::IsNull { column } => {
                check_column(column)?;
                leaf(1)
            }
            Filter::InList { column, values } => {
                check_column(column)?;
                if values.is_empty() {
                    return Err(Error::invalid(
                        "filter",
                        format!("`in` on {column:?} lists no values"),
                    ));
                }
                leaf(values.len())
            }
            Filter::Range {
                column,
                lower,
                upper,
            } => {
                check_column(column)?;
                if lower.is_none() && upper.is_none() {
                    return Err(Error::invalid(
                        "filter",
                        format!("the range on {column:?} sets none of gt, gte, lt, lte"),
                    ));
                }
                leaf(1)
            }
            Filter::AllOf(list) | Filter::AnyOf(list) | Filter::NoneOf(list) => {
                if list.is_empty() {
                    return Err(Error::invalid(
                        "filter",
                        "all_of, any_of and none_of need at least one condition",
                    ));
                }
                list.iter()
                    .try_for_each(|f| f.validate_at(depth + 1, leaves))
            }
        }
    }
}

fn check_column(column: &str) -> Result<()> {
    if column.is_empty() {
        return Err(Error::invalid("filter", "a condition names no column"));
    }
    Ok(())
}
