//! What every client command shares: where to connect (`--addr`, token, TLS),
//! how results are printed (`--output table|json`), how failures become exit
//! codes, and how long work shows progress.
//!
//! Exit codes (the table is docs/cli.md's, relied on by scripts): 0 done;
//! 1 failed (the data refused, or our fault); 2 usage (clap, arguments the
//! command itself rejects, or the server's INVALID_ARGUMENT about them);
//! 3 not found; 4 conflict or precondition (exists, version or state);
//! 5 unavailable (no server answered, or it said so: retry later);
//! 6 refused (authentication or scope).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tonic::Code;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Failures the CLI finds itself, before or after talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The file's extension names no format we read.
    #[error(
        "cannot tell the format of {path} from its extension: name it .csv, .ndjson, .jsonl or .parquet, or pass --format"
    )]
    UnknownFormat { path: PathBuf },
    /// A local file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A local file could not be created or written.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An argument the parser accepted but the command cannot use.
    #[error("{what}")]
    BadArgument { what: &'static str },
    /// A metric name that is not one of the three.
    #[error("unknown metric {name:?}: cosine, l2 or dot")]
    UnknownMetric { name: String },
    /// A `--where` filter the CLI cannot read.
    #[error(transparent)]
    BadWhere(#[from] crate::where_clause::WhereError),
    /// The query vector was not a JSON array of numbers.
    #[error("the vector must be a JSON array of numbers: {source}")]
    BadVector { source: serde_json::Error },
    /// The ingest ran and did not succeed.
    #[error("ingest {state}: {error}")]
    IngestFailed { state: String, error: String },
    /// A cancel found nothing running to stop.
    #[error("{what}")]
    NothingRunning { what: String },
    /// A server stream ended without its final message.
    #[error("the server ended the {call} stream without a result")]
    NoResult { call: &'static str },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::UnknownFormat { .. }
            | CliError::BadArgument { .. }
            | CliError::UnknownMetric { .. }
            | CliError::BadWhere(_)
            | CliError::BadVector { .. } => 2,
            // Wrong state, as the server's FAILED_PRECONDITION for a
            // generation that is not building.
            CliError::NothingRunning { .. } => 4,
            CliError::ReadFile { source, .. } | CliError::WriteFile { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                3
            }
            CliError::ReadFile { .. }
            | CliError::WriteFile { .. }
            | CliError::IngestFailed { .. }
            | CliError::NoResult { .. } => 1,
        }
    }
}

/// Maps a failed command to the documented exit codes (docs/cli.md, "Exit
/// codes"), printing why on stderr as `error: <code> [<REASON>]: <message>`
/// (the reason is the server's google.rpc.ErrorInfo reason, when it sent
/// one).
pub fn exit_for(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    if let Some(cli) = error.downcast_ref::<CliError>() {
        eprintln!("error: {cli}");
        return ExitCode::from(cli.exit_code());
    }
    // No server answered (refused, unknown host, TLS handshake): the
    // class scripts retry on, whatever wraps it.
    if let Some(unreachable) = chain(error).find(|e| {
        matches!(
            e.downcast_ref::<lakehouse_client::Error>(),
            Some(lakehouse_client::Error::Connect { .. })
        )
    }) {
        eprintln!("error: Unavailable [SERVER_UNREACHABLE]: {unreachable}");
        return ExitCode::from(UNAVAILABLE);
    }
    // A call whose connection broke under it: the status is the client
    // transport's own (it has a source; a server's answer never does),
    // and its text ("transport error", "h2 protocol error") names no
    // cause a person can act on. On a first call it almost always means
    // something other than a Lakehouse server listens at --addr.
    if let Some(status) = chain(error).find_map(|e| e.downcast_ref::<tonic::Status>())
        && std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            Code::Internal | Code::Unknown | Code::Cancelled
        )
    {
        let address = ADDRESS.get().map_or("the server", String::as_str);
        eprintln!(
            "error: Unavailable [CONNECTION_BROKEN]: the connection to {address} broke during the call ({}): \
             is --addr a Lakehouse server's address? An HTTP server, a database or another \
             program there answers like this",
            status.message()
        );
        return ExitCode::from(UNAVAILABLE);
    }
    // The server's status, also when object_store (GrpcObjectStore, under
    // `objects`) carries it as the source of its own error: its code,
    // reason and message are the standard line, not object_store's text.
    let status = chain(error).find_map(|e| e.downcast_ref::<tonic::Status>());
    let reason = status.and_then(lakehouse_shared::status::error_reason);
    let code = status
        .map(tonic::Status::code)
        .or_else(|| error.downcast_ref::<object_store::Error>().map(store_code));
    match (status, code) {
        (Some(status), _) => {
            let shown = reason
                .as_deref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default();
            eprintln!("error: {:?}{shown}: {}", status.code(), status.message());
        }
        (None, Some(code)) => eprintln!("error: {code:?}: {error}"),
        (None, None) => eprintln!("error: {error}"),
    }
    ExitCode::from(code.map_or(FAILED, |code| exit_code(code, reason.as_deref())))
}

