//! The tuning half through real gRPC on loopback (storage, catalog and
//! vector in one server over a temporary folder): eval sets, RunTrial on
//! the in-memory vectors, the trial journal across a restart and as plain
//! files, BestTrial, searches during trials, and TuneIndex.

// Integration tests see every dependency of the library.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lakehouse_client::VectorClient;
use lakehouse_proto::vector::v1 as pb;
use lakehouse_shared::status::{error_metadata, error_reason, from_rpc_status};
use lakehouse_vector::hnsw::testing::clustered_vectors;
use object_store::ObjectStoreExt as _;
use tonic::Code;

mod common;

use common::{DIM, Stack, VectorStack as _, batch, create, start, start_with};

const ROWS: usize = 3000;

/// A stack with one READY index "docs-idx" over 3000 clustered vectors.
async fn stack_with_index(dir: &Path) -> Stack {
    let stack = start(dir).await;
    let data = clustered_vectors(ROWS, DIM, 10, 11);
    stack
        .dataset(
            "docs",
            &[
                batch(&data[..1500 * DIM], 0),
                batch(&data[1500 * DIM..], 1500),
            ],
        )
        .await;
    let mut stream = stack
        .vector_client()
        .create_index(create("docs-idx", "docs", ""))
        .await
        .expect("create")
        .into_inner();
    while let Some(m) = stream.message().await.expect("stream") {
        if let Some(pb::create_index_response::Event::Finished(f)) = m.event {
            assert_eq!(f.status.expect("status").code, 0, "build");
        }
    }
    stack
}

fn sampled(name: &str, seed: u64, queries: u32) -> pb::CreateEvalSetRequest {
    pb::CreateEvalSetRequest {
        name: name.to_owned(),
        index: "docs-idx".into(),
        query_count: queries,
        k: 10,
        seed,
        ..Default::default()
    }
}

/// A run's messages: started first, trials, finished last (checked).
struct Drained<F> {
    started: pb::TrialRunStarted,
    trials: Vec<pb::Trial>,
    progress: usize,
    finished: F,
}

/// The parts of a run stream's message, whichever RPC it came from.
enum Msg<F> {
    Started(pb::TrialRunStarted),
    Progress,
    Trial(pb::Trial),
    Finished(F),
}

async fn drain<T, F>(mut stream: tonic::Streaming<T>, split: impl Fn(T) -> Msg<F>) -> Drained<F> {
    let (mut started, mut trials, mut progress) = (None, Vec::new(), 0);
    while let Some(m) = stream.message().await.expect("stream") {
        match split(m) {
            Msg::Started(s) => {
                assert!(
                    started.is_none() && trials.is_empty() && progress == 0,
                    "started first"
                );
                started = Some(s);
            }
            Msg::Progress => progress += 1,
            Msg::Trial(t) => trials.push(t),
            Msg::Finished(f) => {
                assert!(
                    stream.message().await.expect("end").is_none(),
                    "finished last"
                );
                return Drained {
                    started: started.expect("started"),
                    trials,
                    progress,
                    finished: f,
                };
            }
        }
    }
    panic!("no finished message");
}

async fn drain_trial(
    stream: tonic::Streaming<pb::RunTrialResponse>,
) -> Drained<pb::RunTrialFinished> {
    use pb::run_trial_response::Event;
    drain(stream, |m| match m.event.expect("event") {
        Event::Started(s) => Msg::Started(s),
        Event::Progress(_) => Msg::Progress,
        Event::Trial(t) => Msg::Trial(t),
        Event::Finished(f) => Msg::Finished(f),
    })
    .await
}

async fn drain_tune(
    stream: tonic::Streaming<pb::TuneIndexResponse>,
) -> Drained<pb::TuneIndexFinished> {
    use pb::tune_index_response::Event;
    drain(stream, |m| match m.event.expect("event") {
        Event::Started(s) => Msg::Started(s),
        Event::Progress(_) => Msg::Progress,
        Event::Trial(t) => Msg::Trial(t),
        Event::Finished(f) => Msg::Finished(f),
    })
    .await
}

