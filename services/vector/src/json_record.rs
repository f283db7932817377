//! JSON records in storage (index records, generation manifests, eval set
//! descriptions), each sealed with a CRC32C of its body, so a damaged record
//! is refused instead of read as something else.
//!
//! On disk a record is `{"crc32c":<u32>,"body":<the record>}`. The checksum
//! covers the body's bytes exactly as written (read back as a raw value, not
//! serialised again), and the body stays plain JSON that `jq` reads. A
//! record without the envelope was written before checksums existed and is
//! read as it is; the next write seals it.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// The envelope, as read: the checksum and the body's raw bytes.
#[derive(serde::Deserialize)]
struct Sealed<'a> {
    crc32c: u32,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// `value` sealed: the envelope's bytes.
pub fn seal<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec_pretty(value)?;
    let mut out = format!("{{\"crc32c\":{},\"body\":", crc32c::crc32c(&body)).into_bytes();
    out.extend_from_slice(&body);
    out.extend_from_slice(b"}\n");
    Ok(out)
}

/// Reads a sealed (or legacy, unsealed) record, checking its checksum.
pub fn open<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    match serde_json::from_slice::<Sealed<'_>>(bytes) {
        Ok(sealed) => {
            let body = sealed.body.get().as_bytes();
            let sum = crc32c::crc32c(body);
            if sum != sealed.crc32c {
                return Err(format!(
                    "checksum mismatch: the record says CRC32C {:#010x}, its body has {sum:#010x}",
                    sealed.crc32c
                ));
            }
            serde_json::from_slice(body).map_err(|e| e.to_string())
        }
        // Written before records were sealed: read it as it is.
        Err(sealed_error) => serde_json::from_slice(bytes)
            .map_err(|e| format!("neither a sealed record ({sealed_error}) nor a plain one ({e})")),
    }
}

/// An object key as a path; a key that is no valid path is a storage error
/// (the key is ours, so this is a bug or a damaged listing, never input).
pub fn path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::Storage {
        operation: "address",
        key: key.to_owned(),
        source: e.into(),
    })
}

/// Sealed JSON records over one object store.
#[derive(Debug, Clone)]
pub struct JsonRecords {
    store: Arc<dyn ObjectStore>,
}

impl JsonRecords {
    /// Over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The record at `key`, or `None` when there is none; `what` names it
    /// in errors ("index record", "manifest", "eval set").
    pub async fn read<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &str,
    ) -> Result<Option<T>> {
        let bytes = match self.store.get(&path(key)?).await {
            Ok(got) => got.bytes().await.map_err(Error::storage("read", key))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(Error::storage("read", key)(source)),
        };
        open(&bytes).map(Some).map_err(|reason| Error::Corrupt {
            what,
            key: key.to_owned(),
            reason,
        })
    }

    /// Replaces the record at `key` with one put: a reader sees the old or
    /// the new record, never half of one.
    pub async fn write<T: Serialize>(
        &self,
        what: &'static str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = seal(value).map_err(|e| Error::Corrupt {
            what,
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&path(key)?, PutPayload::from(bytes))
            .await
            .map_err(Error::storage("write", key))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Thing {
        name: String,
        n: u64,
    }

    #[test]
    fn a_sealed_record_reads_back_and_a_flipped_byte_is_refused() {
        let thing = Thing {
            name: "a".into(),
            n: 7,
        };
        let bytes = seal(&thing).expect("seal");
        assert_eq!(open::<Thing>(&bytes).expect("open"), thing);
        let text = String::from_utf8(bytes).expect("utf8");
        let damaged = text.replace("\"n\": 7", "\"n\": 8");
        assert_ne!(damaged, text);
        let error = open::<Thing>(damaged.as_bytes()).expect_err("damaged");
        assert!(error.contains("checksum mismatch"), "{error}");
        assert!(open::<Thing>(b"\x00garbage").is_err());
    }

    #[test]
    fn a_legacy_unsealed_record_is_read_as_it_is() {
        let legacy = br#"{"name": "old", "n": 1}"#;
        assert_eq!(
            open::<Thing>(legacy).expect("legacy"),
            Thing {
                name: "old".into(),
                n: 1
            }
        );
    }
}
