//! One ingest is one trace across services: with `serve all` exporting to a
//! collector, the IngestPostgres call, the storage uploads it makes and the
//! catalog commit it makes all carry the same W3C trace id.

use crate::support;

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

/// A Parquet file of `rows` rows: `id` and an `embedding` of 8 floats.
fn embeddings_parquet(rows: i32) -> Vec<u8> {
    use std::sync::Arc;

    use arrow::array::{FixedSizeListArray, Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let dim = 8;
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values = Float32Array::from_iter_values(
        (0..rows * dim).map(|i| ((i * 7919) % 101) as f32 / 101.0 + 0.01),
    );
    let embedding =
        FixedSizeListArray::try_new(item.clone(), dim, Arc::new(values), None).expect("embeddings");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("embedding", DataType::FixedSizeList(item, dim), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..i64::from(rows))),
            Arc::new(embedding),
        ],
    )
    .expect("batch");
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    out
}

/// A request that continues the caller's trace `trace_id` (W3C
/// `traceparent`), as an instrumented client would send it.
fn in_trace<T>(message: T, trace_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    request
}

/// Vector builds and searches are one trace across services too (issue 12,
/// item 5): a CreateIndex that continues a caller's trace has its catalog
/// lookup and its storage reads in that trace, although the build runs on
/// detached after the call's first message; a Search joins the caller's
/// trace.
#[test]
fn a_vector_build_and_a_search_are_one_trace_across_services() {
    use lakehouse_proto::vector::v1 as vector;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (collector, endpoint) = Collector::start(&runtime);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(
        "all",
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)],
    );
    server.wait_healthy();
    let build_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let search_trace = "0af7651916cd43dd8448eb211c80319c";

    let uri = server.uri();
    runtime.block_on(async {
        let channel = lakehouse_client::connect(&uri).await.expect("connect");
        let file = embeddings_parquet(300);
        let upload = lakehouse_client::file_upload(
            ingest::IngestFileHeader {
                dataset: "traced-vectors".to_owned(),
                file_name: "vectors.parquet".to_owned(),
                format: ingest::FileFormat::Parquet as i32,
                mode: ingest::IngestMode::Create as i32,
                ..Default::default()
            },
            lakehouse_client::chunked(&file),
        );
        lakehouse_client::ingest(channel.clone())
            .ingest_file(upload)
            .await
            .expect("IngestFile");

        let mut client = lakehouse_client::vector(channel);
        let mut build = client
            .create_index(in_trace(
                vector::CreateIndexRequest {
                    name: "traced-idx".to_owned(),
                    dataset: "traced-vectors".to_owned(),
                    id_column: "id".to_owned(),
                    vector_column: "embedding".to_owned(),
                    ..Default::default()
                },
                build_trace,
            ))
            .await
            .expect("CreateIndex")
            .into_inner();
        let mut finished = None;
        while let Some(message) = build.next().await {
            if let Some(vector::create_index_response::Event::Finished(done)) =
                message.expect("build event").event
            {
                finished = Some(done);
            }
        }
        let finished = finished.expect("a finished message");
        assert_eq!(
            finished.status.as_ref().map(|s| s.code),
            Some(0),
            "{finished:?}"
        );
        let hits = client
            .search(in_trace(
                vector::SearchRequest {
                    index: "traced-idx".to_owned(),
                    vector: vec![0.5; 8],
                    k: 3,
                    ..Default::default()
                },
                search_trace,
            ))
            .await
            .expect("Search")
            .into_inner()
            .hits;
        assert_eq!(hits.len(), 3);
    });
    let status = server.stop().expect("was running");
    assert!(status.success(), "{}", server.log_text());

    let spans = collector.spans();
    let in_build: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == build_trace)
        .map(|s| s.rpc.as_str())
        .collect();
    for rpc in [
        "/lakehouse.vector.v1.VectorService/CreateIndex",
        "/lakehouse.catalog.v1.CatalogService/GetDataset",
        "/lakehouse.storage.v1.StorageService/GetObject",
    ] {
        assert!(
            in_build.contains(&rpc),
            "{rpc} is not in the build's trace; spans in it: {in_build:?}"
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == search_trace
                && s.rpc == "/lakehouse.vector.v1.VectorService/Search"),
        "the search did not join the caller's trace: {spans:?}"
    );
}
