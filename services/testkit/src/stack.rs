//! One stack for every crate's tests: storage and catalog (and optionally
//! vector) on ONE loopback server over one folder, as `lakehouse serve all`
//! runs them, so the services reach each other through their gRPC clients
//! exactly as in production.
//!
//! The folder's layout, stable across restarts:
//!
//! ```text
//! <dir>/buckets/main/     the default bucket `main` (its store counts reads)
//! <dir>/buckets/other/    a second bucket `other`
//! <dir>/catalog.sqlite    the catalog's manifests
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lakehouse_catalog::{CatalogConfig, CatalogRuntime};
use lakehouse_client::{CatalogClient, GrpcObjectStore, StorageClient};
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use lakehouse_shared::testing::{TestStore, serve_on_loopback, server_config};
use lakehouse_storage::{Bucket, BucketRegistry, BucketsFile, Storage};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "vector")]
use lakehouse_vector::{VectorConfig, VectorRuntime};

/// The message limit of the stack's services and clients: the production
/// default, so tests meet the limits users meet.
pub const MESSAGE_BYTES: usize = 64 << 20;

/// The storage service's bucket probe timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a started vector service may take to load its persisted
/// indexes before the test fails.
#[cfg(feature = "vector")]
const VECTOR_READY_WITHIN: Duration = Duration::from_secs(30);

/// The folder of `bucket` under a stack's folder `dir` (for a test that
/// damages files while no stack runs over `dir`).
pub fn bucket_folder(dir: &Path, bucket: &str) -> PathBuf {
    dir.join("buckets").join(bucket)
}

/// The catalog settings a stack starts with: a small pool, a resync that
/// reads 16 footers at once (the default).
pub fn catalog_config() -> CatalogConfig {
    CatalogConfig {
        catalog_url: None,
        catalog_max_connections: 8,
        catalog_acquire_timeout: Duration::from_secs(10),
        catalog_resync_concurrency: 16,
    }
}

/// Which services a [`Stack`] runs; [`Stack::builder`] makes one.
#[derive(Clone)]
pub struct StackBuilder {
    catalog: Option<CatalogConfig>,
    #[cfg(feature = "vector")]
    vector: Option<VectorConfig>,
}

impl fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("StackBuilder");
        out.field("catalog", &self.catalog.is_some());
        #[cfg(feature = "vector")]
        out.field("vector", &self.vector);
        out.finish()
    }
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self {
            catalog: Some(catalog_config()),
            #[cfg(feature = "vector")]
            vector: None,
        }
    }
}

impl StackBuilder {
    /// Storage alone, for tests that serve a catalog of their own (the
    /// ingest tests' fake, which can be told to refuse commits).
    pub fn without_catalog(mut self) -> Self {
        self.catalog = None;
        self
    }

    /// The catalog with these settings instead of [`catalog_config`].
    pub fn catalog(mut self, config: CatalogConfig) -> Self {
        self.catalog = Some(config);
        self
    }

    /// The vector service too, with these settings; [`Stack`]'s start then
    /// waits until it has loaded its persisted indexes.
    #[cfg(feature = "vector")]
    pub fn vector(mut self, config: VectorConfig) -> Self {
        self.vector = Some(config);
        self
    }

