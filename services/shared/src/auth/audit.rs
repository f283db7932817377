//! The audit journal: every write, trials and admin call is recorded with
//! the token's name (never its value), the RPC, the target (the names and
//! keys in the request) and the decision, on the shared append log under
//! [`AUDIT_PREFIX`]`/<role>` in storage's default bucket. Each process keeps
//! its own prefix, so processes never compact each other's objects.
//!
//! Calls made with the service token are not recorded: they are the
//! services' own traffic on behalf of a call already recorded where it came
//! in (an ingest's part uploads and commit), and recording them would record
//! the journal's own writes, forever.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use prost_types::field_descriptor_proto::Type;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::append_log::{AppendLog, FlushOutcome};

/// Where audit objects live in storage's default bucket.
pub const AUDIT_PREFIX: &str = "_lakehouse/audit";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the call arrived.
    pub time: DateTime<Utc>,
    /// The role of the process that served it (`all`, `ingest`, ...).
    pub role: String,
    /// The token's name.
    pub token: String,
    /// The full method path.
    pub method: String,
    /// The scope the method needs.
    pub scope: String,
    /// What the call names: `key=value` pairs of the request's names, keys,
    /// buckets and ids (never DSNs, queries or data).
    #[serde(default)]
    pub target: String,
    /// `allowed`, or `denied` (the token lacked the scope).
    pub decision: String,
    /// The call's `x-request-id`.
    #[serde(default)]
    pub request_id: String,
}

/// The journal of one process.
#[derive(Debug, Clone)]
pub struct AuditJournal {
    log: Arc<AppendLog<AuditRecord>>,
    role: Arc<str>,
}

impl AuditJournal {
    /// A journal for `role` in `store` (storage's default bucket).
    pub fn new(store: Arc<dyn ObjectStore>, role: &str) -> Self {
        Self {
            log: Arc::new(AppendLog::new(store, prefix(role))),
            role: role.into(),
        }
    }

    /// Buffers a record; durable after the next flush.
    pub fn record(&self, mut record: AuditRecord) {
        record.role = self.role.to_string();
        self.log.append(record);
    }

    /// Writes buffered records out.
    pub async fn flush(&self) -> Result<Option<FlushOutcome>> {
        self.log.flush().await
    }

    /// Every record of this journal, durable and buffered.
    pub async fn read_all(&self) -> Result<Vec<AuditRecord>> {
        self.log.read_all().await
    }
}

/// The prefix of `role`'s journal.
pub fn prefix(role: &str) -> String {
    format!("{AUDIT_PREFIX}/{role}")
}

/// Every durable record of `role`'s journal in `store`, oldest first (for
/// `lakehouse audit`, which reads journals it did not write).
pub async fn read(store: Arc<dyn ObjectStore>, role: &str) -> Result<Vec<AuditRecord>> {
    AppendLog::<AuditRecord>::new(store, prefix(role))
        .read_durable()
        .await
}

/// Flushes every `interval` until `stop`, then once more.
pub async fn flush_periodically(
    journal: AuditJournal,
    interval: Duration,
    stop: CancellationToken,
) {
    let journal = &journal;
    crate::periodic::every(interval, &stop, None, || async move {
        if let Err(error) = journal.flush().await {
            // The records stay buffered; the next round retries.
            tracing::warn!(%error, "audit journal flush failed; records stay buffered");
        }
    })
    .await;
    if let Err(error) = journal.flush().await {
        tracing::warn!(%error, "audit journal final flush failed; buffered records are lost");
    }
}

/// Request fields that name what a call acts on. An allow-list: a field not
/// named here (a DSN, a query, object data) never reaches the journal.
const TARGET_FIELDS: &[&str] = &[
    "bucket",
    "key",
    "name",
    "dataset",
    "index",
    "index_name",
    "eval_set",
    "trial_id",
    "ingest_id",
    "file_name",
    "prefix",
    "generation",
    "expected_active_generation",
    "expected_version",
];

/// Method path → input message, and message name → its descriptor, from
/// the compiled descriptor set (so a new RPC needs no code here).
struct Descriptors {
    inputs: HashMap<String, String>,
    messages: HashMap<String, prost_types::DescriptorProto>,
}

static DESCRIPTORS: LazyLock<Descriptors> = LazyLock::new(|| {
    use prost::Message as _;
    let mut descriptors = Descriptors {
        inputs: HashMap::new(),
        messages: HashMap::new(),
    };
    // Compiled into this binary by the proto crate; if it ever failed to
    // decode, targets would be empty, never wrong.
    let Ok(set) = prost_types::FileDescriptorSet::decode(lakehouse_proto::FILE_DESCRIPTOR_SET)
    else {
        return descriptors;
    };
    for file in set.file {
        let package = file.package().to_owned();
        for service in &file.service {
            for method in &service.method {
                descriptors.inputs.insert(
                    format!("/{package}.{}/{}", service.name(), method.name()),
                    method.input_type().trim_start_matches('.').to_owned(),
                );
            }
        }
        for message in file.message_type {
            add_message(&mut descriptors.messages, &package, message);
        }
    }
    descriptors
});

