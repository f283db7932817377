//! IngestFile: CSV, NDJSON and Parquet uploads into a dataset, through the
//! same pipeline (parts, one commit, cleanup) as PostgreSQL ingests.
//!
//! CSV and NDJSON stream: the first chunks are held only until the schema
//! is known (inferred over `infer_sample_rows` lines, or given), then arrow's
//! push decoders turn chunks into batches as they arrive, so memory does not
//! grow with the file. Parquet's footer comes last, so an uploaded Parquet
//! file is spooled to a temporary file (bounded by
//! `--ingest-max-upload-bytes`) and re-encoded into our parts, which also
//! validates it and gives it our compression and row groups.

use std::io::{Seek as _, Write as _};
use std::str::FromStr as _;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::{Buf as _, Bytes, BytesMut};
use chrono::Utc;
use futures::{Stream, StreamExt as _};
use lakehouse_proto::catalog::v1 as catalog;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::pipeline::{self, Committed, Context, LineageInfo, Target};
use crate::registry::Progress;

/// Rows sampled for schema inference unless the request says otherwise.
pub const DEFAULT_INFER_ROWS: usize = 1000;
/// Most bytes held while sampling for inference.
const MAX_SAMPLE_BYTES: usize = 64 << 20;

/// Upload formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    /// Delimited text.
    Csv(CsvSettings),
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

/// How to read a CSV upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSettings {
    /// The first line names the columns.
    pub has_header: bool,
    /// Field delimiter.
    pub delimiter: u8,
    /// Lines sampled to infer the schema.
    pub infer_rows: usize,
    /// Declared columns: name, Arrow type text, nullable.
    pub columns: Vec<(String, String, bool)>,
}

/// A validated IngestFile header.
#[derive(Debug, Clone)]
pub struct FileRequest {
    /// Where to write.
    pub target: Target,
    /// File name for lineage.
    pub file_name: String,
    /// Format.
    pub format: FileFormat,
}

/// File ingest settings.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Rows per batch.
    pub batch_rows: usize,
    /// Largest spooled Parquet upload.
    pub max_upload_bytes: u64,
}

