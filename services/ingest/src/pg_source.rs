//! Reading a PostgreSQL source: connections, the snapshot, and streaming
//! binary COPY into record batches.
//!
//! Every read happens inside `REPEATABLE READ READ ONLY` transactions that
//! share one snapshot: the leader takes it and, for parallel reads, exports
//! it with `pg_export_snapshot()`; each worker imports it with `SET
//! TRANSACTION SNAPSHOT` before reading its key range, so all ranges see the
//! same database state. The leader's transaction stays open until every
//! worker is done (an exported snapshot lives only as long as it).
//!
//! Rows stream with `COPY (SELECT …) TO STDOUT (FORMAT binary)`: no paging,
//! no LIMIT/OFFSET, and no text round trip. Backpressure is the bounded
//! channel to the encoder: when it is full the reader stops polling the
//! socket and the server waits.

use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _, Row as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::arrow_builders::BatchBuilder;
use crate::copy_binary::CopyParser;
use crate::dsn::{Redactor, SourceDsn};
use crate::error::{Error, Result};
use crate::pg_schema::{SourcePlan, quote_ident};
use crate::registry::Progress;

/// The application_name the ingest connects with.
const APPLICATION: &str = "lakehouse-ingest";

/// Maps sqlx errors to ours, never keeping text that could hold the
/// password, and naming the source only by host:port/db.
#[derive(Debug, Clone)]
pub struct ErrorMapper {
    target: String,
    user: String,
    redactor: Redactor,
}

impl ErrorMapper {
    /// A mapper for `dsn`.
    pub fn new(dsn: &SourceDsn) -> Self {
        Self {
            target: dsn.target(),
            user: dsn.user().to_owned(),
            redactor: dsn.redactor(),
        }
    }

    /// Scrubs the password from `text`.
    pub fn scrub(&self, text: &str) -> String {
        self.redactor.scrub(text)
    }

    /// Maps an error that happened during `during`.
    pub fn map(&self, error: sqlx::Error, during: &'static str) -> Error {
        let mapped = match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if code == "28P01" || code == "28000" {
                    Error::SourceAuth {
                        target: self.target.clone(),
                        user: self.user.clone(),
                    }
                } else {
                    Error::SourceSql {
                        code,
                        message: self.scrub(db.message()),
                    }
                }
            }
            sqlx::Error::Io(io) if during == "connect" => Error::SourceUnreachable {
                target: self.target.clone(),
                reason: self.scrub(&io.to_string()),
            },
            sqlx::Error::Tls(tls) => Error::SourceUnreachable {
                target: self.target.clone(),
                reason: format!("TLS failed: {}", self.scrub(&tls.to_string())),
            },
            sqlx::Error::Configuration(config) => {
                Error::InvalidDsn(self.scrub(&config.to_string()))
            }
            other => Error::SourceProtocol {
                during,
                reason: self.scrub(&other.to_string()),
            },
        };
        tracing::debug!(during, error = %self.scrub(&error.to_string()), "postgres error");
        mapped
    }
}

/// The snapshot every reader shares.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken (the server's clock).
    pub time: DateTime<Utc>,
    /// Its exported id, for parallel readers.
    pub exported: Option<String>,
}

/// Opens a connection.
pub async fn connect(
    dsn: &SourceDsn,
    timeout: Duration,
    errors: &ErrorMapper,
) -> Result<PgConnection> {
    let options = dsn.connect_options(APPLICATION);
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(errors.map(error, "connect")),
        Err(_) => Err(Error::SourceUnreachable {
            target: dsn.target(),
            reason: format!("no connection within {}s", timeout.as_secs()),
        }),
    }
}

/// Starts the read-only snapshot transaction on the leader connection.
pub async fn begin_snapshot(
    conn: &mut PgConnection,
    export: bool,
    errors: &ErrorMapper,
) -> Result<Snapshot> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| errors.map(e, "begin"))?;
    // The first statement takes the snapshot; clock_timestamp() dates it.
    let sql = if export {
        "SELECT clock_timestamp() AS at, pg_catalog.pg_export_snapshot() AS id"
    } else {
        "SELECT clock_timestamp() AS at, NULL::text AS id"
    };
    let row = sqlx::query(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| errors.map(e, "snapshot"))?;
    let time: DateTime<Utc> = row.try_get("at").map_err(|e| errors.map(e, "snapshot"))?;
    let exported: Option<String> = row.try_get("id").map_err(|e| errors.map(e, "snapshot"))?;
    Ok(Snapshot { time, exported })
}

/// Joins a worker connection to the leader's exported snapshot.
///
/// Boxed with an explicit `Send` so parallel readers can be spawned (rustc
/// cannot otherwise prove sqlx's executor futures `Send` for every lifetime).
pub fn join_snapshot<'a>(
    conn: &'a mut PgConnection,
    id: &'a str,
    errors: &'a ErrorMapper,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        // Snapshot ids are server-generated ("00000003-0000001B-1"); quote anyway.
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            id.replace('\'', "''")
        );
        conn.execute(sql.as_str())
            .await
            .map_err(|e| errors.map(e, "snapshot import"))?;
        Ok(())
    })
}

