//! AIP-158 pagination: page sizes with a default and a cap, and opaque page tokens that carry
//! the last key seen (keyset pagination, stable under concurrent inserts).
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: i64 = 100;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// The effective page size for a request's `page_size` (0 means the default).
pub fn page_size(requested: i32) -> Result<i64> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Token for the page after `last_key`, bound to the list it came from (`scope`) so a token of
/// one list is refused by another.
pub fn encode_token(scope: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\n{last_key}"))
}

/// The last key carried by `token`; an empty token starts at the beginning.
pub fn decode_token(scope: &str, token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Error::invalid("page_token", "is not a token this list issued"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid("page_token", "is not a token this list issued"))?;
    match text.split_once('\n') {
        Some((s, key)) if s == scope => Ok(Some(key.to_owned())),
        _ => Err(Error::invalid(
            "page_token",
            "is not a token this list issued",
        )),
    }
}

/// Keyset pagination: `rows` were read with `limit + 1` so a following page shows itself; cuts
/// them to `limit` and returns the token for the next page (empty when there is none).
pub fn next_page<T>(
    rows: &mut Vec<T>,
    limit: i64,
    scope: &str,
    key: impl Fn(&T) -> String,
) -> String {
    if rows.len() as i64 > limit {
        rows.truncate(limit.max(0) as usize);
        rows.last()
            .map(|r| encode_token(scope, &key(r)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_list() {
        let t = encode_token("flags", "beta-x");
        assert_eq!(
            decode_token("flags", &t).unwrap().as_deref(),
            Some("beta-x")
        );
        assert!(decode_token("other", &t).is_err());
        assert!(decode_token("flags", "!!!").is_err());
        assert_eq!(decode_token("flags", "").unwrap(), None);
    }

    #[test]
    fn next_page_cuts_and_points_after_the_last_row() {
        let mut rows = vec!["a", "b", "c"];
        let token = next_page(&mut rows, 2, "s", |r| r.to_string());
        assert_eq!(rows, ["a", "b"]);
        assert_eq!(decode_token("s", &token).unwrap().as_deref(), Some("b"));
        let mut last = vec!["a"];
        assert_eq!(next_page(&mut last, 2, "s", |r| r.to_string()), "");
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
