//! Command-line interface. Every flag has a `LAKEHOUSE_*` environment
//! fallback; precedence is flag > environment > default.

use std::time::Duration;

use lakehouse_shared::config::{
    AuthConfig, ClientTlsFiles, DataDirConfig, PeersConfig, SecretsConfig, ServerConfig,
    ServerTlsFiles, TelemetryConfig,
};

/// Lakehouse: a self-hosted lakehouse for one owner and their LLM agents.
#[derive(Debug, clap::Parser)]
#[command(name = "lakehouse", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, and for `serve` also notes which peer
    /// addresses came from environment variables rather than flags: `serve
    /// all` ignores those ([`ServeArgs::peers_from_env`]), which clap's
    /// derived `parse` cannot tell apart.
    pub fn parse_args() -> Self {
        use clap::parser::ValueSource;
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches)
            .map_err(|error| error.format(&mut Self::command()))
            .unwrap_or_else(|error| error.exit());
        if let Command::Serve(args) = &mut cli.command
            && let Some(serve) = matches.subcommand_matches("serve")
        {
            let from_env = |id| serve.value_source(id) == Some(ValueSource::EnvVariable);
            args.peers_from_env = PeersFromEnv {
                storage: from_env("storage_addr"),
                catalog: from_env("catalog_addr"),
            };
        }
        cli
    }
}

/// Which peer addresses of `serve` came from `LAKEHOUSE_STORAGE_ADDR` /
/// `LAKEHOUSE_CATALOG_ADDR` rather than `--storage-addr` / `--catalog-addr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeersFromEnv {
    /// The storage address is the variable's.
    pub storage: bool,
    /// The catalog address is the variable's.
    pub catalog: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run one service, or all four on one address (`all`).
    Serve(Box<ServeArgs>),
    /// Ask a server for its gRPC health; exit 0 only when it is SERVING.
    Health(HealthArgs),
    /// List the storage buckets (`buckets health` probes them).
    Buckets(crate::storage_cmd::BucketsArgs),
    /// Objects in a bucket: ls, put, get, rm.
    Objects(crate::storage_cmd::ObjectsArgs),
    /// The error journal of failed storage calls: ls.
    Errors(crate::storage_cmd::ErrorsArgs),
    /// Catalog datasets: ls, show (schema, rows, lineage), resync, rm.
    Datasets(crate::datasets_cmd::DatasetsArgs),
    /// Bring data in: a PostgreSQL table or query, or a CSV/NDJSON/Parquet
    /// file.
    Ingest(crate::ingest_cmd::IngestArgs),
    /// Older spelling of `buckets`, `objects` and `errors` (ls, put, get,
    /// rm, buckets, health, errors), kept for scripts.
    Storage(crate::storage_cmd::StorageArgs),
    /// Show the audit journal: write, trials and admin calls by token name.
    Audit(crate::audit_cmd::AuditArgs),
    /// Vector indexes: create, ls, show, rebuild, cancel, update,
    /// generations, promote, rollback, rm, repair.
    Index(crate::index_cmd::IndexArgs),
    /// Find the nearest neighbours of a vector (JSON array, or stdin).
    Search(crate::search_cmd::SearchArgs),
    /// Eval sets (queries with exact ground truth): create, ls.
    Eval(crate::vector_cmd::EvalArgs),
    /// Trials: run (build + measure), ls, best, cancel.
    Trial(crate::trial_cmd::TrialArgs),
    /// Auto-tune an index's parameters toward a recall target.
    Tune(crate::tune_cmd::TuneArgs),
}

/// Which service(s) a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The storage service (default port 50051).
    Storage,
    /// The catalog service (default port 50052).
    Catalog,
    /// The ingest service (default port 50053).
    Ingest,
    /// The vector service (default port 50054).
    Vector,
    /// All four in one process on one address (default port 50051), on the
    /// embedded defaults: a local bucket and SQLite under --data-dir.
    All,
}

