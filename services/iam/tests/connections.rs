//! Connected accounts over real gRPC on every backend: API-key connections sealed at rest and
//! handed out only through ConnectionCredentialService; the Google OAuth connection flow end to
//! end against the fake provider (state spent once, PKCE, refresh, a revoked grant moving the
//! connection to NEEDS_REAUTHORIZATION); another tenant refused.
use std::sync::Arc;

use maxai_fakes::{FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser};
use maxai_iam::{config::IamConfig, MIGRATIONS, SERVICE_NAMES, STORAGE_NAME};
use maxai_kit::{on_db, sealed::MasterKey, server::GrpcApp, storage};
use maxai_proto::maxai::iam::v1::{
    self as pb, client_service_client::ClientServiceClient,
    connection_credential_service_client::ConnectionCredentialServiceClient,
    connection_service_client::ConnectionServiceClient, tenant_service_client::TenantServiceClient,
    ConnectionProvider as Provider, ConnectionState as State,
};
use maxai_testkit::{authed, backends, iam_config, serve_grpc, Backend, Running, TestIam};
use secrecy::SecretString;
use tonic::Code;

const MESH: &str = "tenants/platform/serviceAccounts/mesh";
const CALLBACK: &str = "http://127.0.0.1:8080/v1/connections/oauth/callback";
const CLIENT_ID: &str = "cal-1234.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-calendar-secret";
const TEST_MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct Server {
    running: Running,
    iam: TestIam,
    db: storage::Db,
    storage: maxai_kit::config::StorageConfig,
}

async fn serve(backend: &Backend, config: IamConfig) -> Server {
    let mut iam = TestIam::start_with(backend, config).await;
    let mut routes = tonic::service::RoutesBuilder::default();
    iam.take_servers().add_to(&mut routes);
    let running = serve_grpc(GrpcApp {
        routes: routes.routes(),
        service_names: SERVICE_NAMES.map(String::from).to_vec(),
        guard: iam.layer(),
    })
    .await;
    let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
        .await
        .expect("connect");
    Server {
        running,
        iam,
        db,
        storage: backend.storage.clone(),
    }
}

impl Server {
    async fn connections(&self, subject: &str) -> ConnectionServiceClient<maxai_testkit::Authed> {
        ConnectionServiceClient::new(authed(&self.running.url(), &self.iam.token(subject)).await)
    }

    /// The provider's redirect arriving at our callback (a public route: no credential).
    async fn complete(
        &self,
        callback: &std::collections::HashMap<String, String>,
    ) -> Result<tonic::Response<pb::CompleteConnectionOAuthResponse>, tonic::Status> {
        ConnectionServiceClient::connect(self.running.url())
            .await
            .expect("connect")
            .complete_connection_o_auth(pb::CompleteConnectionOAuthRequest {
                code: callback["code"].clone(),
                state: callback["state"].clone(),
                ..Default::default()
            })
            .await
    }

    async fn credentials(
        &self,
        subject: &str,
    ) -> ConnectionCredentialServiceClient<maxai_testkit::Authed> {
        ConnectionCredentialServiceClient::new(
            authed(&self.running.url(), &self.iam.token(subject)).await,
        )
    }

    async fn tenant_with_client(&self, tenant: &str, client: &str) {
        let admin = authed(&self.running.url(), &self.iam.admin()).await;
        TenantServiceClient::new(admin.clone())
            .create_tenant(pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: tenant.into(),
                    contact_email: format!("ops@{tenant}.example"),
                    ..Default::default()
                }),
                tenant_id: tenant.into(),
                request_id: String::new(),
            })
            .await
            .expect("tenant");
        ClientServiceClient::new(admin)
            .create_client(pb::CreateClientRequest {
                parent: format!("tenants/{tenant}"),
                client: Some(pb::Client {
                    display_name: client.into(),
                    time_zone: "America/Chicago".into(),
                    ..Default::default()
                }),
                client_id: client.into(),
                request_id: String::new(),
            })
            .await
            .expect("client");
    }

    /// Tenant `acme` with client `dental`, and its tenant admin `ann` (returned).
    async fn acme_admin(&self) -> &'static str {
        const ADMIN: &str = "tenants/acme/users/ann";
        self.tenant_with_client("acme", "dental").await;
        maxai_iam::ensure_grant(&self.storage, ADMIN, "roles/tenant-admin", None)
            .await
            .expect("grant");
        ADMIN
    }

    /// Every stored column of every connection, as text, to look for secrets in clear.
    async fn stored_text(&self) -> String {
        let rows: Vec<(String, String, String, String)> = on_db!(&self.db, |pool| {
            sqlx::query_as("SELECT id, sealed, config, secret_hint FROM connections")
                .fetch_all(pool)
                .await
        })
        .expect("rows");
        format!("{rows:?}")
    }

    async fn sealed_of(&self, name: &str) -> String {
        let id = name.rsplit('/').next().unwrap_or_default().to_owned();
        on_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT sealed FROM connections WHERE id = $1")
                .bind(&id)
                .fetch_one(pool)
                .await
        })
        .expect("sealed")
    }
}

