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

/// The cases every service is tested against (shared's unit tests and the
/// end-to-end test that sends each one to every service), so "one rule"
/// stays checked rather than claimed.
#[derive(Debug, Clone)]
pub struct Examples {
    /// Names every service accepts.
    pub valid_names: Vec<String>,
    /// Names every service refuses with INVALID_NAME.
    pub invalid_names: Vec<String>,
    /// Keys every service accepts.
    pub valid_keys: Vec<String>,
    /// Keys every service refuses with INVALID_KEY.
    pub invalid_keys: Vec<String>,
}

/// See [`Examples`].
pub fn examples() -> Examples {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut valid_names = owned(&["a", "staff_2026", "emb.v2-large"]);
    valid_names.push("x".repeat(MAX_NAME_BYTES));
    let mut invalid_names = owned(&["", "..", ".", "Upper", "a/b", "sp ace", "é", "a\0b"]);
    invalid_names.push("x".repeat(MAX_NAME_BYTES + 1));
    let mut valid_keys = owned(&["a", "datasets/x/part-00001.parquet", "a b/ü.txt"]);
    valid_keys.push("k".repeat(MAX_KEY_BYTES));
    let mut invalid_keys = owned(&[
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
    ]);
    invalid_keys.push("k".repeat(MAX_KEY_BYTES + 1));
    Examples {
        valid_names,
        invalid_names,
        valid_keys,
        invalid_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_key_rule() {
        let examples = examples();
        for good in &examples.valid_keys {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        for bad in &examples.invalid_keys {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_one_rule() {
        let examples = examples();
        for good in &examples.valid_names {
            assert_eq!(validate("index", good), Ok(()), "{good}");
        }
        for bad in &examples.invalid_names {
            assert!(validate("index", bad).is_err(), "{bad:?}");
        }
    }
}
