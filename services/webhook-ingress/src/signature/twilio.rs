//! Twilio webhook and status-callback signatures (PROVIDERS.md §3.1).
//!
//! `X-Twilio-Signature` is base64 of `HMAC-SHA1(key = auth token, msg)` where `msg` is:
//! - form POSTs (`application/x-www-form-urlencoded`): the full URL Twilio requested, then for
//!   each distinct parameter name in code-point order, `name + value` for each of its values,
//!   values sorted too, with no separators. As in Twilio's Python SDK, an identical
//!   `name=value` pair sent twice is counted once;
//! - JSON bodies: the URL only. Twilio adds `bodySHA256=<hex sha256 of the body>` to the URL's
//!   query, so the body is covered through that digest, checked here as well;
//! - GETs and empty bodies: the URL only (the parameters are in the query).
//!
//! Twilio's validators accept a signature computed over the URL **without** its port or over
//! the URL **with** a port (the default `:443`/`:80` added when there is none), because
//! Twilio's own signing is inconsistent about ports. This does the same: both variants, every
//! configured token (Twilio accounts can have a primary and a secondary auth token).
//!
//! `inbound.url` must be the public URL Twilio called: behind a proxy, rebuild it from the
//! forwarded scheme and host. There is no timestamp and no replay window; dedupe on
//! `MessageSid`/`CallSid` plus status downstream.

use std::collections::BTreeSet;

use hmac::Hmac;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{decode_base64, mac_matches, usable_secrets, Inbound, Rejection};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The query parameter carrying the hex SHA-256 of a JSON body.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// What the signature covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// URL plus the form-encoded body parameters.
    UrlAndForm,
    /// URL only, with the body bound through its `bodySHA256` query parameter.
    UrlAndBodyDigest,
    /// URL only (GET, or an empty body).
    UrlOnly,
}

/// A request that passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub signed: Signed,
    /// Position in the token slice of the auth token that matched.
    pub key_index: usize,
}

/// Verifies a Twilio request against the configured auth tokens.
pub fn verify<S: AsRef<str>>(
    inbound: &Inbound<'_>,
    auth_tokens: &[S],
) -> Result<Verified, Rejection> {
    let tokens = usable_secrets(auth_tokens);
    if tokens.clone().next().is_none() {
        return Err(Rejection::NotConfigured);
    }
    const WHAT: &str = "X-Twilio-Signature must be base64 of a 20-byte HMAC-SHA1";
    let signature = decode_base64(inbound.required_header(SIGNATURE_HEADER)?, WHAT)?;
    if signature.len() != 20 {
        return Err(Rejection::Malformed(WHAT));
    }
    let (without_port, with_port) = port_variants(inbound.url)?;

    let is_form = inbound
        .header("content-type")?
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(FORM_CONTENT_TYPE));
    let (signed, params, body_digest) = if is_form {
        (Signed::UrlAndForm, sorted_params(inbound.body), None)
    } else if let Some(digest) = query_body_digest(inbound.url)? {
        (Signed::UrlAndBodyDigest, Vec::new(), Some(digest))
    } else if inbound.body.is_empty() {
        (Signed::UrlOnly, Vec::new(), None)
    } else {
        // A body the signature would not cover: refuse rather than accept it unsigned.
        return Err(Rejection::Malformed(
            "body is neither form-encoded nor bound by a bodySHA256 query parameter",
        ));
    };

    let key_index = tokens
        .into_iter()
        .find(|(_, token)| {
            [&without_port, &with_port]
                .iter()
                .any(|url| mac_matches::<Hmac<Sha1>>(token, &[url.as_bytes(), &params], &signature))
        })
        .map(|(index, _)| index)
        .ok_or(Rejection::BadSignature)?;

    if let Some(expected) = body_digest {
        let actual = Sha256::digest(inbound.body);
        if !bool::from(actual.as_slice().ct_eq(&expected)) {
            return Err(Rejection::BodyDigestMismatch);
        }
    }
    Ok(Verified { signed, key_index })
}

/// The signed tail for form parameters: `name ‖ value` for every distinct pair, sorted by
/// name then value (code-point order, which is byte order for UTF-8).
fn sorted_params(body: &[u8]) -> Vec<u8> {
    let pairs: BTreeSet<(String, String)> = form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let mut tail = Vec::with_capacity(body.len());
    for (name, value) in &pairs {
        tail.extend_from_slice(name.as_bytes());
        tail.extend_from_slice(value.as_bytes());
    }
    tail
}

