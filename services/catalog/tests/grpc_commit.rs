//! CommitFiles, DeleteDataset and the paged lists through real gRPC: an
//! in-process storage server (two local buckets) and catalog server on
//! loopback sockets, the catalog on its embedded SQLite file.
//!
//! What is proven here: a retried commit (same request_id) is applied once,
//! even across a restart; a commit's files must be the dataset's (its
//! bucket, its prefix, present with the stated size); DeleteDataset deletes
//! only under the dataset's prefix and reports what it left; page tokens
//! are bound to their filters and pages cover every item once.

#![allow(unused_crate_dependencies)]

mod common;

use common::{CatalogStack as _, Stack, data_file};
use lakehouse_client::GrpcObjectStore;
use lakehouse_proto::catalog::v1 as pb;
use lakehouse_shared::status::error_reason;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use tonic::Code;

fn schema() -> pb::Schema {
    pb::Schema {
        columns: vec![pb::Column {
            name: "id".to_owned(),
            data_type: "Int64".to_owned(),
            nullable: false,
        }],
    }
}

/// An APPEND commit of `files` to `name`.
fn append(
    name: &str,
    expected_version: Option<u64>,
    files: Vec<pb::DataFile>,
) -> pb::CommitFilesRequest {
    pb::CommitFilesRequest {
        name: name.to_owned(),
        expected_version,
        mode: pb::CommitMode::Append as i32,
        add_files: files,
        remove_keys: vec![],
        schema: Some(schema()),
        lineage: None,
        bucket: String::new(),
        request_id: String::new(),
    }
}

/// Writes `bytes` under `key` through storage; returns the size.
async fn put(store: &GrpcObjectStore, key: &str, bytes: &[u8]) -> u64 {
    store
        .put(&Path::from(key), PutPayload::from(bytes.to_vec()))
        .await
        .expect("put");
    bytes.len() as u64
}

async fn exists(store: &GrpcObjectStore, key: &str) -> bool {
    match store.head(&Path::from(key)).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(error) => panic!("head {key}: {error}"),
    }
}

async fn commit(
    stack: &Stack,
    request: pb::CommitFilesRequest,
) -> Result<pb::Dataset, tonic::Status> {
    stack
        .catalog()
        .commit_files(request)
        .await
        .map(|r| r.into_inner().dataset.expect("dataset"))
}

