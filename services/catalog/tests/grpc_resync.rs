//! The catalog through real gRPC: an in-process storage server (local
//! bucket) and an in-process catalog server on loopback sockets. Parquet
//! files are written with the parquet crate through storage; the catalog
//! reads them back only through storage.

#![allow(unused_crate_dependencies)]

mod common;

use common::{CatalogStack as _, Stack, batch, column, data_file, put_parquet};
use lakehouse_proto::catalog::v1 as pb;
use lakehouse_proto::storage::v1 as spb;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use tonic::Code;

async fn resync(stack: &Stack, name: &str, dry_run: bool) -> pb::ResyncReport {
    resync_allowing(stack, name, dry_run, false).await
}

async fn resync_allowing(
    stack: &Stack,
    name: &str,
    dry_run: bool,
    allow_row_loss: bool,
) -> pb::ResyncReport {
    stack
        .catalog()
        .resync_dataset(pb::ResyncDatasetRequest {
            name: name.to_owned(),
            dry_run,
            allow_row_loss,
        })
        .await
        .expect("resync")
        .into_inner()
        .report
        .expect("report")
}

fn changes(report: &pb::ResyncReport, kind: pb::FileChangeKind) -> Vec<&str> {
    report
        .file_changes
        .iter()
        .filter(|c| c.kind == kind as i32)
        .map(|c| c.key.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_from_footers() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let part = |i: usize| format!("datasets/sales/ing-1/part-{i:05}.parquet");
    let mut sizes = Vec::new();
    for i in 0..3 {
        sizes.push(put_parquet(&store, &part(i), &batch(100 * (i + 1), 0, true)).await);
    }
    // Not data files: ignored. A corrupt ".parquet": a problem, not fatal.
    for (key, bytes) in [
        ("datasets/sales/ing-1/notes.txt", &b"hello"[..]),
        (
            "datasets/sales/_tmp/part-00000.parquet",
            &b"half-written"[..],
        ),
        (
            "datasets/sales/ing-1/part-00099.parquet",
            &b"this is not parquet at all"[..],
        ),
    ] {
        store
            .put(&Path::from(key), PutPayload::from(bytes.to_vec()))
            .await
            .expect("put");
    }

    // A manifest with wrong row counts and a column missing.
    let registered = stack
        .catalog()
        .commit_files(pb::CommitFilesRequest {
            name: "sales".to_owned(),
            expected_version: Some(0),
            mode: pb::CommitMode::Append as i32,
            add_files: (0..3).map(|i| data_file(&part(i), sizes[i], 1)).collect(),
            remove_keys: vec![],
            schema: Some(pb::Schema {
                columns: vec![
                    column("id", "Int64", false),
                    column("value", "Float64", true),
                ],
            }),
            lineage: None,
            bucket: String::new(),
            request_id: String::new(),
        })
        .await
        .expect("register")
        .into_inner()
        .dataset
        .expect("dataset");
    assert_eq!(registered.bucket, "main", "the default bucket, resolved");
    assert_eq!(registered.row_count, 3);

    // Dry run: reports, changes nothing.
    let dry = resync(&stack, "sales", true).await;
    assert!(dry.drifted && !dry.applied);
    assert_eq!(dry.version, 1);
    let fields: Vec<&str> = dry.field_changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["row_count", "schema"]);
    assert_eq!(changes(&dry, pb::FileChangeKind::Updated).len(), 3);
    assert_eq!(dry.problems.len(), 1);
    assert_eq!(
        dry.problems[0].key,
        "datasets/sales/ing-1/part-00099.parquet"
    );
    assert!(
        dry.problems[0].error.contains("Parquet"),
        "{}",
        dry.problems[0].error
    );
    assert!(dry.bytes_read > 0);
    let unchanged = stack.dataset("sales", pb::DatasetView::Full).await;
    assert_eq!(unchanged, registered, "a dry run changes nothing");

    // The real thing.
    let applied = resync(&stack, "sales", false).await;
    assert!(applied.drifted && applied.applied);
    assert_eq!(applied.version, 2);
    let repaired = stack.dataset("sales", pb::DatasetView::Full).await;
    assert_eq!(repaired.version, 2);
    assert_eq!(repaired.row_count, 100 + 200 + 300);
    assert_eq!(repaired.size_bytes, sizes.iter().sum::<u64>());
    let rows: Vec<u64> = repaired.files.iter().map(|f| f.row_count).collect();
    assert_eq!(rows, [100, 200, 300]);
    assert!(repaired.files.iter().all(|f| !f.etag.is_empty()));
    assert_eq!(
        repaired.schema.expect("schema").columns,
        [
            column("id", "Int64", false),
            column("value", "Float64", true),
            column("label", "Utf8", true)
        ]
    );
    let lineage = repaired.lineage.expect("lineage");
    assert_eq!(lineage.source_kind, pb::SourceKind::Resync as i32);
    assert_eq!(lineage.rows, 600);

    // In sync now: nothing drifted (the corrupt file is still reported).
    let again = resync(&stack, "sales", false).await;
    assert!(!again.drifted && !again.applied);
    assert_eq!(again.version, 2);
    assert_eq!(again.problems.len(), 1);

    // A part added by hand appears; a deleted part disappears.
    put_parquet(&store, &part(3), &batch(50, 0, true)).await;
    store
        .delete(&Path::from(part(1)))
        .await
        .expect("delete part");
    // Dropping part 1 loses its rows: refused unless allowed.
    let refused = stack
        .catalog()
        .resync_dataset(pb::ResyncDatasetRequest {
            name: "sales".to_owned(),
            dry_run: false,
            allow_row_loss: false,
        })
        .await
        .expect_err("row loss is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        lakehouse_shared::status::error_reason(&refused).as_deref(),
        Some("ROW_LOSS")
    );
    assert_eq!(
        lakehouse_shared::status::error_metadata(&refused, "rows_lost").as_deref(),
        Some("200")
    );
    assert_eq!(
        lakehouse_shared::status::error_metadata(&refused, "files_lost").as_deref(),
        Some("1")
    );
    assert_eq!(
        lakehouse_shared::status::error_metadata(&refused, "file_keys"),
        Some(part(1))
    );
    assert!(
        refused.message().contains("allow_row_loss"),
        "{}",
        refused.message()
    );
    assert_eq!(
        stack.dataset("sales", pb::DatasetView::Full).await.version,
        2,
        "nothing changed"
    );
    let dry = resync(&stack, "sales", true).await;
    assert!(!dry.applied && !dry.refused_row_loss);
    assert_eq!((dry.rows_lost, dry.files_lost), (200, 1));
    let moved = resync_allowing(&stack, "sales", false, true).await;
    assert!(moved.applied);
    assert_eq!((moved.rows_lost, moved.files_lost), (200, 1));
    assert_eq!(
        changes(&moved, pb::FileChangeKind::Added),
        [part(3).as_str()]
    );
    assert_eq!(
        changes(&moved, pb::FileChangeKind::Removed),
        [part(1).as_str()]
    );
    let removed = moved
        .file_changes
        .iter()
        .find(|c| c.kind == pb::FileChangeKind::Removed as i32)
        .expect("removed");
    assert_eq!(removed.before.as_ref().map(|f| f.row_count), Some(200));
    assert!(removed.after.is_none());
    let after = stack.dataset("sales", pb::DatasetView::Full).await;
    assert_eq!(after.row_count, 100 + 300 + 50);
    assert_eq!(after.file_count, 3);

    // The unreadable footer is in the storage error journal.
    let journal = stack
        .storage_client()
        .list_errors(spb::ListErrorsRequest {
            bucket: String::new(),
            service: "catalog".to_owned(),
            since: None,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list errors")
        .into_inner();
    assert!(
        journal
            .errors
            .iter()
            .any(|e| e.key == "datasets/sales/ing-1/part-00099.parquet"),
        "{:?}",
        journal.errors
    );
    // So is the row loss that was allowed.
    assert!(
        journal
            .errors
            .iter()
            .any(|e| e.key == part(1) && e.message.contains("200 row")),
        "{:?}",
        journal.errors
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_missing_repairs_only_drifted_datasets() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let mut catalog = stack.catalog();
    for (name, rows) in [("healthy", 10), ("stale", 20), ("nostats", 30)] {
        let key = format!("datasets/{name}/i/part-00000.parquet");
        let size = put_parquet(&store, &key, &batch(rows, 0, false)).await;
        let registered_rows = if name == "nostats" { 0 } else { rows as u64 };
        catalog
            .commit_files(pb::CommitFilesRequest {
                name: name.to_owned(),
                expected_version: Some(0),
                mode: pb::CommitMode::Replace as i32,
                add_files: vec![data_file(&key, size, registered_rows)],
                remove_keys: vec![],
                schema: Some(pb::Schema {
                    columns: vec![
                        column("id", "Int64", false),
                        column("value", "Float64", true),
                    ],
                }),
                lineage: None,
                bucket: "main".to_owned(),
                request_id: String::new(),
            })
            .await
            .expect("register");
    }
    // "stale" gains a part nobody committed.
    put_parquet(
        &store,
        "datasets/stale/j/part-00000.parquet",
        &batch(5, 0, false),
    )
    .await;

    let dry = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: true,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert_eq!(dry.datasets_checked, 3);
    let mut names: Vec<&str> = dry.reports.iter().map(|r| r.dataset.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["nostats", "stale"]);
    assert!(dry.reports.iter().all(|r| !r.applied));

    let applied = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: false,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert_eq!(applied.reports.len(), 2);
    assert!(applied.reports.iter().all(|r| r.applied));
    assert_eq!(
        stack
            .dataset("stale", pb::DatasetView::Full)
            .await
            .row_count,
        25
    );
    assert_eq!(
        stack
            .dataset("nostats", pb::DatasetView::Full)
            .await
            .row_count,
        30
    );
    assert_eq!(
        stack
            .dataset("healthy", pb::DatasetView::Full)
            .await
            .version,
        1,
        "left alone"
    );

    let clean = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: false,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert!(clean.reports.is_empty(), "{:?}", clean.reports);
    stack.shutdown().await;
}

/// Resync reads footers only: a small fraction of the bytes stored,
/// counted where storage serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_reads_only_footers() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let mut stored = 0;
    // About 4 MB each: 250k rows of two 8-byte columns, plain encoding.
    for i in 0..4 {
        let key = format!("datasets/big/i/part-{i:05}.parquet");
        stored += put_parquet(&store, &key, &batch(250_000, i * 250_000, false)).await;
    }
    assert!(stored > 15_000_000, "files are large: {stored}");
    stack
        .catalog()
        .create_dataset(pb::CreateDatasetRequest {
            name: "big".to_owned(),
            bucket: String::new(),
            description: String::new(),
            schema: None,
        })
        .await
        .expect("create");

    let before = stack.served();
    let report = resync(&stack, "big", false).await;
    let served = stack.served() - before;
    assert!(report.applied);
    assert_eq!(changes(&report, pb::FileChangeKind::Added).len(), 4);
    assert_eq!(
        stack.dataset("big", pb::DatasetView::Full).await.row_count,
        1_000_000
    );
    eprintln!(
        "resync of {stored} bytes: storage served {served} bytes, the report counts {}",
        report.bytes_read
    );
    assert!(served > 0 && report.bytes_read > 0);
    assert!(
        served * 100 < stored,
        "resync read {served} of {stored} bytes: more than 1%"
    );
    assert!(report.bytes_read <= served);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_secrets_are_redacted() {
    let stack = Stack::start().await;
    let mut catalog = stack.catalog();
    for (name, source) in [
        ("from.url", "postgres://u:hunter2@h/db"),
        ("from.dsn", "host=h user=u password=hunter2 dbname=db"),
    ] {
        let committed = catalog
            .commit_files(pb::CommitFilesRequest {
                name: name.to_owned(),
                expected_version: Some(0),
                mode: pb::CommitMode::Append as i32,
                add_files: vec![],
                remove_keys: vec![],
                schema: None,
                lineage: Some(pb::Lineage {
                    source_kind: pb::SourceKind::Postgres as i32,
                    source: source.to_owned(),
                    query: "employees".to_owned(),
                    ..Default::default()
                }),
                bucket: String::new(),
                request_id: String::new(),
            })
            .await
            .expect("commit")
            .into_inner()
            .dataset
            .expect("dataset");
        let stored = stack.dataset(name, pb::DatasetView::Full).await;
        for dataset in [committed, stored] {
            let lineage = dataset.lineage.expect("lineage");
            assert!(!lineage.source.contains("hunter2"), "{}", lineage.source);
            assert!(lineage.source.contains("***"), "{}", lineage.source);
        }
    }
    let listed = catalog
        .list_datasets(pb::ListDatasetsRequest {
            name_prefix: "from.".to_owned(),
            page_size: 0,
            page_token: String::new(),
            view: pb::DatasetView::Full as i32,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.datasets.len(), 2);
    assert_eq!(
        listed.datasets[1]
            .lineage
            .as_ref()
            .map(|l| l.source.as_str()),
        Some("postgres://u:***@h/db")
    );
    // And nothing of it in the database file either.
    let raw = std::fs::read(stack.catalog_db()).expect("read sqlite file");
    let wal = std::fs::read(stack.catalog_db().with_extension("sqlite-wal")).unwrap_or_default();
    let needle = b"hunter2";
    for bytes in [&raw, &wal] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_right_codes() {
    let stack = Stack::start().await;
    let mut catalog = stack.catalog();
    let create = |name: &str, bucket: &str| pb::CreateDatasetRequest {
        name: name.to_owned(),
        bucket: bucket.to_owned(),
        description: String::new(),
        schema: None,
    };
    let code = |r: Result<tonic::Response<pb::CreateDatasetResponse>, tonic::Status>| {
        r.expect_err("must fail").code()
    };
    assert_eq!(
        code(catalog.create_dataset(create("Bad Name", "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(catalog.create_dataset(create("x", "nope")).await),
        Code::InvalidArgument
    );
    catalog
        .create_dataset(create("x", "main"))
        .await
        .expect("create");
    assert_eq!(
        code(catalog.create_dataset(create("x", "")).await),
        Code::AlreadyExists
    );
    let status = catalog
        .get_dataset(pb::GetDatasetRequest {
            name: "missing".to_owned(),
            view: 0,
        })
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        lakehouse_shared::status::error_reason(&status).as_deref(),
        Some("DATASET_NOT_FOUND")
    );

    let stale = catalog
        .commit_files(pb::CommitFilesRequest {
            name: "x".to_owned(),
            expected_version: Some(7),
            mode: pb::CommitMode::Append as i32,
            ..Default::default()
        })
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    assert!(stale.message().contains("version 1"), "{}", stale.message());
    // A client reads the conflict from ErrorInfo, not from the text.
    assert_eq!(
        lakehouse_shared::status::error_reason(&stale).as_deref(),
        Some("VERSION_MISMATCH")
    );
    assert_eq!(
        lakehouse_shared::status::error_metadata(&stale, "current_version").as_deref(),
        Some("1")
    );
    let no_mode = catalog
        .commit_files(pb::CommitFilesRequest {
            name: "x".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("no mode");
    assert_eq!(no_mode.code(), Code::InvalidArgument);

    // DeleteDataset with files: the manifest and everything under its prefix.
    let store = stack.object_store();
    let key = "datasets/x/i/part-00000.parquet";
    let size = put_parquet(&store, key, &batch(10, 0, false)).await;
    put_parquet(
        &store,
        "datasets/x/_tmp/leftover.parquet",
        &batch(1, 0, false),
    )
    .await;
    catalog
        .commit_files(pb::CommitFilesRequest {
            name: "x".to_owned(),
            expected_version: Some(1),
            mode: pb::CommitMode::Append as i32,
            add_files: vec![data_file(key, size, 10)],
            schema: Some(pb::Schema {
                columns: vec![
                    column("id", "Int64", false),
                    column("value", "Float64", true),
                ],
            }),
            ..Default::default()
        })
        .await
        .expect("commit");
    let stale_delete = catalog
        .delete_dataset(pb::DeleteDatasetRequest {
            name: "x".to_owned(),
            delete_files: true,
            expected_version: Some(1),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(stale_delete.code(), Code::Aborted);
    let deleted = catalog
        .delete_dataset(pb::DeleteDatasetRequest {
            name: "x".to_owned(),
            delete_files: true,
            expected_version: Some(2),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.deleted_files, 2);
    assert!(store.head(&Path::from(key)).await.is_err(), "file deleted");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let runtime = lakehouse_catalog::CatalogRuntime::start(
        &lakehouse_testkit::catalog_config(),
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
    )
    .await
    .expect("starts without storage: it connects lazily");
    let status = runtime
        .catalog()
        .create(lakehouse_catalog::model::NewDataset {
            name: lakehouse_catalog::model::DatasetName::parse("x").expect("name"),
            bucket: String::new(),
            description: String::new(),
            schema: Default::default(),
        })
        .await
        .map(|_| ())
        .map_err(tonic::Status::from)
        .expect_err("storage is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("storage"), "{}", status.message());
    runtime.shutdown().await;
}

/// An ingest killed mid-way leaves finished parts under its ingest-id
/// folder; only its commit makes them data, so a resync never adopts them
/// (a 1M-row dataset once became 1.44M rows this way). It reports them,
/// and they alone are not drift. Parts the manifest holds in such a folder
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_never_adopts_uncommitted_ingest_parts() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let mut catalog = stack.catalog();
    let committed_id = "20261126T031700Z-abcdef123456";
    let killed_id = "20261126T041700Z-0123456789ab";
    let committed = format!("datasets/people/{committed_id}/part-00000.parquet");
    let size = put_parquet(&store, &committed, &batch(100, 0, false)).await;
    catalog
        .commit_files(pb::CommitFilesRequest {
            name: "people".to_owned(),
            expected_version: Some(0),
            mode: pb::CommitMode::Append as i32,
            add_files: vec![data_file(&committed, size, 100)],
            schema: Some(pb::Schema {
                columns: vec![
                    column("id", "Int64", false),
                    column("value", "Float64", true),
                ],
            }),
            ..Default::default()
        })
        .await
        .expect("commit");
    // The killed ingest's finished parts.
    let leftovers: Vec<String> = (0..2)
        .map(|i| format!("datasets/people/{killed_id}/part-{i:05}.parquet"))
        .collect();
    for key in &leftovers {
        put_parquet(&store, key, &batch(22, 0, false)).await;
    }

    let report = resync(&stack, "people", false).await;
    assert!(!report.drifted && !report.applied, "{report:?}");
    assert_eq!(report.uncommitted_keys, leftovers);
    assert!(report.file_changes.is_empty(), "{report:?}");
    let dataset = stack.dataset("people", pb::DatasetView::Full).await;
    assert_eq!((dataset.row_count, dataset.version), (100, 1));

    let missing = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: false,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert!(missing.reports.is_empty(), "{:?}", missing.reports);
    assert_eq!(
        stack
            .dataset("people", pb::DatasetView::Full)
            .await
            .row_count,
        100
    );

    // With real drift too (a hand-placed part outside any ingest folder is
    // still adopted), the leftovers stay out and are reported.
    put_parquet(
        &store,
        "datasets/people/manual/part-00000.parquet",
        &batch(5, 0, false),
    )
    .await;
    let repaired = resync(&stack, "people", false).await;
    assert!(repaired.applied);
    assert_eq!(
        changes(&repaired, pb::FileChangeKind::Added),
        ["datasets/people/manual/part-00000.parquet"]
    );
    assert_eq!(repaired.uncommitted_keys, leftovers);
    let dataset = stack.dataset("people", pb::DatasetView::Full).await;
    assert_eq!(dataset.row_count, 105);
    assert!(dataset.files.iter().any(|f| f.key == committed));
    stack.shutdown().await;
}

/// ResyncMissing without allow_row_loss leaves a dataset that would lose
/// rows unchanged (reporting it) and still repairs the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_missing_refuses_row_loss_per_dataset() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let mut catalog = stack.catalog();
    for name in ["losing", "growing"] {
        let key = format!("datasets/{name}/i/part-00000.parquet");
        let size = put_parquet(&store, &key, &batch(10, 0, false)).await;
        catalog
            .commit_files(pb::CommitFilesRequest {
                name: name.to_owned(),
                expected_version: Some(0),
                mode: pb::CommitMode::Append as i32,
                add_files: vec![data_file(&key, size, 10)],
                schema: Some(pb::Schema {
                    columns: vec![
                        column("id", "Int64", false),
                        column("value", "Float64", true),
                    ],
                }),
                ..Default::default()
            })
            .await
            .expect("commit");
    }
    store
        .delete(&Path::from("datasets/losing/i/part-00000.parquet"))
        .await
        .expect("delete");
    put_parquet(
        &store,
        "datasets/growing/j/part-00000.parquet",
        &batch(5, 0, false),
    )
    .await;

    let report = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: false,
            allow_row_loss: false,
        })
        .await
        .expect("resync missing")
        .into_inner();
    let losing = report
        .reports
        .iter()
        .find(|r| r.dataset == "losing")
        .expect("losing reported");
    assert!(losing.refused_row_loss && !losing.applied, "{losing:?}");
    assert_eq!((losing.rows_lost, losing.files_lost), (10, 1));
    let growing = report
        .reports
        .iter()
        .find(|r| r.dataset == "growing")
        .expect("growing reported");
    assert!(growing.applied && !growing.refused_row_loss);
    assert_eq!(
        stack
            .dataset("losing", pb::DatasetView::Full)
            .await
            .row_count,
        10,
        "left unchanged"
    );
    assert_eq!(
        stack
            .dataset("growing", pb::DatasetView::Full)
            .await
            .row_count,
        15
    );

    let allowed = catalog
        .resync_missing(pb::ResyncMissingRequest {
            dry_run: false,
            allow_row_loss: true,
        })
        .await
        .expect("resync missing")
        .into_inner();
    assert_eq!(allowed.reports.len(), 1);
    assert!(allowed.reports[0].applied);
    let losing = stack.dataset("losing", pb::DatasetView::Full).await;
    assert_eq!((losing.row_count, losing.file_count), (0, 0));
    stack.shutdown().await;
}
