//! Structured schemas (APPEND may add nullable columns; old text-typed
//! rows still read) and lineage history, through real gRPC: in-process
//! storage and catalog servers on loopback sockets.

#![allow(unused_crate_dependencies)]

mod common;

use common::{CatalogStack as _, Stack, batch, column, data_file, put_parquet};
use lakehouse_proto::catalog::v1 as pb;
use sqlx::Connection as _;
use tonic::Code;

/// The columns of `common::batch`: with `label`, the wider schema.
fn schema(label: bool) -> pb::Schema {
    let mut columns = vec![
        column("id", "Int64", false),
        column("value", "Float64", true),
    ];
    if label {
        columns.push(column("label", "Utf8", true));
    }
    pb::Schema { columns }
}

async fn resync(stack: &Stack, name: &str, dry_run: bool) -> pb::ResyncReport {
    stack
        .catalog()
        .resync_dataset(pb::ResyncDatasetRequest {
            name: name.to_owned(),
            dry_run,
            allow_row_loss: false,
        })
        .await
        .expect("resync")
        .into_inner()
        .report
        .expect("report")
}

async fn append(
    stack: &Stack,
    name: &str,
    key: &str,
    size: u64,
    rows: u64,
    schema: pb::Schema,
) -> Result<pb::Dataset, tonic::Status> {
    stack
        .catalog()
        .commit_files(pb::CommitFilesRequest {
            name: name.to_owned(),
            mode: pb::CommitMode::Append as i32,
            add_files: vec![data_file(key, size, rows)],
            schema: Some(schema),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().dataset.expect("dataset"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_adds_nullable_columns_and_resync_accepts_older_files() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let old_key = "datasets/grow/a/part-00000.parquet";
    let old_size = put_parquet(&store, old_key, &batch(100, 0, false)).await;
    stack
        .catalog()
        .create_dataset(pb::CreateDatasetRequest {
            name: "grow".to_owned(),
            ..Default::default()
        })
        .await
        .expect("create");
    append(&stack, "grow", old_key, old_size, 100, schema(false))
        .await
        .expect("first append");

    // New files carry a nullable `label`: accepted, the schema widens.
    let new_key = "datasets/grow/b/part-00000.parquet";
    let new_size = put_parquet(&store, new_key, &batch(50, 100, true)).await;
    let widened = append(&stack, "grow", new_key, new_size, 50, schema(true))
        .await
        .expect("an APPEND may add a nullable column");
    assert_eq!(widened.schema, Some(schema(true)));
    assert_eq!(widened.row_count, 150);
    let change = &widened.lineage_history[0];
    assert_eq!(change.kind, pb::LineageEventKind::SchemaChange as i32);
    assert_eq!(change.dataset_version, widened.version);
    assert_eq!(change.added_columns, ["label"]);

    // The older file lacks `label`: that is not drift.
    let report = resync(&stack, "grow", true).await;
    assert!(!report.drifted, "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    let missing = stack
        .catalog()
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: true,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert!(missing.reports.is_empty(), "{:?}", missing.reports);

    // Still refused: a new column that is not nullable, a removed column,
    // a changed type. With the first-difference message.
    let mut not_null = schema(true);
    not_null.columns.push(column("score", "Int32", false));
    let mut changed = schema(true);
    changed.columns[1] = column("value", "Int64", true);
    for refused in [not_null, schema(false), changed] {
        let status = append(&stack, "grow", new_key, new_size, 50, refused)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("does not match"),
            "{}",
            status.message()
        );
    }
    // A type the client prints in another Arrow version's form is the same
    // type: no "schema does not match".
    let mut other_print = schema(true);
    other_print.columns[0] = column("id", " Int64 ", false);
    let again = append(&stack, "grow", new_key, new_size, 50, other_print)
        .await
        .expect("structurally equal");
    assert_eq!(again.schema, Some(schema(true)));
    let bad = append(&stack, "grow", new_key, new_size, 50, {
        let mut s = schema(true);
        s.columns[0] = column("id", "Integer64", false);
        s
    })
    .await
    .expect_err("not an Arrow type");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        lakehouse_shared::status::error_reason(&bad).as_deref(),
        Some("INVALID_SCHEMA")
    );
    stack.shutdown().await;
}

/// A catalog written before structured schemas (types stored only as
/// Arrow's printed text) keeps working: reads, APPEND, resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_with_text_typed_schemas_keep_working() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let key = "datasets/legacy/a/part-00000.parquet";
    let size = put_parquet(&store, key, &batch(10, 0, false)).await;
    stack
        .catalog()
        .commit_files(pb::CommitFilesRequest {
            name: "legacy".to_owned(),
            expected_version: Some(0),
            mode: pb::CommitMode::Append as i32,
            add_files: vec![data_file(key, size, 10)],
            schema: Some(schema(false)),
            lineage: Some(pb::Lineage {
                source_kind: pb::SourceKind::File as i32,
                source: "legacy.csv".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("commit");
    // Rewrite the row as an older server wrote it: types as text only, in
    // the form older Arrow versions printed; and take the catalog back to
    // before lineage history (migration 0003 runs again on restart).
    let url = format!("sqlite://{}", stack.catalog_db().display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the catalog file");
    let old_json = r#"[{"name":"id","data_type":"Int64","nullable":false},{"name":"value","data_type":"Float64","nullable":true}]"#;
    let updated = sqlx::query("UPDATE datasets SET schema_json = $1 WHERE name = 'legacy'")
        .bind(old_json)
        .execute(&mut conn)
        .await
        .expect("rewrite the row")
        .rows_affected();
    assert_eq!(updated, 1);
    for undo in [
        "DROP TABLE lineage_events",
        "DELETE FROM _sqlx_migrations WHERE version = 3",
    ] {
        sqlx::query(undo)
            .execute(&mut conn)
            .await
            .expect("undo migration 0003");
    }
    conn.close().await.expect("close");
    let stack = stack.restart().await;

    let read = stack.dataset("legacy", pb::DatasetView::Full).await;
    assert_eq!(read.schema, Some(schema(false)));
    // The migration starts the history with the lineage the dataset held.
    let history: Vec<(u64, i32, &str)> = read
        .lineage_history
        .iter()
        .map(|e| {
            (
                e.dataset_version,
                e.kind,
                e.lineage.as_ref().map_or("", |l| l.source.as_str()),
            )
        })
        .collect();
    assert_eq!(
        history,
        [(1, pb::LineageEventKind::Commit as i32, "legacy.csv")]
    );
    let report = resync(&stack, "legacy", true).await;
    assert!(!report.drifted, "{report:?}");
    let key2 = "datasets/legacy/b/part-00000.parquet";
    let size2 = put_parquet(&stack.object_store(), key2, &batch(5, 10, true)).await;
    let widened = append(&stack, "legacy", key2, size2, 5, schema(true))
        .await
        .expect("append to a text-typed dataset");
    assert_eq!(widened.row_count, 15);
    assert_eq!(widened.schema, Some(schema(true)));
    assert_eq!(
        widened.lineage_history.len(),
        3,
        "{:?}",
        widened.lineage_history
    );
    stack.shutdown().await;
}

/// A resync keeps the history: the original PostgreSQL source, query and
/// ingest id stay visible after it; ListLineageEvents pages through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_keeps_the_original_lineage_in_the_history() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let ingest_id = "20261126T031700Z-abcdef123456";
    let key = format!("datasets/staff/{ingest_id}/part-00000.parquet");
    let size = put_parquet(&store, &key, &batch(40, 0, false)).await;
    stack
        .catalog()
        .commit_files(pb::CommitFilesRequest {
            name: "staff".to_owned(),
            expected_version: Some(0),
            mode: pb::CommitMode::Replace as i32,
            add_files: vec![data_file(&key, size, 40)],
            schema: Some(schema(false)),
            lineage: Some(pb::Lineage {
                source_kind: pb::SourceKind::Postgres as i32,
                source: "postgres://app:hunter2@db:5432/hr".to_owned(),
                query: "SELECT * FROM staff".to_owned(),
                ingest_id: ingest_id.to_owned(),
                rows: 40,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("commit");
    // Drift: a part placed by hand (outside any ingest folder).
    put_parquet(
        &store,
        "datasets/staff/manual/part-00000.parquet",
        &batch(2, 40, false),
    )
    .await;
    let report = resync(&stack, "staff", false).await;
    assert!(report.applied, "{report:?}");

    let dataset = stack.dataset("staff", pb::DatasetView::Full).await;
    assert_eq!(dataset.version, 2);
    let latest = dataset.lineage.expect("lineage");
    assert_eq!(latest.source_kind, pb::SourceKind::Resync as i32);
    let history: Vec<(u64, i32)> = dataset
        .lineage_history
        .iter()
        .map(|e| (e.dataset_version, e.kind))
        .collect();
    assert_eq!(
        history,
        [
            (2, pb::LineageEventKind::Resync as i32),
            (1, pb::LineageEventKind::Commit as i32)
        ]
    );
    let resync_event = dataset.lineage_history[0]
        .lineage
        .as_ref()
        .expect("lineage");
    assert_eq!(resync_event.rows, 42);
    let origin = dataset.lineage_history[1]
        .lineage
        .as_ref()
        .expect("lineage");
    assert_eq!(origin.source_kind, pb::SourceKind::Postgres as i32);
    assert_eq!(origin.source, "postgres://app:***@db:5432/hr");
    assert_eq!(origin.query, "SELECT * FROM staff");
    assert_eq!(origin.ingest_id, ingest_id);
    assert!(dataset.lineage_history.iter().all(|e| e.time.is_some()));

    // The BASIC view leaves the history out.
    let basic = stack
        .catalog()
        .get_dataset(pb::GetDatasetRequest {
            name: "staff".to_owned(),
            view: pb::DatasetView::Basic as i32,
        })
        .await
        .expect("get")
        .into_inner()
        .dataset
        .expect("dataset");
    assert!(basic.lineage_history.is_empty());

    // ListLineageEvents pages through the same history, newest first.
    let request = |name: &str, token: &str| pb::ListLineageEventsRequest {
        name: name.to_owned(),
        page_size: 1,
        page_token: token.to_owned(),
    };
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .catalog()
            .list_lineage_events(request("staff", &token))
            .await
            .expect("list lineage events")
            .into_inner();
        assert_eq!(page.version, 2);
        pages += 1;
        listed.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2, "no empty last page");
    assert_eq!(listed, dataset.lineage_history);
    let lineage_token = stack
        .catalog()
        .list_lineage_events(request("staff", ""))
        .await
        .expect("list")
        .into_inner()
        .next_page_token;
    let files_token = stack
        .catalog()
        .list_dataset_files(pb::ListDatasetFilesRequest {
            name: "staff".to_owned(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("list files")
        .into_inner()
        .next_page_token;
    assert!(!files_token.is_empty());
    for (name, token, code) in [
        ("other", lineage_token.as_str(), Code::InvalidArgument),
        ("staff", files_token.as_str(), Code::InvalidArgument),
        ("staff", "v1.0011", Code::InvalidArgument),
        ("absent", "", Code::NotFound),
    ] {
        let status = stack
            .catalog()
            .list_lineage_events(request(name, token))
            .await
            .expect_err(name);
        assert_eq!(status.code(), code, "{name} {token}: {}", status.message());
    }
    stack.shutdown().await;
}
