//! Lists through real gRPC under the shared contract (issue 8, item 4): one
//! filter-bound page-token format, one page-size rule, no empty last page,
//! and a `ListObjects` page costing what the page holds, not what the prefix
//! holds (counted on the backend's listing stream).

#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use common::{TestServer, local_bucket_toml};
use lakehouse_proto::storage::v1 as pb;
use lakehouse_shared::status::error_reason;
use lakehouse_shared::testing::TestStore;
use lakehouse_storage::{Backend, Bucket, BucketRegistry, ErrorRecord, JOURNAL_PREFIX};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutPayload};

const KEYS: usize = 100_000;

async fn counting_server() -> (TestServer, Arc<TestStore>) {
    let store = Arc::new(TestStore::in_memory());
    for i in 0..KEYS {
        store
            .inner()
            .put(
                &Path::from(format!("big/k{i:06}")),
                PutPayload::from_static(b"x"),
            )
            .await
            .expect("put");
    }
    for i in 0..3 {
        store
            .inner()
            .put(
                &Path::from(format!("small/s{i}")),
                PutPayload::from_static(b"y"),
            )
            .await
            .expect("put");
    }
    let bucket = Bucket {
        name: "mem".to_owned(),
        backend: Backend::Memory,
        store: store.clone(),
        rescue: None,
    };
    let registry = BucketRegistry::from_buckets(vec![bucket], "mem");
    let server = TestServer::start_on(registry, None).await;
    store.take_list_counts();
    (server, store)
}

fn list(prefix: &str, page_size: i32, page_token: &str) -> pb::ListObjectsRequest {
    pb::ListObjectsRequest {
        bucket: "mem".to_owned(),
        prefix: prefix.to_owned(),
        delimiter: String::new(),
        page_size,
        page_token: page_token.to_owned(),
    }
}

fn keys(page: &pb::ListObjectsResponse) -> Vec<String> {
    page.objects.iter().map(|o| o.key.clone()).collect()
}

#[tokio::test]
async fn a_page_costs_what_it_holds_not_the_prefix() {
    let (server, store) = counting_server().await;
    let mut client = server.client();

    let first = client
        .list_objects(list("big/", 100, ""))
        .await
        .expect("first page")
        .into_inner();
    let expected: Vec<String> = (0..100).map(|i| format!("big/k{i:06}")).collect();
    assert_eq!(keys(&first), expected);
    assert!(first.next_page_token.starts_with("v1."));
    let (calls, pulled) = store.take_list_counts();
    assert_eq!(calls, 1, "one listing per page");
    assert!(
        pulled <= 101,
        "a page of 100 pulled {pulled} of {KEYS} listing entries"
    );

    // Deep in the prefix: the token continues after the last key served.
    let mut token = first.next_page_token;
    let mut page = first.objects;
    for _ in 0..3 {
        let next = client
            .list_objects(list("big/", 100, &token))
            .await
            .expect("next page")
            .into_inner();
        assert_eq!(next.objects.len(), 100);
        assert!(next.objects[0].key > page[99].key, "pages do not overlap");
        let (calls, pulled) = store.take_list_counts();
        assert_eq!(calls, 1);
        assert!(pulled <= 101, "page pulled {pulled} entries");
        token = next.next_page_token;
        page = next.objects;
    }
    assert_eq!(page[99].key, "big/k000399");

    // The largest page is capped at 1000 and still costs only itself:
    // 1001 entries, two S3 LIST requests.
    let big = client
        .list_objects(list("big/", 5000, ""))
        .await
        .expect("capped page")
        .into_inner();
    assert_eq!(big.objects.len(), 1000);
    let (_, pulled) = store.take_list_counts();
    assert!(pulled <= 1001, "pulled {pulled}");
}

