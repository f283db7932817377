//! Typed clients of the four Lakehouse services. Every client carries the
//! caller's W3C trace context in its metadata, so one operation is one trace
//! across services, and is sized with the same message limit as the servers.
//!
//! Every client also carries a bearer token when it has one: a channel made
//! by [`connect_with`] / [`connect_lazy_with`] carries the token given (the
//! CLI passes the user's `--token`); one made by [`connect`] /
//! [`connect_lazy`] carries this process's service token, set once by
//! `lakehouse serve` with [`set_service_token`] before any service starts.
//! A server process has one identity towards its peers, so the peer clients
//! inside each service (storage clients of the catalog, ingest and vector,
//! catalog clients of ingest and vector) get it without every runtime having
//! to pass it along; and the token of the caller being served is never the
//! one sent on (the server's auth layer removes it from the request).

use lakehouse_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use lakehouse_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use lakehouse_proto::storage::v1::storage_service_client::StorageServiceClient;
use lakehouse_proto::vector::v1::vector_service_client::VectorServiceClient;
use std::sync::OnceLock;

use lakehouse_shared::secrets::SecretString;
use lakehouse_shared::telemetry::TraceContextInterceptor;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

mod error;
mod error_journal;
mod object_store_adapter;
mod upload;

pub use error::{Error, Result, chain as error_chain};
pub use error_journal::{ErrorReport, report_error};
pub use object_store_adapter::{GrpcObjectStore, RescueUsed};
pub use upload::{FileUpload, UPLOAD_CHUNK_BYTES, chunked, file_upload};

/// A channel that injects trace context, and the channel's bearer token if
/// it has one, into every call.
pub type TracedChannel = InterceptedService<Channel, CallInterceptor>;
/// Client of `lakehouse.storage.v1.StorageService`.
pub type StorageClient = StorageServiceClient<TracedChannel>;
/// Client of `lakehouse.catalog.v1.CatalogService`.
pub type CatalogClient = CatalogServiceClient<TracedChannel>;
/// Client of `lakehouse.ingest.v1.IngestService`.
pub type IngestClient = IngestServiceClient<TracedChannel>;
/// Client of `lakehouse.vector.v1.VectorService`.
pub type VectorClient = VectorServiceClient<TracedChannel>;

/// Largest message a client accepts or sends; matches the server default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Accepts `host:port` as well as `http://host:port` and
/// `https://host:port`, and a port alone ([`with_host`]). A bare
/// `host:port` is `https://` once this process has client TLS settings
/// ([`set_client_tls`]), `http://` otherwise. `https://` addresses use those
/// settings, or the system's roots without them.
pub fn endpoint(addr: &str) -> Result<Endpoint> {
    let addr = &*with_host(addr);
    let tls = CLIENT_TLS.get();
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let invalid = |source| Error::InvalidAddress {
        address: addr.to_owned(),
        source,
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(invalid)?
        .tcp_nodelay(true);
    if endpoint.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Ok(endpoint);
    }
    let tls = match tls {
        Some(tls) => tls.clone(),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    endpoint.tls_config(tls).map_err(|source| Error::Tls {
        address: addr.to_owned(),
        source,
    })
}

/// A port alone (`55151` or `:55151`) is that port on this machine
/// (`127.0.0.1:55151`), as people type it for a local server; read as a
/// URI it would be a host named `55151` on port 80, and the failure (an
/// HTTP 404 from whatever answers there) would say nothing of the cause.
pub fn with_host(addr: &str) -> std::borrow::Cow<'_, str> {
    let port = addr.strip_prefix(':').unwrap_or(addr);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port}").into()
    } else {
        addr.into()
    }
}

/// What this process's clients trust and present over TLS (see
/// [`set_client_tls`]).
static CLIENT_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Sets the TLS settings (CA, client certificate for mutual TLS) of every
/// channel this process makes from now on, peer clients and CLI alike;
/// like the service token, one per process, set before any channel is made
/// (`lakehouse serve` and the CLI do so at start). Checked here, so a bad
/// CA or key fails at start rather than on the first call. A second call is
/// refused: channels already made would keep the first settings.
pub fn set_client_tls(tls: ClientTlsConfig) -> Result<()> {
    Endpoint::from_static("https://localhost")
        .tls_config(tls.clone())
        .map_err(|source| Error::Tls {
            address: "(client TLS settings)".to_owned(),
            source,
        })?;
    CLIENT_TLS.set(tls).map_err(|_| Error::ClientTlsAlreadySet)
}

/// The token this process presents to its peers (see the crate docs).
static SERVICE_TOKEN: OnceLock<SecretString> = OnceLock::new();

/// Sets the token that channels made by [`connect`] and [`connect_lazy`]
/// carry from now on. Called once, by `lakehouse serve`, before any service
/// starts; a second call with a different token is refused, because
/// channels already made would keep the first.
pub fn set_service_token(token: SecretString) -> Result<()> {
    bearer_value(&token)?;
    let stored = SERVICE_TOKEN.get_or_init(|| token.clone());
    if *stored == token {
        Ok(())
    } else {
        Err(Error::ServiceTokenAlreadySet)
    }
}

