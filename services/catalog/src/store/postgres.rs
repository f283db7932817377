//! The PostgreSQL backend, for deployments that share a database server
//! (docker-compose). Reads run in REPEATABLE READ transactions, so a
//! manifest and its files come from one snapshot; writes run in READ
//! COMMITTED, where the version compare-and-swap orders concurrent commits.

use std::str::FromStr as _;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
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

type Db = sqlx::Postgres;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Manifests in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: Pool<Db>,
}

impl PostgresStore {
    /// Connects to a `postgres://` URL and applies migrations. With
    /// `options.pg_schema`, tables live in that (existing) schema.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
            url: redact_secrets(url),
            reason: redact_secrets(&e.to_string()),
        })?;
        if let Some(schema) = &options.pg_schema {
            connect = connect.options([("search_path", schema.as_str())]);
        }
        if let Some(password) = &options.password {
            // Two sources of one password would leave which one wins to
            // sqlx; refuse instead (redaction changes a URL only when it
            // carries a password).
            if redact_secrets(url) != url {
                return Err(Error::InvalidUrl {
                    url: redact_secrets(url),
                    reason: "give the password either in the URL or by --catalog-password-secret, not both".to_owned(),
                });
            }
            connect = connect.password(password.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(Error::db("connect to the PostgreSQL catalog"))?;
        MIGRATOR.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Self { pool })
    }
}

async fn begin_write(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}

async fn begin_read(pool: &Pool<Db>) -> Result<Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
}

#[async_trait]
impl CatalogStore for PostgresStore {
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
