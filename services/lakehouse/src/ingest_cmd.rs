//! `lakehouse ingest postgres | file`: bring data in from the shell. Both
//! show progress on stderr (a bar on a terminal, lines otherwise) and print
//! the finished ingest on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lakehouse_proto::ingest::v1 as pb;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::cmd::{
    CliError, IngestTarget, Output, Progress, Result, bytes_text, check, print, time_text,
};

/// Bytes per upload message: large enough to keep the stream efficient,
/// small enough to stay far below the server's message size limit.
const CHUNK_BYTES: usize = 1 << 20;

/// How often plain-text progress prints while a file uploads.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// `lakehouse ingest …`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub target: IngestTarget,
    #[command(subcommand)]
    pub command: IngestCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IngestCommand {
    /// Copy a PostgreSQL table or query into a dataset (Parquet parts in
    /// storage, registered in the catalog in one commit).
    Postgres(Box<PostgresArgs>),
    /// Upload a CSV, NDJSON or Parquet file into a dataset; the format comes
    /// from the extension (.csv, .ndjson, .jsonl, .parquet) unless --format.
    File(FileArgs),
}

/// How an ingest changes the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The dataset must not exist yet (exit 4 if it does).
    Create,
    /// Add the new files to the dataset (schemas must match).
    Append,
    /// The new files replace the dataset's files.
    Replace,
}

impl Mode {
    fn proto(self) -> pb::IngestMode {
        match self {
            Mode::Create => pb::IngestMode::Create,
            Mode::Append => pb::IngestMode::Append,
            Mode::Replace => pb::IngestMode::Replace,
        }
    }
}

/// Format of an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma (or --delimiter) separated values.
    Csv,
    /// One JSON object per line (.ndjson, .jsonl).
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format a file name implies, if any.
    fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    fn proto(self) -> pb::FileFormat {
        match self {
            Format::Csv => pb::FileFormat::Csv,
            Format::Ndjson => pb::FileFormat::Ndjson,
            Format::Parquet => pb::FileFormat::Parquet,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["table", "query"])))]
pub struct PostgresArgs {
    /// Target dataset.
    #[arg(long)]
    pub dataset: String,
    /// Source database, postgres://user@host:port/db or key=value form.
    /// Prefer the environment variable and --password-secret: a password in
    /// a flag is visible in process listings.
    #[arg(long, env = "LAKEHOUSE_INGEST_SOURCE_DSN", hide_env_values = true)]
    pub dsn: String,
    /// Name of the server-side secret holding the source password.
    #[arg(long, default_value = "")]
    pub password_secret: String,
    /// Table to read (with --schema, --columns, --filter).
    #[arg(long)]
    pub table: Option<String>,
    /// Schema of --table; empty uses the search path.
    #[arg(long, default_value = "", requires = "table")]
    pub schema: String,
    /// Columns of --table to read, comma-separated; empty reads all.
    #[arg(long, value_delimiter = ',', requires = "table")]
    pub columns: Vec<String>,
    /// Row filter of --table: an SQL boolean expression without WHERE.
    #[arg(long, default_value = "", requires = "table")]
    pub filter: String,
    /// A read-only SELECT to read instead of a table.
    #[arg(long)]
    pub query: Option<String>,
    /// How the dataset changes.
    #[arg(long, value_enum, default_value = "create")]
    pub mode: Mode,
    /// Connections reading in parallel (tables only).
    #[arg(long, default_value_t = 0)]
    pub parallelism: u32,
    /// Integer column whose range the parallel readers split.
    #[arg(long, default_value = "")]
    pub split_column: String,
    /// Rows per Parquet row group (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub row_group_rows: u64,
    /// Bucket for the parts; empty uses the dataset's bucket (or the
    /// default for a new dataset).
    #[arg(long, default_value = "")]
    pub bucket: String,
    /// Idempotency key: running the command again with the same id returns
    /// the ingest it started instead of ingesting twice.
    #[arg(long, default_value = "")]
    pub request_id: String,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The file to upload.
    pub path: PathBuf,
    /// Target dataset.
    #[arg(long)]
    pub dataset: String,
    /// Format, when the extension does not tell it.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// How the dataset changes.
    #[arg(long, value_enum, default_value = "create")]
    pub mode: Mode,
    /// CSV: the first line is data, not column names.
    #[arg(long)]
    pub no_header: bool,
    /// CSV: field delimiter, one ASCII character (default `,`; `\t` for tabs).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Bucket for the parts; empty uses the dataset's bucket (or the
    /// default for a new dataset).
    #[arg(long, default_value = "")]
    pub bucket: String,
    /// Idempotency key: running the command again with the same id returns
    /// the ingest it started instead of ingesting twice.
    #[arg(long, default_value = "")]
    pub request_id: String,
}

