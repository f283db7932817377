//! The queries both backends run. `sqlite.rs` and `postgres.rs` each include
//! this file as their child module `sql`; `super::Db` is that backend's sqlx
//! database, and `super::begin_write` / `super::begin_read` start its
//! transactions. The SQL is the common dialect of SQLite 3.35+ and
//! PostgreSQL 9.5+ (`$n` parameters, `ON CONFLICT`, `RETURNING`).

use chrono::{DateTime, Utc};
use sqlx::{Pool, QueryBuilder, Row};

use super::{Db, begin_read, begin_write};
use crate::error::{Error, Result};
use crate::model::{
    Commit, DataFile, Dataset, DatasetName, LINEAGE_HISTORY_LIMIT, Lineage, LineageEvent,
    LineageEventKind, ListQuery, NewDataset, Schema, SourceKind, View,
};
use crate::store::{plan, to_i64};

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;

/// Files inserted per statement: 5 parameters each, well under SQLite's
/// and PostgreSQL's parameter limits.
const INSERT_CHUNK: usize = 1000;
/// How often a commit without `expected_version` retries after losing a race.
const UNCHECKED_RETRIES: usize = 5;

macro_rules! select_header {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, bucket, description, schema_json, file_count, row_count, size_bytes, ",
            "source_kind, source, source_query, ingest_id, start_us, finish_us, snapshot_us, ",
            "lineage_rows, lineage_bytes, create_us, update_us, version FROM datasets ",
            $rest
        )
    };
}

fn column<T>(row: &DbRow, name: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(name).map_err(Error::db("read manifest"))
}

/// A dataset row as a manifest without files, with its row id.
fn read_header(row: &DbRow) -> Result<(i64, Dataset)> {
    let name_text: String = column(row, "name")?;
    let corrupt = |reason: String| Error::Corrupt {
        name: name_text.clone(),
        reason,
    };
    let unsigned = |field: &str, value: i64| {
        u64::try_from(value).map_err(|_| corrupt(format!("{field} is negative")))
    };
    let time = |field: &str, value: i64| {
        DateTime::<Utc>::from_timestamp_micros(value)
            .ok_or_else(|| corrupt(format!("{field} is out of range")))
    };

    let name = DatasetName::parse(&name_text).map_err(|_| corrupt("invalid name".to_owned()))?;
    let schema_json: String = column(row, "schema_json")?;
    let schema: Schema =
        serde_json::from_str(&schema_json).map_err(|e| corrupt(format!("schema_json: {e}")))?;
    let lineage = read_lineage(row, &name_text)?;
    let dataset = Dataset {
        bucket: column(row, "bucket")?,
        description: column(row, "description")?,
        files: None,
        file_count: unsigned("file_count", column(row, "file_count")?)?,
        schema,
        row_count: unsigned("row_count", column(row, "row_count")?)?,
        size_bytes: unsigned("size_bytes", column(row, "size_bytes")?)?,
        lineage,
        create_time: time("create_us", column(row, "create_us")?)?,
        update_time: time("update_us", column(row, "update_us")?)?,
        version: unsigned("version", column(row, "version")?)?,
        lineage_history: Vec::new(),
        name,
    };
    Ok((column(row, "id")?, dataset))
}

/// The lineage columns of a `datasets` or `lineage_events` row (both
/// tables name them alike).
fn read_lineage(row: &DbRow, name: &str) -> Result<Lineage> {
    let corrupt = |reason: String| Error::Corrupt {
        name: name.to_owned(),
        reason,
    };
    let unsigned = |field: &str, value: i64| {
        u64::try_from(value).map_err(|_| corrupt(format!("{field} is negative")))
    };
    let optional_time = |field: &str, value: Option<i64>| {
        value
            .map(|v| {
                DateTime::<Utc>::from_timestamp_micros(v)
                    .ok_or_else(|| corrupt(format!("{field} is out of range")))
            })
            .transpose()
    };
    let source_kind: String = column(row, "source_kind")?;
    Ok(Lineage {
        source_kind: SourceKind::from_stored(&source_kind),
        source: column(row, "source")?,
        query: column(row, "source_query")?,
        ingest_id: column(row, "ingest_id")?,
        start_time: optional_time("start_us", column(row, "start_us")?)?,
        finish_time: optional_time("finish_us", column(row, "finish_us")?)?,
        snapshot_time: optional_time("snapshot_us", column(row, "snapshot_us")?)?,
        rows: unsigned("lineage_rows", column(row, "lineage_rows")?)?,
        bytes: unsigned("lineage_bytes", column(row, "lineage_bytes")?)?,
    })
}

