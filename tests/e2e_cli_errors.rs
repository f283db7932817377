//! The CLI's failures as scripts and agents branch on them, through the real
//! binary against `lakehouse serve all`: every class of docs/cli.md's exit
//! code table, each with the standard `error: <code> [<REASON>]: …` line.

use crate::support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use support::{ServerProcess, free_port};

/// Exit code, stdout and stderr of one CLI run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(self, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed: stdout {} stderr {}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts the exit code and that the error line starts with `line`;
    /// returns that line.
    pub fn fails(&self, code: i32, line: &str) -> String {
        let error = self
            .stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line (exit {:?}): {}", self.code, self.stderr))
            .to_owned();
        assert_eq!(self.code, Some(code), "{}", self.stderr);
        assert!(error.starts_with(line), "{line:?} expected: {error}");
        error
    }
}

/// Runs the CLI with `args` against `addr` (none: `args` name it), with no
/// address or token from the test's own environment.
pub fn cli_at(addr: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(support::BINARY);
    command.args(args);
    if let Some(addr) = addr {
        command.args(["--addr", addr]);
    }
    for var in [
        "LAKEHOUSE_ADDR",
        "LAKEHOUSE_STORAGE_ADDR",
        "LAKEHOUSE_CATALOG_ADDR",
        "LAKEHOUSE_INGEST_ADDR",
        "LAKEHOUSE_VECTOR_ADDR",
        "LAKEHOUSE_TOKEN",
    ] {
        command.env_remove(var);
    }
    let output = command.output().expect("run the CLI");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn cli(server: &ServerProcess, args: &[&str]) -> Run {
    cli_at(Some(&server.addr), args)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// A `serve all` with dataset `docs`: four 4-dimensional vectors (the
/// README's tour), ingested from NDJSON.
pub fn server_with_docs(dir: &Path) -> ServerProcess {
    let mut server = ServerProcess::start("all", &dir.join("server"), &[]);
    server.wait_healthy();
    let docs = dir.join("docs.ndjson");
    std::fs::write(
        &docs,
        r#"{"id":1,"text":"How to rotate a bearer token","embedding":[0.9,0.1,0.0,0.1]}
{"id":2,"text":"Ingesting a PostgreSQL table","embedding":[0.1,0.9,0.2,0.0]}
{"id":3,"text":"Tuning HNSW for recall","embedding":[0.0,0.2,0.9,0.3]}
{"id":4,"text":"Restoring a dataset with resync","embedding":[0.2,0.7,0.1,0.4]}
"#,
    )
    .expect("write docs");
    cli(
        &server,
        &["ingest", "file", path_str(&docs), "--dataset", "docs"],
    )
    .ok("ingest docs");
    server
}

#[test]
fn every_exit_code_class_is_what_docs_cli_md_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    cli(
        &server,
        &[
            "index",
            "create",
            "docs-idx",
            "--dataset",
            "docs",
            "--text-column",
            "text",
        ],
    )
    .ok("index create");

    // 5, unavailable: nothing listens, the name does not resolve, the TLS
    // handshake fails (https to a plaintext server); `health` alike.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let https = format!("https://{}", server.addr);
    for (addr, args) in [
        (nowhere.as_str(), ["datasets", "ls"]),
        ("nosuch.invalid:50051", ["datasets", "ls"]),
        (https.as_str(), ["index", "ls"]),
        (nowhere.as_str(), ["objects", "ls"]),
    ] {
        let error = cli_at(Some(addr), &args).fails(5, "error: Unavailable [SERVER_UNREACHABLE]: ");
        assert!(error.contains(addr), "names the address: {error}");
    }
    cli_at(None, &["health", "--addr", &nowhere, "--timeout", "2s"])
        .fails(5, "error: Unavailable [SERVER_UNREACHABLE]: ");

    // 2, usage: what the server refuses about the command's arguments, as
    // well as what clap or the CLI refuse.
    cli(
        &server,
        &["index", "create", "Bad Name", "--dataset", "docs"],
    )
    .fails(2, "error: InvalidArgument [INVALID_NAME]: ");
    let error = cli(
        &server,
        &["search", "--index", "docs-idx", "--vector", "[0.1,0.2]"],
    )
    .fails(2, "error: InvalidArgument [WRONG_DIMENSIONS]: ");
    assert!(error.contains('4') && error.contains('2'), "{error}");
    cli(
        &server,
        &[
            "index",
            "create",
            "x",
            "--dataset",
            "docs",
            "--metric",
            "manhattan",
        ],
    )
    .fails(2, "error: unknown metric");

    // 3, not found; 4, conflict.
    cli(&server, &["index", "show", "nope"]).fails(3, "error: NotFound [INDEX_NOT_FOUND]: ");
    cli(&server, &["datasets", "show", "nope"]).fails(3, "error: NotFound [DATASET_NOT_FOUND]: ");
    cli(
        &server,
        &["index", "create", "docs-idx", "--dataset", "docs"],
    )
    .fails(4, "error: AlreadyExists [INDEX_EXISTS]: ");

    // 1, failed: the server refused the data itself.
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "id,name\n1,a\n").expect("write");
    cli(
        &server,
        &["ingest", "file", path_str(&fake), "--dataset", "fake"],
    )
    .fails(1, "error: InvalidArgument [BAD_FILE]: ");
}

