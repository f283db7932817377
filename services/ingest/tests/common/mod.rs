//! What only the ingest tests need: a small in-memory catalog that
//! implements GetDataset and CommitFiles with the real version semantics
//! (and can be told to refuse), served beside the test kit's storage with
//! the ingest service ([`Stack`]); the kit's real storage and catalog with
//! the ingest service ([`RealStack`]); helpers to run an ingest and read
//! its Parquet parts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lakehouse_ingest::{IngestConfig, IngestRuntime};
use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::catalog::v1::catalog_service_server::{CatalogService, CatalogServiceServer};
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::secrets::{SecretsProvider, StaticSecrets};
use lakehouse_shared::server::GrpcServer;
use lakehouse_testkit::server_config;
use tonic::{Request, Response, Status};

#[allow(unused_imports)]
pub use lakehouse_testkit::{pg_exec, pg_url, skip_or_fail, unique};

/// One committed dataset in the fake catalog.
#[derive(Debug, Clone)]
pub struct Committed {
    pub version: u64,
    pub files: Vec<catalog::DataFile>,
    pub schema: Option<catalog::Schema>,
    pub lineage: Option<catalog::Lineage>,
    pub bucket: String,
}

/// A catalog with the real CommitFiles version semantics, in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeCatalog {
    pub datasets: Arc<Mutex<BTreeMap<String, Committed>>>,
    /// When set, CommitFiles answers with this code.
    pub refuse: Arc<Mutex<Option<tonic::Code>>>,
    pub commits: Arc<Mutex<Vec<catalog::CommitFilesRequest>>>,
    /// When set, the next commit is applied but answered UNAVAILABLE, as a
    /// connection lost after the commit landed.
    pub lose_next_answer: Arc<Mutex<bool>>,
    /// Answers by request id, replayed like the real catalog does.
    pub answers: Arc<Mutex<BTreeMap<String, catalog::CommitFilesResponse>>>,
}

impl FakeCatalog {
    pub fn dataset(&self, name: &str) -> Option<Committed> {
        self.datasets.lock().expect("lock").get(name).cloned()
    }
}

#[tonic::async_trait]
impl CatalogService for FakeCatalog {
    async fn create_dataset(
        &self,
        _: Request<catalog::CreateDatasetRequest>,
    ) -> Result<Response<catalog::CreateDatasetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_dataset(
        &self,
        request: Request<catalog::GetDatasetRequest>,
    ) -> Result<Response<catalog::GetDatasetResponse>, Status> {
        let name = request.into_inner().name;
        let found = self
            .dataset(&name)
            .ok_or_else(|| Status::not_found(format!("dataset {name} not found")))?;
        Ok(Response::new(catalog::GetDatasetResponse {
            dataset: Some(catalog::Dataset {
                name,
                version: found.version,
                lineage: found.lineage,
                file_count: found.files.len() as u64,
                bucket: found.bucket,
                ..Default::default()
            }),
        }))
    }

    async fn list_datasets(
        &self,
        _: Request<catalog::ListDatasetsRequest>,
    ) -> Result<Response<catalog::ListDatasetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_dataset(
        &self,
        _: Request<catalog::DeleteDatasetRequest>,
    ) -> Result<Response<catalog::DeleteDatasetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn commit_files(
        &self,
        request: Request<catalog::CommitFilesRequest>,
    ) -> Result<Response<catalog::CommitFilesResponse>, Status> {
        let request = request.into_inner();
        self.commits.lock().expect("lock").push(request.clone());
        if let Some(code) = *self.refuse.lock().expect("lock") {
            return Err(Status::new(code, "refused by the test"));
        }
        if let Some(answer) = self.answers.lock().expect("lock").get(&request.request_id) {
            return Ok(Response::new(answer.clone()));
        }
        let mut datasets = self.datasets.lock().expect("lock");
        let current = datasets.get(&request.name).cloned();
        match (request.expected_version, &current) {
            (Some(0), Some(_)) => return Err(Status::already_exists("dataset exists")),
            (Some(n), Some(c)) if n != c.version => return Err(Status::aborted("stale version")),
            (Some(n), None) if n > 0 => return Err(Status::not_found("no dataset")),
            (None, None) => return Err(Status::not_found("no dataset")),
            _ => {}
        }
        let mut files = match (request.mode, &current) {
            (m, Some(c)) if m == catalog::CommitMode::Append as i32 => c.files.clone(),
            _ => Vec::new(),
        };
        files.extend(request.add_files.clone());
        let committed = Committed {
            version: current.map(|c| c.version).unwrap_or(0) + 1,
            files,
            schema: request.schema.clone(),
            lineage: request.lineage.clone(),
            bucket: request.bucket.clone(),
        };
        datasets.insert(request.name.clone(), committed.clone());
        let answer = catalog::CommitFilesResponse {
            dataset: Some(catalog::Dataset {
                name: request.name,
                version: committed.version,
                ..Default::default()
            }),
        };
        if !request.request_id.is_empty() {
            self.answers
                .lock()
                .expect("lock")
                .insert(request.request_id.clone(), answer.clone());
        }
        if std::mem::take(&mut *self.lose_next_answer.lock().expect("lock")) {
            return Err(Status::unavailable("connection lost (by the test)"));
        }
        Ok(Response::new(answer))
    }