/// The newest [`LINEAGE_HISTORY_LIMIT`] lineage events of a dataset,
/// newest first.
async fn lineage_history(conn: &mut Conn, id: i64, name: &str) -> Result<Vec<LineageEvent>> {
    let events = lineage_events(conn, id, name, None, LINEAGE_HISTORY_LIMIT).await?;
    Ok(events.into_iter().map(|(_, event)| event).collect())
}

/// At most `limit` lineage events of dataset row `id` numbered below
/// `before`, newest first, with their numbers.
async fn lineage_events(
    conn: &mut Conn,
    id: i64,
    name: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<(i64, LineageEvent)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT id, dataset_version, kind, source_kind, source, source_query, ingest_id, \
         start_us, finish_us, snapshot_us, lineage_rows, lineage_bytes, added_columns, create_us \
         FROM lineage_events WHERE dataset_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::db("read lineage history"))?;
    rows.iter()
        .map(|row| {
            let corrupt = |reason: String| Error::Corrupt {
                name: name.to_owned(),
                reason,
            };
            let number: i64 = column(row, "id")?;
            let version: i64 = column(row, "dataset_version")?;
            let kind: String = column(row, "kind")?;
            let added: String = column(row, "added_columns")?;
            let created: i64 = column(row, "create_us")?;
            let event = LineageEvent {
                dataset_version: u64::try_from(version)
                    .map_err(|_| corrupt("a lineage event's version is negative".to_owned()))?,
                kind: LineageEventKind::from_stored(&kind),
                lineage: read_lineage(row, name)?,
                added_columns: serde_json::from_str(&added)
                    .map_err(|e| corrupt(format!("a lineage event's added_columns: {e}")))?,
                time: DateTime::<Utc>::from_timestamp_micros(created)
                    .ok_or_else(|| corrupt("a lineage event's time is out of range".to_owned()))?,
            };
            Ok((number, event))
        })
        .collect()
}

pub(super) async fn list_lineage(
    pool: &Pool<Db>,
    name: &DatasetName,
    before: Option<i64>,
    limit: usize,
) -> Result<(u64, Vec<(i64, LineageEvent)>)> {
    const OP: &str = "list lineage events";
    let mut tx = begin_read(pool).await.map_err(Error::db(OP))?;
    let (id, dataset) = header(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))?;
    let events = lineage_events(&mut tx, id, name.as_str(), before, limit).await?;
    tx.commit().await.map_err(Error::db(OP))?;
    Ok((dataset.version, events))
}

