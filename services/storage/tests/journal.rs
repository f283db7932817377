//! The error journal through real gRPC: reports from other services and the
//! storage service's own failures are listable at once (buffered), filter
//! and page, survive flush and compaction exactly once, and a restart.

#![allow(unused_crate_dependencies)]

mod common;

use common::{TestServer, local_bucket_toml};
use lakehouse_proto::storage::v1 as pb;

fn report(service: &str, n: usize) -> pb::ReportErrorRequest {
    pb::ReportErrorRequest {
        service: service.to_owned(),
        operation: "resync_dataset".to_owned(),
        message: format!("footer unreadable #{n}"),
        bucket: "main".to_owned(),
        key: format!("datasets/x/part-{n}.parquet"),
    }
}

async fn list_all(server: &TestServer, filter: pb::ListErrorsRequest) -> Vec<pb::ErrorEntry> {
    let mut out = Vec::new();
    let mut request = filter;
    loop {
        let page = server
            .client()
            .list_errors(request.clone())
            .await
            .expect("ListErrors")
            .into_inner();
        assert!(page.errors.len() <= request.page_size.max(1) as usize || request.page_size == 0);
        out.extend(page.errors);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_lists_filters_pages_flushes_compacts_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    let server = TestServer::start(&toml).await;
    let mut client = server.client();
    for n in 0..5 {
        client
            .report_error(report("catalog", n))
            .await
            .expect("report");
    }
    client
        .report_error(report("ingest", 99))
        .await
        .expect("report");

    // Buffered entries are listed before any flush.
    let catalog_only = pb::ListErrorsRequest {
        service: "catalog".to_owned(),
        page_size: 2,
        ..Default::default()
    };
    let entries = list_all(&server, catalog_only.clone()).await;
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e.service == "catalog"));
    assert_eq!(entries[0].message, "footer unreadable #0", "oldest first");

    let flushed = client
        .flush_errors(pb::FlushErrorsRequest {})
        .await
        .expect("flush")
        .into_inner();
    assert_eq!(flushed.flushed_entries, 6);
    assert!(
        flushed.object_key.starts_with("_lakehouse/errors/"),
        "{}",
        flushed.object_key
    );
    client
        .report_error(report("catalog", 5))
        .await
        .expect("report");
    client
        .flush_errors(pb::FlushErrorsRequest {})
        .await
        .expect("flush");
    client
        .report_error(report("catalog", 6))
        .await
        .expect("report");

    let compacted = client
        .compact_errors(pb::CompactErrorsRequest {})
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(compacted.merged_parts, 2);
    assert_eq!(compacted.entries, 7);

    let entries = list_all(&server, catalog_only.clone()).await;
    let messages: Vec<_> = entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        (0..7)
            .map(|n| format!("footer unreadable #{n}"))
            .collect::<Vec<_>>(),
        "each entry exactly once, in order, across flushed, compacted and buffered"
    );

    // Time filter: nothing is newer than the future.
    let future = pb::ListErrorsRequest {
        since: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 3600,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert!(list_all(&server, future).await.is_empty());

    // A bad page token is the caller's mistake.
    let status = client
        .list_errors(pb::ListErrorsRequest {
            page_token: "zz".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Flushed entries survive a restart (compaction merges only flushed
    // parts, so #6 is still buffered: flush it first).
    client
        .flush_errors(pb::FlushErrorsRequest {})
        .await
        .expect("flush");
    drop(server);
    let restarted = TestServer::start(&toml).await;
    let entries = list_all(&restarted, catalog_only).await;
    assert_eq!(entries.len(), 7);
}
