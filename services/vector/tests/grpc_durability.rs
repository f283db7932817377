//! The durability and input findings of the reliability campaign, through
//! gRPC on the real stack (storage + catalog + vector on loopback):
//!
//! - a damaged active generation is refused at start: the index reads
//!   LOAD_FAILED with the cause, searches fail with INDEX_UNAVAILABLE,
//!   health stays SERVING, the journal names it; a rebuild clears it all;
//! - vectors whose distances overflow f32 are refused at query and at
//!   build, naming the component or row; duplicate ids are refused naming
//!   both rows;
//! - a BatchSearch of 10,000 × 768-d queries passes; an answer past the
//!   message limit is RESOURCE_EXHAUSTED before it is sent.

// Integration tests see every dependency of the library.
#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field};
use common::{DIM, Stack, VectorStack as _, batch, create, start, start_with};
use lakehouse_proto::storage::v1 as storage_pb;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_vector::VectorConfig;
use lakehouse_vector::hnsw::testing::clustered_vectors;
use tonic_health::pb::health_client::HealthClient;

/// The finished message of a build stream.
async fn finished<T>(
    mut stream: tonic::Streaming<T>,
    finished: impl Fn(T) -> Option<pb::BuildFinished>,
) -> pb::BuildFinished {
    let mut last = None;
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(f) = finished(message) {
            last = Some(f);
        }
    }
    last.expect("a finished message")
}

fn create_finished(m: pb::CreateIndexResponse) -> Option<pb::BuildFinished> {
    match m.event? {
        pb::create_index_response::Event::Finished(f) => Some(f),
        _ => None,
    }
}

fn rebuild_finished(m: pb::RebuildIndexResponse) -> Option<pb::BuildFinished> {
    match m.event? {
        pb::rebuild_index_response::Event::Finished(f) => Some(f),
        _ => None,
    }
}

/// Creates an index and waits for its build to end.
async fn create_index(stack: &Stack, request: pb::CreateIndexRequest) -> pb::BuildFinished {
    let stream = stack
        .vector_client()
        .create_index(request)
        .await
        .expect("create")
        .into_inner();
    finished(stream, create_finished).await
}

/// Rebuilds an index and waits for the build to end.
async fn rebuild_index(stack: &Stack, request: pb::RebuildIndexRequest) -> pb::BuildFinished {
    let stream = stack
        .vector_client()
        .rebuild_index(request)
        .await
        .expect("rebuild")
        .into_inner();
    finished(stream, rebuild_finished).await
}

async fn get_index(stack: &Stack, name: &str) -> pb::Index {
    stack
        .vector_client()
        .get_index(pb::GetIndexRequest { name: name.into() })
        .await
        .expect("get index")
        .into_inner()
        .index
        .expect("index")
}

async fn health(stack: &Stack) -> i32 {
    let channel = lakehouse_client::connect_lazy(stack.addr()).expect("address");
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_active_generation_reads_load_failed_until_a_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path()).await;
    let data = clustered_vectors(500, DIM, 5, 3);
    stack.dataset("docs", &[batch(&data, 0)]).await;
    let done = create_index(&stack, create("docs-idx", "docs", "c-1")).await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    stack.shutdown().await;

    // Flip bytes in the vector section (the end of graph.bin).
    let graph = lakehouse_testkit::bucket_folder(dir.path(), "main")
        .join("indexes/docs-idx/gen-1/graph.bin");
    let mut bytes = std::fs::read(&graph).expect("graph.bin");
    let len = bytes.len();
    bytes[len - 4096..].iter_mut().for_each(|b| *b ^= 0x33);
    std::fs::write(&graph, bytes).expect("damage");

    let stack = start(dir.path()).await;
    let index = get_index(&stack, "docs-idx").await;
    assert_eq!(index.state, pb::IndexState::LoadFailed as i32, "{index:?}");
    assert!(index.error.contains("CRC32C"), "{}", index.error);
    let refused = stack
        .vector_client()
        .search(pb::SearchRequest {
            index: "docs-idx".into(),
            vector: data[..DIM].to_vec(),
            k: 3,
            ..Default::default()
        })
        .await
        .expect_err("a damaged generation is never searched");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("cannot be searched"),
        "{refused:?}"
    );
    // One damaged index does not take the service down.
    assert_eq!(
        health(&stack).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let generations = stack
        .vector_client()
        .list_generations(pb::ListGenerationsRequest {
            index: "docs-idx".into(),
            ..Default::default()
        })
        .await
        .expect("generations")
        .into_inner()
        .generations;
    assert_eq!(generations[0].state, pb::GenerationState::Damaged as i32);
    // The journal names the damaged generation.
    let channel = lakehouse_client::connect_lazy(stack.addr()).expect("address");
    let errors = lakehouse_client::storage(channel)
        .list_errors(storage_pb::ListErrorsRequest {
            service: "vector".into(),
            ..Default::default()
        })
        .await
        .expect("list errors")
        .into_inner()
        .errors;
    assert!(
        errors
            .iter()
            .any(|e| e.key.contains("docs-idx/gen-1") && e.message.contains("CRC32C")),
        "{errors:?}"
    );

    // A rebuild makes it searchable again, and the error goes with the cause.
    let done = rebuild_index(
        &stack,
        pb::RebuildIndexRequest {
            name: "docs-idx".into(),
            promote: true,
            request_id: "r-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    let index = get_index(&stack, "docs-idx").await;
    assert_eq!(index.state, pb::IndexState::Ready as i32, "{index:?}");
    assert_eq!(index.active_generation, 2);
    assert!(!index.error.contains("CRC32C"), "{}", index.error);
    stack.shutdown().await;
}

/// Rows with 768-d vectors, ids `first..`, optionally one id repeated.
fn wide(n: usize, first: i64, scale: f32) -> RecordBatch {
    let dim = 768;
    let values: Vec<f32> = clustered_vectors(n, dim, 4, 9)
        .into_iter()
        .map(|v| v * scale)
        .collect();
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let embedding = FixedSizeListArray::new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    );
    let ids = Int64Array::from_iter_values(first..first + n as i64);
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("embedding", Arc::new(embedding) as ArrayRef),
    ])
    .expect("batch")
}

