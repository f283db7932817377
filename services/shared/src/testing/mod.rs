//! Helpers every crate's tests share (feature `testing`, enabled only in
//! dev-dependencies): the skip-or-fail gate for outside dependencies, and
//! small process and file utilities. Integration tests take them through
//! the test kit (`lakehouse-testkit`), which re-exports them beside its
//! stack; they live here because unit tests in `src/` use them too (the
//! registry's fault injection), and those cannot take the kit, which
//! depends on the crates it tests.

mod moto;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::server::GrpcServer;

pub use moto::MotoServer;
pub use store::TestStore;

/// Skips a test whose outside dependency is missing, loudly; fails it
/// under `LAKEHOUSE_TEST_REQUIRE_ALL=1` (CI), where everything must be there.
pub fn skip_or_fail(test: &str, missing: &str) {
    if std::env::var("LAKEHOUSE_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {missing}, and LAKEHOUSE_TEST_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!(
        "SKIPPED {test}: {missing} (set LAKEHOUSE_TEST_REQUIRE_ALL=1 to make this a failure)"
    );
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A free TCP port on loopback (bound and released; a race is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|error| panic!("no free port on loopback: {error}"))
}

/// Every file below `root`, sorted; empty when `root` does not exist.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// Generous server settings for tests: large messages, long calls, quick
/// shutdown.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        listen: None,
        request_timeout: Duration::from_secs(600),
        concurrency_limit: 256,
        max_message_bytes: 64 * 1024 * 1024,
        shutdown_grace: Duration::from_secs(1),
    }
}

/// Serves `server` on a fresh loopback port until `stop` is cancelled and
/// returns its `http://127.0.0.1:PORT` address.
pub async fn serve_on_loopback(server: GrpcServer, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("no loopback listener: {error}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("listener without address: {error}"));
    tokio::spawn(server.serve(listener, stop.clone()));
    format!("http://{addr}")
}