fn trial(eval_set: &str, m: u32, efc: u32, ef: &[u32]) -> pb::RunTrialRequest {
    pb::RunTrialRequest {
        index: "docs-idx".into(),
        eval_set: eval_set.to_owned(),
        config: Some(pb::HnswConfig {
            m,
            ef_construction: efc,
        }),
        ef_search: ef.to_vec(),
        ..Default::default()
    }
}

/// Every file under `dir` whose path contains `part`.
fn files_under(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(part) {
                out.push(path);
            }
        }
    }
    out
}

async fn eval_set_rows(stack: &Stack, key: &str) -> Vec<u64> {
    let bytes = stack
        .object_store()
        .get(&object_store::path::Path::from(key))
        .await
        .expect("get eval set")
        .bytes()
        .await
        .expect("bytes");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let column = batch.column_by_name("source_row").expect("source_row");
        let column = column
            .as_any()
            .downcast_ref::<arrow::array::UInt64Array>()
            .expect("uint64");
        rows.extend(column.values().iter().copied());
        let truth = batch.column_by_name("truth_ids").expect("truth_ids");
        assert_eq!(truth.len(), batch.num_rows());
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_sets_trials_journal_and_best_trial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack_with_index(dir.path()).await;
    let mut client = stack.vector_client();

    // Eval sets: the same seed gives the same queries; another seed does not.
    let a = client
        .create_eval_set(sampled("eval-a", 7, 50))
        .await
        .expect("create eval set")
        .into_inner()
        .eval_set
        .expect("eval set");
    assert_eq!((a.query_count, a.k, a.index.as_str()), (50, 10, "docs-idx"));
    assert_eq!(a.source, pb::EvalSetSource::Sampled as i32);
    assert_eq!(a.object_key, "evals/eval-a/queries.parquet");
    client
        .create_eval_set(sampled("eval-b", 7, 50))
        .await
        .expect("same seed");
    client
        .create_eval_set(sampled("eval-c", 8, 50))
        .await
        .expect("other seed");
    let rows_a = eval_set_rows(&stack, "evals/eval-a/queries.parquet").await;
    assert_eq!(rows_a.len(), 50);
    assert_eq!(
        rows_a,
        eval_set_rows(&stack, "evals/eval-b/queries.parquet").await
    );
    assert_ne!(
        rows_a,
        eval_set_rows(&stack, "evals/eval-c/queries.parquet").await
    );
    // A taken name is refused; the same request id replays instead.
    let taken = client
        .create_eval_set(sampled("eval-a", 9, 10))
        .await
        .expect_err("taken");
    assert_eq!(
        (taken.code(), error_reason(&taken).as_deref()),
        (Code::AlreadyExists, Some("EVAL_SET_EXISTS"))
    );
    let mut given = pb::CreateEvalSetRequest {
        name: "eval-given".into(),
        index: "docs-idx".into(),
        k: 5,
        queries: Some(pb::create_eval_set_request::Queries::Given(
            pb::GivenQueries {
                queries: vec![pb::QueryVector {
                    vector: vec![0.5; DIM],
                }],
            },
        )),
        request_id: "eval-req-1".into(),
        ..Default::default()
    };
    let first = client
        .create_eval_set(given.clone())
        .await
        .expect("given")
        .into_inner();
    let again = client
        .create_eval_set(given.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again, "a retry returns the created set");
    given.queries = Some(pb::create_eval_set_request::Queries::Given(
        pb::GivenQueries {
            queries: vec![pb::QueryVector {
                vector: vec![0.5; 3],
            }],
        },
    ));
    given.name = "eval-bad".into();
    given.request_id.clear();
    let bad = client.create_eval_set(given).await.expect_err("wrong dims");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let listed = client
        .list_eval_sets(pb::ListEvalSetsRequest {
            index: "docs-idx".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.eval_sets.len(), 2);
    assert!(!listed.next_page_token.is_empty());

    // A trial with an ef sweep: one build, one trial per ef, all journaled,
    // and no embedding load or generation read for it.
    let misses = stack.vector().service().cache().stats().misses;
    let reads = stack.vector().service().generation_reads();
    let run = drain_trial(
        client
            .run_trial(trial("eval-a", 8, 40, &[10, 40, 120]))
            .await
            .expect("run trial")
            .into_inner(),
    )
    .await;
    let status = run.finished.status.expect("status");
    assert_eq!(status.code, 0, "trial failed: {}", status.message);
    assert_eq!(run.finished.trials.len(), 3);
    assert_eq!(
        run.trials, run.finished.trials,
        "each trial was streamed as measured"
    );
    assert!(run.progress > 0, "progress is reported");
    assert_eq!(
        stack.vector().service().cache().stats().misses,
        misses,
        "no reload"
    );
    assert_eq!(stack.vector().service().generation_reads(), reads);
    let builds: std::collections::BTreeSet<u64> =
        run.trials.iter().map(|t| t.build_duration_ms).collect();
    assert_eq!(builds.len(), 1, "the sweep reuses one build");
    for t in &run.trials {
        assert_eq!(t.run_id, run.started.run_id);
        assert!((0.0..=1.0).contains(&t.recall));
        let l = t.latency.expect("latency");
        assert!(l.p50_us <= l.p95_us && l.p95_us <= l.p99_us);
        assert!(t.queries_per_second > 0.0 && t.memory_bytes > 0);
        assert_eq!(t.vector_count, ROWS as u64);
    }
    assert!(
        run.trials[2].recall >= run.trials[0].recall,
        "more candidates, no less recall"
    );
    assert!(
        run.trials[2].recall > 0.9,
        "ef 120 on 3000 vectors: {}",
        run.trials[2].recall
    );

    // A second trial that keeps its build as an inactive generation.
    let mut keep = trial("eval-a", 16, 100, &[60]);
    keep.keep_generation = true;
    keep.request_id = "trial-req-1".into();
    let kept = drain_trial(
        client
            .run_trial(keep.clone())
            .await
            .expect("keep")
            .into_inner(),
    )
    .await;
    assert_eq!(kept.finished.status.expect("s").code, 0);
    let generation = kept.finished.trials[0].generation;
    assert!(generation > 1, "kept as a new generation");
    let replay = drain_trial(client.run_trial(keep).await.expect("replay").into_inner()).await;
    assert!(replay.started.replayed);
    assert_eq!(replay.started.run_id, kept.started.run_id);
    assert_eq!(
        replay.finished.trials, kept.finished.trials,
        "no second run"
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
    assert_eq!(
        index.active_generation, 1,
        "a trial never changes what searches use"
    );

    // ListTrials: filter, order, page.
    let by_recall = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            order_by: pb::TrialFigure::Recall as i32,
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("list trials")
        .into_inner();
    assert_eq!(by_recall.trials.len(), 3);
    assert!(
        by_recall
            .trials
            .windows(2)
            .all(|w| w[0].recall >= w[1].recall)
    );
    let rest = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            order_by: pb::TrialFigure::Recall as i32,
            page_size: 3,
            page_token: by_recall.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.trials.len(), 1, "4 trials in all");
    assert!(rest.next_page_token.is_empty());
    let m8 = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            m: Some(8),
            ..Default::default()
        })
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(m8.trials.len(), 3);
    let changed = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            m: Some(16),
            page_size: 3,
            page_token: by_recall.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("token of other filters");
    assert_eq!(changed.code(), Code::InvalidArgument);

    // BestTrial: the lowest p50 among those meeting the floor; none meets 1.01.
    let best = client
        .best_trial(pb::BestTrialRequest {
            index: "docs-idx".into(),
            min_recall: 0.5,
            objective: pb::TrialObjective::Recall as i32,
            ..Default::default()
        })
        .await
        .expect("best")
        .into_inner();
    let top = best.trial.expect("trial");
    assert_eq!(best.considered, 4);
    assert_eq!(top.recall, by_recall.trials[0].recall);
    let none = client
        .best_trial(pb::BestTrialRequest {
            index: "docs-idx".into(),
            min_recall: 1.0,
            eval_set: "eval-c".into(),
            ..Default::default()
        })
        .await
        .expect_err("no trials on eval-c");
    assert_eq!(
        (none.code(), error_reason(&none).as_deref()),
        (Code::NotFound, Some("NO_TRIAL_MEETS_RECALL"))
    );
    assert_eq!(error_metadata(&none, "considered").as_deref(), Some("0"));
    let got = client
        .get_trial(pb::GetTrialRequest {
            index: "docs-idx".into(),
            trial_id: top.trial_id.clone(),
        })
        .await
        .expect("get trial")
        .into_inner()
        .trial
        .expect("trial");
    assert_eq!(got, top);

    // The journal survives a restart and is plain NDJSON on disk.
    let before = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .trials;
    stack.shutdown().await;
    let files = files_under(dir.path(), "trials/docs-idx");
    assert!(!files.is_empty(), "journal files on disk");
    let mut on_disk = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for line in text.lines().skip(1) {
            let value: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert!(value["recall"].is_f64() && value["params"]["m"].is_u64());
            on_disk += 1;
        }
    }
    assert_eq!(on_disk, before.len());
    let stack = start(dir.path()).await;
    let after = stack
        .vector_client()
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            ..Default::default()
        })
        .await
        .expect("list after restart")
        .into_inner()
        .trials;
    assert_eq!(after, before);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_never_fail_during_trials_and_tune_reaches_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack_with_index(dir.path()).await;
    let mut client = stack.vector_client();
    client
        .create_eval_set(sampled("eval", 3, 40))
        .await
        .expect("eval set");

    // Searches run the whole time a trial builds and measures.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let searcher = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let mut client: VectorClient = stack.vector_client();
        let query = clustered_vectors(1, DIM, 1, 99);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .search(pb::SearchRequest {
                        index: "docs-idx".into(),
                        vector: query.clone(),
                        k: 10,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let run = drain_trial(
        client
            .run_trial(trial("eval", 24, 200, &[20, 80]))
            .await
            .expect("trial")
            .into_inner(),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    searcher.await.expect("searcher");
    assert_eq!(run.finished.status.expect("s").code, 0);
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no search failed during the trial"
    );

    // CancelTrialRun: unknown ids are NOT_FOUND.
    let unknown = client
        .cancel_trial_run(pb::CancelTrialRunRequest {
            run_id: "trial-nope".into(),
        })
        .await
        .expect_err("unknown run");
    assert_eq!(unknown.code(), Code::NotFound);

    // TuneIndex: four candidates, two full builds, target 0.95.
    let candidates = [(4, 16), (8, 32), (12, 64), (16, 128)]
        .iter()
        .map(|&(m, ef_construction)| pb::HnswConfig { m, ef_construction })
        .collect();
    let tune = drain_tune(
        client
            .tune_index(pb::TuneIndexRequest {
                index: "docs-idx".into(),
                eval_set: "eval".into(),
                candidates,
                min_recall: 0.95,
                max_builds: 2,
                promote: true,
                ..Default::default()
            })
            .await
            .expect("tune")
            .into_inner(),
    )
    .await;
    let status = tune.finished.status.clone().expect("status");
    assert_eq!(status.code, 0, "tune failed: {}", status.message);
    let best = tune.finished.best.clone().expect("best");
    assert!(best.recall >= 0.95, "reaches the target: {}", best.recall);
    assert_eq!(
        best.vector_count, ROWS as u64,
        "the winner is measured on every vector"
    );
    assert_eq!(tune.finished.trial_count as usize, tune.trials.len());
    assert!(
        tune.trials.iter().any(|t| t.vector_count < ROWS as u64),
        "early rungs build on samples"
    );
    let front = &tune.finished.pareto;
    assert!(!front.is_empty());
    let full: Vec<&pb::Trial> = tune
        .trials
        .iter()
        .filter(|t| t.vector_count == ROWS as u64)
        .collect();
    let p50 = |t: &pb::Trial| t.latency.expect("latency").p50_us;
    for a in front {
        assert_eq!(a.vector_count, ROWS as u64);
        let dominated = full.iter().any(|o| {
            o.recall >= a.recall
                && p50(o) <= p50(a)
                && o.build_duration_ms <= a.build_duration_ms
                && o.memory_bytes <= a.memory_bytes
                && (o.recall > a.recall
                    || p50(o) < p50(a)
                    || o.build_duration_ms < a.build_duration_ms
                    || o.memory_bytes < a.memory_bytes)
        });
        assert!(!dominated, "frontier trial {} is dominated", a.trial_id);
    }
    // Promoted: the winner's build is now what searches use.
    let index = client
        .get_index(pb::GetIndexRequest {
            name: "docs-idx".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .index
        .expect("index");
    assert_eq!(index.active_generation, tune.finished.promoted_generation);
    assert_eq!(
        index.config.expect("config").m,
        best.config.expect("config").m
    );
    // Every tune trial is in the journal under its run.
    let journaled = client
        .list_trials(pb::ListTrialsRequest {
            index: "docs-idx".into(),
            run_id: tune.started.run_id.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .trials;
    assert_eq!(journaled.len(), tune.trials.len());

    // An unreachable target: NOT_FOUND with the best recall seen.
    let none = drain_tune(
        client
            .tune_index(pb::TuneIndexRequest {
                index: "docs-idx".into(),
                eval_set: "eval".into(),
                candidates: vec![pb::HnswConfig {
                    m: 2,
                    ef_construction: 2,
                }],
                min_recall: 1.0,
                max_builds: 1,
                ..Default::default()
            })
            .await
            .expect("tune 2")
            .into_inner(),
    )
    .await;
    let status = from_rpc_status(&none.finished.status.expect("status"));
    if status.code() != Code::Ok {
        assert_eq!(
            (status.code(), error_reason(&status).as_deref()),
            (Code::NotFound, Some("NO_TRIAL_MEETS_RECALL"))
        );
        assert!(error_metadata(&status, "best_recall").is_some());
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_refuses_up_front_and_cancel_stops_a_tune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack_with_index(dir.path()).await;
    let mut client = stack.vector_client();
    client
        .create_eval_set(sampled("eval", 1, 20))
        .await
        .expect("eval set");

    // Cancel: a tune over the full built-in grid is stopped right after it
    // starts; it ends CANCELLED, and a second cancel says it had ended.
    let mut stream = client
        .tune_index(pb::TuneIndexRequest {
            index: "docs-idx".into(),
            eval_set: "eval".into(),
            ..Default::default()
        })
        .await
        .expect("tune")
        .into_inner();
    let first = stream.message().await.expect("message").expect("first");
    let Some(pb::tune_index_response::Event::Started(started)) = first.event else {
        panic!("started comes first");
    };
    let cancelled = client
        .cancel_trial_run(pb::CancelTrialRunRequest {
            run_id: started.run_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(cancelled.cancelled, "the grid takes far longer than this");
    let mut finished = None;
    while let Some(m) = stream.message().await.expect("stream") {
        if let Some(pb::tune_index_response::Event::Finished(f)) = m.event {
            finished = Some(f);
        }
    }
    let status = from_rpc_status(&finished.expect("finished").status.expect("status"));
    assert_eq!(status.code(), Code::Cancelled, "{}", status.message());
    let again = client
        .cancel_trial_run(pb::CancelTrialRunRequest {
            run_id: started.run_id,
        })
        .await
        .expect("cancel again")
        .into_inner();
    assert!(!again.cancelled, "idempotent: the run had ended");
    stack.shutdown().await;

    // A budget smaller than any graph: the trial fails before it starts.
    let stack = start_with(
        dir.path(),
        lakehouse_vector::VectorConfig {
            trial_memory_bytes: 1024,
            ..Default::default()
        },
    )
    .await;
    let refused = stack
        .vector_client()
        .run_trial(trial("eval", 16, 80, &[40]))
        .await
        .expect_err("over budget");
    assert_eq!(
        (refused.code(), error_reason(&refused).as_deref()),
        (Code::ResourceExhausted, Some("TRIAL_MEMORY_BUDGET"))
    );
    assert!(refused.message().contains("--vector-trial-memory-bytes"));
    stack.shutdown().await;
}
