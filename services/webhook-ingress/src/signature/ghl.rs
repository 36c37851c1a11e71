//! GoHighLevel (LeadConnector) webhook signatures.
//!
//! Two schemes, both asymmetric and both over the raw JSON body (PROVIDERS.md §1.1):
//! - `x-ghl-signature`: Ed25519, base64 of the 64-byte signature. GHL's public key is
//!   configurable; the value third-party code hard-codes
//!   (`MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=`) is UNCONFIRMED against
//!   an official page.
//! - `x-wh-signature` (legacy; its July 1 2026 retirement is UNCONFIRMED): RSASSA-PKCS1-v1_5
//!   with SHA-256, base64, under GHL's published 4096-bit key, also configurable because GHL
//!   announces rotations by email.
//!
//! Which header is used follows GHL's SDK: `x-ghl-signature` when it is present **and** an
//! Ed25519 key is configured; otherwise `x-wh-signature`. When the new header is used its
//! result is final: a failing `x-ghl-signature` does not fall back to the legacy header.
//!
//! The signatures carry no timestamp, but the signed body does: a body whose top-level
//! `timestamp` (ISO 8601) is more than [`REPLAY_WINDOW`] away from our clock is refused as a
//! replay (GHL's docs suggest 5 minutes). A body without one (whether every event carries it
//! is UNCONFIRMED) is not refused for that; dedupe on `webhookId` happens at storage.

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use ed25519_dalek::{Signature, VerifyingKey};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs1v15::VerifyingKey as RsaVerifyingKey;
use rsa::signature::Verifier as _;
use sha2::Sha256;

use super::{
    decode_base64, decode_config_base64, rsa_sha256_verifier, Inbound, KeyError, Rejection,
};

/// How far a signed body's `timestamp` may be from our clock, either way.
pub const REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The Ed25519 signature header.
pub const SIGNATURE_HEADER: &str = "x-ghl-signature";
/// The legacy RSA signature header.
pub const LEGACY_SIGNATURE_HEADER: &str = "x-wh-signature";

/// GHL's Ed25519 webhook public key.
#[derive(Debug, Clone)]
pub struct Ed25519PublicKey(VerifyingKey);

impl Ed25519PublicKey {
    /// From the raw 32-byte key.
    pub fn from_raw(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::Encoding)?;
        Self::checked(key)
    }

    /// From SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_der(der)
            .map_err(|_| KeyError::WrongAlgorithm("Ed25519"))?;
        Self::checked(key)
    }

    /// From a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|_| KeyError::WrongAlgorithm("Ed25519"))?;
        Self::checked(key)
    }

    /// From either a PEM block or the bare base64 of the SPKI DER (the form GHL's SDK reads
    /// from `WEBHOOK_SIGNATURE_PUBLIC_KEY`).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.contains("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_spki_der(&decode_config_base64(text)?)
        }
    }

    /// The raw 32-byte key.
    pub fn to_raw(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    fn checked(key: VerifyingKey) -> Result<Self, KeyError> {
        if key.is_weak() {
            return Err(KeyError::WeakEd25519Key);
        }
        Ok(Self(key))
    }
}

/// GHL's legacy RSA webhook public key.
#[derive(Debug, Clone)]
pub struct RsaPublicKey {
    verifier: RsaVerifyingKey<Sha256>,
    bits: usize,
}

impl RsaPublicKey {
    /// From SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = rsa::RsaPublicKey::from_public_key_der(der)
            .map_err(|_| KeyError::WrongAlgorithm("RSA"))?;
        Self::checked(key)
    }

    /// From a `PUBLIC KEY` (SPKI, as GHL publishes it) or `RSA PUBLIC KEY` (PKCS#1) PEM block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let parsed = if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            rsa::RsaPublicKey::from_pkcs1_pem(pem).ok()
        } else {
            rsa::RsaPublicKey::from_public_key_pem(pem).ok()
        };
        Self::checked(parsed.ok_or(KeyError::WrongAlgorithm("RSA"))?)
    }

    /// From either a PEM block or the bare base64 of the SPKI DER.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.contains("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_spki_der(&decode_config_base64(text)?)
        }
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    fn checked(key: rsa::RsaPublicKey) -> Result<Self, KeyError> {
        use rsa::traits::PublicKeyParts as _;
        let bits = key.size() * 8;
        Ok(Self {
            verifier: rsa_sha256_verifier(key)?,
            bits,
        })
    }
}

/// Which GHL scheme authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `x-ghl-signature`, Ed25519.
    Ed25519,
    /// `x-wh-signature`, RSA PKCS#1 v1.5 SHA-256.
    LegacyRsa,
}

