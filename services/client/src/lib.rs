//! Typed clients of the four Lakehouse services. Every client carries the
//! caller's W3C trace context in its metadata, so one operation is one trace
//! across services, and is sized with the same message limit as the servers.

use lakehouse_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use lakehouse_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use lakehouse_proto::storage::v1::storage_service_client::StorageServiceClient;
use lakehouse_proto::vector::v1::vector_service_client::VectorServiceClient;
use lakehouse_shared::telemetry::TraceContextInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

mod error;
mod object_store_adapter;

pub use error::{Error, Result};
pub use object_store_adapter::{GrpcObjectStore, RescueUsed};

/// A channel that injects trace context into every call.
pub type TracedChannel = InterceptedService<Channel, TraceContextInterceptor>;
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

/// Accepts `host:port` as well as `http://host:port`.
pub fn endpoint(addr: &str) -> Result<Endpoint> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri.clone())
        .map(|e| e.tcp_nodelay(true))
        .map_err(|source| Error::InvalidAddress {
            address: addr.to_owned(),
            source,
        })
}

/// A channel that connects on first use, so services can be wired to peers
/// that start after them (or to themselves in `serve all`).
pub fn connect_lazy(addr: &str) -> Result<TracedChannel> {
    Ok(InterceptedService::new(
        endpoint(addr)?.connect_lazy(),
        TraceContextInterceptor,
    ))
}

/// A channel that connects now, failing if the server cannot be reached.
pub async fn connect(addr: &str) -> Result<TracedChannel> {
    let channel = endpoint(addr)?
        .connect()
        .await
        .map_err(|source| Error::Connect {
            address: addr.to_owned(),
            source,
        })?;
    Ok(InterceptedService::new(channel, TraceContextInterceptor))
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

/// A vector client over `channel`.
pub fn vector(channel: TracedChannel) -> VectorClient {
    VectorServiceClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
}