    /// Starts over a new temporary folder, removed with the stack.
    pub async fn start(self) -> Stack {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("no temp folder: {error}"));
        self.start_over(Folder::Temp(dir)).await
    }

    /// Starts over `dir`, which the caller keeps: a test can stop the
    /// stack, change files under `dir`, and start another over it.
    pub async fn start_in(self, dir: &Path) -> Stack {
        self.start_over(Folder::Given(dir.to_owned())).await
    }

    async fn start_over(self, folder: Folder) -> Stack {
        let dir = folder.path().to_owned();
        let (storage, main_store) = storage_over(&dir);
        // Bound first, so the catalog and vector clients know the address
        // before the server runs (they connect on first use), as `serve
        // all` does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("no loopback listener: {error}"));
        let addr = listener
            .local_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_else(|error| panic!("listener without address: {error}"));
        let mut server = GrpcServer::new(server_config())
            .add_service(lakehouse_storage::service(storage.clone(), MESSAGE_BYTES));
        let catalog = match &self.catalog {
            Some(config) => {
                let runtime = CatalogRuntime::start(config, &dir, &addr)
                    .await
                    .unwrap_or_else(|error| panic!("catalog starts: {error}"));
                server = server.add_service(runtime.service(MESSAGE_BYTES));
                Some(runtime)
            }
            None => None,
        };
        #[cfg(feature = "vector")]
        let vector = match &self.vector {
            Some(config) => {
                let runtime = VectorRuntime::start(config, &addr, &addr)
                    .unwrap_or_else(|error| panic!("vector starts: {error}"));
                server = server.add_gated_service(
                    runtime.grpc(config.max_message_bytes as usize),
                    runtime.ready(),
                );
                Some(runtime)
            }
            None => None,
        };
        let stop = CancellationToken::new();
        let serving = server.serve(listener, stop.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = serving.await {
                panic!("the stack's server failed: {error}");
            }
        });
        let stack = Stack {
            settings: self,
            folder: Some(folder),
            addr,
            storage,
            main_store,
            catalog,
            #[cfg(feature = "vector")]
            vector,
            stop,
            server: Some(server),
        };
        #[cfg(feature = "vector")]
        if let Some(vector) = &stack.vector {
            // Loads once the server answers: in `serve all` storage is this
            // very process.
            let loader = vector.clone();
            tokio::spawn(async move { loader.load_persisted().await });
            let mut ready = vector.ready();
            tokio::time::timeout(VECTOR_READY_WITHIN, ready.wait_for(|r| *r))
                .await
                .unwrap_or_else(|_| panic!("vector not ready within {VECTOR_READY_WITHIN:?}"))
                .unwrap_or_else(|error| panic!("vector ready channel: {error}"));
        }
        stack
    }
}

/// The storage service over `dir`'s two local buckets, `main` (the
/// default) wrapped in a [`TestStore`] that counts what it serves.
fn storage_over(dir: &Path) -> (Arc<Storage>, Arc<TestStore>) {
    let toml = format!(
        "default_bucket = \"main\"\n[buckets.main]\nbackend = \"local\"\npath = \"{}\"\n[buckets.other]\nbackend = \"local\"\npath = \"{}\"\n",
        bucket_folder(dir, "main").display(),
        bucket_folder(dir, "other").display()
    );
    let file = BucketsFile::parse(&toml).unwrap_or_else(|error| panic!("buckets config: {error}"));
    let registry = BucketRegistry::build(&file, &StaticSecrets::default())
        .unwrap_or_else(|error| panic!("buckets build: {error}"));
    let bucket = |name: &str| -> Bucket {
        registry
            .get(name)
            .unwrap_or_else(|error| panic!("bucket {name}: {error}"))
            .clone()
    };
    let (mut main, other) = (bucket("main"), bucket("other"));
    let main_store = Arc::new(TestStore::new(main.store.clone()));
    main.store = main_store.clone();
    let registry = BucketRegistry::from_buckets(vec![main, other], "main");
    (Arc::new(Storage::new(registry, PROBE_TIMEOUT)), main_store)
}

/// Where a stack keeps its files.
#[derive(Debug)]
enum Folder {
    /// Made for the stack; removed when the stack is dropped.
    Temp(tempfile::TempDir),
    /// The caller's.
    Given(PathBuf),
}

impl Folder {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Given(path) => path,
        }
    }
}

