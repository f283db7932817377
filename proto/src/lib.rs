//! The Lakehouse gRPC API. Generated code lives here and nowhere else; the
//! `.proto` files next to this crate are the single source of truth.

/// `lakehouse.storage.v1`: buckets, objects, the error journal.
pub mod storage {
    /// Version 1 of the storage API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations)]
        tonic::include_proto!("lakehouse.storage.v1");
    }
}

/// `lakehouse.catalog.v1`: dataset manifests and their repair.
pub mod catalog {
    /// Version 1 of the catalog API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations)]
        tonic::include_proto!("lakehouse.catalog.v1");
    }
}

/// `lakehouse.ingest.v1`: PostgreSQL and file ingest.
pub mod ingest {
    /// Version 1 of the ingest API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations)]
        tonic::include_proto!("lakehouse.ingest.v1");
    }
}

/// `lakehouse.vector.v1`: embeddings, HNSW indexes, trials, generations.
pub mod vector {
    /// Version 1 of the vector API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations)]
        tonic::include_proto!("lakehouse.vector.v1");
    }
}

/// `google.rpc`: the `Status` that terminal messages of long operations
/// carry, in the same shape as a gRPC error's details.
pub mod google {
    /// `google.rpc.Status`.
    pub mod rpc {
        #![allow(missing_docs, missing_debug_implementations)]
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded `FileDescriptorSet` of every Lakehouse proto, for server
/// reflection (grpcurl, Postman, ...).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lakehouse_descriptor");

/// Fully qualified service names, as they appear in reflection and health.
pub mod service_names {
    /// `lakehouse.storage.v1.StorageService`.
    pub const STORAGE: &str = "lakehouse.storage.v1.StorageService";
    /// `lakehouse.catalog.v1.CatalogService`.
    pub const CATALOG: &str = "lakehouse.catalog.v1.CatalogService";
    /// `lakehouse.ingest.v1.IngestService`.
    pub const INGEST: &str = "lakehouse.ingest.v1.IngestService";
    /// `lakehouse.vector.v1.VectorService`.
    pub const VECTOR: &str = "lakehouse.vector.v1.VectorService";
}

// prost-types is used by the generated code (google.protobuf.Timestamp).
use prost_types as _;