#[tokio::test]
async fn one_token_format_bound_to_filters_and_no_empty_last_page() {
    let (server, _store) = counting_server().await;
    let mut client = server.client();

    // Default page size is the shared 100.
    let default = client
        .list_objects(list("big/", 0, ""))
        .await
        .expect("default size")
        .into_inner();
    assert_eq!(default.objects.len(), 100);

    // A token reused with another prefix, or another delimiter, is refused.
    for reused in [
        list("small/", 100, &default.next_page_token),
        pb::ListObjectsRequest {
            delimiter: "/".to_owned(),
            ..list("big/", 100, &default.next_page_token)
        },
    ] {
        let status = client.list_objects(reused).await.expect_err("reused token");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(error_reason(&status).as_deref(), Some("INVALID_PAGE_TOKEN"));
        assert!(status.message().contains("other filters"), "{status:?}");
    }
    // Forged tokens: an old-format hex key, garbage, a tampered v1 token.
    let token = &default.next_page_token;
    let tampered = &token[..token.len() - 1];
    for forged in ["6269672f6b303030303130", "v1.zz", tampered] {
        let status = client
            .list_objects(list("big/", 100, forged))
            .await
            .expect_err("forged token");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{forged}");
        assert_eq!(error_reason(&status).as_deref(), Some("INVALID_PAGE_TOKEN"));
    }
    // A negative page size is refused, by the shared rule.
    let status = client
        .list_objects(list("big/", -1, ""))
        .await
        .expect_err("negative");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_reason(&status).as_deref(), Some("INVALID_PAGE_SIZE"));

    // No empty last page: 3 keys in pages of 3, then of 2.
    let exact = client
        .list_objects(list("small/", 3, ""))
        .await
        .expect("exact")
        .into_inner();
    assert_eq!(exact.objects.len(), 3);
    assert!(
        exact.next_page_token.is_empty(),
        "a full last page has no token"
    );
    let first = client
        .list_objects(list("small/", 2, ""))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(keys(&first), ["small/s0", "small/s1"]);
    let last = client
        .list_objects(list("small/", 2, &first.next_page_token))
        .await
        .expect("last")
        .into_inner();
    assert_eq!(keys(&last), ["small/s2"]);
    assert!(last.next_page_token.is_empty());
}

