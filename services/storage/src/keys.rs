//! Key validation at the edge: a key that could escape a bucket's folder,
//! confuse a backend or collide after normalisation is refused before any
//! byte is written.

use object_store::path::Path;

use crate::{Error, Result};

/// Longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a key and turns it into an object_store path.
pub fn validate_key(key: &str) -> Result<Path> {
    let refuse = |reason| Error::InvalidKey {
        key: shorten(key),
        reason,
    };
    if key.is_empty() {
        return Err(refuse("a key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(refuse("a key must be at most 1024 bytes"));
    }
    if key.contains('\0') {
        return Err(refuse("a key must not contain NUL"));
    }
    if key.starts_with('/') {
        return Err(refuse("a key must be relative (no leading '/')"));
    }
    if key.chars().any(char::is_control) {
        return Err(refuse("a key must not contain control characters"));
    }
    if key.contains('\\') {
        return Err(refuse("a key must use '/' as separator, not '\\'"));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(refuse(
                    "a key must not have empty segments ('//' or a trailing '/')",
                ));
            }
            "." | ".." => return Err(refuse("a key must not have '.' or '..' segments")),
            _ => {}
        }
    }
    Path::parse(key).map_err(|_| refuse("a key segment is not valid for object storage"))
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
    fn prefixes_may_end_with_a_slash() {
        assert!(validate_prefix("").expect("empty").is_none());
        assert_eq!(
            validate_prefix("a/b/").expect("ok").expect("some").as_ref(),
            "a/b"
        );
        assert!(validate_prefix("../").is_err());
    }
}
