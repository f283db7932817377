//! End-to-end fixtures: start the real `lakehouse` binary as a separate
//! process with the environment docker-compose.yml gives it, wait for gRPC
//! health, keep its log in a file that is printed when a test fails, and stop
//! it with SIGTERM (then SIGKILL) on drop.

#![allow(dead_code)]

pub mod collector;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary the test build made (debug profile: no second compile).
pub const BINARY: &str = env!("CARGO_BIN_EXE_lakehouse");

// Each test file uses a different subset.
#[allow(unused_imports)]
pub use lakehouse_shared::testing::{MotoServer, files_under, free_port, skip_or_fail, which};

/// A running `lakehouse serve` process.
pub struct ServerProcess {
    child: Option<Child>,
    /// host:port it listens on.
    pub addr: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    /// Its data folder.
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts `lakehouse serve <role>` on a free port with `env`, in `dir`.
    pub fn start(role: &str, dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_at(role, dir, free_port(), env)
    }

    /// http://host:port, for tonic clients.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `lakehouse health` says SERVING, or panics with the log.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("server exited early with {status}:\n{}", self.log_text());
            }
            let ok = Command::new(BINARY)
                .args(["health", "--addr", &self.addr, "--timeout", "1s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if Instant::now() > deadline {
                panic!("server not healthy within 60 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- server log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Runs `sql` on the PostgreSQL at `url` with psql; false when psql is
/// missing or the statement failed (callers skip or fail loudly).
pub fn psql(url: &str, sql: &str) -> bool {
    let Some(psql) = which("psql") else {
        return false;
    };
    Command::new(psql)
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs grpcurl with `args`, returning (success, stdout, stderr).
pub fn grpcurl(grpcurl: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(grpcurl)
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl ServerProcess {
    /// Starts `lakehouse serve <role>` on `port` (chosen by the caller, so
    /// peers can be told the address before the process exists, and a
    /// restart keeps the address its clients know), in `dir`. An
    /// `LAKEHOUSE_LISTEN` in `env` overrides the one given here.
    pub fn start_at(role: &str, dir: &Path, port: u16, env: &[(&str, String)]) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let data_dir = dir.join("data");
        let log = dir.join(format!("{role}-{port}.log"));
        std::fs::create_dir_all(dir).expect("create the server folder");
        let log_file = std::fs::File::create(&log).expect("create server log");
        let mut command = Command::new(BINARY);
        command
            .args(["serve", role])
            .env("LAKEHOUSE_LISTEN", &addr)
            .env("LAKEHOUSE_DATA_DIR", &data_dir)
            .env("LAKEHOUSE_LOG", "info")
            .env("LAKEHOUSE_SECRETS_FILE", dir.join("no-secrets.toml"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start the lakehouse binary");
        Self {
            child: Some(child),
            addr,
            log,
            data_dir,
        }
    }

    /// Waits up to `timeout` for the process to end by itself: its exit
    /// status, or `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no shutdown at all (a crash or an OOM kill), and the exit
    /// status.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}
