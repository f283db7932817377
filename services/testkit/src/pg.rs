//! PostgreSQL for tests: the server named by `LAKEHOUSE_TEST_PG_URL`
//! (`.ci/run` starts one and sets it), skipped loudly when absent, a
//! failure under `LAKEHOUSE_TEST_REQUIRE_ALL=1`.

use std::time::Duration;

use sqlx::{Connection as _, Executor as _};

use crate::skip_or_fail;

/// How long the gate waits for the server before it skips: an address that
/// drops packets must not hang the test for the OS's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The test PostgreSQL URL, if it is set and the server answers; else
/// skips `test` (or fails it, under `LAKEHOUSE_TEST_REQUIRE_ALL=1`).
pub async fn pg_url(test: &str) -> Option<String> {
    let Ok(url) = std::env::var("LAKEHOUSE_TEST_PG_URL") else {
        skip_or_fail(
            test,
            "LAKEHOUSE_TEST_PG_URL is not set (e.g. postgres://postgres:postgres@127.0.0.1:5432/postgres)",
        );
        return None;
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Some(url)
        }
        Ok(Err(error)) => {
            skip_or_fail(
                test,
                &format!("PostgreSQL at LAKEHOUSE_TEST_PG_URL is unreachable: {error}"),
            );
            None
        }
        Err(_) => {
            skip_or_fail(
                test,
                &format!(
                    "PostgreSQL at LAKEHOUSE_TEST_PG_URL did not answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            );
            None
        }
    }
}

/// Runs SQL (several statements allowed) on the test database; panics
/// with the statement when it fails, as a test step should.
pub async fn pg_exec(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|error| panic!("connect to the test PostgreSQL: {error}"));
    conn.execute(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    let _ = conn.close().await;
}

/// A unique lowercase name (`prefix_` and ten hex digits), for a table,
/// schema or dataset of one test: tests share one server and run at once.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}
