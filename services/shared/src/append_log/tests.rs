//! Tests of the whole log: flushes, compactions (and crashes during them),
//! reads by page, and logs written before ordinals or by two writers.

use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use super::read::READ_WHOLE_BYTES;
use super::{AppendLog, CompactStop};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    n: u32,
}

fn log(store: &Arc<dyn ObjectStore>) -> AppendLog<Rec> {
    AppendLog::new(store.clone(), "journal/test")
}

async fn numbers(log: &AppendLog<Rec>) -> Vec<u32> {
    log.read_all()
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.n)
        .collect()
}

#[tokio::test]
async fn flush_writes_new_objects_and_read_merges_in_order() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = log(&store);
    log.append(Rec { n: 1 });
    log.append(Rec { n: 2 });
    let first = log
        .flush()
        .await
        .expect("flush")
        .expect("something flushed");
    assert_eq!(first.records, 2);
    log.append(Rec { n: 3 });
    let second = log
        .flush()
        .await
        .expect("flush")
        .expect("something flushed");
    assert_ne!(first.key, second.key, "each flush is a new object");
    log.append(Rec { n: 4 });
    assert_eq!(numbers(&log).await, vec![1, 2, 3, 4]);
    assert_eq!(log.read_durable().await.expect("read").len(), 3);
    assert!(log.flush().await.expect("flush").is_some());
    assert!(
        log.flush().await.expect("flush").is_none(),
        "empty buffer writes nothing"
    );
    // A fresh log over the same store sees everything that was flushed.
    assert_eq!(
        numbers(&AppendLog::new(store, "journal/test")).await,
        vec![1, 2, 3, 4]
    );
}

#[tokio::test]
async fn compaction_merges_then_deletes() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = log(&store);
    for n in 0..5 {
        log.append(Rec { n });
        log.flush().await.expect("flush");
    }
    let outcome = log.compact().await.expect("compact").expect("compacted");
    assert_eq!(outcome.merged_objects, 5);
    assert_eq!(outcome.records, 5);
    let remaining: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(remaining.len(), 1);
    assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn crash_between_compaction_write_and_delete_duplicates_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = log(&store);
    for n in 0..4 {
        log.append(Rec { n });
        log.flush().await.expect("flush");
    }
    log.compact_until(CompactStop::AfterWrite)
        .await
        .expect("compact")
        .expect("compacted");
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(objects.len(), 5, "parts are still there after the 'crash'");
    assert_eq!(
        numbers(&log).await,
        vec![0, 1, 2, 3],
        "each record exactly once"
    );

    // Writing on, then a second compaction after the crash also
    // yields each record once, and leaves a single object.
    log.append(Rec { n: 4 });
    log.flush().await.expect("flush");
    log.compact_until(CompactStop::AfterWrite)
        .await
        .expect("compact");
    assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
    log.compact().await.expect("compact");
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(objects.len(), 1);
    assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn failed_flush_keeps_records_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("gone");
    std::fs::create_dir(&root).expect("mkdir");
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(&root).expect("local store"),
    );
    let log = log(&store);
    log.append(Rec { n: 1 });
    std::fs::remove_dir(&root).expect("rmdir");
    std::fs::write(&root, b"not a folder").expect("block the path");
    assert!(log.flush().await.is_err());
    log.append(Rec { n: 2 });
    assert_eq!(
        log.buffered().into_iter().map(|r| r.n).collect::<Vec<_>>(),
        vec![1, 2],
        "the failed record stays first"
    );
}

#[tokio::test]
async fn concurrent_appends_and_flushes_lose_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = Arc::new(log(&store));
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                log.append(Rec { n: t * 1000 + i });
                if i % 7 == 0 {
                    log.flush().await.expect("flush");
                }
                if i % 20 == 0 {
                    log.compact().await.expect("compact");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    log.flush().await.expect("flush");
    let mut seen = numbers(&log).await;
    seen.sort_unstable();
    let mut expected: Vec<u32> = (0..8)
        .flat_map(|t| (0..50).map(move |i| t * 1000 + i))
        .collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
}
async fn page_numbers(log: &AppendLog<Rec>, size: usize, keep: fn(&Rec) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = log.read_page(from, size, keep).await.expect("page");
        assert!(
            !page.records.is_empty() || out.is_empty(),
            "no empty page after the first"
        );
        out.extend(page.records.iter().map(|r| r.n));
        match page.next {
            Some(next) => from = next,
            None => return out,
        }
    }
}

