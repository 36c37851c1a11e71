//! The isolation matrix over the platform as `maxai up` composes it (every served service, the
//! gateway, the guards), on SQLite and on PostgreSQL + Redis: for every annotated RPC, no
//! credential is 401; a bad token (expired, forged, wrong issuer, unknown key) is 401; a
//! tenant admin of tenant A aimed at tenant B's resources is refused (403 or 404) and nothing
//! of B changes.
mod common;

use common::{up, up_with, Up};
use maxai_kit::{auth::Claims, descriptors};
use maxai_platform::routed_services;
use maxai_testkit::backends;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Tenants `alpha` and `bravo`, each with a client, a user, a custom role, a role assignment and a
/// service account; `tenants/{t}/users/alice` is tenant-admin of `{t}`.
async fn seed(up: &Up) {
    for t in ["alpha", "bravo"] {
        up.admin(
            Method::POST,
            &format!("/v1/tenants?tenantId={t}"),
            json!({"displayName": t, "contactEmail": format!("ops@{t}.example")}),
        )
        .await;
        up.admin(
            Method::POST,
            &format!("/v1/tenants/{t}/clients?clientId=cli"),
            json!({"displayName": "Client", "timeZone": "UTC"}),
        )
        .await;
        up.admin(
            Method::POST,
            &format!("/v1/tenants/{t}/users?userId=alice"),
            json!({"email": format!("alice@{t}.example")}),
        )
        .await;
        up.admin(
            Method::POST,
            &format!("/v1/tenants/{t}/roles?roleId=readers"),
            json!({"title": "Readers", "permissions": ["iam.clients.get"]}),
        )
        .await;
        up.admin(
            Method::POST,
            &format!("/v1/tenants/{t}/roleAssignments"),
            json!({"principal": format!("tenants/{t}/users/alice"), "role": "roles/tenant-admin", "scope": format!("tenants/{t}")}),
        )
        .await;
        up.admin(
            Method::POST,
            &format!("/v1/tenants/{t}/serviceAccounts?serviceAccountId=bot"),
            json!({"displayName": "Bot"}),
        )
        .await;
    }
}

