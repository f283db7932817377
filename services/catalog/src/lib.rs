//! The catalog service. It owns dataset manifests (schema, files, row counts, lineage) and repairs drifted manifests from Parquet footers.
//!
//! Until its milestone lands, every RPC answers UNIMPLEMENTED with a message
//! naming the feature, so clients can already be written against the final
//! API (the protos are complete).

mod grpc;

pub use grpc::CatalogServiceImpl;

use lakehouse_client as _;
use lakehouse_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use tracing as _;

/// The gRPC service, with the process's message size limit.
pub fn service(max_message_bytes: usize) -> CatalogServiceServer<CatalogServiceImpl> {
    CatalogServiceServer::new(CatalogServiceImpl::default())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