/// 6, refused: no token, or a token without the scope.
#[test]
fn a_refused_token_exits_6() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "[token]\nreader = \"read:tok-reader-5d1e0c9a7b3f4e28\"\n\
         service = \"admin:tok-service-8a2f6c1d9e0b7a43\"\n",
    )
    .expect("write secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut server = ServerProcess::start(
        "all",
        &dir.path().join("server"),
        &[("LAKEHOUSE_SECRETS_FILE", secrets.display().to_string())],
    );
    server.wait_healthy();
    cli(&server, &["datasets", "ls"]).fails(6, "error: Unauthenticated [TOKEN_MISSING]: ");
    cli(
        &server,
        &[
            "datasets",
            "rm",
            "anything",
            "--token",
            "tok-reader-5d1e0c9a7b3f4e28",
        ],
    )
    .fails(6, "error: PermissionDenied [SCOPE_MISSING]: ");
}

/// A first build that fails (the text column named as the vectors) used to
/// keep the name: the corrected create said INDEX_EXISTS and pointed at
/// RebuildIndex, which cannot change the column. It replaces the failed
/// index now.
#[test]
fn a_failed_first_build_does_not_keep_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    cli(
        &server,
        &[
            "index",
            "create",
            "docs-idx",
            "--dataset",
            "docs",
            "--vector-column",
            "text",
        ],
    )
    .fails(4, "error: FailedPrecondition [COLUMN_TYPE]: ");
    let shown = cli(&server, &["index", "show", "docs-idx", "--output", "json"]).ok("show");
    assert!(shown.contains("FAILED"), "{shown}");

    let created = cli(
        &server,
        &[
            "index",
            "create",
            "docs-idx",
            "--dataset",
            "docs",
            "--text-column",
            "text",
        ],
    )
    .ok("the corrected create");
    assert!(created.contains("READY"), "{created}");
    let generations = cli(
        &server,
        &["index", "generations", "docs-idx", "--output", "json"],
    )
    .ok("generations");
    assert_eq!(
        generations.lines().count(),
        1,
        "only the new build: {generations}"
    );
    assert!(
        generations.contains("GENERATION_STATE_READY"),
        "{generations}"
    );
    let hits = cli(
        &server,
        &[
            "search",
            "--index",
            "docs-idx",
            "--k",
            "1",
            "--vector",
            "[0.0,0.1,1.0,0.2]",
        ],
    )
    .ok("search");
    assert!(hits.contains("Tuning HNSW for recall"), "{hits}");
}

