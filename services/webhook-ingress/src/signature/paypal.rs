//! PayPal webhook transmission signatures, verified offline (PROVIDERS.md §5, option B).
//!
//! PayPal sends `PAYPAL-TRANSMISSION-ID`, `PAYPAL-TRANSMISSION-TIME`, `PAYPAL-TRANSMISSION-SIG`
//! (base64), `PAYPAL-CERT-URL` and `PAYPAL-AUTH-ALGO` (`SHA256withRSA`). The signature is
//! RSASSA-PKCS1-v1_5 with SHA-256 over
//! `<transmission id>|<transmission time>|<webhook id>|<crc32(raw body) as unsigned decimal>`,
//! where the webhook id is the id of our configured webhook, not a header.
//!
//! PayPal's SDKs download the certificate named by `PAYPAL-CERT-URL`, check its chain and that
//! its CN ends in `.paypal.com`, then verify. This service has no network and must not trust a
//! URL the request chose, so the certificates are **configured** (PEM X.509) and are the trust
//! root; `PAYPAL-CERT-URL` is not read. What is kept from the SDK: the certificate must be
//! within its validity period at `now`. The alternative, PayPal's
//! `POST /v1/notifications/verify-webhook-signature` postback, needs the network.
//!
//! UNCONFIRMED (PROVIDERS.md §11): PayPal documents no replay window for
//! `PAYPAL-TRANSMISSION-TIME`, and whether a retry (PayPal retries for up to 3 days) gets a new
//! transmission time is not known, so no window is enforced here: dedupe on the transmission
//! id and the event id downstream.

use std::time::SystemTime;

use rsa::pkcs1v15::VerifyingKey as RsaVerifyingKey;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::Verifier as _;
use sha2::Sha256;
use x509_cert::der::{Decode as _, DecodePem as _, Encode as _};
use x509_cert::Certificate;

use super::{decode_base64, rsa_sha256_verifier, Inbound, KeyError, Rejection};

pub const TRANSMISSION_ID_HEADER: &str = "paypal-transmission-id";
pub const TRANSMISSION_TIME_HEADER: &str = "paypal-transmission-time";
pub const TRANSMISSION_SIG_HEADER: &str = "paypal-transmission-sig";
/// Sent by PayPal, deliberately not used: the certificates are configured.
pub const CERT_URL_HEADER: &str = "paypal-cert-url";
pub const AUTH_ALGO_HEADER: &str = "paypal-auth-algo";
/// The only `PAYPAL-AUTH-ALGO` PayPal uses and the only one accepted.
pub const SUPPORTED_AUTH_ALGO: &str = "SHA256withRSA";

/// A configured PayPal signing certificate.
#[derive(Debug, Clone)]
pub struct PaypalCert {
    verifier: RsaVerifyingKey<Sha256>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl PaypalCert {
    /// From one `-----BEGIN CERTIFICATE-----` PEM block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let certificate = Certificate::from_pem(pem.trim()).map_err(|_| KeyError::Certificate)?;
        Self::from_certificate(&certificate)
    }

    /// From DER.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let certificate = Certificate::from_der(der).map_err(|_| KeyError::Certificate)?;
        Self::from_certificate(&certificate)
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    fn from_certificate(certificate: &Certificate) -> Result<Self, KeyError> {
        let tbs = &certificate.tbs_certificate;
        let spki = tbs
            .subject_public_key_info
            .to_der()
            .map_err(|_| KeyError::Certificate)?;
        let key = rsa::RsaPublicKey::from_public_key_der(&spki)
            .map_err(|_| KeyError::WrongAlgorithm("RSA"))?;
        Ok(Self {
            verifier: rsa_sha256_verifier(key)?,
            not_before: tbs.validity.not_before.to_system_time(),
            not_after: tbs.validity.not_after.to_system_time(),
        })
    }

    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// A request that passed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'a> {
    pub transmission_id: &'a str,
    pub transmission_time: &'a str,
    /// Position in the certificate slice of the certificate that matched.
    pub cert_index: usize,
}

