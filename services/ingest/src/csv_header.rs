//! Does the first line of a CSV said to have a header look like data?
//!
//! A CSV without a header, ingested as if it had one, loses its first row
//! silently (it becomes the column names: `1`, `Ada Lovelace`). The ingest
//! refuses instead when the first line looks like a data row:
//! - every column whose sampled values have a type other than text (an
//!   integer, a float, a date, a boolean) has a non-empty first-line field
//!   that parses as that type, by the very parser the ingest uses; a real
//!   header (`id`, `score`) does not parse as Int64 or Float64;
//! - or a first-line field of a text column repeats one of that column's
//!   values (`London` both as a name and in the rows).
//!
//! Declared columns skip the check: the caller named them and said there is
//! a header, which is also the way out for a header that is only numbers.

use std::sync::Arc;

use arrow::array::{Array as _, AsArray as _, RecordBatch};
use arrow::csv::ReaderBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};

/// Refuses (with [`Error::HeaderLooksLikeData`]) a first line that looks
/// like data. `sample` holds complete lines from the start of the file;
/// `schema` was inferred from its rows after the first.
pub fn check(schema: &SchemaRef, sample: &[u8], delimiter: u8) -> Result<()> {
    let text_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    // The first record as text, and where it ends (quotes may hold
    // newlines, so the parser says, not the first '\n').
    let Some((first, first_len)) = first_record(&text_schema, sample, delimiter) else {
        return Ok(());
    };
    let first: Vec<String> = (0..first.num_columns())
        .map(|i| text_at(&first, i, 0).unwrap_or_default())
        .collect();

    let typed: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !is_text_like(f.data_type()))
        .map(|(i, _)| i)
        .collect();
    if !typed.is_empty()
        && typed
            .iter()
            .all(|&i| first.get(i).is_some_and(|v| !v.is_empty()))
        && first_record(schema, &sample[..first_len], delimiter).is_some()
    {
        let fields: Vec<String> = typed
            .iter()
            .map(|&i| {
                format!(
                    "{:?} parses as {} like the rest of column {}",
                    first[i],
                    schema.field(i).data_type(),
                    i + 1
                )
            })
            .collect();
        return Err(Error::HeaderLooksLikeData {
            evidence: fields.join(", "),
        });
    }

    // The rows after the first, as text.
    let rows = all_records(&text_schema, &sample[first_len..], delimiter);
    for (i, name) in first.iter().enumerate() {
        if name.is_empty() || !is_text_like(schema.field(i).data_type()) {
            continue;
        }
        let repeated = rows.iter().any(|batch| {
            (0..batch.num_rows()).any(|r| text_at(batch, i, r).as_ref() == Some(name))
        });
        if repeated {
            return Err(Error::HeaderLooksLikeData {
                evidence: format!("{name:?} is also a value of column {} in the rows", i + 1),
            });
        }
    }
    Ok(())
}

/// Columns the check cannot tell from a name: text, and columns with no
/// values in the sample.
fn is_text_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

/// The first record of `bytes` read with `schema` (no header) and the bytes
/// it took; `None` when it does not parse with that schema.
fn first_record(schema: &SchemaRef, bytes: &[u8], delimiter: u8) -> Option<(RecordBatch, usize)> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(1)
        .build_decoder();
    let mut used = decoder.decode(bytes).ok()?;
    if decoder.capacity() > 0 {
        // No newline after it: the end of the sample ends it.
        used += decoder.decode(&[]).ok()?;
    }
    let batch = decoder.flush().ok()??;
    (batch.num_rows() == 1).then_some((batch, used))
}

/// Every record of `bytes` read with `schema`; empty when they do not all
/// parse (the ingest itself then reports what is wrong, with its line).
fn all_records(schema: &SchemaRef, mut bytes: &[u8], delimiter: u8) -> Vec<RecordBatch> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(1024)
        .build_decoder();
    let mut batches = Vec::new();
    // An empty slice tells the decoder the input ended (a last line without
    // a newline); nothing used then means everything was read.
    loop {
        let Ok(used) = decoder.decode(bytes) else {
            return Vec::new();
        };
        bytes = &bytes[used..];
        match decoder.flush() {
            Ok(Some(batch)) => batches.push(batch),
            Ok(None) => {}
            Err(_) => return Vec::new(),
        }
        if used == 0 {
            break;
        }
    }
    batches
}

/// The text in column `column`, row `row` of an all-text batch.
fn text_at(batch: &RecordBatch, column: usize, row: usize) -> Option<String> {
    let array = batch.column(column).as_string_opt::<i32>()?;
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(types: &[DataType]) -> SchemaRef {
        Arc::new(Schema::new(
            types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn a_first_line_of_numbers_in_numeric_columns_is_data() {
        let types = schema(&[DataType::Int64, DataType::Utf8, DataType::Float64]);
        let csv = b"1,Ada Lovelace,2.5\n2,Grace Hopper,3.5\n3,Alan Turing,4\n";
        let error = check(&types, csv, b',').expect_err("data, not names");
        let text = error.to_string();
        assert!(text.contains("--no-header"), "{text}");
        assert!(text.contains("has_header"), "{text}");
        assert!(text.contains("\"1\" parses as Int64"), "{text}");
    }

    #[test]
    fn names_that_do_not_parse_are_a_header() {
        let types = schema(&[DataType::Int64, DataType::Utf8, DataType::Float64]);
        check(&types, b"id,name,score\n1,Ada,2.5\n2,Grace,3.5\n", b',').expect("a header");
        // An empty name (a pandas index column) is a header too.
        check(&types, b",name,score\n1,Ada,2.5\n", b',').expect("a header");
        // Quoted names with the delimiter and a newline inside.
        check(
            &types,
            b"\"id\",\"full\nname\",\"score, avg\"\n1,Ada,2.5\n",
            b',',
        )
        .expect("a header");
    }

    #[test]
    fn a_name_repeated_among_its_column_values_is_data() {
        let types = schema(&[DataType::Utf8, DataType::Utf8]);
        let csv = b"Ada,London\nGrace,New York\nAlan,London\n";
        let error = check(&types, csv, b',').expect_err("London is a value");
        assert!(error.to_string().contains("\"London\""), "{error}");
        // Text columns whose names are not among their values: a header.
        check(&types, b"name,city\nAda,London\nGrace,Paris", b',').expect("a header");
    }

    #[test]
    fn a_single_line_file_is_judged_by_its_types() {
        // Nothing after the first line: the types are Null, nothing to say.
        check(&schema(&[DataType::Null]), b"1", b',').expect("no evidence");
        check(
            &schema(&[DataType::Utf8, DataType::Int64]),
            b"a;1\nb;2",
            b';',
        )
        .expect_err("data, with another delimiter");
    }
}
