//! Test harness: a real storage gRPC server on a loopback socket, and a real
//! S3 HTTP server (moto) when it is installed.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A moto S3 server on a free port, killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts moto_server, or returns None (after skip_or_fail) when absent.
    pub fn start(test: &str) -> Option<Self> {
        let Some(moto) = which("moto_server") else {
            skip_or_fail(
                test,
                "moto_server (a real S3 HTTP server) is not on PATH; pip install 'moto[server]'",
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { child, endpoint })
    }

    /// Creates a bucket with a plain HTTP PUT (moto does not check auth).
    pub fn create_bucket(&self, name: &str) {
        use std::io::{Read as _, Write as _};
        let host = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).expect("connect to moto");
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "create bucket: {response}"
        );
    }
}

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
