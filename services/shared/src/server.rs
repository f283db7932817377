//! One server builder for every role. Adds gRPC health (truthful: SERVING
//! only while the listener accepts, NOT_SERVING from the moment shutdown
//! starts), server reflection v1 and v1alpha (grpcurl 1.8 speaks only
//! v1alpha), request ids, a per-call span joined to the caller's trace,
//! bearer-token authentication and scopes ([`crate::auth`]), a timeout, a
//! per-connection concurrency limit and graceful shutdown.

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{AuthLayer, AuthPolicy};
use crate::config::ServerConfig;
use crate::{Error, Result};

/// The health service's own name, reported for the server as a whole.
const WHOLE_SERVER: &str = "";

/// Collects services, then serves them with the shared stack.
pub struct GrpcServer {
    config: ServerConfig,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    gates: Vec<(&'static str, watch::Receiver<bool>)>,
    reporter: HealthReporter,
    auth: AuthPolicy,
    tls: Option<ServerTlsConfig>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("config", &self.config)
            .field("services", &self.names)
            .field("auth", &self.auth)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A server with health and no services yet.
    pub fn new(config: ServerConfig) -> Self {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health);
        Self {
            config,
            routes,
            names: Vec::new(),
            gates: Vec::new(),
            reporter,
            auth: AuthPolicy::off(),
            tls: None,
        }
    }

    /// Serves TLS (mutual TLS when `tls` names a client CA) instead of
    /// plaintext; see [`crate::tls::server_tls`]. The files were read when
    /// `tls` was made: a renewed certificate takes a restart.
    pub fn with_tls(mut self, tls: Option<ServerTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Checks every call against `policy` (tokens and scopes). Without it
    /// (or with no tokens) every call passes, as before authentication
    /// existed; `lakehouse serve` refuses that on a non-loopback address
    /// unless told `--insecure`.
    pub fn with_auth(mut self, policy: AuthPolicy) -> Self {
        self.auth = policy;
        self
    }

    /// Adds a service that reports NOT_SERVING (and keeps the whole server
    /// NOT_SERVING) until `ready` turns true: a service that must load state
    /// through its peers first, which in `serve all` are served by this very
    /// listener, so the server must already accept calls.
    pub fn add_gated_service<S>(mut self, service: S, ready: watch::Receiver<bool>) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.gates.push((S::NAME, ready));
        self.add_service(service)
    }

    /// Adds a service; it is listed in reflection and reported by health.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// The health reporter, for services that learn they cannot serve.
    pub fn health_reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Names of the services added so far.
    pub fn service_names(&self) -> &[&'static str] {
        &self.names
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls for
    /// at most the configured grace period.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let Self {
            config,
            mut routes,
            names,
            gates,
            reporter,
            auth,
            tls,
        } = self;

        routes.add_service(reflection(&names).build_v1()?);
        routes.add_service(reflection(&names).build_v1alpha()?);

        let addr = listener.local_addr().map_err(Error::LocalAddr)?;

        let stack = ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(crate::telemetry::server_span)
                    // Every failed call is logged here, once (see
                    // `log_grpc_failure`); the classifier's own event would
                    // be a second line with less in it.
                    .on_failure(())
                    .on_response(log_response)
                    .on_eos(log_eos),
            )
            // Inside the trace layer, so a refused call is logged and
            // traced like any other failure (by code, never the token).
            .layer(AuthLayer::new(auth.clone()))
            // Innermost: a handler that panics answers INTERNAL instead of
            // dropping the caller's connection (and its other calls).
            .layer(CatchPanicLayer::custom(panic_response))
            .into_inner();

        for name in &names {
            let status = if gates.iter().any(|(gated, _)| gated == name) {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            reporter.set_service_status(*name, status).await;
        }
        let whole = if gates.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(WHOLE_SERVER, whole).await;
        if !gates.is_empty() {
            tokio::spawn(open_gates(gates, reporter.clone(), shutdown.clone()));
        }
        // Whether TLS is on, never what the files hold.
        tracing::info!(%addr, tls = tls.is_some(), "transport");
        if auth.is_on() {
            tracing::info!(%addr, services = ?names, tokens = ?auth.tokens.names(), "serving with authentication");
        } else {
            tracing::info!(%addr, services = ?names, "serving without authentication (no token.* secrets)");
        }

        let signal = {
            let reporter = reporter.clone();
            let shutdown = shutdown.clone();
            let names = names.clone();
            async move {
                shutdown.cancelled().await;
                reporter
                    .set_service_status(WHOLE_SERVER, ServingStatus::NotServing)
                    .await;
                for name in names {
                    reporter
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
            }
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // The limit is per connection, not global: in `serve all` a call may
        // wait on a loopback call to a peer service in this same process, and
        // a global limit would let outside calls take every permit and
        // deadlock on the inner ones.
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(Error::ServerTls)?;
        }
        let server = builder
            .timeout(config.request_timeout)
            .concurrency_limit_per_connection(config.concurrency_limit)
            .layer(stack)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);

        let grace = config.shutdown_grace;
        tokio::select! {
            result = server => result?,
            () = grace_expired(&shutdown, grace) => {
                tracing::warn!(?grace, "shutdown grace period over; dropping in-flight calls");
            }
        }
        tracing::info!(%addr, "stopped");
        Ok(())
    }
}

