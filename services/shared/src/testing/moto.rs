//! A real S3 HTTP server for tests: moto (`pip install "moto[server]"`,
//! which `.ci/run` installs), the stand-in for MinIO, on a free loopback
//! port. One copy for the storage tests and the end-to-end tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, skip_or_fail, which};

/// A moto S3 server (the stand-in for MinIO) on a free loopback port,
/// killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    /// http://127.0.0.1:port
    pub endpoint: String,
}

impl MotoServer {
    /// Starts moto_server, or returns None (after skip_or_fail) when it is
    /// not on PATH.
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
        let server = Self {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
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

    /// Kills the server: the S3 endpoint becomes a closed port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
