//! A 1M-row, ~470 MB table streams through with bounded memory: the
//! process's peak RSS (VmHWM) grows by far less than the table's size. Its
//! own test binary, so no other test shares the process's memory.

#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use common::{Stack, pg_exec, pg_url, run_ingest, table_request, unique};
use lakehouse_ingest::IngestConfig;
use lakehouse_shared::secrets::StaticSecrets;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect(field)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn million_row_table_streams_with_bounded_memory() {
    let Some(url) = pg_url("million_row_table_streams_with_bounded_memory").await else {
        return;
    };
    let table = unique("million");
    pg_exec(
        &url,
        &format!(
            "CREATE TABLE {table} AS SELECT g::int8 AS id, repeat(md5(g::text), 14) AS payload, g * 1.5 AS amount, now() AS at FROM generate_series(1, 1000000) g"
        ),
    )
    .await;
    let stack = Stack::start(IngestConfig::default(), Arc::new(StaticSecrets::default())).await;
    let dataset = unique("million");
    let before = status_kib("VmRSS:");
    let (progress, result) =
        run_ingest(&mut stack.client(), table_request(&dataset, &url, &table)).await;
    let ingest = result.expect("1M-row ingest");
    let peak = status_kib("VmHWM:");
    assert_eq!(ingest.rows, 1_000_000);
    assert!(!progress.is_empty(), "progress streamed");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "1M rows (~470 MB of source): peak RSS growth {growth_mib} MiB, {} parts, {} bytes",
        ingest.parts, ingest.bytes
    );
    assert!(
        growth_mib < 300,
        "peak RSS grew by {growth_mib} MiB for a ~470 MB table"
    );
    let committed = stack.catalog.dataset(&dataset).expect("committed");
    assert_eq!(
        committed.files.iter().map(|f| f.row_count).sum::<u64>(),
        1_000_000
    );
    stack.shutdown().await;
    pg_exec(&url, &format!("DROP TABLE {table}")).await;
}