impl Role {
    pub fn default_port(self) -> u16 {
        match self {
            Role::Storage | Role::All => 50051,
            Role::Catalog => 50052,
            Role::Ingest => 50053,
            Role::Vector => 50054,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Storage => "storage",
            Role::Catalog => "catalog",
            Role::Ingest => "ingest",
            Role::Vector => "vector",
            Role::All => "all",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The service(s) to run.
    #[arg(value_enum, env = "LAKEHOUSE_ROLE")]
    pub role: Role,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerConfig,

    #[command(flatten, next_help_heading = "TLS")]
    pub tls: ServerTlsFiles,

    #[command(flatten, next_help_heading = "Telemetry")]
    pub telemetry: TelemetryConfig,

    #[command(flatten, next_help_heading = "Embedded data")]
    pub data: DataDirConfig,

    #[command(flatten, next_help_heading = "Peers")]
    pub peers: PeersConfig,

    /// Which of `peers` came from the environment: the same variables tell
    /// the CLI where its services are (the README's compose section has
    /// users export them), so in `serve all`, whose services are this
    /// process, only the flags count. Filled by [`Cli::parse_args`].
    #[arg(skip)]
    pub peers_from_env: PeersFromEnv,

    /// What this process trusts and presents when it calls its peers.
    #[command(flatten, next_help_heading = "Peers TLS")]
    pub peer_tls: ClientTlsFiles,

    #[command(flatten, next_help_heading = "Secrets")]
    pub secrets: SecretsConfig,

    #[command(flatten, next_help_heading = "Authentication")]
    pub auth: AuthConfig,

    #[command(flatten, next_help_heading = "Storage")]
    pub storage: lakehouse_storage::StorageConfig,

    #[command(flatten, next_help_heading = "Catalog")]
    pub catalog: lakehouse_catalog::CatalogConfig,

    #[command(flatten, next_help_heading = "Catalog")]
    pub catalog_password: lakehouse_catalog::CatalogPasswordConfig,

    #[command(flatten, next_help_heading = "Ingest")]
    pub ingest: lakehouse_ingest::IngestConfig,

    #[command(flatten, next_help_heading = "Vector")]
    pub vector: lakehouse_vector::VectorConfig,
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Server address: host:port, a port alone (on 127.0.0.1),
    /// http://host:port or https://host:port. Any role's address works:
    /// every server answers health.
    #[arg(long, env = "LAKEHOUSE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,

    /// Service to ask about, such as lakehouse.storage.v1.StorageService;
    /// empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,

    /// How long to wait for an answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// `table` for people (`server: SERVING`), `json` for scripts and
    /// agents (`{"service":"","status":"SERVING"}`).
    #[arg(long, value_enum, default_value = "table")]
    pub output: crate::cmd::Output,

    #[command(flatten)]
    pub tls: ClientTlsFiles,
}

impl Command {
    /// The client TLS settings of a client command (`serve` has its own).
    fn client_tls(&self) -> Option<&ClientTlsFiles> {
        match self {
            Command::Serve(_) => None,
            Command::Health(args) => Some(&args.tls),
            Command::Buckets(args) => Some(&args.target.auth.tls),
            Command::Objects(args) => Some(&args.target.auth.tls),
            Command::Errors(args) => Some(&args.target.auth.tls),
            Command::Datasets(args) => Some(&args.target.auth.tls),
            Command::Ingest(args) => Some(&args.target.auth.tls),
            Command::Storage(args) => Some(&args.target.auth.tls),
            Command::Audit(args) => Some(&args.auth.tls),
            Command::Index(args) => Some(&args.target.auth.tls),
            Command::Search(args) => Some(&args.target.auth.tls),
            Command::Eval(args) => Some(&args.target.auth.tls),
            Command::Trial(args) => Some(&args.target.auth.tls),
            Command::Tune(args) => Some(&args.target.auth.tls),
        }
    }
}

/// Loads a client command's TLS files (CA, client certificate) and makes
/// every channel of this process use them; once, before any is made.
pub fn apply_client_tls(command: &Command) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(files) = command.client_tls()
        && let Some(tls) = lakehouse_shared::tls::client_tls(files)?
    {
        lakehouse_client::set_client_tls(tls)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Clap's own consistency checks (unique argument ids across the
    /// flattened service configs, valid defaults), which otherwise only
    /// fire when the binary starts.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