    async fn list_dataset_files(
        &self,
        _: Request<catalog::ListDatasetFilesRequest>,
    ) -> Result<Response<catalog::ListDatasetFilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_lineage_events(
        &self,
        _: Request<catalog::ListLineageEventsRequest>,
    ) -> Result<Response<catalog::ListLineageEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn resync_dataset(
        &self,
        _: Request<catalog::ResyncDatasetRequest>,
    ) -> Result<Response<catalog::ResyncDatasetResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn resync_missing(
        &self,
        _: Request<catalog::ResyncMissingRequest>,
    ) -> Result<Response<catalog::ResyncMissingResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// The kit's storage (without its catalog), the fake catalog and the
/// ingest service, each on its own loopback port.
pub struct Stack {
    base: lakehouse_testkit::Stack,
    pub ingest_addr: String,
    pub catalog_addr: String,
    pub catalog: FakeCatalog,
    runtime: Option<IngestRuntime>,
    config: IngestConfig,
    secrets: Arc<dyn SecretsProvider>,
}

impl Stack {
    pub async fn start(config: IngestConfig, secrets: Arc<dyn SecretsProvider>) -> Self {
        let base = lakehouse_testkit::Stack::builder()
            .without_catalog()
            .start()
            .await;
        let catalog = FakeCatalog::default();
        let catalog_addr = base
            .serve(
                GrpcServer::new(server_config())
                    .add_service(CatalogServiceServer::new(catalog.clone())),
            )
            .await;
        let mut stack = Self {
            base,
            ingest_addr: String::new(),
            catalog_addr,
            catalog,
            runtime: None,
            config,
            secrets,
        };
        stack.start_ingest().await;
        stack
    }

    async fn start_ingest(&mut self) {
        let runtime = IngestRuntime::start(
            &self.config,
            self.secrets.clone(),
            self.base.addr(),
            &self.catalog_addr,
        )
        .await
        .expect("ingest runtime");
        self.ingest_addr = self
            .base
            .serve(GrpcServer::new(server_config()).add_service(runtime.service(64 << 20)))
            .await;
        self.runtime = Some(runtime);
    }

    /// Stops the ingest service and starts a new one (new port) over the
    /// same storage and catalog, as a process restart would.
    pub async fn restart_ingest(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown().await;
        }
        self.start_ingest().await;
    }

    pub fn client(&self) -> lakehouse_client::IngestClient {
        lakehouse_client::ingest(lakehouse_client::connect_lazy(&self.ingest_addr).expect("addr"))
    }

    pub fn storage_client(&self) -> lakehouse_client::StorageClient {
        self.base.storage_client()
    }

    /// The folder of the local bucket `bucket` (`main`, the default, or
    /// `other`).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.base.bucket_dir(bucket)
    }

    /// Every file under `datasets/<name>/` in the default bucket's folder.
    pub fn files_of(&self, dataset: &str) -> Vec<PathBuf> {
        lakehouse_testkit::files_under(&self.bucket_dir("main").join("datasets").join(dataset))
    }

    pub async fn shutdown(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown().await;
        }
        self.base.shutdown().await;
    }
}

/// The kit's real storage and catalog services (SQLite store, local folder
/// buckets, all under one temporary folder) and ingest, on loopback.
pub struct RealStack {
    base: lakehouse_testkit::Stack,
    pub ingest_addr: String,
    ingest: IngestRuntime,
}

impl RealStack {
    pub async fn start(config: &IngestConfig) -> Self {
        let base = lakehouse_testkit::Stack::start().await;
        let (ingest, ingest_addr) = Self::ingest_over(&base, config).await;
        Self {
            base,
            ingest_addr,
            ingest,
        }
    }

