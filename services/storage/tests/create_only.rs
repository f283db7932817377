//! Uploads are safe by default (issue 11, item 5), over real gRPC: a stream
//! that ends without its commit, or whose commit's CRC32C disagrees with the
//! bytes, writes nothing unless the header opts out; `create_only` holds for
//! uploads larger than one single put: an existing key is refused and left
//! unchanged, and of two racing large uploads to a new key exactly one wins.
//! And a PutObject answer agrees with a HeadObject after it.

#![allow(unused_crate_dependencies)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, local_bucket_toml};
use futures::channel::mpsc;
use lakehouse_proto::storage::v1 as pb;
use lakehouse_proto::storage::v1::put_object_request::Part;
use lakehouse_shared::status::error_reason;

/// More than the 8 MiB a single put takes, so the upload is multipart.
const LARGE: usize = 9 * 1024 * 1024 + 17;
const CHUNK: usize = 1024 * 1024;

fn header(key: &str) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(Part::Header(pb::PutObjectHeader {
            bucket: String::new(),
            key: key.to_owned(),
            create_only: true,
            ..Default::default()
        })),
    }
}

fn chunks(fill: u8) -> Vec<pb::PutObjectRequest> {
    let data = Bytes::from(vec![fill; LARGE]);
    (0..LARGE)
        .step_by(CHUNK)
        .map(|start| pb::PutObjectRequest {
            part: Some(Part::Chunk(data.slice(start..(start + CHUNK).min(LARGE)))),
        })
        .collect()
}

fn commit() -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(Part::Commit(pb::PutObjectCommit {
            size: LARGE as u64,
            crc32c: None,
        })),
    }
}

