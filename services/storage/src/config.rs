//! Storage configuration: flags, and the buckets file.
//!
//! ```toml
//! default_bucket = "lake"
//!
//! [buckets.lake]
//! backend = "s3"
//! endpoint = "http://minio:9000"
//! bucket = "lakehouse"
//! region = "us-east-1"
//! credentials = "minio"        # secrets minio.access_key_id / minio.secret_access_key
//! rescue_bucket = "rescue"
//!
//! [buckets.rescue]
//! backend = "local"
//! path = "/var/lib/lakehouse/rescue"
//! ```
//!
//! Credentials are never in this file: `credentials` names a secret prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// Storage flags, flattened into `lakehouse serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageConfig {
    /// Buckets file (TOML). Unset: one local bucket `default` under --data-dir.
    #[arg(long, env = "LAKEHOUSE_BUCKETS_CONFIG")]
    pub buckets_config: Option<PathBuf>,

    /// How often buffered error-journal entries are written out.
    #[arg(long, env = "LAKEHOUSE_JOURNAL_FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub journal_flush_interval: Duration,

    /// Default timeout of one bucket reachability probe.
    #[arg(long, env = "LAKEHOUSE_PROBE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,

    /// How often leftovers of interrupted uploads (local `#n` temp files,
    /// staged multipart uploads) are swept; 0 turns the sweep off.
    #[arg(long = "storage-sweep-interval", env = "LAKEHOUSE_STORAGE_SWEEP_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub leftover_sweep_interval: Duration,

    /// How long a leftover must go unwritten before the sweep removes it (an
    /// upload in progress keeps writing, so it is never taken).
    #[arg(long = "storage-leftover-grace", env = "LAKEHOUSE_STORAGE_LEFTOVER_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub leftover_grace: Duration,
}

impl Default for StorageConfig {
    /// The flags' defaults (for embedding and tests).
    fn default() -> Self {
        Self {
            buckets_config: None,
            journal_flush_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            leftover_sweep_interval: Duration::from_secs(3600),
            leftover_grace: Duration::from_secs(3600),
        }
    }
}

/// The buckets file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawBucketsFile")]
pub struct BucketsFile {
    /// The bucket used when a request names none.
    pub default_bucket: String,
    /// Buckets by name.
    pub buckets: BTreeMap<String, BucketConfig>,
}

/// One bucket.
#[derive(Debug, Clone)]
pub struct BucketConfig {
    /// Where its objects live.
    pub backend: BackendConfig,
    /// The bucket that serves reads when this one fails.
    pub rescue_bucket: Option<String>,
}

/// A bucket's backend.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// A folder; created if missing.
    Local {
        /// The folder.
        path: PathBuf,
    },
    /// An S3-compatible server.
    S3 {
        /// Endpoint URL, such as http://minio:9000; unset uses AWS.
        endpoint: Option<String>,
        /// Region; MinIO accepts any.
        region: String,
        /// The bucket on the server.
        bucket: String,
        /// Path-style addressing (MinIO needs it).
        path_style: bool,
        /// Secret prefix: `<credentials>.access_key_id` and
        /// `<credentials>.secret_access_key` are looked up in the secrets
        /// provider. Unset: anonymous.
        credentials: Option<String>,
        /// How long to wait for a TCP connection.
        connect_timeout: Duration,
        /// Retries of a failed request before giving up.
        max_retries: usize,
    },
    /// Process memory, lost on restart.
    Memory,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucketsFile {
    default_bucket: String,
    buckets: BTreeMap<String, RawBucket>,
}

/// One flat table per bucket, so unknown keys (an inline
/// `secret_access_key`, a typo) are refused rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    backend: BackendKind,
    rescue_bucket: Option<String>,
    path: Option<PathBuf>,
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    path_style: Option<bool>,
    credentials: Option<String>,
    connect_timeout: Option<String>,
    max_retries: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendKind {
    Local,
    S3,
    Memory,
}

impl TryFrom<RawBucketsFile> for BucketsFile {
    type Error = String;

