//! A minimal OTLP/gRPC trace collector, so tests can prove spans leave the
//! process and see which trace they belong to.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::{Request, Response, Status};

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    /// The `rpc` attribute of server spans: the gRPC method path.
    pub rpc: String,
}

#[derive(Clone, Default)]
pub struct Collector {
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

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

impl Collector {
    /// Starts the collector on `runtime`; returns it and its endpoint URL.
    pub fn start(runtime: &tokio::runtime::Runtime) -> (Self, String) {
        let collector = Self::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let received = self.received.lock().expect("not poisoned").clone();
        let mut out = Vec::new();
        for request in &received {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .map(|kv| text(kv.value.as_ref()))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        let rpc = span
                            .attributes
                            .iter()
                            .find(|kv| kv.key == "rpc")
                            .map(|kv| text(kv.value.as_ref()))
                            .unwrap_or_default();
                        out.push(ExportedSpan {
                            service: service.clone(),
                            name: span.name.clone(),
                            trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                            rpc,
                        });
                    }
                }
            }
        }
        out
    }
}