/// Records one lineage event of dataset row `id`, in the caller's
/// transaction.
async fn record_event(conn: &mut Conn, id: i64, event: &LineageEvent) -> Result<()> {
    const OP: &str = "record lineage";
    let lineage = &event.lineage;
    sqlx::query(
        "INSERT INTO lineage_events (dataset_id, dataset_version, kind, source_kind, source, \
         source_query, ingest_id, start_us, finish_us, snapshot_us, lineage_rows, lineage_bytes, \
         added_columns, create_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(to_i64(event.dataset_version, "version")?)
    .bind(event.kind.as_str())
    .bind(lineage.source_kind.as_str())
    .bind(&lineage.source)
    .bind(&lineage.query)
    .bind(&lineage.ingest_id)
    .bind(micros(lineage.start_time))
    .bind(micros(lineage.finish_time))
    .bind(micros(lineage.snapshot_time))
    .bind(to_i64(lineage.rows, "lineage rows")?)
    .bind(to_i64(lineage.bytes, "lineage bytes")?)
    // Serialising plain strings cannot fail.
    .bind(serde_json::to_string(&event.added_columns).unwrap_or_else(|_| "[]".to_owned()))
    .bind(event.time.timestamp_micros())
    .execute(&mut *conn)
    .await
    .map_err(Error::db(OP))?;
    Ok(())
}

async fn header(conn: &mut Conn, name: &str) -> Result<Option<(i64, Dataset)>> {
    let row = sqlx::query(select_header!("WHERE name = $1"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Error::db("read manifest"))?;
    row.as_ref().map(read_header).transpose()
}

async fn files(conn: &mut Conn, id: i64, name: &str) -> Result<Vec<DataFile>> {
    let rows = sqlx::query(
        "SELECT object_key, size_bytes, row_count, etag FROM files \
         WHERE dataset_id = $1 ORDER BY object_key",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::db("read files"))?;
    rows.iter().map(|row| read_file(row, name)).collect()
}

fn read_file(row: &DbRow, name: &str) -> Result<DataFile> {
    let unsigned = |field: &str, value: i64| {
        u64::try_from(value).map_err(|_| Error::Corrupt {
            name: name.to_owned(),
            reason: format!("a file's {field} is negative"),
        })
    };
    Ok(DataFile {
        key: column(row, "object_key")?,
        size_bytes: unsigned("size_bytes", column(row, "size_bytes")?)?,
        row_count: unsigned("row_count", column(row, "row_count")?)?,
        etag: column(row, "etag")?,
    })
}

pub(super) async fn list_files(
    pool: &Pool<Db>,
    name: &DatasetName,
    after: Option<&str>,
    limit: usize,
) -> Result<(u64, Vec<DataFile>)> {
    const OP: &str = "list dataset files";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut tx = begin_read(pool).await.map_err(Error::db(OP))?;
    let (id, dataset) = header(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))?;
    let rows = sqlx::query(
        "SELECT object_key, size_bytes, row_count, etag FROM files \
         WHERE dataset_id = $1 AND object_key > $2 ORDER BY object_key LIMIT $3",
    )
    .bind(id)
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(Error::db(OP))?;
    let files = rows
        .iter()
        .map(|row| read_file(row, name.as_str()))
        .collect::<Result<Vec<_>>>()?;
    tx.commit().await.map_err(Error::db(OP))?;
    Ok((dataset.version, files))
}

/// The dataset name and response recorded for a commit's request id.
async fn recorded(conn: &mut Conn, request_id: &str) -> Result<Option<(String, Dataset)>> {
    let row = sqlx::query("SELECT dataset, response FROM commit_requests WHERE request_id = $1")
        .bind(request_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Error::db("read a commit's request id"))?;
    let Some(row) = row else { return Ok(None) };
    let used_for: String = column(&row, "dataset")?;
    let response: String = column(&row, "response")?;
    let dataset = serde_json::from_str(&response).map_err(|e| Error::Corrupt {
        name: used_for.clone(),
        reason: format!("the recorded response of request {request_id:?}: {e}"),
    })?;
    Ok(Some((used_for, dataset)))
}

/// The answer to a commit whose request id was already applied.
fn replay(commit: &Commit, used_for: String, dataset: Dataset) -> Result<Dataset> {
    if used_for == commit.name.as_str() {
        Ok(dataset)
    } else {
        Err(Error::RequestIdReused {
            request_id: commit.request_id.clone().unwrap_or_default(),
            used_for,
            name: commit.name.as_str().to_owned(),
        })
    }
}

pub(super) async fn find_commit(
    pool: &Pool<Db>,
    request_id: &str,
) -> Result<Option<(String, Dataset)>> {
    let mut tx = begin_read(pool)
        .await
        .map_err(Error::db("read a commit's request id"))?;
    let found = recorded(&mut tx, request_id).await?;
    tx.commit()
        .await
        .map_err(Error::db("read a commit's request id"))?;
    Ok(found)
}

fn not_found(name: &DatasetName) -> Error {
    Error::NotFound {
        name: name.as_str().to_owned(),
    }
}

fn micros(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.map(|t| t.timestamp_micros())
}

fn schema_json(schema: &Schema) -> String {
    // Serialising plain strings and bools cannot fail.
    serde_json::to_string(schema).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) async fn create(pool: &Pool<Db>, new: &NewDataset) -> Result<Dataset> {
    let mut tx = begin_write(pool).await.map_err(Error::db("create"))?;
    let now = Utc::now().timestamp_micros();
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO datasets (name, bucket, description, schema_json, create_us, update_us, version) \
         VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(new.name.as_str())
    .bind(&new.bucket)
    .bind(&new.description)
    .bind(schema_json(&new.schema))
    .bind(now)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(Error::db("create"))?;
    if id.is_none() {
        return Err(Error::AlreadyExists {
            name: new.name.as_str().to_owned(),
        });
    }
    let (_, mut dataset) = header(&mut tx, new.name.as_str())
        .await?
        .ok_or_else(|| not_found(&new.name))?;
    tx.commit().await.map_err(Error::db("create"))?;
    dataset.files = Some(Vec::new());
    Ok(dataset)
}

pub(super) async fn get(pool: &Pool<Db>, name: &DatasetName, view: View) -> Result<Dataset> {
    let mut tx = begin_read(pool).await.map_err(Error::db("get dataset"))?;
    let (id, mut dataset) = header(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))?;
    if view == View::Full {
        dataset.files = Some(files(&mut tx, id, name.as_str()).await?);
        dataset.lineage_history = lineage_history(&mut tx, id, name.as_str()).await?;
    }
    tx.commit().await.map_err(Error::db("get dataset"))?;
    Ok(dataset)
}

