//! Opaque page tokens (AIP-158): the position to continue after, hex
//! encoded so clients treat it as a token, not as a key to edit.

/// A page token this server did not issue (or one a client altered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page_token is not one this server issued; start over without it")]
pub struct InvalidPageToken;

/// The token for continuing after `position`.
pub fn encode_token(position: &str) -> String {
    position.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The position a token continues after; `None` for the empty token (the
/// first page).
pub fn decode_token(token: &str) -> Result<Option<String>, InvalidPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    if !token.is_ascii() || !token.len().is_multiple_of(2) {
        return Err(InvalidPageToken);
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(InvalidPageToken)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| InvalidPageToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let key = "datasets/ü/part-1";
        assert_eq!(decode_token(&encode_token(key)), Ok(Some(key.to_owned())));
        assert_eq!(decode_token(""), Ok(None));
        for bad in ["abc", "zz", "ff", "éé"] {
            assert_eq!(decode_token(bad), Err(InvalidPageToken), "{bad}");
        }
    }
}

/// Page size rule of every list (AIP-158): 0 means the default (100), larger
/// values are capped at 1000, negative values are refused.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The most items one page holds.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A negative page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page_size must not be negative (got {0}); 0 uses the default of 100")]
pub struct NegativePageSize(pub i32);

/// The page size to serve for a requested one.
pub fn page_size(requested: i32) -> Result<usize, NegativePageSize> {
    match usize::try_from(requested) {
        Err(_) => Err(NegativePageSize(requested)),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Prefix of version-1 tokens; a later format gets another.
const TOKEN_V1: &str = "v1.";

/// A page token bound to the request's filters (version 1): the position to
/// continue after and a fingerprint of the filters, so a token reused with
/// other filters is refused instead of silently skipping or repeating rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The last item served (its sort key).
    pub after: String,
}

/// A token reused with filters other than those it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not a token this server issued.
    #[error("page_token is not one this server issued; start over without it")]
    Invalid,
    /// Issued for other filters.
    #[error(
        "page_token was issued for a request with other filters; repeat the first request's filters or start over without a token"
    )]
    FiltersChanged,
}

impl PageToken {
    /// Encodes the token for continuing after `after` under `filters` (every
    /// request field but page_size and page_token, in a fixed order).
    pub fn encode(after: &str, filters: &[&str]) -> String {
        let mut raw = fingerprint(filters).to_be_bytes().to_vec();
        raw.extend_from_slice(after.as_bytes());
        format!("{TOKEN_V1}{}", hex(&raw))
    }

    /// Decodes a token for a request with `filters`; `None` for the first
    /// page (empty token).
    pub fn decode(token: &str, filters: &[&str]) -> Result<Option<Self>, PageTokenError> {
        if token.is_empty() {
            return Ok(None);
        }
        let body = token
            .strip_prefix(TOKEN_V1)
            .ok_or(PageTokenError::Invalid)?;
        let raw = unhex(body).ok_or(PageTokenError::Invalid)?;
        let (print, after) = raw.split_at_checked(8).ok_or(PageTokenError::Invalid)?;
        let after = String::from_utf8(after.to_vec()).map_err(|_| PageTokenError::Invalid)?;
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(print);
        if u64::from_be_bytes(stamp) != fingerprint(filters) {
            return Err(PageTokenError::FiltersChanged);
        }
        Ok(Some(Self { after }))
    }
}

/// FNV-1a over the filters, separated so ("ab","") differs from ("a","b").
fn fingerprint(filters: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for filter in filters {
        for byte in filter.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// One page of `items` (sorted by `key`) after the token's position, and the
/// token for the next page (`None` on the last page: no empty last page).
pub fn paginate<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> String,
    after: Option<&PageToken>,
    size: usize,
    filters: &[&str],
) -> (Vec<T>, Option<String>) {
    let mut rest = items
        .into_iter()
        .filter(|item| after.is_none_or(|token| key(item) > token.after))
        .peekable();
    let page: Vec<T> = rest.by_ref().take(size).collect();
    let next = match (rest.peek(), page.last()) {
        (Some(_), Some(last)) => Some(PageToken::encode(&key(last), filters)),
        _ => None,
    };
    (page, next)
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn page_size_rule() {
        assert_eq!(page_size(0), Ok(100));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(5000), Ok(1000));
        assert_eq!(page_size(-1), Err(NegativePageSize(-1)));
    }

    #[test]
    fn tokens_are_bound_to_filters_and_refuse_forgeries() {
        let token = PageToken::encode("idx-7", &["dataset-a"]);
        assert_eq!(
            PageToken::decode(&token, &["dataset-a"]),
            Ok(Some(PageToken {
                after: "idx-7".to_owned()
            }))
        );
        assert_eq!(
            PageToken::decode(&token, &["dataset-b"]),
            Err(PageTokenError::FiltersChanged)
        );
        for forged in [
            "idx-7",
            "v1.zz",
            "v1.00",
            "v2.00112233445566778899",
            &token[1..],
        ] {
            assert_eq!(
                PageToken::decode(forged, &["dataset-a"]),
                Err(PageTokenError::Invalid),
                "{forged}"
            );
        }
        assert_eq!(PageToken::decode("", &["x"]), Ok(None));
    }

    #[test]
    fn paginate_has_no_empty_last_page() {
        let items = ["a", "b", "c", "d"];
        let key = |s: &&str| (*s).to_owned();
        let (page, next) = paginate(items, key, None, 2, &[]);
        assert_eq!(page, ["a", "b"]);
        let next = PageToken::decode(&next.expect("more"), &[]).expect("ok");
        let (page, next) = paginate(items, key, next.as_ref(), 2, &[]);
        assert_eq!(page, ["c", "d"]);
        assert_eq!(next, None, "the last full page carries no token");
    }
}
