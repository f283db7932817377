//! One conformance suite over the `CatalogStore` trait, run against SQLite
//! and PostgreSQL (Quickwit's `metastore_test_suite!` style: the macro at
//! the bottom expands every case into one test per backend, so a failure
//! names both).
//!
//! PostgreSQL comes from LAKEHOUSE_TEST_PG_URL (the test kit's gate: unset
//! or unreachable, the tests skip loudly, or fail under
//! LAKEHOUSE_TEST_REQUIRE_ALL=1); each test gets a fresh, randomly named
//! schema, dropped afterwards.

#![allow(unused_crate_dependencies)]

use std::sync::Arc;

use chrono::Utc;
use lakehouse_catalog::Error;
use lakehouse_catalog::model::{
    Column, Commit, CommitMode, DataFile, DatasetName, LINEAGE_HISTORY_LIMIT, Lineage,
    LineageEventKind, ListQuery, NewDataset, Schema, SourceKind, View,
};
use lakehouse_catalog::store::{CatalogStore, PostgresStore, SqliteStore, StoreOptions};
use lakehouse_testkit::{pg_url, unique};
use sqlx::Connection as _;

fn name(text: &str) -> DatasetName {
    DatasetName::parse(text).expect("valid name")
}

fn schema(columns: &[(&str, &str)]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| {
                Column::parse((*name).to_owned(), data_type, true).expect("an Arrow type")
            })
            .collect(),
    )
    .expect("valid schema")
}

fn file(key: &str, rows: u64) -> DataFile {
    DataFile {
        key: key.to_owned(),
        size_bytes: rows * 10,
        row_count: rows,
        etag: format!("etag-{key}"),
    }
}

fn new_dataset(text: &str) -> NewDataset {
    NewDataset {
        name: name(text),
        bucket: "main".to_owned(),
        description: format!("about {text}"),
        schema: Schema::default(),
    }
}

fn commit(text: &str, expected: Option<u64>, mode: CommitMode, files: Vec<DataFile>) -> Commit {
    Commit {
        name: name(text),
        expected_version: expected,
        mode,
        add_files: files,
        remove_keys: Vec::new(),
        schema: Some(schema(&[("id", "Int64"), ("v", "Utf8")])),
        lineage: None,
        bucket: "main".to_owned(),
        request_id: None,
    }
}

mod cases {
    use super::*;

    pub async fn create_get_delete(store: Arc<dyn CatalogStore>) {
        let created = store.create(new_dataset("alpha")).await.expect("create");
        assert_eq!(created.version, 1);
        assert_eq!(created.bucket, "main");
        assert_eq!(created.description, "about alpha");
        assert_eq!(created.file_count, 0);

        let full = store.get(&name("alpha"), View::Full).await.expect("get");
        assert_eq!(full.files.as_deref(), Some(&[][..]));
        assert_eq!(full.version, 1);
        let basic = store.get(&name("alpha"), View::Basic).await.expect("get");
        assert!(basic.files.is_none());

        match store.create(new_dataset("alpha")).await {
            Err(Error::AlreadyExists { .. }) => {}
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        match store.get(&name("beta"), View::Full).await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }

        let deleted = store.delete(&name("alpha"), None).await.expect("delete");
        assert_eq!(deleted.version, 1);
        assert!(matches!(
            store.get(&name("alpha"), View::Basic).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(&name("alpha"), None).await,
            Err(Error::NotFound { .. })
        ));
        // The name can be used again, from version 1.
        let again = store.create(new_dataset("alpha")).await.expect("recreate");
        assert_eq!(again.version, 1);
    }