pub async fn run(args: IngestArgs) -> Result<ExitCode> {
    let out = args.target.output;
    match args.command {
        IngestCommand::Postgres(postgres) => {
            let ingest = ingest_postgres(&args.target, *postgres).await?;
            finish(out, &ingest)
        }
        IngestCommand::File(file) => {
            let ingest = ingest_file(&args.target, file).await?;
            finish(out, &ingest)
        }
    }
}

/// Prints the finished ingest; one that did not succeed is a failure.
fn finish(out: Output, ingest: &pb::Ingest) -> Result<ExitCode> {
    if ingest.state() != pb::IngestState::Succeeded {
        return Err(CliError::IngestFailed {
            state: ingest
                .state()
                .as_str_name()
                .trim_start_matches("INGEST_STATE_")
                .to_owned(),
            error: ingest.error.clone(),
        }
        .into());
    }
    print(out, &ingest_json(ingest), || {
        format!(
            "{}\t{} rows\t{} parts\t{}\tversion {}\tingest {}",
            ingest.dataset,
            ingest.rows,
            ingest.parts,
            bytes_text(ingest.bytes),
            ingest.dataset_version,
            ingest.ingest_id
        )
    });
    Ok(ExitCode::SUCCESS)
}

async fn ingest_postgres(target: &IngestTarget, args: PostgresArgs) -> Result<pb::Ingest> {
    let PostgresArgs {
        dataset,
        dsn,
        password_secret,
        table,
        schema,
        columns,
        filter,
        query,
        mode,
        parallelism,
        split_column,
        row_group_rows,
        bucket,
        request_id,
    } = args;
    use pb::ingest_postgres_request::Source;
    let source = match (table, query) {
        (Some(table), None) => Source::Table(pb::TableSource {
            schema,
            table,
            columns,
            filter,
        }),
        (None, Some(query)) => Source::Query(query),
        _ => {
            return Err(CliError::BadArgument {
                what: "give exactly one of --table and --query",
            }
            .into());
        }
    };
    let mut client = lakehouse_client::ingest(target.channel().await?);
    let mut stream = client
        .ingest_postgres(pb::IngestPostgresRequest {
            dataset,
            dsn,
            password_secret,
            source: Some(source),
            mode: mode.proto() as i32,
            parallelism,
            split_column,
            row_group_rows,
            bucket,
            request_id,
        })
        .await?
        .into_inner();
    let progress = Progress::new();
    let mut finished = None;
    while let Some(message) = stream.message().await? {
        use pb::ingest_postgres_response::Event;
        match message.event {
            Some(Event::Progress(p)) => progress.count(
                p.rows,
                format!(
                    "{} {} rows, {} in {} parts ({:.1} s)",
                    p.phase().as_str_name().trim_start_matches("INGEST_PHASE_"),
                    p.rows,
                    bytes_text(p.bytes_written),
                    p.parts_written,
                    p.elapsed_ms as f64 / 1e3
                ),
            ),
            Some(Event::Started(started)) => progress.note(format!(
                "ingest {}{} into {}",
                started.ingest_id,
                if started.replayed {
                    " (already started by this request id)"
                } else {
                    ""
                },
                started.dataset
            )),
            Some(Event::Finished(done)) => {
                progress.finish();
                // A failed or cancelled ingest exits with its status's code.
                check(done.status)?;
                finished = done.ingest;
            }
            None => {}
        }
    }
    progress.finish();
    Ok(finished.ok_or(CliError::NoResult {
        call: "IngestPostgres",
    })?)
}

