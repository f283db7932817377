//! Trace context survives one real gRPC hop: a client span's W3C trace id is
//! the trace id of the server span that handles the call.

#![allow(unused_crate_dependencies)]

use std::sync::{Arc, Mutex};

use lakehouse_shared::telemetry::{TraceContextInterceptor, current_trace_id, server_span};
use opentelemetry::trace::TracerProvider as _;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// A Health service that remembers the trace id it ran under.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for Recorder {
    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.seen
            .lock()
            .expect("not poisoned")
            .push(current_trace_id());
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn trace_id_crosses_one_grpc_hop() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .layer(tower_http::trace::TraceLayer::new_for_grpc().make_span_with(server_span))
        .add_service(HealthServer::new(recorder.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server.in_current_span());

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::with_interceptor(channel, TraceContextInterceptor);

    let client_span = tracing::info_span!("client-call");
    let client_trace = async {
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("call");
        current_trace_id()
    }
    .instrument(client_span)
    .await;

    let seen = recorder.seen.lock().expect("not poisoned").clone();
    assert_eq!(client_trace.len(), 32, "client has a W3C trace id");
    assert_eq!(
        seen,
        vec![client_trace.clone()],
        "server span joined the client's trace"
    );

    // Without the interceptor the server starts a trace of its own.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut plain = HealthClient::new(channel);
    async {
        plain
            .check(HealthCheckRequest::default())
            .await
            .expect("call");
    }
    .instrument(tracing::info_span!("unpropagated"))
    .await;
    let seen = recorder.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[1], client_trace, "no propagation, no shared trace");
}
