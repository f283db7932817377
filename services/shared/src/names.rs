//! One rule for the names of resources (datasets, indexes, eval sets), so
//! every service accepts and refuses the same names: 1 to 128 bytes of
//! lowercase letters, digits, `_`, `-` and `.`, never `.` or `..` (names
//! become storage key segments).

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A name that breaks the rule; says which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct InvalidName {
    /// What was being named, such as "index".
    pub kind: &'static str,
    /// The name, shortened to 64 characters.
    pub name: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Whether a byte may appear in a name.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
}

/// Checks `name` as the name of a `kind`.
pub fn validate(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let invalid = |reason| InvalidName {
        kind,
        name: shorten(name),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if !name.bytes().all(is_name_byte) {
        return Err(invalid(
            "only lowercase letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    Ok(())
}

/// Longest object key, in bytes (S3's own limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// An object key that breaks the key rule; says which part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidKey {
    /// The key, shortened to 64 characters.
    pub key: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Checks an object key with the rule storage serves keys by (the same
/// checks as `lakehouse-storage`'s `keys::validate_key`, without building
/// an object_store path), so a service never records a key that storage
/// would refuse: not empty, at most 1024 bytes, relative, no NUL or control
/// characters, no `\\`, and no empty, `.` or `..` segments.
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    let refuse = |reason| InvalidKey {
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
    Ok(())
}

/// A value for an error message: at most 64 characters.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= 64 {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(61).collect();
        short.push_str("...");
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_key_rule() {
        for good in [
            "a",
            "datasets/x/part-00001.parquet",
            "a b/ü.txt",
            &"k".repeat(1024),
        ] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        let long = "k".repeat(1025);
        for bad in [
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
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_one_rule() {
        for good in ["a", "staff_2026", "emb.v2-large", &"x".repeat(128)] {
            assert_eq!(validate("index", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "Upper",
            "a/b",
            "sp ace",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate("index", bad).is_err(), "{bad:?}");
        }
    }
}
