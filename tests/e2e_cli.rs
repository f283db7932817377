//! The CLI as people and agents use it, through the real binary against
//! `lakehouse serve all` as a real process: a CSV is ingested, the dataset is
//! listed and shown, its parts are found in storage, an object makes a round
//! trip, the dataset is deleted, and failures exit with the documented codes
//! and a message that says what is wrong. With PostgreSQL reachable, a table
//! is ingested too.

use crate::support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{ServerProcess, psql, skip_or_fail};

/// Exit code, stdout and stderr of one CLI run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    fn ok(self, what: &str) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed: stdout {} stderr {}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// The JSON documents of stdout, one a line.
    fn json_lines(self, what: &str) -> Vec<Value> {
        self.ok(what)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON document a line"))
            .collect()
    }
}

fn cli(server: &ServerProcess, args: &[&str]) -> Run {
    let output = Command::new(support::BINARY)
        .args(args)
        .args(["--addr", &server.addr])
        .env_remove("LAKEHOUSE_TOKEN")
        .output()
        .expect("run the CLI");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn cli_ingests_a_csv_shows_lists_and_deletes_the_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("x.csv");
    let mut text = String::from("id,name,score\n");
    for i in 0..250 {
        text.push_str(&format!("{i},person {i},{}.5\n", i % 7));
    }
    std::fs::write(&csv, text).expect("write the csv");

    let mut server = ServerProcess::start("all", &dir.path().join("server"), &[]);
    server.wait_healthy();

    // Ingest: the format comes from the extension; the result is on stdout
    // (JSON on request), progress on stderr.
    let ingested = cli(
        &server,
        &[
            "ingest",
            "file",
            path_str(&csv),
            "--dataset",
            "people",
            "--output",
            "json",
        ],
    );
    let stderr = ingested.stderr.clone();
    let ingest = ingested.json_lines("ingest file");
    assert_eq!(ingest.len(), 1, "one finished ingest");
    assert_eq!(ingest[0]["rows"], 250);
    assert_eq!(ingest[0]["state"], "INGEST_STATE_SUCCEEDED");
    assert!(stderr.contains("uploaded"), "progress on stderr: {stderr}");

    // datasets ls: the dataset with its row count.
    let datasets = cli(&server, &["datasets", "ls", "--output", "json"]).json_lines("datasets ls");
    let people = datasets
        .iter()
        .find(|d| d["name"] == "people")
        .unwrap_or_else(|| panic!("people missing from {datasets:?}"));
    assert_eq!(people["row_count"], 250);
    assert!(people["file_count"].as_u64().expect("file_count") >= 1);
    // People get a table: tab-separated in a pipe, name first.
    let table = cli(&server, &["datasets", "ls"]).ok("datasets ls (table)");
    assert!(
        table.lines().any(|l| l.starts_with("people\t250\t")),
        "{table}"
    );

    // datasets lineage: every event, newest first (one commit so far).
    let events = cli(
        &server,
        &["datasets", "lineage", "people", "--output", "json"],
    )
    .json_lines("datasets lineage");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "LINEAGE_EVENT_KIND_COMMIT");
    assert_eq!(events[0]["dataset_version"], 1);
    assert_eq!(events[0]["lineage"]["source"], "x.csv");
    let lines = cli(&server, &["datasets", "lineage", "people"]).ok("datasets lineage (table)");
    assert!(lines.starts_with("1\tcommit\t"), "{lines}");

    // datasets show: schema, files, rows, version, lineage.
    let shown = cli(&server, &["datasets", "show", "people"]).ok("datasets show");
    for expected in ["rows:        250", "version:", "x.csv", "schema:", "score"] {
        assert!(shown.contains(expected), "{expected:?} missing:\n{shown}");
    }
    let detail = cli(
        &server,
        &["datasets", "show", "people", "--files", "--output", "json"],
    )
    .json_lines("datasets show --files");
    let detail = &detail[0];
    let columns: Vec<&str> = detail["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["id", "name", "score"]);
    assert_eq!(detail["lineage"]["source_kind"], "SOURCE_KIND_FILE");
    let keys: Vec<String> = detail["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["key"].as_str().map(str::to_owned))
        .collect();
    assert!(!keys.is_empty(), "{detail}");

    // objects ls: the dataset's parts are in storage with their sizes.
    let listed = cli(&server, &["objects", "ls", "--output", "json"]).json_lines("objects ls");
    for key in &keys {
        assert!(
            listed.iter().any(|o| o["key"] == key.as_str()),
            "{key} missing from {listed:?}"
        );
    }

    // objects put / get: a file makes the round trip.
    let source = dir.path().join("notes.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&source, &data).expect("write the source");
    cli(
        &server,
        &["objects", "put", path_str(&source), "notes/a.bin"],
    )
    .ok("objects put");
    let copy = dir.path().join("copy.bin");
    cli(&server, &["objects", "get", "notes/a.bin", path_str(&copy)]).ok("objects get");
    assert!(
        std::fs::read(&copy).expect("read the copy") == data,
        "the object came back different"
    );
    let listed = cli(&server, &["objects", "ls", "notes"]).ok("objects ls notes");
    assert!(
        listed.contains(&format!("{}\t", data.len())) && listed.contains("notes/a.bin"),
        "{listed}"
    );
    cli(&server, &["objects", "rm", "notes/a.bin"]).ok("objects rm");
    let gone = cli(&server, &["objects", "get", "notes/a.bin", "-"]);
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);

    // The old spelling still works.
    let buckets = cli(&server, &["storage", "buckets"]).ok("storage buckets");
    assert!(buckets.contains("default"), "{buckets}");
    let buckets = cli(&server, &["buckets", "--output", "json"]).json_lines("buckets");
    assert!(buckets.iter().any(|b| b["default"] == true), "{buckets:?}");

    // errors ls runs (the journal may be empty).
    cli(&server, &["errors", "ls"]).ok("errors ls");
    cli(
        &server,
        &["errors", "ls", "--since", "1h", "--output", "json"],
    )
    .ok("errors ls json");

    // A second create into the same dataset is a conflict (exit 4); an
    // append into one that does not exist is not found (exit 3).
    let again = cli(
        &server,
        &["ingest", "file", path_str(&csv), "--dataset", "people"],
    );
    assert_eq!(again.code, Some(4), "{}", again.stderr);
    let unknown = cli(
        &server,
        &[
            "ingest",
            "file",
            path_str(&csv),
            "--dataset",
            "nobody",
            "--mode",
            "append",
        ],
    );
    assert_eq!(unknown.code, Some(3), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("nobody"), "{}", unknown.stderr);

    // Bad files: no format from the extension (usage, 2), missing (3), and
    // a file that is not what its name says (the server refuses it).
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello").expect("write notes");
    let bad = cli(
        &server,
        &["ingest", "file", path_str(&notes), "--dataset", "notes"],
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--format"), "{}", bad.stderr);
    let missing = dir.path().join("missing.csv");
    let bad = cli(
        &server,
        &["ingest", "file", path_str(&missing), "--dataset", "missing"],
    );
    assert_eq!(bad.code, Some(3), "{}", bad.stderr);
    assert!(bad.stderr.contains("missing.csv"), "{}", bad.stderr);
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "id,name\n1,a\n").expect("write fake parquet");
    let bad = cli(
        &server,
        &["ingest", "file", path_str(&fake), "--dataset", "fake"],
    );
    assert!(
        !matches!(bad.code, Some(0)),
        "a CSV named .parquet was accepted"
    );
    // Progress lines come first on stderr; the error is its own line.
    assert!(
        bad.stderr.lines().any(|l| l.starts_with("error: ")),
        "{}",
        bad.stderr
    );
    let not_there = cli(&server, &["datasets", "show", "fake"]);
    assert_eq!(not_there.code, Some(3), "a failed ingest left a dataset");

    // datasets rm, then show is not found (exit 3).
    cli(&server, &["datasets", "rm", "people", "--delete-files"]).ok("datasets rm");
    let gone = cli(&server, &["datasets", "show", "people"]);
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);
    assert!(gone.stderr.contains("people"), "{}", gone.stderr);
    let listed = cli(&server, &["objects", "ls", "--output", "json"]).json_lines("objects ls");
    for key in &keys {
        assert!(
            !listed.iter().any(|o| o["key"] == key.as_str()),
            "{key} still in storage after rm --delete-files"
        );
    }

    // Help says what each command does.
    let help = Command::new(support::BINARY)
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for command in [
        "buckets", "objects", "errors", "datasets", "ingest", "index",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(command) && l.len() > command.len() + 8),
            "{command} has no help line:\n{help}"
        );
    }
}