/// A local folder lists unordered: every page sorts the whole prefix, but
/// the pages are still complete, ordered and non-overlapping.
#[tokio::test]
async fn local_pages_are_complete_and_ordered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    let server = TestServer::start(&toml).await;
    let store = server.storage.registry().default_bucket().store.clone();
    for i in (0..250).rev() {
        store
            .put(
                &Path::from(format!("d/f{i:03}")),
                PutPayload::from_static(b"z"),
            )
            .await
            .expect("put");
    }
    let mut client = server.client();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_objects(pb::ListObjectsRequest {
                prefix: "d".to_owned(),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(!page.objects.is_empty(), "no empty page");
        seen.extend(keys(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..250).map(|i| format!("d/f{i:03}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

fn report(service: &str, n: usize) -> pb::ReportErrorRequest {
    pb::ReportErrorRequest {
        service: service.to_owned(),
        operation: "resync_dataset".to_owned(),
        message: format!("footer unreadable #{n}"),
        bucket: "main".to_owned(),
        key: format!("datasets/x/part-{n}.parquet"),
    }
}

#[tokio::test]
async fn list_errors_tokens_are_bound_to_filters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    let server = TestServer::start(&toml).await;
    let mut client = server.client();
    for n in 0..4 {
        client
            .report_error(report("catalog", n))
            .await
            .expect("report");
    }
    client
        .report_error(report("ingest", 9))
        .await
        .expect("report");

    let by_service = |page_token: String| pb::ListErrorsRequest {
        service: "catalog".to_owned(),
        page_size: 2,
        page_token,
        ..Default::default()
    };
    let first = client
        .list_errors(by_service(String::new()))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.errors.len(), 2);
    assert!(first.next_page_token.starts_with("v1."));
    let last = client
        .list_errors(by_service(first.next_page_token.clone()))
        .await
        .expect("last")
        .into_inner();
    assert_eq!(last.errors.len(), 2);
    assert!(last.next_page_token.is_empty(), "no empty last page");
    assert!(last.errors[0].message.ends_with("#2"));

    let status = client
        .list_errors(pb::ListErrorsRequest {
            service: "ingest".to_owned(),
            ..by_service(first.next_page_token)
        })
        .await
        .expect_err("reused with another service");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_reason(&status).as_deref(), Some("INVALID_PAGE_TOKEN"));
    let status = client
        .list_errors(pb::ListErrorsRequest {
            page_size: -3,
            ..Default::default()
        })
        .await
        .expect_err("negative size");
    assert_eq!(error_reason(&status).as_deref(), Some("INVALID_PAGE_SIZE"));
}

/// A `ListErrors` page deep in a large journal reads what the page holds
/// (names, one header, a stride or two), not the journal (issue 8, item 4).
#[tokio::test]
async fn a_list_errors_page_reads_what_it_holds_not_the_journal() {
    const ENTRIES: usize = 60_000;
    let store = Arc::new(TestStore::in_memory());
    // A journal as the service leaves it after a while: one compacted
    // object and a few newer parts.
    let writer =
        lakehouse_shared::append_log::AppendLog::<ErrorRecord>::new(store.clone(), JOURNAL_PREFIX);
    let record = |n: usize| ErrorRecord {
        time: chrono::Utc::now(),
        service: if n.is_multiple_of(10) {
            "ingest"
        } else {
            "catalog"
        }
        .to_owned(),
        operation: "resync_dataset".to_owned(),
        bucket: "mem".to_owned(),
        key: format!("datasets/x/part-{n}.parquet"),
        message: format!("footer unreadable #{n}"),
        rescue_bucket: String::new(),
    };
    for n in 0..ENTRIES {
        writer.append(record(n));
        if (n + 1).is_multiple_of(10_000) {
            writer.flush().await.expect("flush");
        }
    }
    writer.compact().await.expect("compact");
    for n in ENTRIES..ENTRIES + 30 {
        writer.append(record(n));
        writer.flush().await.expect("flush");
    }
    let journal_bytes: u64 = {
        use futures::TryStreamExt as _;
        let metas: Vec<ObjectMeta> = store
            .inner()
            .list(Some(&Path::from(JOURNAL_PREFIX)))
            .try_collect()
            .await
            .expect("list");
        metas.iter().map(|m| m.size).sum()
    };
    let bucket = Bucket {
        name: "mem".to_owned(),
        backend: Backend::Memory,
        store: store.clone(),
        rescue: None,
    };
    let registry = BucketRegistry::from_buckets(vec![bucket], "mem");
    let server = TestServer::start_on(registry, None).await;
    let mut client = server.client();

    // Walk to the middle of the journal with big pages, then measure one
    // page of 100 there, filtered by service.
    let request = |page_token: String, page_size: i32| pb::ListErrorsRequest {
        service: "ingest".to_owned(),
        page_size,
        page_token,
        ..Default::default()
    };
    let mut token = String::new();
    for _ in 0..3 {
        token = client
            .list_errors(request(token, 1000))
            .await
            .expect("page")
            .into_inner()
            .next_page_token;
    }
    store.take_read_bytes();
    let page = client
        .list_errors(request(token, 100))
        .await
        .expect("deep page")
        .into_inner();
    let read = store.take_read_bytes();
    let keys: Vec<String> = page.errors.iter().map(|e| e.key.clone()).collect();
    let expected: Vec<String> = (30_000..31_000)
        .step_by(10)
        .map(|n| format!("datasets/x/part-{n}.parquet"))
        .collect();
    assert_eq!(keys, expected, "the fourth page of ingest entries");
    eprintln!(
        "ListErrors page of 100 (of 1000 scanned entries) read {read} of {journal_bytes} journal bytes"
    );
    assert!(
        read * 20 < journal_bytes,
        "a page of 100 read {read} bytes of a {journal_bytes}-byte journal"
    );

    // The last pages reach the newest parts, and end without an empty page.
    let mut seen = page.errors.len();
    let mut token = page.next_page_token;
    while !token.is_empty() {
        let next = client
            .list_errors(request(token, 1000))
            .await
            .expect("page")
            .into_inner();
        assert!(!next.errors.is_empty(), "no empty page");
        seen += next.errors.len();
        token = next.next_page_token;
    }
    assert_eq!(seen, (ENTRIES + 30) / 10 - 3000);
}
