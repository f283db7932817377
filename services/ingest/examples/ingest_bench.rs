//! The ingest benchmark: a 1,000,000-row mixed-type table (created once,
//! idempotently) through the ingest service into Parquet parts in storage,
//! registered in the catalog; compared in the same run with the server's
//! own binary COPY into nothing (the floor) and with the PyPI peers
//! (connectorx and ADBC reading into Arrow, pyarrow writing the same
//! Parquet), each as a ratio.
//!
//! ```sh
//! LAKEHOUSE_TEST_PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p lakehouse-ingest --example ingest_bench
//! ```
//!
//! Storage (a local-folder bucket), the catalog (SQLite) and the ingest
//! service run in this process on loopback gRPC, as in `lakehouse serve
//! all`; peak RSS is this process's VmHWM, reset just before the ingest, so
//! it covers the ingest and the storage and catalog servers together.

#![allow(unused_crate_dependencies)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use futures::StreamExt as _;
use lakehouse_ingest::{IngestConfig, IngestRuntime};
use lakehouse_proto::ingest::v1 as pb;
use lakehouse_shared::config::ServerConfig;
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::server::GrpcServer;
use sqlx::{Connection as _, Executor as _};
use tokio_util::sync::CancellationToken;

const TABLE: &str = "lakehouse_bench_1m";
const ROWS: i64 = 1_000_000;

#[derive(clap::Parser)]
struct CatalogFlags {
    #[command(flatten)]
    catalog: lakehouse_catalog::CatalogConfig,
}

macro_rules! serve {
    ($service:expr, $stop:expr) => {{
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let config = ServerConfig {
            listen: None,
            request_timeout: Duration::from_secs(3600),
            concurrency_limit: 64,
            max_message_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(1),
        };
        tokio::spawn(
            GrpcServer::new(config)
                .add_service($service)
                .serve(listener, $stop.clone()),
        );
        addr
    }};
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn ensure_table(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    conn.execute(
        format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (
               id bigint PRIMARY KEY, name text, code varchar(32), qty int,
               amount numeric(10,2), active bool, day date, at timestamptz,
               u uuid, tags text[], doc jsonb, score float8, body text)"
        )
        .as_str(),
    )
    .await?;
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {TABLE}"))
        .fetch_one(&mut conn)
        .await?;
    if count != ROWS {
        eprintln!("creating {TABLE} ({ROWS} rows; once)…");
        conn.execute(
            format!(
                "TRUNCATE {TABLE};
                 INSERT INTO {TABLE}
                 SELECT g, 'name ' || g, 'C-' || (g % 9973), (g % 1000)::int,
                        round((g % 100000) / 7.0, 2), g % 3 = 0,
                        DATE '2000-01-01' + (g % 9000)::int,
                        TIMESTAMPTZ '2020-01-01 00:00:00+00' + g * INTERVAL '17 seconds',
                        md5(g::text)::uuid,
                        ARRAY['t' || (g % 10), 'u' || (g % 7), 'v' || (g % 3)],
                        jsonb_build_object('id', g, 'kind', 'k' || (g % 5), 'ok', g % 2 = 0),
                        g / 3.0,
                        substr(repeat(md5(g::text) || md5((g + 1)::text) || md5((g * 7)::text), 7), 1, 200 + (g % 401)::int)
 FROM generate_series(1, {ROWS}) g"
            )
            .as_str(),
        )
        .await?;
        conn.execute(format!("VACUUM ANALYZE {TABLE}").as_str())
            .await?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// The floor: the server's binary COPY of the whole table, into nothing.
async fn copy_floor(url: &str) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw(format!("COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT binary)").as_str())
        .await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    let elapsed = started.elapsed();
    drop(stream);
    let _ = conn.close().await;
    Ok((elapsed, bytes))
}

fn peers(url: &str) -> Vec<(String, Result<f64, String>)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peers.py");
    let output = match std::process::Command::new("python3")
        .args([script, url, TABLE])
        .output()
    {
        Ok(output) => output,
        Err(error) => return vec![("python3".to_owned(), Err(error.to_string()))],
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| {
            let name = v["peer"].as_str().unwrap_or("?").to_owned();
            match v["seconds"].as_f64() {
                Some(seconds) => (name, Ok(seconds)),
                None => (
                    name,
                    Err(v["error"].as_str().unwrap_or("failed").to_owned()),
                ),
            }
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("LAKEHOUSE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    ensure_table(&url).await?;

    let (floor, copy_bytes) = copy_floor(&url).await?;
    let mib = copy_bytes as f64 / (1 << 20) as f64;
    println!("table            {TABLE}: {ROWS} rows, {mib:.0} MiB as binary COPY");
    println!(
        "COPY floor       {:>7.2} s  ({:.0} MiB/s)",
        floor.as_secs_f64(),
        mib / floor.as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let storage = lakehouse_storage::StorageRuntime::start(
        &lakehouse_storage::StorageConfig {
            buckets_config: None,
            journal_flush_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            ..Default::default()
        },
        dir.path(),
        Arc::new(StaticSecrets::default()),
    )
    .await?;
    let storage_addr = serve!(storage.service(16 << 20), stop);
    let catalog = lakehouse_catalog::CatalogRuntime::start(
        &CatalogFlags::parse_from(["bench"]).catalog,
        dir.path(),
        &storage_addr,
    )
    .await?;
    let catalog_addr = serve!(catalog.service(16 << 20), stop);
    let ingest = IngestRuntime::start(
        &IngestConfig::default(),
        Arc::new(StaticSecrets::default()),
        &storage_addr,
        &catalog_addr,
    )
    .await?;
    let ingest_addr = serve!(ingest.service(16 << 20), stop);
    let mut client = lakehouse_client::ingest(lakehouse_client::connect_lazy(&ingest_addr)?);

    let baseline = status_kib("VmRSS:");
    // Reset the peak (VmHWM) so it covers the ingest only.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let mut stream = client
        .ingest_postgres(pb::IngestPostgresRequest {
            dataset: "bench-1m".to_owned(),
            dsn: url.clone(),
            source: Some(pb::ingest_postgres_request::Source::Table(
                pb::TableSource {
                    table: TABLE.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut result = None;
    while let Some(message) = stream.message().await? {
        if let Some(pb::ingest_postgres_response::Event::Finished(done)) = message.event {
            if let Some(status) = done.status.filter(|s| s.code != 0) {
                return Err(format!("ingest failed: {}", status.message).into());
            }
            result = done.ingest;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    let done = result.ok_or("the stream ended without a result")?;
    println!(
        "lakehouse ingest {elapsed:>7.2} s  ({:.0} rows/s, {:.0} MiB/s of COPY data, {:.0} MiB Parquet in {} parts; peak RSS {} MiB, {} MiB over the idle servers)",
        done.rows as f64 / elapsed,
        mib / elapsed,
        done.bytes as f64 / (1 << 20) as f64,
        done.parts,
        peak / 1024,
        peak.saturating_sub(baseline) / 1024,
    );
    println!(
        "  vs COPY floor  {:>6.2}x the floor's time",
        elapsed / floor.as_secs_f64()
    );
    for (peer, outcome) in peers(&url) {
        match outcome {
            Ok(seconds) => println!(
                "{peer:<16} {seconds:>7.2} s  (lakehouse is {:.2}x faster)",
                seconds / elapsed
            ),
            Err(error) => println!("{peer:<16} not measured: {error}"),
        }
    }
    stop.cancel();
    ingest.shutdown().await;
    storage.shutdown().await;
    Ok(())
}
