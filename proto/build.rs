//! Compiles every proto of the API into Rust and writes the descriptor set that
//! server reflection serves. protoc comes from `protoc-bin-vendored`, so a fresh
//! machine builds with cargo alone.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "lakehouse/storage/v1/storage.proto",
    "lakehouse/catalog/v1/catalog.proto",
    "lakehouse/ingest/v1/ingest.proto",
    "lakehouse/vector/v1/vector.proto",
];

/// Google's `google.rpc.Status`, compiled on its own (see below).
const GOOGLE_RPC: &str = "google/rpc/status.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic 0.14 no longer emits these itself; without them an edited proto
    // would not rebuild.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed={GOOGLE_RPC}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // google.rpc first, into `crate::google::rpc`; the lakehouse protos then
    // refer to it by that path (an extern path is never generated itself).
    let mut google = tonic_prost_build::Config::new();
    google.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_with_config(google, &[GOOGLE_RPC], &["."])?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // protoc >= 3.12 accepts proto3 `optional` by default; keep it explicit
    // for older vendored binaries.
    config.protoc_arg("--experimental_allow_proto3_optional");
    // Object data travels as `bytes::Bytes`: chunks pass from the network to
    // the backend (and back) without a copy.
    config.bytes(["."]);
    // Our modules are `crate::<service>::v1`, not `crate::lakehouse::…`, so
    // prost's relative paths to google.rpc would miss: name it absolutely.
    // The descriptor set still carries google/rpc/status.proto (imports are
    // included), so reflection describes the whole API.
    config.extern_path(".google.rpc", "crate::google::rpc");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("lakehouse_descriptor.bin"))
        .emit_rerun_if_changed(false)
        .compile_with_config(config, PROTOS, &["."])?;
    Ok(())
}
