//! Small `clap` blocks that the binary flattens per role. Every flag has an
//! environment fallback named `LAKEHOUSE_*` (the names docker-compose.yml
//! uses); precedence is flag > environment > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings every gRPC server shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on. Defaults per role: storage and all 0.0.0.0:50051,
    /// catalog :50052, ingest :50053, vector :50054.
    #[arg(long, env = "LAKEHOUSE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Longest a call may run before it is answered with CANCELLED; for
    /// streaming calls this bounds the request half (an upload) and the time
    /// to the first response message.
    #[arg(long, env = "LAKEHOUSE_REQUEST_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Calls served at once per client connection; further calls wait.
    #[arg(long, env = "LAKEHOUSE_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,

    /// Largest single gRPC message accepted or sent, in bytes. Object data
    /// is streamed in chunks well below this.
    #[arg(long, env = "LAKEHOUSE_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// How long shutdown waits for in-flight calls before dropping them.
    #[arg(long, env = "LAKEHOUSE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// The listen address, or the role's default.
    pub fn listen_or(&self, default_port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    }
}

/// The server's TLS files (ADR 0011). None given: plaintext, as before.
/// Read once at start; a renewed certificate takes a restart.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsFiles {
    /// Serve TLS with this certificate chain (PEM, leaf first). Needs
    /// --tls-key.
    #[arg(long, env = "LAKEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Keep
    /// it 0600; it is never logged.
    #[arg(long, env = "LAKEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: refuse clients that do not present a certificate signed
    /// by this CA (PEM). Needs --tls-cert.
    #[arg(long, env = "LAKEHOUSE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// What a client trusts and presents over TLS: the peer clients of
/// `lakehouse serve` and the CLI's client commands alike (ADR 0011). With
/// any of these set, a bare `host:port` address means `https://`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsFiles {
    /// Trust only this CA (PEM) for `https://` servers. Without it, the
    /// system's roots are used.
    #[arg(long, env = "LAKEHOUSE_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that require mutual TLS. Needs
    /// --tls-client-key.
    #[arg(
        long,
        env = "LAKEHOUSE_TLS_CLIENT_CERT",
        global = true,
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); never logged.
    #[arg(
        long,
        env = "LAKEHOUSE_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging and tracing settings.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` EnvFilter syntax, such as `info` or
    /// `info,lakehouse_storage=debug`.
    #[arg(long, env = "LAKEHOUSE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log line format.
    #[arg(long, env = "LAKEHOUSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint for trace export, such as http://otel-collector:4317.
    /// Unset: spans are not exported (trace context is still propagated).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Where this process keeps its files in the embedded deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirConfig {
    /// Folder for the embedded defaults: the `default` local bucket and the
    /// SQLite catalog.
    #[arg(long, env = "LAKEHOUSE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Addresses of the other services, for roles that call them.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersConfig {
    /// Storage service address. In `serve all` it defaults to this process,
    /// and only the flag changes that: the variable, which also tells the
    /// CLI where the service is, is ignored there (with a warning).
    #[arg(long, env = "LAKEHOUSE_STORAGE_ADDR")]
    pub storage_addr: Option<String>,

    /// Catalog service address. In `serve all` it defaults to this process,
    /// and only the flag changes that: the variable, which also tells the
    /// CLI where the service is, is ignored there (with a warning).
    #[arg(long, env = "LAKEHOUSE_CATALOG_ADDR")]
    pub catalog_addr: Option<String>,
}

/// Where secrets come from.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsConfig {
    /// Which provider resolves secret names.
    #[arg(long, env = "LAKEHOUSE_SECRETS_PROVIDER", value_enum, default_value_t = SecretsProviderKind::File)]
    pub secrets_provider: SecretsProviderKind,

    /// The secrets file of the `file` provider; it must be mode 0600.
    #[arg(
        long,
        env = "LAKEHOUSE_SECRETS_FILE",
        default_value = "/etc/lakehouse/secrets.toml"
    )]
    pub secrets_file: PathBuf,
}

/// Authentication settings. The tokens themselves are secrets (`token.<name>`
/// in the secrets provider, see `lakehouse_shared::auth`), never flags: flags
/// show up in process listings and shell history.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Serve without authentication even on an address other hosts can
    /// reach. Without it, a server with no `token.*` secret refuses to listen
    /// anywhere but loopback.
    #[arg(long, env = "LAKEHOUSE_INSECURE")]
    pub insecure: bool,

    /// Require a token (any with the `read` scope) for server reflection
    /// too. Off by default: reflection describes the API, not the data, and
    /// lets `grpcurl list` work without credentials. Health never needs one.
    #[arg(long, env = "LAKEHOUSE_REFLECTION_REQUIRES_TOKEN")]
    pub reflection_requires_token: bool,

    /// How often the audit journal (write, trials and admin calls, with
    /// authentication on) is written out to storage.
    #[arg(long, env = "LAKEHOUSE_AUDIT_FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub audit_flush_interval: Duration,
}

/// The secrets providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretsProviderKind {
    /// A TOML file of `name = "value"` (tables nest names with dots).
    File,
    /// Environment variables `LAKEHOUSE_SECRET_<NAME>`.
    Env,
}

/// Parses sizes such as `1048576`, `64KiB`, `16MiB`, `4GiB` (also KB/MB/GB
/// as powers of 1000).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 16MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("{text:?} is not a size such as 16MiB")),
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}