#[test]
fn cli_ingests_a_postgres_table() {
    let test = "cli_ingests_a_postgres_table";
    let Ok(url) = std::env::var("LAKEHOUSE_TEST_PG_URL") else {
        skip_or_fail(test, "LAKEHOUSE_TEST_PG_URL is not set");
        return;
    };
    let table = format!("cli_src_{}", std::process::id());
    if !psql(
        &url,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS SELECT g::int8 AS id, 'row ' || g AS label FROM generate_series(1, 1234) g"
        ),
    ) {
        skip_or_fail(
            test,
            "PostgreSQL (via psql and LAKEHOUSE_TEST_PG_URL) is not reachable",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();

    // The DSN comes from the environment, as the help recommends.
    let output = Command::new(support::BINARY)
        .args([
            "ingest",
            "postgres",
            "--table",
            &table,
            "--filter",
            "id <= 1000",
            "--dataset",
            "pg-rows",
            "--output",
            "json",
            "--addr",
            &server.addr,
        ])
        .env("LAKEHOUSE_INGEST_SOURCE_DSN", &url)
        .output()
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let ingest: Value = serde_json::from_str(stdout.trim()).expect("the ingest as JSON");
    assert_eq!(ingest["rows"], 1000);
    assert!(!stderr.contains("postgres:postgres@"), "password on stderr");

    let shown = cli(
        &server,
        &["datasets", "show", "pg-rows", "--output", "json"],
    )
    .json_lines("datasets show");
    assert_eq!(shown[0]["row_count"], 1000);
    assert_eq!(shown[0]["lineage"]["source_kind"], "SOURCE_KIND_POSTGRES");

    // Neither or both of --table and --query is a usage error (exit 2).
    let neither = cli(&server, &["ingest", "postgres", "--dataset", "x"]);
    assert_eq!(neither.code, Some(2), "{}", neither.stderr);
    psql(&url, &format!("DROP TABLE IF EXISTS {table}"));
}

/// A CSV without a header, ingested without `--no-header`, used to lose its
/// first row to the column names silently; it is refused, naming the flag,
/// and with the flag all rows arrive.
#[test]
fn a_csv_without_a_header_is_refused_not_shortened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("nohdr.csv");
    std::fs::write(
        &csv,
        "1,Ada Lovelace,engineer,London\n2,Grace Hopper,admiral,New York\n3,Alan Turing,researcher,Manchester\n",
    )
    .expect("write the csv");
    let mut server = ServerProcess::start("all", &dir.path().join("server"), &[]);
    server.wait_healthy();

    let refused = cli(
        &server,
        &["ingest", "file", path_str(&csv), "--dataset", "nohdr"],
    );
    assert_ne!(refused.code, Some(0), "{}", refused.stdout);
    let error = refused
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {}", refused.stderr));
    assert!(error.contains("[HEADER_LOOKS_LIKE_DATA]"), "{error}");
    assert!(error.contains("--no-header"), "{error}");
    let none = cli(&server, &["datasets", "show", "nohdr"]);
    assert_eq!(none.code, Some(3), "nothing was ingested: {}", none.stdout);

    let ingested = cli(
        &server,
        &[
            "ingest",
            "file",
            path_str(&csv),
            "--dataset",
            "nohdr",
            "--no-header",
            "--output",
            "json",
        ],
    )
    .json_lines("ingest file --no-header");
    assert_eq!(ingested[0]["rows"], 3);

    // A file with a header still goes in whole.
    let people = dir.path().join("people.csv");
    std::fs::write(
        &people,
        "id,name,role,city\n1,Ada Lovelace,engineer,London\n2,Grace Hopper,admiral,New York\n3,Alan Turing,researcher,Manchester\n",
    )
    .expect("write the csv");
    let ingested = cli(
        &server,
        &[
            "ingest",
            "file",
            path_str(&people),
            "--dataset",
            "people",
            "--output",
            "json",
        ],
    )
    .json_lines("ingest file with a header");
    assert_eq!(ingested[0]["rows"], 3);
}

