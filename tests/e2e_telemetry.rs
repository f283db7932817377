#![allow(unused_crate_dependencies)]

//! Spans really leave the process: `serve all` with
//! OTEL_EXPORTER_OTLP_ENDPOINT pointed at a collector started by this test
//! exports the server span of a call, under the caller's W3C trace id.

mod support;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use support::ServerProcess;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.received
            .lock()
            .expect("not poisoned")
            .push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[test]
fn server_spans_are_exported_under_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind collector");
    let collector_addr = listener.local_addr().expect("addr");
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(
        "all",
        dir.path(),
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )],
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

    let received = collector.received.lock().expect("not poisoned").clone();
    let spans: Vec<_> = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    assert!(
        !ours.is_empty(),
        "no exported span carries the caller's trace id; got {} spans:\n{}",
        spans.len(),
        server.log_text()
    );
    let service_names: Vec<String> = received
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|rs| rs.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| kv.value.as_ref())
        .map(|v| format!("{v:?}"))
        .collect();
    assert!(
        service_names.iter().any(|n| n.contains("lakehouse-all")),
        "{service_names:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