/// Reflection lists only the services this server really serves, although
/// the descriptor set describes all four. It also describes
/// `google.rpc.ErrorInfo` and the other error details, so grpcurl prints an
/// error's reason and metadata instead of "ErrorInfo is not recognized".
fn reflection(names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lakehouse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for name in names {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// Turns each gated service SERVING once it is ready, then the whole server;
/// nothing turns SERVING after shutdown has started.
async fn open_gates(
    gates: Vec<(&'static str, watch::Receiver<bool>)>,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) {
    for (name, mut ready) in gates {
        let opened = tokio::select! {
            result = ready.wait_for(|ready| *ready) => result.is_ok(),
            () = shutdown.cancelled() => false,
        };
        if !opened || shutdown.is_cancelled() {
            return;
        }
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
        tracing::info!(service = name, "ready");
    }
    if !shutdown.is_cancelled() {
        reporter
            .set_service_status(WHOLE_SERVER, ServingStatus::Serving)
            .await;
    }
}

async fn grace_expired(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Binds a listener, naming the address when that fails.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// The answer to a call whose handler panicked: INTERNAL with a fixed
/// message (the panic text may hold anything, so it goes to the log only).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<Body> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = %what, "a call handler panicked; answered INTERNAL");
    tonic::Status::internal(
        "the server hit a bug while handling this call (details are in its log); it is still serving",
    )
    .into_http()
}

/// A call that failed before streaming anything carries its status in the
/// response headers (trailers-only response).
fn log_response<B>(response: &http::Response<B>, latency: Duration, span: &tracing::Span) {
    span.in_scope(|| log_grpc_failure(response.headers(), latency));
}

/// A streamed call carries its status in the trailers.
fn log_eos(trailers: Option<&http::HeaderMap>, latency: Duration, span: &tracing::Span) {
    if let Some(trailers) = trailers {
        span.in_scope(|| log_grpc_failure(trailers, latency));
    }
}

/// The one log line of a failed call, at a level by class: the caller's
/// mistakes (wrong input, missing resource, conflicts, auth) at INFO, a
/// dependency that is down or overloaded at WARN, our bugs (INTERNAL,
/// UNKNOWN, DATA_LOSS) at ERROR. It names the code, the ErrorInfo reason
/// and the message the client got; the call's span adds the full cause a
/// service recorded (`status::record_cause`). Services do not log a failure
/// again when they turn it into a status, so one failure is one line.
fn log_grpc_failure(headers: &http::HeaderMap, latency: Duration) {
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let code = status.code();
    if code == tonic::Code::Ok {
        return;
    }
    let reason = crate::status::error_reason(&status).unwrap_or_default();
    let message = status.message();
    match code {
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            tracing::error!(?code, %reason, client_message = %message, ?latency, "call failed");
        }
        c if crate::status::is_caller_error(c) => {
            tracing::info!(?code, %reason, client_message = %message, ?latency, "call refused");
        }
        _ => tracing::warn!(?code, %reason, client_message = %message, ?latency, "call failed"),
    }
}
