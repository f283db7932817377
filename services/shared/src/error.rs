use std::path::PathBuf;

/// Errors of the shared building blocks. Each variant is one cause, carrying
/// its source so the message can say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secrets file may be read by other users.
    #[error(
        "secrets file {path} has mode {mode:o}, readable by group or others; run `chmod 600 {path}`",
        path = path.display()
    )]
    InsecureSecretsFile {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The secrets file could not be read.
    #[error("cannot read secrets file {path}: {source}", path = path.display())]
    ReadSecretsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The secrets file is not valid TOML of string values.
    #[error("secrets file {path} is not valid: {message}", path = path.display())]
    ParseSecretsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a secret value: values are not echoed).
        message: String,
    },

    /// A secret was asked for that no provider has.
    #[error("secret {name:?} not found in {provider}")]
    SecretNotFound {
        /// The secret's name.
        name: String,
        /// Which provider was asked, for the fix.
        provider: String,
    },

    /// A `token.<name>` secret is malformed. The message names the secret
    /// and the problem, never the value.
    #[error("secret {secret}: {problem}")]
    InvalidTokenSecret {
        /// The secret's name, such as `token.agent`.
        secret: String,
        /// What is wrong with it.
        problem: String,
    },

    /// No token is configured, yet the server would listen where other
    /// hosts can reach it.
    #[error(
        "refusing to serve on {listen} without authentication: anyone who reaches it could read, \
         write and delete everything. Add tokens (secrets named token.<name>, value \
         `<scopes>:<token>`), listen on 127.0.0.1, or pass --insecure (LAKEHOUSE_INSECURE=true) \
         to serve unauthenticated anyway"
    )]
    UnauthenticatedExposure {
        /// The listen address.
        listen: std::net::SocketAddr,
    },

    /// Authentication is on but this process, which calls its peers, has no
    /// token to present to them.
    #[error(
        "tokens are configured but there is no service token: add a secret named \
         token.service (value `admin:<token>`, the same in every process of the deployment) \
         so the services can call each other"
    )]
    ServiceTokenMissing,

    /// Setting up tracing or the OTLP exporter failed.
    #[error("telemetry setup failed: {0}")]
    Telemetry(String),

    /// Building reflection from the descriptor sets failed.
    #[error("server reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),

    /// A TLS certificate, key or CA file could not be read. The message
    /// names the file, never its contents (a key is a secret).
    #[error("cannot read the TLS {what} file {path}: {source}", path = path.display())]
    ReadTlsFile {
        /// Which file: certificate, key, client CA, ….
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A TLS file holds no PEM block.
    #[error("the TLS {what} file {path} is not PEM (expected -----BEGIN …-----)", path = path.display())]
    NotPem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// Only part of a TLS setting was given.
    #[error("incomplete TLS settings: {problem}")]
    TlsIncomplete {
        /// Which flags go together.
        problem: &'static str,
    },

    /// The certificate, key or CA could not be used (not matching, not a
    /// supported key type, …).
    #[error("invalid server TLS settings: {0}")]
    ServerTls(tonic::transport::Error),

    /// The gRPC server failed while serving.
    #[error("grpc server failed: {0}")]
    Serve(#[from] tonic::transport::Error),

    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },

    /// Another process holds the lock of a folder this server would own
    /// (see [`crate::folder_lock`]).
    #[error(
        "folder {folder} is in use by another lakehouse server ({holder}), which holds {lock_file} for {what}; \
         stop that server, or give this one another folder (--data-dir)",
        folder = folder.display(),
        lock_file = lock_file.display(),
        holder = pid.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    FolderInUse {
        /// The folder.
        folder: PathBuf,
        /// What this server keeps there, such as "the local bucket".
        what: String,
        /// The holder's pid, when it has written it.
        pid: Option<u32>,
        /// The lock file.
        lock_file: PathBuf,
    },

    /// A folder's lock file could not be created, read or written.
    #[error("cannot lock {lock_file}: {source}", lock_file = lock_file.display())]
    LockFolder {
        /// The lock file.
        lock_file: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The listener's own address could not be read.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(std::io::Error),

    /// An append log could not read or write its objects.
    #[error("append log {prefix}: {source}")]
    AppendLogStore {
        /// The log's prefix.
        prefix: String,
        /// The object store error.
        source: object_store::Error,
    },

    /// An append log object holds a line that is not a valid record.
    #[error("append log object {key} line {line}: {source}")]
    AppendLogCorrupt {
        /// The object.
        key: String,
        /// 1-based line number.
        line: usize,
        /// The decode error.
        source: serde_json::Error,
    },

    /// A record could not be encoded.
    #[error("append log record cannot be encoded: {0}")]
    AppendLogEncode(serde_json::Error),
}

/// Result with the shared [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
