//! The vector service through real gRPC on loopback, with the real storage
//! (local folder bucket) and catalog (SQLite) services beside it, as in
//! `serve all`: build, search, bad input, request-id replay, persistence
//! across a restart, a crash mid-persist, and a hot swap under load.

// Integration tests see every dependency of the library.
#![allow(unused_crate_dependencies)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::status::{error_metadata, error_reason, from_rpc_status};
use lakehouse_vector::hnsw::testing::clustered_vectors;
use object_store::{ObjectStoreExt as _, PutPayload};
use tokio_util::sync::CancellationToken;
use tonic::Code;

mod common;

use common::{DIM, VectorStack as _, batch, create, start};

/// Every message of a build stream: (started, progress count, finished).
///
/// Checks the stream's shape on the way, and that a counted phase (loading,
/// inserting) is last shown at its total when the build moves on, however
/// quickly it went.
async fn drain<T>(
    mut stream: tonic::Streaming<T>,
    split: impl Fn(T) -> Option<BuildMsg>,
) -> (pb::BuildStarted, usize, pb::BuildFinished) {
    let mut started = None;
    let mut progress = 0;
    let mut last: Option<pb::BuildProgress> = None;
    while let Some(message) = stream.message().await.expect("stream") {
        match split(message).expect("event") {
            BuildMsg::Started(s) => {
                assert!(
                    started.is_none() && progress == 0,
                    "started comes first, once"
                );
                started = Some(s);
            }
            BuildMsg::Progress(p) => {
                progress += 1;
                if let Some(l) = &last {
                    let counted = [pb::BuildPhase::Loading, pb::BuildPhase::Inserting]
                        .map(|c| c as i32)
                        .contains(&l.phase);
                    assert!(
                        !(counted && l.phase != p.phase && l.done < l.total),
                        "phase {} left at {} / {} before {}",
                        l.phase,
                        l.done,
                        l.total,
                        p.phase
                    );
                }
                last = Some(p);
            }
            BuildMsg::Finished(f) => {
                assert!(
                    stream.message().await.expect("end").is_none(),
                    "finished is last"
                );
                return (started.expect("started"), progress, *f);
            }
        }
    }
    panic!("the stream ended without a finished message");
}

enum BuildMsg {
    Started(pb::BuildStarted),
    Progress(pb::BuildProgress),
    Finished(Box<pb::BuildFinished>),
}

fn create_msg(m: pb::CreateIndexResponse) -> Option<BuildMsg> {
    use pb::create_index_response::Event;
    Some(match m.event? {
        Event::Started(s) => BuildMsg::Started(s),
        Event::Progress(p) => BuildMsg::Progress(p),
        Event::Finished(f) => BuildMsg::Finished(Box::new(f)),
    })
}

fn rebuild_msg(m: pb::RebuildIndexResponse) -> Option<BuildMsg> {
    use pb::rebuild_index_response::Event;
    Some(match m.event? {
        Event::Started(s) => BuildMsg::Started(s),
        Event::Progress(p) => BuildMsg::Progress(p),
        Event::Finished(f) => BuildMsg::Finished(Box::new(f)),
    })
}

