//! Catalog flags, flattened into `lakehouse serve`. Precedence: flag >
//! environment variable > default.

use std::time::Duration;

use crate::redact::redact_secrets;
use crate::store::StoreOptions;

/// Catalog settings.
#[derive(Clone, clap::Args)]
pub struct CatalogConfig {
    /// Where manifests are stored: postgres://user:password@host:5432/db
    /// (or sqlite:///path/catalog.sqlite). Unset: the embedded SQLite file
    /// <data-dir>/catalog.sqlite. The password is never logged.
    #[arg(long, env = "LAKEHOUSE_CATALOG_URL", hide_env_values = true)]
    pub catalog_url: Option<String>,

    /// Most connections the catalog opens to its database.
    #[arg(long, env = "LAKEHOUSE_CATALOG_MAX_CONNECTIONS", default_value_t = 8)]
    pub catalog_max_connections: u32,

    /// How long a catalog call waits for a free database connection before
    /// failing with UNAVAILABLE.
    #[arg(long, env = "LAKEHOUSE_CATALOG_ACQUIRE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub catalog_acquire_timeout: Duration,

    /// Parquet footers a resync reads at once (each is one or two ranged
    /// reads through storage).
    #[arg(
        long,
        env = "LAKEHOUSE_CATALOG_RESYNC_CONCURRENCY",
        default_value_t = 16
    )]
    pub catalog_resync_concurrency: usize,
}

impl CatalogConfig {
    /// The pool settings these flags give.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.catalog_max_connections,
            acquire_timeout: self.catalog_acquire_timeout,
            pg_schema: None,
            password: None,
        }
    }
}

/// Where the catalog's PostgreSQL password comes from. Its own block (not
/// a field of [`CatalogConfig`]) because resolving it needs the process's
/// secrets provider, which `lakehouse serve` owns.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogPasswordConfig {
    /// Name of the secret holding the PostgreSQL catalog's password (such
    /// as `catalog.password`, looked up in the secrets provider), for a
    /// --catalog-url without one: a password in an environment URL shows
    /// in `docker inspect` and process listings.
    #[arg(long, env = "LAKEHOUSE_CATALOG_PASSWORD_SECRET")]
    pub catalog_password_secret: Option<String>,
}

/// Written by hand so the URL's password never reaches a log.
impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConfig")
            .field(
                "catalog_url",
                &self.catalog_url.as_deref().map(redact_secrets),
            )
            .field("catalog_max_connections", &self.catalog_max_connections)
            .field("catalog_acquire_timeout", &self.catalog_acquire_timeout)
            .field(
                "catalog_resync_concurrency",
                &self.catalog_resync_concurrency,
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let config = CatalogConfig {
            catalog_url: Some("postgres://u:hunter2@h/db".to_owned()),
            catalog_max_connections: 8,
            catalog_acquire_timeout: Duration::from_secs(10),
            catalog_resync_concurrency: 16,
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && text.contains("u:***@h"),
            "{text}"
        );
    }
}