/// Verifies a PayPal webhook for the webhook `webhook_id` against the configured certificates.
pub fn verify<'a>(
    inbound: &Inbound<'a>,
    webhook_id: &str,
    certs: &[PaypalCert],
) -> Result<Verified<'a>, Rejection> {
    if webhook_id.is_empty() || certs.is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let transmission_id = inbound.required_header(TRANSMISSION_ID_HEADER)?;
    let transmission_time = inbound.required_header(TRANSMISSION_TIME_HEADER)?;
    let signature = inbound.required_header(TRANSMISSION_SIG_HEADER)?;
    let algorithm = inbound.required_header(AUTH_ALGO_HEADER)?;
    if !algorithm.eq_ignore_ascii_case(SUPPORTED_AUTH_ALGO) {
        return Err(Rejection::UnsupportedAlgorithm);
    }
    // `|` separates the signed fields; neither PayPal value ever contains one.
    if transmission_id.contains('|') || transmission_time.contains('|') {
        return Err(Rejection::Malformed(
            "PayPal transmission id or time contains '|'",
        ));
    }
    const WHAT: &str = "PAYPAL-TRANSMISSION-SIG must be base64";
    let signature = decode_base64(signature, WHAT)?;
    let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice())
        .map_err(|_| Rejection::Malformed(WHAT))?;

    let message = signed_message(transmission_id, transmission_time, webhook_id, inbound.body);
    let mut matched_out_of_validity = false;
    for (cert_index, cert) in certs.iter().enumerate() {
        if cert.verifier.verify(message.as_bytes(), &signature).is_ok() {
            if cert.valid_at(inbound.now) {
                return Ok(Verified {
                    transmission_id,
                    transmission_time,
                    cert_index,
                });
            }
            matched_out_of_validity = true;
        }
    }
    Err(if matched_out_of_validity {
        Rejection::CertificateNotValidNow
    } else {
        Rejection::BadSignature
    })
}

