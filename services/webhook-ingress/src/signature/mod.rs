//! Webhook signature verification, one module per provider.
//!
//! Every verifier takes an [`Inbound`] (the raw body, the headers, the public URL the provider
//! called and the current time) plus the provider's keys or secrets as a slice, so that several
//! can be valid at once while one is rotated out. It returns a small provider-specific
//! `Verified` value (which key matched, the signed timestamp) or a [`Rejection`].
//!
//! | provider | header(s) | algorithm | signed bytes | window |
//! | --- | --- | --- | --- | --- |
//! | [`ghl`] | `x-ghl-signature` (preferred), `x-wh-signature` (legacy) | Ed25519; RSA PKCS#1 v1.5 SHA-256 | raw body | none in the signature (the body carries `timestamp`/`webhookId`) |
//! | [`retell`] | `x-retell-signature: v=<ms>,d=<hex>` | HMAC-SHA256 (API key) | raw body ‖ `<ms>` | ±300 000 ms |
//! | [`twilio`] | `X-Twilio-Signature` | HMAC-SHA1 (auth token) | URL ‖ sorted form params, or URL only with `bodySHA256` | none |
//! | [`stripe`] | `Stripe-Signature: t=..,v1=..` | HMAC-SHA256 (`whsec_…` as-is) | `<t>.` ‖ raw body | 300 s |
//! | [`paypal`] | `PAYPAL-TRANSMISSION-*`, `PAYPAL-AUTH-ALGO` | SHA256withRSA (configured X.509 cert) | `id\|time\|webhook_id\|crc32(body)` | none (UNCONFIRMED) |
//!
//! Rules shared by all of them:
//! - verification runs over the exact bytes received, never over re-serialised JSON;
//! - every comparison of a MAC or digest is constant-time (`hmac`'s `verify_slice`, `subtle`);
//!   public-key signatures are checked by the signature crates themselves;
//! - the signature is checked before the timestamp, so [`Rejection::Expired`] and
//!   [`Rejection::FromTheFuture`] are only reported for authentic requests;
//! - a [`Rejection`] carries only static text: never a secret, a key, a computed MAC or a
//!   header value.

pub mod ghl;
pub mod paypal;
pub mod retell;
pub mod stripe;
pub mod twilio;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::Mac;
use http::HeaderMap;
use rsa::pkcs1v15::VerifyingKey as RsaVerifyingKey;
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;

/// One inbound webhook request, as received.
///
/// `Debug` shows the body length and the header names only, so that logging an `Inbound`
/// cannot leak signatures, credentials or payloads.
#[derive(Clone, Copy)]
pub struct Inbound<'a> {
    /// The raw request body, byte for byte.
    pub body: &'a [u8],
    /// The request headers (looked up case-insensitively).
    pub headers: &'a HeaderMap,
    /// The full public URL the provider requested: scheme, host, optional port, path and query.
    /// Only Twilio signs it. Behind a proxy, rebuild the URL the provider used.
    pub url: &'a str,
    /// The current time, passed in so that windows can be tested.
    pub now: SystemTime,
}

impl std::fmt::Debug for Inbound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("body_len", &self.body.len())
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("url", &self.url)
            .field("now", &self.now)
            .finish()
    }
}

impl<'a> Inbound<'a> {
    /// The single value of header `name`, if present and not empty.
    ///
    /// A header sent more than once is refused: a signature header must be unambiguous.
    pub(crate) fn header(&self, name: &'static str) -> Result<Option<&'a str>, Rejection> {
        let mut values = self.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Rejection::DuplicateHeader(name));
        }
        let value = first
            .to_str()
            .map_err(|_| Rejection::Malformed("header value is not visible ASCII"))?;
        Ok(if value.trim().is_empty() {
            None
        } else {
            Some(value)
        })
    }

    /// Like [`Self::header`] but absent is a [`Rejection::MissingHeader`].
    pub(crate) fn required_header(&self, name: &'static str) -> Result<&'a str, Rejection> {
        self.header(name)?.ok_or(Rejection::MissingHeader(name))
    }

    /// Time since the Unix epoch; a clock before 1970 counts as the epoch itself.
    pub(crate) fn since_epoch(&self) -> Duration {
        self.now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a webhook was refused. `Display` is short and never contains secret material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The signature header (or another required header) is absent or empty.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that must be unambiguous was sent more than once.
    #[error("{0} header sent more than once")]
    DuplicateHeader(&'static str),
    /// A header, the URL or the body does not have the shape the provider uses.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// No usable key or secret is configured for the scheme the request uses.
    #[error("no verification key or secret configured")]
    NotConfigured,
    /// The signature does not match the request under any configured key or secret.
    #[error("signature does not match")]
    BadSignature,
    /// The signature matched, but the body does not match the digest the signature covers
    /// (Twilio's `bodySHA256`).
    #[error("body does not match its signed digest")]
    BodyDigestMismatch,
    /// The signed timestamp is older than the provider's window.
    #[error("signed timestamp is older than the allowed window")]
    Expired,
    /// The signed timestamp is further ahead of our clock than the window allows.
    #[error("signed timestamp is too far in the future")]
    FromTheFuture,
    /// The request names a signature algorithm we do not accept.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// The signature matched a configured certificate that is outside its validity period.
    #[error("signing certificate is outside its validity period")]
    CertificateNotValidNow,
}

impl Rejection {
    /// A stable snake_case label for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::Malformed(_) => "malformed",
            Self::NotConfigured => "not_configured",
            Self::BadSignature => "bad_signature",
            Self::BodyDigestMismatch => "body_digest_mismatch",
            Self::Expired => "expired",
            Self::FromTheFuture => "from_the_future",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::CertificateNotValidNow => "certificate_not_valid_now",
        }
    }
}

