//! Retell AI webhook signatures (PROVIDERS.md §2.1).
//!
//! `x-retell-signature: v=<unix ms>,d=<64 lowercase hex>`, where the digest is
//! `HMAC-SHA256(key = API key, msg = raw body ‖ decimal(v))`, with no separator. The key is a
//! Retell API key with the "webhook" badge; there is no separate webhook secret, so several
//! keys can be passed while one is rotated. The header must match
//! `^v=(\d+),d=([0-9a-f]{64})$` exactly, as in Retell's current Python SDK; `\d` is ASCII
//! digits only here. Freshness: `|now_ms − v| ≤ 300 000`, inclusive.

use std::time::Duration;

use hmac::Hmac;
use sha2::Sha256;

use super::{check_window, mac_matches, usable_secrets, Inbound, Rejection};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-retell-signature";
/// How far the signed timestamp may be from `now`, either way (inclusive).
pub const TOLERANCE: Duration = Duration::from_millis(300_000);

const MALFORMED: &str = "x-retell-signature must be v=<ms>,d=<64 lowercase hex>";

/// A request that passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Position in the key slice of the API key that matched.
    pub key_index: usize,
}

/// Verifies a Retell webhook against the configured API keys.
pub fn verify<S: AsRef<str>>(inbound: &Inbound<'_>, api_keys: &[S]) -> Result<Verified, Rejection> {
    let keys = usable_secrets(api_keys);
    if keys.clone().next().is_none() {
        return Err(Rejection::NotConfigured);
    }
    let (timestamp_ms, digest) = parse_header(inbound.required_header(SIGNATURE_HEADER)?)?;
    // The SDK signs `str(int(v))`, i.e. the canonical decimal, not the header's digits.
    let timestamp = timestamp_ms.to_string();
    let key_index = keys
        .into_iter()
        .find(|(_, key)| {
            mac_matches::<Hmac<Sha256>>(key, &[inbound.body, timestamp.as_bytes()], &digest)
        })
        .map(|(index, _)| index)
        .ok_or(Rejection::BadSignature)?;
    check_window(
        inbound.since_epoch(),
        Duration::from_millis(timestamp_ms),
        TOLERANCE,
        TOLERANCE,
    )?;
    Ok(Verified {
        timestamp_ms,
        key_index,
    })
}

