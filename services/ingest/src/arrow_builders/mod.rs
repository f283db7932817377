//! Decoding of binary COPY field values straight into Arrow builders.
//!
//! One [`ColumnDecoder`] per column appends each field's bytes (PostgreSQL's
//! `*_send` representation) to an Arrow builder; a [`BatchBuilder`] holds one
//! per column and cuts record batches by rows or bytes, whichever comes
//! first, so a batch of wide rows stays small. No intermediate row or string
//! representation is built.
//!
//! The code is split by job: `column_decoder` holds [`ColumnDecoder`] and
//! decodes the fixed-width, text and date/time values itself, `numeric` and
//! `vectors_and_arrays` decode those families' wire formats, and
//! `batch_builder` holds [`BatchBuilder`].

mod batch_builder;
mod column_decoder;
mod numeric;
mod vectors_and_arrays;

pub use batch_builder::BatchBuilder;
pub use column_decoder::ColumnDecoder;

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
