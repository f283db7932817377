#![allow(unused_crate_dependencies)]

//! One ingest is one trace across services: with `serve all` exporting to a
//! collector, the IngestPostgres call, the storage uploads it makes and the
//! catalog commit it makes all carry the same W3C trace id.

mod support;

use futures::StreamExt as _;
use lakehouse_proto::ingest::v1 as ingest;
use support::collector::Collector;
use support::{ServerProcess, psql, skip_or_fail};

#[test]
fn an_ingest_is_one_trace_across_ingest_storage_and_catalog() {
    let test = "an_ingest_is_one_trace_across_ingest_storage_and_catalog";
    let Ok(url) = std::env::var("LAKEHOUSE_TEST_PG_URL") else {
        skip_or_fail(test, "LAKEHOUSE_TEST_PG_URL is not set");
        return;
    };
    let table = format!("trace_src_{}", std::process::id());
    if !psql(
        &url,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} AS SELECT g::int8 AS id, 'row ' || g AS label FROM generate_series(1, 5000) g"
        ),
    ) {
        skip_or_fail(
            test,
            "PostgreSQL (via psql and LAKEHOUSE_TEST_PG_URL) is not reachable",
        );
        return;
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (collector, endpoint) = Collector::start(&runtime);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(
        "all",
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)],
    );
    server.wait_healthy();

    let uri = server.uri();
    let finished = runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let mut client = lakehouse_client::ingest(channel);
        let mut stream = client
            .ingest_postgres(ingest::IngestPostgresRequest {
                dataset: "traced".to_owned(),
                dsn: url.clone(),
                source: Some(ingest::ingest_postgres_request::Source::Table(
                    ingest::TableSource {
                        table: table.clone(),
                        ..Default::default()
                    },
                )),
                mode: ingest::IngestMode::Create as i32,
                ..Default::default()
            })
            .await
            .expect("IngestPostgres")
            .into_inner();
        let mut last = None;
        while let Some(message) = stream.next().await {
            if let Some(ingest::ingest_postgres_response::Event::Finished(done)) =
                message.expect("event").event
            {
                last = done.ingest;
            }
        }
        last.expect("a finished ingest")
    });
    assert_eq!(
        finished.state,
        ingest::IngestState::Succeeded as i32,
        "{finished:?}"
    );
    assert_eq!(finished.rows, 5000);
    let status = server.stop().expect("was running");
    assert!(status.success(), "{}", server.log_text());
    psql(&url, &format!("DROP TABLE IF EXISTS {table}"));

    let spans = collector.spans();
    let ingest_span = spans
        .iter()
        .find(|s| s.rpc.ends_with("/IngestPostgres"))
        .unwrap_or_else(|| panic!("no IngestPostgres span exported: {spans:?}"));
    let same_trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == ingest_span.trace_id)
        .collect();
    for rpc in [
        "/lakehouse.storage.v1.StorageService/PutObject",
        "/lakehouse.catalog.v1.CatalogService/CommitFiles",
    ] {
        assert!(
            same_trace.iter().any(|s| s.rpc == rpc),
            "{rpc} is not in the ingest's trace {}; spans in it: {:?}",
            ingest_span.trace_id,
            same_trace
                .iter()
                .map(|s| (&s.name, &s.rpc))
                .collect::<Vec<_>>()
        );
    }
}