fn assert_refused(result: Result<pb::Dataset, tonic::Status>, code: Code, reason: &str) {
    let status = result.expect_err(reason);
    assert_eq!(status.code(), code, "{reason}: {}", status.message());
    assert_eq!(
        error_reason(&status).as_deref(),
        Some(reason),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_commit_is_applied_once_even_after_a_restart() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let first_key = "datasets/sales/ing-1/part-00000.parquet";
    let second_key = "datasets/sales/ing-2/part-00000.parquet";
    let first_size = put(&store, first_key, b"first part").await;
    let second_size = put(&store, second_key, b"second, longer part").await;

    let mut first = append("sales", Some(0), vec![data_file(first_key, first_size, 10)]);
    first.request_id = "7c9e6679-commit-1".to_owned();
    let original = commit(&stack, first.clone()).await.expect("first commit");
    assert_eq!((original.version, original.row_count), (1, 10));

    let mut between = append("sales", None, vec![data_file(second_key, second_size, 5)]);
    between.request_id = "7c9e6679-commit-2".to_owned();
    assert_eq!(commit(&stack, between).await.expect("between").version, 2);

    // The retry answers with the first response; nothing is committed again
    // (expected_version 0 would fail with ABORTED if it ran).
    let replayed = commit(&stack, first.clone()).await.expect("retry");
    assert_eq!(replayed, original);
    let now = stack.dataset("sales", pb::DatasetView::Full).await;
    assert_eq!((now.version, now.file_count, now.row_count), (2, 2, 15));

    // Across a restart: the id is in the catalog database, not in memory.
    let stack = stack.restart().await;
    let replayed = commit(&stack, first.clone())
        .await
        .expect("retry after restart");
    assert_eq!(replayed, original);
    let now = stack.dataset("sales", pb::DatasetView::Full).await;
    assert_eq!((now.version, now.file_count, now.row_count), (2, 2, 15));

    // The same id for another dataset is refused, and creates nothing.
    let mut reused = append("other", Some(0), vec![]);
    reused.request_id = first.request_id.clone();
    assert_refused(
        commit(&stack, reused).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    let missing = stack
        .catalog()
        .get_dataset(pb::GetDatasetRequest {
            name: "other".to_owned(),
            view: 0,
        })
        .await
        .expect_err("not created");
    assert_eq!(missing.code(), Code::NotFound);

    // A malformed id is refused before anything happens.
    let mut bad = append("sales", None, vec![]);
    bad.request_id = "has a space".to_owned();
    assert_refused(
        commit(&stack, bad).await,
        Code::InvalidArgument,
        "INVALID_REQUEST_ID",
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_refuse_files_that_are_not_the_datasets() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let own = "datasets/sales/ing-1/part-00000.parquet";
    let own_size = put(&store, own, b"sales part").await;
    let created = commit(
        &stack,
        append("sales", Some(0), vec![data_file(own, own_size, 3)]),
    )
    .await
    .expect("create");
    assert_eq!((created.bucket.as_str(), created.version), ("main", 1));

    // Another bucket than the dataset's.
    let elsewhere = "datasets/sales/ing-2/part-00000.parquet";
    let elsewhere_size = put(&stack.other_store(), elsewhere, b"in the other bucket").await;
    let mut other_bucket = append("sales", None, vec![data_file(elsewhere, elsewhere_size, 1)]);
    other_bucket.bucket = "other".to_owned();
    assert_refused(
        commit(&stack, other_bucket).await,
        Code::FailedPrecondition,
        "BUCKET_MISMATCH",
    );

    // Keys of another dataset (one whose name merely starts the same way
    // too), and keys outside every dataset.
    for foreign in [
        "datasets/salaries/ing-1/part-00000.parquet",
        "datasets/sales2/ing-1/part-00000.parquet",
        "loose/part-00000.parquet",
    ] {
        let size = put(&store, foreign, b"not sales").await;
        assert_refused(
            commit(
                &stack,
                append("sales", None, vec![data_file(foreign, size, 1)]),
            )
            .await,
            Code::FailedPrecondition,
            "KEY_OUTSIDE_DATASET",
        );
    }

    // A key that does not exist, and a size that is not the file's.
    assert_refused(
        commit(
            &stack,
            append(
                "sales",
                None,
                vec![data_file("datasets/sales/ing-3/part-00000.parquet", 10, 1)],
            ),
        )
        .await,
        Code::FailedPrecondition,
        "FILE_NOT_FOUND",
    );
    let sized = "datasets/sales/ing-4/part-00000.parquet";
    let size = put(&store, sized, b"twelve bytes").await;
    assert_refused(
        commit(
            &stack,
            append("sales", None, vec![data_file(sized, size + 1, 1)]),
        )
        .await,
        Code::FailedPrecondition,
        "FILE_SIZE_MISMATCH",
    );

    // A key storage would never serve.
    assert_refused(
        commit(
            &stack,
            append(
                "sales",
                None,
                vec![data_file("datasets/sales/a\\b.parquet", 1, 1)],
            ),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_KEY",
    );

    // Nothing was changed by the refusals; the right size is accepted.
    assert_eq!(
        stack.dataset("sales", pb::DatasetView::Full).await.version,
        1
    );
    let accepted = commit(
        &stack,
        append("sales", None, vec![data_file(sized, size, 1)]),
    )
    .await
    .expect("a file of the dataset, with its size");
    assert_eq!((accepted.version, accepted.file_count), (2, 2));

    // A dataset created in the other bucket takes files from there.
    let mut remote = append(
        "remote",
        Some(0),
        vec![data_file("datasets/remote/i/part-00000.parquet", 5, 1)],
    );
    put(
        &stack.other_store(),
        "datasets/remote/i/part-00000.parquet",
        b"12345",
    )
    .await;
    remote.bucket = "other".to_owned();
    let remote = commit(&stack, remote).await.expect("create in other");
    assert_eq!(remote.bucket, "other");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_touches_only_the_datasets_prefix() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let sales = "datasets/sales/ing-1/part-00000.parquet";
    let stray = "datasets/sales/ing-0/part-00000.parquet";
    let sales2 = "datasets/sales2/ing-1/part-00000.parquet";
    let sales_size = put(&store, sales, b"sales").await;
    put(&store, stray, b"left by a crashed ingest").await;
    let sales2_size = put(&store, sales2, b"sales2").await;
    commit(
        &stack,
        append("sales", Some(0), vec![data_file(sales, sales_size, 1)]),
    )
    .await
    .expect("sales");
    commit(
        &stack,
        append("sales2", Some(0), vec![data_file(sales2, sales2_size, 1)]),
    )
    .await
    .expect("sales2");

    // A manifest written before keys were checked may name another
    // dataset's file: write one straight into the catalog's database.
    let legacy_store = lakehouse_catalog::store::SqliteStore::open(
        &stack.catalog_db(),
        &lakehouse_catalog::store::StoreOptions::default(),
    )
    .await
    .expect("open the catalog database");
    {
        use lakehouse_catalog::model as m;
        use lakehouse_catalog::store::CatalogStore as _;
        legacy_store
            .commit(m::Commit {
                name: m::DatasetName::parse("legacy").expect("name"),
                expected_version: Some(0),
                mode: m::CommitMode::Append,
                add_files: vec![m::DataFile {
                    key: sales2.to_owned(),
                    size_bytes: sales2_size,
                    row_count: 1,
                    etag: String::new(),
                }],
                remove_keys: vec![],
                schema: Some(
                    m::Schema::new(vec![
                        m::Column::parse("id".to_owned(), "Int64", false).expect("a type"),
                    ])
                    .expect("schema"),
                ),
                lineage: None,
                bucket: "main".to_owned(),
                request_id: None,
            })
            .await
            .expect("legacy manifest");
        legacy_store.close().await;
    }

    let deleted = stack
        .catalog()
        .delete_dataset(pb::DeleteDatasetRequest {
            name: "legacy".to_owned(),
            delete_files: true,
            expected_version: None,
        })
        .await
        .expect("delete legacy")
        .into_inner();
    assert_eq!(deleted.deleted_files, 0);
    let left: Vec<&str> = deleted.files_left.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(left, [sales2], "the foreign file is reported, not deleted");
    assert!(
        exists(&store, sales2).await,
        "another dataset's file survives"
    );

    let deleted = stack
        .catalog()
        .delete_dataset(pb::DeleteDatasetRequest {
            name: "sales".to_owned(),
            delete_files: true,
            expected_version: None,
        })
        .await
        .expect("delete sales")
        .into_inner();
    assert_eq!(deleted.deleted_files, 2, "its file and the stray one");
    assert!(deleted.files_left.is_empty(), "{:?}", deleted.files_left);
    assert!(!exists(&store, sales).await && !exists(&store, stray).await);
    assert!(
        exists(&store, sales2).await,
        "sales2 shares a name prefix, not a key prefix"
    );
    assert_eq!(
        stack
            .dataset("sales2", pb::DatasetView::Full)
            .await
            .file_count,
        1
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_datasets_tokens_are_bound_and_pages_never_empty() {
    let stack = Stack::start().await;
    for name in ["p.a", "p.b", "p.c", "p.d", "q.a"] {
        stack
            .catalog()
            .create_dataset(pb::CreateDatasetRequest {
                name: name.to_owned(),
                bucket: String::new(),
                description: String::new(),
                schema: None,
            })
            .await
            .expect("create");
    }
    let list =
        |prefix: &str, size: i32, token: &str, view: pb::DatasetView| pb::ListDatasetsRequest {
            name_prefix: prefix.to_owned(),
            page_size: size,
            page_token: token.to_owned(),
            view: view as i32,
        };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .catalog()
            .list_datasets(list("p.", 2, &token, pb::DatasetView::Basic))
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(!page.datasets.is_empty(), "no empty page");
        seen.extend(page.datasets.into_iter().map(|d| d.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p.a", "p.b", "p.c", "p.d"]);
    assert_eq!(
        pages, 2,
        "four datasets in pages of two: no empty third page"
    );

    let first = stack
        .catalog()
        .list_datasets(list("p.", 2, "", pb::DatasetView::Basic))
        .await
        .expect("list")
        .into_inner();
    let token = first.next_page_token;
    for (request, why) in [
        (
            list("q.", 2, &token, pb::DatasetView::Basic),
            "another prefix",
        ),
        (list("p.", 2, &token, pb::DatasetView::Full), "another view"),
        (list("p.", 2, "v1.zz", pb::DatasetView::Basic), "forged"),
        (
            list("p.", 2, "702e62", pb::DatasetView::Basic),
            "the old format",
        ),
        (
            list("p.", 2, &token[..token.len() - 1], pb::DatasetView::Basic),
            "cut short",
        ),
    ] {
        let status = stack.catalog().list_datasets(request).await.expect_err(why);
        assert_eq!(status.code(), Code::InvalidArgument, "{why}");
        assert_eq!(
            error_reason(&status).as_deref(),
            Some("INVALID_PAGE_TOKEN"),
            "{why}"
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dataset_files_pages_cover_every_file_once() {
    let stack = Stack::start().await;
    let store = stack.object_store();
    let mut files = Vec::new();
    for i in 0..23 {
        let key = format!("datasets/many/ing-1/part-{i:05}.parquet");
        let size = put(&store, &key, format!("part {i}").as_bytes()).await;
        files.push(data_file(&key, size, 1));
    }
    commit(&stack, append("many", Some(0), files.clone()))
        .await
        .expect("commit");

    let request = |name: &str, token: &str| pb::ListDatasetFilesRequest {
        name: name.to_owned(),
        page_size: 5,
        page_token: token.to_owned(),
    };
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = stack
            .catalog()
            .list_dataset_files(request("many", &token))
            .await
            .expect("list files")
            .into_inner();
        assert_eq!(page.version, 1);
        sizes.push(page.files.len());
        seen.extend(page.files);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, [5, 5, 5, 5, 3], "no empty last page");
    files.iter_mut().for_each(|f| f.etag.clear());
    seen.iter_mut().for_each(|f| f.etag.clear());
    assert_eq!(seen, files, "every file once, in key order");

    let first = stack
        .catalog()
        .list_dataset_files(request("many", ""))
        .await
        .expect("list")
        .into_inner();
    for (name, token, code) in [
        (
            "other",
            first.next_page_token.as_str(),
            Code::InvalidArgument,
        ),
        ("many", "v1.0011", Code::InvalidArgument),
        ("absent", "", Code::NotFound),
    ] {
        let status = stack
            .catalog()
            .list_dataset_files(request(name, token))
            .await
            .expect_err(name);
        assert_eq!(status.code(), code, "{name}: {}", status.message());
    }
    stack.shutdown().await;
}
