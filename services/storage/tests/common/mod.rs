//! Test harness: a real storage gRPC server on a loopback socket, and a real
//! S3 HTTP server (moto) when it is installed.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_client::GrpcObjectStore;
use lakehouse_shared::auth::AuthPolicy;
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use lakehouse_storage::{BucketRegistry, BucketsFile, Storage};
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)]
pub use lakehouse_shared::testing::{free_port, skip_or_fail, which};
use lakehouse_shared::testing::{serve_on_loopback, server_config};

/// A storage service served over gRPC on loopback.
pub struct TestServer {
    pub addr: String,
    pub storage: Arc<Storage>,
    stop: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestServer {
    pub async fn start(buckets_toml: &str) -> Self {
        Self::start_with(buckets_toml, None).await
    }

    /// A server that requires tokens (`policy` with authentication on).
    pub async fn start_with(buckets_toml: &str, policy: Option<AuthPolicy>) -> Self {
        let file = BucketsFile::parse(buckets_toml).expect("valid buckets config");
        let secrets = StaticSecrets::default()
            .with("s3.access_key_id", "testing")
            .with("s3.secret_access_key", "testing-secret-value-4711");
        let registry = BucketRegistry::build(&file, &secrets).expect("buckets build");
        Self::start_on(registry, policy).await
    }

    /// A server over a registry built by the test (custom stores).
    pub async fn start_on(registry: BucketRegistry, policy: Option<AuthPolicy>) -> Self {
        let storage = Arc::new(Storage::new(registry, Duration::from_millis(1500)));
        let stop = CancellationToken::new();
        let mut server = GrpcServer::new(server_config());
        if let Some(policy) = policy {
            server = server.with_auth(policy);
        }
        let server = server.add_service(lakehouse_storage::service(storage.clone(), 64 << 20));
        let addr = serve_on_loopback(server, &stop).await;
        Self {
            addr,
            storage,
            stop,
        }
    }

    pub fn client(&self) -> lakehouse_client::StorageClient {
        lakehouse_client::storage(
            lakehouse_client::connect_lazy(&self.addr).expect("valid address"),
        )
    }

    /// A client presenting `token`.
    pub fn client_with(&self, token: &str) -> lakehouse_client::StorageClient {
        let token = lakehouse_shared::secrets::SecretString::new(token);
        lakehouse_client::storage(
            lakehouse_client::connect_lazy_with(&self.addr, Some(&token)).expect("valid address"),
        )
    }

    pub fn object_store(&self, bucket: &str) -> GrpcObjectStore {
        GrpcObjectStore::new(self.client(), bucket)
    }
}

/// The shared moto S3 server.
#[allow(unused_imports)]
pub use lakehouse_shared::testing::MotoServer as S3Server;

pub fn local_bucket_toml(name: &str, path: &Path, rescue: Option<&str>) -> String {
    let rescue = rescue
        .map(|r| format!("rescue_bucket = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "[buckets.{name}]\nbackend = \"local\"\npath = \"{}\"\n{rescue}",
        path.display()
    )
}

pub fn s3_bucket_toml(name: &str, endpoint: &str, bucket: &str, rescue: Option<&str>) -> String {
    let rescue = rescue
        .map(|r| format!("rescue_bucket = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "[buckets.{name}]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\ncredentials = \"s3\"\nconnect_timeout = \"500ms\"\nmax_retries = 0\n{rescue}"
    )
}