/// Runs a file ingest to its commit.
pub async fn run<S>(
    ctx: &Context,
    request: FileRequest,
    mut chunks: S,
    options: FileOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Committed>
where
    S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
{
    let start_time = Utc::now();
    let lineage = LineageInfo {
        kind: catalog::SourceKind::File,
        source: request.file_name.clone(),
        query: String::new(),
        snapshot_time: None,
        start_time,
    };
    match request.format {
        FileFormat::Csv(settings) => {
            let sample = sample(&mut chunks, settings.infer_rows, cancel).await?;
            let schema = csv_schema(&settings, &sample)?;
            if settings.has_header && settings.columns.is_empty() {
                crate::csv_header::check(&schema, complete_lines(&sample), settings.delimiter)?;
            }
            let decoder = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_header(settings.has_header)
                .with_delimiter(settings.delimiter)
                .with_batch_size(options.batch_rows)
                .build_decoder();
            let text = TextInput {
                decoder: TextDecoder::Csv(Box::new(decoder)),
                sample,
                schema,
            };
            run_text(
                ctx,
                &request.target,
                text,
                chunks,
                lineage,
                progress,
                cancel,
            )
            .await
        }
        FileFormat::Ndjson => {
            let sample = sample(&mut chunks, DEFAULT_INFER_ROWS, cancel).await?;
            let schema = ndjson_schema(&sample)?;
            let decoder = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(options.batch_rows)
                .build_decoder()
                .map_err(|e| file_error("ndjson", &e))?;
            let text = TextInput {
                decoder: TextDecoder::Json(decoder),
                sample,
                schema,
            };
            run_text(
                ctx,
                &request.target,
                text,
                chunks,
                lineage,
                progress,
                cancel,
            )
            .await
        }
        FileFormat::Parquet => {
            let file = spool(&mut chunks, options.max_upload_bytes, cancel).await?;
            let (file, schema) = tokio::task::spawn_blocking(move || parquet_schema(file))
                .await
                .map_err(|e| Error::TaskFailed {
                    task: "parquet reader",
                    reason: e.to_string(),
                })??;
            let (expected, target) = pipeline::preflight(ctx, &request.target).await?;
            let batch_rows = options.batch_rows;
            let progress_for_reader = progress.clone();
            let reader_cancel = cancel.clone();
            let produce = move |sender: mpsc::Sender<RecordBatch>| async move {
                tokio::task::spawn_blocking(move || {
                    read_parquet(
                        file,
                        batch_rows,
                        &sender,
                        &progress_for_reader,
                        &reader_cancel,
                    )
                })
                .await
                .map_err(|e| Error::TaskFailed {
                    task: "parquet reader",
                    reason: e.to_string(),
                })?
            };
            pipeline::run(
                ctx,
                &target,
                expected,
                schema,
                lineage,
                progress.clone(),
                cancel,
                produce,
            )
            .await
        }
    }
}

fn file_error(format: &'static str, error: &ArrowError) -> Error {
    let mut message = match error {
        ArrowError::ParseError(m) | ArrowError::CsvError(m) | ArrowError::JsonError(m) => m.clone(),
        other => other.to_string(),
    };
    if format == "csv" {
        message = csv_line_numbers(&message);
    }
    if message.len() > 500 {
        let mut end = 500;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    Error::File { format, message }
}

/// Lines are counted two ways: arrow-csv's value errors ("Error while
/// parsing value … at line N") count from zero over the file's lines
/// (header included); record-shape errors ("for line N" from arrow-csv, "at
/// line N" from the csv crate during inference) count from one. Lead with
/// the file's one-based line either way.
fn csv_line_numbers(message: &str) -> String {
    let rewrite = |message: &str, marker: &str, add: usize| -> Option<String> {
        let at = message.find(marker)? + marker.len();
        let digits: String = message[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let line: usize = digits.parse().ok()?;
        Some(
            format!(
                "line {}: {}{}{}",
                line + add,
                &message[..at - marker.len()],
                marker,
                &message[at..]
            )
            .replacen(
                &format!("{marker}{digits}"),
                &format!("{marker}{}", line + add),
                1,
            ),
        )
    };
    let zero_based =
        message.contains("Error while parsing value") || message.contains("Error parsing column");
    rewrite(message, "at line ", usize::from(zero_based))
        .or_else(|| rewrite(message, "for line ", 0))
        .unwrap_or_else(|| message.to_owned())
}

/// Reads chunks until `rows` full lines (plus a header line) are held, or
/// the stream ends.
async fn sample<S>(chunks: &mut S, rows: usize, cancel: &CancellationToken) -> Result<BytesMut>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let mut buffer = BytesMut::new();
    let mut lines = 0;
    while lines <= rows && buffer.len() < MAX_SAMPLE_BYTES {
        let chunk = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            break;
        };
        let chunk = chunk?;
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer)
}

/// The sample up to its last complete line (all of it at the end of input).
fn complete_lines(sample: &[u8]) -> &[u8] {
    match sample.iter().rposition(|b| *b == b'\n') {
        Some(end) => &sample[..=end],
        None => sample,
    }
}

fn csv_schema(settings: &CsvSettings, sample: &[u8]) -> Result<SchemaRef> {
    if !settings.columns.is_empty() {
        let fields = settings
            .columns
            .iter()
            .map(|(name, data_type, nullable)| {
                let data_type = DataType::from_str(data_type).map_err(|_| {
                    Error::InvalidRequest(format!(
                        "column {name:?}: {data_type:?} is not an Arrow data type such as Int64, Utf8, Float64, Date32 or Decimal128(10, 2)"
                    ))
                })?;
                Ok(Field::new(name, data_type, *nullable))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Arc::new(Schema::new(fields)));
    }
    if sample.is_empty() {
        return Err(Error::File {
            format: "csv",
            message: "the upload is empty; nothing to infer columns from".to_owned(),
        });
    }
    let format = arrow::csv::reader::Format::default()
        .with_header(settings.has_header)
        .with_delimiter(settings.delimiter);
    let (schema, _) = format
        .infer_schema(
            std::io::Cursor::new(complete_lines(sample)),
            Some(settings.infer_rows),
        )
        .map_err(|e| file_error("csv", &e))?;
    Ok(Arc::new(schema))
}

fn ndjson_schema(sample: &[u8]) -> Result<SchemaRef> {
    if sample.is_empty() {
        return Err(Error::File {
            format: "ndjson",
            message: "the upload is empty; nothing to infer columns from".to_owned(),
        });
    }
    let (schema, _) = arrow::json::reader::infer_json_schema(
        std::io::BufReader::new(std::io::Cursor::new(complete_lines(sample))),
        Some(DEFAULT_INFER_ROWS),
    )
    .map_err(|e| file_error("ndjson", &e))?;
    if schema.fields().is_empty() {
        return Err(Error::File {
            format: "ndjson",
            message: "no fields found in the sampled objects".to_owned(),
        });
    }
    Ok(Arc::new(schema))
}

enum TextDecoder {
    Csv(Box<arrow::csv::reader::Decoder>),
    Json(arrow::json::reader::Decoder),
}

impl TextDecoder {
    fn name(&self) -> &'static str {
        match self {
            TextDecoder::Csv(_) => "csv",
            TextDecoder::Json(_) => "ndjson",
        }
    }

    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        match self {
            TextDecoder::Csv(d) => d.decode(buf),
            TextDecoder::Json(d) => d.decode(buf),
        }
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self {
            TextDecoder::Csv(d) => d.flush(),
            TextDecoder::Json(d) => d.flush(),
        }
    }

    fn full(&self) -> bool {
        match self {
            TextDecoder::Csv(d) => d.capacity() == 0,
            TextDecoder::Json(_) => false,
        }
    }
}