async fn search(
    client: &mut VectorClient,
    index: &str,
    vector: &[f32],
    exact: bool,
) -> Vec<String> {
    client
        .search(pb::SearchRequest {
            index: index.to_owned(),
            vector: vector.to_vec(),
            k: 10,
            exact,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_search_replay_restart_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = clustered_vectors(3100, DIM, 10, 11);
    let (data, queries) = all.split_at(3000 * DIM);
    let stack = start(dir.path()).await;
    // Two files: rows keep catalog order across them.
    stack
        .dataset(
            "docs",
            &[
                batch(&data[..1500 * DIM], 0),
                batch(&data[1500 * DIM..], 1500),
            ],
        )
        .await;
    let mut client = stack.vector_client();

    let stream = client
        .create_index(create("docs-idx", "docs", "req-1"))
        .await
        .expect("create")
        .into_inner();
    let (started, _, finished) = drain(stream, create_msg).await;
    assert_eq!(
        (started.index.as_str(), started.generation, started.replayed),
        ("docs-idx", 1, false)
    );
    let status = finished.status.expect("status");
    assert_eq!(status.code, 0, "build failed: {}", status.message);
    let index = finished.index.expect("index");
    assert_eq!(
        (
            index.vector_count,
            index.dimensions,
            index.active_generation
        ),
        (3000, DIM as u32, 1)
    );
    assert_eq!(
        index.ef_search,
        lakehouse_vector::DEFAULT_EF_SEARCH,
        "resolved, never 0"
    );
    assert_eq!(index.config.as_ref().expect("config").m, 16);

    // The cache says what it holds, with memory from the real allocation.
    let stats = client
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .expect("cache stats")
        .into_inner();
    let [entry] = stats.entries.as_slice() else {
        panic!("one cache entry: {stats:?}");
    };
    assert_eq!(
        (
            entry.dataset.as_str(),
            entry.vector_count,
            entry.dimensions,
            entry.dataset_version,
            entry.normalized,
        ),
        ("docs", 3000, DIM as u32, index.dataset_version, true),
        "{entry:?}"
    );
    assert_eq!(entry.row_columns, ["id", "text", "category"], "{entry:?}");
    assert!(entry.memory_bytes >= 3000 * DIM as u64 * 4, "{entry:?}");
    assert_eq!(stats.total_bytes, entry.memory_bytes);
    assert_eq!((stats.hits, stats.misses), (0, 1), "{stats:?}");

    // EvictCache drops the dataset's entry; the active generation shares
    // its vectors, so they stay in memory and are reported pinned, not freed.
    let evicted = client
        .evict_cache(pb::EvictCacheRequest {
            dataset: "docs".into(),
        })
        .await
        .expect("evict")
        .into_inner();
    assert_eq!(evicted.evicted_entries, 1, "{evicted:?}");
    assert_eq!(
        (evicted.freed_bytes, evicted.pinned_bytes),
        (0, entry.memory_bytes),
        "{evicted:?}"
    );
    assert_eq!(
        evicted.pinned_by,
        [pb::GenerationRef {
            index: "docs-idx".into(),
            generation: 1
        }]
    );
    let left = client
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .expect("cache stats")
        .into_inner();
    assert!(left.entries.is_empty() && left.total_bytes == 0, "{left:?}");
    let hits = search(&mut client, "docs-idx", &queries[..DIM], false).await;
    assert_eq!(hits.len(), 10, "search after eviction");

    // The same request id replays the build instead of building again.
    let stream = client
        .create_index(create("docs-idx", "docs", "req-1"))
        .await
        .expect("replay")
        .into_inner();
    let (again, _, finished) = drain(stream, create_msg).await;
    assert!(again.replayed);
    assert_eq!((again.generation, finished.status.expect("s").code), (1, 0));
    let generations = client
        .list_generations(pb::ListGenerationsRequest {
            index: "docs-idx".into(),
            ..Default::default()
        })
        .await
        .expect("generations")
        .into_inner()
        .generations;
    assert_eq!(generations.len(), 1, "no second build");
    // Another request id for the same name is a conflict.
    let error = client
        .create_index(create("docs-idx", "docs", "req-2"))
        .await
        .expect_err("exists");
    assert_eq!(
        (error.code(), error_reason(&error).as_deref()),
        (Code::AlreadyExists, Some("INDEX_EXISTS"))
    );

    // Recall against exact search, through the API.
    let mut found = 0;
    for q in queries.chunks_exact(DIM) {
        let truth = search(&mut client, "docs-idx", q, true).await;
        let got = search(&mut client, "docs-idx", q, false).await;
        found += got.iter().filter(|id| truth.contains(id)).count();
    }
    let recall = found as f64 / (queries.len() / DIM * 10) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");

    // Hits carry text and requested payload.
    let hit = client
        .search(pb::SearchRequest {
            index: "docs-idx".into(),
            vector: data[..DIM].to_vec(),
            k: 1,
            payload_columns: vec!["category".into()],
            ..Default::default()
        })
        .await
        .expect("payload search")
        .into_inner();
    assert_eq!(hit.hits[0].id, "0");
    assert_eq!(hit.hits[0].text, "doc 0");
    assert!(
        hit.hits[0].distance.abs() < 1e-4,
        "cosine distance to itself"
    );
    assert_eq!(hit.ef_search, lakehouse_vector::DEFAULT_EF_SEARCH);
    let category = hit.hits[0]
        .payload
        .get("category")
        .and_then(|v| v.kind.clone());
    assert_eq!(
        category,
        Some(prost_types::value::Kind::StringValue("c0".into()))
    );

    // Bad input: each refused with its code and reason.
    let bad = |vector: Vec<f32>, k: u32, index: &str, payload: Vec<String>| pb::SearchRequest {
        index: index.to_owned(),
        vector,
        k,
        payload_columns: payload,
        ..Default::default()
    };
    for (request, code, reason) in [
        (
            bad(vec![0.1; DIM - 1], 10, "docs-idx", vec![]),
            Code::InvalidArgument,
            "WRONG_DIMENSIONS",
        ),
        (
            bad(vec![0.1; DIM], 1001, "docs-idx", vec![]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            bad(vec![0.1; DIM], 10, "nope", vec![]),
            Code::NotFound,
            "INDEX_NOT_FOUND",
        ),
        (
            bad(vec![0.1; DIM], 10, "Bad/Name", vec![]),
            Code::InvalidArgument,
            "INVALID_NAME",
        ),
        (
            bad(vec![0.0; DIM], 10, "docs-idx", vec![]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            bad(vec![0.1; DIM], 10, "docs-idx", vec!["secret".into()]),
            Code::InvalidArgument,
            "UNKNOWN_PAYLOAD_COLUMN",
        ),
    ] {
        let error = client.search(request).await.expect_err("refused");
        assert_eq!(
            (error.code(), error_reason(&error).as_deref()),
            (code, Some(reason)),
            "{}",
            error.message()
        );
    }
    let error = client
        .search(bad(vec![0.1; DIM - 1], 10, "docs-idx", vec![]))
        .await
        .expect_err("dims");
    assert!(
        error
            .message()
            .contains(&format!("index \"docs-idx\" has {DIM}")),
        "{}",
        error.message()
    );
    let error = client
        .create_index(pb::CreateIndexRequest {
            vector_column: "missing".into(),
            ..create("other", "docs", "")
        })
        .await
        .expect_err("column");
    assert_eq!(error_reason(&error).as_deref(), Some("COLUMN_NOT_FOUND"));
    let error = client
        .create_index(create("other", "no-such-dataset", ""))
        .await
        .expect_err("dataset");
    assert_eq!(error.code(), Code::NotFound);

    // A NaN component fails the build with the row named, as a terminal message.
    let mut poisoned = data[..200 * DIM].to_vec();
    poisoned[57 * DIM + 3] = f32::NAN;
    stack.dataset("poisoned", &[batch(&poisoned, 0)]).await;
    let stream = client
        .create_index(create("poisoned-idx", "poisoned", ""))
        .await
        .expect("starts")
        .into_inner();
    let (_, _, finished) = drain(stream, create_msg).await;
    let failure = from_rpc_status(&finished.status.expect("status"));
    assert_eq!(
        (failure.code(), error_reason(&failure).as_deref()),
        (Code::FailedPrecondition, Some("BAD_ROW"))
    );
    assert_eq!(error_metadata(&failure, "row").as_deref(), Some("57"));
    let error = client
        .search(bad(vec![0.1; DIM], 10, "poisoned-idx", vec![]))
        .await
        .expect_err("not searchable");
    assert_eq!(error_reason(&error).as_deref(), Some("INDEX_NOT_READY"));

    // Page tokens: bound to the filter, forged ones refused.
    let page = client
        .list_indexes(pb::ListIndexesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.indexes.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let reused = client
        .list_indexes(pb::ListIndexesRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            dataset: "docs".into(),
        })
        .await
        .expect_err("other filter");
    assert_eq!(error_reason(&reused).as_deref(), Some("INVALID_PAGE_TOKEN"));

    // Restart: the index comes back from storage, no rebuild, same answers.
    let before = search(&mut client, "docs-idx", &queries[..DIM], false).await;
    stack.shutdown().await;
    let stack = start(dir.path()).await;
    let mut client = stack.vector_client();
    assert_eq!(
        search(&mut client, "docs-idx", &queries[..DIM], false).await,
        before
    );
    let service = stack.vector().service();
    assert_eq!(
        service.generation_reads(),
        1,
        "the active generation was read back"
    );
    assert_eq!(
        service.cache().stats().misses,
        0,
        "no embeddings loaded: no rebuild"
    );
    let index = client
        .get_index(pb::GetIndexRequest {
            name: "docs-idx".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .index
        .expect("index");
    assert!(!index.stale, "the dataset has not moved");
    assert_eq!(index.dataset_version, index.current_dataset_version);

    // The dataset moves on: the index says it is stale.
    stack
        .dataset(
            "docs",
            &[
                batch(&data[..1500 * DIM], 0),
                batch(&data[1500 * DIM..], 1500),
                batch(&queries[..DIM], 9000),
            ],
        )
        .await;
    let index = client
        .get_index(pb::GetIndexRequest {
            name: "docs-idx".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .index
        .expect("index");
    assert!(
        index.stale && index.current_dataset_version > index.dataset_version,
        "{index:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_search_load_and_crash_mid_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = clustered_vectors(2000, DIM, 8, 5);
    let stack = start(dir.path()).await;
    stack.dataset("swap", &[batch(&data, 0)]).await;
    let mut client = stack.vector_client();
    let stream = client
        .create_index(create("swap-idx", "swap", ""))
        .await
        .expect("create")
        .into_inner();
    let (_, _, finished) = drain(stream, create_msg).await;
    assert_eq!(finished.status.expect("s").code, 0);

    // Searches run the whole time; none may fail.
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let load_stop = CancellationToken::new();
    let mut load = Vec::new();
    for worker in 0..4 {
        let (mut client, failed, served, stop, data) = (
            stack.vector_client(),
            failed.clone(),
            served.clone(),
            load_stop.clone(),
            data.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.is_cancelled() {
                let q = &data[(i % 2000) * DIM..(i % 2000 + 1) * DIM];
                match client
                    .search(pb::SearchRequest {
                        index: "swap-idx".into(),
                        vector: q.to_vec(),
                        k: 5,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 7;
            }
        }));
    }

    // A rebuild with other parameters, kept inactive, then promoted.
    let stream = client
        .rebuild_index(pb::RebuildIndexRequest {
            name: "swap-idx".into(),
            config: Some(pb::HnswConfig {
                m: 8,
                ef_construction: 40,
            }),
            promote: false,
            request_id: "rebuild-1".into(),
        })
        .await
        .expect("rebuild")
        .into_inner();
    let (started, _, finished) = drain(stream, rebuild_msg).await;
    assert_eq!(
        (started.generation, finished.status.expect("s").code),
        (2, 0)
    );
    let generation = finished.generation.expect("generation");
    assert_eq!(
        (generation.active, generation.state),
        (false, pb::GenerationState::Ready as i32)
    );

    // A promoter with a stale view loses, and is told the current one.
    let error = client
        .promote_generation(pb::PromoteGenerationRequest {
            index: "swap-idx".into(),
            generation: 2,
            expected_active_generation: Some(7),
            request_id: String::new(),
        })
        .await
        .expect_err("stale");
    assert_eq!(error.code(), Code::Aborted);
    assert_eq!(
        error_metadata(&error, "active_generation").as_deref(),
        Some("1")
    );
    let promoted = client
        .promote_generation(pb::PromoteGenerationRequest {
            index: "swap-idx".into(),
            generation: 2,
            expected_active_generation: Some(1),
            request_id: "promote-1".into(),
        })
        .await
        .expect("promote")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(promoted.active_generation, 2);
    assert_eq!(promoted.config.expect("config").m, 8);
    // A retried promote with the same id returns the same answer.
    let retried = client
        .promote_generation(pb::PromoteGenerationRequest {
            index: "swap-idx".into(),
            generation: 2,
            expected_active_generation: Some(1),
            request_id: "promote-1".into(),
        })
        .await
        .expect("replayed promote")
        .into_inner();
    assert_eq!(retried.index.expect("index").active_generation, 2);
    // The promote's id sent to RollbackGeneration is a new request (each
    // RPC keys its own ids): it rolls back instead of replaying the promote.
    let rolled = client
        .rollback_generation(pb::RollbackGenerationRequest {
            index: "swap-idx".into(),
            expected_active_generation: Some(2),
            request_id: "promote-1".into(),
        })
        .await
        .expect("rollback")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(rolled.active_generation, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    load_stop.cancel();
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no search failed during the swaps"
    );
    assert!(served.load(Ordering::Relaxed) > 20, "the load really ran");

    // Crash mid-persist: a generation recorded as building, with part of
    // its graph written and no manifest, as a kill -9 would leave it.
    let store = stack.object_store();
    let record_key = object_store::path::Path::from(lakehouse_vector::record_key("swap-idx"));
    let raw = store
        .get(&record_key)
        .await
        .expect("record")
        .bytes()
        .await
        .expect("bytes");
    // Stored sealed ({"crc32c", "body"}); written back unsealed below, as
    // a record from before checksums, which is still read.
    let sealed: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert!(sealed["crc32c"].is_u64(), "the record is sealed: {sealed}");
    let mut record = sealed["body"].clone();
    let mut crashed = record["generations"][0].clone();
    crashed["generation"] = 3.into();
    crashed["state"] = "building".into();
    record["generations"]
        .as_array_mut()
        .expect("array")
        .push(crashed);
    record["next_generation"] = 4.into();
    stack.shutdown().await;
    let stack = start(dir.path()).await;
    let store = stack.object_store();
    store
        .put(
            &record_key,
            PutPayload::from(serde_json::to_vec(&record).expect("encode")),
        )
        .await
        .expect("write record");
    let half = object_store::path::Path::from(format!(
        "{}graph.bin",
        lakehouse_vector::generation_prefix("swap-idx", 3)
    ));
    store
        .put(&half, PutPayload::from(vec![1u8; 1000]))
        .await
        .expect("half graph");
    stack.shutdown().await;

    let stack = start(dir.path()).await;
    let mut client = stack.vector_client();
    let index = client
        .get_index(pb::GetIndexRequest {
            name: "swap-idx".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(
        index.active_generation, 1,
        "the previous generation stays active"
    );
    let generations = client
        .list_generations(pb::ListGenerationsRequest {
            index: "swap-idx".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .generations;
    let third = generations
        .iter()
        .find(|g| g.generation == 3)
        .expect("generation 3 recorded");
    assert_eq!(third.state, pb::GenerationState::Failed as i32);
    assert!(third.error.contains("interrupted"), "{}", third.error);
    assert!(
        store.head(&half).await.is_err(),
        "the half-written graph was removed"
    );
    let hits = search(&mut client, "swap-idx", &data[..DIM], false).await;
    assert_eq!(hits[0], "0");
    stack.shutdown().await;
}
