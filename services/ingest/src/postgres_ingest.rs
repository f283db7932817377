//! IngestPostgres: connect, snapshot, describe, then stream every key range
//! into the shared pipeline.

use std::sync::Arc;

use chrono::Utc;
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_shared::secrets::SecretsProvider;
use tokio_util::sync::CancellationToken;

use crate::dsn::SourceDsn;
use crate::error::{Error, Result};
use crate::pg_schema::{self, Source};
use crate::pg_source::{self, ErrorMapper};
use crate::pg_types::PgType;
use crate::pipeline::{self, Committed, Context, LineageInfo, Target};
use crate::registry::Progress;

/// A validated IngestPostgres request.
#[derive(Clone)]
pub struct PostgresRequest {
    /// Where to write.
    pub target: Target,
    /// The DSN as given (holds the password until parsed).
    pub dsn: lakehouse_shared::secrets::SecretString,
    /// Secret holding the password, if any.
    pub password_secret: Option<String>,
    /// What to read.
    pub source: Source,
    /// Connections to read with.
    pub parallelism: u32,
    /// Integer column to split on when parallel.
    pub split_column: Option<String>,
    /// Row group rows override.
    pub row_group_rows: Option<u64>,
}

impl std::fmt::Debug for PostgresRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRequest")
            .field("target", &self.target)
            .field("source", &self.source)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

/// Reader settings.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Rows per batch.
    pub batch_rows: usize,
    /// Bytes per batch.
    pub batch_bytes: usize,
    /// Connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Cap on parallelism.
    pub max_parallelism: u32,
}

/// Parses the DSN (resolving the password secret); returns it with its
/// redacted form for the registry.
pub fn resolve_dsn(request: &PostgresRequest, secrets: &dyn SecretsProvider) -> Result<SourceDsn> {
    let password = match &request.password_secret {
        Some(name) => Some(secrets.require(name).map_err(|source| Error::Secret {
            name: name.clone(),
            source,
        })?),
        None => None,
    };
    SourceDsn::parse(request.dsn.expose(), password)
}

