//! One server owns its files, and its own services: a second server on the
//! same data folder refuses to start (naming the folder and the holder's
//! pid), the split roles lock only the part they own, a crash leaves no
//! stale lock; and the client address variables a user exports for the CLI
//! do not steer `serve all`'s services to another server.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::ServerProcess;

fn env_data_dir(data_dir: &Path) -> (&'static str, String) {
    (
        "LAKEHOUSE_DATA_DIR",
        data_dir.to_str().expect("utf-8 temp path").to_owned(),
    )
}

/// Starts `role` on `data_dir` and expects it to refuse: exit non-zero
/// within 30 s with a message naming the folder and the holder's pid.
fn expect_refused(role: &str, dir: &Path, data_dir: &Path, holder: u32) {
    let mut second = ServerProcess::start(role, dir, &[env_data_dir(data_dir)]);
    let status = second.wait_exit(Duration::from_secs(30));
    let log = second.log_text();
    let status = status.unwrap_or_else(|| panic!("a second `serve {role}` is running:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&data_dir.display().to_string()),
        "the refusal names the folder:\n{log}"
    );
    assert!(
        log.contains(&format!("pid {holder}")),
        "the refusal names the holder's pid {holder}:\n{log}"
    );
    assert!(log.contains("--data-dir"), "says what to do:\n{log}");
}

fn lock_pid(data_dir: &Path, name: &str) -> String {
    std::fs::read_to_string(data_dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn a_second_server_on_one_data_folder_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = ServerProcess::start("all", &dir.path().join("first"), &[]);
    first.wait_healthy();
    let data_dir = first.data_dir.clone();
    let pid = first.pid().expect("running");

    // On disk: both locks of `serve all` hold its pid.
    assert_eq!(lock_pid(&data_dir, "storage.lock"), pid.to_string());
    assert_eq!(lock_pid(&data_dir, "catalog.lock"), pid.to_string());

    // Another `serve all`, or a role that owns a part of the folder.
    expect_refused("all", &dir.path().join("second"), &data_dir, pid);
    expect_refused("storage", &dir.path().join("storage"), &data_dir, pid);
    expect_refused("catalog", &dir.path().join("catalog"), &data_dir, pid);
    // The refusals changed nothing: the first still serves, and the lock
    // files still name it.
    first.wait_healthy();
    assert_eq!(lock_pid(&data_dir, "storage.lock"), pid.to_string());

    // A crash leaves no stale lock: the kernel drops it with the process.
    first.kill();
    let mut after =
        ServerProcess::start("all", &dir.path().join("after"), &[env_data_dir(&data_dir)]);
    after.wait_healthy();
    let after_pid = after.pid().expect("running").to_string();
    assert_eq!(lock_pid(&data_dir, "storage.lock"), after_pid);
    assert_eq!(lock_pid(&data_dir, "catalog.lock"), after_pid);
}

#[test]
fn split_roles_share_a_data_folder_but_not_their_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let mut storage = ServerProcess::start(
        "storage",
        &dir.path().join("storage"),
        &[env_data_dir(&data_dir)],
    );
    storage.wait_healthy();
    // The catalog owns catalog.sqlite, not the bucket: it starts beside.
    let mut catalog = ServerProcess::start(
        "catalog",
        &dir.path().join("catalog"),
        &[
            env_data_dir(&data_dir),
            ("LAKEHOUSE_STORAGE_ADDR", storage.uri()),
        ],
    );
    catalog.wait_healthy();
    let storage_pid = storage.pid().expect("running");
    assert_eq!(lock_pid(&data_dir, "storage.lock"), storage_pid.to_string());
    assert_eq!(
        lock_pid(&data_dir, "catalog.lock"),
        catalog.pid().expect("running").to_string()
    );
    // `serve all` needs both: refused on the first it meets.
    expect_refused("all", &dir.path().join("all"), &data_dir, storage_pid);
}

/// The compose section of the README has users export the services'
/// addresses for the CLI; a `serve all` started in that shell must still
/// keep its data to itself, and say once that it ignored them.
#[test]
fn client_address_variables_do_not_steer_serve_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut other = ServerProcess::start("all", &dir.path().join("other"), &[]);
    other.wait_healthy();
    let mut server = ServerProcess::start(
        "all",
        &dir.path().join("server"),
        &[
            ("LAKEHOUSE_STORAGE_ADDR", other.addr.clone()),
            ("LAKEHOUSE_CATALOG_ADDR", format!("http://{}", other.addr)),
        ],
    );
    server.wait_healthy();

    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "id,name\n1,Ada\n2,Grace\n3,Alan\n").expect("write the csv");
    let cli = |server: &ServerProcess, args: &[&str]| {
        let output = Command::new(support::BINARY)
            .args(args)
            .args(["--addr", &server.addr])
            .env_remove("LAKEHOUSE_STORAGE_ADDR")
            .env_remove("LAKEHOUSE_CATALOG_ADDR")
            .env_remove("LAKEHOUSE_INGEST_ADDR")
            .env_remove("LAKEHOUSE_TOKEN")
            .output()
            .expect("run the CLI");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    cli(
        &server,
        &[
            "ingest",
            "file",
            csv.to_str().expect("utf-8"),
            "--dataset",
            "people",
        ],
    );

    // The dataset and its parts are this server's, not the other's.
    assert!(cli(&server, &["datasets", "ls"]).contains("people"));
    let elsewhere = cli(&other, &["datasets", "ls"]);
    assert!(!elsewhere.contains("people"), "{elsewhere}");
    let parts = support::files_under(&server.data_dir.join("buckets"));
    assert!(
        parts
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".parquet")),
        "no part in this server's bucket: {parts:?}"
    );
    let leaked = support::files_under(&other.data_dir.join("buckets"));
    assert!(
        !leaked
            .iter()
            .any(|p| p.to_string_lossy().contains("people")),
        "parts went to the other server: {leaked:?}"
    );

    // One WARN at start, naming both variables.
    let log = server.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("LAKEHOUSE_STORAGE_ADDR"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("LAKEHOUSE_CATALOG_ADDR"), "{log}");
}
