//! The reserved `_lakehouse/` prefix through real gRPC (issue 11, item 9):
//! clients cannot write or delete the error journal, append logs or the
//! audit journal with PutObject / DeleteObject, while the services' own
//! writers keep working — the error journal in-process, and the audit
//! journal of another process through `GrpcObjectStore` with the service
//! token.

#![allow(unused_crate_dependencies)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{TestServer, local_bucket_toml};
use lakehouse_client::{GrpcObjectStore, StorageClient};
use lakehouse_proto::storage::v1 as pb;
use lakehouse_shared::auth::audit::{self, AuditJournal, AuditRecord};
use lakehouse_shared::auth::{AuthPolicy, Tokens};
use lakehouse_shared::secrets::StaticSecrets;
use lakehouse_shared::status::{error_metadata, error_reason};

const SERVICE: &str = "service-token-value-0123456789";
const OWNER: &str = "owner-token-value-0123456789ab";

fn put_messages(key: &str, data: &'static [u8]) -> Vec<pb::PutObjectRequest> {
    use pb::put_object_request::Part;
    vec![
        pb::PutObjectRequest {
            part: Some(Part::Header(pb::PutObjectHeader {
                bucket: String::new(),
                key: key.to_owned(),
                ..Default::default()
            })),
        },
        pb::PutObjectRequest {
            part: Some(Part::Chunk(Bytes::from_static(data))),
        },
        pb::PutObjectRequest {
            part: Some(Part::Commit(pb::PutObjectCommit {
                size: data.len() as u64,
                crc32c: None,
            })),
        },
    ]
}

async fn put(
    client: &mut StorageClient,
    key: &str,
    data: &'static [u8],
) -> Result<pb::PutObjectResponse, tonic::Status> {
    client
        .put_object(futures::stream::iter(put_messages(key, data)))
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(client: &mut StorageClient, key: &str) -> Result<(), tonic::Status> {
    client
        .delete_object(pb::DeleteObjectRequest {
            bucket: String::new(),
            key: key.to_owned(),
        })
        .await
        .map(|_| ())
}

fn assert_reserved(status: &tonic::Status, key: &str) {
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(error_reason(status).as_deref(), Some("RESERVED_KEY"));
    assert_eq!(error_metadata(status, "key").as_deref(), Some(key));
    assert!(
        status.message().contains("reserved prefix `_lakehouse/`")
            && status.message().contains("error journal"),
        "the message says why: {}",
        status.message()
    );
}

async fn journal_keys(client: &mut StorageClient) -> Vec<String> {
    client
        .list_objects(pb::ListObjectsRequest {
            prefix: "_lakehouse/errors/".to_owned(),
            ..Default::default()
        })
        .await
        .expect("ListObjects under the reserved prefix stays open")
        .into_inner()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn clients_cannot_write_or_delete_under_the_reserved_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    let server = TestServer::start(&toml).await;
    let mut client = server.client();

    // The storage service's own journal writes (in-process) still work.
    client
        .report_error(pb::ReportErrorRequest {
            service: "ingest".to_owned(),
            operation: "commit".to_owned(),
            message: "catalog did not confirm".to_owned(),
            bucket: "main".to_owned(),
            key: String::new(),
        })
        .await
        .expect("ReportError");
    let flushed = client
        .flush_errors(pb::FlushErrorsRequest {})
        .await
        .expect("FlushErrors")
        .into_inner();
    assert!(flushed.object_key.starts_with("_lakehouse/errors/"));
    assert_eq!(
        journal_keys(&mut client).await,
        std::slice::from_ref(&flushed.object_key)
    );

    // Overwriting, forging or deleting journal objects is refused.
    for key in [
        flushed.object_key.as_str(),
        "_lakehouse/errors/99999999999999999999-forged.part.ndjson",
        "_lakehouse/audit/all/x.part.ndjson",
        "_LAKEHOUSE/errors/case-alias",
        "_lakehouse",
    ] {
        let status = put(&mut client, key, b"{\"v\":1}\n")
            .await
            .expect_err("PutObject under _lakehouse/");
        assert_reserved(&status, key);
    }
    let status = delete(&mut client, &flushed.object_key)
        .await
        .expect_err("DeleteObject under _lakehouse/");
    assert_reserved(&status, &flushed.object_key);

    // Nothing changed: the journal object is there and still lists.
    assert_eq!(journal_keys(&mut client).await, [flushed.object_key]);
    let errors = client
        .list_errors(pb::ListErrorsRequest::default())
        .await
        .expect("ListErrors")
        .into_inner()
        .errors;
    assert_eq!(errors.len(), 1, "{errors:?}");

    // Ordinary keys, and keys that merely contain the word, are writable.
    for key in ["datasets/_lakehouse/x", "lakehouse/x", "_lakehouse2/x"] {
        put(&mut client, key, b"data").await.expect(key);
        delete(&mut client, key).await.expect(key);
    }
}

fn policy() -> AuthPolicy {
    let secrets = StaticSecrets::default()
        .with("token.service", &format!("admin:{SERVICE}"))
        .with("token.owner", &format!("admin:{OWNER}"));
    AuthPolicy {
        tokens: Arc::new(Tokens::from_secrets(&secrets).expect("tokens")),
        reflection_requires_token: false,
        audit: None,
    }
}

#[tokio::test]
async fn the_service_token_keeps_the_audit_journal_writable_over_grpc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "default_bucket = \"main\"\n{}",
        local_bucket_toml("main", &dir.path().join("main"), None)
    );
    let server = TestServer::start_with(&toml, Some(policy())).await;

    // An admin token that is not the service token is refused like anyone.
    let mut owner = server.client_with(OWNER);
    let key = "_lakehouse/audit/ingest/forged.part.ndjson";
    assert_reserved(
        &put(&mut owner, key, b"{\"v\":1}\n")
            .await
            .expect_err("owner may not write"),
        key,
    );

    // The audit journal of a process that is not the storage service
    // flushes through GrpcObjectStore (PutObject) with the service token,
    // as `lakehouse serve ingest` does.
    let store = Arc::new(GrpcObjectStore::new(server.client_with(SERVICE), ""));
    let journal = AuditJournal::new(store.clone(), "ingest");
    journal.record(AuditRecord {
        time: chrono::Utc::now(),
        role: String::new(),
        token: "owner".to_owned(),
        method: "/lakehouse.ingest.v1.IngestService/IngestFile".to_owned(),
        scope: "write".to_owned(),
        target: "dataset=x".to_owned(),
        decision: "allowed".to_owned(),
        request_id: String::new(),
    });
    let outcome = journal
        .flush()
        .await
        .expect("audit flush through PutObject with the service token")
        .expect("one object written");
    assert!(outcome.key.starts_with("_lakehouse/audit/ingest/"));
    let records = audit::read(store, "ingest").await.expect("read back");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target, "dataset=x");

    // The owner can read it but not delete it; the service token can.
    let mut service = server.client_with(SERVICE);
    assert_reserved(
        &delete(&mut owner, &outcome.key)
            .await
            .expect_err("owner may not delete"),
        &outcome.key,
    );
    delete(&mut service, &outcome.key)
        .await
        .expect("the service token may delete (append-log compaction)");
}
