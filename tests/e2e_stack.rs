//! The docker compose deployment end to end, without Docker: the four roles
//! as separate `lakehouse serve <role>` processes, each with the environment
//! docker-compose.yml gives it (read from the file, the compose host names
//! mapped to loopback ports), deploy/buckets.toml and
//! deploy/secrets.example.toml as their buckets and secrets files, a real
//! PostgreSQL for the catalog and for a seeded source table with an
//! embedding column (as deploy/postgres-init), and moto_server standing in
//! for MinIO. Tokens are on, as in compose; unlike compose the servers
//! listen on 127.0.0.1 only, because a test has no business being reachable
//! from the network.
//!
//! Driven through the CLI with the `LAKEHOUSE_*_ADDR` variables set as the
//! README's compose section sets them: the table is ingested (in two parts)
//! into a dataset; the dataset drifts (a part removed, then restored under
//! another name) and is resynced; an index is built and searched; the vector
//! process is killed and started again, and its index comes back from
//! storage without a rebuild; the S3 server is stopped, and a part the
//! rescue bucket holds is still served, with `x-lakehouse-rescue-used` on
//! the gRPC response (the one thing the CLI does not print).

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use lakehouse_proto::storage::v1 as storage_pb;
use lakehouse_shared::secrets::SecretString;
use serde_json::Value;
use support::{MotoServer, ServerProcess, free_port, psql, skip_or_fail};
use yaml_rust2::{Yaml, YamlLoader};

const TEST: &str = "compose_stack_ingests_resyncs_indexes_restarts_and_rescues";

/// The compose services running the lakehouse image, in start order.
const ROLES: [&str; 4] = ["storage", "catalog", "ingest", "vector"];

/// Rows of the seeded source table; the first ingest reads ids up to
/// `FIRST`, the second appends the rest.
const ROWS: u32 = 300;
const FIRST: u32 = 200;

const RESCUE_HEADER: &str = "x-lakehouse-rescue-used";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Row `id`'s embedding. The source table computes the same values in
/// float4 (`n::real / 100::real` is one correctly rounded division, as
/// here), so a query with it finds the row at distance 0.
fn embedding(id: u32) -> [f32; 4] {
    [
        ((id * 7) % 101) as f32 / 100.0,
        ((id * 13) % 97) as f32 / 100.0,
        ((id * 29) % 89) as f32 / 100.0,
        ((id * 3) % 83 + 1) as f32 / 100.0,
    ]
}

fn vector_json(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(f32::to_string).collect();
    format!("[{}]", parts.join(", "))
}

// ---------------------------------------------------------------- PostgreSQL

/// The parts of LAKEHOUSE_TEST_PG_URL the stack needs.
struct PgUrl {
    user: String,
    password: String,
    host_port: String,
}

impl PgUrl {
    fn parse(url: &str) -> Option<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))?;
        let (userinfo, rest) = rest.rsplit_once('@')?;
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let host_port = rest.split(['/', '?']).next()?;
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
            host_port: host_port.to_owned(),
        })
    }

    /// Database `db` with the password (for psql).
    fn with_password(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}/{db}",
            self.user, self.password, self.host_port
        )
    }

    /// Database `db` without a password: the servers take it from the
    /// secrets file, as in compose.
    fn without_password(&self, db: &str) -> String {
        format!("postgres://{}@{}/{db}", self.user, self.host_port)
    }
}

/// Drops the test's databases when the test ends (after the servers, which
/// are declared later and so dropped first).
struct Databases {
    admin_url: String,
    names: Vec<String>,
}