/// `Bearer <token>` as metadata, marked sensitive so it is never printed.
fn bearer_value(token: &SecretString) -> Result<AsciiMetadataValue> {
    let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| Error::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds trace context and, when the channel has one, the bearer token to
/// every call. The token is set by the channel, never copied from an
/// incoming call, so a service cannot forward its caller's token.
#[derive(Clone, Default)]
pub struct CallInterceptor {
    bearer: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for CallInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallInterceptor")
            .field("token", &self.bearer.as_ref().map(|_| "***"))
            .finish()
    }
}

impl CallInterceptor {
    /// An interceptor presenting `token` (none: calls go without one).
    pub fn new(token: Option<&SecretString>) -> Result<Self> {
        Ok(Self {
            bearer: token.map(bearer_value).transpose()?,
        })
    }

    /// An interceptor presenting this process's service token, if set.
    pub fn service() -> Self {
        Self {
            // Checked when it was set.
            bearer: SERVICE_TOKEN.get().and_then(|t| bearer_value(t).ok()),
        }
    }
}

impl tonic::service::Interceptor for CallInterceptor {
    fn call(
        &mut self,
        request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let mut request = TraceContextInterceptor.call(request)?;
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// A channel that connects on first use, so services can be wired to peers
/// that start after them (or to themselves in `serve all`); it carries this
/// process's service token.
pub fn connect_lazy(addr: &str) -> Result<TracedChannel> {
    Ok(InterceptedService::new(
        endpoint(addr)?.connect_lazy(),
        CallInterceptor::service(),
    ))
}

/// Like [`connect_lazy`], carrying `token` instead of the service token.
pub fn connect_lazy_with(addr: &str, token: Option<&SecretString>) -> Result<TracedChannel> {
    Ok(InterceptedService::new(
        endpoint(addr)?.connect_lazy(),
        CallInterceptor::new(token)?,
    ))
}

/// A channel that connects now, failing if the server cannot be reached;
/// it carries this process's service token.
pub async fn connect(addr: &str) -> Result<TracedChannel> {
    let channel = connect_channel(addr).await?;
    Ok(InterceptedService::new(channel, CallInterceptor::service()))
}

/// Like [`connect`], carrying `token` instead of the service token.
pub async fn connect_with(addr: &str, token: Option<&SecretString>) -> Result<TracedChannel> {
    let interceptor = CallInterceptor::new(token)?;
    let channel = connect_channel(addr).await?;
    Ok(InterceptedService::new(channel, interceptor))
}

async fn connect_channel(addr: &str) -> Result<Channel> {
    endpoint(addr)?
        .connect()
        .await
        .map_err(|source| Error::Connect {
            address: with_host(addr).into_owned(),
            source,
        })
}

/// A storage client over `channel`.
pub fn storage(channel: TracedChannel) -> StorageClient {
    StorageServiceClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
}

/// A catalog client over `channel`.
pub fn catalog(channel: TracedChannel) -> CatalogClient {
    CatalogServiceClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
}

/// An ingest client over `channel`.
pub fn ingest(channel: TracedChannel) -> IngestClient {
    IngestServiceClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
}

/// Largest vector message a client sends or accepts: the vector service's
/// default limit (`--vector-max-message-bytes`), so a BatchSearch of
/// 10,000 × 768-d queries and its answer pass.
pub const VECTOR_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A vector client over `channel`.
pub fn vector(channel: TracedChannel) -> VectorClient {
    VectorServiceClient::new(channel)
        .max_decoding_message_size(VECTOR_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(VECTOR_MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    #[test]
    fn the_channel_token_replaces_any_token_already_on_the_call() {
        let token = SecretString::new("service-0123456789abcdef");
        let mut interceptor = CallInterceptor::new(Some(&token)).expect("valid");
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::from_static("Bearer callers-own-token"),
        );
        let request = interceptor.call(request).expect("intercepted");
        let sent = request.metadata().get_all("authorization").iter().count();
        assert_eq!(sent, 1);
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer service-0123456789abcdef"))
        );
        assert!(!format!("{interceptor:?}").contains("service-0123"));
    }

    #[test]
    fn a_token_unfit_for_a_header_is_refused_without_echo() {
        let error =
            CallInterceptor::new(Some(&SecretString::new("bad\ntoken"))).expect_err("newline");
        assert!(!error.to_string().contains("bad"), "{error}");
    }

    #[test]
    fn a_port_alone_is_that_port_on_this_machine() {
        assert_eq!(with_host("55151"), "127.0.0.1:55151");
        assert_eq!(with_host(":55151"), "127.0.0.1:55151");
        for unchanged in ["host:1", "http://127.0.0.1:1", "99999", "", "abc"] {
            assert_eq!(with_host(unchanged), unchanged);
        }
        let uri = endpoint("55151").expect("valid").uri().to_string();
        assert_eq!(uri, "http://127.0.0.1:55151/");
    }

    #[test]
    fn no_token_sends_no_authorization() {
        let mut interceptor = CallInterceptor::new(None).expect("valid");
        let request = interceptor.call(tonic::Request::new(())).expect("ok");
        assert!(request.metadata().get("authorization").is_none());
    }
}
