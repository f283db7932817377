//! Storage throughput: streams one large object into and out of a real
//! `lakehouse serve storage` process (local bucket) over gRPC, and the same
//! bytes through `object_store::LocalFileSystem` directly in this process as
//! the baseline, in the same run. Prints MB/s, the ratio to the baseline, and
//! the server's peak RSS (VmHWM), which must not grow with the object size.
//!
//! `cargo bench -p lakehouse --bench storage_throughput`
//! (`LAKEHOUSE_BENCH_BYTES=2147483648` for 2 GiB; default 1 GiB.)

#![allow(unused_crate_dependencies)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use lakehouse_proto::storage::v1 as pb;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, WriteMultipart};

const CHUNK: usize = 1024 * 1024;

fn pattern() -> Bytes {
    // Not all zeros, so no layer can cheat on compressible data.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut data = Vec::with_capacity(CHUNK);
    while data.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(data)
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("LAKEHOUSE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let chunks = total.div_ceil(CHUNK as u64);
    let total = chunks * CHUNK as u64;
    let data = pattern();
    let dir = tempfile::tempdir().expect("tempdir");

    // Baseline: object_store LocalFileSystem, in process.
    let local_root = dir.path().join("baseline");
    std::fs::create_dir_all(&local_root).expect("mkdir");
    let local = object_store::local::LocalFileSystem::new_with_prefix(&local_root).expect("local");
    let path = Path::from("bench/object.bin");
    let started = Instant::now();
    let mut writer = WriteMultipart::new_with_chunk_size(
        local.put_multipart(&path).await.expect("multipart"),
        8 * CHUNK,
    );
    for _ in 0..chunks {
        writer.wait_for_capacity(4).await.expect("capacity");
        writer.put(data.clone());
    }
    writer.finish().await.expect("finish");
    let base_put = started.elapsed();
    let started = Instant::now();
    let mut stream = local.get(&path).await.expect("get").into_stream();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        read += chunk.expect("chunk").len() as u64;
    }
    assert_eq!(read, total);
    let base_get = started.elapsed();
    drop(local);
    std::fs::remove_dir_all(&local_root).expect("cleanup baseline");

    // The service, as a separate process.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_lakehouse"))
        .args(["serve", "storage", "--listen", &addr])
        .env("LAKEHOUSE_DATA_DIR", dir.path().join("service"))
        .env("LAKEHOUSE_SECRETS_FILE", dir.path().join("none.toml"))
        .env("LAKEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lakehouse");
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        match lakehouse_client::connect(&addr).await {
            Ok(channel) => break channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("server did not start: {error}"),
        }
    };
    let mut client = lakehouse_client::storage(channel);
    let rss_idle = vm_hwm_kib(server.id()).unwrap_or(0);

    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            key: "bench/object.bin".to_owned(),
            ..Default::default()
        })),
    };
    let body = futures::stream::iter((0..chunks).map({
        let data = data.clone();
        move |_| pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Chunk(data.clone())),
        }
    }));
    let commit = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Commit(pb::PutObjectCommit {
            size: total,
            crc32c: None,
        })),
    };
    let requests = futures::stream::once(async { header })
        .chain(body)
        .chain(futures::stream::once(async move { commit }));
    let started = Instant::now();
    client.put_object(requests).await.expect("PutObject");
    let grpc_put = started.elapsed();

    let started = Instant::now();
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            key: "bench/object.bin".to_owned(),
            ..Default::default()
        })
        .await
        .expect("GetObject")
        .into_inner();
    let mut read = 0u64;
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::get_object_response::Part::Chunk(chunk)) = message.part {
            read += chunk.len() as u64;
        }
    }
    assert_eq!(read, total);
    let grpc_get = started.elapsed();
    let rss_peak = vm_hwm_kib(server.id()).unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    let size_mib = total / (1 << 20);
    println!("storage throughput, {size_mib} MiB object, local bucket, loopback gRPC");
    println!(
        "  put: gRPC {:>7.0} MB/s ({:.2} s) | direct object_store {:>7.0} MB/s ({:.2} s) | ratio {:.2}",
        mb_per_s(total, grpc_put),
        grpc_put.as_secs_f64(),
        mb_per_s(total, base_put),
        base_put.as_secs_f64(),
        mb_per_s(total, grpc_put) / mb_per_s(total, base_put)
    );
    println!(
        "  get: gRPC {:>7.0} MB/s ({:.2} s) | direct object_store {:>7.0} MB/s ({:.2} s) | ratio {:.2}",
        mb_per_s(total, grpc_get),
        grpc_get.as_secs_f64(),
        mb_per_s(total, base_get),
        base_get.as_secs_f64(),
        mb_per_s(total, grpc_get) / mb_per_s(total, base_get)
    );
    println!(
        "  server peak RSS: {:.1} MiB (idle {:.1} MiB) for a {size_mib} MiB object",
        rss_peak as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
}
