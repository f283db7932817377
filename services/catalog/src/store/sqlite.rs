//! The SQLite backend: the embedded default, one file under --data-dir.
//!
//! WAL mode lets readers run while a commit writes; write transactions
//! start with `BEGIN IMMEDIATE`, so concurrent commits queue on SQLite's
//! write lock (up to the busy timeout) instead of failing when a read
//! snapshot cannot be upgraded.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Transaction};

use super::{CatalogStore, StoreOptions};
use crate::error::{Error, Result};
use crate::model::{
    Commit, DataFile, Dataset, DatasetName, LineageEvent, ListQuery, NewDataset, View,
};
use crate::redact::redact_secrets;

// The same SQL, compiled against this backend's concrete types (see the
// `store` module docs for why this beats generic sqlx code).
#[allow(clippy::duplicate_mod)]
#[path = "sql.rs"]
mod sql;

type Db = sqlx::Sqlite;

/// How long a writer waits for another writer's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Manifests in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: Pool<Db>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, with its
    /// folder, and applies migrations.
    pub async fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        if let Some(folder) = path.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(|source| Error::CreateFolder {
                    path: folder.to_owned(),
                    source,
                })?;
        }
        Self::with_options(SqliteConnectOptions::new().filename(path), options).await
    }

    /// Opens a `sqlite://` URL and applies migrations.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
            url: redact_secrets(url),
            reason: e.to_string(),
        })?;
        Self::with_options(connect, options).await
    }

    async fn with_options(connect: SqliteConnectOptions, options: &StoreOptions) -> Result<Self> {
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(Error::db("open the SQLite catalog"))?;
        MIGRATOR.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Self { pool })
    }
}

async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

async fn begin_read(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    // A deferred transaction reads one WAL snapshot throughout.
    pool.begin().await
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn create(&self, dataset: NewDataset) -> Result<Dataset> {
        sql::create(&self.pool, &dataset).await
    }

    async fn get(&self, name: &DatasetName, view: View) -> Result<Dataset> {
        sql::get(&self.pool, name, view).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Dataset>> {
        sql::list(&self.pool, query).await
    }

    async fn delete(&self, name: &DatasetName, expected_version: Option<u64>) -> Result<Dataset> {
        sql::delete(&self.pool, name, expected_version).await
    }

    async fn commit(&self, commit: Commit) -> Result<Dataset> {
        sql::commit(&self.pool, &commit).await
    }

    async fn find_commit(&self, request_id: &str) -> Result<Option<(String, Dataset)>> {
        sql::find_commit(&self.pool, request_id).await
    }

    async fn list_files(
        &self,
        name: &DatasetName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<DataFile>)> {
        sql::list_files(&self.pool, name, after, limit).await
    }

    async fn list_lineage(
        &self,
        name: &DatasetName,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<(i64, LineageEvent)>)> {
        sql::list_lineage(&self.pool, name, before, limit).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