/// Verbs that printed nothing on stdout, or refused `--output`, answer with
/// one JSON document per line like the others; `datasets show` carries its
/// lineage history with or without `--files`.
#[test]
fn the_remaining_verbs_answer_json_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", &dir.path().join("server"), &[]);
    server.wait_healthy();

    let health = Command::new(support::BINARY)
        .args(["health", "--addr", &server.addr, "--output", "json"])
        .output()
        .expect("health");
    let health: Value =
        serde_json::from_slice(&health.stdout).expect("health answers one JSON document");
    assert_eq!(health["status"], "SERVING");

    let file = dir.path().join("note.txt");
    std::fs::write(&file, "hello").expect("write");
    let put = cli(
        &server,
        &[
            "objects",
            "put",
            path_str(&file),
            "notes/n.txt",
            "--output",
            "json",
        ],
    )
    .json_lines("objects put");
    assert_eq!(put[0]["key"], "notes/n.txt");
    assert_eq!(put[0]["size"], 5);

    // Without tokens nothing is audited: no lines, but --output is taken.
    let audit = cli(&server, &["audit", "--output", "json"]).json_lines("audit");
    assert!(audit.is_empty(), "{audit:?}");

    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, "id,name\n1,Ada\n2,Grace\n").expect("write the csv");
    cli(
        &server,
        &["ingest", "file", path_str(&csv), "--dataset", "people"],
    )
    .ok("ingest");
    for extra in [&[][..], &["--files"]] {
        let mut args = vec!["datasets", "show", "people", "--output", "json"];
        args.extend_from_slice(extra);
        let shown = cli(&server, &args).json_lines("datasets show");
        let history = shown[0]["lineage_history"].as_array().expect("history");
        assert_eq!(history.len(), 1, "{extra:?}: {}", shown[0]);
    }
}
