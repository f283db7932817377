//! Test harness: a real storage gRPC server (local bucket, whose store
//! counts the bytes it serves: the shared `TestStore`) and a real catalog gRPC server, both on
//! loopback sockets; Parquet writers; the skip-or-fail gate.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use lakehouse_catalog::{CatalogConfig, CatalogRuntime};
use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_proto::catalog::v1 as pb;
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use lakehouse_storage::{Bucket, BucketRegistry, BucketsFile, Storage};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use lakehouse_shared::testing::skip_or_fail;
use lakehouse_shared::testing::{TestStore, serve_on_loopback, server_config};

pub fn catalog_config() -> CatalogConfig {
    CatalogConfig {
        catalog_url: None,
        catalog_max_connections: 8,
        catalog_acquire_timeout: Duration::from_secs(10),
        catalog_resync_concurrency: 16,
    }
}

/// Storage and catalog servers on loopback, over a temporary folder.
pub struct Stack {
    pub storage_addr: String,
    pub catalog_addr: String,
    pub storage: Arc<Storage>,
    /// The bucket `main`'s store, counting the bytes it serves to readers.
    pub main_store: Arc<TestStore>,
    pub dir: tempfile::TempDir,
    runtime: Option<CatalogRuntime>,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stack {
    /// A dataset as GetDataset returns it in `view`.
    pub async fn dataset(&self, name: &str, view: pb::DatasetView) -> pb::Dataset {
        self.catalog()
            .get_dataset(pb::GetDatasetRequest {
                name: name.to_owned(),
                view: view as i32,
            })
            .await
            .expect("get dataset")
            .into_inner()
            .dataset
            .expect("dataset")
    }

    /// Two local buckets under a new temporary folder: `main` (the
    /// default, counting the bytes it serves) and `other`.
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir")).await
    }

    /// Stops the servers and starts new ones over the same folder (the
    /// buckets' files and the catalog's SQLite file), as a restart would.
    pub async fn restart(mut self) -> Self {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        self.shutdown().await;
        Self::start_in(dir).await
    }

    /// The SQLite file the catalog keeps its manifests in.
    pub fn catalog_db(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("catalog.sqlite")
    }

    async fn start_in(dir: tempfile::TempDir) -> Self {
        let toml = format!(
            "default_bucket = \"main\"\n[buckets.main]\nbackend = \"local\"\npath = \"{}\"\n[buckets.other]\nbackend = \"local\"\npath = \"{}\"\n",
            dir.path().join("bucket").display(),
            dir.path().join("other-bucket").display()
        );
        let file = BucketsFile::parse(&toml).expect("valid buckets config");
        let registry =
            BucketRegistry::build(&file, &StaticSecrets::default()).expect("buckets build");
        let mut bucket: Bucket = registry.get("main").expect("main bucket").clone();
        let main_store = Arc::new(TestStore::new(bucket.store.clone()));
        bucket.store = main_store.clone();
        let other: Bucket = registry.get("other").expect("other bucket").clone();
        let registry = BucketRegistry::from_buckets(vec![bucket, other], "main");
        let storage = Arc::new(Storage::new(registry, Duration::from_millis(1500)));
        let stop = CancellationToken::new();

        let storage_addr = serve_on_loopback(
            GrpcServer::new(server_config())
                .add_service(lakehouse_storage::service(storage.clone(), 64 << 20)),
            &stop,
        )
        .await;

        let runtime =
            CatalogRuntime::start(&catalog_config(), &dir.path().join("data"), &storage_addr)
                .await
                .expect("catalog starts");
        let catalog_addr = serve_on_loopback(
            GrpcServer::new(server_config()).add_service(runtime.service(64 << 20)),
            &stop,
        )
        .await;
        Self {
            storage_addr,
            catalog_addr,
            storage,
            main_store,
            dir,
            runtime: Some(runtime),
            stop,
        }
    }

    pub fn catalog(&self) -> CatalogClient {
        lakehouse_client::catalog(
            lakehouse_client::connect_lazy(&self.catalog_addr).expect("valid address"),
        )
        .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn storage_client(&self) -> StorageClient {
        lakehouse_client::storage(
            lakehouse_client::connect_lazy(&self.storage_addr).expect("valid address"),
        )
        .max_encoding_message_size(64 * 1024 * 1024)
    }

    pub fn object_store(&self) -> GrpcObjectStore {
        GrpcObjectStore::new(self.storage_client(), "main")
    }

    /// The bucket `other` through storage.
    pub fn other_store(&self) -> GrpcObjectStore {
        GrpcObjectStore::new(self.storage_client(), "other")
    }

    /// Bytes the bucket `main` served to readers so far.
    pub fn served(&self) -> u64 {
        self.main_store.read_bytes()
    }

    /// Stops the servers and closes the catalog database.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown().await;
        }
    }
}

/// A batch of `rows` rows: `id` Int64 (not null), `value` Float64, and
/// with `extra`, a `label` Utf8 column. Values are unique so encodings
/// cannot shrink them: a file's size tracks its row count.
/// A schema column.
pub fn column(name: &str, data_type: &str, nullable: bool) -> pb::Column {
    pb::Column {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        nullable,
    }
}

/// A file entry of a commit.
pub fn data_file(key: &str, size: u64, rows: u64) -> pb::DataFile {
    pb::DataFile {
        key: key.to_owned(),
        size_bytes: size,
        row_count: rows,
        etag: String::new(),
    }
}

pub fn batch(rows: usize, first_id: i64, extra: bool) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..rows as i64).map(|i| first_id + i),
    ));
    let values: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|i| (i as f64).sqrt() * 1.000_1),
    ));
    let mut columns = vec![("id", ids, false), ("value", values, true)];
    if extra {
        let labels: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("label-{i}")),
        ));
        columns.push(("label", labels, true));
    }
    RecordBatch::try_from_iter_with_nullable(columns).expect("valid batch")
}

/// Parquet bytes of `batch`, uncompressed and without dictionaries.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let properties = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(64 * 1024))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
    out
}

/// Writes a Parquet file through storage; returns its size.
pub async fn put_parquet(store: &GrpcObjectStore, key: &str, batch: &RecordBatch) -> u64 {
    let bytes = parquet_bytes(batch);
    let size = bytes.len() as u64;
    store
        .put(&Path::from(key), PutPayload::from(bytes))
        .await
        .expect("put parquet");
    size
}