    pub async fn list_pages_by_name(store: Arc<dyn CatalogStore>) {
        let mut names: Vec<String> = (0..23).map(|i| format!("hr.t{i:02}")).collect();
        names.extend(["fin.a", "fin.b", "hr-x", "hr_y", "hrz"].map(String::from));
        for n in &names {
            store.create(new_dataset(n)).await.expect("create");
        }
        names.sort();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(&ListQuery {
                    prefix: String::new(),
                    after: after.clone(),
                    limit: 10,
                    view: View::Basic,
                })
                .await
                .expect("list");
            assert!(page.len() <= 10);
            assert!(page.iter().all(|d| d.files.is_none()));
            let Some(last) = page.last() else { break };
            after = Some(last.name.as_str().to_owned());
            seen.extend(page.iter().map(|d| d.name.as_str().to_owned()));
        }
        assert_eq!(seen, names, "every dataset once, in byte order");

        let prefixed = store
            .list(&ListQuery {
                prefix: "hr.".to_owned(),
                after: None,
                limit: 100,
                view: View::Full,
            })
            .await
            .expect("list prefix");
        assert_eq!(prefixed.len(), 23);
        assert!(prefixed.iter().all(|d| d.name.as_str().starts_with("hr.")));
        assert!(prefixed.iter().all(|d| d.files.is_some()));

