//! No password in any log line, error, lineage record, progress message or
//! span: every tracing event of the process (all targets, TRACE, with span
//! fields) is captured while a wrong-password ingest and a successful one
//! (password from a named secret) run, and searched, together with every
//! message the client and the catalog received, and the error journal.

#![allow(unused_crate_dependencies)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Stack, pg_exec, pg_url, run_ingest, small_config, table_request, unique};
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::secrets::StaticSecrets;
use tonic::Code;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_never_appear_in_logs_errors_lineage_or_progress() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(capture.clone())
        .init();

    let Some(url) = pg_url("passwords_never_appear_in_logs_errors_lineage_or_progress").await
    else {
        return;
    };
    let role = unique("ingest_role");
    let password = format!("Sup3r-S3cret-{}", uuid::Uuid::new_v4().simple());
    let wrong = format!("Wr0ng-Pass-{}", uuid::Uuid::new_v4().simple());
    let table = unique("secret_src");
    pg_exec(
        &url,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}';
             CREATE TABLE {table} AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, 2000) g;
             GRANT SELECT ON {table} TO {role};"
        ),
    )
    .await;
    // The test's own setup statement holds the password; what is searched
    // starts after it.
    capture.0.lock().expect("lock").clear();
    let parsed = url::Url::parse(&url).expect("test url");
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5432);
    let database = parsed.path().trim_start_matches('/').to_owned();

    let secrets = StaticSecrets::default().with("pg.ingest", &password);
    let stack = Stack::start(small_config(), Arc::new(secrets)).await;
    let mut client = stack.client();
    let mut seen = Vec::<String>::new();

    // 1. A wrong password, in the URL.
    let dsn = format!("postgres://{role}:{wrong}@{host}:{port}/{database}?sslmode=disable");
    let (progress, result) =
        run_ingest(&mut client, table_request(&unique("wrong"), &dsn, &table)).await;
    seen.extend(progress.iter().map(|p| format!("{p:?}")));
    let status = result.expect_err("wrong password");
    // The source's credentials, not the caller's: FAILED_PRECONDITION.
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        lakehouse_shared::status::error_reason(&status).as_deref(),
        Some("SOURCE_AUTH_FAILED")
    );
    assert!(
        status.message().contains(&role),
        "names the user: {}",
        status.message()
    );
    assert!(
        status.message().contains("password"),
        "says what to check: {}",
        status.message()
    );
    seen.push(format!("{status:?}"));

    // 2. The right password, from a named secret, key=value DSN.
    let dsn = format!("host={host} port={port} dbname={database} user={role} sslmode=disable");
    let dataset = unique("secret");
    let request = pb::IngestPostgresRequest {
        password_secret: "pg.ingest".to_owned(),
        ..table_request(&dataset, &dsn, &table)
    };
    let (progress, result) = run_ingest(&mut client, request).await;
    seen.extend(progress.iter().map(|p| format!("{p:?}")));
    let ingest = result.expect("ingest with the secret password");
    assert_eq!(ingest.rows, 2000);
    assert!(ingest.source.contains(":***@"), "{}", ingest.source);
    seen.push(format!("{ingest:?}"));

    // 3. The same password inline in a key=value DSN (quoted), wrong database.
    let dsn = format!(
        "host={host} port={port} dbname='nope_{database}' user={role} password='{password}'"
    );
    let (_, result) = run_ingest(&mut client, table_request(&unique("nodb"), &dsn, &table)).await;
    seen.push(format!("{:?}", result.expect_err("no such database")));

    let listed = client
        .list_ingests(pb::ListIngestsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.ingests.len(), 3);
    seen.push(format!("{listed:?}"));
    seen.push(format!("{:?}", stack.catalog.commits.lock().expect("lock")));
    let journal = stack
        .storage_client()
        .list_errors(lakehouse_proto::storage::v1::ListErrorsRequest::default())
        .await
        .expect("journal")
        .into_inner();
    assert!(!journal.errors.is_empty(), "failures are journaled");
    seen.push(format!("{journal:?}"));
    stack.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(logs.contains("ingest committed"), "the capture works");
    for text in seen.iter().chain(std::iter::once(&logs)) {
        assert!(!text.contains(&password), "the password leaked: {text}");
        assert!(!text.contains(&wrong), "the wrong password leaked: {text}");
    }
    pg_exec(&url, &format!("DROP TABLE {table}; DROP ROLE {role};")).await;
}
