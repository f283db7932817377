//! What is inside a log object: the NDJSON header line and the records
//! after it, one a line.

use object_store::path::Path;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Records between two entries of an object's byte index.
pub(super) const INDEX_STRIDE: usize = 256;

/// The first line of every log object.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Header {
    /// Format version: 1 without ordinals, 2 with.
    pub(super) v: u32,
    /// Names (last path segment) of the objects this one replaces; only the
    /// fallback read needs them (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) covers: Vec<String>,
    /// Byte offset, after the header line, of every `INDEX_STRIDE`-th record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) index: Vec<u64>,
}

pub(super) fn parse_object<R: DeserializeOwned>(
    location: &Path,
    bytes: &[u8],
) -> Result<(Header, Vec<R>)> {
    let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
        return Ok((Header::default(), Vec::new()));
    };
    let header =
        serde_json::from_slice(&bytes[..newline]).map_err(|source| Error::AppendLogCorrupt {
            key: location.to_string(),
            line: 1,
            source,
        })?;
    let records = parse_records(location, &bytes[newline + 1..])?;
    Ok((header, records))
}

/// Records, one a line; `line` numbers in errors count from the slice.
pub(super) fn parse_records<R: DeserializeOwned>(location: &Path, bytes: &[u8]) -> Result<Vec<R>> {
    let mut records = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        records.push(
            serde_json::from_slice(line).map_err(|source| Error::AppendLogCorrupt {
                key: location.to_string(),
                line: index + 2,
                source,
            })?,
        );
    }
    Ok(records)
}