fn config_with_google(google: &FakeGoogle) -> IamConfig {
    let mut config = iam_config();
    let app = &mut config.connections.google;
    app.client_id = CLIENT_ID.into();
    app.client_secret = SecretString::from(CLIENT_SECRET.to_owned());
    app.authorize_url = format!("{}/o/oauth2/v2/auth", google.base_url());
    app.token_url = format!("{}/token", google.base_url());
    app.revoke_url = format!("{}/revoke", google.base_url());
    config.connections.redirect_uri = CALLBACK.into();
    config
}

async fn fake_google() -> Arc<FakeGoogle> {
    let google = FakeGoogle::start(FakeGoogleConfig {
        // Calendar connections send no nonce: they are not a sign-in.
        strict: false,
        ..FakeGoogleConfig::default()
    })
    .await;
    google.add_client(FakeGoogleClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![CALLBACK.into()],
    });
    google.add_user(FakeGoogleUser::new("1001", "front-desk@dental.example"));
    Arc::new(google)
}

/// Follows the authorization URL as a browser would, up to the redirect back to us; returns
/// the callback's query parameters.
async fn authorize(url: &str) -> std::collections::HashMap<String, String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = http.get(url).send().await.expect("authorize");
    assert_eq!(
        response.status().as_u16(),
        302,
        "{:?}",
        response.text().await
    );
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(CALLBACK), "{location}");
    url::Url::parse(&location)
        .expect("location url")
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn api_key_connections_are_sealed_and_handed_only_to_the_platform() {
    for backend in backends().await {
        let s = serve(&backend, iam_config()).await;
        let admin = s.acme_admin().await;
        s.tenant_with_client("rival", "shop").await;
        let mut api = s.connections(admin).await;
        let secret = "twilio-auth-token-0123456789abcdef";

        // Bad input: nothing stored.
        let err = api
            .create_connection(pb::CreateConnectionRequest {
                parent: "tenants/acme/clients/dental".into(),
                connection: Some(pb::Connection {
                    provider: Provider::Twilio as i32,
                    ..Default::default()
                }),
                credential: Some(pb::ApiKeyCredential {
                    api_key: secret.into(),
                    account_id: "not-a-sid".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            s.stored_text().await.len() < 5,
            "nothing stored: {}",
            s.stored_text().await
        );

        let created = api
            .create_connection(pb::CreateConnectionRequest {
                parent: "tenants/acme/clients/dental".into(),
                connection_id: "twilio".into(),
                connection: Some(pb::Connection {
                    provider: Provider::Twilio as i32,
                    display_name: "Front desk line".into(),
                    ..Default::default()
                }),
                credential: Some(pb::ApiKeyCredential {
                    api_key: secret.into(),
                    account_id: "AC0123456789abcdef0123456789abcdef".into(),
                    ..Default::default()
                }),
                request_id: "create-twilio-1".into(),
                // No Twilio here; the key checks have their own test.
                skip_validation: true,
            })
            .await
            .expect("create")
            .into_inner()
            .connection
            .expect("connection");
        let name = "tenants/acme/clients/dental/connections/twilio";
        assert_eq!(created.name, name);
        assert_eq!(created.state, State::Active as i32);
        assert_eq!(created.secret_hint, "...cdef");
        assert_eq!(
            created.external_account_id,
            "AC0123456789abcdef0123456789abcdef"
        );
        assert!(!format!("{created:?}").contains(secret));
        assert!(
            !s.stored_text().await.contains(secret),
            "the key is not stored in clear"
        );

        // A retry with the same request id returns the same connection.
        let again = api
            .create_connection(pb::CreateConnectionRequest {
                parent: "tenants/acme/clients/dental".into(),
                connection: Some(pb::Connection {
                    provider: Provider::Twilio as i32,
                    ..Default::default()
                }),
                credential: Some(pb::ApiKeyCredential {
                    api_key: secret.into(),
                    account_id: "AC0123456789abcdef0123456789abcdef".into(),
                    ..Default::default()
                }),
                request_id: "create-twilio-1".into(),
                // No Twilio here; the key checks have their own test.
                skip_validation: true,
                ..Default::default()
            })
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(again.connection.expect("c").name, name);

        // The tenant admin cannot read the secret; the platform's service identity can.
        let err = s
            .credentials(admin)
            .await
            .get_connection_credential(pb::GetConnectionCredentialRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = s
            .credentials(maxai_iam::BOOTSTRAP_ADMIN)
            .await
            .get_connection_credential(pb::GetConnectionCredentialRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "not even the platform admin"
        );
        let cred = s
            .credentials(MESH)
            .await
            .get_connection_credential(pb::GetConnectionCredentialRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("credential")
            .into_inner()
            .credential
            .expect("credential");
        assert_eq!(cred.api_key, secret);
        assert_eq!(cred.provider, Provider::Twilio as i32);

        // Another tenant sees nothing of it.
        maxai_iam::ensure_grant(
            &s.storage,
            "tenants/rival/users/rob",
            "roles/tenant-admin",
            None,
        )
        .await
        .expect("grant");
        let err = s
            .connections("tenants/rival/users/rob")
            .await
            .get_connection(pb::GetConnectionRequest { name: name.into() })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::NotFound),
            "{err:?}"
        );

        // Listing, then revoking: the secret is destroyed and the credential refused.
        let listed = api
            .list_connections(pb::ListConnectionsRequest {
                parent: "tenants/acme/clients/dental".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.connections.len(), 1);
        let revoked = api
            .revoke_connection(pb::RevokeConnectionRequest {
                name: name.into(),
                etag: String::new(),
            })
            .await
            .expect("revoke")
            .into_inner()
            .connection
            .expect("c");
        assert_eq!(revoked.state, State::Revoked as i32);
        assert!(s.sealed_of(name).await.is_empty());
        let err = s
            .credentials(MESH)
            .await
            .get_connection_credential(pb::GetConnectionCredentialRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let listed = api
            .list_connections(pb::ListConnectionsRequest {
                parent: "tenants/acme/clients/dental".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(
            listed.connections.is_empty(),
            "revoked ones only when asked for"
        );
        api.delete_connection(pb::DeleteConnectionRequest {
            name: name.into(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    }
}

#[tokio::test]
async fn google_calendar_connects_refreshes_and_needs_reauthorization_when_revoked() {
    for backend in backends().await {
        let google = fake_google().await;
        let s = serve(&backend, config_with_google(&google)).await;
        let admin = s.acme_admin().await;
        let mut api = s.connections(admin).await;

        let started = api
            .start_connection_o_auth(pb::StartConnectionOAuthRequest {
                parent: "tenants/acme/clients/dental".into(),
                provider: Provider::GoogleCalendar as i32,
                connection_id: "calendar".into(),
                display_name: "Front desk calendar".into(),
                return_to: "http://127.0.0.1:8080/app/connected".into(),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner();
        let pending = started.connection.clone().expect("connection");
        assert_eq!(pending.state, State::PendingAuthorization as i32);
        assert!(started.authorization_url.contains("code_challenge="));
        assert!(started.authorization_url.contains("access_type=offline"));

        let callback = authorize(&started.authorization_url).await;
        assert_eq!(callback.get("state"), Some(&started.state));
        let public = || async {
            ConnectionServiceClient::connect(s.running.url())
                .await
                .expect("connect")
        };
        // A wrong state is refused and changes nothing.
        let err = public()
            .await
            .complete_connection_o_auth(pb::CompleteConnectionOAuthRequest {
                code: callback["code"].clone(),
                state: "forged".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let done = public()
            .await
            .complete_connection_o_auth(pb::CompleteConnectionOAuthRequest {
                code: callback["code"].clone(),
                state: callback["state"].clone(),
                scope: callback.get("scope").cloned().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .expect("complete")
            .into_inner();
        assert_eq!(done.return_to, "http://127.0.0.1:8080/app/connected");
        let active = done.connection.expect("connection");
        assert_eq!(active.state, State::Active as i32);
        assert!(active.access_token_expire_time.is_some());
        // The state works once.
        let err = public()
            .await
            .complete_connection_o_auth(pb::CompleteConnectionOAuthRequest {
                code: callback["code"].clone(),
                state: callback["state"].clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);

        let name = "tenants/acme/clients/dental/connections/calendar";
        let mut creds = s.credentials(MESH).await;
        let get = |force: bool, min_secs: i64| pb::GetConnectionCredentialRequest {
            name: name.into(),
            min_remaining: Some(prost_types::Duration {
                seconds: min_secs,
                nanos: 0,
            }),
            force_refresh: force,
        };
        let first = creds
            .get_connection_credential(get(false, 60))
            .await
            .expect("credential")
            .into_inner()
            .credential
            .expect("c");
        assert!(
            first.access_token.starts_with("ya29."),
            "{}",
            first.access_token
        );
        assert!(!s.stored_text().await.contains(&first.access_token));
        // Still valid: the same token.
        let same = creds
            .get_connection_credential(get(false, 60))
            .await
            .expect("credential")
            .into_inner()
            .credential
            .expect("c");
        assert_eq!(same.access_token, first.access_token);
        // Expiring within the asked margin: refreshed, and the new token persisted.
        let refreshed = creds
            .get_connection_credential(get(false, 7200))
            .await
            .expect("refresh")
            .into_inner()
            .credential
            .expect("c");
        assert_ne!(refreshed.access_token, first.access_token);
        let after = creds
            .get_connection_credential(get(false, 60))
            .await
            .expect("credential")
            .into_inner()
            .credential
            .expect("c");
        assert_eq!(after.access_token, refreshed.access_token);
        let forced = creds
            .get_connection_credential(get(true, 60))
            .await
            .expect("forced")
            .into_inner()
            .credential
            .expect("c");
        assert_ne!(forced.access_token, refreshed.access_token);
        let token_calls = google
            .requests()
            .iter()
            .filter(|r| r.path == "/token")
            .count();
        assert_eq!(token_calls, 3, "one exchange and two refreshes");

        // The user revokes the grant at Google: the next refresh is refused and the connection
        // asks for re-authorization.
        let master = MasterKey::from_config(
            &SecretString::from(TEST_MASTER_KEY.to_owned()),
            std::path::Path::new("/nonexistent"),
            false,
        )
        .expect("master key");
        let secrets: serde_json::Value =
            serde_json::from_slice(&master.open(name, &s.sealed_of(name).await).expect("opens"))
                .expect("json");
        let refresh_token = secrets["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned();
        let revoked = reqwest::Client::new()
            .post(format!("{}/revoke", google.base_url()))
            .form(&[("token", refresh_token.as_str())])
            .send()
            .await
            .expect("revoke at google");
        assert!(revoked.status().is_success());
        let err = creds
            .get_connection_credential(get(true, 60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let c = api
            .get_connection(pb::GetConnectionRequest { name: name.into() })
            .await
            .expect("get")
            .into_inner()
            .connection
            .expect("c");
        assert_eq!(c.state, State::NeedsReauthorization as i32);
        assert!(!c.last_error.is_empty());
        assert!(!c.last_error.contains(&refresh_token));
    }
}

#[tokio::test]
async fn replicas_refreshing_at_once_spend_the_rotating_refresh_token_once() {
    use maxai_fakes::ghl::{FakeGhl, FakeGhlConfig};
    for backend in backends().await {
        let ghl = FakeGhl::start(FakeGhlConfig::default()).await;
        ghl.add_client("app-1-sandbox", "ghl-secret", &[CALLBACK]);
        ghl.add_location("loc0001", "comp0001", "Dental");
        let mut config = iam_config();
        let app = &mut config.connections.ghl;
        app.client_id = "app-1-sandbox".into();
        app.client_secret = SecretString::from("ghl-secret".to_owned());
        app.authorize_url = ghl.authorize_url();
        app.token_url = format!("{}/oauth/token", ghl.base_url());
        config.connections.redirect_uri = CALLBACK.into();
        let one = serve(&backend, config.clone()).await;
        let two = serve(&backend, config).await;
        let admin = one.acme_admin().await;
        let started = one
            .connections(admin)
            .await
            .start_connection_o_auth(pb::StartConnectionOAuthRequest {
                parent: "tenants/acme/clients/dental".into(),
                provider: Provider::Ghl as i32,
                connection_id: "crm".into(),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner();
        let callback = authorize(&started.authorization_url).await;
        one.complete(&callback).await.expect("complete");
        let name = "tenants/acme/clients/dental/connections/crm";
        for round in 0..4 {
            let (mut a, mut b) = (one.credentials(MESH).await, two.credentials(MESH).await);
            let ask = || pb::GetConnectionCredentialRequest {
                name: name.into(),
                min_remaining: None,
                force_refresh: true,
            };
            let (x, y) = tokio::join!(
                a.get_connection_credential(ask()),
                b.get_connection_credential(ask())
            );
            let x = x.expect("replica one").into_inner().credential.expect("c");
            let y = y.expect("replica two").into_inner().credential.expect("c");
            assert!(
                !x.access_token.is_empty() && !y.access_token.is_empty(),
                "round {round}"
            );
        }
        let c = one
            .connections(admin)
            .await
            .get_connection(pb::GetConnectionRequest { name: name.into() })
            .await
            .expect("get")
            .into_inner()
            .connection
            .expect("c");
        assert_eq!(c.state, State::Active as i32, "{}", c.last_error);
        let refused = ghl
            .requests_to("POST", "/oauth/token")
            .iter()
            .filter(|r| r.status.is_some_and(|s| s >= 400))
            .count();
        assert_eq!(refused, 0, "no refresh token was spent twice");
    }
}

#[tokio::test]
async fn microsoft_calendar_connects_and_keeps_the_rotated_refresh_token() {
    use maxai_fakes::microsoft::{FakeMicrosoft, FakeMicrosoftClient, FakeMicrosoftConfig};
    for backend in backends().await {
        let ms = FakeMicrosoft::start(FakeMicrosoftConfig::default()).await;
        ms.add_client(FakeMicrosoftClient {
            client_id: "ms-app-1".into(),
            client_secret: Some("ms-secret".into()),
            redirect_uris: vec![CALLBACK.into()],
        });
        ms.add_user("front-desk@dental.example");
        let mut config = iam_config();
        let app = &mut config.connections.microsoft;
        app.client_id = "ms-app-1".into();
        app.client_secret = SecretString::from("ms-secret".to_owned());
        app.authorize_url = format!("{}/common/oauth2/v2.0/authorize", ms.base_url());
        app.token_url = format!("{}/common/oauth2/v2.0/token", ms.base_url());
        config.connections.redirect_uri = CALLBACK.into();
        let s = serve(&backend, config).await;
        let admin = s.acme_admin().await;
        let started = s
            .connections(admin)
            .await
            .start_connection_o_auth(pb::StartConnectionOAuthRequest {
                parent: "tenants/acme/clients/dental".into(),
                provider: Provider::MicrosoftCalendar as i32,
                connection_id: "outlook".into(),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner();
        assert!(started.authorization_url.contains("code_challenge="));
        let callback = authorize(&started.authorization_url).await;
        let done = s
            .complete(&callback)
            .await
            .expect("complete (PKCE verifier sent)")
            .into_inner();
        assert_eq!(done.connection.expect("c").state, State::Active as i32);
        let name = "tenants/acme/clients/dental/connections/outlook";
        let mut creds = s.credentials(MESH).await;
        let mut seen = Vec::new();
        // Microsoft refuses a refresh token once used: each refresh works only if the rotated
        // one was persisted.
        for _ in 0..3 {
            let c = creds
                .get_connection_credential(pb::GetConnectionCredentialRequest {
                    name: name.into(),
                    min_remaining: None,
                    force_refresh: true,
                })
                .await
                .expect("refresh")
                .into_inner()
                .credential
                .expect("c");
            assert!(!seen.contains(&c.access_token));
            seen.push(c.access_token);
        }
        assert!(!s.stored_text().await.contains(&seen[2]));
    }
}

#[tokio::test]
async fn api_keys_are_tried_against_the_provider_before_they_are_stored() {
    use maxai_fakes::openrouter::{FakeOpenRouter, FakeOpenRouterConfig, TEST_API_KEY};
    use maxai_fakes::twilio::{FakeTwilio, FakeTwilioConfig};
    let backend = maxai_testkit::sqlite();
    let twilio = FakeTwilio::start(FakeTwilioConfig::default()).await;
    let sid = "AC11111111111111111111111111111111";
    twilio.add_account(sid, "right-token-0123456789");
    let openrouter = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let mut config = iam_config();
    config.connections.key_checks.twilio = twilio.base_url().to_owned();
    config.connections.key_checks.openrouter = openrouter.base_url();
    let s = serve(&backend, config).await;
    let admin = s.acme_admin().await;
    let mut api = s.connections(admin).await;
    let create =
        |provider: Provider, id: &str, key: &str, account: &str| pb::CreateConnectionRequest {
            parent: "tenants/acme/clients/dental".into(),
            connection_id: id.into(),
            connection: Some(pb::Connection {
                provider: provider as i32,
                ..Default::default()
            }),
            credential: Some(pb::ApiKeyCredential {
                api_key: key.into(),
                account_id: account.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
    let err = api
        .create_connection(create(
            Provider::Twilio,
            "twilio",
            "wrong-token-0123456789",
            sid,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        format!("{:?}", err.details()).contains("credential.api_key")
            || err.message().contains("invalid")
    );
    let err = api
        .create_connection(create(Provider::Openrouter, "llm", "sk-or-v1-wrong", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        s.stored_text().await.len() < 5,
        "nothing stored for refused keys"
    );
    api.create_connection(create(
        Provider::Twilio,
        "twilio",
        "right-token-0123456789",
        sid,
    ))
    .await
    .expect("a good Twilio key");
    api.create_connection(create(Provider::Openrouter, "llm", TEST_API_KEY, ""))
        .await
        .expect("a good OpenRouter key");
}

/// A GHL agency (Company) install: the stored token is the agency's, and every credential is a
/// location token for the client's sub-account, exchanged once and reused until it is due.
#[tokio::test]
async fn a_ghl_agency_install_hands_out_location_tokens_for_the_clients_sub_account() {
    use maxai_fakes::ghl::{FakeGhl, FakeGhlConfig};
    const GHL_APP: (&str, &str) = ("65f0c0ffee0000000000fa4e-agency", "ghl-app-secret");
    for backend in backends().await {
        let ghl = FakeGhl::start(FakeGhlConfig::default()).await;
        ghl.add_client(GHL_APP.0, GHL_APP.1, &[CALLBACK]);
        ghl.add_location("loc-north", "agency-co", "North Dental");
        ghl.add_location("loc-south", "agency-co", "South Dental");
        let mut config = iam_config();
        let app = &mut config.connections.ghl;
        app.client_id = GHL_APP.0.into();
        app.client_secret = SecretString::from(GHL_APP.1.to_owned());
        app.authorize_url = ghl.authorize_url();
        app.token_url = format!("{}/oauth/token", ghl.base_url());
        app.location_token_url = format!("{}/oauth/locationToken", ghl.base_url());
        config.connections.redirect_uri = CALLBACK.into();
        let s = serve(&backend, config).await;
        let admin = s.acme_admin().await;
        let settings = |pairs: &[(&str, &str)]| {
            maxai_kit::structs::json_to_struct(&serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
                    .collect(),
            ))
        };
        let start = |id: &str, config| pb::StartConnectionOAuthRequest {
            parent: "tenants/acme/clients/dental".into(),
            provider: Provider::Ghl as i32,
            connection_id: id.into(),
            config,
            ..Default::default()
        };

        // A user_type GHL does not know is refused before anything is stored.
        let refused = s
            .connections(admin)
            .await
            .start_connection_o_auth(start("bad", settings(&[("user_type", "Agency")])))
            .await
            .expect_err("unknown user_type");
        assert_eq!(refused.code(), Code::InvalidArgument);
        // The field violation names the setting (google.rpc.BadRequest in the details).
        assert!(
            String::from_utf8_lossy(refused.details()).contains("config.user_type"),
            "{refused:?}"
        );

        let started = s
            .connections(admin)
            .await
            .start_connection_o_auth(start(
                "agency",
                settings(&[("user_type", "Company"), ("location_id", "loc-south")]),
            ))
            .await
            .expect("start")
            .into_inner();
        assert!(
            started.authorization_url.contains("oauth.write"),
            "an agency token needs oauth.write to exchange location tokens: {}",
            started.authorization_url
        );
        let callback = authorize(&started.authorization_url).await;
        let done = s
            .complete(&callback)
            .await
            .expect("complete")
            .into_inner()
            .connection
            .expect("connection");
        assert_eq!(done.state, State::Active as i32);
        assert_eq!(done.external_account_id, "agency-co");
        let exchange = ghl.requests_to("POST", "/oauth/token");
        assert_eq!(exchange[0].form()["user_type"], "Company");

        let name = "tenants/acme/clients/dental/connections/agency";
        let mut creds = s.credentials(MESH).await;
        let get = |force: bool| pb::GetConnectionCredentialRequest {
            name: name.into(),
            min_remaining: None,
            force_refresh: force,
        };
        let first = creds
            .get_connection_credential(get(false))
            .await
            .expect("credential")
            .into_inner()
            .credential
            .expect("c");
        assert_eq!(first.external_account_id, "loc-south");
        let minted = ghl.requests_to("POST", "/oauth/locationToken");
        assert_eq!(minted.len(), 1);
        let form = minted[0].form();
        assert_eq!(
            (form["companyId"].as_str(), form["locationId"].as_str()),
            ("agency-co", "loc-south")
        );
        assert!(minted[0].header("version").is_some_and(|v| !v.is_empty()));
        // The token is a location token of loc-south: it creates contacts there, not elsewhere.
        let http = reqwest::Client::new();
        let create = |location: &str| {
            http.post(format!("{}/contacts/", ghl.base_url()))
                .bearer_auth(&first.access_token)
                .header("Version", "2021-07-28")
                .json(&serde_json::json!({"locationId": location, "firstName": "Ann"}))
                .send()
        };
        assert_eq!(create("loc-south").await.expect("create").status(), 201);
        assert_eq!(ghl.contacts_of("loc-south").len(), 1);
        assert!(!create("loc-north")
            .await
            .expect("create elsewhere")
            .status()
            .is_success());
        assert!(ghl.contacts_of("loc-north").is_empty());

        // Kept and reused; a forced refresh (the provider refused it) mints a new one.
        let again = creds
            .get_connection_credential(get(false))
            .await
            .expect("again")
            .into_inner()
            .credential
            .expect("c");
        assert_eq!(again.access_token, first.access_token);
        assert_eq!(ghl.requests_to("POST", "/oauth/locationToken").len(), 1);
        let forced = creds
            .get_connection_credential(get(true))
            .await
            .expect("forced")
            .into_inner()
            .credential
            .expect("c");
        assert_ne!(forced.access_token, first.access_token);
        assert_eq!(ghl.requests_to("POST", "/oauth/locationToken").len(), 2);
        let stored = s.stored_text().await;
        for token in ghl.issued_access_tokens() {
            assert!(!stored.contains(&token), "a GHL token is stored in clear");
        }

        // Once authorized, the install kind is fixed.
        let update = s
            .connections(admin)
            .await
            .update_connection(pb::UpdateConnectionRequest {
                connection: Some(pb::Connection {
                    name: name.into(),
                    config: settings(&[("user_type", "Location")]),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["config".into()],
                }),
            })
            .await
            .expect_err("user_type is fixed");
        assert_eq!(update.code(), Code::InvalidArgument);

        // An agency install of several locations without location_id cannot hand out tokens.
        let started = s
            .connections(admin)
            .await
            .start_connection_o_auth(start("unbound", settings(&[("user_type", "Company")])))
            .await
            .expect("start")
            .into_inner();
        let callback = authorize(&started.authorization_url).await;
        s.complete(&callback).await.expect("complete");
        let unbound = creds
            .get_connection_credential(pb::GetConnectionCredentialRequest {
                name: "tenants/acme/clients/dental/connections/unbound".into(),
                min_remaining: None,
                force_refresh: false,
            })
            .await
            .expect_err("no location");
        assert_eq!(unbound.code(), Code::FailedPrecondition);
        assert!(unbound.message().contains("location_id"), "{unbound:?}");
    }
}