async fn ingest_file(target: &IngestTarget, args: FileArgs) -> Result<pb::Ingest> {
    let FileArgs {
        path,
        dataset,
        format,
        mode,
        no_header,
        delimiter,
        bucket,
        request_id,
    } = args;
    let format = match format.or_else(|| Format::from_path(&path)) {
        Some(format) => format,
        None => return Err(CliError::UnknownFormat { path }.into()),
    };
    let delimiter = match delimiter.as_deref() {
        None => String::new(),
        Some("\\t") => "\t".to_owned(),
        Some(d) if d.len() == 1 && d.is_ascii() => d.to_owned(),
        Some(_) => {
            return Err(CliError::BadArgument {
                what: "--delimiter must be one ASCII character",
            }
            .into());
        }
    };
    let read_error = |source| CliError::ReadFile {
        path: path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&path).await.map_err(read_error)?;
    let size = file.metadata().await.map_err(read_error)?.len();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let header = pb::IngestFileHeader {
        dataset,
        file_name,
        format: format.proto() as i32,
        csv: (format == Format::Csv).then(|| pb::CsvOptions {
            has_header: !no_header,
            delimiter,
            ..Default::default()
        }),
        mode: mode.proto() as i32,
        bucket,
        request_id,
    };

    // The upload is a stream that reads the file as the server takes it and
    // ends with the commit (size and CRC32C of what was sent). A read error
    // must not end the stream, so it then waits forever and the call is
    // dropped, which resets it; the server commits nothing without the
    // commit message either way.
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(0u64);
    let (fail_tx, mut fail_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let first = pb::IngestFileRequest {
        part: Some(pb::ingest_file_request::Part::Header(header)),
    };
    let chunks = futures::stream::unfold(
        (Some(file), 0u64, 0u32, Some(fail_tx)),
        move |(file, sent, crc, mut fail)| {
            let sent_tx = sent_tx.clone();
            async move {
                let mut file = file?;
                let mut buffer = vec![0u8; CHUNK_BYTES];
                match file.read(&mut buffer).await {
                    Ok(0) => {
                        let commit = pb::IngestFileRequest {
                            part: Some(pb::ingest_file_request::Part::Commit(
                                pb::IngestFileCommit {
                                    size_bytes: sent,
                                    crc32c: crc,
                                },
                            )),
                        };
                        Some((commit, (None, sent, crc, fail)))
                    }
                    Ok(n) => {
                        buffer.truncate(n);
                        let sent = sent + n as u64;
                        let crc = crc32c::crc32c_append(crc, &buffer);
                        sent_tx.send_replace(sent);
                        let message = pb::IngestFileRequest {
                            part: Some(pb::ingest_file_request::Part::Chunk(buffer.into())),
                        };
                        Some((message, (Some(file), sent, crc, fail)))
                    }
                    Err(error) => {
                        if let Some(fail) = fail.take() {
                            let _ = fail.send(error);
                        }
                        futures::future::pending().await
                    }
                }
            }
        },
    );
    let body = futures::StreamExt::chain(futures::stream::iter([first]), chunks);

    let mut client = lakehouse_client::ingest(target.channel().await?);
    let call = client.ingest_file(body);
    tokio::pin!(call);
    let progress = Progress::new();
    let mut last_line = Instant::now();
    let (mut watching, mut failing) = (true, true);
    let response = loop {
        tokio::select! {
            response = &mut call => break response?,
            changed = sent_rx.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let sent = *sent_rx.borrow_and_update();
                let done = sent >= size;
                // Plain lines are throttled: one per chunk would flood a log.
                if progress.is_bar() || done || last_line.elapsed() >= PLAIN_EVERY {
                    last_line = Instant::now();
                    let message = if done {
                        format!("uploaded {}, waiting for the commit", bytes_text(sent))
                    } else {
                        format!("uploading {} of {}", bytes_text(sent), bytes_text(size))
                    };
                    progress.step(sent, size, message);
                }
            }
            failed = &mut fail_rx, if failing => {
                failing = false;
                if let Ok(source) = failed {
                    return Err(CliError::ReadFile { path, source }.into());
                }
            }
        }
    };
    progress.finish();
    Ok(response
        .into_inner()
        .ingest
        .ok_or(CliError::NoResult { call: "IngestFile" })?)
}

fn ingest_json(i: &pb::Ingest) -> Value {
    json!({
        "ingest_id": i.ingest_id, "dataset": i.dataset, "state": i.state().as_str_name(),
        "source": i.source, "rows": i.rows, "bytes": i.bytes, "parts": i.parts,
        "dataset_version": i.dataset_version, "error": i.error,
        "start_time": time_text(i.start_time.as_ref()),
        "finish_time": time_text(i.finish_time.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_format() {
        let format = |name: &str| Format::from_path(Path::new(name));
        assert_eq!(format("people.csv"), Some(Format::Csv));
        assert_eq!(format("dir/People.CSV"), Some(Format::Csv));
        assert_eq!(format("events.ndjson"), Some(Format::Ndjson));
        assert_eq!(format("events.jsonl"), Some(Format::Ndjson));
        assert_eq!(format("emb.parquet"), Some(Format::Parquet));
        assert_eq!(format("notes.txt"), None);
        assert_eq!(format("README"), None);
    }
}