pub(super) async fn list(pool: &Pool<Db>, query: &ListQuery) -> Result<Vec<Dataset>> {
    // Every name byte sorts below '~', so [prefix, prefix + "~") holds
    // exactly the names starting with prefix (byte order on both backends).
    let upper = format!("{}~", query.prefix);
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut tx = begin_read(pool).await.map_err(Error::db("list datasets"))?;
    let rows = sqlx::query(select_header!(
        "WHERE name >= $1 AND name < $2 AND name > $3 ORDER BY name LIMIT $4"
    ))
    .bind(&query.prefix)
    .bind(&upper)
    .bind(query.after.as_deref().unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(Error::db("list datasets"))?;
    let mut datasets = Vec::with_capacity(rows.len());
    for row in &rows {
        let (id, mut dataset) = read_header(row)?;
        if query.view == View::Full {
            dataset.files = Some(files(&mut tx, id, dataset.name.as_str()).await?);
            dataset.lineage_history = lineage_history(&mut tx, id, dataset.name.as_str()).await?;
        }
        datasets.push(dataset);
    }
    tx.commit().await.map_err(Error::db("list datasets"))?;
    Ok(datasets)
}

pub(super) async fn delete(
    pool: &Pool<Db>,
    name: &DatasetName,
    expected_version: Option<u64>,
) -> Result<Dataset> {
    let mut attempt = 0;
    loop {
        match delete_once(pool, name, expected_version).await {
            Err(Error::VersionConflict { .. })
                if expected_version.is_none() && attempt < UNCHECKED_RETRIES =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn delete_once(
    pool: &Pool<Db>,
    name: &DatasetName,
    expected_version: Option<u64>,
) -> Result<Dataset> {
    let mut tx = begin_write(pool).await.map_err(Error::db("delete"))?;
    let (id, mut dataset) = header(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))?;
    let expected = expected_version.unwrap_or(dataset.version);
    if expected != dataset.version {
        return Err(conflict(name, expected, dataset.version));
    }
    dataset.files = Some(files(&mut tx, id, name.as_str()).await?);
    let deleted = sqlx::query("DELETE FROM datasets WHERE id = $1 AND version = $2")
        .bind(id)
        .bind(to_i64(expected, "version")?)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("delete"))?
        .rows_affected();
    if deleted == 0 {
        let actual = current_version(&mut tx, name).await?;
        return Err(conflict(name, expected, actual));
    }
    // The foreign key cascades, but do not rely on the backend enforcing it.
    sqlx::query("DELETE FROM files WHERE dataset_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("delete"))?;
    sqlx::query("DELETE FROM lineage_events WHERE dataset_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(Error::db("delete"))?;
    tx.commit().await.map_err(Error::db("delete"))?;
    Ok(dataset)
}

fn conflict(name: &DatasetName, expected: u64, actual: u64) -> Error {
    Error::VersionConflict {
        name: name.as_str().to_owned(),
        expected,
        actual,
    }
}

async fn current_version(conn: &mut Conn, name: &DatasetName) -> Result<u64> {
    Ok(header(conn, name.as_str())
        .await?
        .map_or(0, |(_, dataset)| dataset.version))
}

pub(super) async fn commit(pool: &Pool<Db>, commit: &Commit) -> Result<Dataset> {
    plan::validate(commit)?;
    let mut attempt = 0;
    loop {
        let result = commit_once(pool, commit).await;
        // A call with the same request id may have committed meanwhile (a
        // client retrying while its first call was still running): answer
        // as to a retry rather than with a conflict.
        if let (Err(Error::VersionConflict { .. }), Some(id)) = (&result, &commit.request_id)
            && let Some((used_for, dataset)) = find_commit(pool, id).await?
        {
            return replay(commit, used_for, dataset);
        }
        match result {
            // A commit that asked for no version check only lost a race
            // with another writer: plan it again on the new state.
            Err(Error::VersionConflict { .. })
                if commit.expected_version.is_none() && attempt < UNCHECKED_RETRIES =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn commit_once(pool: &Pool<Db>, commit: &Commit) -> Result<Dataset> {
    const OP: &str = "commit";
    let name = &commit.name;
    let mut tx = begin_write(pool).await.map_err(Error::db(OP))?;
    if let Some(id) = &commit.request_id
        && let Some((used_for, dataset)) = recorded(&mut tx, id).await?
    {
        return replay(commit, used_for, dataset);
    }
    let current = header(&mut tx, name.as_str()).await?;
    let plan = plan::plan(current.as_ref().map(|(_, d)| d), commit)?;
    let now = Utc::now().timestamp_micros();
    let lineage = &plan.lineage;

    // The compare-and-swap on `version` comes first: on PostgreSQL it also
    // takes the row lock that orders concurrent commits of this dataset.
    let id = match current {
        None => {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO datasets (name, bucket, schema_json, source_kind, source, source_query, \
                 ingest_id, start_us, finish_us, snapshot_us, lineage_rows, lineage_bytes, \
                 create_us, update_us, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name.as_str())
            .bind(&commit.bucket)
            .bind(schema_json(&plan.schema))
            .bind(lineage.source_kind.as_str())
            .bind(&lineage.source)
            .bind(&lineage.query)
            .bind(&lineage.ingest_id)
            .bind(micros(lineage.start_time))
            .bind(micros(lineage.finish_time))
            .bind(micros(lineage.snapshot_time))
            .bind(to_i64(lineage.rows, "lineage rows")?)
            .bind(to_i64(lineage.bytes, "lineage bytes")?)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Error::db(OP))?;
            match id {
                Some(id) => id,
                None => {
                    let actual = current_version(&mut tx, name).await?;
                    return Err(conflict(name, 0, actual.max(1)));
                }
            }
        }
        Some((id, _)) => {
            let updated = sqlx::query(
                "UPDATE datasets SET version = version + 1, update_us = $1, schema_json = $2, \
                 source_kind = $3, source = $4, source_query = $5, ingest_id = $6, start_us = $7, \
                 finish_us = $8, snapshot_us = $9, lineage_rows = $10, lineage_bytes = $11 \
                 WHERE id = $12 AND version = $13",
            )
            .bind(now)
            .bind(schema_json(&plan.schema))
            .bind(lineage.source_kind.as_str())
            .bind(&lineage.source)
            .bind(&lineage.query)
            .bind(&lineage.ingest_id)
            .bind(micros(lineage.start_time))
            .bind(micros(lineage.finish_time))
            .bind(micros(lineage.snapshot_time))
            .bind(to_i64(lineage.rows, "lineage rows")?)
            .bind(to_i64(lineage.bytes, "lineage bytes")?)
            .bind(id)
            .bind(to_i64(plan.base_version, "version")?)
            .execute(&mut *tx)
            .await
            .map_err(Error::db(OP))?
            .rows_affected();
            if updated == 0 {
                let actual = current_version(&mut tx, name).await?;
                return Err(conflict(
                    name,
                    commit.expected_version.unwrap_or(plan.base_version),
                    actual,
                ));
            }
            id
        }
    };

    if plan.replace_all {
        sqlx::query("DELETE FROM files WHERE dataset_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(Error::db(OP))?;
    }
    for key in &commit.remove_keys {
        let removed = sqlx::query("DELETE FROM files WHERE dataset_id = $1 AND object_key = $2")
            .bind(id)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(Error::db(OP))?
            .rows_affected();
        if removed == 0 {
            return Err(Error::Precondition {
                name: name.as_str().to_owned(),
                reason: format!("remove_keys names {key:?}, which is not one of its files"),
            });
        }
    }
    for chunk in commit.add_files.chunks(INSERT_CHUNK) {
        let rows = chunk
            .iter()
            .map(|f| {
                Ok((
                    f,
                    to_i64(f.size_bytes, "size_bytes")?,
                    to_i64(f.row_count, "row_count")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut insert = QueryBuilder::<Db>::new(
            "INSERT INTO files (dataset_id, object_key, size_bytes, row_count, etag) ",
        );
        insert.push_values(rows, |mut values, (file, size, rows)| {
            values
                .push_bind(id)
                .push_bind(file.key.clone())
                .push_bind(size)
                .push_bind(rows)
                .push_bind(file.etag.clone());
        });
        // Appending a key that is already there replaces its entry, so a
        // retried ingest commit does not fail on its own files.
        insert.push(
            " ON CONFLICT (dataset_id, object_key) DO UPDATE SET size_bytes = excluded.size_bytes, \
             row_count = excluded.row_count, etag = excluded.etag",
        );
        insert
            .build()
            .execute(&mut *tx)
            .await
            .map_err(Error::db(OP))?;
    }

    let totals = sqlx::query(
        "SELECT COUNT(*) AS files, CAST(COALESCE(SUM(row_count), 0) AS BIGINT) AS rows_total, \
         CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes_total \
         FROM files WHERE dataset_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(Error::db(OP))?;
    let file_count: i64 = column(&totals, "files")?;
    let row_count: i64 = column(&totals, "rows_total")?;
    let size_bytes: i64 = column(&totals, "bytes_total")?;
    sqlx::query(
        "UPDATE datasets SET file_count = $1, row_count = $2, size_bytes = $3 WHERE id = $4",
    )
    .bind(file_count)
    .bind(row_count)
    .bind(size_bytes)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(Error::db(OP))?;

    // The history: what produced this version (and any schema change).
    let version = plan.base_version + 1;
    let recorded_at = DateTime::<Utc>::from_timestamp_micros(now).unwrap_or_else(Utc::now);
    let given = commit.lineage.clone().map(Lineage::redacted);
    let kind = match &given {
        Some(l) if l.source_kind == SourceKind::Resync => LineageEventKind::Resync,
        _ => LineageEventKind::Commit,
    };
    record_event(
        &mut tx,
        id,
        &LineageEvent {
            dataset_version: version,
            kind,
            lineage: given.unwrap_or_default(),
            added_columns: Vec::new(),
            time: recorded_at,
        },
    )
    .await?;
    if !plan.added_columns.is_empty() {
        record_event(
            &mut tx,
            id,
            &LineageEvent {
                dataset_version: version,
                kind: LineageEventKind::SchemaChange,
                lineage: Lineage::default(),
                added_columns: plan.added_columns.clone(),
                time: recorded_at,
            },
        )
        .await?;
    }

    let (_, mut dataset) = header(&mut tx, name.as_str())
        .await?
        .ok_or_else(|| not_found(name))?;
    dataset.files = Some(files(&mut tx, id, name.as_str()).await?);
    dataset.lineage_history = lineage_history(&mut tx, id, name.as_str()).await?;
    if let Some(request_id) = &commit.request_id
        && !record_request(&mut tx, request_id, &dataset, now).await?
    {
        // A concurrent commit with the same id recorded it first: undo
        // this one and answer with that one's result.
        drop(tx);
        return match find_commit(pool, request_id).await? {
            Some((used_for, dataset)) => replay(commit, used_for, dataset),
            None => Err(conflict(name, dataset.version - 1, dataset.version)),
        };
    }
    tx.commit().await.map_err(Error::db(OP))?;
    Ok(dataset)
}

/// Records a commit's response under its request id, in the commit's
/// transaction, and prunes ids older than the retention window. `false` if
/// the id is already recorded (by a concurrent commit).
async fn record_request(
    conn: &mut Conn,
    request_id: &str,
    dataset: &Dataset,
    now: i64,
) -> Result<bool> {
    const OP: &str = "record a commit's request id";
    let retention =
        i64::try_from(crate::store::REQUEST_ID_RETENTION.as_micros()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM commit_requests WHERE create_us < $1")
        .bind(now.saturating_sub(retention))
        .execute(&mut *conn)
        .await
        .map_err(Error::db(OP))?;
    let response = serde_json::to_string(dataset).map_err(|e| Error::Corrupt {
        name: dataset.name.as_str().to_owned(),
        reason: format!("the commit response cannot be recorded: {e}"),
    })?;
    let inserted = sqlx::query(
        "INSERT INTO commit_requests (request_id, dataset, version, response, create_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(request_id)
    .bind(dataset.name.as_str())
    .bind(to_i64(dataset.version, "version")?)
    .bind(response)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(Error::db(OP))?
    .rows_affected();
    Ok(inserted == 1)
}