async fn read(server: &TestServer, key: &str) -> Vec<u8> {
    use futures::StreamExt as _;
    let mut stream = server
        .client()
        .get_object(pb::GetObjectRequest {
            bucket: String::new(),
            key: key.to_owned(),
            range: None,
        })
        .await
        .expect("GetObject")
        .into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.next().await {
        if let Some(pb::get_object_response::Part::Chunk(bytes)) = message.expect("chunk").part {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    (TestServer::start(&toml).await, dir)
}

#[tokio::test]
async fn a_large_create_only_upload_never_replaces_an_existing_object() {
    let (server, _dir) = server().await;
    let key = "datasets/x/part-0.parquet";
    let mut first = vec![header(key)];
    first.extend(chunks(b'a'));
    first.push(commit());
    server
        .client()
        .put_object(futures::stream::iter(first))
        .await
        .expect("first large create_only upload");

    let mut second = vec![header(key)];
    second.extend(chunks(b'b'));
    second.push(commit());
    let status = server
        .client()
        .put_object(futures::stream::iter(second))
        .await
        .expect_err("the key exists");
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("OBJECT_EXISTS"));
    let data = read(&server, key).await;
    assert_eq!(data.len(), LARGE);
    assert!(data.iter().all(|b| *b == b'a'), "the first upload's bytes");
}

#[tokio::test]
async fn of_two_racing_large_create_only_uploads_exactly_one_wins() {
    let (server, dir) = server().await;
    let key = "datasets/x/part-1.parquet";
    // Both uploads send all their data (so both pass any up-front existence
    // check), then both commit.
    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for fill in [b'a', b'b'] {
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(header(key)).expect("send");
        for chunk in chunks(fill) {
            tx.unbounded_send(chunk).expect("send");
        }
        let mut client = server.client();
        calls.push(tokio::spawn(async move { client.put_object(rx).await }));
        senders.push(tx);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for tx in senders {
        tx.unbounded_send(commit()).expect("send");
        tx.close_channel();
    }
    let mut won = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.expect("join") {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((won, refused), (1, 1));
    let data = read(&server, key).await;
    assert_eq!(data.len(), LARGE);
    assert!(
        data.iter().all(|b| *b == data[0]),
        "one upload's bytes, whole"
    );
    // The loser's staged copy is gone.
    let staged = dir.path().join("main").join("_lakehouse").join("uploads");
    let left = std::fs::read_dir(&staged).map_or(0, |d| d.count());
    assert_eq!(left, 0, "staged uploads left in {}", staged.display());
}

#[tokio::test]
async fn an_upload_without_its_commit_or_with_a_wrong_checksum_writes_nothing() {
    let (server, _dir) = server().await;
    let data = Bytes::from_static(b"id,name\n1,a\n2,b\n3,");
    let plain_header = |key: &str, allow_uncommitted: bool| pb::PutObjectRequest {
        part: Some(Part::Header(pb::PutObjectHeader {
            key: key.to_owned(),
            allow_uncommitted,
            ..Default::default()
        })),
    };
    let chunk = pb::PutObjectRequest {
        part: Some(Part::Chunk(data.clone())),
    };
    let commit_with = |crc32c: Option<u32>| pb::PutObjectRequest {
        part: Some(Part::Commit(pb::PutObjectCommit {
            size: data.len() as u64,
            crc32c,
        })),
    };
    let exists = |key: &'static str| {
        let mut client = server.client();
        async move {
            client
                .head_object(pb::HeadObjectRequest {
                    bucket: String::new(),
                    key: key.to_owned(),
                })
                .await
                .is_ok()
        }
    };

    // A stream that just ends (a client that died mid-upload) by default.
    let status = server
        .client()
        .put_object(futures::stream::iter(vec![
            plain_header("t/ended.csv", false),
            chunk.clone(),
        ]))
        .await
        .expect_err("no commit");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("UPLOAD_INCOMPLETE"));
    assert!(status.message().contains("allow_uncommitted"), "{status:?}");
    assert!(!exists("t/ended.csv").await, "nothing written");

    // A commit whose checksum is not the bytes'.
    let good = crc32c::crc32c(&data);
    let status = server
        .client()
        .put_object(futures::stream::iter(vec![
            plain_header("t/corrupt.csv", false),
            chunk.clone(),
            commit_with(Some(good ^ 1)),
        ]))
        .await
        .expect_err("wrong crc");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("UPLOAD_CORRUPT"));
    assert!(!exists("t/corrupt.csv").await, "nothing written");

    // The right checksum, and the explicit opt-out, both write.
    server
        .client()
        .put_object(futures::stream::iter(vec![
            plain_header("t/good.csv", false),
            chunk.clone(),
            commit_with(Some(good)),
        ]))
        .await
        .expect("committed upload");
    assert_eq!(read(&server, "t/good.csv").await, data.to_vec());
    server
        .client()
        .put_object(futures::stream::iter(vec![
            plain_header("t/typed.csv", true),
            chunk,
        ]))
        .await
        .expect("opted out of the commit");
    assert_eq!(read(&server, "t/typed.csv").await, data.to_vec());
}