/// Feeds the sample, then the rest of the stream, through a push decoder.
/// A text upload ready to decode: the decoder, the bytes already read to
/// infer the schema, and that schema.
struct TextInput {
    decoder: TextDecoder,
    sample: BytesMut,
    schema: SchemaRef,
}

/// CSV and NDJSON share everything after the decoder is built.
async fn run_text<S>(
    ctx: &Context,
    target: &Target,
    text: TextInput,
    chunks: S,
    lineage: LineageInfo,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Committed>
where
    S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
{
    let TextInput {
        decoder,
        sample,
        schema,
    } = text;
    let (expected, target) = pipeline::preflight(ctx, target).await?;
    let reader_progress = progress.clone();
    let reader_cancel = cancel.clone();
    let produce = move |sender| {
        stream_decode(
            decoder,
            sample,
            chunks,
            sender,
            reader_progress,
            reader_cancel,
        )
    };
    pipeline::run(
        ctx, &target, expected, schema, lineage, progress, cancel, produce,
    )
    .await
}

async fn stream_decode<S>(
    mut decoder: TextDecoder,
    sample: BytesMut,
    mut chunks: S,
    sender: mpsc::Sender<RecordBatch>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<u64>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let format = decoder.name();
    let mut rows = 0u64;
    // Newlines consumed, to place NDJSON errors (arrow-json has no line numbers).
    let mut lines = 0usize;
    let mut pending: Bytes = sample.freeze();
    loop {
        if pending.is_empty() {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                chunk = chunks.next() => chunk,
            };
            match chunk {
                Some(chunk) => {
                    pending = chunk?;
                    continue;
                }
                None => {
                    // The end of input completes a last line without a newline.
                    decoder
                        .decode(&[])
                        .map_err(|e| located(format, &e, lines))?;
                    if let Some(batch) = decoder.flush().map_err(|e| located(format, &e, lines))? {
                        rows += send(batch, &sender, &progress, &cancel).await?;
                    }
                    return Ok(rows);
                }
            }
        }
        let consumed = decoder
            .decode(&pending)
            .map_err(|e| located(format, &e, lines))?;
        lines += pending[..consumed].iter().filter(|b| **b == b'\n').count();
        pending.advance(consumed);
        if !pending.is_empty() || decoder.full() {
            // The decoder holds a full batch.
            match decoder.flush().map_err(|e| located(format, &e, lines))? {
                Some(batch) => rows += send(batch, &sender, &progress, &cancel).await?,
                None if consumed == 0 => {
                    return Err(Error::DecoderStalled { format });
                }
                None => {}
            }
        }
    }
}