        let second_page = store
            .list(&ListQuery {
                prefix: "hr.".to_owned(),
                after: Some("hr.t19".to_owned()),
                limit: 100,
                view: View::Basic,
            })
            .await
            .expect("list after");
        let got: Vec<&str> = second_page.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(got, ["hr.t20", "hr.t21", "hr.t22"]);
    }

    pub async fn commit_versions_and_totals(store: Arc<dyn CatalogStore>) {
        // Unset expected_version on a missing dataset: NOT_FOUND.
        assert!(matches!(
            store
                .commit(commit(
                    "sales",
                    None,
                    CommitMode::Append,
                    vec![file("a", 1)]
                ))
                .await,
            Err(Error::NotFound { .. })
        ));
        // N > 0 on a missing dataset: NOT_FOUND.
        assert!(matches!(
            store
                .commit(commit("sales", Some(3), CommitMode::Append, vec![]))
                .await,
            Err(Error::NotFound { .. })
        ));
        // 0 creates.
        let created = store
            .commit(commit(
                "sales",
                Some(0),
                CommitMode::Append,
                vec![file("datasets/sales/i1/part-00000.parquet", 5)],
            ))
            .await
            .expect("create by commit");
        assert_eq!(created.version, 1);
        assert_eq!(
            (created.file_count, created.row_count, created.size_bytes),
            (1, 5, 50)
        );
        // 0 again: it exists now.
        assert!(matches!(
            store
                .commit(commit("sales", Some(0), CommitMode::Append, vec![]))
                .await,
            Err(Error::VersionConflict {
                expected: 0,
                actual: 1,
                ..
            })
        ));

        let appended = store
            .commit(commit(
                "sales",
                Some(1),
                CommitMode::Append,
                vec![file("datasets/sales/i2/part-00000.parquet", 7)],
            ))
            .await
            .expect("append");
        assert_eq!(appended.version, 2);
        assert_eq!((appended.file_count, appended.row_count), (2, 12));

        // Stale: ABORTED and nothing changes.
        let before = store.get(&name("sales"), View::Full).await.expect("get");
        assert!(matches!(
            store
                .commit(commit(
                    "sales",
                    Some(1),
                    CommitMode::Replace,
                    vec![file("datasets/sales/x.parquet", 1)]
                ))
                .await,
            Err(Error::VersionConflict {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert_eq!(
            store.get(&name("sales"), View::Full).await.expect("get"),
            before
        );

        // APPEND with another schema: refused, nothing changes.
        let mut other_schema = commit(
            "sales",
            Some(2),
            CommitMode::Append,
            vec![file("datasets/sales/i3/p.parquet", 1)],
        );
        other_schema.schema = Some(schema(&[("id", "Int32")]));
        assert!(matches!(
            store.commit(other_schema).await,
            Err(Error::Precondition { .. })
        ));
        // Removing a key that is not there: refused, nothing changes.
        let mut bad_remove = commit(
            "sales",
            Some(2),
            CommitMode::Append,
            vec![file("datasets/sales/i3/p.parquet", 1)],
        );
        bad_remove.remove_keys = vec!["datasets/sales/nope.parquet".to_owned()];
        assert!(matches!(
            store.commit(bad_remove).await,
            Err(Error::Precondition { .. })
        ));
        assert_eq!(
            store.get(&name("sales"), View::Full).await.expect("get"),
            before
        );

        // Remove one, add one, no version check.
        let mut swap = commit(
            "sales",
            None,
            CommitMode::Append,
            vec![file("datasets/sales/i3/part-00000.parquet", 100)],
        );
        swap.remove_keys = vec!["datasets/sales/i1/part-00000.parquet".to_owned()];
        swap.schema = None;
        let swapped = store.commit(swap).await.expect("swap");
        assert_eq!(swapped.version, 3);
        assert_eq!((swapped.file_count, swapped.row_count), (2, 107));
        let keys: Vec<&str> = swapped
            .files
            .as_deref()
            .expect("files")
            .iter()
            .map(|f| f.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "datasets/sales/i2/part-00000.parquet",
                "datasets/sales/i3/part-00000.parquet"
            ]
        );

        // REPLACE with a new schema.
        let mut replace = commit(
            "sales",
            Some(3),
            CommitMode::Replace,
            vec![file("datasets/sales/i4/part-00000.parquet", 9)],
        );
        replace.schema = Some(schema(&[("id", "Int32")]));
        let replaced = store.commit(replace).await.expect("replace");
        assert_eq!(replaced.version, 4);
        assert_eq!((replaced.file_count, replaced.row_count), (1, 9));
        assert_eq!(replaced.schema, schema(&[("id", "Int32")]));
        assert!(replaced.update_time >= replaced.create_time);

        // Delete at a stale version: ABORTED, still there.
        assert!(matches!(
            store.delete(&name("sales"), Some(3)).await,
            Err(Error::VersionConflict { .. })
        ));
        let gone = store.delete(&name("sales"), Some(4)).await.expect("delete");
        assert_eq!(gone.files.as_deref().map(<[DataFile]>::len), Some(1));
    }

    pub async fn concurrent_commits_one_wins(store: Arc<dyn CatalogStore>) {
        store
            .commit(commit("race", Some(0), CommitMode::Append, vec![]))
            .await
            .expect("create");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .commit(commit(
                            "race",
                            Some(1),
                            CommitMode::Append,
                            vec![file(&format!("datasets/race/w{i}.parquet"), 1)],
                        ))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        let mut aborted = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(dataset) => {
                    wins += 1;
                    assert_eq!(dataset.version, 2);
                }
                Err(Error::VersionConflict { .. }) => aborted += 1,
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!((wins, aborted), (1, 7));
        let after = store.get(&name("race"), View::Full).await.expect("get");
        assert_eq!(after.version, 2);
        assert_eq!(after.file_count, 1, "the losers changed nothing");

        // Concurrent creation with expected_version 0: one wins too.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .commit(commit(
                            "race2",
                            Some(0),
                            CommitMode::Append,
                            vec![file(&format!("datasets/race2/w{i}.parquet"), 1)],
                        ))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => wins += 1,
                Err(Error::VersionConflict { .. }) => {}
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(wins, 1);

        // Without a version check every commit lands, one after the other.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut c = commit(
                        "race",
                        None,
                        CommitMode::Append,
                        vec![file(&format!("datasets/race/u{i}.parquet"), 1)],
                    );
                    c.schema = None;
                    store.commit(c).await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("unchecked commit lands");
        }
        let after = store.get(&name("race"), View::Basic).await.expect("get");
        assert_eq!((after.version, after.file_count), (8, 7));
    }

    pub async fn lineage_is_stored_redacted(store: Arc<dyn CatalogStore>) {
        let started = Utc::now();
        let mut c = commit(
            "pg.employees",
            Some(0),
            CommitMode::Replace,
            vec![file("datasets/pg.employees/i/part-00000.parquet", 3)],
        );
        // The store redacts again even if a caller forgot to.
        c.lineage = Some(Lineage {
            source_kind: SourceKind::Postgres,
            source: "postgres://u:hunter2@h/db".to_owned(),
            query: "SELECT * FROM employees".to_owned(),
            ingest_id: "ing-1".to_owned(),
            start_time: Some(started),
            finish_time: Some(started),
            snapshot_time: None,
            rows: 3,
            bytes: 30,
        });
        let stored = store.commit(c).await.expect("commit");
        let read = store
            .get(&name("pg.employees"), View::Basic)
            .await
            .expect("get");
        for lineage in [&stored.lineage, &read.lineage] {
            assert_eq!(lineage.source, "postgres://u:***@h/db");
            assert_eq!(lineage.source_kind, SourceKind::Postgres);
            assert_eq!(lineage.ingest_id, "ing-1");
            assert_eq!(
                lineage.start_time.map(|t| t.timestamp_micros()),
                Some(started.timestamp_micros())
            );
            assert_eq!(lineage.snapshot_time, None);
        }
    }

    pub async fn lineage_history_keeps_every_event(store: Arc<dyn CatalogStore>) {
        let mut first = commit(
            "hr.staff",
            Some(0),
            CommitMode::Replace,
            vec![file("datasets/hr.staff/i/part-00000.parquet", 3)],
        );
        first.lineage = Some(Lineage {
            source_kind: SourceKind::Postgres,
            source: "postgres://u:hunter2@h/db".to_owned(),
            query: "SELECT * FROM staff".to_owned(),
            ingest_id: "20261126T031700Z-abcdef123456".to_owned(),
            rows: 3,
            ..Default::default()
        });
        store.commit(first).await.expect("commit");
        // A commit without lineage keeps the dataset's, and is recorded.
        let mut plain = commit(
            "hr.staff",
            Some(1),
            CommitMode::Append,
            vec![file("datasets/hr.staff/i/part-00001.parquet", 2)],
        );
        plain.schema = None;
        store.commit(plain).await.expect("commit");
        let mut resync = commit(
            "hr.staff",
            Some(2),
            CommitMode::Replace,
            vec![file("datasets/hr.staff/i/part-00000.parquet", 3)],
        );
        resync.lineage = Some(Lineage {
            source_kind: SourceKind::Resync,
            source: "main/datasets/hr.staff/".to_owned(),
            rows: 3,
            ..Default::default()
        });
        let after = store.commit(resync).await.expect("resync commit");
        let read = store.get(&name("hr.staff"), View::Full).await.expect("get");
        assert_eq!(read, after);
        assert_eq!(read.lineage.source_kind, SourceKind::Resync, "the latest");
        let history: Vec<(u64, LineageEventKind, SourceKind)> = read
            .lineage_history
            .iter()
            .map(|e| (e.dataset_version, e.kind, e.lineage.source_kind))
            .collect();
        assert_eq!(
            history,
            [
                (3, LineageEventKind::Resync, SourceKind::Resync),
                (2, LineageEventKind::Commit, SourceKind::Unspecified),
                (1, LineageEventKind::Commit, SourceKind::Postgres),
            ]
        );
        let origin = &read.lineage_history[2].lineage;
        assert_eq!(origin.source, "postgres://u:***@h/db", "redacted");
        assert_eq!(origin.query, "SELECT * FROM staff");
        assert_eq!(origin.ingest_id, "20261126T031700Z-abcdef123456");
        let basic = store
            .get(&name("hr.staff"), View::Basic)
            .await
            .expect("get");
        assert!(basic.lineage_history.is_empty(), "FULL view only");
        // Gone with the dataset: a new one of that name starts afresh.
        store.delete(&name("hr.staff"), None).await.expect("delete");
        let again = store
            .commit(commit(
                "hr.staff",
                Some(0),
                CommitMode::Replace,
                vec![file("datasets/hr.staff/j/part-00000.parquet", 1)],
            ))
            .await
            .expect("recreate");
        assert_eq!(again.lineage_history.len(), 1);
    }

    pub async fn append_may_add_nullable_columns(store: Arc<dyn CatalogStore>) {
        let col = |n: &str, t: &str, nullable: bool| {
            Column::parse(n.to_owned(), t, nullable).expect("an Arrow type")
        };
        let base =
            Schema::new(vec![col("id", "Int64", false), col("v", "Utf8", true)]).expect("valid");
        let mut first = commit(
            "wide",
            Some(0),
            CommitMode::Append,
            vec![file("datasets/wide/i/part-00000.parquet", 3)],
        );
        first.schema = Some(base.clone());
        store.commit(first).await.expect("commit");
        let append = |schema: Schema, key: &str| {
            let mut c = commit("wide", None, CommitMode::Append, vec![file(key, 1)]);
            c.schema = Some(schema);
            c
        };
        // Refused: a new column that is not nullable, a removed one, a
        // changed type. Nothing changes.
        for refused in [
            Schema::new(vec![
                col("id", "Int64", false),
                col("v", "Utf8", true),
                col("w", "Float64", false),
            ]),
            Schema::new(vec![col("id", "Int64", false)]),
            Schema::new(vec![col("id", "Int32", false), col("v", "Utf8", true)]),
        ] {
            let refused = refused.expect("valid");
            match store
                .commit(append(refused, "datasets/wide/j/part-00000.parquet"))
                .await
            {
                Err(Error::Precondition { reason, .. }) => {
                    assert!(reason.contains("does not match"), "{reason}")
                }
                other => panic!("expected a precondition failure, got {other:?}"),
            }
        }
        assert_eq!(
            store
                .get(&name("wide"), View::Basic)
                .await
                .expect("get")
                .version,
            1
        );
        // Accepted: the same plus a nullable column, in the old type's
        // printed form from another Arrow version.
        let wider = Schema::new(vec![
            col("id", "Int64", false),
            col("v", "Utf8", true),
            col("at", "Timestamp(Microsecond, Some(\"UTC\"))", true),
        ])
        .expect("valid");
        let widened = store
            .commit(append(wider.clone(), "datasets/wide/j/part-00000.parquet"))
            .await
            .expect("widening append");
        assert_eq!(widened.version, 2);
        assert_eq!(widened.schema, wider);
        assert_eq!(widened.file_count, 2);
        let change = &widened.lineage_history[0];
        assert_eq!(
            (change.dataset_version, change.kind),
            (2, LineageEventKind::SchemaChange)
        );
        assert_eq!(change.added_columns, ["at"]);
        // The old, narrower schema is now "a removed column": refused.
        assert!(matches!(
            store
                .commit(append(base, "datasets/wide/k/part-00000.parquet"))
                .await,
            Err(Error::Precondition { .. })
        ));
    }

    pub async fn ten_thousand_files(store: Arc<dyn CatalogStore>) {
        let files: Vec<DataFile> = (0..10_000)
            .map(|i| file(&format!("datasets/big/i/part-{i:05}.parquet"), 2))
            .collect();
        let started = std::time::Instant::now();
        let created = store
            .commit(commit("big", Some(0), CommitMode::Append, files))
            .await
            .expect("commit 10k files");
        assert_eq!((created.file_count, created.row_count), (10_000, 20_000));
        // Appending one file touches one row, not the 10k.
        let appended = store
            .commit(commit(
                "big",
                Some(1),
                CommitMode::Append,
                vec![file("datasets/big/j/part-00000.parquet", 1)],
            ))
            .await
            .expect("append");
        assert_eq!(appended.file_count, 10_001);
        let full = store.get(&name("big"), View::Full).await.expect("get");
        assert_eq!(full.files.as_deref().map(<[DataFile]>::len), Some(10_001));
        eprintln!("10k-file commit + append + read: {:?}", started.elapsed());
    }

    /// A commit retried with its request id is applied once: the retry gets
    /// the first commit's result even after another commit, and an id used
    /// for one dataset is refused for another.
    pub async fn retried_commit_applied_once(store: Arc<dyn CatalogStore>) {
        let with_id = |mut commit: Commit, id: &str| {
            commit.request_id = Some(id.to_owned());
            commit
        };
        let first = with_id(
            commit(
                "sales",
                Some(0),
                CommitMode::Append,
                vec![file("datasets/sales/i1/part-00000.parquet", 5)],
            ),
            "req-1",
        );
        let original = store.commit(first.clone()).await.expect("first commit");
        assert_eq!((original.version, original.file_count), (1, 1));

        let between = store
            .commit(with_id(
                commit(
                    "sales",
                    None,
                    CommitMode::Append,
                    vec![file("datasets/sales/i2/part-00000.parquet", 7)],
                ),
                "req-2",
            ))
            .await
            .expect("commit in between");
        assert_eq!(between.version, 2);

        // The retry (expected_version 0 would conflict if it ran again)
        // answers with the first result and changes nothing.
        let replayed = store.commit(first.clone()).await.expect("retry");
        assert_eq!(replayed, original);
        let now = store.get(&name("sales"), View::Full).await.expect("get");
        assert_eq!((now.version, now.file_count, now.row_count), (2, 2, 12));
        let (used_for, recorded) = store
            .find_commit("req-1")
            .await
            .expect("find")
            .expect("recorded");
        assert_eq!((used_for.as_str(), recorded.version), ("sales", 1));
        assert!(store.find_commit("req-9").await.expect("find").is_none());

        // An unchecked append retried: applied once.
        let append = with_id(
            commit(
                "sales",
                None,
                CommitMode::Append,
                vec![file("datasets/sales/i3/part-00000.parquet", 1)],
            ),
            "req-3",
        );
        let once = store.commit(append.clone()).await.expect("append");
        let twice = store.commit(append).await.expect("append retried");
        assert_eq!(once, twice);
        let now = store.get(&name("sales"), View::Basic).await.expect("get");
        assert_eq!((now.version, now.file_count, now.row_count), (3, 3, 13));

        // The same id for another dataset: refused, nothing created.
        match store
            .commit(with_id(
                commit("other", Some(0), CommitMode::Append, vec![]),
                "req-1",
            ))
            .await
        {
            Err(Error::RequestIdReused { used_for, .. }) => assert_eq!(used_for, "sales"),
            other => panic!("expected RequestIdReused, got {other:?}"),
        }
        assert!(matches!(
            store.get(&name("other"), View::Basic).await,
            Err(Error::NotFound { .. })
        ));

        // Concurrent calls with one id: one commit, every caller the same answer.
        let racing = with_id(
            commit(
                "sales",
                None,
                CommitMode::Append,
                vec![file("datasets/sales/i4/part-00000.parquet", 2)],
            ),
            "req-4",
        );
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                let racing = racing.clone();
                tokio::spawn(async move { store.commit(racing).await })
            })
            .collect();
        let mut versions = Vec::new();
        for call in calls {
            versions.push(call.await.expect("join").expect("commit").version);
        }
        assert!(versions.iter().all(|v| *v == 4), "{versions:?}");
        let now = store.get(&name("sales"), View::Basic).await.expect("get");
        assert_eq!((now.version, now.file_count), (4, 4));
    }

    /// ListDatasetFiles' store side: pages by key cover every file once.
    pub async fn files_are_listed_in_pages(store: Arc<dyn CatalogStore>) {
        let files: Vec<DataFile> = (0..23)
            .map(|i| file(&format!("datasets/many/p/part-{i:05}.parquet"), 1))
            .collect();
        store
            .commit(commit("many", Some(0), CommitMode::Append, files.clone()))
            .await
            .expect("commit");
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (version, page) = store
                .list_files(&name("many"), after.as_deref(), 10)
                .await
                .expect("list files");
            assert_eq!(version, 1);
            assert!(page.len() <= 10);
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            seen.extend(page);
        }
        assert_eq!(seen, files, "every file once, in key order");
        assert!(matches!(
            store.list_files(&name("none"), None, 10).await,
            Err(Error::NotFound { .. })
        ));
    }

    /// ListLineageEvents' store side: pages by event number, newest first,
    /// cover the whole history once, past the FULL view's limit.
    pub async fn lineage_is_listed_in_pages(store: Arc<dyn CatalogStore>) {
        let commits = LINEAGE_HISTORY_LIMIT as u64 + 5;
        for version in 0..commits {
            let mut next = commit(
                "busy",
                Some(version),
                CommitMode::Replace,
                vec![file(
                    &format!("datasets/busy/p/part-{version:05}.parquet"),
                    1,
                )],
            );
            next.lineage = Some(Lineage {
                source_kind: SourceKind::File,
                source: format!("file-{version}.csv"),
                ..Default::default()
            });
            store.commit(next).await.expect("commit");
        }
        let full = store.get(&name("busy"), View::Full).await.expect("get");
        assert_eq!(full.lineage_history.len(), LINEAGE_HISTORY_LIMIT);
        let mut seen = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let (version, page) = store
                .list_lineage(&name("busy"), before, 30)
                .await
                .expect("list lineage");
            assert_eq!(version, commits);
            assert!(page.len() <= 30);
            let Some((last, _)) = page.last() else { break };
            before = Some(*last);
            seen.extend(page.into_iter().map(|(_, e)| e));
        }
        let versions: Vec<u64> = seen.iter().map(|e| e.dataset_version).collect();
        assert_eq!(
            versions,
            (1..=commits).rev().collect::<Vec<_>>(),
            "every event once, newest first"
        );
        assert_eq!(&seen[..LINEAGE_HISTORY_LIMIT], &full.lineage_history[..]);
        assert_eq!(seen[commits as usize - 1].lineage.source, "file-0.csv");
        assert!(matches!(
            store.list_lineage(&name("none"), None, 10).await,
            Err(Error::NotFound { .. })
        ));
    }
}