/// The gRPC code of an object_store error that no status explains (one the
/// adapter found itself, such as a key object_store refuses).
fn store_code(error: &object_store::Error) -> Code {
    match error {
        object_store::Error::NotFound { .. } => Code::NotFound,
        object_store::Error::AlreadyExists { .. } => Code::AlreadyExists,
        object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. } => {
            Code::FailedPrecondition
        }
        object_store::Error::PermissionDenied { .. } => Code::PermissionDenied,
        object_store::Error::Unauthenticated { .. } => Code::Unauthenticated,
        object_store::Error::InvalidPath { .. } => Code::InvalidArgument,
        object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
            Code::Unimplemented
        }
        _ => Code::Unknown,
    }
}

/// The address the command connected to, for errors that only the
/// connection explains.
pub static ADDRESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Exit 1: failed.
const FAILED: u8 = 1;
/// Exit 5: unavailable, retry later.
const UNAVAILABLE: u8 = 5;

/// INVALID_ARGUMENT reasons that refuse the data sent (a file that is not
/// what its name says, a value out of range, an upload that arrived
/// damaged), not the command: these fail (1) rather than being usage
/// errors (2), since the same command with other data would work.
const DATA_REFUSED: &[&str] = &[
    "BAD_FILE",
    "BAD_VALUE",
    "UPLOAD_INCOMPLETE",
    "UPLOAD_CORRUPT",
    "SIZE_MISMATCH",
];

/// The exit code of a gRPC failure, by its code and, for
/// INVALID_ARGUMENT, its reason: a name, key, vector or other argument
/// the server refuses is a usage error like one clap finds (2).
fn exit_code(code: Code, reason: Option<&str>) -> u8 {
    match code {
        Code::InvalidArgument if reason.is_some_and(|r| DATA_REFUSED.contains(&r)) => FAILED,
        Code::InvalidArgument | Code::OutOfRange => 2,
        Code::NotFound => 3,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 4,
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => UNAVAILABLE,
        Code::Unauthenticated | Code::PermissionDenied => 6,
        _ => FAILED,
    }
}

/// An error and its causes, outermost first.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// A terminal `google.rpc.Status` that is not OK, as an error.
pub fn check(status: Option<lakehouse_proto::google::rpc::Status>) -> Result<()> {
    match status {
        Some(s) if s.code != 0 => Err(Box::new(lakehouse_shared::status::from_rpc_status(&s))),
        _ => Ok(()),
    }
}

/// Result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people: aligned columns with a header on a terminal,
    /// tab-separated lines without one in a pipe.
    Table,
    /// For scripts and agents: one JSON document per line.
    Json,
}

/// Declares the connection flags of one service's commands. Each service has
/// its own address variable (so a split deployment sets all four once); the
/// default is `serve all`'s address.
macro_rules! target {
    ($name:ident, $env:literal, $doc:literal) => {
        #[doc = concat!("Where and how to talk to ", $doc, ".")]
        #[derive(Debug, clap::Args)]
        pub struct $name {
            /// The server address (the help text is built per service).
            // A `#[doc = concat!(…)]` here gives no help text at all: clap's
            // derive reads only literal doc comments, hence `help`.
            #[arg(
                        long,
                        env = $env,
                        default_value = "127.0.0.1:50051",
                        global = true,
                        help = concat!(
                            "Address of ", $doc, " (or of `serve all`): host:port, a port alone ",
                            "(on 127.0.0.1), http://host:port or https://host:port"
                        )
                    )]
            pub addr: String,

            /// `table` for people, `json` (one document per line) for
            /// scripts and agents.
            #[arg(long, value_enum, default_value = "table", global = true)]
            pub output: Output,

            #[command(flatten)]
            pub auth: crate::client_args::TokenArgs,
        }

        impl $name {
            /// A connected channel with the token attached to every call.
            pub async fn channel(&self) -> Result<lakehouse_client::TracedChannel> {
                let _ = crate::cmd::ADDRESS.set(self.addr.clone());
                Ok(lakehouse_client::connect_with(&self.addr, self.auth.token.as_ref()).await?)
            }
        }
    };
}

target!(
    StorageTarget,
    "LAKEHOUSE_STORAGE_ADDR",
    "the storage service"
);
target!(
    CatalogTarget,
    "LAKEHOUSE_CATALOG_ADDR",
    "the catalog service"
);
target!(IngestTarget, "LAKEHOUSE_INGEST_ADDR", "the ingest service");
target!(VectorTarget, "LAKEHOUSE_VECTOR_ADDR", "the vector service");

