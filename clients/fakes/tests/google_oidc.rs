//! The Google OIDC fake over real HTTP, checked against PROVIDERS.md §8.2: discovery, the code
//! flow with PKCE, ID tokens verified through the JWKS, Google's error shapes, revocation,
//! `hd`, key rotation and failure injection.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use maxai_fakes::{FailureMode, FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser};
use reqwest::header::{CACHE_CONTROL, LOCATION, RETRY_AFTER};
use reqwest::redirect::Policy;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const CLIENT_ID: &str = "1234-fake.apps.googleusercontent.com";
const SECRET: &str = "GOCSPX-fake-secret";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/google/callback";
// RFC 7636 appendix B: an S256 pair computed outside this code.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Harness {
    fake: FakeGoogle,
    http: reqwest::Client,
    alice: FakeGoogleUser,
    bob: FakeGoogleUser,
}

async fn harness() -> Harness {
    harness_with(FakeGoogleConfig::default()).await
}

async fn harness_with(config: FakeGoogleConfig) -> Harness {
    let fake = FakeGoogle::start(config).await;
    fake.add_client(FakeGoogleClient {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
    });
    let alice = FakeGoogleUser {
        hd: Some("example.com".into()),
        name: "Alice Example".into(),
        ..FakeGoogleUser::new("108000000000000000001", "alice@example.com")
    };
    let bob = FakeGoogleUser::new("108000000000000000002", "bob@gmail.com");
    // Alice first: she is the default user.
    fake.add_user(alice.clone());
    fake.add_user(bob.clone());
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    Harness {
        fake,
        http,
        alice,
        bob,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    /// An authorization URL as our adapters build it; `extra` adds or overrides parameters
    /// (an empty value drops one).
    fn auth_url(&self, extra: &[(&str, &str)]) -> Url {
        let base = [
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            (
                "scope",
                "openid email profile https://www.googleapis.com/auth/calendar",
            ),
            ("state", "csrf-123"),
            ("nonce", "nonce-456"),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        let mut params: Vec<(&str, &str)> = base
            .into_iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .collect();
        params.extend(extra.iter().filter(|(_, v)| !v.is_empty()));
        Url::parse_with_params(&self.url("/o/oauth2/v2/auth"), &params).unwrap()
    }

    /// Follows the authorization request; returns the parameters of the 302 back to us.
    async fn authorize(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let response = self.http.get(self.auth_url(extra)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "{}",
            response.text().await.unwrap()
        );
        let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT), "{location}");
        location.query_pairs().into_owned().collect()
    }

    async fn code(&self, extra: &[(&str, &str)]) -> String {
        self.authorize(extra)
            .await
            .remove("code")
            .expect("redirect carries a code")
    }

    async fn post_token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// `client_secret_post` code exchange with the right verifier.
    async fn exchange(&self, code: &str) -> (StatusCode, Value) {
        self.post_token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    /// The whole flow; returns the verified ID token claims.
    async fn sign_in(&self, extra: &[(&str, &str)]) -> Value {
        let (status, body) = self.exchange(&self.code(extra).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.verify(body["id_token"].as_str().unwrap())
            .await
            .unwrap()
    }

    /// Verifies an ID token the way an adapter must: kid → JWKS, RS256, iss, aud, exp.
    async fn verify(&self, token: &str) -> jsonwebtoken::errors::Result<Value> {
        let jwks: JwkSet = self
            .http
            .get(self.url("/oauth2/v3/certs"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(token)?.kid.expect("header kid");
        let key = DecodingKey::from_jwk(jwks.find(&kid).expect("kid published in JWKS"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[CLIENT_ID]);
        validation.set_issuer(&[self.fake.issuer()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
    }
}

fn assert_oauth_error(got: (StatusCode, Value), status: StatusCode, error: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], error, "{}", got.1);
    assert!(got.1["error_description"].is_string(), "{}", got.1);
}

#[tokio::test]
async fn discovery_points_at_the_fake_with_googles_capabilities() {
    let h = harness().await;
    let base = h.fake.base_url();
    assert!(base.starts_with("http://127.0.0.1:"));
    assert_eq!(
        h.fake.discovery_url(),
        format!("{base}/.well-known/openid-configuration")
    );

    let response = h.http.get(h.fake.discovery_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["issuer"], base);
    assert_eq!(h.fake.issuer(), base);
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{base}/o/oauth2/v2/auth")
    );
    assert_eq!(doc["token_endpoint"], format!("{base}/token"));
    assert_eq!(doc["userinfo_endpoint"], format!("{base}/v1/userinfo"));
    assert_eq!(doc["revocation_endpoint"], format!("{base}/revoke"));
    assert_eq!(doc["jwks_uri"], format!("{base}/oauth2/v3/certs"));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(
        doc["scopes_supported"],
        json!(["openid", "email", "profile"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post", "client_secret_basic"])
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        json!(["plain", "S256"])
    );
    for list in [
        "response_types_supported",
        "claims_supported",
        "grant_types_supported",
    ] {
        assert!(
            doc[list].as_array().is_some_and(|l| !l.is_empty()),
            "{list}"
        );
    }
    assert!(doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("refresh_token")));
}

#[tokio::test]
async fn configured_issuer_appears_in_discovery_and_id_tokens() {
    let issuer = "https://accounts.google.test";
    let h = harness_with(FakeGoogleConfig {
        issuer: Some(issuer.into()),
        ..Default::default()
    })
    .await;
    let doc: Value = h
        .http
        .get(h.fake.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer);
    // Endpoints stay on the loopback base: only the issuer is a name.
    assert_eq!(doc["token_endpoint"], h.url("/token"));

    assert_eq!(h.sign_in(&[]).await["iss"], issuer);
}

#[tokio::test]
async fn code_flow_with_pkce_s256_yields_a_verifiable_id_token() {
    let h = harness().await;
    let reply = h.authorize(&[("login_hint", "alice@example.com")]).await;
    assert_eq!(reply["state"], "csrf-123");
    assert_eq!(reply["hd"], "example.com");
    let code = &reply["code"];
    // Google's codes hold a '/', so callers must URL-decode the redirect.
    assert!(code.starts_with("4/0"), "{code}");
    assert!(reply["scope"].contains("https://www.googleapis.com/auth/userinfo.email"));

    let response = h
        .http
        .post(h.url("/token"))
        .form(&[
            ("code", code.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("redirect_uri", REDIRECT),
            ("grant_type", "authorization_code"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let access_token = body["access_token"].as_str().unwrap();
    assert!(access_token.starts_with("ya29."));
    assert!(body["refresh_token"].as_str().unwrap().starts_with("1//0"));
    let scope = body["scope"].as_str().unwrap();
    for granted in [
        "openid",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/calendar",
    ] {
        assert!(scope.split(' ').any(|s| s == granted), "{scope}");
    }

    let id_token = body["id_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap(),
        h.fake.current_kid()
    );
    let claims = h.verify(id_token).await.unwrap();
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["azp"], CLIENT_ID);
    assert_eq!(claims["sub"], h.alice.sub);
    assert_eq!(claims["email"], h.alice.email);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["hd"], "example.com");
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["picture"], h.alice.picture);
    assert_eq!(claims["nonce"], "nonce-456");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let at_hash = URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token)[..16]);
    assert_eq!(claims["at_hash"], at_hash);

    let certs = h.http.get(h.url("/oauth2/v3/certs")).send().await.unwrap();
    let cache = certs.headers()[CACHE_CONTROL].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age=21600"), "{cache}");
    let jwks: Value = certs.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["alg"], &key["use"]),
        (&json!("RSA"), &json!("RS256"), &json!("sig"))
    );
    assert!(key["n"].is_string() && key["e"] == "AQAB");

    let info: Value = h
        .http
        .get(h.url("/v1/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], h.alice.sub);
    assert_eq!(info["email"], h.alice.email);
    assert_eq!(info["hd"], "example.com");
    assert!(info.get("aud").is_none());

    // Traffic is recorded for assertions, with every secret redacted.
    let token_request = h
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .unwrap();
    assert_eq!(token_request.method, "POST");
    assert_eq!(token_request.status, Some(200));
    assert_eq!(token_request.form["grant_type"], "authorization_code");
    assert_eq!(token_request.form["client_id"], CLIENT_ID);
    for secret in ["client_secret", "code", "code_verifier"] {
        assert_eq!(token_request.form[secret], "[redacted]", "{secret}");
    }
    let recorded = format!("{:?}", h.fake.requests());
    assert!(
        !recorded.contains(SECRET)
            && !recorded.contains(VERIFIER)
            && !recorded.contains(access_token)
    );
}

#[tokio::test]
async fn login_hint_and_login_next_as_choose_the_user() {
    let h = harness().await;
    let bob = h.sign_in(&[("login_hint", "bob@gmail.com")]).await;
    assert_eq!(bob["sub"], h.bob.sub);
    assert!(
        bob.get("hd").is_none(),
        "a consumer account has no hd claim"
    );

    assert_eq!(h.sign_in(&[]).await["sub"], h.alice.sub);

    h.fake.login_next_as("bob@gmail.com");
    assert_eq!(
        h.sign_in(&[("login_hint", "alice@example.com")]).await["sub"],
        h.bob.sub
    );
    assert_eq!(
        h.sign_in(&[]).await["sub"],
        h.alice.sub,
        "login_next_as lasts one authorization"
    );
}

#[tokio::test]
async fn claims_follow_scopes_and_refresh_token_needs_offline() {
    let h = harness().await;
    let code = h.code(&[("scope", "openid"), ("access_type", "")]).await;
    let (status, body) = h.exchange(&code).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none(), "{body}");
    let claims = h.verify(body["id_token"].as_str().unwrap()).await.unwrap();
    assert!(
        claims.get("email").is_none() && claims.get("name").is_none(),
        "{claims}"
    );
    assert_eq!(claims["hd"], "example.com");
}

#[tokio::test]
async fn a_used_code_is_invalid_grant() {
    let h = harness().await;
    let code = h.code(&[]).await;
    assert_eq!(h.exchange(&code).await.0, StatusCode::OK);
    assert_oauth_error(
        h.exchange(&code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
}

#[tokio::test]
async fn a_wrong_or_missing_verifier_is_invalid_grant_and_burns_the_code() {
    let h = harness().await;
    let code = h.code(&[]).await;
    let wrong = "x".repeat(43);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("redirect_uri", REDIRECT),
        ("code_verifier", wrong.as_str()),
    ];
    let got = h.post_token(&form).await;
    assert_eq!(got.1["error_description"], "Invalid code verifier.");
    assert_oauth_error(got, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_oauth_error(
        h.exchange(&code).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    let code = h.code(&[]).await;
    form[1].1 = &code;
    form.pop();
    assert_oauth_error(
        h.post_token(&form).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    // plain PKCE: the verifier is the challenge itself.
    let code = h
        .code(&[
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ])
        .await;
    assert_eq!(h.exchange(&code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_client_credentials_are_401_invalid_client() {
    let h = harness().await;
    let code = h.code(&[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", CLIENT_ID),
        ("client_secret", "not-the-secret"),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    assert_oauth_error(
        h.post_token(&form).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );

    let response = h
        .http
        .post(h.url("/token"))
        .basic_auth(CLIENT_ID, Some("not-the-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(
        (response.status(), response.json().await.unwrap()),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );

    let unknown = [
        ("grant_type", "authorization_code"),
        ("client_id", "nobody"),
        ("client_secret", SECRET),
    ];
    assert_oauth_error(
        h.post_token(&unknown).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    );

    // The failed attempts named the client wrongly, so the code was never consumed.
    assert_eq!(h.exchange(&code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn token_endpoint_rejects_unknown_grants_and_mismatched_redirects() {
    let h = harness().await;
    let password = [
        ("grant_type", "password"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ];
    assert_oauth_error(
        h.post_token(&password).await,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    );

    let code = h.code(&[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ("code_verifier", VERIFIER),
    ];
    assert_oauth_error(
        h.post_token(&form).await,
        StatusCode::BAD_REQUEST,
        "redirect_uri_mismatch",
    );

    let response = h
        .http
        .post(h.url("/token"))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_client_or_redirect_is_an_error_page_not_a_redirect() {
    let h = harness().await;
    let response = h
        .http
        .get(h.auth_url(&[("redirect_uri", "https://evil.example/cb")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(LOCATION).is_none());
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("redirect_uri_mismatch"));

    let response = h
        .http
        .get(h.auth_url(&[("client_id", "nobody.apps.googleusercontent.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(LOCATION).is_none());
    assert!(response.text().await.unwrap().contains("invalid_client"));

    // Strict mode: our adapters must always send state, nonce, PKCE and openid.
    for missing in ["state", "nonce", "code_challenge"] {
        let response = h
            .http
            .get(h.auth_url(&[(missing, "")]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{missing}");
        assert!(response.headers().get(LOCATION).is_none());
    }
    let response = h
        .http
        .get(h.auth_url(&[("code_challenge_method", "S512")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = h
        .http
        .get(h.auth_url(&[("response_type", "token")]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refresh_returns_a_new_access_token_and_keeps_the_refresh_token() {
    let h = harness().await;
    let (_, first) = h.exchange(&h.code(&[]).await).await;
    let refresh_token = first["refresh_token"].as_str().unwrap();

    // client_secret_basic this time.
    let response = h
        .http
        .post(h.url("/token"))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_ne!(body["access_token"], first["access_token"]);
    let claims = h.verify(body["id_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(claims["sub"], h.alice.sub);
    assert!(claims.get("nonce").is_none());

    // The refresh token still works, and belongs to this client only.
    let again = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ];
    assert_eq!(h.post_token(&again).await.0, StatusCode::OK);
    h.fake.add_client(FakeGoogleClient {
        client_id: "other".into(),
        client_secret: "s".into(),
        redirect_uris: vec![],
    });
    let other = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "other"),
        ("client_secret", "s"),
    ];
    assert_oauth_error(
        h.post_token(&other).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let h = harness().await;
    let (_, body) = h.exchange(&h.code(&[]).await).await;
    let refresh_token = body["refresh_token"].as_str().unwrap();
    let access_token = body["access_token"].as_str().unwrap();
    let userinfo = || {
        h.http
            .get(h.url("/v1/userinfo"))
            .bearer_auth(access_token)
            .send()
    };
    assert_eq!(userinfo().await.unwrap().status(), StatusCode::OK);

    let response = h
        .http
        .post(h.url("/revoke"))
        .form(&[("token", refresh_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ];
    let got = h.post_token(&refresh).await;
    assert_eq!(
        got.1["error_description"],
        "Token has been expired or revoked."
    );
    assert_oauth_error(got, StatusCode::BAD_REQUEST, "invalid_grant");
    // Revoking the refresh token ends the whole grant, access token included.
    let response = userinfo().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));

    let response = h
        .http
        .post(h.url(&format!("/revoke?token={access_token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_token"
    );
}

#[tokio::test]
async fn expired_access_tokens_fail_userinfo() {
    let h = harness().await;
    let (_, body) = h.exchange(&h.code(&[]).await).await;
    h.fake.expire_access_tokens();
    let response = h
        .http
        .get(h.url("/v1/userinfo"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = h.http.get(h.url("/v1/userinfo")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hd_refuses_users_of_other_domains_with_access_denied() {
    let h = harness().await;
    let reply = h.authorize(&[("hd", "other.com")]).await;
    assert_eq!(
        reply.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert_eq!(reply["state"], "csrf-123");
    assert!(!reply.contains_key("code"));

    // hd=* admits any Workspace account but no consumer one.
    let reply = h
        .authorize(&[("hd", "*"), ("login_hint", "bob@gmail.com")])
        .await;
    assert_eq!(
        reply.get("error").map(String::as_str),
        Some("access_denied")
    );

    let reply = h.authorize(&[("hd", "example.com")]).await;
    assert!(reply.contains_key("code") && !reply.contains_key("error"));
}

#[tokio::test]
async fn minted_tokens_key_rotation_and_wrong_keys() {
    let h = harness().await;
    let claims = h.fake.claims_for(&h.alice, CLIENT_ID);
    let before = h.fake.sign_id_token(claims.clone());
    assert_eq!(h.verify(&before).await.unwrap()["email"], h.alice.email);

    let old_kid = h.fake.current_kid();
    let new_kid = h.fake.rotate_key();
    assert_ne!(old_kid, new_kid);
    let jwks: Value = h
        .http
        .get(h.url("/oauth2/v3/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
    // Tokens issued before the rotation still verify; new ones carry the new kid.
    h.verify(&before).await.unwrap();
    let after = h.fake.sign_id_token(claims.clone());
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
        new_kid
    );
    h.verify(&after).await.unwrap();

    let forged = h.fake.sign_id_token_with_wrong_key(claims.clone());
    assert_eq!(
        jsonwebtoken::decode_header(&forged).unwrap().kid.unwrap(),
        new_kid
    );
    assert_eq!(
        *h.verify(&forged).await.unwrap_err().kind(),
        ErrorKind::InvalidSignature
    );

    let mut expired = claims.clone();
    expired["exp"] = json!(expired["iat"].as_u64().unwrap() - 3600);
    let err = h.verify(&h.fake.sign_id_token(expired)).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::ExpiredSignature);

    let mut foreign = claims;
    foreign["aud"] = json!("someone-else.apps.googleusercontent.com");
    let err = h.verify(&h.fake.sign_id_token(foreign)).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidAudience);
}

#[tokio::test]
async fn injected_failures_answer_500_then_429_with_retry_after_then_recover() {
    let h = harness().await;
    h.fake.fail_next(1, FailureMode::Status500);
    h.fake.fail_next(
        1,
        FailureMode::Status429 {
            retry_after_secs: 7,
        },
    );
    let discovery = || h.http.get(h.fake.discovery_url()).send();
    assert_eq!(
        discovery().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let limited = discovery().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[RETRY_AFTER], "7");
    assert_eq!(discovery().await.unwrap().status(), StatusCode::OK);

    // Scoped to one path: other paths are untouched.
    h.fake.fail_next_at("/token", 1, FailureMode::Status500);
    assert_eq!(discovery().await.unwrap().status(), StatusCode::OK);
    let code = h.code(&[]).await;
    assert_eq!(h.exchange(&code).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    // The injected failure answered before the handler, so the code is still good.
    assert_eq!(h.exchange(&code).await.0, StatusCode::OK);

    h.fake.fail_share(1.0, FailureMode::Status500);
    assert_eq!(
        discovery().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    h.fake.fail_share(0.0, FailureMode::Status500);
    assert_eq!(discovery().await.unwrap().status(), StatusCode::OK);

    let statuses: Vec<Option<u16>> = h.fake.requests().iter().map(|r| r.status).take(3).collect();
    assert_eq!(statuses, [Some(500), Some(429), Some(200)]);
    h.fake.clear_requests();
    assert!(h.fake.requests().is_empty());
}

#[tokio::test]
async fn slow_failure_trips_a_client_timeout() {
    let h = harness().await;
    h.fake
        .fail_next(1, FailureMode::Slow(Duration::from_millis(500)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = client.get(h.fake.discovery_url()).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        client
            .get(h.fake.discovery_url())
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn basic_auth_credentials_are_form_decoded() {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded inside the Basic header.
    let h = harness().await;
    let secret = "p@ss:word/+";
    h.fake.add_client(FakeGoogleClient {
        client_id: "odd".into(),
        client_secret: secret.into(),
        redirect_uris: vec![REDIRECT.into()],
    });
    let code = h.code(&[("client_id", "odd")]).await;
    let encoded = serde_urlencoded::to_string([("", secret)]).unwrap();
    let basic = STANDARD.encode(format!("odd:{}", &encoded[1..]));
    let response = h
        .http
        .post(h.url("/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let recorded = h
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .unwrap();
    assert_eq!(recorded.authorization.as_deref(), Some("Basic [redacted]"));
}
