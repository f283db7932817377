//! Rescue fallback through real gRPC: a primary that is unreachable (its
//! folder removed, or its S3 endpoint a closed port) is served by its rescue
//! bucket, the response says so, and the failure is journaled; a plain miss
//! on a healthy primary is NOT_FOUND with no fallback.

#![allow(unused_crate_dependencies)]

mod common;

use bytes::Bytes;
use common::{TestServer, free_port, local_bucket_toml, s3_bucket_toml};
use lakehouse_client::RescueUsed;
use lakehouse_proto::storage::v1 as pb;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;

const RESCUE_HEADER: &str = "x-lakehouse-rescue-used";

async fn seed_rescue(server: &TestServer, key: &str, data: &'static [u8]) {
    server
        .object_store("rescue")
        .put(&Path::from(key), Bytes::from_static(data).into())
        .await
        .expect("seed the rescue bucket");
}

async fn journal(server: &TestServer, bucket: &str) -> Vec<pb::ErrorEntry> {
    server
        .client()
        .list_errors(pb::ListErrorsRequest {
            bucket: bucket.to_owned(),
            ..Default::default()
        })
        .await
        .expect("ListErrors")
        .into_inner()
        .errors
}

async fn get_via_grpc(
    server: &TestServer,
    key: &str,
) -> (Option<String>, pb::GetObjectHeader, Vec<u8>) {
    let response = server
        .client()
        .get_object(pb::GetObjectRequest {
            bucket: "main".to_owned(),
            key: key.to_owned(),
            range: None,
        })
        .await
        .expect("GetObject served");
    let rescue = response
        .metadata()
        .get(RESCUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut stream = response.into_inner();
    let mut header = None;
    let mut data = Vec::new();
    while let Some(message) = stream.message().await.expect("stream") {
        match message.part {
            Some(pb::get_object_response::Part::Header(h)) => header = Some(h),
            Some(pb::get_object_response::Part::Chunk(c)) => data.extend_from_slice(&c),
            _ => panic!("unexpected message"),
        }
    }
    (rescue, header.expect("a header"), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_local_primary_is_served_from_rescue_and_journaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = dir.path().join("primary");
    let toml = format!(
        "default_bucket = \"rescue\"\n{}{}",
        local_bucket_toml("main", &primary, Some("rescue")),
        local_bucket_toml("rescue", &dir.path().join("rescue"), None),
    );
    let server = TestServer::start(&toml).await;
    seed_rescue(&server, "docs/a.txt", b"from the rescue bucket").await;

    std::fs::remove_dir_all(&primary).expect("remove the primary folder");

    let (rescue, header, data) = get_via_grpc(&server, "docs/a.txt").await;
    assert_eq!(rescue.as_deref(), Some("rescue"));
    assert_eq!(header.rescue_bucket, "rescue");
    assert_eq!(data, b"from the rescue bucket");

    let head = server
        .client()
        .head_object(pb::HeadObjectRequest {
            bucket: "main".to_owned(),
            key: "docs/a.txt".to_owned(),
        })
        .await
        .expect("HeadObject served");
    assert_eq!(
        head.metadata()
            .get(RESCUE_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("rescue")
    );

    // Through the ObjectStore adapter, the rescue is observable too.
    let store = server.object_store("main");
    let result = store.get(&Path::from("docs/a.txt")).await.expect("get");
    assert_eq!(
        result.extensions.get::<RescueUsed>(),
        Some(&RescueUsed("rescue".to_owned()))
    );
    assert_eq!(
        result.bytes().await.expect("bytes").as_ref(),
        b"from the rescue bucket"
    );
    assert_eq!(store.rescues(), 1);

    let entries = journal(&server, "main").await;
    assert!(
        entries.iter().any(|e| e.operation == "get_object"
            && e.key == "docs/a.txt"
            && e.rescue_bucket == "rescue"),
        "journal: {entries:?}"
    );
    assert!(
        entries.iter().any(|e| e.operation == "head_object"),
        "journal: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_s3_primary_is_served_from_rescue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let toml = format!(
        "default_bucket = \"rescue\"\n{}{}",
        s3_bucket_toml("main", &closed, "lake", Some("rescue")),
        local_bucket_toml("rescue", &dir.path().join("rescue"), None),
    );
    let server = TestServer::start(&toml).await;
    seed_rescue(&server, "part-1.parquet", b"PAR1...PAR1").await;

    let (rescue, _, data) = get_via_grpc(&server, "part-1.parquet").await;
    assert_eq!(rescue.as_deref(), Some("rescue"));
    assert_eq!(data, b"PAR1...PAR1");

    let entries = journal(&server, "main").await;
    let entry = entries
        .iter()
        .find(|e| e.key == "part-1.parquet")
        .expect("the primary failure is journaled");
    assert_eq!(entry.rescue_bucket, "rescue");
    assert_eq!(entry.service, "storage");

    // Health says the primary is down and the rescue is up.
    let health = server
        .client()
        .get_bucket_health(pb::GetBucketHealthRequest::default())
        .await
        .expect("health")
        .into_inner()
        .buckets;
    let by_name = |n: &str| health.iter().find(|h| h.bucket == n).expect(n).clone();
    assert!(!by_name("main").reachable);
    assert!(!by_name("main").error.is_empty());
    assert!(by_name("rescue").reachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_local_folder_is_unavailable_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = dir.path().join("primary");
    let toml = format!(
        "default_bucket = \"journal\"\n{}{}",
        local_bucket_toml("main", &primary, None),
        local_bucket_toml("journal", &dir.path().join("journal"), None),
    );
    let server = TestServer::start(&toml).await;
    std::fs::remove_dir_all(&primary).expect("remove the bucket folder");
    let mut client = server.client();

    let status = client
        .get_object(pb::GetObjectRequest {
            bucket: "main".to_owned(),
            key: "a.txt".to_owned(),
            range: None,
        })
        .await
        .expect_err("no folder, no object");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("ListErrors"),
        "{}",
        status.message()
    );

    let status = client
        .list_objects(pb::ListObjectsRequest {
            bucket: "main".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("an empty listing would be a lie");
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let put = vec![
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                bucket: "main".to_owned(),
                key: "a.txt".to_owned(),
                ..Default::default()
            })),
        },
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Chunk(Bytes::from_static(
                b"x",
            ))),
        },
    ];
    let status = client
        .put_object(futures::stream::iter(put))
        .await
        .expect_err("a write must not recreate a vanished folder");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!primary.exists(), "the folder was recreated");

    let entries = journal(&server, "main").await;
    let operations: Vec<_> = entries.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(
        operations,
        ["get_object", "list_objects", "put_object"],
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_on_a_healthy_primary_does_not_fall_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "default_bucket = \"main\"\n{}{}",
        local_bucket_toml("main", &dir.path().join("primary"), Some("rescue")),
        local_bucket_toml("rescue", &dir.path().join("rescue"), None),
    );
    let server = TestServer::start(&toml).await;
    seed_rescue(&server, "only-in-rescue.txt", b"stale copy").await;

    let status = server
        .client()
        .get_object(pb::GetObjectRequest {
            bucket: "main".to_owned(),
            key: "only-in-rescue.txt".to_owned(),
            range: None,
        })
        .await
        .expect_err("a miss is a miss");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        lakehouse_shared::status::error_reason(&status).as_deref(),
        Some("OBJECT_NOT_FOUND")
    );
    assert!(
        status.message().contains("only-in-rescue.txt"),
        "{}",
        status.message()
    );
    assert!(
        journal(&server, "main").await.is_empty(),
        "a miss is not an operational failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("main");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &root, None)
    );
    let server = TestServer::start(&toml).await;
    let long = "k".repeat(1025);
    for key in ["", "/abs", "a/../b", "nul\0byte", long.as_str()] {
        let messages = vec![
            pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                    key: key.to_owned(),
                    ..Default::default()
                })),
            },
            pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Chunk(Bytes::from_static(
                    b"x",
                ))),
            },
        ];
        let status = server
            .client()
            .put_object(futures::stream::iter(messages))
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{key:?}: {status:?}"
        );
    }
    let status = server
        .client()
        .head_object(pb::HeadObjectRequest {
            bucket: "nope".to_owned(),
            key: "a".to_owned(),
        })
        .await
        .expect_err("unknown bucket");
    assert_eq!(status.code(), tonic::Code::NotFound);
    // Told apart from a missing object by ErrorInfo.
    assert_eq!(
        lakehouse_shared::status::error_reason(&status).as_deref(),
        Some("BUCKET_NOT_FOUND")
    );
    assert_eq!(
        lakehouse_shared::status::error_metadata(&status, "bucket").as_deref(),
        Some("nope")
    );
    assert!(
        status.message().contains("main"),
        "names the known buckets: {}",
        status.message()
    );

    // An upload that ended without its commit writes nothing.
    let messages = vec![
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                key: "half.bin".to_owned(),
                ..Default::default()
            })),
        },
        // 12 MiB: past the single-put limit, so a multipart upload was open.
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Chunk(Bytes::from(
                vec![7u8; 6 << 20],
            ))),
        },
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Chunk(Bytes::from(
                vec![8u8; 6 << 20],
            ))),
        },
    ];
    let status = server
        .client()
        .put_object(futures::stream::iter(messages))
        .await
        .expect_err("no commit");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        lakehouse_shared::status::error_reason(&status).as_deref(),
        Some("UPLOAD_INCOMPLETE")
    );
    // Nothing is left in the folder: not the object, not a staging file.
    let leftovers = lakehouse_shared::testing::files_under(&root);
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
