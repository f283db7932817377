//! The vector plane through a crash and a stop of `serve all`:
//!
//! - `kill -9` during a promoting RebuildIndex never loses the active
//!   generation: the process is killed as soon as the new generation's
//!   manifest appears (the window where retention used to delete the old
//!   generation's files before the record stopped naming them). After a
//!   restart the index is READY, searches answer, and on disk every READY
//!   generation the record names is whole and no other generation is left.
//! - SIGTERM during a build cancels it before storage stops: the process
//!   exits cleanly within the grace, and the generation reads CANCELLED
//!   (not FAILED at the next start), its files gone.

use std::path::Path;
use std::time::{Duration, Instant};

use lakehouse_proto::ingest::v1 as ingest_pb;
use lakehouse_proto::vector::v1 as pb;

use crate::support::ServerProcess;

const INDEX: &str = "crash-idx";
const DIM: usize = 16;
const ROWS: usize = 3000;

fn ndjson(rows: usize) -> Vec<u8> {
    let mut out = String::new();
    let mut state = 7u64;
    for i in 0..rows {
        let components: Vec<String> = (0..DIM)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!(
                    "{:.4}",
                    ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5 + (i % 5) as f64
                )
            })
            .collect();
        out.push_str(&format!(
            "{{\"id\":{i},\"text\":\"doc {i}\",\"embedding\":[{}]}}\n",
            components.join(",")
        ));
    }
    out.into_bytes()
}

async fn drain_build<S>(mut stream: tonic::Streaming<S>) -> Option<i32>
where
    S: BuildMessage,
{
    let mut code = None;
    while let Ok(Some(message)) = stream.message().await {
        if let Some(status) = message.finished_code() {
            code = Some(status);
        }
    }
    code
}

trait BuildMessage {
    fn finished_code(&self) -> Option<i32>;
}

impl BuildMessage for pb::CreateIndexResponse {
    fn finished_code(&self) -> Option<i32> {
        match &self.event {
            Some(pb::create_index_response::Event::Finished(f)) => {
                f.status.as_ref().map(|s| s.code)
            }
            _ => None,
        }
    }
}

impl BuildMessage for pb::RebuildIndexResponse {
    fn finished_code(&self) -> Option<i32> {
        match &self.event {
            Some(pb::rebuild_index_response::Event::Finished(f)) => {
                f.status.as_ref().map(|s| s.code)
            }
            _ => None,
        }
    }
}