/// Why a configured public key or certificate could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not PEM, not base64 DER, or the DER does not parse.
    #[error("key is not valid PEM or base64-encoded DER")]
    Encoding,
    /// The key parses but is not of the expected algorithm.
    #[error("key is not an {0} key")]
    WrongAlgorithm(&'static str),
    /// RSA modulus below 2048 bits.
    #[error("RSA key is smaller than 2048 bits")]
    WeakRsaKey,
    /// An Ed25519 point of small order.
    #[error("Ed25519 key is a weak (small-order) point")]
    WeakEd25519Key,
    /// Not a parseable X.509 certificate.
    #[error("not a valid X.509 certificate")]
    Certificate,
}

/// Smallest RSA modulus accepted for a configured key.
const MIN_RSA_BITS: usize = 2048;

/// Wraps an RSA public key for PKCS#1 v1.5 / SHA-256 verification, refusing short moduli.
pub(crate) fn rsa_sha256_verifier(
    key: rsa::RsaPublicKey,
) -> Result<RsaVerifyingKey<Sha256>, KeyError> {
    if key.size() * 8 < MIN_RSA_BITS {
        return Err(KeyError::WeakRsaKey);
    }
    Ok(RsaVerifyingKey::<Sha256>::new(key))
}

/// Decodes standard, padded base64 (the alphabet all these providers use).
pub(crate) fn decode_base64(value: &str, what: &'static str) -> Result<Vec<u8>, Rejection> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| Rejection::Malformed(what))
}

/// Decodes base64 DER from configuration, ignoring line breaks and spaces.
pub(crate) fn decode_config_base64(text: &str) -> Result<Vec<u8>, KeyError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| KeyError::Encoding)
}

/// The configured secrets that can actually be used, with their position in the slice.
/// Empty strings are skipped: an empty HMAC key would accept anyone who guesses it.
pub(crate) fn usable_secrets<S: AsRef<str>>(
    secrets: &[S],
) -> impl Iterator<Item = (usize, &[u8])> + Clone {
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| (index, secret.as_ref().as_bytes()))
        .filter(|(_, secret)| !secret.is_empty())
}

/// Constant-time check that the MAC of the concatenated `parts` under `key` is `expected`.
pub(crate) fn mac_matches<M: Mac + hmac::digest::KeyInit>(
    key: &[u8],
    parts: &[&[u8]],
    expected: &[u8],
) -> bool {
    let Ok(mut mac) = <M as Mac>::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected).is_ok()
}

/// Checks a signed timestamp against `now`: at most `max_age` old and at most `max_ahead`
/// in the future (both bounds inclusive).
pub(crate) fn check_window(
    now: Duration,
    signed_at: Duration,
    max_age: Duration,
    max_ahead: Duration,
) -> Result<(), Rejection> {
    if let Some(age) = now.checked_sub(signed_at) {
        if age > max_age {
            return Err(Rejection::Expired);
        }
    } else if signed_at - now > max_ahead {
        return Err(Rejection::FromTheFuture);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map from `(name, value)` pairs; repeated names are appended.
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    pub(crate) fn unix_secs(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    pub(crate) fn unix_millis(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{headers, unix_secs};
    use super::*;

    #[test]
    fn duplicate_header_is_refused_and_empty_counts_as_absent() {
        let map = headers(&[("x-a", "1"), ("X-A", "2"), ("x-b", " ")]);
        let inbound = Inbound {
            body: b"",
            headers: &map,
            url: "https://h/",
            now: unix_secs(0),
        };
        assert_eq!(
            inbound.header("x-a"),
            Err(Rejection::DuplicateHeader("x-a"))
        );
        assert_eq!(inbound.header("x-b"), Ok(None));
        assert_eq!(
            inbound.required_header("x-b"),
            Err(Rejection::MissingHeader("x-b"))
        );
        assert_eq!(
            inbound.required_header("x-c"),
            Err(Rejection::MissingHeader("x-c"))
        );
    }

    #[test]
    fn debug_shows_no_header_values_or_body() {
        let map = headers(&[
            ("stripe-signature", "t=1,v1=secretish"),
            ("authorization", "Bearer tok"),
        ]);
        let inbound = Inbound {
            body: b"{\"card\":1}",
            headers: &map,
            url: "https://h/",
            now: unix_secs(0),
        };
        let shown = format!("{inbound:?}");
        assert!(
            shown.contains("stripe-signature") && shown.contains("body_len: 10"),
            "{shown}"
        );
        assert!(
            !shown.contains("secretish") && !shown.contains("tok") && !shown.contains("card"),
            "{shown}"
        );
    }

    #[test]
    fn window_bounds_are_inclusive() {
        let s = Duration::from_secs;
        assert_eq!(check_window(s(1300), s(1000), s(300), s(300)), Ok(()));
        assert_eq!(
            check_window(s(1301), s(1000), s(300), s(300)),
            Err(Rejection::Expired)
        );
        assert_eq!(check_window(s(700), s(1000), s(300), s(300)), Ok(()));
        assert_eq!(
            check_window(s(699), s(1000), s(300), s(300)),
            Err(Rejection::FromTheFuture)
        );
    }

    #[test]
    fn empty_secrets_are_skipped() {
        let secrets = ["", "b", ""];
        let usable: Vec<_> = usable_secrets(&secrets).collect();
        assert_eq!(usable, vec![(1, b"b".as_slice())]);
    }

    #[test]
    fn rejection_display_is_short_and_static() {
        assert_eq!(
            Rejection::BadSignature.to_string(),
            "signature does not match"
        );
        assert_eq!(
            Rejection::MissingHeader("stripe-signature").to_string(),
            "missing stripe-signature header"
        );
        assert_eq!(Rejection::Expired.code(), "expired");
    }
}