/// Key ranges for parallel readers: `(min, max)` of the split column split
/// into `n` predicates that together cover every row (NULL keys go to the
/// first).
pub fn split_ranges(column: &str, min: i64, max: i64, n: u32) -> Vec<String> {
    let column = quote_ident(column);
    let n = i128::from(n.max(1));
    let span = i128::from(max) - i128::from(min) + 1;
    let n = n.min(span.max(1));
    let step = (span + n - 1) / n;
    let mut out = Vec::new();
    for i in 0..n {
        let lo = i128::from(min) + i * step;
        let hi = lo + step;
        let lower = (i > 0).then(|| format!("{column} >= {lo}"));
        let upper = (i < n - 1).then(|| format!("{column} < {hi}"));
        let predicate = match (lower, upper) {
            (None, None) => "true".to_owned(),
            (None, Some(upper)) => format!("({upper} OR {column} IS NULL)"),
            (Some(lower), None) => lower,
            (Some(lower), Some(upper)) => format!("{lower} AND {upper}"),
        };
        out.push(predicate);
    }
    out
}

/// `min` and `max` of the split column within the snapshot; `None` when
/// the source holds no non-NULL key.
pub async fn key_bounds(
    conn: &mut PgConnection,
    plan: &SourcePlan,
    column: &str,
    errors: &ErrorMapper,
) -> Result<Option<(i64, i64)>> {
    let sql = format!(
        "SELECT min({c})::int8 AS lo, max({c})::int8 AS hi FROM ({select}\n) AS source",
        c = quote_ident(column),
        select = plan.source.select(None),
    );
    let row = sqlx::query(&sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| errors.map(e, "key range"))?;
    let lo: Option<i64> = row.try_get("lo").map_err(|e| errors.map(e, "key range"))?;
    let hi: Option<i64> = row.try_get("hi").map_err(|e| errors.map(e, "key range"))?;
    Ok(lo.zip(hi))
}

/// The table's primary key column when it is one integer column (int2,
/// int4 or int8): the default key to split parallel reads on.
pub async fn integer_primary_key(
    conn: &mut PgConnection,
    relation: &str,
    errors: &ErrorMapper,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT a.attname::text AS name FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = $1::regclass AND i.indisprimary AND i.indnkeyatts = 1 \
         AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)",
    )
    .bind(relation)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| errors.map(e, "primary key lookup"))?;
    row.map(|r| r.try_get::<String, _>("name"))
        .transpose()
        .map_err(|e| errors.map(e, "primary key lookup"))
}

/// Streams `COPY (select) TO STDOUT (FORMAT binary)` into batches sent to
/// `batches`; returns the rows read. Boxed `Send` for spawned readers.
#[allow(clippy::too_many_arguments)]
pub fn copy_out<'a>(
    conn: &'a mut PgConnection,
    plan: &'a SourcePlan,
    predicate: Option<&'a str>,
    batch_rows: usize,
    batch_bytes: usize,
    batches: &'a mpsc::Sender<RecordBatch>,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
    errors: &'a ErrorMapper,
) -> BoxFuture<'a, Result<u64>> {
    Box::pin(async move {
        // Newlines keep a trailing `--` comment in a query from swallowing
        // the closing parenthesis.
        let statement = format!(
            "COPY (\n{}\n) TO STDOUT (FORMAT binary)",
            plan.source.select(predicate)
        );
        let mut stream = conn
            .copy_out_raw(statement.as_str())
            .await
            .map_err(|e| errors.map(e, "copy"))?;
        let mut parser = CopyParser::new(plan.columns.len());
        let mut builder =
            BatchBuilder::new(plan.schema.clone(), &plan.types(), batch_rows, batch_bytes);
        let mut rows = 0u64;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                chunk = stream.next() => chunk,
            };
            let Some(chunk) = chunk else {
                break;
            };
            let chunk = chunk.map_err(|e| errors.map(e, "copy"))?;
            parser.feed(chunk, &mut builder)?;
            if let Some(batch) = builder.take_ready() {
                rows += send(batch, batches, progress, cancel).await?;
            }
        }
        parser.finish()?;
        if let Some(batch) = builder.flush()? {
            rows += send(batch, batches, progress, cancel).await?;
        }
        Ok(rows)
    })
}

async fn send(
    batch: RecordBatch,
    batches: &mpsc::Sender<RecordBatch>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<u64> {
    let rows = batch.num_rows() as u64;
    tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::Cancelled),
        sent = batches.send(batch) => sent.map_err(|_| {
            // The encoder stopped; its own error is the one reported.
            Error::EncoderStopped
        })?,
    }
    progress.add_rows(rows);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_keys_and_nulls() {
        assert_eq!(
            split_ranges("id", 1, 10, 3),
            [
                "(\"id\" < 5 OR \"id\" IS NULL)",
                "\"id\" >= 5 AND \"id\" < 9",
                "\"id\" >= 9"
            ]
        );
        assert_eq!(split_ranges("id", 5, 5, 4), ["true"]);
        assert_eq!(split_ranges("id", i64::MIN, i64::MAX, 2).len(), 2);
    }
}