/// Runs one PostgreSQL ingest to its commit.
pub async fn run(
    ctx: &Context,
    request: PostgresRequest,
    dsn: SourceDsn,
    read: ReadOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Committed> {
    let start_time = Utc::now();
    let errors = ErrorMapper::new(&dsn);
    let parallelism = request.parallelism.clamp(1, read.max_parallelism);
    if parallelism > 1 && !matches!(request.source, Source::Table { .. }) {
        return Err(Error::InvalidRequest(
            "parallelism needs a table source; a query is read by one connection".to_owned(),
        ));
    }

    let mut leader = pg_source::connect(&dsn, read.connect_timeout, &errors).await?;
    let snapshot = pg_source::begin_snapshot(&mut leader, parallelism > 1, &errors).await?;
    // Parallel reads split the key range of `split_column`, by default the
    // table's single-column integer primary key.
    let split_column = match (&request.split_column, parallelism > 1) {
        (Some(column), true) => Some(column.clone()),
        (None, true) => {
            let relation = request.source.relation();
            match pg_source::integer_primary_key(&mut leader, &relation, &errors).await? {
                Some(column) => {
                    tracing::info!(
                        ingest_id = %request.target.ingest_id,
                        split_column = %column,
                        "parallel readers split on the primary key"
                    );
                    Some(column)
                }
                None => {
                    return Err(Error::InvalidRequest(format!(
                        "parallelism > 1 needs split_column: {relation} has no single-column integer primary key to split on by default"
                    )));
                }
            }
        }
        (_, false) => None,
    };
    let plan = pg_schema::describe(&mut leader, request.source.clone(), |e| {
        errors.map(e, "describe")
    })
    .await?;
    tracing::info!(
        ingest_id = %request.target.ingest_id,
        source = %dsn.redacted(),
        columns = plan.columns.len(),
        snapshot_time = %snapshot.time,
        "source described"
    );

    let ranges = match &split_column {
        Some(column) => {
            let Some(source_column) = plan.columns.iter().find(|c| &c.name == column) else {
                return Err(Error::InvalidRequest(format!(
                    "split_column {column:?} is not among the columns read"
                )));
            };
            if !matches!(
                source_column.pg_type,
                PgType::Int2 | PgType::Int4 | PgType::Int8
            ) {
                return Err(Error::InvalidRequest(format!(
                    "split_column {column:?} must be an integer column (int2, int4 or int8)"
                )));
            }
            match pg_source::key_bounds(&mut leader, &plan, column, &errors).await? {
                Some((lo, hi)) => pg_source::split_ranges(column, lo, hi, parallelism),
                None => vec!["true".to_owned()],
            }
        }
        None => Vec::new(),
    };

    let (expected_version, target) = pipeline::preflight(ctx, &request.target).await?;
    let mut ctx = ctx.clone();
    if let Some(rows) = request.row_group_rows {
        ctx.parts.row_group_rows = usize::try_from(rows).unwrap_or(usize::MAX).max(1);
    }
    let lineage = LineageInfo {
        kind: catalog::SourceKind::Postgres,
        source: dsn.redacted(),
        query: plan.source.description(),
        snapshot_time: Some(snapshot.time),
        start_time,
    };
    let schema = plan.schema.clone();
    let plan = Arc::new(plan);
    let progress_for_readers = progress.clone();
    let produce = |sender: tokio::sync::mpsc::Sender<arrow::array::RecordBatch>| async move {
        let progress = progress_for_readers;
        if ranges.len() <= 1 {
            let predicate = ranges.first().map(String::as_str);
            return pg_source::copy_out(
                &mut leader,
                &plan,
                predicate,
                read.batch_rows,
                read.batch_bytes,
                &sender,
                &progress,
                cancel,
                &errors,
            )
            .await;
        }
        // Workers import the leader's snapshot; the leader reads the first
        // range itself and keeps its transaction (and so the exported
        // snapshot) open until every worker has finished.
        let snapshot_id = snapshot.exported.clone().unwrap_or_default();
        let mut workers = tokio::task::JoinSet::new();
        for predicate in &ranges[1..] {
            let predicate = predicate.clone();
            let dsn = dsn.clone();
            let plan = plan.clone();
            let sender = sender.clone();
            let progress = progress.clone();
            let cancel = cancel.clone();
            let errors = errors.clone();
            let snapshot_id = snapshot_id.clone();
            let read = read.clone();
            workers.spawn(tracing::Instrument::instrument(
                async move {
                    let mut conn = pg_source::connect(&dsn, read.connect_timeout, &errors).await?;
                    pg_source::join_snapshot(&mut conn, &snapshot_id, &errors).await?;
                    pg_source::copy_out(
                        &mut conn,
                        &plan,
                        Some(&predicate),
                        read.batch_rows,
                        read.batch_bytes,
                        &sender,
                        &progress,
                        &cancel,
                        &errors,
                    )
                    .await
                },
                tracing::Span::current(),
            ));
        }
        let leader_rows = pg_source::copy_out(
            &mut leader,
            &plan,
            ranges.first().map(String::as_str),
            read.batch_rows,
            read.batch_bytes,
            &sender,
            &progress,
            cancel,
            &errors,
        )
        .await;
        drop(sender);
        let mut result = leader_rows;
        if result.is_err() {
            workers.abort_all();
        }
        while let Some(joined) = workers.join_next().await {
            let outcome = match joined {
                Ok(outcome) => outcome,
                // Aborted after another reader failed: that error is reported.
                Err(join) if join.is_cancelled() => continue,
                Err(join) => Err(Error::TaskFailed {
                    task: "parallel reader",
                    reason: join.to_string(),
                }),
            };
            match (outcome, &mut result) {
                (Ok(rows), Ok(total)) => *total += rows,
                (Err(error), Ok(_)) => {
                    workers.abort_all();
                    result = Err(error);
                }
                (_, Err(_)) => {}
            }
        }
        result
    };
    let split_column = split_column.unwrap_or_default();
    pipeline::run(
        &ctx,
        &target,
        expected_version,
        schema,
        lineage,
        progress,
        cancel,
        produce,
    )
    .await
    .map(|committed| Committed {
        split_column,
        ..committed
    })
}
