//! Where manifests live: the [`CatalogStore`] trait and its two sqlx
//! backends, SQLite (the embedded default) and PostgreSQL.
//!
//! Both backends run the same SQL from one source file (`sql.rs`), compiled
//! once per backend with that backend's concrete sqlx types (each backend
//! module declares `type Db` and includes `sql.rs` as a child module). This
//! keeps one copy of the queries without sqlx's generic-database bound soup;
//! the backends differ only in connecting, migrations (separate folders) and
//! how a write transaction starts.
//!
//! Concurrency: every change is a compare-and-swap on the dataset row's
//! `version` inside one transaction, so a stale writer changes nothing.

mod plan;
mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::error::{Error, Result};
use crate::model::{
    Commit, DataFile, Dataset, DatasetName, LineageEvent, ListQuery, NewDataset, View,
};
use crate::redact::redact_secrets;

/// The manifest store. Implementations are transactional: every method
/// either fully happens or changes nothing.
#[async_trait]
pub trait CatalogStore: std::fmt::Debug + Send + Sync + 'static {
    /// Registers a new dataset at version 1; `AlreadyExists` if the name is taken.
    async fn create(&self, dataset: NewDataset) -> Result<Dataset>;

    /// One dataset; `NotFound` if absent.
    async fn get(&self, name: &DatasetName, view: View) -> Result<Dataset>;

    /// One page of datasets sorted by name.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Dataset>>;

    /// Removes a dataset (checking `expected_version` when given) and
    /// returns its last manifest with files, so the caller can delete them.
    async fn delete(&self, name: &DatasetName, expected_version: Option<u64>) -> Result<Dataset>;

    /// Applies one versioned commit (see [`Commit`]) atomically and returns
    /// the dataset after it, with files. A commit with a `request_id` the
    /// store already applied is not applied again: it returns that first
    /// commit's result (`RequestIdReused` if the id was used for another
    /// dataset). The id is recorded in the commit's own transaction.
    async fn commit(&self, commit: Commit) -> Result<Dataset>;

    /// The result recorded for a commit's `request_id`, if any: the dataset
    /// name the id was used for and the dataset as that commit left it.
    async fn find_commit(&self, request_id: &str) -> Result<Option<(String, Dataset)>>;

    /// One page of a dataset's files sorted by key (keys after `after`, at
    /// most `limit`), with the dataset's version; `NotFound` if absent.
    async fn list_files(
        &self,
        name: &DatasetName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<DataFile>)>;

    /// One page of a dataset's lineage events, newest first (events older
    /// than the one numbered `before`, at most `limit`), each with its
    /// number, and the dataset's version; `NotFound` if absent. Numbers
    /// only grow, so they page without skipping or repeating.
    async fn list_lineage(
        &self,
        name: &DatasetName,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<(i64, LineageEvent)>)>;

    /// Closes the connections.
    async fn close(&self);
}

/// Connection pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most open connections.
    pub max_connections: u32,
    /// How long a call waits for a free connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema to create tables in (`search_path`),
    /// for sharing one database; `None` uses the server's default.
    pub pg_schema: Option<String>,
    /// PostgreSQL only: the password, from the secrets provider
    /// (`--catalog-password-secret`), so the URL holds none and no
    /// environment variable or process listing shows it.
    pub password: Option<lakehouse_shared::secrets::SecretString>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            pg_schema: None,
            password: None,
        }
    }
}

/// Opens the store a URL names (`postgres://`, `postgresql://` or
/// `sqlite://`), or with none the embedded SQLite file
/// `<data_dir>/catalog.sqlite`, and applies migrations.
pub async fn open(
    url: Option<&str>,
    data_dir: &Path,
    options: &StoreOptions,
) -> Result<Arc<dyn CatalogStore>> {
    match url {
        None => {
            let path = data_dir.join("catalog.sqlite");
            Ok(Arc::new(SqliteStore::open(&path, options).await?))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresStore::connect(url, options).await?))
        }
        Some(url) if url.starts_with("sqlite:") => {
            if options.password.is_some() {
                return Err(Error::InvalidUrl {
                    url: redact_secrets(url),
                    reason: "--catalog-password-secret is for a postgres:// catalog".to_owned(),
                });
            }
            Ok(Arc::new(SqliteStore::connect(url, options).await?))
        }
        Some(url) => Err(Error::InvalidUrl {
            url: redact_secrets(url),
            reason: "use postgres://..., postgresql://... or sqlite://...".to_owned(),
        }),
    }
}

/// How long a commit's request id is remembered (replayed on retry).
pub const REQUEST_ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Converts a count for a BIGINT column.
fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidRequest(format!("{what} {value} is too large")))
}
