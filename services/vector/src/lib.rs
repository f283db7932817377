//! The vector service. It owns the embedding cache, HNSW indexes, eval sets, trials and generations.
//!
//! Until its milestone lands, every RPC answers UNIMPLEMENTED with a message
//! naming the feature, so clients can already be written against the final
//! API (the protos are complete).

mod grpc;

pub use grpc::VectorServiceImpl;

use lakehouse_client as _;
use lakehouse_proto::vector::v1::vector_service_server::VectorServiceServer;
use tracing as _;

/// The gRPC service, with the process's message size limit.
pub fn service(max_message_bytes: usize) -> VectorServiceServer<VectorServiceImpl> {
    VectorServiceServer::new(VectorServiceImpl::default())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