/// Leftovers of uploads that died (issue 11, item 6): a local `#n` temp
/// file and a staged multipart upload, once unwritten for the grace period,
/// are removed and journaled; fresh ones (an upload in progress) and real
/// objects stay.
#[tokio::test]
async fn leftovers_of_interrupted_uploads_are_swept_after_the_grace_period() {
    let (server, dir) = server().await;
    let root = dir.path().join("main");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let write = |relative: &str, age: Option<std::time::SystemTime>| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, b"half written").expect("write");
        if let Some(time) = age {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open")
                .set_modified(time)
                .expect("set mtime");
        }
    };
    write(
        "datasets/x/20261126T000000Z-abcdef123456/part-00001.parquet#3",
        Some(hour_ago),
    );
    write(
        "_lakehouse/uploads/00000000000000000001-42-0",
        Some(hour_ago),
    );
    write("datasets/x/part-00002.parquet#7", None);
    write("datasets/x/real#7.parquet", Some(hour_ago));

    // Within the grace period nothing is taken.
    assert_eq!(
        server
            .storage
            .sweep_leftovers(Duration::from_secs(7200))
            .await,
        vec![]
    );

    let mut removed: Vec<String> = server
        .storage
        .sweep_leftovers(Duration::from_secs(600))
        .await
        .into_iter()
        .map(|l| {
            assert_eq!(l.bucket, "main");
            assert_eq!(l.size_bytes, 12);
            l.key
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            "_lakehouse/uploads/00000000000000000001-42-0",
            "datasets/x/20261126T000000Z-abcdef123456/part-00001.parquet#3",
        ]
    );
    assert!(
        root.join("datasets/x/part-00002.parquet#7").exists(),
        "fresh: in progress"
    );
    assert!(
        root.join("datasets/x/real#7.parquet").exists(),
        "not a temp file"
    );
    assert!(
        !root
            .join("_lakehouse/uploads/00000000000000000001-42-0")
            .exists()
    );

    // Journaled, findable through ListErrors.
    let journal = server
        .client()
        .list_errors(pb::ListErrorsRequest {
            service: "storage".to_owned(),
            ..Default::default()
        })
        .await
        .expect("ListErrors")
        .into_inner();
    let swept: Vec<&str> = journal
        .errors
        .iter()
        .filter(|e| e.operation == "sweep_leftovers")
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(swept.len(), 2, "{swept:?}");
}

/// PutObject answers with what the backend recorded, so a HeadObject right
/// after reports the same time and ETag, for a single put and a multipart
/// one.
#[tokio::test]
async fn put_object_answers_what_head_object_reports() {
    let (server, _dir) = server().await;
    let small = vec![
        pb::PutObjectRequest {
            part: Some(Part::Header(pb::PutObjectHeader {
                key: "t/small.csv".to_owned(),
                ..Default::default()
            })),
        },
        pb::PutObjectRequest {
            part: Some(Part::Chunk(Bytes::from_static(b"id\n1\n"))),
        },
        pb::PutObjectRequest {
            part: Some(Part::Commit(pb::PutObjectCommit {
                size: 5,
                crc32c: None,
            })),
        },
    ];
    let mut large = vec![header("t/large.bin")];
    large.extend(chunks(b'z'));
    large.push(commit());
    for (key, requests) in [("t/small.csv", small), ("t/large.bin", large)] {
        let put = server
            .client()
            .put_object(futures::stream::iter(requests))
            .await
            .expect("put")
            .into_inner()
            .object
            .expect("the written object");
        let head = server
            .client()
            .head_object(pb::HeadObjectRequest {
                bucket: String::new(),
                key: key.to_owned(),
            })
            .await
            .expect("head")
            .into_inner()
            .object
            .expect("the object");
        assert_eq!(put.last_modified, head.last_modified, "{key}: time");
        assert_eq!(put.etag, head.etag, "{key}: etag");
        assert_eq!(put.size, head.size, "{key}: size");
        assert!(!put.etag.is_empty(), "{key}: a local object has an ETag");
    }
}

#[tokio::test]
async fn temp_files_a_dead_process_left_go_at_start_without_waiting_for_the_grace() {
    let (server, dir) = server().await;
    let root = dir.path().join("main");
    let write = |relative: &str| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, b"half written").expect("write");
    };
    // A killed vector build's graph, and a staged upload another storage
    // process could still own.
    write("indexes/i/gen-3/graph.bin#1");
    write("_lakehouse/uploads/00000000000000000001-42-0");
    std::thread::sleep(Duration::from_millis(30));
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(30));
    // An upload of this process, in progress.
    write("indexes/i/gen-4/graph.bin#2");

    let removed: Vec<String> = server
        .storage
        .sweep_dead_temp_files(started)
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(removed, ["indexes/i/gen-3/graph.bin#1"]);
    assert!(!root.join("indexes/i/gen-3/graph.bin#1").exists());
    assert!(root.join("indexes/i/gen-4/graph.bin#2").exists());
    assert!(
        root.join("_lakehouse/uploads/00000000000000000001-42-0")
            .exists()
    );
}
