//! Spans really leave the process: `serve all` with
//! OTEL_EXPORTER_OTLP_ENDPOINT pointed at a collector started by this test
//! exports the server span of a call, under the caller's W3C trace id.

use crate::support;

use support::ServerProcess;
use support::collector::Collector;
use tonic::Request;

#[test]
fn server_spans_are_exported_under_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (collector, endpoint) = Collector::start(&runtime);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(
        "all",
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)],
    );
    server.wait_healthy();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let uri = server.uri();
    runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut client = lakehouse_client::storage(channel);
        let mut request = Request::new(lakehouse_proto::storage::v1::ListBucketsRequest {});
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .expect("ascii"),
        );
        client.list_buckets(request).await.expect("ListBuckets");
    });
    // Shutdown flushes the exporter.
    let status = server.stop().expect("was running");
    assert!(status.success(), "{}", server.log_text());

    let spans = collector.spans();
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    assert!(
        ours.iter().any(|s| s.rpc.ends_with("/ListBuckets")),
        "no exported ListBuckets span carries the caller's trace id; got {spans:?}\n{}",
        server.log_text()
    );
    assert!(
        ours.iter().all(|s| s.service == "lakehouse-all"),
        "{ours:?}"
    );
}