    fn try_from(raw: RawBucketsFile) -> std::result::Result<Self, String> {
        let mut buckets = BTreeMap::new();
        for (name, b) in raw.buckets {
            let only = |allowed: &[&str]| -> std::result::Result<(), String> {
                let given = [
                    ("path", b.path.is_some()),
                    ("endpoint", b.endpoint.is_some()),
                    ("region", b.region.is_some()),
                    ("bucket", b.bucket.is_some()),
                    ("path_style", b.path_style.is_some()),
                    ("credentials", b.credentials.is_some()),
                    ("connect_timeout", b.connect_timeout.is_some()),
                    ("max_retries", b.max_retries.is_some()),
                ];
                match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
                    Some((key, _)) => Err(format!(
                        "bucket `{name}`: `{key}` does not apply to backend `{:?}`",
                        b.backend
                    )),
                    None => Ok(()),
                }
            };
            let backend = match b.backend {
                BackendKind::Local => {
                    only(&["path"])?;
                    let path = b
                        .path
                        .clone()
                        .ok_or_else(|| format!("bucket `{name}`: local backend needs `path`"))?;
                    BackendConfig::Local { path }
                }
                BackendKind::Memory => {
                    only(&[])?;
                    BackendConfig::Memory
                }
                BackendKind::S3 => {
                    let connect_timeout = match &b.connect_timeout {
                            Some(text) => humantime::parse_duration(text).map_err(|_| {
                                format!(
                                    "bucket `{name}`: connect_timeout is not a duration such as `3s` or `500ms`"
                                )
                            })?,
                            None => Duration::from_secs(3),
                        };
                    BackendConfig::S3 {
                        endpoint: b.endpoint.clone(),
                        region: b.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
                        bucket: b
                            .bucket
                            .clone()
                            .ok_or_else(|| format!("bucket `{name}`: s3 backend needs `bucket`"))?,
                        path_style: b.path_style.unwrap_or(true),
                        credentials: b.credentials.clone(),
                        connect_timeout,
                        max_retries: b.max_retries.unwrap_or(2),
                    }
                }
            };
            buckets.insert(
                name,
                BucketConfig {
                    backend,
                    rescue_bucket: b.rescue_bucket,
                },
            );
        }
        let file = Self {
            default_bucket: raw.default_bucket,
            buckets,
        };
        file.validate()?;
        Ok(file)
    }
}