/// The first `bodySHA256` query parameter, hex-decoded, if the URL has one.
fn query_body_digest(url: &str) -> Result<Option<[u8; 32]>, Rejection> {
    let before_fragment = url.split('#').next().unwrap_or(url);
    let Some((_, query)) = before_fragment.split_once('?') else {
        return Ok(None);
    };
    let Some((_, value)) =
        form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == BODY_SHA256_PARAM)
    else {
        return Ok(None);
    };
    let mut digest = [0u8; 32];
    hex::decode_to_slice(value.as_bytes(), &mut digest)
        .map_err(|_| Rejection::Malformed("bodySHA256 must be 64 hex characters"))?;
    Ok(Some(digest))
}

/// The URL with its port removed, and the URL with a port (unchanged if it has one, else with
/// `:443` for https and `:80` otherwise), as Twilio's SDKs compute them. Everything else in
/// the URL is kept byte for byte.
fn port_variants(url: &str) -> Result<(String, String), Rejection> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or(Rejection::Malformed("url must be absolute"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Keep any userinfo; the port follows the host, after an IPv6 literal's closing bracket.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let (userinfo, host_port) = authority.split_at(host_start);
    let search_from = host_port.rfind(']').map_or(0, |bracket| bracket + 1);
    let (host, port) = match host_port[search_from..].rfind(':') {
        Some(colon) => {
            let colon = search_from + colon;
            (&host_port[..colon], &host_port[colon + 1..])
        }
        None => (host_port, ""),
    };
    if host.is_empty() {
        return Err(Rejection::Malformed("url has no host"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::Malformed("url port is not a number"));
    }
    let without_port = format!("{scheme}://{userinfo}{host}{tail}");
    let with_port = if port.is_empty() {
        let default = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        format!("{scheme}://{userinfo}{host}:{default}{tail}")
    } else {
        url.to_owned()
    };
    Ok((without_port, with_port))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{headers, unix_secs};
    use super::*;

    // Official vectors: twilio-python tests/unit/test_request_validator.py (PROVIDERS.md
    // §3.1), auth token "12345".
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    // CallSid=CA1234567890ABCDE, Digits=1234, From=+14158675309, To=+18005551212,
    // Caller=+14158675309, form-encoded by hand in a different order than the sorted one.
    const FORM: &str = "CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";
    const SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const SIG_HTTPS_443: &str = "kvajT1Ptam85bY51eRf/AJRuM3w=";
    const SIG_HTTP_80: &str = "0ZXoZLH/DfblKGATFgpif+LLRf4=";
    const SIG_HTTP_1234: &str = "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=";
    const DUPLICATES_FORM: &str = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    const SIG_DUPLICATES: &str = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_BODY_SHA256: &str =
        "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const SIG_JSON: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";
    // Further official vectors from Twilio's other SDK test suites (same token and params):
    // https with custom port 1234 signed with that port (twilio-csharp), a URL with
    // credentials (twilio-ruby / twilio-node), and a URL whose only query param is bodySHA256
    // (twilio-go / twilio-ruby). Re-derived locally with Python hmac.
    const SIG_HTTPS_1234: &str = "CYn1h0gLBdNxDGkKJg6hYohgeD8=";
    const SIG_CREDENTIALS: &str = "CukzLTc1tT5dXEDIHm/tKBanW10=";
    const SIG_JSON_ONLY_PARAM: &str = "y77kIzt2vzLz71DgmJGsen2scGs=";

    fn check(
        url: &str,
        content_type: Option<&str>,
        body: &str,
        signature: Option<&str>,
        tokens: &[&str],
    ) -> Result<Verified, Rejection> {
        let mut pairs = Vec::new();
        if let Some(content_type) = content_type {
            pairs.push(("Content-Type", content_type));
        }
        if let Some(signature) = signature {
            pairs.push(("X-Twilio-Signature", signature));
        }
        let map = headers(&pairs);
        let inbound = Inbound {
            body: body.as_bytes(),
            headers: &map,
            url,
            now: unix_secs(0),
        };
        verify(&inbound, tokens)
    }

    fn form(url: &str, body: &str, signature: &str) -> Result<Verified, Rejection> {
        check(
            url,
            Some("application/x-www-form-urlencoded"),
            body,
            Some(signature),
            &[TOKEN],
        )
    }

    const FORM_OK: Result<Verified, Rejection> = Ok(Verified {
        signed: Signed::UrlAndForm,
        key_index: 0,
    });

    #[test]
    fn official_form_vector_verifies() {
        assert_eq!(form(URL, FORM, SIG), FORM_OK);
        let with_charset = check(
            URL,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            FORM,
            Some(SIG),
            &[TOKEN],
        );
        assert_eq!(with_charset, FORM_OK);
    }

    #[test]
    fn official_port_vectors_verify() {
        // Signed with :443 and received without a port (the validator adds it).
        assert_eq!(form(URL, FORM, SIG_HTTPS_443), FORM_OK);
        // Received with :443: matches both the portless and the :443 signatures.
        let url_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(form(url_443, FORM, SIG), FORM_OK);
        assert_eq!(form(url_443, FORM, SIG_HTTPS_443), FORM_OK);
        // http: signed with :80, received with or without it.
        assert_eq!(
            form(
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                FORM,
                SIG_HTTP_80
            ),
            FORM_OK
        );
        assert_eq!(
            form(
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                FORM,
                SIG_HTTP_80
            ),
            FORM_OK
        );
        // Custom port 1234: signed with it, or signed without any port.
        let http_1234 = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(form(http_1234, FORM, SIG_HTTP_1234), FORM_OK);
        let https_1234 = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(form(https_1234, FORM, SIG), FORM_OK);
        assert_eq!(form(https_1234, FORM, SIG_HTTPS_1234), FORM_OK);
        // A port variant is not a free pass: :1234 is not :443.
        assert_eq!(
            form(URL, FORM, SIG_HTTPS_1234),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            form(http_1234, FORM, SIG_HTTP_80),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn official_credentials_vector_verifies() {
        let url = "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(form(url, FORM, SIG_CREDENTIALS), FORM_OK);
    }

    #[test]
    fn official_duplicate_params_vector_verifies() {
        assert_eq!(form(URL, DUPLICATES_FORM, SIG_DUPLICATES), FORM_OK);
        // twilio-python: an identical pair sent twice is counted once.
        let tripled = format!("{DUPLICATES_FORM}&Digits=1234");
        assert_eq!(form(URL, &tripled, SIG_DUPLICATES), FORM_OK);
        assert_eq!(
            sorted_params(DUPLICATES_FORM.as_bytes()),
            b"Digits1234Digits5678SidCA123SidAccountAC123".to_vec()
        );
    }

    #[test]
    fn official_json_body_vector_verifies() {
        assert_eq!(hex::encode(Sha256::digest(JSON_BODY)), JSON_BODY_SHA256);
        let url = format!("{URL}&bodySHA256={JSON_BODY_SHA256}");
        let ok = Ok(Verified {
            signed: Signed::UrlAndBodyDigest,
            key_index: 0,
        });
        assert_eq!(
            check(
                &url,
                Some("application/json"),
                JSON_BODY,
                Some(SIG_JSON),
                &[TOKEN]
            ),
            ok
        );
        let only = format!("https://mycompany.com/myapp.php?bodySHA256={JSON_BODY_SHA256}");
        assert_eq!(
            check(
                &only,
                Some("application/json"),
                JSON_BODY,
                Some(SIG_JSON_ONLY_PARAM),
                &[TOKEN]
            ),
            ok
        );
    }

    #[test]
    fn tampered_json_body_fails_its_digest() {
        let url = format!("{URL}&bodySHA256={JSON_BODY_SHA256}");
        let tampered = JSON_BODY.replace("value", "other");
        assert_eq!(
            check(
                &url,
                Some("application/json"),
                &tampered,
                Some(SIG_JSON),
                &[TOKEN]
            ),
            Err(Rejection::BodyDigestMismatch)
        );
    }

    #[test]
    fn json_body_without_body_sha256_is_refused() {
        // twilio-node: "should fail validation if given body but no bodySHA256 param".
        let result = check(
            URL,
            Some("application/json"),
            JSON_BODY,
            Some(SIG),
            &[TOKEN],
        );
        assert!(matches!(result, Err(Rejection::Malformed(_))), "{result:?}");
        let bad_digest = format!("{URL}&bodySHA256=xyz");
        let result = check(
            &bad_digest,
            Some("application/json"),
            JSON_BODY,
            Some(SIG_JSON),
            &[TOKEN],
        );
        assert!(matches!(result, Err(Rejection::Malformed(_))), "{result:?}");
    }

    #[test]
    fn tampered_form_and_url_are_rejected() {
        let changed_value = FORM.replace("Digits=1234", "Digits=1235");
        assert_eq!(form(URL, &changed_value, SIG), Err(Rejection::BadSignature));
        let extra_param = format!("{FORM}&Extra=1");
        assert_eq!(form(URL, &extra_param, SIG), Err(Rejection::BadSignature));
        let dropped = FORM.replace("&Caller=%2B14158675309", "");
        assert_eq!(form(URL, &dropped, SIG), Err(Rejection::BadSignature));
        assert_eq!(
            form("https://mycompany.com/myapp.php?foo=1&bar=3", FORM, SIG),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            form("https://evil.com/myapp.php?foo=1&bar=2", FORM, SIG),
            Err(Rejection::BadSignature)
        );
        // The form params are not part of the URL-only signature.
        assert_eq!(
            check(URL, None, "", Some(SIG), &[TOKEN]),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn wrong_token_is_rejected_and_rotated_token_accepted() {
        assert_eq!(
            check(URL, Some(FORM_CONTENT_TYPE), FORM, Some(SIG), &["54321"]),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(
                URL,
                Some(FORM_CONTENT_TYPE),
                FORM,
                Some(SIG),
                &["54321", TOKEN]
            ),
            Ok(Verified {
                signed: Signed::UrlAndForm,
                key_index: 1
            })
        );
    }

    #[test]
    fn url_only_requests_verify() {
        // A GET (or empty POST): only the URL, query included, is signed. No official vector
        // exists for this case; this one was computed outside the crate with Python's
        // hmac/hashlib over the URL alone.
        const SIG_URL_ONLY: &str = "zYQTYrRWXE7LtzbG4PfP7/bkkGo=";
        assert_eq!(
            check(URL, None, "", Some(SIG_URL_ONLY), &[TOKEN]),
            Ok(Verified {
                signed: Signed::UrlOnly,
                key_index: 0
            })
        );
        assert_eq!(
            check(
                "https://mycompany.com/myapp.php?foo=1&bar=1",
                None,
                "",
                Some(SIG_URL_ONLY),
                &[TOKEN]
            ),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        assert_eq!(
            check(URL, Some(FORM_CONTENT_TYPE), FORM, None, &[TOKEN]),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER))
        );
        for bad in ["not base64!", "AAAA", "RSOYDt4T1cUTdK1PDd93/VVr8B8"] {
            let result = check(URL, Some(FORM_CONTENT_TYPE), FORM, Some(bad), &[TOKEN]);
            assert!(
                matches!(result, Err(Rejection::Malformed(_))),
                "{bad}: {result:?}"
            );
        }
        assert_eq!(
            check(URL, Some(FORM_CONTENT_TYPE), FORM, Some(SIG), &[]),
            Err(Rejection::NotConfigured)
        );
        for url in ["/myapp.php?foo=1", "https:///x", "https://host:12a/x"] {
            let result = check(url, Some(FORM_CONTENT_TYPE), FORM, Some(SIG), &[TOKEN]);
            assert!(
                matches!(result, Err(Rejection::Malformed(_))),
                "{url}: {result:?}"
            );
        }
    }

    #[test]
    fn port_variants_keep_everything_else() {
        let cases = [
            (
                URL,
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            ),
            ("http://h:8080", "http://h", "http://h:8080"),
            (
                "https://u:p@h?x=1",
                "https://u:p@h?x=1",
                "https://u:p@h:443?x=1",
            ),
            (
                "https://u:p@h:444/a",
                "https://u:p@h/a",
                "https://u:p@h:444/a",
            ),
            (
                "https://[::1]:8443/a",
                "https://[::1]/a",
                "https://[::1]:8443/a",
            ),
            ("https://[::1]/a", "https://[::1]/a", "https://[::1]:443/a"),
        ];
        for (url, without, with) in cases {
            assert_eq!(
                port_variants(url),
                Ok((without.to_owned(), with.to_owned())),
                "{url}"
            );
        }
    }
}
