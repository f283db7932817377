//! The stack the vector gRPC tests run against: storage + catalog +
//! vector on one loopback server over a temporary folder, as in `serve all`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field};
use lakehouse_catalog::{CatalogConfig, CatalogRuntime};
use lakehouse_client::{GrpcObjectStore, VectorClient};
use lakehouse_proto::catalog::v1 as catalog_pb;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use lakehouse_shared::testing::{free_port, server_config};
use lakehouse_storage::{StorageConfig, StorageRuntime};
use lakehouse_vector::{VectorConfig, VectorRuntime};
use object_store::{ObjectStoreExt as _, PutPayload};
use tokio_util::sync::CancellationToken;

pub const DIM: usize = 32;

/// Storage + catalog + vector on one loopback server over `dir`.
pub struct Stack {
    pub addr: String,
    pub vector: VectorRuntime,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Stack {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, VectorConfig::default()).await
    }

    /// The stack with these vector settings.
    pub async fn start_with(dir: &Path, config: VectorConfig) -> Self {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let storage = StorageRuntime::start(
            &StorageConfig {
                buckets_config: None,
                journal_flush_interval: Duration::from_secs(1),
                probe_timeout: Duration::from_secs(2),
                ..Default::default()
            },
            dir,
            Arc::new(StaticSecrets::default()),
        )
        .await
        .expect("storage");
        let catalog = CatalogRuntime::start(
            &CatalogConfig {
                catalog_url: None,
                catalog_max_connections: 4,
                catalog_acquire_timeout: Duration::from_secs(10),
                catalog_resync_concurrency: 4,
            },
            dir,
            &addr,
        )
        .await
        .expect("catalog");
        let vector = VectorRuntime::start(&config, &addr, &addr).expect("vector");
        let server = GrpcServer::new(server_config())
            .add_service(storage.service(64 << 20))
            .add_service(catalog.service(64 << 20))
            .add_gated_service(
                vector.grpc(config.max_message_bytes as usize),
                vector.ready(),
            );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("listen");
        let stop = CancellationToken::new();
        let serving = server.serve(listener, stop.clone());
        let server = tokio::spawn(async move {
            serving.await.expect("serve");
            drop((storage, catalog));
        });
        let loader = vector.clone();
        tokio::spawn(async move { loader.load_persisted().await });
        let mut ready = vector.ready();
        tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
            .await
            .expect("vector ready in time")
            .expect("ready channel");
        Self {
            addr,
            vector,
            stop,
            server,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }

    pub fn client(&self) -> VectorClient {
        lakehouse_client::vector(lakehouse_client::connect_lazy(&self.addr).expect("addr"))
    }

    pub fn catalog(&self) -> lakehouse_client::CatalogClient {
        lakehouse_client::catalog(lakehouse_client::connect_lazy(&self.addr).expect("addr"))
    }

    pub fn store(&self) -> GrpcObjectStore {
        let storage =
            lakehouse_client::storage(lakehouse_client::connect_lazy(&self.addr).expect("addr"));
        GrpcObjectStore::new(storage, "")
    }

    /// Writes `batch` as a Snappy Parquet file (pandas' and pyarrow's
    /// default) under the dataset's folder and registers it by resync.
    pub async fn dataset(&self, name: &str, parts: &[RecordBatch]) {
        let _ = self
            .catalog()
            .create_dataset(catalog_pb::CreateDatasetRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await;
        for (i, batch) in parts.iter().enumerate() {
            let mut bytes = Vec::new();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
                    .expect("writer");
            writer.write(batch).expect("write");
            writer.close().expect("close");
            self.store()
                .put(
                    &object_store::path::Path::from(format!("datasets/{name}/part-{i}.parquet")),
                    PutPayload::from(bytes),
                )
                .await
                .expect("put");
        }
        self.catalog()
            .resync_dataset(catalog_pb::ResyncDatasetRequest {
                name: name.to_owned(),
                dry_run: false,
                ..Default::default()
            })
            .await
            .expect("resync");
    }
}

/// Rows `first..first+n` of the seeded set: id, text, category, embedding.
pub fn batch(vectors: &[f32], first: usize) -> RecordBatch {
    let n = vectors.len() / DIM;
    let ids = Int64Array::from_iter_values((first..first + n).map(|i| i as i64));
    let texts = StringArray::from_iter_values((first..first + n).map(|i| format!("doc {i}")));
    let category = StringArray::from_iter_values((first..first + n).map(|i| format!("c{}", i % 3)));
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::new(
        field,
        DIM as i32,
        Arc::new(Float32Array::from(vectors.to_vec())),
        None,
    );
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("text", Arc::new(texts) as ArrayRef),
        ("category", Arc::new(category) as ArrayRef),
        ("embedding", Arc::new(embedding) as ArrayRef),
    ])
    .expect("batch")
}

pub fn create(name: &str, dataset: &str, request_id: &str) -> pb::CreateIndexRequest {
    pb::CreateIndexRequest {
        name: name.to_owned(),
        dataset: dataset.to_owned(),
        id_column: "id".into(),
        text_column: "text".into(),
        vector_column: "embedding".into(),
        metric: pb::Metric::Cosine as i32,
        config: None,
        ef_search: 0,
        payload_columns: vec!["category".into()],
        retained_generations: None,
        request_id: request_id.to_owned(),
    }
}
