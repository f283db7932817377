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
