//! A handler that panics: the caller gets INTERNAL with a fixed message (not
//! a dropped connection), and the same connection and server keep serving.

#![allow(unused_crate_dependencies)]

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use lakehouse_shared::config::ServerConfig;
use lakehouse_shared::server::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::NamedService;

/// A service whose every call panics.
#[derive(Clone)]
struct Panics;

impl NamedService for Panics {
    const NAME: &'static str = "test.Panics";
}

impl tower::Service<http::Request<Body>> for Panics {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
        Box::pin(async { panic!("a bug in a handler, with a secret-looking detail s3cr3t") })
    }
}

async fn call(grpc: &mut tonic::client::Grpc<tonic::transport::Channel>) -> tonic::Status {
    grpc.ready().await.expect("ready");
    grpc.unary::<(), (), _>(
        tonic::Request::new(()),
        PathAndQuery::from_static("/test.Panics/Call"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the handler panics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_internal_and_the_server_keeps_serving() {
    let config = ServerConfig {
        listen: None,
        request_timeout: Duration::from_secs(30),
        concurrency_limit: 16,
        max_message_bytes: 1 << 20,
        shutdown_grace: Duration::from_secs(1),
    };
    let server = GrpcServer::new(config).add_service(Panics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.serve(listener, stop.clone()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel.clone());

    let first = call(&mut grpc).await;
    assert_eq!(first.code(), tonic::Code::Internal, "{first:?}");
    assert!(first.message().contains("still serving"), "{first:?}");
    assert!(
        !first.message().contains("s3cr3t"),
        "the panic text stays in the log"
    );
    // The same connection: a second call is answered the same way, and
    // health still says SERVING.
    assert_eq!(call(&mut grpc).await.code(), tonic::Code::Internal);
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    stop.cancel();
    serving.await.expect("join").expect("serve");
}