fn create_wide(name: &str, dataset: &str) -> pb::CreateIndexRequest {
    pb::CreateIndexRequest {
        name: name.into(),
        dataset: dataset.into(),
        id_column: "id".into(),
        vector_column: "embedding".into(),
        metric: pb::Metric::L2 as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vectors_duplicate_ids_and_message_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path()).await;
    let mut client = stack.vector_client();

    // Duplicate ids: the second part repeats ids 0..10.
    stack
        .dataset("dup", &[wide(50, 0, 1.0), wide(10, 0, 1.0)])
        .await;
    let done = create_index(&stack, create_wide("dup-idx", "dup")).await;
    let status = done.status.expect("status");
    assert_ne!(status.code, 0);
    assert!(
        status.message.contains("row 50") && status.message.contains("row 0"),
        "{}",
        status.message
    );

    // Distances past f32 at build: 1e19 per component.
    stack.dataset("huge", &[wide(20, 0, 1e19)]).await;
    let done = create_index(&stack, create_wide("huge-idx", "huge")).await;
    let status = done.status.expect("status");
    assert!(
        status.message.contains("squared norm"),
        "{}",
        status.message
    );

    // A good 768-d index, searched with 10,000 queries in one BatchSearch
    // (31 MB, twice the server-wide 16 MiB default).
    stack.dataset("wide", &[wide(60, 0, 1.0)]).await;
    let done = create_index(&stack, create_wide("wide-idx", "wide")).await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    let query: Vec<f32> = wide(1, 0, 1.0)
        .column(1)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .expect("list")
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("f32")
        .values()
        .to_vec();
    let answered = client
        .batch_search(pb::BatchSearchRequest {
            index: "wide-idx".into(),
            queries: (0..10_000)
                .map(|_| pb::QueryVector {
                    vector: query.clone(),
                })
                .collect(),
            k: 1,
            ..Default::default()
        })
        .await
        .expect("10,000 × 768 in one call")
        .into_inner();
    assert_eq!(answered.results.len(), 10_000);
    assert_eq!(answered.results[9_999].hits[0].id, "0");

    // A query whose distances overflow f32.
    let refused = client
        .search(pb::SearchRequest {
            index: "wide-idx".into(),
            vector: vec![1e38; 768],
            k: 3,
            ..Default::default()
        })
        .await
        .expect_err("an overflowing query");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("squared norm"), "{refused:?}");
    stack.shutdown().await;

    // An answer past a small message limit is refused before it is sent.
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start_with(
        dir.path(),
        VectorConfig {
            max_message_bytes: 1 << 20,
            ..VectorConfig::default()
        },
    )
    .await;
    let data = clustered_vectors(300, DIM, 5, 3);
    stack.dataset("docs", &[batch(&data, 0)]).await;
    let done = create_index(&stack, create("docs-idx", "docs", "c-1")).await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    let too_large = stack
        .vector_client()
        .batch_search(pb::BatchSearchRequest {
            index: "docs-idx".into(),
            queries: data
                .chunks_exact(DIM)
                .take(300)
                .map(|v| pb::QueryVector { vector: v.to_vec() })
                .collect(),
            k: 300,
            ..Default::default()
        })
        .await
        .expect_err("90,000 hits with texts are past 1 MiB");
    assert_eq!(
        too_large.code(),
        tonic::Code::ResourceExhausted,
        "{too_large:?}"
    );
    assert!(
        too_large.message().contains("message limit"),
        "{too_large:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_cache_reports_what_it_frees_and_what_generations_keep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path()).await;
    let data = clustered_vectors(400, DIM, 5, 3);
    stack.dataset("docs", &[batch(&data, 0)]).await;
    let done = create_index(&stack, create("docs-idx", "docs", "c-1")).await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    // Generation 1 was built on the cached vectors: one buffer, two users.
    let stats = stack
        .vector_client()
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.entries.len(), 1);
    assert_eq!(
        stats.entries[0].held_by,
        [pb::GenerationRef {
            index: "docs-idx".into(),
            generation: 1
        }]
    );
    assert_eq!(stats.exclusive_bytes, 0);
    let evicted = stack
        .vector_client()
        .evict_cache(pb::EvictCacheRequest::default())
        .await
        .expect("evict")
        .into_inner();
    assert_eq!(evicted.evicted_entries, 1);
    assert_eq!(evicted.freed_bytes, 0, "the generation keeps the buffer");
    assert_eq!(evicted.pinned_bytes, stats.total_bytes);
    assert_eq!(
        evicted.pinned_by,
        [pb::GenerationRef {
            index: "docs-idx".into(),
            generation: 1
        }]
    );
    stack.shutdown().await;

    // After a restart generation 1 is read from storage; a rebuild that is
    // not promoted loads the cache, and nothing active holds that entry.
    let stack = start(dir.path()).await;
    let done = rebuild_index(
        &stack,
        pb::RebuildIndexRequest {
            name: "docs-idx".into(),
            promote: false,
            request_id: "r-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    let stats = stack
        .vector_client()
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert!(stats.entries[0].held_by.is_empty(), "{stats:?}");
    assert!(stats.exclusive_bytes > 0 && stats.exclusive_bytes == stats.total_bytes);
    let evicted = stack
        .vector_client()
        .evict_cache(pb::EvictCacheRequest::default())
        .await
        .expect("evict")
        .into_inner();
    assert_eq!(evicted.freed_bytes, stats.total_bytes);
    assert_eq!(evicted.pinned_bytes, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_listed_kept_and_repaired_from_its_generations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = start(dir.path()).await;
    let data = clustered_vectors(300, DIM, 5, 3);
    stack.dataset("docs", &[batch(&data, 0)]).await;
    let done = create_index(&stack, create("docs-idx", "docs", "c-1")).await;
    assert_eq!(done.status.map(|s| s.code), Some(0));
    stack.shutdown().await;
    let record =
        lakehouse_testkit::bucket_folder(dir.path(), "main").join("indexes/docs-idx/index.json");
    std::fs::write(
        &record,
        b"{\"crc32c\": 1, \"body\": {\"name\": \"garbage\"}}",
    )
    .expect("damage the record");

    let stack = start(dir.path()).await;
    let mut client = stack.vector_client();
    // Listed with its state and reason, not hidden.
    let listed = client
        .list_indexes(pb::ListIndexesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .indexes;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::IndexState::Damaged as i32);
    assert!(
        listed[0].error.contains("checksum mismatch"),
        "{}",
        listed[0].error
    );
    // Never overwritten by a create of the same name, never searched.
    let exists = client
        .create_index(create("docs-idx", "docs", "c-2"))
        .await
        .expect_err("the name is taken");
    assert_eq!(exists.code(), tonic::Code::AlreadyExists);
    let refused = client
        .search(pb::SearchRequest {
            index: "docs-idx".into(),
            vector: data[..DIM].to_vec(),
            k: 3,
            ..Default::default()
        })
        .await
        .expect_err("damaged");
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");

    let repaired = client
        .repair_index(pb::RepairIndexRequest {
            name: "docs-idx".into(),
            request_id: "repair-1".into(),
        })
        .await
        .expect("repair")
        .into_inner();
    assert_eq!(repaired.recovered_generations, [1]);
    let index = repaired.index.expect("index");
    assert_eq!(index.state, pb::IndexState::Ready as i32, "{index:?}");
    assert_eq!(
        (index.active_generation, index.dataset.as_str()),
        (1, "docs")
    );
    let hits = client
        .search(pb::SearchRequest {
            index: "docs-idx".into(),
            vector: data[..DIM].to_vec(),
            k: 3,
            ..Default::default()
        })
        .await
        .expect("search after the repair")
        .into_inner()
        .hits;
    assert_eq!(hits[0].id, "0");
    let again = client
        .repair_index(pb::RepairIndexRequest {
            name: "docs-idx".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("not damaged any more");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    stack.shutdown().await;
}