/// A concrete path for `template` with every variable inside tenant `bravo`.
fn path_in_b(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closing brace") + open;
        let var = &rest[open + 1..close];
        let pattern = var.split_once('=').map_or("*", |(_, p)| p);
        let filled: Vec<String> = pattern
            .split('/')
            .enumerate()
            .map(|(i, seg)| match (seg, i) {
                ("*", 1) if pattern.starts_with("tenants/") => "bravo".to_owned(),
                ("*", _) | ("**", _) => "cli".to_owned(),
                (lit, _) => lit.to_owned(),
            })
            .collect();
        out.push_str(&filled.join("/"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every annotated, non-public RPC of the routed services as (method, http verb, path in b,
/// whether its resource is inside a tenant, the resource field).
fn matrix() -> Vec<(String, Method, String, bool, String)> {
    let mut rows = Vec::new();
    for service in routed_services() {
        for method in descriptors::methods(&service) {
            let (Some(http), Some(auth)) = (
                descriptors::http_rule(&method),
                descriptors::auth_rule(&method),
            ) else {
                continue;
            };
            if auth.public {
                continue;
            }
            use maxai_proto::google::api::http_rule::Pattern;
            let (verb, template) = match http.pattern.expect("pattern") {
                Pattern::Get(p) => (Method::GET, p),
                Pattern::Post(p) => (Method::POST, p),
                Pattern::Patch(p) => (Method::PATCH, p),
                Pattern::Delete(p) => (Method::DELETE, p),
                Pattern::Put(p) => (Method::PUT, p),
                Pattern::Custom(c) => {
                    (Method::from_bytes(c.kind.as_bytes()).expect("verb"), c.path)
                }
            };
            let in_tenant = template.contains("tenants/")
                || !auth.resource_field.is_empty()
                    && !template.contains(&format!("{{{}", auth.resource_field));
            rows.push((
                method.full_name().to_owned(),
                verb,
                path_in_b(&template),
                in_tenant,
                auth.resource_field,
            ));
        }
    }
    rows
}

/// `{"a": {"b": value}}` for the dotted `field` (a resource carried in the body).
fn body_with(field: &str, value: &str) -> Value {
    let mut v = json!(value);
    for part in field.rsplit('.') {
        v = json!({ part: v });
    }
    v
}

async fn audit_count(up: &Up, tenant: &str) -> usize {
    let admin = up.token(maxai_iam::BOOTSTRAP_ADMIN);
    let mut count = 0;
    let mut page = String::new();
    loop {
        let (status, reply) = up
            .call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/auditEntries?pageSize=1000&pageToken={page}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        count += reply["auditEntries"].as_array().map_or(0, Vec::len);
        match reply["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => page = t.to_owned(),
            _ => return count,
        }
    }
}

#[tokio::test]
async fn tenant_a_cannot_touch_tenant_b_and_bad_credentials_are_401() {
    for backend in backends().await {
        let up = up(&backend).await;
        seed(&up).await;
        let before = audit_count(&up, "bravo").await;
        let alice = up.token("tenants/alpha/users/alice");
        let rows = matrix();
        assert!(
            rows.len() > 40,
            "the matrix covers every service: {}",
            rows.len()
        );
        let mut checked_cross_tenant = 0;
        for (name, verb, path, in_tenant, field) in &rows {
            // A resource not named by the path is named in the query (GET, DELETE) or body.
            let carried = !field.is_empty() && !path.contains("tenants/bravo");
            let has_body = verb != Method::GET && verb != Method::DELETE;
            let body = has_body.then(|| {
                if carried {
                    body_with(field, "tenants/bravo")
                } else {
                    json!({})
                }
            });
            let path = &if carried && !has_body {
                let camel: Vec<String> = field.split('.').map(lower_camel).collect();
                format!("{path}?{}=tenants/bravo", camel.join("."))
            } else {
                path.clone()
            };
            let (status, reply) = up.call(verb.clone(), path, None, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{name} {verb} {path} without a credential: {reply}"
            );
            assert_eq!(reply["code"], "UNAUTHENTICATED", "{name}: {reply}");
            if *in_tenant {
                let (status, reply) = up.call(verb.clone(), path, Some(&alice), body).await;
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{name} {verb} {path} by tenant a's admin: {status} {reply}"
                );
                checked_cross_tenant += 1;
            }
        }
        assert!(
            checked_cross_tenant > 30,
            "{checked_cross_tenant} cross-tenant checks"
        );
        // Nothing of b changed: every change is audited, and b's trail did not grow.
        assert_eq!(
            audit_count(&up, "bravo").await,
            before,
            "tenant b was changed"
        );
        for path in [
            "/v1/tenants/bravo/clients/cli",
            "/v1/tenants/bravo/users/alice",
            "/v1/tenants/bravo/roles/readers",
            "/v1/tenants/bravo/serviceAccounts/bot",
        ] {
            up.admin(Method::GET, path, json!(null)).await;
        }
        // Alice is not powerless: her own tenant answers.
        let (status, reply) = up
            .call(
                Method::GET,
                "/v1/tenants/alpha/clients/cli",
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");

        // Bad tokens, at the gateway and straight at a service's gRPC port.
        let now = maxai_kit::storage::now_micros() / 1_000_000;
        let claims = Claims {
            iss: "maxai".into(),
            sub: "tenants/alpha/users/alice".into(),
            aud: maxai_kit::auth::AUDIENCE.into(),
            tid: "alpha".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "t1".into(),
            key: String::new(),
        };
        let expired = up
            .ring
            .sign(&Claims {
                iat: now - 7200,
                nbf: now - 7200,
                exp: now - 3600,
                ..claims.clone()
            })
            .expect("sign");
        let wrong_issuer = up
            .ring
            .sign(&Claims {
                iss: "someone-else".into(),
                ..claims.clone()
            })
            .expect("sign");
        let wrong_audience = up
            .ring
            .sign(&Claims {
                aud: "another-api".into(),
                ..claims.clone()
            })
            .expect("sign");
        let good = up.ring.sign(&claims).expect("sign");
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        let forged = parts.join(".");
        let unknown_kid = {
            let header =
                base64_url(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "k-nobody"}).to_string());
            let good_parts: Vec<&str> = good.split('.').collect();
            format!("{header}.{}.{}", good_parts[1], good_parts[2])
        };
        let (status, _) = up
            .call(
                Method::GET,
                "/v1/tenants/alpha/clients/cli",
                Some(&good),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "the control token works");
        for (what, token) in [
            ("expired", &expired),
            ("wrong issuer", &wrong_issuer),
            ("wrong audience", &wrong_audience),
            ("forged", &forged),
            ("unknown kid", &unknown_kid),
            ("garbage", &"not-a-jwt".to_owned()),
        ] {
            let (status, reply) = up
                .call(
                    Method::GET,
                    "/v1/tenants/alpha/clients/cli",
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {reply}");
            assert_eq!(
                reply["detail"], "the access token is not valid",
                "{what}: one answer for every cause"
            );
            let channel = tonic::transport::Channel::from_shared(up.grpc.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let mut clients =
                maxai_proto::maxai::iam::v1::client_service_client::ClientServiceClient::new(
                    maxai_kit::auth::authed(channel, token).expect("ascii"),
                );
            let err = clients
                .get_client(maxai_proto::maxai::iam::v1::GetClientRequest {
                    name: "tenants/alpha/clients/cli".into(),
                })
                .await
                .expect_err("refused over gRPC too");
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what} over gRPC");
        }
        eprintln!(
            "isolation matrix passed on {} ({} RPCs)",
            backend.name,
            rows.len()
        );
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The public routes answer without a credential, as their standards expect: the JWK Set with
/// only the members an Ed25519 key has, and Google sign-in as a browser redirect.
#[tokio::test]
async fn public_routes_need_no_credential() {
    let google = maxai_fakes::google_oidc::FakeGoogle::start(Default::default()).await;
    let callback = "http://127.0.0.1:9/v1/auth/google/callback";
    google.add_client(maxai_fakes::google_oidc::FakeGoogleClient {
        client_id: "maxai-test".into(),
        client_secret: "secret".into(),
        redirect_uris: vec![callback.into()],
    });
    let backend = maxai_testkit::sqlite();
    let discovery = google.discovery_url();
    let up = up_with(&backend, |c| {
        c.iam.google.client_id = "maxai-test".into();
        c.iam.google.client_secret = secrecy::SecretString::from("secret".to_owned());
        c.iam.google.discovery_url = discovery;
        c.iam.google.redirect_uri = callback.into();
    })
    .await;
    let (status, jwks) = up
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{jwks}");
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("OKP"),
            &json!("Ed25519"),
            &json!("EdDSA"),
            &json!("sig")
        ),
        "{jwks}"
    );
    for absent in ["n", "e", "y"] {
        assert!(key.get(absent).is_none(), "{absent} must be absent: {jwks}");
    }
    let kid = key["kid"].as_str().expect("kid");
    let token = up.token(maxai_iam::BOOTSTRAP_ADMIN);
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().expect("header"),
        )
        .expect("base64"),
    )
    .expect("json");
    assert_eq!(header["kid"], kid, "tokens name the published key");

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_redirects
        .get(format!("{}/v1/auth/google/login", up.http))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&google.base_url().to_string()),
        "{location}"
    );
    for part in [
        "state=",
        "nonce=",
        "code_challenge=",
        "code_challenge_method=S256",
        "client_id=maxai-test",
    ] {
        assert!(location.contains(part), "{part} missing from {location}");
    }
}
