//! The ingest service. It streams PostgreSQL tables and uploaded files into Parquet through storage and registers them in the catalog.
//!
//! Until its milestone lands, every RPC answers UNIMPLEMENTED with a message
//! naming the feature, so clients can already be written against the final
//! API (the protos are complete).

mod grpc;

pub use grpc::IngestServiceImpl;

use lakehouse_client as _;
use lakehouse_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use tracing as _;

/// The gRPC service, with the process's message size limit.
pub fn service(max_message_bytes: usize) -> IngestServiceServer<IngestServiceImpl> {
    IngestServiceServer::new(IngestServiceImpl::default())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