impl Drop for Databases {
    fn drop(&mut self) {
        for name in &self.names {
            psql(
                &self.admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

// ---------------------------------------------------------------- compose

/// docker-compose.yml's environment of `service`, `<<` merge keys applied
/// the way compose applies them (the service's own keys win).
fn compose_env(service: &str) -> BTreeMap<String, String> {
    let text = read(&repo_root().join("docker-compose.yml"));
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML");
    let mut env = BTreeMap::new();
    collect_env(&docs[0]["services"][service]["environment"], &mut env);
    assert!(
        env.contains_key("LAKEHOUSE_LISTEN"),
        "compose service {service} has no LAKEHOUSE_LISTEN: {env:?}"
    );
    env
}

fn collect_env(node: &Yaml, env: &mut BTreeMap<String, String>) {
    let Yaml::Hash(hash) = node else {
        panic!("a compose environment is not a mapping: {node:?}");
    };
    for (key, value) in hash {
        let key = key.as_str().expect("environment names are strings");
        if key == "<<" {
            let mut merged = BTreeMap::new();
            collect_env(value, &mut merged);
            for (k, v) in merged {
                env.entry(k).or_insert(v);
            }
            continue;
        }
        let value = match value {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(n) => n.to_string(),
            Yaml::Boolean(b) => b.to_string(),
            Yaml::Null => String::new(),
            other => panic!("{key}: unexpected compose value {other:?}"),
        };
        env.insert(key.to_owned(), value);
    }
}

/// What compose's names stand for in this test.
struct Stack {
    ports: BTreeMap<&'static str, u16>,
    secrets: PathBuf,
    buckets: PathBuf,
    catalog_url: String,
}

impl Stack {
    fn addr(&self, role: &str) -> String {
        format!("127.0.0.1:{}", self.ports[role])
    }

    /// `role`'s compose environment with every compose name replaced by
    /// its stand-in here; a value naming a container or a mounted path the
    /// test does not know fails the test, so a compose change shows here.
    fn role_env(&self, role: &str) -> Vec<(String, String)> {
        compose_env(role)
            .into_iter()
            .map(|(name, value)| {
                let mapped = match value.as_str() {
                    "http://storage:50051" => format!("http://{}", self.addr("storage")),
                    "http://catalog:50052" => format!("http://{}", self.addr("catalog")),
                    "/etc/lakehouse/secrets/secrets.toml" => path_str(&self.secrets).to_owned(),
                    "/etc/lakehouse/buckets.toml" => path_str(&self.buckets).to_owned(),
                    "postgres://lakehouse@postgres:5432/catalog" => self.catalog_url.clone(),
                    "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" => String::new(),
                    listen if name == "LAKEHOUSE_LISTEN" => {
                        assert!(listen.starts_with("0.0.0.0:"), "{role}: {listen}");
                        self.addr(role)
                    }
                    other => other.to_owned(),
                };
                for compose_only in ["storage:", "catalog:", "@postgres", "minio", "/etc/", "${"] {
                    assert!(
                        !mapped.contains(compose_only),
                        "{role}: {name}={value} has no stand-in in this test"
                    );
                }
                (name, mapped)
            })
            .collect()
    }
}

// ---------------------------------------------------------------- the CLI

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

    /// The one JSON document of stdout.
    fn json(self, what: &str) -> Value {
        let mut lines = self.json_lines(what);
        assert_eq!(lines.len(), 1, "{what}: one document expected: {lines:?}");
        lines.remove(0)
    }
}

/// The client side as the README's compose section sets it up: the owner
/// token and one address variable per service.
struct Cli {
    env: Vec<(&'static str, String)>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(support::BINARY)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .expect("run the CLI");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `search --output json` for row `id`'s own vector: the hits' ids,
    /// after checking the first is that row at distance 0 with its text.
    fn search_row(&self, id: u32) -> Vec<String> {
        let vector = vector_json(&embedding(id));
        let hits = self
            .run(&[
                "search",
                "--index",
                "candidates-idx",
                "--k",
                "5",
                // The whole graph (300 rows): the check is that the row is
                // indexed beside its own id and text, not HNSW's recall,
                // which on 300 clustered 4-d points built by two racing
                // threads can miss a row at the default ef (seen once in CI).
                "--ef-search",
                "300",
                "--vector",
                &vector,
                "--output",
                "json",
            ])
            .json_lines("search");
        assert_eq!(hits.len(), 5, "{hits:?}");
        assert_eq!(hits[0]["id"], id.to_string(), "{hits:?}");
        let distance = hits[0]["distance"].as_f64().expect("distance");
        assert!(distance.abs() < 1e-6, "{hits:?}");
        assert_eq!(hits[0]["text"], format!("candidate {id}"), "{hits:?}");
        hits.iter()
            .map(|h| h["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

/// The files of `datasets show --files` as (key, row_count).
fn files_of(shown: &Value) -> Vec<(String, u64)> {
    shown["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["key"].as_str().expect("key").to_owned(),
                f["row_count"].as_u64().expect("row_count"),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- the test

#[test]
fn compose_stack_ingests_resyncs_indexes_restarts_and_rescues() {
    let Ok(admin_url) = std::env::var("LAKEHOUSE_TEST_PG_URL") else {
        skip_or_fail(TEST, "LAKEHOUSE_TEST_PG_URL is not set");
        return;
    };
    let Some(pg) = PgUrl::parse(&admin_url) else {
        skip_or_fail(
            TEST,
            "LAKEHOUSE_TEST_PG_URL is not postgres://user:password@host:port/db",
        );
        return;
    };
    // The catalog's database and the source database, as compose's
    // `catalog` and `staffing`.
    let pid = std::process::id();
    let catalog_db = format!("lh_stack_{pid}_catalog");
    let staffing_db = format!("lh_stack_{pid}_staffing");
    let databases = Databases {
        admin_url: admin_url.clone(),
        names: vec![catalog_db.clone(), staffing_db.clone()],
    };
    for name in &databases.names {
        // One statement per call: CREATE DATABASE refuses a transaction.
        psql(&admin_url, &format!("DROP DATABASE IF EXISTS {name}"));
        if !psql(&admin_url, &format!("CREATE DATABASE {name}")) {
            skip_or_fail(
                TEST,
                "PostgreSQL (via psql and LAKEHOUSE_TEST_PG_URL) is not reachable",
            );
            return;
        }
    }
    // deploy/postgres-init's table, with more rows: a float4[] embedding.
    let seeded = psql(
        &pg.with_password(&staffing_db),
        &format!(
            "CREATE TABLE candidates (
                id bigint PRIMARY KEY,
                summary text NOT NULL,
                embedding float4[] NOT NULL CHECK (cardinality(embedding) = 4));
             INSERT INTO candidates SELECT g, 'candidate ' || g, ARRAY[
                ((g * 7) % 101)::real / 100::real, ((g * 13) % 97)::real / 100::real,
                ((g * 29) % 89)::real / 100::real, ((g * 3) % 83 + 1)::real / 100::real]
             FROM generate_series(1, {ROWS}) g"
        ),
    );
    assert!(seeded, "seed the source table");
    let Some(mut moto) = MotoServer::start(TEST) else {
        return;
    };

    let dir = tempfile::tempdir().expect("tempdir");

    // deploy/buckets.toml with MinIO's address replaced by moto's and the
    // rescue volume by a folder.
    let buckets_toml = read(&repo_root().join("deploy/buckets.toml"));
    for expected in [
        "http://minio:9000",
        "/var/lib/lakehouse/rescue",
        "bucket = \"lakehouse\"",
        "rescue_bucket = \"rescue\"",
    ] {
        assert!(
            buckets_toml.contains(expected),
            "deploy/buckets.toml changed: no {expected}"
        );
    }
    moto.create_bucket("lakehouse");
    let rescue_dir = dir.path().join("rescue");
    let buckets = dir.path().join("buckets.toml");
    std::fs::write(
        &buckets,
        buckets_toml
            .replace("http://minio:9000", &moto.endpoint)
            .replace("/var/lib/lakehouse/rescue", path_str(&rescue_dir)),
    )
    .expect("write buckets.toml");

    // deploy/secrets.example.toml with every change-me value replaced, as
    // the README asks; 0600, or the servers refuse it.
    let example = read(&repo_root().join("deploy/secrets.example.toml"));
    let secrets_toml = example
        .replace("change-me-minio-password", "moto-accepts-any-key")
        .replace("change-me-postgres-password", &pg.password)
        .replace("change-me-", &format!("e2e-stack-{pid}-"));
    let owner = secrets_toml
        .lines()
        .find_map(|line| line.trim().strip_prefix("owner = \"admin:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("deploy/secrets.example.toml has token.owner with the admin scope")
        .to_owned();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, &secrets_toml).expect("write secrets.toml");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 secrets.toml");

    let stack = Stack {
        ports: ROLES.iter().map(|role| (*role, free_port())).collect(),
        secrets,
        buckets,
        catalog_url: pg.without_password(&catalog_db),
    };
    let start = |role: &str| {
        let env = stack.role_env(role);
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let mut server =
            ServerProcess::start_at(role, &dir.path().join(role), stack.ports[role], &env);
        server.wait_healthy();
        server
    };
    // In compose's depends_on order.
    let _storage = start("storage");
    let _catalog = start("catalog");
    let _ingest = start("ingest");
    let mut vector = start("vector");

    let cli = Cli {
        env: vec![
            ("LAKEHOUSE_TOKEN", owner.clone()),
            ("LAKEHOUSE_STORAGE_ADDR", stack.addr("storage")),
            ("LAKEHOUSE_CATALOG_ADDR", stack.addr("catalog")),
            ("LAKEHOUSE_INGEST_ADDR", stack.addr("ingest")),
            ("LAKEHOUSE_VECTOR_ADDR", stack.addr("vector")),
        ],
    };

    // Tokens are on: a call without one is refused (exit 6).
    let output = Command::new(support::BINARY)
        .args(["datasets", "ls", "--addr", &stack.addr("catalog")])
        .env_remove("LAKEHOUSE_TOKEN")
        .output()
        .expect("run the CLI");
    assert_eq!(
        output.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The buckets of deploy/buckets.toml: `lake` on S3, the default, with
    // the local rescue bucket.
    let listed = cli
        .run(&["buckets", "--output", "json"])
        .json_lines("buckets");
    let lake = listed
        .iter()
        .find(|b| b["name"] == "lake")
        .unwrap_or_else(|| panic!("no lake bucket: {listed:?}"));
    assert_eq!(lake["default"], true, "{lake}");
    assert_eq!(lake["rescue_bucket"], "rescue", "{lake}");
    cli.run(&["buckets", "health"]).ok("buckets health");

    // Ingest: the table in two parts, the password from the ingest
    // server's secrets file (postgres.password), as the README runs it.
    let dsn = pg.without_password(&staffing_db);
    let ingest = |filter: String, mode: &str| {
        cli.run(&[
            "ingest",
            "postgres",
            "--dataset",
            "candidates",
            "--table",
            "candidates",
            "--filter",
            &filter,
            "--mode",
            mode,
            "--dsn",
            &dsn,
            "--password-secret",
            "postgres.password",
            "--output",
            "json",
        ])
        .json("ingest postgres")
    };
    let first = ingest(format!("id <= {FIRST}"), "create");
    assert_eq!(first["state"], "INGEST_STATE_SUCCEEDED", "{first}");
    assert_eq!(first["rows"], FIRST, "{first}");
    let second = ingest(format!("id > {FIRST}"), "append");
    assert_eq!(second["state"], "INGEST_STATE_SUCCEEDED", "{second}");
    assert_eq!(second["rows"], ROWS - FIRST, "{second}");

    let show = || {
        cli.run(&[
            "datasets",
            "show",
            "candidates",
            "--files",
            "--output",
            "json",
        ])
        .json("datasets show")
    };
    let shown = show();
    assert_eq!(shown["row_count"], ROWS, "{shown}");
    assert_eq!(shown["bucket"], "lake", "{shown}");
    assert_eq!(shown["lineage"]["source_kind"], "SOURCE_KIND_POSTGRES");
    let columns: Vec<&str> = shown["schema"]
        .as_array()
        .expect("schema")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["id", "summary", "embedding"], "{shown}");
    let files = files_of(&shown);
    assert_eq!(files.len(), 2, "{shown}");
    let first_key = files
        .iter()
        .find(|(_, rows)| *rows == u64::from(FIRST))
        .map(|(key, _)| key.clone())
        .unwrap_or_else(|| panic!("no part of {FIRST} rows: {files:?}"));
    let appended_key = files
        .iter()
        .find(|(_, rows)| *rows == u64::from(ROWS - FIRST))
        .map(|(key, _)| key.clone())
        .unwrap_or_else(|| panic!("no part of {} rows: {files:?}", ROWS - FIRST));

    // Drift: the appended part vanishes from storage. A resync refuses to
    // drop its rows (exit 4, ROW_LOSS) and changes nothing; with
    // --allow-row-loss it drops them.
    let appended = dir.path().join("appended.parquet");
    cli.run(&["objects", "get", &appended_key, path_str(&appended)])
        .ok("objects get");
    cli.run(&["objects", "rm", &appended_key]).ok("objects rm");
    let refused = cli.run(&["datasets", "resync", "candidates", "--output", "json"]);
    assert_eq!(
        refused.code,
        Some(4),
        "{} {}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused.stderr.contains("ROW_LOSS"),
        "{} {}",
        refused.stdout,
        refused.stderr
    );
    assert_eq!(
        show()["row_count"],
        ROWS,
        "a refused resync changed the dataset"
    );
    let report = cli
        .run(&[
            "datasets",
            "resync",
            "candidates",
            "--allow-row-loss",
            "--output",
            "json",
        ])
        .json("datasets resync --allow-row-loss");
    assert_eq!(report["drifted"], true, "{report}");
    assert_eq!(report["applied"], true, "{report}");
    assert_eq!(report["rows_lost"], ROWS - FIRST, "{report}");
    assert_eq!(report["files_lost"], 1, "{report}");
    let shown = show();
    assert_eq!(shown["row_count"], FIRST, "{shown}");
    assert_eq!(files_of(&shown).len(), 1, "{shown}");

    // Drift the other way: the part comes back under another name (not an
    // ingest folder), and a resync adopts it from its footer.
    let restored_key = "datasets/candidates/manual/restored.parquet";
    cli.run(&["objects", "put", path_str(&appended), restored_key])
        .ok("objects put");
    let report = cli
        .run(&["datasets", "resync", "candidates", "--output", "json"])
        .json("datasets resync");
    assert_eq!(report["drifted"], true, "{report}");
    assert_eq!(report["applied"], true, "{report}");
    assert_eq!(report["rows_lost"], 0, "{report}");
    assert!(
        report["file_changes"]
            .as_array()
            .expect("file_changes")
            .iter()
            .any(|c| c["key"] == restored_key),
        "{report}"
    );
    let shown = show();
    assert_eq!(shown["row_count"], ROWS, "{shown}");
    let mut keys: Vec<String> = files_of(&shown).into_iter().map(|(k, _)| k).collect();
    keys.sort();
    let mut expected = vec![first_key.clone(), restored_key.to_owned()];
    expected.sort();
    assert_eq!(keys, expected, "{shown}");
    // The manifest is in the PostgreSQL catalog database, not a SQLite file.
    assert!(
        psql(
            &pg.with_password(&catalog_db),
            "DO $$ BEGIN IF (SELECT count(*) FROM files f JOIN datasets d ON d.id = f.dataset_id \
             WHERE d.name = 'candidates') <> 2 THEN RAISE EXCEPTION 'not in PostgreSQL'; \
             END IF; END $$"
        ),
        "the catalog database does not hold the dataset's two files"
    );

    // Index over both parts, then search: a row's own vector finds it
    // first at distance 0, from the ingested part and the restored one.
    let built = cli
        .run(&[
            "index",
            "create",
            "candidates-idx",
            "--dataset",
            "candidates",
            "--text-column",
            "summary",
            "--metric",
            "l2",
            "--output",
            "json",
        ])
        .json("index create");
    assert_eq!(built["vector_count"], ROWS, "{built}");
    assert_eq!(built["dimensions"], 4, "{built}");
    assert_eq!(built["active_generation"], 1, "{built}");
    let before = cli.search_row(42);
    cli.search_row(FIRST + 50);
    let generations = || {
        cli.run(&["index", "generations", "candidates-idx", "--output", "json"])
            .json_lines("index generations")
    };
    let generations_before = generations();
    assert_eq!(generations_before.len(), 1, "{generations_before:?}");
    assert!(
        vector.log_text().contains("generation ready"),
        "the build logs its generation (the restart check below relies on it):\n{}",
        vector.log_text()
    );

    // Kill the vector process (SIGKILL: no shutdown) and start it again on
    // the same address and data: healthy once the index is loaded, then
    // the same answers from the same generation, loaded, not rebuilt.
    vector.kill();
    drop(vector);
    let vector = start("vector");
    assert_eq!(cli.search_row(42), before);
    let index = cli
        .run(&["index", "show", "candidates-idx", "--output", "json"])
        .json("index show");
    assert_eq!(index["active_generation"], 1, "{index}");
    assert_eq!(index["vector_count"], ROWS, "{index}");
    assert_eq!(index["stale"], false, "{index}");
    assert_eq!(
        generations(),
        generations_before,
        "same generation, same build"
    );
    let log = vector.log_text();
    assert!(log.contains("vector indexes loaded"), "{log}");
    assert!(
        !log.contains("generation ready"),
        "a restart rebuilt:\n{log}"
    );

    // The S3 server goes away. A part copied to the rescue bucket beforehand
    // (same key) is still served, through the CLI and over gRPC, where the
    // response names the rescue bucket; the primary failure is journaled.
    let part = dir.path().join("part.parquet");
    cli.run(&["objects", "get", &first_key, path_str(&part)])
        .ok("objects get");
    let part_bytes = std::fs::read(&part).expect("read the part");
    cli.run(&[
        "objects",
        "--bucket",
        "rescue",
        "put",
        path_str(&part),
        &first_key,
    ])
    .ok("objects put --bucket rescue");
    moto.stop();

    let unhealthy = cli.run(&["buckets", "health"]);
    assert_eq!(unhealthy.code, Some(1), "{}", unhealthy.stdout);
    assert!(
        unhealthy
            .stdout
            .lines()
            .any(|l| l.starts_with("lake\tUNREACHABLE")),
        "{}",
        unhealthy.stdout
    );
    let rescued = dir.path().join("rescued.parquet");
    cli.run(&["objects", "get", &first_key, path_str(&rescued)])
        .ok("objects get with the primary down");
    assert!(
        std::fs::read(&rescued).expect("read the rescued part") == part_bytes,
        "the rescue bucket served other bytes"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (rescue_used, header_bucket, data) = runtime.block_on(async {
        let token = SecretString::new(owner.as_str());
        let channel = lakehouse_client::connect_lazy_with(
            &format!("http://{}", stack.addr("storage")),
            Some(&token),
        )
        .expect("address");
        let response = lakehouse_client::storage(channel)
            .get_object(storage_pb::GetObjectRequest {
                bucket: "lake".to_owned(),
                key: first_key.clone(),
                range: None,
            })
            .await
            .expect("GetObject served with the primary down");
        let rescue_used = response
            .metadata()
            .get(RESCUE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut stream = response.into_inner();
        let mut header_bucket = None;
        let mut data = Vec::new();
        while let Some(message) = stream.message().await.expect("GetObject stream") {
            match message.part {
                Some(storage_pb::get_object_response::Part::Header(h)) => {
                    header_bucket = Some(h.rescue_bucket)
                }
                Some(storage_pb::get_object_response::Part::Chunk(c)) => data.extend_from_slice(&c),
                _ => {}
            }
        }
        (rescue_used, header_bucket, data)
    });
    assert_eq!(rescue_used.as_deref(), Some("rescue"));
    assert_eq!(header_bucket.as_deref(), Some("rescue"));
    assert!(data == part_bytes, "GetObject served other bytes");

    let journal = cli
        .run(&["errors", "ls", "--bucket", "lake", "--output", "json"])
        .json_lines("errors ls");
    assert!(
        journal
            .iter()
            .any(|e| e["key"] == first_key.as_str() && e["rescue_bucket"] == "rescue"),
        "the primary failure is not journaled: {journal:?}"
    );
}