/// The string PayPal signs: `id|time|webhook_id|crc32(body)`, the CRC-32 (IEEE) as an unsigned
/// decimal.
pub fn signed_message(
    transmission_id: &str,
    transmission_time: &str,
    webhook_id: &str,
    body: &[u8],
) -> String {
    let crc = crc32fast::hash(body);
    format!("{transmission_id}|{transmission_time}|{webhook_id}|{crc}")
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::super::test_support::{headers, unix_secs};
    use super::*;

    // Official vector: PayPal's SDK webhook tests (PayPal-Python-SDK
    // test/unit_tests/notifications_test.py; the same values are in PayPal-node-SDK
    // test/notification.js, "verify webhook event success"). PROVIDERS.md §5 lists it.
    const TRANSMISSION_ID: &str = "dfb3be50-fd74-11e4-8bf3-77339302725b";
    const TRANSMISSION_TIME: &str = "2015-05-18T15:45:13Z";
    const WEBHOOK_ID: &str = "4JH86294D6297924G";
    const SIGNATURE: &str = "thy4/U002quzxFavHPwbfJGcc46E8rc5jzgyeafWm5mICTBdY/8rl7WJpn8JA0GKA+oDTPsSruqusw+XXg5RLAP7ip53Euh9Xu3UbUhQFX7UgwzE2FeYoY6lyRMiiiQLzy9BvHfIzNIVhPad4KnC339dr6y2l+mN8ALgI4GCdIh3/SoJO5wE64Bh/ueWtt8EVuvsvXfda2Le5a2TrOI9vLEzsm9GS79hAR/5oLexNz8UiZr045Mr5ObroH4w4oNfmkTaDk9Rj0G19uvISs5QzgmBpauKr7Nw++JI0pr/v5mFctQkoWJSGfBGzPRXawrvIIVHQ9Wer48GR2g9ZiApWg==";
    const BODY: &str = r#"{"id":"WH-0G2756385H040842W-5Y612302CV158622M","create_time":"2015-05-18T15:45:13Z","resource_type":"sale","event_type":"PAYMENT.SALE.COMPLETED","summary":"Payment completed for $ 20.0 USD","resource":{"id":"4EU7004268015634R","create_time":"2015-05-18T15:44:02Z","update_time":"2015-05-18T15:44:21Z","amount":{"total":"20.00","currency":"USD"},"payment_mode":"INSTANT_TRANSFER","state":"completed","protection_eligibility":"ELIGIBLE","protection_eligibility_type":"ITEM_NOT_RECEIVED_ELIGIBLE,UNAUTHORIZED_PAYMENT_ELIGIBLE","parent_payment":"PAY-86C81811X5228590KKVNARQQ","transaction_fee":{"value":"0.88","currency":"USD"},"links":[{"href":"https://api.sandbox.paypal.com/v1/payments/sale/4EU7004268015634R","rel":"self","method":"GET"},{"href":"https://api.sandbox.paypal.com/v1/payments/sale/4EU7004268015634R/refund","rel":"refund","method":"POST"},{"href":"https://api.sandbox.paypal.com/v1/payments/payment/PAY-86C81811X5228590KKVNARQQ","rel":"parent_payment","method":"GET"}]},"links":[{"href":"https://api.sandbox.paypal.com/v1/notifications/webhooks-events/WH-0G2756385H040842W-5Y612302CV158622M","rel":"self","method":"GET"},{"href":"https://api.sandbox.paypal.com/v1/notifications/webhooks-events/WH-0G2756385H040842W-5Y612302CV158622M/resend","rel":"resend","method":"POST"}]}"#;
    const BODY_SHA256: &str = "e03d21c766537533f5a87183bf5f671bd42c54649127efdde25ecbd42e0ff9f7";
    const BODY_CRC32: u32 = 2_771_810_304;
    const SIGNED: &str =
        "dfb3be50-fd74-11e4-8bf3-77339302725b|2015-05-18T15:45:13Z|4JH86294D6297924G|2771810304";
    /// 2015-05-18T15:45:13Z, the transmission time.
    const SENT_AT: u64 = 1_431_963_913;

    // The certificate that vector was signed with: PayPal's sandbox
    // CERT-360caa42-fca2a594-a5cafa77 (CN messageverificationcerts.sandbox.paypal.com, valid
    // 2015-03-18 to 2017-03-22), taken from PayPal-node-SDK's recorded test mocks (a nock
    // reply for .../v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77 dated 2015-05-18,
    // which that SDK's "verify webhook event success" test uses with this vector).
    // PROVIDERS.md §5 lacked it ("needs PayPal's sandbox cert"); with it the official vector
    // verifies end to end (also checked outside the crate with `openssl dgst -verify`).
    const SANDBOX_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIHqDCCBpCgAwIBAgIQCSVMkxB1Kw9SPZtpAr3lTDANBgkqhkiG9w0BAQsFADB1
MQswCQYDVQQGEwJVUzEVMBMGA1UEChMMRGlnaUNlcnQgSW5jMRkwFwYDVQQLExB3
d3cuZGlnaWNlcnQuY29tMTQwMgYDVQQDEytEaWdpQ2VydCBTSEEyIEV4dGVuZGVk
IFZhbGlkYXRpb24gU2VydmVyIENBMB4XDTE1MDMxODAwMDAwMFoXDTE3MDMyMjEy
MDAwMFowggElMR0wGwYDVQQPDBRQcml2YXRlIE9yZ2FuaXphdGlvbjETMBEGCysG
AQQBgjc8AgEDEwJVUzEZMBcGCysGAQQBgjc8AgECEwhEZWxhd2FyZTEQMA4GA1UE
BRMHMzAxNDI2NzEWMBQGA1UECRMNMjIxMSBOIDFzdCBTdDEOMAwGA1UEERMFOTUx
MzExCzAJBgNVBAYTAlVTMRMwEQYDVQQIEwpDYWxpZm9ybmlhMREwDwYDVQQHEwhT
YW4gSm9zZTEVMBMGA1UEChMMUGF5UGFsLCBJbmMuMRgwFgYDVQQLEw9QYXJ0bmVy
IFN1cHBvcnQxNDAyBgNVBAMTK21lc3NhZ2V2ZXJpZmljYXRpb25jZXJ0cy5zYW5k
Ym94LnBheXBhbC5jb20wggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDI
XgwJj1E+vPOLNA7e3nFsRpQq7G1CFcoCNeRgFIGRfd4itt2jBRPfHXf1eeXODQ6V
wTMP6rVYrI3HBQu5SZRZKO3gALPiBWTcz5FhVovYDz/d/DtasA5L7l1xmRM+GGPE
e/D3ETPeyym6GTAuIzR1ju1BuSQlVnIrcILDHrFZo0RyqFH1eNL3oYfgz+ZCv+WH
65rhS60VowiLAb2lsARckJ2P8wKIps3YUxAqVG5SJ9H49ueBDI01wEzE/+59J8s9
GThmbMTqP6x4MneAcGN1TPimGd9wZlbwwrCYDtCoqFDcxMVgvD83uPrIinFwTIOX
w63QSv8/+ANuawBcNJDrAgMBAAGjggOAMIIDfDAfBgNVHSMEGDAWgBQ901Cl1qCt
7vNKYApl0yHU+PjWDzAdBgNVHQ4EFgQUt5yLggZOjjfzULzZCgX2KZO3R/gwNgYD
VR0RBC8wLYIrbWVzc2FnZXZlcmlmaWNhdGlvbmNlcnRzLnNhbmRib3gucGF5cGFs
LmNvbTAOBgNVHQ8BAf8EBAMCBaAwHQYDVR0lBBYwFAYIKwYBBQUHAwEGCCsGAQUF
BwMCMHUGA1UdHwRuMGwwNKAyoDCGLmh0dHA6Ly9jcmwzLmRpZ2ljZXJ0LmNvbS9z
aGEyLWV2LXNlcnZlci1nMS5jcmwwNKAyoDCGLmh0dHA6Ly9jcmw0LmRpZ2ljZXJ0
LmNvbS9zaGEyLWV2LXNlcnZlci1nMS5jcmwwQgYDVR0gBDswOTA3BglghkgBhv1s
AgEwKjAoBggrBgEFBQcCARYcaHR0cHM6Ly93d3cuZGlnaWNlcnQuY29tL0NQUzCB
iAYIKwYBBQUHAQEEfDB6MCQGCCsGAQUFBzABhhhodHRwOi8vb2NzcC5kaWdpY2Vy
dC5jb20wUgYIKwYBBQUHMAKGRmh0dHA6Ly9jYWNlcnRzLmRpZ2ljZXJ0LmNvbS9E
aWdpQ2VydFNIQTJFeHRlbmRlZFZhbGlkYXRpb25TZXJ2ZXJDQS5jcnQwDAYDVR0T
AQH/BAIwADCCAX0GCisGAQQB1nkCBAIEggFtBIIBaQFnAHUApLkJkLQYWBSHuxOi
zGdwCjw1mAT5G9+443fNDsgN3BAAAAFMLovtNgAABAMARjBEAiBTR7r3p76qUJzF
23lsbD/cLsA0KlxoJRSIvIK0OIYWiQIgVQWja8tWBlpcoFP30Iym7IuczitSazpH
fhKAVroTgXgAdgBo9pj4H2SCvjqM7rkoHUz8cVFdZ5PURNEKZ6y7T0/7xAAAAUwu
i+z4AAAEAwBHMEUCIEP3VYyLQB7lOgFo4WstyOurmRe3xa0OVaeFL/bDohHOAiEA
+xQrRVAfaeT4qBdBJzLyVLU4V9bh/qBMXJdjvYujhAcAdgBWFAaaL9fC7NP14b1E
sj7HRna5vJkRXMDvlJhV1onQ3QAAAUwui+6EAAAEAwBHMEUCIQC/YUc5X6xyb3ho
o4VMSJqSoNg9KKkvLh9nUQCdwHi3/QIgNwcBc9ZZCR/aWXQ7hKH6d39kpkDX2Z43
XPy/Kl5sKI4wDQYJKoZIhvcNAQELBQADggEBAHixEZNpb0M1MsvsfNI6lLKxrs9s
JkcBcmxrFyhTC8KP+Qp+Z1fnMRQwpTLIMr1+uAMqCPAnIShGHeFNJpUFSMyW4o0l
+pZGz/L/YJBs7XP3ChSGC17ZKeGSQFfMqMQXfY/L6+n/1HkAwqmewqUMEuUmWN3F
kXJqVngIYGZtxXRyiv2azLOhrNP8BgNZK6d2gVxntQfGr4hnd8Juq8SJy/S4xpPY
YPD8vW7/wSOdAe1/kU38QwDVBQ5PJePS2WFwz8YA/eKcyg9lfsianfw35SjehJbn
wGwzUbjtibyJnv3eAeYDGxaI6vbuoE99pSmYGIwSBLJwZamJHjci6HL6wLg=
-----END CERTIFICATE-----
";

    // A fake for tests and local fakes: a self-signed certificate (valid 2020-01-01 to
    // 2120-01-01) made with Python `cryptography` for a throwaway 2048-bit key, and a
    // signature over FAKE_* made with `openssl dgst -sha256 -sign` using that key: an
    // independent path, only the public half is kept here.
    const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIC5jCCAc6gAwIBAgIEBaF+VzANBgkqhkiG9w0BAQsFADA0MTIwMAYDVQQDDClt
ZXNzYWdldmVyaWZpY2F0aW9uY2VydHMuZmFrZS5wYXlwYWwudGVzdDAgFw0yMDAx
MDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowNDEyMDAGA1UEAwwpbWVzc2FnZXZl
cmlmaWNhdGlvbmNlcnRzLmZha2UucGF5cGFsLnRlc3QwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQDIpAIqtexIIZsZluUZVgkrI702BQng8lNVmkBWCCbt
jpihU5hPghyOxd/h+AThbwlqpS5oZeFCCV8mcKbVUCKva+ZCB3ALDc7w9EaxEaTc
Mn0HO3vIKTRY+ARUdEB/FuLPxmSxbyk2daIYcmXt7nHPnbRmYs14Wkst6V68RD29
U3MJWvu4iLtfTo0TImgkByfCDTR3v4gxLXGRGyeoKI1QHyb4rP9mlm9jFDBEEwg5
b8qUidb8yyY3h6GfiTFiNEByh8B5WS4Z34HJy1KS7fY9s2mKMnk7I8+r2XN4q860
wX/UpvM/TY3OnI4Z3fqetzIqhRc3sHmMo/saqXu2YPL3AgMBAAEwDQYJKoZIhvcN
AQELBQADggEBAMVCy8+OVIcYV3Cj4e8giOREpUVk29zrdKwUEA1cOgqY487//RP/
WobuS5qw9A6pEEzAQQVx+ytJjKWYE8K0hWjs4vvU9s2tDqwmubUuVZxV96fJeGNR
N0fDKnPrSlAEtQDQ6Mu8RUPIUzQ4OlWO+SYlT/novwU5zncQ/J510YIaSZZqIM6T
lbpRzMX73LKqJ8K126ganTR6yIag9iBzZ6lqgmMcPdkUstmOym/9tXDTPR1AZxgM
bhh0NZvLfT71j7wkaVFgmNqzTi4T/zkKqTC4E58N4L7wjtOYxgiAJ9NDOcPtPFyQ
C+LPmos99U3sfErseOxAXyNWxgACEZzS374=
-----END CERTIFICATE-----
";
    const FAKE_TRANSMISSION_ID: &str = "7c1c7f8e-1d2e-4f00-8a00-000000000001";
    const FAKE_TRANSMISSION_TIME: &str = "2026-01-02T03:04:05Z";
    const FAKE_WEBHOOK_ID: &str = "1AB23456CD789012E";
    const FAKE_BODY: &str = r#"{"id":"WH-TEST-1","event_type":"BILLING.SUBSCRIPTION.ACTIVATED"}"#;
    const FAKE_BODY_CRC32: u32 = 2_499_173_173;
    const FAKE_SIGNATURE: &str = "H4bhsWGBg/12y1E97AorNok5qWORSKlaFszb4zOgBm00ul+Kb15FIlOMc4B72wohl4dF31L8DbPGCEdPWPDrxNUKDzQBqdQ2sWIlBwo8z9InzJhGzSEJ0G5+c+vQoYOPwLP9RqaYdH0zF6FCP0BtUGRFmiSSUNc3pHmQHQb8Ju2v2d5NhX7eWugx2Jk1+qRyzKymjTMGREW/FlBdqOWg7S2pdGDsrGc53MhPXkR4ZU8hvGn6cmMDx0HmUL+o2l/pjmDgRza8wJPxiqAUsL2DVDEkWHMnz2hJaR4M3U/p1OqXQPhJ2VmfC/9WC3pWNWVDnssXwn8o/ZN+0s/UYNjFOw==";
    /// 2026-01-02T03:04:05Z.
    const FAKE_SENT_AT: u64 = 1_767_323_045;

    struct Request<'a> {
        id: Option<&'a str>,
        time: Option<&'a str>,
        sig: Option<&'a str>,
        algo: Option<&'a str>,
        body: &'a str,
    }

    const OFFICIAL: Request<'static> = Request {
        id: Some(TRANSMISSION_ID),
        time: Some(TRANSMISSION_TIME),
        sig: Some(SIGNATURE),
        algo: Some("SHA256withRSA"),
        body: BODY,
    };

    const FAKE: Request<'static> = Request {
        id: Some(FAKE_TRANSMISSION_ID),
        time: Some(FAKE_TRANSMISSION_TIME),
        sig: Some(FAKE_SIGNATURE),
        algo: Some("SHA256withRSA"),
        body: FAKE_BODY,
    };

    fn check(
        request: &Request<'_>,
        webhook_id: &str,
        certs: &[PaypalCert],
        now: u64,
    ) -> Result<(usize, String, String), Rejection> {
        let mut pairs = vec![(
            "PAYPAL-CERT-URL",
            "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        )];
        let named = [
            ("PAYPAL-TRANSMISSION-ID", request.id),
            ("PAYPAL-TRANSMISSION-TIME", request.time),
            ("PAYPAL-TRANSMISSION-SIG", request.sig),
            ("PAYPAL-AUTH-ALGO", request.algo),
        ];
        pairs.extend(
            named
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?))),
        );
        let map = headers(&pairs);
        let inbound = Inbound {
            body: request.body.as_bytes(),
            headers: &map,
            url: "https://hooks.example.com/paypal",
            now: unix_secs(now),
        };
        verify(&inbound, webhook_id, certs).map(|verified| {
            (
                verified.cert_index,
                verified.transmission_id.to_owned(),
                verified.transmission_time.to_owned(),
            )
        })
    }

    fn sandbox() -> PaypalCert {
        PaypalCert::from_pem(SANDBOX_CERT).expect("sandbox cert")
    }

    fn fake() -> PaypalCert {
        PaypalCert::from_pem(FAKE_CERT).expect("fake cert")
    }

    #[test]
    fn official_signed_string_is_built_from_the_crc32() {
        assert_eq!(BODY.len(), 1288);
        assert_eq!(hex::encode(sha2::Sha256::digest(BODY)), BODY_SHA256);
        assert_eq!(crc32fast::hash(BODY.as_bytes()), BODY_CRC32);
        assert_eq!(
            signed_message(
                TRANSMISSION_ID,
                TRANSMISSION_TIME,
                WEBHOOK_ID,
                BODY.as_bytes()
            ),
            SIGNED
        );
    }

    #[test]
    fn official_vector_verifies_with_the_sandbox_cert() {
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[sandbox()], SENT_AT),
            Ok((0, TRANSMISSION_ID.to_owned(), TRANSMISSION_TIME.to_owned()))
        );
    }

    #[test]
    fn official_vector_fails_once_the_cert_has_expired() {
        // 2024-01-01: the sandbox certificate ended on 2017-03-22.
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[sandbox()], 1_704_067_200),
            Err(Rejection::CertificateNotValidNow)
        );
        // And before it started (2015-03-01).
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[sandbox()], 1_425_168_000),
            Err(Rejection::CertificateNotValidNow)
        );
    }

    #[test]
    fn fake_cert_vector_verifies() {
        assert_eq!(crc32fast::hash(FAKE_BODY.as_bytes()), FAKE_BODY_CRC32);
        assert_eq!(
            check(&FAKE, FAKE_WEBHOOK_ID, &[fake()], FAKE_SENT_AT),
            Ok((
                0,
                FAKE_TRANSMISSION_ID.to_owned(),
                FAKE_TRANSMISSION_TIME.to_owned()
            ))
        );
    }

    #[test]
    fn tampered_fields_are_rejected() {
        let tampered_body = BODY.replace("20.00", "2000.00");
        let cases = [
            Request {
                body: &tampered_body,
                ..OFFICIAL
            },
            Request {
                id: Some("dfb3be50-fd74-11e4-8bf3-77339302725c"),
                ..OFFICIAL
            },
            Request {
                time: Some("2015-05-18T15:45:14Z"),
                ..OFFICIAL
            },
        ];
        for request in &cases {
            assert_eq!(
                check(request, WEBHOOK_ID, &[sandbox()], SENT_AT),
                Err(Rejection::BadSignature)
            );
        }
        // Another webhook's id.
        assert_eq!(
            check(&OFFICIAL, "4JH86294D6297924H", &[sandbox()], SENT_AT),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn wrong_cert_is_rejected_and_second_cert_accepted() {
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[fake()], SENT_AT),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[fake(), sandbox()], SENT_AT),
            Ok((1, TRANSMISSION_ID.to_owned(), TRANSMISSION_TIME.to_owned()))
        );
        assert_eq!(
            check(&FAKE, FAKE_WEBHOOK_ID, &[sandbox(), fake()], FAKE_SENT_AT),
            Ok((
                1,
                FAKE_TRANSMISSION_ID.to_owned(),
                FAKE_TRANSMISSION_TIME.to_owned()
            ))
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let missing = [
            (
                Request {
                    id: None,
                    ..OFFICIAL
                },
                TRANSMISSION_ID_HEADER,
            ),
            (
                Request {
                    time: None,
                    ..OFFICIAL
                },
                TRANSMISSION_TIME_HEADER,
            ),
            (
                Request {
                    sig: None,
                    ..OFFICIAL
                },
                TRANSMISSION_SIG_HEADER,
            ),
            (
                Request {
                    algo: None,
                    ..OFFICIAL
                },
                AUTH_ALGO_HEADER,
            ),
        ];
        for (request, header) in &missing {
            assert_eq!(
                check(request, WEBHOOK_ID, &[sandbox()], SENT_AT),
                Err(Rejection::MissingHeader(header))
            );
        }
        let malformed = [
            Request {
                sig: Some("not base64!"),
                ..OFFICIAL
            },
            Request {
                id: Some("a|b"),
                ..OFFICIAL
            },
        ];
        for request in &malformed {
            let result = check(request, WEBHOOK_ID, &[sandbox()], SENT_AT);
            assert!(matches!(result, Err(Rejection::Malformed(_))), "{result:?}");
        }
        // Well-formed base64 but not a signature of the right size.
        let short = Request {
            sig: Some("AAAA"),
            ..OFFICIAL
        };
        assert_eq!(
            check(&short, WEBHOOK_ID, &[sandbox()], SENT_AT),
            Err(Rejection::BadSignature)
        );
        let sha1 = Request {
            algo: Some("SHA1withRSA"),
            ..OFFICIAL
        };
        assert_eq!(
            check(&sha1, WEBHOOK_ID, &[sandbox()], SENT_AT),
            Err(Rejection::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn missing_configuration_is_rejected() {
        assert_eq!(
            check(&OFFICIAL, "", &[sandbox()], SENT_AT),
            Err(Rejection::NotConfigured)
        );
        assert_eq!(
            check(&OFFICIAL, WEBHOOK_ID, &[], SENT_AT),
            Err(Rejection::NotConfigured)
        );
    }

    #[test]
    fn certificates_load_and_bad_input_is_refused() {
        let cert = sandbox();
        assert_eq!(cert.not_before(), unix_secs(1_426_636_800)); // 2015-03-18T00:00:00Z
        assert_eq!(cert.not_after(), unix_secs(1_490_184_000)); // 2017-03-22T12:00:00Z
        assert_eq!(fake().not_after(), unix_secs(4_733_510_400)); // 2120-01-01T00:00:00Z
        assert_eq!(
            PaypalCert::from_pem("not a cert").unwrap_err(),
            KeyError::Certificate
        );
        assert_eq!(
            PaypalCert::from_der(&[0x30, 0x00]).unwrap_err(),
            KeyError::Certificate
        );
    }
}
