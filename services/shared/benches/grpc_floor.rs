//! What one unary call costs on this machine, layer by layer.
//!
//! `cargo bench -p lakehouse-shared --bench grpc_floor`
//!
//! The vector benchmark reports a "gRPC overhead" per Search call (gRPC p50
//! minus in-process p50). This program prices the parts of that overhead
//! with the cheapest call there is, `grpc.health.v1.Health/Check`, against a
//! server in a separate process (this same program, re-run as a child):
//!
//! - `bare`: tonic with only the health service, no layers;
//! - `stack`: our [`GrpcServer`] (request id, trace span, auth, panic guard,
//!   timeout, concurrency limit), no log subscriber;
//! - `stack+telemetry`: the same with the subscriber `lakehouse serve`
//!   installs (OpenTelemetry layer + log lines at INFO).
//!
//! Each is called from a client on a multi-thread tokio runtime (two
//! workers, what `#[tokio::main]` gives on this machine) and from a
//! current-thread runtime.
//!
//! Below all of them, a raw TCP ping-pong (blocking std sockets, 3 KiB
//! request, 64-byte reply, like a 768-d Search) with the server busy for 0
//! and 200 µs before it answers: what the kernel and the VM cost with no
//! HTTP/2 or runtime at all. On a VM a client that blocks longer than the
//! host's halt-polling window pays more to wake, so the second figure is
//! the lower bound for a call around ~200 µs of search work. Figures are
//! printed; nothing is asserted.

// The library's dependencies are linked here too; only some are used.
#![allow(unused_crate_dependencies)]

use std::time::{Duration, Instant};

use lakehouse_shared::config::{LogFormat, ServerConfig, TelemetryConfig};
use lakehouse_shared::server::GrpcServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CALLS: usize = 5_000;
const WARMUP: usize = 500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--raw") {
        serve_raw();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--serve") {
        let mode = args.get(2).cloned().unwrap_or_default();
        serve(&mode);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    println!("grpc_floor: Health/Check p50 / p99 µs over {CALLS} calls, server in a child process");
    println!(
        "{:<22} {:>22} {:>22}",
        "server", "client multi-thread", "client current-thread"
    );
    for mode in ["bare", "bare-current-thread", "stack", "stack+telemetry"] {
        let port = free_port();
        let mut child = std::process::Command::new(&exe)
            .args(["--serve", mode, &port.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the server child");
        let addr = format!("http://127.0.0.1:{port}");
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let a = multi.block_on(measure(&addr));
        drop(multi);
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let b = single.block_on(measure(&addr));
        println!(
            "{mode:<22} {:>10.1} / {:>9.1} {:>10.1} / {:>9.1}",
            a.0, a.1, b.0, b.1
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    for work_us in [0, 200] {
        let (p50, beyond) = raw_ping_pong(&exe, work_us);
        println!(
            "raw TCP, server works {work_us:>3} µs: p50 {p50:.1} µs, {beyond:.1} µs beyond the work"
        );
    }
}

const RAW_REQUEST_BYTES: usize = 3072;

/// p50 of a blocking request/reply over loopback TCP against a child that
/// spins `work_us` before it answers, and that p50 minus the work.
fn raw_ping_pong(exe: &std::path::Path, work_us: u64) -> (f64, f64) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut child = std::process::Command::new(exe)
        .args(["--raw", &work_us.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the raw server child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("the child prints its port");
    let port: u16 = line.trim().parse().expect("a port");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let request = vec![7u8; RAW_REQUEST_BYTES];
    let mut reply = [0u8; 64];
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        stream.write_all(&request).expect("send");
        stream.read_exact(&mut reply).expect("reply");
        if i >= WARMUP {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(stream);
    let _ = child.wait();
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    (p50, p50 - work_us as f64)
}

/// The raw server: one connection, a fixed-size request, spin, reply.
fn serve_raw() {
    use std::io::{Read as _, Write as _};
    let work = Duration::from_micros(
        std::env::args()
            .nth(2)
            .and_then(|w| w.parse().ok())
            .expect("work µs"),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("address").port());
    let (mut stream, _) = listener.accept().expect("accept");
    stream.set_nodelay(true).expect("nodelay");
    let mut request = vec![0u8; RAW_REQUEST_BYTES];
    while stream.read_exact(&mut request).is_ok() {
        let started = Instant::now();
        while started.elapsed() < work {
            std::hint::spin_loop();
        }
        if stream.write_all(&[1u8; 64]).is_err() {
            break;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn measure(addr: &str) -> (f64, f64) {
    let channel = loop {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .expect("address")
            .tcp_nodelay(true);
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut client = HealthClient::new(channel);
    let mut times = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let started = Instant::now();
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        if i >= WARMUP {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn serve(mode: &str) {
    let port: u16 = std::env::args()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .expect("port");
    let runtime = if mode.ends_with("current-thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let _guard = if mode == "stack+telemetry" {
        Some(
            lakehouse_shared::telemetry::init(
                &TelemetryConfig {
                    log_filter: "info".into(),
                    log_format: LogFormat::Text,
                    otlp_endpoint: None,
                },
                "grpc_floor",
            )
            .expect("telemetry"),
        )
    } else {
        None
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        if mode.starts_with("bare") {
            let (_reporter, health) = tonic_health::server::health_reporter();
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                .await
                .expect("serve");
        } else {
            let config = ServerConfig {
                listen: None,
                request_timeout: Duration::from_secs(600),
                concurrency_limit: 256,
                max_message_bytes: 16 << 20,
                shutdown_grace: Duration::from_secs(1),
            };
            GrpcServer::new(config)
                .serve(listener, CancellationToken::new())
                .await
                .expect("serve");
        }
    });
}