async fn send(
    batch: RecordBatch,
    sender: &mpsc::Sender<RecordBatch>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<u64> {
    let n = batch.num_rows() as u64;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::Cancelled),
        sent = sender.send(batch) => sent.map_err(|_| Error::EncoderStopped)?,
    }
    progress.add_rows(n);
    Ok(n)
}

fn located(format: &'static str, error: &ArrowError, lines: usize) -> Error {
    let error = file_error(format, error);
    match (format, error) {
        ("ndjson", Error::File { format, message }) => Error::File {
            format,
            message: format!("near line {}: {message}", lines + 1),
        },
        (_, error) => error,
    }
}

/// Writes the upload to a temporary file.
async fn spool<S>(chunks: &mut S, limit: u64, cancel: &CancellationToken) -> Result<std::fs::File>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    let file = tempfile::tempfile().map_err(|source| Error::Spool {
        action: "created",
        source,
    })?;
    let mut file = tokio::fs::File::from_std(file);
    let mut size = 0u64;
    loop {
        let chunk = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            break;
        };
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(Error::UploadTooLarge {
                what: "a Parquet upload",
                limit,
            });
        }
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|source| Error::Spool {
                action: "written",
                source,
            })?;
    }
    let mut file = file.into_std().await;
    file.flush()
        .and_then(|()| file.rewind())
        .map_err(|source| Error::Spool {
            action: "rewound",
            source,
        })?;
    Ok(file)
}

fn parquet_schema(file: std::fs::File) -> Result<(std::fs::File, SchemaRef)> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        file.try_clone().map_err(|source| Error::Spool {
            action: "reopened",
            source,
        })?,
    )
    .map_err(|e| Error::File {
        format: "parquet",
        message: format!("not a readable Parquet file: {e}"),
    })?;
    // Schema-level metadata of the upload (pandas, Spark) is not ours to keep.
    let schema = Arc::new(Schema::new(builder.schema().fields().clone()));
    Ok((file, schema))
}

fn read_parquet(
    file: std::fs::File,
    batch_rows: usize,
    sender: &mpsc::Sender<RecordBatch>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<u64> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(batch_rows).build())
        .map_err(|e| Error::File {
            format: "parquet",
            message: format!("not a readable Parquet file: {e}"),
        })?;
    let mut rows = 0;
    for batch in reader {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let batch = batch.map_err(|e| Error::File {
            format: "parquet",
            message: format!("cannot decode the Parquet file: {e}"),
        })?;
        // Drop schema-level metadata to match the committed schema.
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(batch.schema().fields().clone())),
            batch.columns().to_vec(),
        )
        .map_err(Error::Arrow)?;
        let n = batch.num_rows() as u64;
        sender
            .blocking_send(batch)
            .map_err(|_| Error::EncoderStopped)?;
        rows += n;
        progress.add_rows(n);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_line_numbers_become_one_based_file_lines() {
        assert_eq!(
            csv_line_numbers(
                "Error while parsing value 'x' as type 'Int64' for column 0 at line 3. Row data: '[x]'"
            ),
            "line 4: Error while parsing value 'x' as type 'Int64' for column 0 at line 4. Row data: '[x]'"
        );
        assert_eq!(
            csv_line_numbers(
                "Encountered unequal lengths between records on CSV file. Expected 2 records, found 3 records at line 3"
            ),
            "line 3: Encountered unequal lengths between records on CSV file. Expected 2 records, found 3 records at line 3"
        );
        assert_eq!(
            csv_line_numbers("incorrect number of fields for line 5, expected 2 got 3"),
            "line 5: incorrect number of fields for line 5, expected 2 got 3"
        );
    }

    #[test]
    fn declared_csv_columns_parse_arrow_type_names() {
        let settings = CsvSettings {
            has_header: true,
            delimiter: b',',
            infer_rows: 10,
            columns: vec![
                ("id".to_owned(), "Int64".to_owned(), false),
                ("amount".to_owned(), "Decimal128(10, 2)".to_owned(), true),
            ],
        };
        let schema = csv_schema(&settings, b"").expect("valid");
        assert_eq!(schema.field(1).data_type(), &DataType::Decimal128(10, 2));
        let bad = CsvSettings {
            columns: vec![("x".to_owned(), "Integer".to_owned(), true)],
            ..settings
        };
        assert!(csv_schema(&bad, b"").is_err());
    }
}
