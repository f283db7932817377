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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic 0.14 no longer emits these itself; without them an edited proto
    // would not rebuild.
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // protoc >= 3.12 accepts proto3 `optional` by default; keep it explicit
    // for older vendored binaries.
    config.protoc_arg("--experimental_allow_proto3_optional");
    // Object data travels as `bytes::Bytes`: chunks pass from the network to
    // the backend (and back) without a copy.
    config.bytes(["."]);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("lakehouse_descriptor.bin"))
        .emit_rerun_if_changed(false)
        .compile_with_config(config, PROTOS, &["."])?;
    Ok(())
}