fn rebuild(request_id: &str) -> pb::RebuildIndexRequest {
    pb::RebuildIndexRequest {
        name: INDEX.into(),
        promote: true,
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// The stored record's body (the sealed envelope's `body`).
fn stored_record(index_dir: &Path) -> serde_json::Value {
    let bytes = std::fs::read(index_dir.join("index.json")).expect("index.json");
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("index.json is JSON");
    value.get("body").cloned().unwrap_or(value)
}

async fn ingest(channel: &lakehouse_client::TracedChannel, rows: usize) {
    let bytes = ndjson(rows);
    lakehouse_client::ingest(channel.clone())
        .ingest_file(lakehouse_client::file_upload(
            ingest_pb::IngestFileHeader {
                dataset: "crash".into(),
                file_name: "crash.ndjson".into(),
                format: ingest_pb::FileFormat::Ndjson as i32,
                mode: ingest_pb::IngestMode::Create as i32,
                ..Default::default()
            },
            lakehouse_client::chunked(&bytes),
        ))
        .await
        .expect("ingest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_promoting_rebuild_keeps_a_whole_active_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("server");
    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let channel = lakehouse_client::connect_lazy(&server.uri()).expect("address");
    ingest(&channel, ROWS).await;
    let mut client = lakehouse_client::vector(channel);
    let stream = client
        .create_index(pb::CreateIndexRequest {
            name: INDEX.into(),
            dataset: "crash".into(),
            id_column: "id".into(),
            text_column: "text".into(),
            vector_column: "embedding".into(),
            metric: pb::Metric::L2 as i32,
            // Every promote retires the generation it replaces: the
            // narrowest window, where the old bug lost the index.
            retained_generations: Some(0),
            request_id: "crash-create".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(drain_build(stream).await, Some(0));
    let stream = client
        .rebuild_index(rebuild("crash-rebuild-2"))
        .await
        .expect("rebuild 2")
        .into_inner();
    assert_eq!(drain_build(stream).await, Some(0));

    // Rebuild 3, killed as soon as its manifest appears.
    let index_dir = server_dir.join("data/buckets/default/indexes").join(INDEX);
    let manifest = index_dir.join("gen-3/manifest.json");
    let _stream = client
        .rebuild_index(rebuild("crash-rebuild-3"))
        .await
        .expect("rebuild 3");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manifest.exists() {
        assert!(
            Instant::now() < deadline,
            "generation 3 never got a manifest"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    server.kill();

    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let channel = lakehouse_client::connect_lazy(&server.uri()).expect("address");
    let mut client = lakehouse_client::vector(channel);
    let index = client
        .get_index(pb::GetIndexRequest { name: INDEX.into() })
        .await
        .expect("get index")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(index.state, pb::IndexState::Ready as i32, "{index:?}");
    assert!([2, 3].contains(&index.active_generation), "{index:?}");
    let hits = client
        .search(pb::SearchRequest {
            index: INDEX.into(),
            vector: vec![0.0; DIM],
            k: 5,
            ..Default::default()
        })
        .await
        .expect("search after the crash")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 5);

    // On disk: the record's READY generations are whole; nothing else.
    let record = stored_record(&index_dir);
    let generations = record["generations"].as_array().expect("generations");
    let named: Vec<u64> = generations
        .iter()
        .filter_map(|g| g["generation"].as_u64())
        .collect();
    for g in generations.iter().filter(|g| g["state"] == "ready") {
        let folder = index_dir.join(format!("gen-{}", g["generation"]));
        for file in ["graph.bin", "rows.parquet", "manifest.json"] {
            assert!(
                folder.join(file).exists(),
                "{folder:?} lacks {file}: {record}"
            );
        }
    }
    assert_eq!(record["active"].as_u64(), Some(index.active_generation));
    for entry in std::fs::read_dir(&index_dir)
        .expect("index folder")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("gen-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        // The local backend may leave an emptied folder; files are what count.
        let files = std::fs::read_dir(entry.path()).map_or(0, |d| d.count());
        assert!(
            files == 0 || named.contains(&n),
            "gen-{n} left on disk, not in the record: {record}"
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_build_cancels_it_before_storage_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("server");
    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let channel = lakehouse_client::connect_lazy(&server.uri()).expect("address");
    ingest(&channel, 30_000).await;
    let mut client = lakehouse_client::vector(channel);
    // Parameters that make the build take far longer than the test waits.
    let mut stream = client
        .create_index(pb::CreateIndexRequest {
            name: INDEX.into(),
            dataset: "crash".into(),
            id_column: "id".into(),
            vector_column: "embedding".into(),
            metric: pb::Metric::L2 as i32,
            config: Some(pb::HnswConfig {
                m: 64,
                ef_construction: 2000,
            }),
            request_id: "stop-create".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    loop {
        let message = stream.message().await.expect("stream").expect("a message");
        if let Some(pb::create_index_response::Event::Progress(p)) = message.event
            && p.phase == pb::BuildPhase::Inserting as i32
        {
            break;
        }
    }
    let asked = Instant::now();
    let status = server.stop().expect("exit status");
    let took = asked.elapsed();
    assert!(status.success(), "a clean exit, not a kill: {status:?}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    let log = server.log_text();
    assert!(log.contains("cancelling running builds"), "{log}");

    let mut server = ServerProcess::start("all", &server_dir, &[]);
    server.wait_healthy();
    let channel = lakehouse_client::connect_lazy(&server.uri()).expect("address");
    let generations = lakehouse_client::vector(channel)
        .list_generations(pb::ListGenerationsRequest {
            index: INDEX.into(),
            ..Default::default()
        })
        .await
        .expect("list generations")
        .into_inner()
        .generations;
    assert_eq!(generations.len(), 1, "{generations:?}");
    assert_eq!(
        generations[0].state,
        pb::GenerationState::Cancelled as i32,
        "{generations:?}"
    );
    let folder = server_dir
        .join("data/buckets/default/indexes")
        .join(INDEX)
        .join("gen-1");
    for file in ["graph.bin", "rows.parquet", "manifest.json"] {
        assert!(!folder.join(file).exists(), "{file} left behind");
    }
    assert!(!server.log_text().contains("interrupted by a restart"));
    server.stop();
}
