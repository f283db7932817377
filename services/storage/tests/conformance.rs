//! The object_store crate's own integration suite, run through the gRPC
//! adapter (`GrpcObjectStore`) against a real storage server whose bucket is,
//! in turn, a local folder, memory, and a real S3 HTTP server (moto). One
//! suite, three backends, the whole stack in between.

#![allow(unused_crate_dependencies)]

mod common;

use common::{S3Server, TestServer, local_bucket_toml, s3_bucket_toml};
use object_store::ObjectStore;
use object_store::integration;

async fn suite(store: &dyn ObjectStore) {
    integration::put_get_delete_list(store).await;
    integration::get_opts(store).await;
    integration::put_opts(store, false).await;
    integration::list_uses_directories_correctly(store).await;
    integration::list_with_delimiter(store).await;
    integration::rename_and_copy(store).await;
    integration::copy_if_not_exists(store).await;
    integration::copy_rename_nonexistent_object(store).await;
    integration::stream_get(store).await;
    integration::list_with_offset_exclusivity(store).await;
    integration::multipart_out_of_order(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", dir.path(), None)
    );
    let server = TestServer::start(&toml).await;
    suite(&server.object_store("main")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory_backend() {
    let server =
        TestServer::start("default_bucket = \"mem\"\n[buckets.mem]\nbackend = \"memory\"\n").await;
    suite(&server.object_store("mem")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_s3_backend() {
    let Some(s3) = S3Server::start("conformance_s3_backend") else {
        return;
    };
    s3.create_bucket("conformance");
    let toml = format!(
        "default_bucket = \"lake\"\n{}",
        s3_bucket_toml("lake", &s3.endpoint, "conformance", None)
    );
    let server = TestServer::start(&toml).await;
    suite(&server.object_store("lake")).await;
}