/// `objects` failures are the standard line with the storage reason, not
/// object_store's text, and name what is missing; `objects rm` says whether
/// the object was there.
#[test]
fn objects_errors_name_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", &dir.path().join("server"), &[]);
    server.wait_healthy();

    let error = cli(&server, &["objects", "get", "nope.txt", "-"])
        .fails(3, "error: NotFound [OBJECT_NOT_FOUND]: ");
    assert!(error.contains("nope.txt"), "{error}");
    let error = cli(&server, &["objects", "--bucket", "nope", "ls"])
        .fails(3, "error: NotFound [BUCKET_NOT_FOUND]: ");
    assert!(error.contains("\"nope\""), "names the bucket: {error}");

    // rm: a missing key is not found; a present one is removed, once.
    let error = cli(&server, &["objects", "rm", "nope.txt"])
        .fails(3, "error: NotFound [OBJECT_NOT_FOUND]: ");
    assert!(error.contains("nope.txt"), "{error}");
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "hello").expect("write");
    cli(
        &server,
        &["objects", "put", path_str(&file), "notes/note.txt"],
    )
    .ok("put");
    let removed = cli(
        &server,
        &["objects", "rm", "notes/note.txt", "--output", "json"],
    )
    .ok("rm");
    let removed: serde_json::Value = serde_json::from_str(removed.trim()).expect("one JSON line");
    assert_eq!(removed["removed"], true);
    assert_eq!(removed["size"], 5);
    cli(&server, &["objects", "rm", "notes/note.txt"])
        .fails(3, "error: NotFound [OBJECT_NOT_FOUND]: ");
}

/// The trial listings of an index that does not exist are INDEX_NOT_FOUND,
/// not an empty success or NO_TRIAL_MEETS_RECALL; of one that exists but
/// has no trials, nothing (ls) and NO_TRIAL_MEETS_RECALL (best).
#[test]
fn trial_listings_of_a_missing_index_are_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_docs(dir.path());
    let error = cli(&server, &["trial", "ls", "--index", "nope"])
        .fails(3, "error: NotFound [INDEX_NOT_FOUND]: ");
    assert!(error.contains("nope"), "{error}");
    cli(&server, &["trial", "best", "--index", "nope"])
        .fails(3, "error: NotFound [INDEX_NOT_FOUND]: ");

    cli(
        &server,
        &["index", "create", "docs-idx", "--dataset", "docs"],
    )
    .ok("index create");
    let listed = cli(&server, &["trial", "ls", "--index", "docs-idx"]).ok("trial ls");
    assert!(listed.is_empty(), "{listed}");
    cli(&server, &["trial", "best", "--index", "docs-idx"])
        .fails(3, "error: NotFound [NO_TRIAL_MEETS_RECALL]: ");
}

/// `--addr` as people type it: a port alone is that port on this machine;
/// `health` finds the server through LAKEHOUSE_ADDR; and the flag says so
/// in `--help`.
#[test]
fn addresses_as_people_type_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", &dir.path().join("server"), &[]);
    server.wait_healthy();
    let port = server
        .addr
        .rsplit(':')
        .next()
        .expect("host:port")
        .to_owned();
    cli_at(Some(&port), &["buckets"]).ok("buckets --addr <port>");
    cli_at(Some(&format!(":{port}")), &["datasets", "ls"]).ok("datasets ls --addr :<port>");

    let output = Command::new(support::BINARY)
        .arg("health")
        .env("LAKEHOUSE_ADDR", &server.addr)
        .output()
        .expect("run health");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "server: SERVING");

    for command in [
        &["datasets", "ls", "--help"][..],
        &["objects", "--help"],
        &["health", "--help"],
    ] {
        let help = cli_at(None, command).ok("help");
        let addr_help = help
            .split("--addr <ADDR>")
            .nth(1)
            .unwrap_or_else(|| panic!("no --addr in {command:?}: {help}"));
        let first = addr_help.trim_start().lines().next().unwrap_or_default();
        assert!(
            first.contains("host:port") && first.contains("port alone"),
            "{command:?}: --addr has no help text: {help}"
        );
    }
}

/// An address where something other than a gRPC server listens used to
/// give `Unknown: transport error` (or `Internal: h2 protocol error`): now
/// the standard line says the connection broke, names the address and
/// what to check, and exits 5 like the other connection failures.
#[test]
fn an_address_that_is_not_a_grpc_server_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    for args in [&["index", "ls"][..], &["datasets", "ls"], &["health"]] {
        let error = cli_at(Some(&addr), args).fails(5, "error: Unavailable [CONNECTION_BROKEN]: ");
        assert!(
            error.contains(&addr) && error.contains("Lakehouse server"),
            "{error}"
        );
    }
}
