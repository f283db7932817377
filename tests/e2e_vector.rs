//! The vector service as a user meets it, through `lakehouse serve all` as a
//! real process: a Parquet file with an embedding column (written by
//! pyarrow, as users' files are: Snappy, `list<float>`) is ingested, indexed
//! and searched; after a restart the index answers again without a rebuild,
//! and health stays NOT_SERVING until it is loaded.

use crate::support;

use lakehouse_proto::ingest::v1 as ingest_pb;
use lakehouse_proto::vector::v1 as pb;
use support::{ServerProcess, skip_or_fail, which};

const TEST: &str = "serve_all_ingests_indexes_searches_and_reloads_after_restart";

/// Writes `n` rows (id, text, embedding of `dim` floats) with pyarrow.
fn pyarrow_file(path: &std::path::Path, n: usize, dim: usize) -> bool {
    let Some(python) = which("python3") else {
        skip_or_fail(TEST, "python3 is not on PATH");
        return false;
    };
    let script = format!(
        r#"
import random, pyarrow as pa, pyarrow.parquet as pq
random.seed(7)
centers = [[random.gauss(0, 1) for _ in range({dim})] for _ in range(8)]
rows = [[c + random.gauss(0, 0.3) for c in centers[i % 8]] for i in range({n})]
table = pa.table({{
    "id": pa.array(range({n}), pa.int64()),
    "text": ["doc %d" % i for i in range({n})],
    "city": ["London" if i % 2 == 0 else "Paris" for i in range({n})],
    "embedding": pa.array(rows, pa.list_(pa.float32())),
}})
pq.write_table(table, "{path}")
"#,
        path = path.display()
    );
    let output = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .expect("run python3");
    if !output.status.success() {
        skip_or_fail(
            TEST,
            &format!(
                "pyarrow could not write the test file (pip install pyarrow): {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        );
        return false;
    }
    true
}

fn vector_client(server: &ServerProcess) -> lakehouse_client::VectorClient {
    lakehouse_client::vector(lakehouse_client::connect_lazy(&server.uri()).expect("address"))
}

async fn search(client: &mut lakehouse_client::VectorClient, query: &[f32]) -> Vec<String> {
    client
        .search(pb::SearchRequest {
            index: "emb-idx".into(),
            vector: query.to_vec(),
            k: 5,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits
        .into_iter()
        .map(|hit| hit.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_all_ingests_indexes_searches_and_reloads_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("embeddings.parquet");
    let (n, dim) = (1200, 24);
    if !pyarrow_file(&file, n, dim) {
        return;
    }
    let bytes = std::fs::read(&file).expect("read the parquet file");
    let query = vec![0.5f32; dim];

    let server_dir = dir.path().join("server");
    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let channel = lakehouse_client::connect_lazy(&server.uri()).expect("address");

    // Ingest the file as users do (IngestFile, format from the name).
    let messages = lakehouse_client::file_upload(
        ingest_pb::IngestFileHeader {
            dataset: "emb".into(),
            file_name: "embeddings.parquet".into(),
            format: ingest_pb::FileFormat::Parquet as i32,
            mode: ingest_pb::IngestMode::Create as i32,
            ..Default::default()
        },
        lakehouse_client::chunked(&bytes),
    );
    lakehouse_client::ingest(channel.clone())
        .ingest_file(messages)
        .await
        .expect("ingest the parquet file");

    // Build: started first, finished last and OK.
    let mut client = vector_client(&server);
    let mut stream = client
        .create_index(pb::CreateIndexRequest {
            name: "emb-idx".into(),
            dataset: "emb".into(),
            id_column: "id".into(),
            text_column: "text".into(),
            vector_column: "embedding".into(),
            metric: pb::Metric::L2 as i32,
            request_id: "e2e-create-1".into(),
            ..Default::default()
        })
        .await
        .expect("create index")
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.expect("build stream") {
        events.push(message.event.expect("event"));
    }
    use pb::create_index_response::Event;
    assert!(
        matches!(events.first(), Some(Event::Started(_))),
        "{events:?}"
    );
    let Some(Event::Finished(finished)) = events.last() else {
        panic!("no finished message: {events:?}");
    };
    let status = finished.status.clone().expect("status");
    assert_eq!(status.code, 0, "build failed: {}", status.message);

    // HNSW agrees with exact search on a set this small.
    let exact = client
        .search(pb::SearchRequest {
            index: "emb-idx".into(),
            vector: query.clone(),
            k: 5,
            exact: true,
            ..Default::default()
        })
        .await
        .expect("exact search")
        .into_inner();
    assert_eq!(exact.hits.len(), 5);
    assert_eq!(exact.ef_search, 0, "exact search reports no ef");
    let before = search(&mut client, &query).await;
    let exact_ids: Vec<String> = exact.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(
        before, exact_ids,
        "HNSW agrees with exact search on a small set"
    );
    assert!(
        exact.hits[0].text.starts_with("doc "),
        "text comes with hits"
    );

    // Restart: healthy only once the index is loaded, then the same answers.
    server.stop();
    // Same folder, so the same data directory.
    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let mut client = vector_client(&server);
    assert_eq!(search(&mut client, &query).await, before);
    let index = client
        .get_index(pb::GetIndexRequest {
            name: "emb-idx".into(),
        })
        .await
        .expect("get index")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(
        (
            index.active_generation,
            index.vector_count,
            index.dimensions
        ),
        (1, n as u64, dim as u32)
    );
    assert!(!index.stale);
    assert!(
        server.log_text().contains("vector indexes loaded"),
        "{}",
        server.log_text()
    );
    assert!(
        !server.log_text().contains("generation ready"),
        "a restart must not rebuild:\n{}",
        server.log_text()
    );

    // Trials on the restarted server: an eval set sampled from the index,
    // a trial with an ef sweep, the journal listing it, BestTrial.
    let eval = client
        .create_eval_set(pb::CreateEvalSetRequest {
            name: "emb-eval".into(),
            index: "emb-idx".into(),
            query_count: 20,
            k: 5,
            seed: 1,
            ..Default::default()
        })
        .await
        .expect("create eval set")
        .into_inner()
        .eval_set
        .expect("eval set");
    assert_eq!((eval.query_count, eval.k), (20, 5));
    let mut stream = client
        .run_trial(pb::RunTrialRequest {
            index: "emb-idx".into(),
            eval_set: "emb-eval".into(),
            config: Some(pb::HnswConfig {
                m: 8,
                ef_construction: 40,
            }),
            ef_search: vec![10, 50],
            ..Default::default()
        })
        .await
        .expect("run trial")
        .into_inner();
    let mut finished = None;
    while let Some(message) = stream.message().await.expect("trial stream") {
        if let Some(pb::run_trial_response::Event::Finished(f)) = message.event {
            finished = Some(f);
        }
    }
    let finished = finished.expect("finished");
    let status = finished.status.expect("status");
    assert_eq!(status.code, 0, "trial failed: {}", status.message);
    assert_eq!(finished.trials.len(), 2);
    assert!(finished.trials[1].recall > 0.8, "{:?}", finished.trials[1]);
    let best = client
        .best_trial(pb::BestTrialRequest {
            index: "emb-idx".into(),
            min_recall: 0.5,
            ..Default::default()
        })
        .await
        .expect("best trial")
        .into_inner()
        .trial
        .expect("trial");
    assert!(best.recall >= 0.5);

    // The same through the CLI, as a person or an agent would drive it.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(support::BINARY)
            .args(args)
            .args(["--addr", &server.uri()])
            .output()
            .expect("run the CLI");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = cli(&["index", "ls"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("emb-idx\t"), "{stdout}");
    let (code, stdout, stderr) = cli(&[
        "trial",
        "run",
        "--index",
        "emb-idx",
        "--eval-set",
        "emb-eval",
        "--m",
        "12",
        "--ef-search",
        "20,40",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let trials: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON trial a line"))
        .collect();
    assert_eq!(trials.len(), 2);
    assert!(
        trials
            .iter()
            .all(|t| t["m"] == 12 && t["recall"].as_f64().is_some())
    );
    assert!(
        stderr.contains("EVALUATING"),
        "progress on stderr: {stderr}"
    );
    let (code, stdout, _) = cli(&[
        "trial",
        "best",
        "--index",
        "emb-idx",
        "--min-recall",
        "0.5",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0));
    let best: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(best["recall"].as_f64().expect("recall") >= 0.5);
    let query_json = serde_json::to_string(&query).expect("json");
    let (code, stdout, stderr) = cli(&[
        "search",
        "--index",
        "emb-idx",
        "--k",
        "3",
        "--vector",
        &query_json,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 3);
    assert_eq!(
        stdout.split('\t').next(),
        before.first().map(String::as_str)
    );
    // Exit codes mean something: 3 = not found, 4 = conflict.
    let (code, _, stderr) = cli(&["index", "show", "nope"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("INDEX_NOT_FOUND"), "{stderr}");
    let (code, _, stderr) = cli(&["eval", "create", "emb-eval", "--index", "emb-idx"]);
    assert_eq!(code, Some(4), "{stderr}");

    // Filtered search from the shell: an index keeping `city`, a readable
    // --where, each hit passing it and showing its payload.
    let (code, _, stderr) = cli(&[
        "index",
        "create",
        "emb-city",
        "--dataset",
        "emb",
        "--text-column",
        "text",
        "--payload-column",
        "city",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = cli(&[
        "search",
        "--index",
        "emb-city",
        "--k",
        "5",
        "--vector",
        &query_json,
        "--where",
        "city = \"Paris\" and not city is null",
        "--payload",
        "city",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let hits: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON hit a line"))
        .collect();
    assert_eq!(hits.len(), 5, "{stdout}");
    for hit in &hits {
        assert_eq!(hit["payload"]["city"], "Paris", "{hit}");
        let id: u64 = hit["id"].as_str().expect("id").parse().expect("numeric id");
        assert_eq!(id % 2, 1, "Paris rows have odd ids: {hit}");
    }
    // A filter the CLI cannot read: exit 2, pointing at the token.
    let (code, _, stderr) = cli(&[
        "search",
        "--index",
        "emb-city",
        "--vector",
        &query_json,
        "--where",
        "city = and",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("column 8"), "{stderr}");
    // A column the index does not keep: the server names it.
    let (code, _, stderr) = cli(&[
        "search",
        "--index",
        "emb-city",
        "--vector",
        &query_json,
        "--where",
        "text = \"doc 1\"",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("UNKNOWN_PAYLOAD_COLUMN"), "{stderr}");
}