/// A request that passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub scheme: Scheme,
    /// Position in the key slice of that scheme of the key that matched.
    pub key_index: usize,
}

/// Verifies a GHL webhook against the configured Ed25519 and RSA keys.
pub fn verify(
    inbound: &Inbound<'_>,
    ed25519_keys: &[Ed25519PublicKey],
    rsa_keys: &[RsaPublicKey],
) -> Result<Verified, Rejection> {
    if ed25519_keys.is_empty() && rsa_keys.is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let current = inbound.header(SIGNATURE_HEADER)?;
    let legacy = inbound.header(LEGACY_SIGNATURE_HEADER)?;
    let verified = match (current, legacy) {
        (Some(signature), _) if !ed25519_keys.is_empty() => {
            verify_ed25519(inbound.body, signature, ed25519_keys)
        }
        (_, Some(signature)) if !rsa_keys.is_empty() => {
            verify_rsa(inbound.body, signature, rsa_keys)
        }
        (None, None) => Err(Rejection::MissingHeader(SIGNATURE_HEADER)),
        // A signature is present, but only for a scheme with no key configured.
        _ => Err(Rejection::NotConfigured),
    }?;
    check_body_time(inbound)?;
    Ok(verified)
}

/// The replay window over the signed body's `timestamp`, when it has a readable one.
fn check_body_time(inbound: &Inbound<'_>) -> Result<(), Rejection> {
    #[derive(serde::Deserialize)]
    struct Stamped {
        #[serde(default)]
        timestamp: Option<serde_json::Value>,
    }
    // Not JSON or no timestamp: schema validation judges the body later.
    let Ok(Stamped {
        timestamp: Some(serde_json::Value::String(at)),
    }) = serde_json::from_slice(inbound.body)
    else {
        return Ok(());
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&at) else {
        return Ok(());
    };
    let signed_at = std::time::Duration::from_millis(at.timestamp_millis().max(0) as u64);
    super::check_window(
        inbound.since_epoch(),
        signed_at,
        REPLAY_WINDOW,
        REPLAY_WINDOW,
    )
}

fn verify_ed25519(
    body: &[u8],
    signature: &str,
    keys: &[Ed25519PublicKey],
) -> Result<Verified, Rejection> {
    const WHAT: &str = "x-ghl-signature must be base64 of a 64-byte Ed25519 signature";
    let bytes: [u8; 64] = decode_base64(signature, WHAT)?
        .try_into()
        .map_err(|_| Rejection::Malformed(WHAT))?;
    let signature = Signature::from_bytes(&bytes);
    keys.iter()
        .position(|key| key.0.verify_strict(body, &signature).is_ok())
        .map(|key_index| Verified {
            scheme: Scheme::Ed25519,
            key_index,
        })
        .ok_or(Rejection::BadSignature)
}

fn verify_rsa(body: &[u8], signature: &str, keys: &[RsaPublicKey]) -> Result<Verified, Rejection> {
    const WHAT: &str = "x-wh-signature must be base64";
    let bytes = decode_base64(signature, WHAT)?;
    let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice())
        .map_err(|_| Rejection::Malformed(WHAT))?;
    keys.iter()
        .position(|key| key.verifier.verify(body, &signature).is_ok())
        .map(|key_index| Verified {
            scheme: Scheme::LegacyRsa,
            key_index,
        })
        .ok_or(Rejection::BadSignature)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::super::test_support::{headers, unix_secs};
    use super::*;

    // RFC 8032 §7.1 TEST 1 (official vector): the key PROVIDERS.md says to use as the
    // stand-in "GHL" signing key for fakes.
    const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_EMPTY_MESSAGE_SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    const RFC8032_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";

    // PROVIDERS.md [DERIVED] vector: this exact body (no trailing newline) signed with the
    // RFC 8032 key. Ed25519 is deterministic, so it is stable.
    const CONTACT_CREATE: &str = r#"{"type":"ContactCreate","locationId":"loc_123","id":"contact_123","timestamp":"2025-01-28T14:35:00Z","webhookId":"wh_123"}"#;
    const CONTACT_CREATE_ED25519: &str =
        "Mk96QNTG6wrPX740n1w7w59yNstiNGJOet19VncDJDh6XSVRIKkWbQVpDr8Tlzkx26HCeCCSEQuj2/2kvSJ2Bw==";

    // The Ed25519 key third-party code hard-codes for GHL (UNCONFIRMED), and its raw bytes.
    const GHL_ED25519_SPKI_B64: &str =
        "MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=";
    const GHL_ED25519_RAW: &str =
        "8b61d1d6cacbe28d7c3bc0516bb815258ec6edbba96cddc7f40c09ac708388e8";

    // GHL's published legacy RSA key (PROVIDERS.md §1.1).
    const GHL_RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