#[tokio::test]
async fn pages_walk_parts_merged_objects_and_the_buffer_in_order() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = log(&store);
    for n in 0..10 {
        log.append(Rec { n });
    }
    log.flush().await.expect("flush");
    for n in 10..25 {
        log.append(Rec { n });
        if n % 4 == 0 {
            log.flush().await.expect("flush");
        }
    }
    let all: Vec<u32> = (0..25).collect();
    assert_eq!(page_numbers(&log, 3, |_| true).await, all);
    let even: Vec<u32> = (0..25).filter(|n| n % 2 == 0).collect();
    assert_eq!(page_numbers(&log, 4, |r| r.n % 2 == 0).await, even);

    // A position taken before a compaction and a flush still means the
    // same record afterwards.
    let first = log.read_page(0, 7, |_| true).await.expect("page");
    let next = first.next.expect("more");
    log.compact().await.expect("compact");
    log.flush().await.expect("flush");
    let second = log.read_page(next, 100, |_| true).await.expect("page");
    assert_eq!(
        second.records.iter().map(|r| r.n).collect::<Vec<_>>(),
        (7..25).collect::<Vec<_>>()
    );
    assert_eq!(second.next, None);
    assert_eq!(
        log.read_page(0, 5, |r| r.n > 100)
            .await
            .expect("page")
            .records,
        vec![],
        "nothing kept: one empty page"
    );
}

#[tokio::test]
async fn a_large_merged_object_is_read_through_its_index() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let log = log(&store);
    for chunk in 0..4u32 {
        for n in 0..10_000 {
            log.append(Rec {
                n: chunk * 10_000 + n,
            });
        }
        log.flush().await.expect("flush");
    }
    log.compact().await.expect("compact");
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(objects.len(), 1);
    assert!(objects[0].size > READ_WHOLE_BYTES, "large enough to index");
    let page = log.read_page(12_345, 10, |_| true).await.expect("page");
    assert_eq!(
        page.records.iter().map(|r| r.n).collect::<Vec<_>>(),
        (12_345..12_355).collect::<Vec<_>>()
    );
    assert_eq!(page.next, Some(12_355));
    // Across a stride boundary, with a filter.
    let page = log
        .read_page(255, 3, |r| r.n % 100 == 0)
        .await
        .expect("page");
    assert_eq!(
        page.records.iter().map(|r| r.n).collect::<Vec<_>>(),
        vec![300, 400, 500]
    );
    assert_eq!(page.next, Some(600));
}

#[tokio::test]
async fn logs_written_before_ordinals_read_and_page_the_same() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // Two objects in the old layout: no range in the name, v1 header.
    for (name, numbers) in [
        ("00000000000000000001-aaaaaaaaaaaa.part.ndjson", [0, 1]),
        ("00000000000000000002-bbbbbbbbbbbb.part.ndjson", [2, 3]),
    ] {
        let mut body = b"{\"v\":1}\n".to_vec();
        for n in numbers {
            body.extend(format!("{{\"n\":{n}}}\n").as_bytes());
        }
        store
            .put(&Path::from(format!("journal/test/{name}")), body.into())
            .await
            .expect("put");
    }
    let log = log(&store);
    log.append(Rec { n: 4 });
    log.flush().await.expect("flush");
    log.append(Rec { n: 5 });
    assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        page_numbers(&log, 4, |_| true).await,
        vec![0, 1, 2, 3, 4, 5]
    );
    // A crash after the compaction's write: the old objects are still
    // there, and nothing is doubled.
    log.compact_until(CompactStop::AfterWrite)
        .await
        .expect("compact");
    assert_eq!(numbers(&log).await, vec![0, 1, 2, 3, 4, 5]);
    log.compact().await.expect("compact");
    assert_eq!(
        page_numbers(&log, 2, |_| true).await,
        vec![0, 1, 2, 3, 4, 5]
    );
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(objects.len(), 1);
}

#[tokio::test]
async fn two_writers_on_one_log_lose_nothing() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (a, b) = (log(&store), log(&store));
    a.append(Rec { n: 1 });
    a.flush().await.expect("flush");
    b.append(Rec { n: 2 });
    b.flush().await.expect("flush");
    // Each believed it wrote ordinal 0 or 1; the ranges do not tile, so
    // the read falls back to name order and keeps both.
    let mut seen = page_numbers(&a, 10, |_| true).await;
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2]);
}