/// A SQLite store in a temporary folder.
async fn sqlite_store() -> (Arc<dyn CatalogStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("catalog.sqlite"), &StoreOptions::default())
        .await
        .expect("open sqlite");
    (Arc::new(store), dir)
}

/// A PostgreSQL store in a fresh schema, or `None` after skipping.
struct PgSchema {
    url: String,
    schema: String,
    store: Arc<dyn CatalogStore>,
}

impl PgSchema {
    async fn create(test: &str) -> Option<Self> {
        let url = pg_url(test).await?;
        let mut admin = sqlx::PgConnection::connect(&url)
            .await
            .expect("connect to the test PostgreSQL");
        let schema = unique("catalog_test");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create schema");
        let _ = admin.close().await;
        let options = StoreOptions {
            pg_schema: Some(schema.clone()),
            ..StoreOptions::default()
        };
        let store = PostgresStore::connect(&url, &options)
            .await
            .expect("connect postgres store");
        Some(Self {
            url,
            schema,
            store: Arc::new(store),
        })
    }

    async fn drop_schema(self) {
        self.store.close().await;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::cases::$case(store.clone()).await;
                    store.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test = concat!("postgres::", stringify!($case));
                    let Some(db) = super::PgSchema::create(test).await else {
                        return;
                    };
                    super::cases::$case(db.store.clone()).await;
                    db.drop_schema().await;
                }
            )*
        }
    };
}

conformance_suite!(
    create_get_delete,
    list_pages_by_name,
    commit_versions_and_totals,
    concurrent_commits_one_wins,
    lineage_is_stored_redacted,
    ten_thousand_files,
    retried_commit_applied_once,
    files_are_listed_in_pages,
    lineage_is_listed_in_pages,
    lineage_history_keeps_every_event,
    append_may_add_nullable_columns,
);