/// Storage and catalog (and vector, when asked) on one loopback server
/// over one folder; see the [module](self) for the folder's layout.
pub struct Stack {
    settings: StackBuilder,
    /// `None` only while [`Stack::restart`] hands it to the next stack.
    folder: Option<Folder>,
    addr: String,
    storage: Arc<Storage>,
    main_store: Arc<TestStore>,
    catalog: Option<CatalogRuntime>,
    #[cfg(feature = "vector")]
    vector: Option<VectorRuntime>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("addr", &self.addr)
            .field("folder", &self.folder)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stack {
    /// Which services to run; storage and catalog unless told otherwise.
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// Storage and catalog over a new temporary folder.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Stops the services and starts new ones (on a new port) over the
    /// same folder (the buckets' files and the catalog's SQLite file), as
    /// a process restart would.
    pub async fn restart(mut self) -> Self {
        let settings = self.settings.clone();
        let folder = self.folder.take();
        self.shutdown_services().await;
        match folder {
            Some(folder) => settings.start_over(folder).await,
            None => unreachable!("a running stack holds its folder"),
        }
    }

    /// Stops the server (in-flight calls end within the server's grace)
    /// and closes the catalog's database.
    pub async fn shutdown(mut self) {
        self.shutdown_services().await;
    }

    async fn shutdown_services(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(catalog) = self.catalog.take() {
            catalog.shutdown().await;
        }
    }

    /// Serves `server` (another service under test, or a fake peer) on a
    /// new loopback port until the stack stops; returns its address.
    pub async fn serve(&self, server: GrpcServer) -> String {
        serve_on_loopback(server, &self.stop).await
    }

    /// `http://127.0.0.1:PORT`, where every service of the stack answers.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The stack's folder.
    pub fn dir(&self) -> &Path {
        match &self.folder {
            Some(folder) => folder.path(),
            None => unreachable!("a running stack holds its folder"),
        }
    }

    /// The folder of the local bucket `bucket` (`main` or `other`).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        bucket_folder(self.dir(), bucket)
    }

    /// The SQLite file the catalog keeps its manifests in.
    pub fn catalog_db(&self) -> PathBuf {
        self.dir().join("catalog.sqlite")
    }

    /// The storage service's domain object.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The bucket `main`'s store, which counts the bytes, lists and writes
    /// it serves.
    pub fn main_store(&self) -> &Arc<TestStore> {
        &self.main_store
    }

    /// Bytes the bucket `main` served to readers so far.
    pub fn served(&self) -> u64 {
        self.main_store.read_bytes()
    }

    /// A storage client, whose requests may reach [`MESSAGE_BYTES`].
    pub fn storage_client(&self) -> StorageClient {
        lakehouse_client::storage(self.channel())
            .max_encoding_message_size(MESSAGE_BYTES)
            .max_decoding_message_size(MESSAGE_BYTES)
    }

    /// A catalog client, whose responses may reach [`MESSAGE_BYTES`].
    pub fn catalog(&self) -> CatalogClient {
        lakehouse_client::catalog(self.channel())
            .max_encoding_message_size(MESSAGE_BYTES)
            .max_decoding_message_size(MESSAGE_BYTES)
    }

    /// The bucket `main` (the default) through storage.
    pub fn object_store(&self) -> GrpcObjectStore {
        GrpcObjectStore::new(self.storage_client(), "main")
    }

    /// The bucket `other` through storage.
    pub fn other_store(&self) -> GrpcObjectStore {
        GrpcObjectStore::new(self.storage_client(), "other")
    }

    /// The vector service's runtime; panics when the stack runs without it.
    #[cfg(feature = "vector")]
    pub fn vector(&self) -> &VectorRuntime {
        match &self.vector {
            Some(vector) => vector,
            None => panic!("this stack was started without the vector service"),
        }
    }

    /// A vector client.
    #[cfg(feature = "vector")]
    pub fn vector_client(&self) -> lakehouse_client::VectorClient {
        lakehouse_client::vector(self.channel())
    }

    fn channel(&self) -> lakehouse_client::TracedChannel {
        lakehouse_client::connect_lazy(&self.addr)
            .unwrap_or_else(|error| panic!("a valid address {}: {error}", self.addr))
    }
}