/// Parses `v=<digits>,d=<64 lowercase hex>`, refusing anything else.
fn parse_header(value: &str) -> Result<(u64, [u8; 32]), Rejection> {
    let (timestamp, digest) = value
        .strip_prefix("v=")
        .and_then(|rest| rest.split_once(",d="))
        .ok_or(Rejection::Malformed(MALFORMED))?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::Malformed(MALFORMED));
    }
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Rejection::Malformed(MALFORMED));
    }
    let timestamp = timestamp
        .parse::<u64>()
        .map_err(|_| Rejection::Malformed("x-retell-signature timestamp out of range"))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digest, &mut bytes).map_err(|_| Rejection::Malformed(MALFORMED))?;
    Ok((timestamp, bytes))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{headers, unix_millis};
    use super::*;

    // Official vector: retell-python-sdk tests/test_webhook_auth.py (PROVIDERS.md §2.1).
    const BODY: &str = r#"{"event":"call_ended"}"#;
    const API_KEY: &str = "test-api-key";
    const TIMESTAMP_MS: u64 = 1_700_000_000_000;
    const DIGEST: &str = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";
    const HEADER: &str =
        "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";

    fn check(
        body: &str,
        header: Option<&str>,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<Verified, Rejection> {
        let map = match header {
            Some(value) => headers(&[("X-Retell-Signature", value)]),
            None => headers(&[]),
        };
        let inbound = Inbound {
            body: body.as_bytes(),
            headers: &map,
            url: "https://hooks.example.com/retell",
            now: unix_millis(now_ms),
        };
        verify(&inbound, keys)
    }

    #[test]
    fn official_vector_verifies() {
        assert_eq!(HEADER, format!("v={TIMESTAMP_MS},d={DIGEST}"));
        assert_eq!(
            check(BODY, Some(HEADER), &[API_KEY], TIMESTAMP_MS),
            Ok(Verified {
                timestamp_ms: TIMESTAMP_MS,
                key_index: 0
            })
        );
    }

    #[test]
    fn official_negative_cases_fail() {
        // From the same SDK test: a trailing space in the body, and the wrong key.
        let spaced = format!("{BODY} ");
        assert_eq!(
            check(&spaced, Some(HEADER), &[API_KEY], TIMESTAMP_MS),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(BODY, Some(HEADER), &["wrong-api-key"], TIMESTAMP_MS),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn window_is_inclusive_at_five_minutes() {
        let ok = Ok(Verified {
            timestamp_ms: TIMESTAMP_MS,
            key_index: 0,
        });
        assert_eq!(
            check(BODY, Some(HEADER), &[API_KEY], TIMESTAMP_MS + 300_000),
            ok
        );
        assert_eq!(
            check(BODY, Some(HEADER), &[API_KEY], TIMESTAMP_MS - 300_000),
            ok
        );
        assert_eq!(
            check(BODY, Some(HEADER), &[API_KEY], TIMESTAMP_MS + 300_001),
            Err(Rejection::Expired)
        );
        assert_eq!(
            check(BODY, Some(HEADER), &[API_KEY], TIMESTAMP_MS - 300_001),
            Err(Rejection::FromTheFuture)
        );
    }

    #[test]
    fn stale_forgery_is_a_bad_signature_not_expired() {
        assert_eq!(
            check(
                BODY,
                Some(HEADER),
                &["wrong-api-key"],
                TIMESTAMP_MS + 3_600_000
            ),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn rotated_second_key_is_accepted() {
        assert_eq!(
            check(BODY, Some(HEADER), &["old-api-key", API_KEY], TIMESTAMP_MS),
            Ok(Verified {
                timestamp_ms: TIMESTAMP_MS,
                key_index: 1
            })
        );
    }

    #[test]
    fn missing_header_and_missing_keys_are_rejected() {
        assert_eq!(
            check(BODY, None, &[API_KEY], TIMESTAMP_MS),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER))
        );
        assert_eq!(
            check(BODY, Some(HEADER), &[], TIMESTAMP_MS),
            Err(Rejection::NotConfigured)
        );
        assert_eq!(
            check(BODY, Some(HEADER), &[""], TIMESTAMP_MS),
            Err(Rejection::NotConfigured)
        );
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let upper = DIGEST.to_uppercase();
        let cases = [
            format!("x{HEADER}"),                            // prefix
            format!("{HEADER} "),                            // suffix
            format!("{HEADER},extra=1"),                     // extra field
            format!("d={DIGEST},v={TIMESTAMP_MS}"),          // reordered
            format!("v={TIMESTAMP_MS},d={}", &DIGEST[1..]),  // too short
            format!("v={TIMESTAMP_MS},d={DIGEST}0"),         // too long
            format!("v={TIMESTAMP_MS},d={}g", &DIGEST[1..]), // not hex
            format!("v={TIMESTAMP_MS},d={upper}"),           // uppercase hex
            format!("v=-{TIMESTAMP_MS},d={DIGEST}"),         // negative
            format!("v=,d={DIGEST}"),                        // empty timestamp
            format!("v=99999999999999999999999,d={DIGEST}"), // overflows u64
            format!("v={TIMESTAMP_MS}, d={DIGEST}"),         // space
        ];
        for case in &cases {
            let result = check(BODY, Some(case), &[API_KEY], TIMESTAMP_MS);
            assert!(
                matches!(result, Err(Rejection::Malformed(_))),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn leading_zeros_sign_the_canonical_decimal() {
        // The SDK parses v with int() and signs str(int(v)), so leading zeros are harmless.
        let padded = format!("v=0{TIMESTAMP_MS},d={DIGEST}");
        assert_eq!(
            check(BODY, Some(&padded), &[API_KEY], TIMESTAMP_MS),
            Ok(Verified {
                timestamp_ms: TIMESTAMP_MS,
                key_index: 0
            })
        );
    }

    #[test]
    fn signed_timestamp_is_part_of_the_mac() {
        // Same digest, timestamp moved by one millisecond.
        let moved = format!("v={},d={DIGEST}", TIMESTAMP_MS + 1);
        assert_eq!(
            check(BODY, Some(&moved), &[API_KEY], TIMESTAMP_MS),
            Err(Rejection::BadSignature)
        );
    }
}
