//! ResyncDataset over 1,000 Parquet parts of about 1 MB each, through gRPC.
//!
//! Starts an in-process storage server (one local bucket in a temporary
//! folder, its store counting the bytes it serves) and an in-process catalog
//! server on loopback, writes the parts through storage, registers an empty
//! dataset, then times ResyncDataset: once applying (1,000 files added),
//! then dry runs. Prints files/s and bytes read vs bytes stored.
//!
//! Run: `cargo bench -p lakehouse-catalog --bench resync`
//! (LAKEHOUSE_BENCH_FILES and LAKEHOUSE_BENCH_ROWS change the shape).

#![allow(unused_crate_dependencies)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use futures::StreamExt as _;
use lakehouse_proto::catalog::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let files = env_or("LAKEHOUSE_BENCH_FILES", 1000);
    // 65,000 rows of two 8-byte columns, plain encoding: about 1 MB.
    let rows = env_or("LAKEHOUSE_BENCH_ROWS", 65_000);
    let stack = common::Stack::start().await;
    let store = stack.object_store();

    let started = Instant::now();
    let stored: u64 = futures::stream::iter(0..files)
        .map(|i| {
            let store = store.clone();
            async move {
                let batch = common::batch(rows, (i * rows) as i64, false);
                let bytes = common::parquet_bytes(&batch);
                let size = bytes.len() as u64;
                let key = format!("datasets/bench/ing-{}/part-{:05}.parquet", i / 100, i);
                store
                    .put(&Path::from(key), PutPayload::from(bytes))
                    .await
                    .expect("put part");
                size
            }
        })
        .buffer_unordered(4)
        .fold(0, |sum, size| async move { sum + size })
        .await;
    println!(
        "setup: wrote {files} parts, {stored} bytes ({:.2} MB/part) through storage in {:.1?}",
        stored as f64 / files as f64 / 1e6,
        started.elapsed()
    );

    let mut catalog = stack.catalog();
    catalog
        .create_dataset(pb::CreateDatasetRequest {
            name: "bench".to_owned(),
            ..Default::default()
        })
        .await
        .expect("create dataset");

    for (run, dry_run) in [(1, false), (2, true), (3, true), (4, true)] {
        let served_before = stack.served();
        let started = Instant::now();
        let report = catalog
            .resync_dataset(pb::ResyncDatasetRequest {
                name: "bench".to_owned(),
                dry_run,
                allow_row_loss: false,
            })
            .await
            .expect("resync")
            .into_inner()
            .report
            .expect("report");
        let elapsed = started.elapsed();
        let served = stack.served() - served_before;
        println!(
            "run {run} ({}): {files} files in {:.3?} = {:.0} files/s; changes {}, problems {}; \
             storage served {served} bytes of {stored} stored ({:.4}%), report bytes_read {}",
            if dry_run { "dry run" } else { "apply" },
            elapsed,
            files as f64 / elapsed.as_secs_f64(),
            report.file_changes.len(),
            report.problems.len(),
            served as f64 * 100.0 / stored as f64,
            report.bytes_read,
        );
    }
    stack.shutdown().await;
}
