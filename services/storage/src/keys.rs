//! Key validation at the edge: a key that could escape a bucket's folder,
//! confuse a backend or collide after normalisation is refused before any
//! byte is written.

use object_store::path::Path;

use crate::{Error, Result};

/// The first key segment reserved for what the services write themselves:
/// the error journal, append logs, the audit journal, probes.
pub const RESERVED_PREFIX: &str = "_lakehouse";

/// Refuses a client's write or delete of a key under [`RESERVED_PREFIX`].
///
/// The first segment is compared without regard to case, because on a
/// case-insensitive filesystem (a local bucket on macOS or Windows)
/// `_LAKEHOUSE/errors` is the same folder. Reads stay open: `lakehouse audit`
/// and operators read these objects.
pub fn refuse_reserved(key: &str) -> Result<()> {
    let first = key.split('/').next().unwrap_or_default();
    if first.eq_ignore_ascii_case(RESERVED_PREFIX) {
        return Err(Error::ReservedKey { key: shorten(key) });
    }
    Ok(())
}

/// Checks a key with the one key rule every service shares
/// (`lakehouse_shared::names::validate_key`) and turns it into an
/// object_store path.
pub fn validate_key(key: &str) -> Result<Path> {
    lakehouse_shared::names::validate_key(key).map_err(|invalid| Error::InvalidKey {
        key: invalid.key,
        reason: invalid.reason,
    })?;
    Path::parse(key).map_err(|_| Error::InvalidKey {
        key: shorten(key),
        reason: "a key segment is not valid for object storage",
    })
}

/// Checks a listing prefix: empty, or a key with an optional trailing '/'.
pub fn validate_prefix(prefix: &str) -> Result<Option<Path>> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(None);
    }
    validate_key(trimmed).map(Some)
}

fn shorten(key: &str) -> String {
    if key.len() <= 80 {
        return key.to_owned();
    }
    let mut end = 80;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "datasets/x/part-00001.parquet",
            "a b/ü.txt",
            "_lakehouse/errors/1",
        ] {
            assert_eq!(validate_key(key).expect(key).as_ref(), key);
        }
    }

    #[test]
    fn refuses_dangerous_keys() {
        let long = "k".repeat(1025);
        for key in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
            "a\nb",
            long.as_str(),
        ] {
            let error = validate_key(key).expect_err(key);
            assert!(
                matches!(error, Error::InvalidKey { .. }),
                "{key:?}: {error}"
            );
        }
        assert!(validate_key(&"k".repeat(1024)).is_ok());
    }

    #[test]
    fn reserved_prefix_is_refused_in_any_case() {
        for key in [
            "_lakehouse",
            "_lakehouse/errors/1.part.ndjson",
            "_LakeHouse/audit/all/x",
        ] {
            assert!(
                matches!(refuse_reserved(key), Err(Error::ReservedKey { .. })),
                "{key}"
            );
        }
        for key in ["lakehouse/x", "_lakehouse2/x", "data/_lakehouse/x"] {
            assert!(refuse_reserved(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn prefixes_may_end_with_a_slash() {
        assert!(validate_prefix("").expect("empty").is_none());
        assert_eq!(
            validate_prefix("a/b/").expect("ok").expect("some").as_ref(),
            "a/b"
        );
        assert!(validate_prefix("../").is_err());
    }
}