    /// An ingest service over `base`'s storage and catalog, served until
    /// the stack stops.
    async fn ingest_over(
        base: &lakehouse_testkit::Stack,
        config: &IngestConfig,
    ) -> (IngestRuntime, String) {
        let ingest = IngestRuntime::start(
            config,
            Arc::new(StaticSecrets::default()),
            base.addr(),
            base.addr(),
        )
        .await
        .expect("ingest runtime");
        let addr = base
            .serve(GrpcServer::new(server_config()).add_service(ingest.service(16 << 20)))
            .await;
        (ingest, addr)
    }

    pub fn client(&self) -> lakehouse_client::IngestClient {
        lakehouse_client::ingest(lakehouse_client::connect_lazy(&self.ingest_addr).expect("addr"))
    }

    pub fn catalog_client(&self) -> lakehouse_client::CatalogClient {
        self.base.catalog()
    }

    pub fn storage_client(&self) -> lakehouse_client::StorageClient {
        self.base.storage_client()
    }

    /// A second ingest service over the same storage and catalog, as
    /// another process would be; served until the stack stops.
    pub async fn another_ingest(&self, config: &IngestConfig) -> (IngestRuntime, String) {
        Self::ingest_over(&self.base, config).await
    }

    pub async fn shutdown(self) {
        self.ingest.shutdown().await;
        self.base.shutdown().await;
    }
}

/// A request for a whole table.
pub fn table_request(dataset: &str, dsn: &str, table: &str) -> pb::IngestPostgresRequest {
    pb::IngestPostgresRequest {
        dataset: dataset.to_owned(),
        dsn: dsn.to_owned(),
        source: Some(pb::ingest_postgres_request::Source::Table(
            pb::TableSource {
                table: table.to_owned(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Runs an IngestPostgres to its end: the progress events and the final
/// ingest, or the error status (refused at once, or the `finished` status).
/// Checks the stream contract on the way: `started` first, naming the
/// ingest that `finished` reports.
pub async fn run_ingest(
    client: &mut lakehouse_client::IngestClient,
    request: pb::IngestPostgresRequest,
) -> (Vec<pb::IngestProgress>, Result<pb::Ingest, Status>) {
    let mut progress = Vec::new();
    let mut stream = match client.ingest_postgres(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (progress, Err(status)),
    };
    let mut started: Option<pb::IngestStarted> = None;
    loop {
        match stream.message().await {
            Ok(Some(pb::IngestPostgresResponse {
                event: Some(pb::ingest_postgres_response::Event::Started(s)),
            })) => {
                assert!(started.is_none(), "a second started message");
                started = Some(s);
            }
            Ok(Some(pb::IngestPostgresResponse {
                event: Some(pb::ingest_postgres_response::Event::Progress(p)),
            })) => {
                assert!(started.is_some(), "progress before started");
                progress.push(p);
            }
            Ok(Some(pb::IngestPostgresResponse {
                event: Some(pb::ingest_postgres_response::Event::Finished(f)),
            })) => {
                let started = started.expect("finished before started");
                let ingest = f.ingest.expect("finished carries the ingest");
                assert_eq!(ingest.ingest_id, started.ingest_id);
                assert!(
                    stream.message().await.ok().flatten().is_none(),
                    "finished is the last message"
                );
                let status = f.status.expect("finished carries a status");
                return if status.code == 0 {
                    (progress, Ok(ingest))
                } else {
                    (
                        progress,
                        Err(lakehouse_shared::status::from_rpc_status(&status)),
                    )
                };
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return (
                    progress,
                    Err(Status::internal("stream ended without a finished message")),
                );
            }
            Err(status) => return (progress, Err(status)),
        }
    }
}

/// Reads every Parquet file of a dataset in key order.
pub fn read_parquet(files: &[PathBuf]) -> Vec<arrow::array::RecordBatch> {
    let mut batches = Vec::new();
    for file in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(file).expect("open part"),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        for batch in reader {
            batches.push(batch.expect("batch"));
        }
    }
    batches
}

/// Small parts and row groups, so short tests exercise rotation.
pub fn small_config() -> IngestConfig {
    IngestConfig {
        batch_rows: 1000,
        row_group_rows: 5000,
        part_bytes: 256 * 1024,
        ..IngestConfig::default()
    }
}
