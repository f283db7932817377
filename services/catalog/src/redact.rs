//! Password redaction for connection strings that end up in manifests and logs.
//!
//! It errs on the side of hiding too much: a manifest is readable by anyone
//! who can list datasets, so a stray `***` is cheap and a leaked password is
//! not. Handles URL user info (`postgres://u:pw@h/db`), URL query parameters
//! (`?password=pw`), libpq key=value DSNs (`host=h password='p w'`) and
//! JDBC-style `;password=pw;`.

/// The replacement for a secret.
pub const MASK: &str = "***";

/// `text` with every password-like value replaced by [`MASK`].
pub fn redact_secrets(text: &str) -> String {
    redact_key_values(&redact_userinfo(text))
}

/// Masks the password of `scheme://user:password@host`. The user info ends
/// at the LAST `@`, so an unencoded `@` inside a password is hidden too.
fn redact_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &text[rest_start..];
    let Some(at) = rest.rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &rest[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_owned();
    };
    if &userinfo[colon + 1..] == MASK {
        return text.to_owned();
    }
    format!(
        "{}{}:{MASK}{}",
        &text[..rest_start],
        &userinfo[..colon],
        &rest[at..]
    )
}

/// Whether a parameter name names a secret.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// Masks the values of `key=value` pairs whose key names a secret. Values
/// may be single- or double-quoted (with backslash escapes), or run to the
/// next space, `&` or `;`.
fn redact_key_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // A key starts at the beginning or after a separator.
        let at_boundary = i == 0 || !is_key_byte(bytes[i - 1]);
        if !(at_boundary && is_key_byte(bytes[i])) {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        let key = &text[key_start..i];
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'=' || !is_secret_key(key) {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let value_start = j;
        let value_end = value_end(bytes, value_start);
        if &text[value_start..value_end] != MASK && value_end > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str(MASK);
            copied = value_end;
        }
        i = value_end.max(i);
    }
    out.push_str(&text[copied..]);
    out
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// Where a value starting at `start` ends (exclusive).
fn value_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(&quote @ (b'\'' | b'"')) => {
            let mut j = start + 1;
            while j < bytes.len() {
                match bytes[j] {
                    b'\\' => j += 2,
                    b if b == quote => return j + 1,
                    _ => j += 1,
                }
            }
            bytes.len()
        }
        _ => {
            let mut j = start;
            while j < bytes.len() && !matches!(bytes[j], b' ' | b'&' | b';' | b'\t' | b'\n') {
                j += 1;
            }
            j
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            redact_secrets("postgres://u:hunter2@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_secrets("postgresql://u:p@ss@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact_secrets("postgres://h/db?user=u&password=hunter2&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        assert_eq!(redact_secrets("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_secrets("file.csv"), "file.csv");
    }

    #[test]
    fn key_value_dsns() {
        assert_eq!(
            redact_secrets("host=h user=u password=hunter2 dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact_secrets("host=h password = 'hunter 2\\' x' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(
            redact_secrets("jdbc:postgresql://h/db;user=u;PWD=hunter2;"),
            "jdbc:postgresql://h/db;user=u;PWD=***;"
        );
        assert_eq!(
            redact_secrets("host=h sslpassword=x"),
            "host=h sslpassword=***"
        );
    }

    #[test]
    fn idempotent() {
        for text in [
            "postgres://u:hunter2@h/db?password=x",
            "host=h password='a b'",
        ] {
            let once = redact_secrets(text);
            assert!(!once.contains("hunter2") && !once.contains("a b"), "{once}");
            assert_eq!(redact_secrets(&once), once);
        }
    }
}