fn add_message(
    out: &mut HashMap<String, prost_types::DescriptorProto>,
    scope: &str,
    message: prost_types::DescriptorProto,
) {
    let name = format!("{scope}.{}", message.name());
    for nested in message.nested_type.clone() {
        add_message(out, &name, nested);
    }
    out.insert(name, message);
}

/// The target of a call to `method` whose first request message is
/// `message` (protobuf bytes): `field=value` pairs of the allow-listed
/// fields, one level of nested messages included (a `header` holding the
/// `key`). Malformed bytes end the scan; the handler rejects them anyway.
pub fn target_of(method: &str, message: &[u8]) -> String {
    let Some(input) = DESCRIPTORS.inputs.get(method) else {
        return String::new();
    };
    let mut pairs = Vec::new();
    scan(input, message, 0, &mut pairs);
    pairs.join(" ")
}

fn scan(message_type: &str, mut bytes: &[u8], depth: usize, out: &mut Vec<String>) {
    let Some(descriptor) = DESCRIPTORS.messages.get(message_type) else {
        return;
    };
    while !bytes.is_empty() {
        let Some(tag) = varint(&mut bytes) else {
            return;
        };
        let number = i32::try_from(tag >> 3).unwrap_or(0);
        let field = descriptor.field.iter().find(|f| f.number() == number);
        let wanted = field.is_some_and(|f| TARGET_FIELDS.contains(&f.name()));
        match tag & 7 {
            0 => {
                let Some(value) = varint(&mut bytes) else {
                    return;
                };
                if let Some(field) = field.filter(|_| wanted) {
                    out.push(format!("{}={value}", field.name()));
                }
            }
            1 => bytes = bytes.get(8..).unwrap_or_default(),
            5 => bytes = bytes.get(4..).unwrap_or_default(),
            2 => {
                let Some(len) = varint(&mut bytes).and_then(|l| usize::try_from(l).ok()) else {
                    return;
                };
                let Some(value) = bytes.get(..len) else {
                    return;
                };
                bytes = &bytes[len..];
                match field.map(|f| f.r#type()) {
                    Some(Type::String) if wanted => {
                        let text = String::from_utf8_lossy(value);
                        if !text.is_empty()
                            && let Some(field) = field
                        {
                            out.push(format!("{}={}", field.name(), text.escape_debug()));
                        }
                    }
                    Some(Type::Message) if depth < 2 => {
                        if let Some(field) = field {
                            let nested = field.type_name().trim_start_matches('.');
                            scan(nested, value, depth + 1, out);
                        }
                    }
                    _ => {}
                }
            }
            _ => return,
        }
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn targets_name_what_a_call_acts_on_and_nothing_else() {
        use lakehouse_proto::ingest::v1 as ingest;
        use lakehouse_proto::storage::v1 as storage;
        let delete = storage::DeleteObjectRequest {
            bucket: "default".to_owned(),
            key: "notes/a.txt".to_owned(),
        };
        assert_eq!(
            target_of(
                "/lakehouse.storage.v1.StorageService/DeleteObject",
                &delete.encode_to_vec()
            ),
            "bucket=default key=notes/a.txt"
        );
        let put = storage::PutObjectRequest {
            part: Some(storage::put_object_request::Part::Header(
                storage::PutObjectHeader {
                    key: "k".to_owned(),
                    ..Default::default()
                },
            )),
        };
        assert_eq!(
            target_of(
                "/lakehouse.storage.v1.StorageService/PutObject",
                &put.encode_to_vec()
            ),
            "key=k"
        );
        // A DSN (which may hold a password) is not a target field.
        let pg = ingest::IngestPostgresRequest {
            dataset: "staff".to_owned(),
            dsn: "postgres://u:hunter2@h/db".to_owned(),
            ..Default::default()
        };
        let target = target_of(
            "/lakehouse.ingest.v1.IngestService/IngestPostgres",
            &pg.encode_to_vec(),
        );
        assert_eq!(target, "dataset=staff");
        assert!(target_of("/nope/Nope", b"\x0a\x01a").is_empty());
        assert!(
            target_of(
                "/lakehouse.storage.v1.StorageService/DeleteObject",
                b"\x12\xff"
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn records_round_trip_through_the_append_log() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let journal = AuditJournal::new(store.clone(), "all");
        journal.record(AuditRecord {
            time: Utc::now(),
            role: String::new(),
            token: "owner".to_owned(),
            method: "/lakehouse.catalog.v1.CatalogService/CreateDataset".to_owned(),
            scope: "write".to_owned(),
            target: "name=staff".to_owned(),
            decision: "allowed".to_owned(),
            request_id: "r1".to_owned(),
        });
        journal.flush().await.expect("flush");
        let read = read(store, "all").await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].role, "all");
        assert_eq!(read[0].token, "owner");
    }
}