";

    // GHL publishes no RSA vector. This one comes from an independent path: a throwaway
    // 2048-bit key generated with `openssl genpkey`, and `openssl dgst -sha256 -sign` over
    // CONTACT_CREATE. Only the public half is kept here.
    const TEST_RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyKQCKrXsSCGbGZblGVYJ
KyO9NgUJ4PJTVZpAVggm7Y6YoVOYT4IcjsXf4fgE4W8JaqUuaGXhQglfJnCm1VAi
r2vmQgdwCw3O8PRGsRGk3DJ9Bzt7yCk0WPgEVHRAfxbiz8ZksW8pNnWiGHJl7e5x
z520ZmLNeFpLLelevEQ9vVNzCVr7uIi7X06NEyJoJAcnwg00d7+IMS1xkRsnqCiN
UB8m+Kz/ZpZvYxQwRBMIOW/KlInW/MsmN4ehn4kxYjRAcofAeVkuGd+ByctSku32
PbNpijJ5OyPPq9lzeKvOtMF/1KbzP02NzpyOGd36nrcyKoUXN7B5jKP7Gql7tmDy
9wIDAQAB
-----END PUBLIC KEY-----
";
    const CONTACT_CREATE_RSA_OPENSSL: &str = "RNX9iUSw9ibEjgm6+f/grMSEq2vHAahXgQ/sLMdmUitCoGTy2ykcr4BdYCAG0chTw5M3doVTzIsvzl0UZy/0XOYByzSbrDi2EH1S8KUXK37WCccUpcAqQDoS4AL8kgwKVp4SNQpX5LQa5O+wpU0TziO8gJ18f44EsuQX1hw9JGkHfGowlpzqcPFlixkxS50G4oQ6Cm3eHKhzE0pKGSjzIyOT3Z6Wvc4FSAi1azxSsZWIl54/Ptqhb511vlOkdJqtL1zVWNKVqAT19/dR4qN1CPIcoQd4ZQdgdKBMpDc0tiZWAIPWnPi6j8ycwXPlWASDLr3ngngpofzxcmDFvpgMcw==";

    fn rfc_key() -> Ed25519PublicKey {
        Ed25519PublicKey::from_pem(RFC8032_PUBLIC_PEM).expect("RFC 8032 key")
    }

    fn test_rsa_key() -> RsaPublicKey {
        RsaPublicKey::from_pem(TEST_RSA_PEM).expect("test RSA key")
    }

    fn other_ed25519_key() -> Ed25519PublicKey {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        Ed25519PublicKey::from_raw(&signing.verifying_key().to_bytes()).expect("other key")
    }

    fn check(
        body: &str,
        pairs: &[(&str, &str)],
        ed: &[Ed25519PublicKey],
        rsa: &[RsaPublicKey],
    ) -> Result<Verified, Rejection> {
        let map = headers(pairs);
        let inbound = Inbound {
            body: body.as_bytes(),
            headers: &map,
            url: "https://hooks.example.com/ghl",
            now: unix_secs(1_738_075_000),
        };
        verify(&inbound, ed, rsa)
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn rfc8032_test1_key_forms_agree() {
        let secret: [u8; 32] = hex::decode(RFC8032_SECRET).unwrap().try_into().unwrap();
        let public: [u8; 32] = hex::decode(RFC8032_PUBLIC).unwrap().try_into().unwrap();
        assert_eq!(
            SigningKey::from_bytes(&secret).verifying_key().to_bytes(),
            public
        );
        assert_eq!(rfc_key().to_raw(), public);
        assert_eq!(
            Ed25519PublicKey::from_raw(&public).unwrap().to_raw(),
            public
        );
        // The bare base64 SPKI form parses to the same key.
        let bare = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        assert_eq!(Ed25519PublicKey::parse(bare).unwrap().to_raw(), public);
    }

    #[test]
    fn rfc8032_test1_empty_message_verifies() {
        let signature = b64(&hex::decode(RFC8032_EMPTY_MESSAGE_SIGNATURE).unwrap());
        let ok = check("", &[(SIGNATURE_HEADER, &signature)], &[rfc_key()], &[]);
        assert_eq!(
            ok,
            Ok(Verified {
                scheme: Scheme::Ed25519,
                key_index: 0
            })
        );
        // The same signature does not cover a non-empty body.
        let bad = check("x", &[(SIGNATURE_HEADER, &signature)], &[rfc_key()], &[]);
        assert_eq!(bad, Err(Rejection::BadSignature));
    }

    #[test]
    fn derived_contact_create_vector_verifies() {
        let ok = check(
            CONTACT_CREATE,
            &[("X-GHL-Signature", CONTACT_CREATE_ED25519)],
            &[rfc_key()],
            &[],
        );
        assert_eq!(
            ok,
            Ok(Verified {
                scheme: Scheme::Ed25519,
                key_index: 0
            })
        );
        // Cross-check the derived vector by signing in the test with the RFC 8032 secret.
        let secret: [u8; 32] = hex::decode(RFC8032_SECRET).unwrap().try_into().unwrap();
        let signed = SigningKey::from_bytes(&secret).sign(CONTACT_CREATE.as_bytes());
        assert_eq!(b64(&signed.to_bytes()), CONTACT_CREATE_ED25519);
    }

    #[test]
    fn ed25519_tampered_body_is_rejected() {
        let tampered = CONTACT_CREATE.replace("contact_123", "contact_124");
        let result = check(
            &tampered,
            &[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)],
            &[rfc_key()],
            &[],
        );
        assert_eq!(result, Err(Rejection::BadSignature));
        // Re-serialised JSON (pretty, or a trailing newline) is not the signed bytes.
        let newline = format!("{CONTACT_CREATE}\n");
        let result = check(
            &newline,
            &[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)],
            &[rfc_key()],
            &[],
        );
        assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn a_signed_body_outside_the_replay_window_is_refused() {
        let map = headers(&[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)]);
        let at = |now: u64| {
            verify(
                &Inbound {
                    body: CONTACT_CREATE.as_bytes(),
                    headers: &map,
                    url: "https://hooks.example.com/ghl",
                    now: unix_secs(now),
                },
                &[rfc_key()],
                &[],
            )
        };
        // The vector's timestamp is 2025-01-28T14:35:00Z = 1_738_074_900.
        assert!(at(1_738_074_900 + 300).is_ok());
        assert!(at(1_738_074_900 - 300).is_ok());
        assert_eq!(at(1_738_074_900 + 301), Err(Rejection::Expired));
        assert_eq!(at(1_738_074_900 - 301), Err(Rejection::FromTheFuture));
        // A signed body without a timestamp has no window to miss.
        let signing =
            SigningKey::from_bytes(&hex::decode(RFC8032_SECRET).unwrap().try_into().unwrap());
        let plain = r#"{"type":"ContactCreate","locationId":"loc_123","id":"contact_123"}"#;
        let signature = b64(&signing.sign(plain.as_bytes()).to_bytes());
        let map = headers(&[(SIGNATURE_HEADER, &signature)]);
        let inbound = Inbound {
            body: plain.as_bytes(),
            headers: &map,
            url: "https://hooks.example.com/ghl",
            now: unix_secs(4_000_000_000),
        };
        assert!(verify(&inbound, &[rfc_key()], &[]).is_ok());
    }

    #[test]
    fn ed25519_wrong_key_is_rejected() {
        let result = check(
            CONTACT_CREATE,
            &[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)],
            &[other_ed25519_key()],
            &[],
        );
        assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn ed25519_rotated_second_key_is_accepted() {
        let result = check(
            CONTACT_CREATE,
            &[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)],
            &[other_ed25519_key(), rfc_key()],
            &[],
        );
        assert_eq!(
            result,
            Ok(Verified {
                scheme: Scheme::Ed25519,
                key_index: 1
            })
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        assert_eq!(
            check(CONTACT_CREATE, &[], &[rfc_key()], &[test_rsa_key()]),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER))
        );
        for bad in ["not base64!", "AAAA", &CONTACT_CREATE_ED25519[..40]] {
            let result = check(
                CONTACT_CREATE,
                &[(SIGNATURE_HEADER, bad)],
                &[rfc_key()],
                &[],
            );
            assert!(
                matches!(result, Err(Rejection::Malformed(_))),
                "{bad}: {result:?}"
            );
        }
        let result = check(
            CONTACT_CREATE,
            &[(LEGACY_SIGNATURE_HEADER, "%%%")],
            &[],
            &[test_rsa_key()],
        );
        assert!(matches!(result, Err(Rejection::Malformed(_))), "{result:?}");
        let twice = [
            (SIGNATURE_HEADER, CONTACT_CREATE_ED25519),
            (SIGNATURE_HEADER, CONTACT_CREATE_ED25519),
        ];
        assert_eq!(
            check(CONTACT_CREATE, &twice, &[rfc_key()], &[]),
            Err(Rejection::DuplicateHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn nothing_configured_is_rejected() {
        let result = check(
            CONTACT_CREATE,
            &[(SIGNATURE_HEADER, CONTACT_CREATE_ED25519)],
            &[],
            &[],
        );
        assert_eq!(result, Err(Rejection::NotConfigured));
        // Only the legacy header, but only an Ed25519 key.
        let result = check(
            CONTACT_CREATE,
            &[(LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL)],
            &[rfc_key()],
            &[],
        );
        assert_eq!(result, Err(Rejection::NotConfigured));
    }

    #[test]
    fn legacy_rsa_openssl_vector_verifies() {
        let ok = check(
            CONTACT_CREATE,
            &[(LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL)],
            &[],
            &[test_rsa_key()],
        );
        assert_eq!(
            ok,
            Ok(Verified {
                scheme: Scheme::LegacyRsa,
                key_index: 0
            })
        );
    }

    #[test]
    fn legacy_rsa_tampered_body_and_wrong_key_are_rejected() {
        let tampered = CONTACT_CREATE.replace("wh_123", "wh_999");
        let header = [(LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL)];
        assert_eq!(
            check(&tampered, &header, &[], &[test_rsa_key()]),
            Err(Rejection::BadSignature)
        );
        let published = RsaPublicKey::from_pem(GHL_RSA_PEM).unwrap();
        assert_eq!(
            check(CONTACT_CREATE, &header, &[], &[published]),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn legacy_rsa_rotated_second_key_is_accepted() {
        let published = RsaPublicKey::from_pem(GHL_RSA_PEM).unwrap();
        let result = check(
            CONTACT_CREATE,
            &[(LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL)],
            &[],
            &[published, test_rsa_key()],
        );
        assert_eq!(
            result,
            Ok(Verified {
                scheme: Scheme::LegacyRsa,
                key_index: 1
            })
        );
    }

    #[test]
    fn new_header_is_preferred_when_both_are_present() {
        let both = [
            (SIGNATURE_HEADER, CONTACT_CREATE_ED25519),
            (LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL),
        ];
        let keys = (&[rfc_key()], &[test_rsa_key()]);
        assert_eq!(
            check(CONTACT_CREATE, &both, keys.0, keys.1),
            Ok(Verified {
                scheme: Scheme::Ed25519,
                key_index: 0
            })
        );
        // The Ed25519 result is final: a bad x-ghl-signature does not fall back to a valid
        // x-wh-signature (GHL SDK behaviour).
        let malformed_new = [
            (SIGNATURE_HEADER, "AAAA"),
            (LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL),
        ];
        let result = check(CONTACT_CREATE, &malformed_new, keys.0, keys.1);
        assert!(matches!(result, Err(Rejection::Malformed(_))), "{result:?}");
        let wrong_new = [
            (SIGNATURE_HEADER, &b64(&[0u8; 64])[..]),
            (LEGACY_SIGNATURE_HEADER, CONTACT_CREATE_RSA_OPENSSL),
        ];
        assert_eq!(
            check(CONTACT_CREATE, &wrong_new, keys.0, keys.1),
            Err(Rejection::BadSignature)
        );
        // Without an Ed25519 key configured, the legacy header is used even if both are sent.
        assert_eq!(
            check(CONTACT_CREATE, &wrong_new, &[], keys.1),
            Ok(Verified {
                scheme: Scheme::LegacyRsa,
                key_index: 0
            })
        );
    }

    #[test]
    fn published_keys_parse() {
        let rsa = RsaPublicKey::from_pem(GHL_RSA_PEM).expect("GHL RSA key");
        assert_eq!(rsa.bits(), 4096);
        let ed = Ed25519PublicKey::parse(GHL_ED25519_SPKI_B64).expect("GHL Ed25519 key");
        assert_eq!(hex::encode(ed.to_raw()), GHL_ED25519_RAW);
    }

    #[test]
    fn bad_configuration_is_refused() {
        // An RSA key where an Ed25519 key is expected, and the other way round.
        assert_eq!(
            Ed25519PublicKey::from_pem(GHL_RSA_PEM).unwrap_err(),
            KeyError::WrongAlgorithm("Ed25519")
        );
        assert_eq!(
            RsaPublicKey::from_pem(RFC8032_PUBLIC_PEM).unwrap_err(),
            KeyError::WrongAlgorithm("RSA")
        );
        assert_eq!(
            Ed25519PublicKey::parse("###").unwrap_err(),
            KeyError::Encoding
        );
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519PublicKey::from_raw(&identity).unwrap_err(),
            KeyError::WeakEd25519Key
        );
    }
}