impl BucketsFile {
    /// Reads and validates a buckets file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| Error::InvalidConfig {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates buckets-file text.
    ///
    /// The error names the line and column and what is wrong, but never
    /// quotes the file: toml's own rendering prints the offending line, and a
    /// secret pasted into the file by mistake (an inline
    /// `secret_access_key = "..."`) would end up in the start-up output and
    /// the logs. Values inside the message (serde's `invalid type: string
    /// "..."`, an unknown backend name) are hidden for the same reason.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|error| describe_toml_error(&error, text))
    }

    /// The embedded default: one local bucket under the data folder.
    pub fn embedded(data_dir: &Path) -> Self {
        let mut buckets = BTreeMap::new();
        buckets.insert(
            "default".to_owned(),
            BucketConfig {
                backend: BackendConfig::Local {
                    path: data_dir.join("buckets").join("default"),
                },
                rescue_bucket: None,
            },
        );
        Self {
            default_bucket: "default".to_owned(),
            buckets,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !self.buckets.contains_key(&self.default_bucket) {
            return Err(format!(
                "default_bucket `{}` is not among the buckets ({})",
                self.default_bucket,
                self.names()
            ));
        }
        for (name, bucket) in &self.buckets {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(format!(
                    "bucket name `{name}` may only hold letters, digits, '-', '_' and '.'"
                ));
            }
            if let Some(rescue) = &bucket.rescue_bucket {
                if rescue == name {
                    return Err(format!("bucket `{name}` cannot be its own rescue bucket"));
                }
                if !self.buckets.contains_key(rescue) {
                    return Err(format!(
                        "bucket `{name}` names rescue bucket `{rescue}`, which is not among the buckets ({})",
                        self.names()
                    ));
                }
            }
        }
        Ok(())
    }

    fn names(&self) -> String {
        self.buckets.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A toml error as "line L, column C: message", without any of the file's
/// text (see [`BucketsFile::parse`]).
fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = hide_values(error.message().trim());
    let message = message.replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map_or(1, |current| current.chars().count() + 1);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Replaces what a deserializer quoted from the file — `"..."` strings and
/// the name after "unknown variant" — with a placeholder. Field names and
/// the expected alternatives (in backticks) stay: they are ours, not the
/// file's values.
fn hide_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(['"', '`']) {
        out.push_str(&rest[..at]);
        let quote = &rest[at..=at];
        let after = &rest[at + 1..];
        let (inner, next) = match after.find(quote) {
            Some(end) => (&after[..end], &after[end + 1..]),
            None => (after, ""),
        };
        if quote == "`" && !out.ends_with("variant ") {
            out.push('`');
            out.push_str(inner);
            out.push('`');
        } else {
            out.push_str(quote);
            out.push_str("(value hidden)");
            out.push_str(quote);
        }
        rest = next;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend() {
        let file = BucketsFile::parse(
            r#"
            default_bucket = "lake"
            [buckets.lake]
            backend = "s3"
            endpoint = "http://127.0.0.1:9000"
            bucket = "lakehouse"
            credentials = "minio"
            rescue_bucket = "rescue"
            connect_timeout = "500ms"
            [buckets.rescue]
            backend = "local"
            path = "/tmp/rescue"
            [buckets.scratch]
            backend = "memory"
            "#,
        )
        .expect("valid");
        assert_eq!(file.buckets.len(), 3);
        match &file.buckets["lake"].backend {
            BackendConfig::S3 {
                path_style,
                connect_timeout,
                region,
                ..
            } => {
                assert!(*path_style);
                assert_eq!(*connect_timeout, Duration::from_millis(500));
                assert_eq!(region, "us-east-1");
            }
            other => panic!("expected s3, got {other:?}"),
        }
    }

    #[test]
    fn refuses_credentials_in_the_file() {
        let error = BucketsFile::parse(
            r#"
            default_bucket = "lake"
            [buckets.lake]
            backend = "s3"
            bucket = "b"
            secret_access_key = "hunter2"
            "#,
        )
        .expect_err("inline secrets are not a field");
        assert!(error.contains("secret_access_key"), "{error}");
        assert!(error.contains("line 6"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    /// Issue 11, item 10: a secret pasted into the file must not be echoed
    /// by the error that a syntax error elsewhere, or on its own line, causes.
    #[test]
    fn parse_errors_do_not_echo_the_file() {
        let secret = "sekrit-value";
        let cases = [
            // A syntax error on another line (an unclosed table header).
            (
                format!(
                    "default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"{secret}\"\n[buckets.rescue\n"
                ),
                6,
            ),
            // A syntax error on the secret's own line (no closing quote).
            (
                format!(
                    "default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"s3\"\nsecret_access_key = \"{secret}\n"
                ),
                4,
            ),
            // The secret pasted as the value of a known field.
            (
                format!(
                    "default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"s3\"\nbucket = \"b\"\nmax_retries = \"{secret}\"\n"
                ),
                5,
            ),
            (
                format!("default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"{secret}\"\n"),
                3,
            ),
            (
                format!(
                    "default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"s3\"\nbucket = \"b\"\nconnect_timeout = \"{secret}\"\n"
                ),
                0,
            ),
        ];
        for (text, line) in cases {
            let error = BucketsFile::parse(&text).expect_err("invalid");
            assert!(!error.contains(secret), "echoes the secret: {error}");
            if line > 0 {
                assert!(error.contains(&format!("line {line},")), "{error}");
            }
            assert!(error.len() > 20, "says what is wrong: {error}");
        }
        // Through load (the start-up path), the whole error text.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("buckets.toml");
        std::fs::write(&path, cases_first(secret)).expect("write");
        let error = BucketsFile::load(&path).expect_err("invalid").to_string();
        assert!(!error.contains(secret), "{error}");
        assert!(error.contains("line 5"), "{error}");
    }

    fn cases_first(secret: &str) -> String {
        format!(
            "default_bucket = \"lake\"\n[buckets.lake]\nbackend = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"{secret}\" x\n"
        )
    }

    #[test]
    fn refuses_unknown_rescue_and_default() {
        let error =
            BucketsFile::parse("default_bucket = \"nope\"\n[buckets.a]\nbackend = \"memory\"\n")
                .expect_err("unknown default");
        assert!(error.contains("nope") && error.contains("a"), "{error}");
        let error = BucketsFile::parse(
            "default_bucket = \"a\"\n[buckets.a]\nbackend = \"memory\"\nrescue_bucket = \"b\"\n",
        )
        .expect_err("unknown rescue");
        assert!(error.contains("`b`"), "{error}");
    }
}