/// Prints one result: its JSON document, or the line people read.
pub fn print(output: Output, value: &Value, line: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{value}"),
        Output::Table => println!("{}", line()),
    }
}

/// Rows printed as a table (people) or as JSON lines (scripts). On a
/// terminal the columns are aligned under a header; in a pipe they are
/// tab-separated without one, so `cut -f` and `awk -F'\t'` keep working.
pub struct Table {
    output: Output,
    header: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(output: Output, header: &'static [&'static str]) -> Self {
        Self {
            output,
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row; in JSON mode prints `value` at once instead (so long
    /// listings stream).
    pub fn row(&mut self, value: &Value, cells: impl FnOnce() -> Vec<String>) {
        match self.output {
            Output::Json => println!("{value}"),
            Output::Table => self.rows.push(cells()),
        }
    }

    /// Prints the collected rows.
    pub fn finish(self) {
        if self.output == Output::Json {
            return;
        }
        if !std::io::stdout().is_terminal() {
            for row in &self.rows {
                println!("{}", row.join("\t"));
            }
            return;
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let width = widths.get(i).copied().unwrap_or(0);
                text.push_str(&format!("{cell:<width$}"));
            }
            println!("{}", text.trim_end());
        };
        line(&mut self.header.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
    }
}

/// RFC 3339 text of a protobuf timestamp; empty when unset.
pub fn time_text(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Progress of long work (ingest, index builds, trials, tuning) on stderr, so
/// stdout stays the result: a bar when stderr is a terminal, otherwise one
/// plain line per update (logs and agents read those).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// Whether a bar is drawn (stderr is a terminal).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// A step with a known size: the bar shows `done` of `total`.
    pub fn step(&self, done: u64, total: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(message);
            }
            None => eprintln!("{message}"),
        }
    }

    /// A step whose size is not known: the bar counts up with no end.
    pub fn count(&self, done: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(done.max(1));
                bar.set_position(done);
                bar.set_message(message);
            }
            None => eprintln!("{message}"),
        }
    }

    /// A line that stays (run started, one trial's result), above the bar.
    pub fn note(&self, message: String) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }
}

impl Progress {
    /// Runs `print` (a result on stdout) without the bar drawing over it.
    pub fn suspend(&self, print: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Clears the bar before the result is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The phase and numbers of a vector build step, as one line.
pub fn build_line(p: &lakehouse_proto::vector::v1::BuildProgress) -> String {
    format!(
        "{} {}/{} ({:.0}%, {:.1} s)",
        p.phase().as_str_name().trim_start_matches("BUILD_PHASE_"),
        p.done,
        p.total,
        p.percent,
        p.elapsed_ms as f64 / 1e3
    )
}

/// Shows a vector build step.
pub fn build_step(progress: &Progress, p: &lakehouse_proto::vector::v1::BuildProgress) {
    progress.step(p.done, p.total, build_line(p));
}

/// Bytes as people read them (KiB, MiB, …).
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 << 30), "3.0 GiB");
    }

    #[test]
    fn each_class_of_server_failure_has_its_exit_code() {
        assert_eq!(exit_code(Code::InvalidArgument, Some("INVALID_NAME")), 2);
        assert_eq!(
            exit_code(Code::InvalidArgument, Some("WRONG_DIMENSIONS")),
            2
        );
        assert_eq!(exit_code(Code::InvalidArgument, None), 2);
        assert_eq!(exit_code(Code::InvalidArgument, Some("BAD_FILE")), 1);
        assert_eq!(exit_code(Code::NotFound, Some("INDEX_NOT_FOUND")), 3);
        assert_eq!(exit_code(Code::AlreadyExists, Some("INDEX_EXISTS")), 4);
        assert_eq!(exit_code(Code::FailedPrecondition, Some("COLUMN_TYPE")), 4);
        assert_eq!(exit_code(Code::Unavailable, None), 5);
        assert_eq!(exit_code(Code::PermissionDenied, None), 6);
        assert_eq!(exit_code(Code::Internal, None), 1);
        assert_eq!(exit_code(Code::Unimplemented, None), 1);
    }

    #[test]
    fn usage_errors_exit_2_and_missing_files_3() {
        let usage = CliError::UnknownFormat {
            path: PathBuf::from("x.txt"),
        };
        assert_eq!(usage.exit_code(), 2);
        let missing = CliError::ReadFile {
            path: PathBuf::from("x.csv"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(missing.exit_code(), 3);
        let denied = CliError::ReadFile {
            path: PathBuf::from("x.csv"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.exit_code(), 1);
    }
}
