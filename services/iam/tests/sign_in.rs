//! Signing in and the tokens that follow, over real gRPC on every backend: Google sign-in
//! (OIDC code + PKCE) against the fake provider, SSO domain bindings verified over HTTP,
//! refresh-token rotation with reuse detection, revocation, API-key exchange and signing keys.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use maxai_fakes::{FakeGoogle, FakeGoogleClient, FakeGoogleConfig, FakeGoogleUser};
use maxai_iam::{
    config::IamConfig, sessions::RefreshTokens, BOOTSTRAP_ADMIN, MIGRATIONS, SERVICE_NAMES,
    STORAGE_NAME,
};
use maxai_kit::{
    auth::Verifier,
    on_db,
    server::GrpcApp,
    shared_state::SharedState,
    storage::{self, Db},
    CancellationToken,
};
use maxai_proto::maxai::iam::v1::{
    self as pb, audit_service_client::AuditServiceClient, auth_service_client::AuthServiceClient,
    role_service_client::RoleServiceClient,
    service_account_service_client::ServiceAccountServiceClient,
    sso_domain_service_client::SsoDomainServiceClient, tenant_service_client::TenantServiceClient,
    user_service_client::UserServiceClient,
};
use maxai_testkit::{authed, backends, iam_config, serve_grpc, Authed, Backend, Running, TestIam};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{transport::Channel, Code, Status};

// ---------------------------------------------------------------------------------------
// Harness

/// IAM served over gRPC behind its own guard, and its database for looking underneath.
struct Server {
    running: Running,
    iam: TestIam,
    db: Db,
}

impl Server {
    fn url(&self) -> String {
        self.running.url()
    }

    /// A channel whose calls carry the bootstrap platform admin's token.
    async fn admin(&self) -> Authed {
        authed(&self.url(), &self.iam.admin()).await
    }

    /// A channel whose calls carry `token`.
    async fn with(&self, token: &str) -> Authed {
        authed(&self.url(), token).await
    }

    /// `AuthService` without credentials, as a browser or a script reaches it.
    async fn public(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(self.url())
            .await
            .expect("connect")
    }

    async fn create_tenant(&self, id: &str) {
        TenantServiceClient::new(self.admin().await)
            .create_tenant(pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: format!("Tenant {id}"),
                    contact_email: format!("ops@{id}.example"),
                    ..Default::default()
                }),
                tenant_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("create tenant");
    }

    async fn grant(&self, tenant: &str, principal: &str, role: &str) {
        RoleServiceClient::new(self.admin().await)
            .create_role_assignment(pb::CreateRoleAssignmentRequest {
                parent: format!("tenants/{tenant}"),
                role_assignment: Some(pb::RoleAssignment {
                    principal: principal.into(),
                    role: role.into(),
                    scope: format!("tenants/{tenant}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("grant");
    }

    /// A user `id` of `tenant` holding `role` on the tenant; its name.
    async fn member(&self, tenant: &str, id: &str, role: &str) -> String {
        let user = self
            .invite(tenant, id, &format!("{id}@{tenant}.example"))
            .await;
        self.grant(tenant, &user.name, role).await;
        user.name
    }

    async fn invite(&self, tenant: &str, id: &str, email: &str) -> pb::User {
        UserServiceClient::new(self.admin().await)
            .create_user(pb::CreateUserRequest {
                parent: format!("tenants/{tenant}"),
                user: Some(pb::User {
                    email: email.into(),
                    display_name: id.into(),
                    ..Default::default()
                }),
                user_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("invite")
            .into_inner()
            .user
            .expect("user")
    }

    async fn user(&self, name: &str) -> pb::User {
        UserServiceClient::new(self.admin().await)
            .get_user(pb::GetUserRequest { name: name.into() })
            .await
            .expect("get user")
            .into_inner()
            .user
            .expect("user")
    }

    /// `GetTenant` of `tenant` carrying `token`: the guarded call most tests probe with.
    async fn get_tenant(&self, token: &str, tenant: &str) -> Result<pb::Tenant, Status> {
        TenantServiceClient::new(self.with(token).await)
            .get_tenant(pb::GetTenantRequest {
                name: format!("tenants/{tenant}"),
            })
            .await
            .map(|r| r.into_inner().tenant.expect("tenant"))
    }

    /// Audit entries of `tenant` for `action` with `outcome`, newest first.
    async fn audit(
        &self,
        tenant: &str,
        action: &str,
        outcome: pb::AuditOutcome,
    ) -> Vec<pb::AuditEntry> {
        AuditServiceClient::new(self.admin().await)
            .list_audit_entries(pb::ListAuditEntriesRequest {
                parent: format!("tenants/{tenant}"),
                page_size: 1000,
                action: action.into(),
                outcome: outcome as i32,
                ..Default::default()
            })
            .await
            .expect("list audit entries")
            .into_inner()
            .audit_entries
    }

    async fn users_with_email(&self, email: &str) -> i64 {
        on_db!(&self.db, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE email = $1"
        )
        .bind(email)
        .fetch_one(pool)
        .await)
        .expect("count users")
    }
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
    Server { running, iam, db }
}

/// A spawned HTTP server, stopped on drop.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn spawn_http(app: Router) -> (String, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, Task(task))
}

/// Where tenants publish their domain-verification records: `GET /{domain}` answers the body
/// set for the domain, 404 otherwise.
struct Records {
    base: String,
    bodies: Arc<Mutex<HashMap<String, String>>>,
    _task: Task,
}

impl Records {
    async fn start() -> Records {
        let bodies: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let app = Router::new()
            .route(
                "/{domain}",
                get(
                    |State(bodies): State<Arc<Mutex<HashMap<String, String>>>>,
                     Path(domain): Path<String>| async move {
                        match bodies.lock().expect("records").get(&domain) {
                            Some(body) => (StatusCode::OK, body.clone()).into_response(),
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    },
                ),
            )
            .with_state(bodies.clone());
        let (base, task) = spawn_http(app).await;
        Records {
            base,
            bodies,
            _task: task,
        }
    }

    fn url_template(&self) -> String {
        format!("{}/{{domain}}", self.base)
    }

    fn publish(&self, domain: &str, body: &str) {
        self.bodies
            .lock()
            .expect("records")
            .insert(domain.to_owned(), body.to_owned());
    }
}

const CLIENT_ID: &str = "1234-maxai.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-maxai-test-secret";
const CALLBACK: &str = "http://127.0.0.1/v1/auth/google/callback";
const APP: &str = "http://127.0.0.1/app/";
const SIGN_IN: &str = "maxai.iam.v1.AuthService/CompleteGoogleSignIn";

/// Rewrites the next ID token the provider issues (its claims as issued, nonce included).
type Tamper = Box<dyn FnOnce(&FakeGoogle, Value) -> String + Send>;

#[derive(Clone)]
struct ProxyState {
    base: String,
    google: Arc<FakeGoogle>,
    tamper: Arc<Mutex<Option<Tamper>>>,
    http: reqwest::Client,
}

/// The fake provider behind a token endpoint that can rewrite the next ID token, so the ID
/// token checks are exercised through the real flow (state, nonce and PKCE still apply).
struct Proxy {
    base: String,
    tamper: Arc<Mutex<Option<Tamper>>>,
    _task: Task,
}

impl Proxy {
    async fn start(google: Arc<FakeGoogle>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let tamper: Arc<Mutex<Option<Tamper>>> = Arc::default();
        let state = ProxyState {
            base: base.clone(),
            google,
            tamper: tamper.clone(),
            http: reqwest::Client::new(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(proxy_discovery))
            .route("/token", post(proxy_token))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            base,
            tamper,
            _task: Task(task),
        }
    }

    fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base)
    }

    fn tamper_next(&self, f: impl FnOnce(&FakeGoogle, Value) -> String + Send + 'static) {
        *self.tamper.lock().expect("tamper") = Some(Box::new(f));
    }
}

async fn proxy_discovery(State(s): State<ProxyState>) -> Response {
    let mut doc: Value = match s.http.get(s.google.discovery_url()).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    doc["token_endpoint"] = json!(format!("{}/token", s.base));
    Json(doc).into_response()
}

async fn proxy_token(State(s): State<ProxyState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = s.http.post(format!("{}/token", s.google.base_url()));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req = req.header(header::CONTENT_TYPE.as_str(), ct.as_bytes());
    }
    let Ok(resp) = req.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut reply: Value = resp.json().await.unwrap_or_default();
    let tamper = s.tamper.lock().expect("tamper").take();
    if let (Some(tamper), Some(id_token)) = (tamper, reply["id_token"].as_str()) {
        let claims = jwt_claims(id_token);
        reply["id_token"] = json!(tamper(&s.google, claims));
    }
    (status, Json(reply)).into_response()
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// IAM with Google sign-in pointed at the fake provider (directly, or through a [`Proxy`]).
struct Sso {
    server: Server,
    google: Arc<FakeGoogle>,
    records: Records,
    proxy: Option<Proxy>,
    browser: reqwest::Client,
}

impl Sso {
    async fn start(backend: &Backend, through_proxy: bool) -> Sso {
        let google = Arc::new(FakeGoogle::start(FakeGoogleConfig::default()).await);
        google.add_client(FakeGoogleClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![CALLBACK.into()],
        });
        let records = Records::start().await;
        let proxy = if through_proxy {
            Some(Proxy::start(google.clone()).await)
        } else {
            None
        };
        let mut config = iam_config();
        config.google.client_id = CLIENT_ID.into();
        config.google.client_secret = SecretString::from(CLIENT_SECRET.to_owned());
        config.google.discovery_url = proxy
            .as_ref()
            .map_or_else(|| google.discovery_url(), Proxy::discovery_url);
        config.google.redirect_uri = CALLBACK.into();
        config.google.return_to_allowlist = vec![APP.into()];
        config.google.domain_verification_url = records.url_template();
        let server = serve(backend, config).await;
        Sso {
            server,
            google,
            records,
            proxy,
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("started with the proxy")
    }

    async fn start_sign_in(
        &self,
        req: pb::StartGoogleSignInRequest,
    ) -> pb::StartGoogleSignInResponse {
        self.server
            .public()
            .await
            .start_google_sign_in(req)
            .await
            .expect("start sign-in")
            .into_inner()
    }

    /// Sends the browser to `authorization_url` and reads the provider's redirect back.
    async fn approve(&self, authorization_url: &str) -> HashMap<String, String> {
        let resp = self
            .browser
            .get(authorization_url)
            .send()
            .await
            .expect("authorization endpoint");
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::FOUND,
            "{:?}",
            resp.text().await
        );
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(location.starts_with(CALLBACK), "{location}");
        let url = url::Url::parse(&location).expect("callback URL");
        url.query_pairs().into_owned().collect()
    }

    /// The callback: what the gateway's `/v1/auth/google/callback` passes on.
    async fn complete(
        &self,
        q: &HashMap<String, String>,
    ) -> Result<pb::CompleteGoogleSignInResponse, Status> {
        let p = |k: &str| q.get(k).cloned().unwrap_or_default();
        self.server
            .public()
            .await
            .complete_google_sign_in(pb::CompleteGoogleSignInRequest {
                code: p("code"),
                state: p("state"),
                error: p("error"),
                error_description: p("error_description"),
                scope: p("scope"),
                authuser: p("authuser"),
                hd: p("hd"),
                prompt: p("prompt"),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The whole browser round trip, approving as `who` (an email or a Google `sub`).
    async fn sign_in_as(&self, who: &str) -> Result<pb::CompleteGoogleSignInResponse, Status> {
        let started = self.start_sign_in(Default::default()).await;
        self.google.login_next_as(who);
        let q = self.approve(&started.authorization_url).await;
        self.complete(&q).await
    }

    async fn bind(&self, tenant: &str, domain: &str, auto_provision: bool) -> pb::SsoDomain {
        SsoDomainServiceClient::new(self.server.admin().await)
            .create_sso_domain(pb::CreateSsoDomainRequest {
                parent: format!("tenants/{tenant}"),
                sso_domain: Some(pb::SsoDomain {
                    default_role: "roles/tenant-member".into(),
                    auto_provision,
                    ..Default::default()
                }),
                sso_domain_id: domain.into(),
                request_id: String::new(),
            })
            .await
            .expect("bind domain")
            .into_inner()
            .sso_domain
            .expect("binding")
    }

    async fn verify(&self, binding: &pb::SsoDomain) -> Result<pb::SsoDomain, Status> {
        SsoDomainServiceClient::new(self.server.admin().await)
            .verify_sso_domain(pb::VerifySsoDomainRequest {
                name: binding.name.clone(),
            })
            .await
            .map(|r| r.into_inner().sso_domain.expect("binding"))
    }
}

fn workspace_user(sub: &str, email: &str, hd: &str) -> FakeGoogleUser {
    FakeGoogleUser {
        hd: Some(hd.into()),
        ..FakeGoogleUser::new(sub, email)
    }
}

fn refused(result: Result<impl std::fmt::Debug, Status>, code: Code, what: &str) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            s
        }
    }
}

/// Polls `f` until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Google sign-in

/// The authorization request carries everything the callback is checked against, and a
/// full round trip signs an invited user in with working tokens.
#[tokio::test]
async fn google_sign_in_activates_an_invited_user() {
    for backend in backends().await {
        let sso = Sso::start(&backend, false).await;
        let server = &sso.server;
        server.create_tenant("acme").await;
        let invited = server.invite("acme", "ann", "Ann@Acme.example").await;
        assert_eq!(invited.state, pb::UserState::Invited as i32);
        sso.google
            .add_user(workspace_user("g-ann", "ann@acme.example", "acme.example"));

        // Not on the allowlist: an open redirect is refused before anything is stored.
        let bad = server
            .public()
            .await
            .start_google_sign_in(pb::StartGoogleSignInRequest {
                return_to: "https://evil.example/app/".into(),
                ..Default::default()
            })
            .await;
        refused(bad, Code::InvalidArgument, "return_to off the allowlist");

        let started = sso
            .start_sign_in(pb::StartGoogleSignInRequest {
                return_to: format!("{APP}inbox"),
                login_hint: "ann@acme.example".into(),
                ..Default::default()
            })
            .await;
        let url = url::Url::parse(&started.authorization_url).expect("authorization URL");
        assert_eq!(
            url.as_str().split('?').next(),
            Some(format!("{}/o/oauth2/v2/auth", sso.google.base_url()).as_str()),
            "the discovery document's authorization endpoint"
        );
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let p = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        assert_eq!(p("client_id"), CLIENT_ID);
        assert_eq!(p("redirect_uri"), CALLBACK);
        assert_eq!(p("response_type"), "code");
        assert!(
            p("scope").split(' ').any(|s| s == "openid"),
            "{}",
            p("scope")
        );
        assert!(
            p("scope").split(' ').any(|s| s == "email"),
            "{}",
            p("scope")
        );
        assert_eq!(p("state"), started.state);
        assert!(started.state.len() >= 32, "state has entropy");
        assert!(p("nonce").len() >= 32 && p("nonce") != p("state"), "nonce");
        assert_eq!(p("code_challenge_method"), "S256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(p("code_challenge"))
                .expect("challenge is base64url")
                .len(),
            32,
            "an S256 challenge is a SHA-256"
        );
        assert_eq!(p("login_hint"), "ann@acme.example");
        let expires = started.expire_time.expect("expire_time").seconds;
        assert!(
            (unix_now() + 60..=unix_now() + 3600).contains(&expires),
            "{expires}"
        );
        assert!(
            !q.contains_key("code_verifier"),
            "the verifier stays on the server"
        );

        let callback = sso.approve(&started.authorization_url).await;
        assert_eq!(callback.get("state"), Some(&started.state));
        let done = sso.complete(&callback).await.expect("sign-in");
        assert!(!done.user_created);
        assert_eq!(done.return_to, format!("{APP}inbox"));
        let tokens = done.tokens.expect("tokens");
        assert_eq!(tokens.principal, "tenants/acme/users/ann");
        assert_eq!(tokens.tenant, "tenants/acme");
        assert_eq!(tokens.token_type, "Bearer");
        assert!(tokens.refresh_token.starts_with("mxr_"));
        let who = server
            .iam
            .guard
            .verifier()
            .verify(&tokens.access_token)
            .await
            .expect("the access token verifies");
        assert_eq!(
            (who.subject.as_str(), who.tenant.as_str()),
            ("tenants/acme/users/ann", "acme")
        );

        // One code exchange, with a verifier: the fake refuses a verifier whose S256 does not
        // match the challenge, so the sign-in above proves the PKCE pair.
        let exchanges: Vec<_> = sso
            .google
            .requests()
            .into_iter()
            .filter(|r| r.path == "/token")
            .collect();
        assert_eq!(exchanges.len(), 1, "{exchanges:?}");
        assert_eq!(exchanges[0].status, Some(200));
        assert_eq!(
            exchanges[0].form.get("grant_type").map(String::as_str),
            Some("authorization_code")
        );
        assert!(exchanges[0].form.contains_key("code_verifier"));

        let ann = server.user("tenants/acme/users/ann").await;
        assert_eq!(
            ann.state,
            pb::UserState::Active as i32,
            "the invitation is accepted"
        );
        assert_eq!(ann.google_subject, "g-ann");
        assert_eq!(ann.hosted_domain, "acme.example");
        assert!(ann.last_sign_in_time.is_some());

        // The refresh token works once.
        let mut auth = server.public().await;
        let next = auth
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .expect("refresh")
            .into_inner()
            .tokens
            .expect("tokens");
        assert_eq!(next.principal, "tenants/acme/users/ann");
        let again = auth
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: tokens.refresh_token,
            })
            .await;
        refused(again, Code::Unauthenticated, "a refresh token works once");

        // Another Google account with ann's email cannot take her user over.
        sso.google.add_user(workspace_user(
            "g-impostor",
            "ANN@acme.example",
            "acme.example",
        ));
        let taken = sso.sign_in_as("g-impostor").await;
        refused(taken, Code::Unauthenticated, "another sub for a bound user");
        assert_eq!(
            server.user("tenants/acme/users/ann").await.google_subject,
            "g-ann"
        );
        eprintln!("invited sign-in passed on {}", backend.name);
    }
}

/// A verified, auto-provisioning domain binding creates users in its tenant with its default
/// role; unverified or non-provisioning bindings and foreign domains create nothing.
#[tokio::test]
async fn google_sign_in_provisions_only_through_verified_bindings() {
    for backend in backends().await {
        let sso = Sso::start(&backend, false).await;
        let server = &sso.server;
        for t in ["globex", "initech", "hooli", "acme"] {
            server.create_tenant(t).await;
        }

        // globex.example: verified, auto-provisioning.
        let globex = sso.bind("globex", "globex.example", true).await;
        assert_eq!(globex.state, pb::SsoDomainState::PendingVerification as i32);
        sso.records
            .publish("globex.example", &globex.verification_record);
        let verified = sso.verify(&globex).await.expect("verify");
        assert_eq!(verified.state, pb::SsoDomainState::Verified as i32);
        sso.google.add_user(workspace_user(
            "g-bob",
            "bob@globex.example",
            "globex.example",
        ));
        let done = sso.sign_in_as("bob@globex.example").await.expect("sign-in");
        assert!(done.user_created);
        let tokens = done.tokens.expect("tokens");
        assert!(
            tokens.principal.starts_with("tenants/globex/users/u"),
            "{}",
            tokens.principal
        );
        assert_eq!(tokens.tenant, "tenants/globex");
        let bob = server.user(&tokens.principal).await;
        assert_eq!(
            (
                bob.email.as_str(),
                bob.state,
                bob.google_subject.as_str(),
                bob.hosted_domain.as_str()
            ),
            (
                "bob@globex.example",
                pb::UserState::Active as i32,
                "g-bob",
                "globex.example"
            )
        );
        let grants = RoleServiceClient::new(server.admin().await)
            .list_role_assignments(pb::ListRoleAssignmentsRequest {
                parent: "tenants/globex".into(),
                principal: tokens.principal.clone(),
                ..Default::default()
            })
            .await
            .expect("list assignments")
            .into_inner()
            .role_assignments;
        assert_eq!(grants.len(), 1, "{grants:?}");
        assert_eq!(
            (grants[0].role.as_str(), grants[0].scope.as_str()),
            ("roles/tenant-member", "tenants/globex")
        );
        // The role works through the guard: bob reads his tenant, not another one.
        server
            .get_tenant(&tokens.access_token, "globex")
            .await
            .expect("a tenant member reads the tenant");
        refused(
            server.get_tenant(&tokens.access_token, "acme").await,
            Code::PermissionDenied,
            "another tenant",
        );
        // The second sign-in finds the user it made.
        let again = sso.sign_in_as("bob@globex.example").await.expect("sign-in");
        assert!(!again.user_created);
        assert_eq!(again.tokens.expect("tokens").principal, tokens.principal);
        assert_eq!(server.users_with_email("bob@globex.example").await, 1);
        // Suspended, he is refused, and stays suspended.
        UserServiceClient::new(server.admin().await)
            .update_user(pb::UpdateUserRequest {
                user: Some(pb::User {
                    name: tokens.principal.clone(),
                    state: pb::UserState::Suspended as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .expect("suspend");
        refused(
            sso.sign_in_as("bob@globex.example").await,
            Code::Unauthenticated,
            "a suspended user",
        );
        assert_eq!(
            server.user(&tokens.principal).await.state,
            pb::UserState::Suspended as i32
        );

        // initech.example: bound with auto_provision but not verified.
        let initech = sso.bind("initech", "initech.example", true).await;
        sso.google.add_user(workspace_user(
            "g-carl",
            "carl@initech.example",
            "initech.example",
        ));
        refused(
            sso.sign_in_as("carl@initech.example").await,
            Code::Unauthenticated,
            "an unverified binding",
        );
        assert_eq!(server.users_with_email("carl@initech.example").await, 0);
        // Verified, the same account gets in.
        sso.records.publish(
            "initech.example",
            &format!("some-other=record\n{}\n", initech.verification_record),
        );
        sso.verify(&initech).await.expect("verify");
        let carl = sso
            .sign_in_as("carl@initech.example")
            .await
            .expect("sign-in");
        assert!(carl.user_created);
        assert!(carl
            .tokens
            .expect("tokens")
            .principal
            .starts_with("tenants/initech/users/"));

        // hooli.example: verified, auto_provision off.
        let hooli = sso.bind("hooli", "hooli.example", false).await;
        sso.records
            .publish("hooli.example", &hooli.verification_record);
        sso.verify(&hooli).await.expect("verify");
        sso.google.add_user(workspace_user(
            "g-dee",
            "dee@hooli.example",
            "hooli.example",
        ));
        refused(
            sso.sign_in_as("dee@hooli.example").await,
            Code::Unauthenticated,
            "auto_provision off",
        );
        assert_eq!(server.users_with_email("dee@hooli.example").await, 0);

        // A foreign domain nobody bound, and a consumer account: nothing is created.
        sso.google.add_user(workspace_user(
            "g-eve",
            "eve@foreign.example",
            "foreign.example",
        ));
        let foreign = refused(
            sso.sign_in_as("eve@foreign.example").await,
            Code::Unauthenticated,
            "a foreign hosted domain",
        );
        assert_eq!(
            foreign.message(),
            "sign-in failed",
            "the reason stays in the audit trail"
        );
        assert_eq!(server.users_with_email("eve@foreign.example").await, 0);
        sso.google
            .add_user(FakeGoogleUser::new("g-fay", "fay@gmail.example"));
        refused(
            sso.sign_in_as("fay@gmail.example").await,
            Code::Unauthenticated,
            "a consumer account nobody invited",
        );
        assert_eq!(server.users_with_email("fay@gmail.example").await, 0);

        // A binding another tenant made but could not verify does not take an invited user
        // of the domain away from the tenant that invited them.
        server.invite("acme", "gus", "gus@acme.example").await;
        sso.bind("hooli", "acme.example", true).await;
        sso.google
            .add_user(workspace_user("g-gus", "gus@acme.example", "acme.example"));
        let gus = sso
            .sign_in_as("gus@acme.example")
            .await
            .expect("invited user signs in");
        assert_eq!(
            gus.tokens.expect("tokens").principal,
            "tenants/acme/users/gus"
        );
        eprintln!("provisioning passed on {}", backend.name);
    }
}

/// Forged, replayed, tampered and unverified callbacks are refused, and every refusal is in
/// the operator's audit trail with its reason.
#[tokio::test]
async fn google_sign_in_refuses_forged_replayed_and_tampered_callbacks() {
    for backend in backends().await {
        let sso = Sso::start(&backend, true).await;
        let server = &sso.server;
        server.create_tenant("acme").await;
        server.invite("acme", "ann", "ann@acme.example").await;
        server.invite("acme", "cy", "cy@acme.example").await;
        sso.google
            .add_user(workspace_user("g-ann", "ann@acme.example", "acme.example"));
        sso.google
            .add_user(workspace_user("g-cy", "cy@acme.example", "acme.example"));
        let still_invited = |id: &'static str| async move {
            let user = server.user(&format!("tenants/acme/users/{id}")).await;
            assert_eq!(
                (user.state, user.google_subject.as_str()),
                (pb::UserState::Invited as i32, ""),
                "a refused sign-in activates nobody"
            );
        };

        // An unknown state, a missing code, then the genuine callback.
        let started = sso.start_sign_in(Default::default()).await;
        sso.google.login_next_as("ann@acme.example");
        let mut callback = sso.approve(&started.authorization_url).await;
        let mut forged = callback.clone();
        forged.insert("state".into(), "forged-state".into());
        refused(
            sso.complete(&forged).await,
            Code::Unauthenticated,
            "unknown state",
        );
        let mut no_code = callback.clone();
        no_code.remove("code");
        refused(
            sso.complete(&no_code).await,
            Code::Unauthenticated,
            "no code",
        );
        still_invited("ann").await;
        // Neither spent the state (one named another, the other carried no code).
        let ok = sso.complete(&callback).await.expect("the genuine callback");
        assert_eq!(
            ok.tokens.expect("tokens").principal,
            "tenants/acme/users/ann"
        );
        // The same state twice: refused even with a fresh code for it.
        refused(
            sso.complete(&callback).await,
            Code::Unauthenticated,
            "state replayed",
        );
        let fresh = sso.approve(&started.authorization_url).await;
        assert_ne!(fresh.get("code"), callback.get("code"));
        callback.insert("code".into(), fresh["code"].clone());
        refused(
            sso.complete(&callback).await,
            Code::Unauthenticated,
            "spent state, new code",
        );

        // The remaining cases sign in as cy, still invited. An expired state:
        let started = sso.start_sign_in(Default::default()).await;
        on_db!(&server.db, |pool| sqlx::query(
            "UPDATE sign_in_states SET expires_at_us = 0 WHERE state = $1"
        )
        .bind(&started.state)
        .execute(pool)
        .await
        .map(|_| ()))
        .expect("expire state");
        sso.google.login_next_as("cy@acme.example");
        let q = sso.approve(&started.authorization_url).await;
        refused(
            sso.complete(&q).await,
            Code::Unauthenticated,
            "expired state",
        );

        // The user refused consent (or the provider failed): Google comes back with an error.
        let started = sso
            .start_sign_in(pb::StartGoogleSignInRequest {
                hd: "elsewhere.example".into(),
                ..Default::default()
            })
            .await;
        sso.google.login_next_as("cy@acme.example");
        let q = sso.approve(&started.authorization_url).await;
        assert_eq!(
            q.get("error").map(String::as_str),
            Some("access_denied"),
            "{q:?}"
        );
        refused(
            sso.complete(&q).await,
            Code::Unauthenticated,
            "provider error",
        );

        // A nonce other than the one stored with the state: the fake puts the nonce of the
        // authorization request into the ID token, so the browser's copy is altered.
        let started = sso.start_sign_in(Default::default()).await;
        let mut url = url::Url::parse(&started.authorization_url).expect("url");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "nonce" {
                    (k, "n-".repeat(20))
                } else {
                    (k, v)
                }
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        sso.google.login_next_as("cy@acme.example");
        let q = sso.approve(url.as_str()).await;
        refused(sso.complete(&q).await, Code::Unauthenticated, "wrong nonce");
        still_invited("cy").await;

        // The provider says the email is not verified.
        sso.google.add_user(FakeGoogleUser {
            email_verified: false,
            ..workspace_user("g-cy", "cy@acme.example", "acme.example")
        });
        refused(
            sso.sign_in_as("cy@acme.example").await,
            Code::Unauthenticated,
            "email_verified=false",
        );
        still_invited("cy").await;
        sso.google
            .add_user(workspace_user("g-cy", "cy@acme.example", "acme.example"));

        // ID tokens rewritten on their way back (the nonce and everything else as issued).
        type Rewrite = fn(&FakeGoogle, Value) -> String;
        let cases: [(&str, Rewrite); 9] = [
            ("signed with a key outside the JWKS", |g, c| {
                g.sign_id_token_with_wrong_key(c)
            }),
            ("another audience", |g, mut c| {
                c["aud"] = json!("someone-else.apps.googleusercontent.com");
                g.sign_id_token(c)
            }),
            ("issued to another client (azp)", |g, mut c| {
                c["azp"] = json!("someone-else.apps.googleusercontent.com");
                g.sign_id_token(c)
            }),
            ("another issuer", |g, mut c| {
                c["iss"] = json!("https://accounts.evil.example");
                g.sign_id_token(c)
            }),
            ("expired", |g, mut c| {
                c["iat"] = json!(unix_now() - 7200);
                c["exp"] = json!(unix_now() - 3600);
                g.sign_id_token(c)
            }),
            ("no nonce", |g, mut c| {
                c.as_object_mut().expect("claims").remove("nonce");
                g.sign_id_token(c)
            }),
            ("email_verified as the string false", |g, mut c| {
                c["email_verified"] = json!("false");
                g.sign_id_token(c)
            }),
            ("unsigned (alg none)", |_, c| {
                let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
                format!(
                    "{}.{}.",
                    enc(&json!({"alg": "none", "typ": "JWT"})),
                    enc(&c)
                )
            }),
            ("payload altered after signing", |g, c| {
                let signed = g.sign_id_token(c.clone());
                let mut other = c;
                other["name"] = json!("Mallory");
                let parts: Vec<&str> = signed.split('.').collect();
                let payload = URL_SAFE_NO_PAD.encode(other.to_string());
                format!("{}.{payload}.{}", parts[0], parts[2])
            }),
        ];
        for (what, rewrite) in cases {
            sso.proxy().tamper_next(rewrite);
            refused(
                sso.sign_in_as("cy@acme.example").await,
                Code::Unauthenticated,
                what,
            );
            still_invited("cy").await;
        }
        // The proxy itself changes nothing: a token re-signed as it was still signs in.
        sso.proxy().tamper_next(|g, c| g.sign_id_token(c));
        let ok = sso
            .sign_in_as("cy@acme.example")
            .await
            .expect("control sign-in");
        assert_eq!(
            ok.tokens.expect("tokens").principal,
            "tenants/acme/users/cy"
        );

        // Every refusal is audited in the operator's chain, anonymous, with its reason.
        let denied = server
            .audit("platform", SIGN_IN, pb::AuditOutcome::Denied)
            .await;
        let reasons: Vec<&str> = denied.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(denied.len(), 17, "{reasons:#?}");
        assert!(denied
            .iter()
            .all(|e| e.actor == "anonymous" && e.status_code == "UNAUTHENTICATED"));
        for want in [
            "unknown or already used state",
            "code or state missing",
            "state expired",
            "the provider answered access_denied",
            "nonce does not match",
            "is not verified by the provider",
            "does not verify",
            "issued to another client (azp)",
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(want)),
                "no denied sign-in says {want:?}: {reasons:#?}"
            );
        }
        let succeeded = server
            .audit("acme", SIGN_IN, pb::AuditOutcome::Succeeded)
            .await;
        let actors: Vec<&str> = succeeded.iter().map(|e| e.actor.as_str()).collect();
        assert_eq!(
            actors,
            ["tenants/acme/users/cy", "tenants/acme/users/ann"],
            "the two sign-ins that worked, newest first"
        );
        eprintln!("refusals passed on {}", backend.name);
    }
}

// ---------------------------------------------------------------------------------------
// 2. SSO domain bindings

#[tokio::test]
async fn sso_domain_bindings_are_verified_unique_and_private_to_their_tenant() {
    for backend in backends().await {
        let sso = Sso::start(&backend, false).await;
        let server = &sso.server;
        server.create_tenant("acme").await;
        server.create_tenant("beta").await;
        let mut admin = SsoDomainServiceClient::new(server.admin().await);

        let create = |tenant: &str, domain: &str, b: pb::SsoDomain| pb::CreateSsoDomainRequest {
            parent: format!("tenants/{tenant}"),
            sso_domain: Some(b),
            sso_domain_id: domain.into(),
            request_id: String::new(),
        };
        for (domain, b, why) in [
            ("Not A Domain", pb::SsoDomain::default(), "domain"),
            ("localhost", pb::SsoDomain::default(), "single label"),
            (
                "acme.example",
                pb::SsoDomain {
                    default_role: "roles/platform-admin".into(),
                    ..Default::default()
                },
                "platform-admin is not a tenant role",
            ),
            (
                "acme.example",
                pb::SsoDomain {
                    default_scope: "tenants/beta".into(),
                    ..Default::default()
                },
                "scope in another tenant",
            ),
        ] {
            let r = admin.create_sso_domain(create("acme", domain, b)).await;
            refused(r, Code::InvalidArgument, why);
        }

        let b = admin
            .create_sso_domain(create(
                "acme",
                "ACME.example",
                pb::SsoDomain {
                    auto_provision: true,
                    ..Default::default()
                },
            ))
            .await
            .expect("bind")
            .into_inner()
            .sso_domain
            .expect("binding");
        assert_eq!(b.name, "tenants/acme/ssoDomains/acme.example");
        assert_eq!(b.domain, "acme.example");
        assert_eq!(b.default_role, "roles/tenant-member", "the default role");
        assert_eq!(b.default_scope, "tenants/acme");
        assert_eq!(b.state, pb::SsoDomainState::PendingVerification as i32);
        assert!(b.verify_time.is_none());
        let token = b
            .verification_record
            .strip_prefix("maxai-domain-verification=")
            .expect("record format");
        assert!(token.len() >= 16, "{token}");

        let got = admin
            .get_sso_domain(pb::GetSsoDomainRequest {
                name: b.name.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .sso_domain
            .expect("binding");
        assert_eq!(got, b);
        let listed = admin
            .list_sso_domains(pb::ListSsoDomainsRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .sso_domains;
        assert_eq!(listed, std::slice::from_ref(&b));

        // One tenant per domain, whatever the case.
        for domain in ["acme.example", "Acme.Example"] {
            let taken = admin
                .create_sso_domain(create("beta", domain, Default::default()))
                .await;
            refused(taken, Code::AlreadyExists, domain);
        }

        // Verification reads the record from the configured URL.
        let pending = sso.verify(&b).await;
        let s = refused(pending, Code::FailedPrecondition, "nothing published");
        assert!(
            s.message().contains(&b.verification_record),
            "{}",
            s.message()
        );
        sso.records.publish(
            "acme.example",
            "maxai-domain-verification=someone-elses-token\n",
        );
        refused(
            sso.verify(&b).await,
            Code::FailedPrecondition,
            "another record",
        );
        sso.records
            .publish("acme.example", &format!("x{}", b.verification_record));
        refused(
            sso.verify(&b).await,
            Code::FailedPrecondition,
            "the record inside a longer line",
        );
        let still = admin
            .get_sso_domain(pb::GetSsoDomainRequest {
                name: b.name.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .sso_domain
            .expect("binding");
        assert_eq!(still.state, pb::SsoDomainState::PendingVerification as i32);
        sso.records.publish(
            "acme.example",
            &format!(
                "google-site-verification=abc\n  {}  \n",
                b.verification_record
            ),
        );
        let verified = sso.verify(&b).await.expect("verify");
        assert_eq!(verified.state, pb::SsoDomainState::Verified as i32);
        assert!(verified.verify_time.is_some());
        assert_ne!(verified.etag, b.etag);
        // Verifying again is a no-op, even once the record is gone.
        sso.records.publish("acme.example", "");
        let again = sso.verify(&b).await.expect("verify again");
        assert_eq!(again.etag, verified.etag);

        // Update with a mask; a stale etag loses.
        let update = |etag: &str, role: &str| pb::UpdateSsoDomainRequest {
            sso_domain: Some(pb::SsoDomain {
                name: b.name.clone(),
                default_role: role.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["default_role".into()],
            }),
        };
        let updated = admin
            .update_sso_domain(update(&verified.etag, "roles/tenant-admin"))
            .await
            .expect("update")
            .into_inner()
            .sso_domain
            .expect("binding");
        assert_eq!(updated.default_role, "roles/tenant-admin");
        assert!(updated.auto_provision, "fields outside the mask stay");
        assert_eq!(
            updated.state,
            pb::SsoDomainState::Verified as i32,
            "still verified"
        );
        refused(
            admin
                .update_sso_domain(update(&verified.etag, "roles/tenant-member"))
                .await,
            Code::Aborted,
            "stale etag",
        );
        refused(
            admin
                .update_sso_domain(update("", "roles/platform-admin"))
                .await,
            Code::InvalidArgument,
            "platform-admin by update",
        );

        // Tenant beta's admin: the guard keeps them out of acme's names, and under their own
        // tenant's name acme's binding does not exist.
        let bea = server.member("beta", "bea", "roles/tenant-admin").await;
        let bea_token = server.iam.token(&bea);
        let mut bea = SsoDomainServiceClient::new(server.with(&bea_token).await);
        refused(
            bea.get_sso_domain(pb::GetSsoDomainRequest {
                name: b.name.clone(),
            })
            .await,
            Code::PermissionDenied,
            "beta reads acme's binding",
        );
        refused(
            bea.list_sso_domains(pb::ListSsoDomainsRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await,
            Code::PermissionDenied,
            "beta lists acme's bindings",
        );
        refused(
            bea.delete_sso_domain(pb::DeleteSsoDomainRequest {
                name: b.name.clone(),
                etag: String::new(),
            })
            .await,
            Code::PermissionDenied,
            "beta deletes acme's binding",
        );
        let disguised = "tenants/beta/ssoDomains/acme.example".to_owned();
        refused(
            bea.get_sso_domain(pb::GetSsoDomainRequest {
                name: disguised.clone(),
            })
            .await,
            Code::NotFound,
            "acme's binding under beta's name",
        );
        refused(
            bea.delete_sso_domain(pb::DeleteSsoDomainRequest {
                name: disguised.clone(),
                etag: String::new(),
            })
            .await,
            Code::NotFound,
            "delete acme's binding under beta's name",
        );
        refused(
            bea.verify_sso_domain(pb::VerifySsoDomainRequest { name: disguised })
                .await,
            Code::NotFound,
            "verify acme's binding under beta's name",
        );
        let beta_list = bea
            .list_sso_domains(pb::ListSsoDomainsRequest {
                parent: "tenants/beta".into(),
                ..Default::default()
            })
            .await
            .expect("beta lists its own")
            .into_inner()
            .sso_domains;
        assert!(beta_list.is_empty(), "{beta_list:?}");

        // Delete (a stale etag loses); the domain is then free for another tenant.
        refused(
            admin
                .delete_sso_domain(pb::DeleteSsoDomainRequest {
                    name: b.name.clone(),
                    etag: b.etag.clone(),
                })
                .await,
            Code::Aborted,
            "delete with a stale etag",
        );
        admin
            .delete_sso_domain(pb::DeleteSsoDomainRequest {
                name: b.name.clone(),
                etag: updated.etag.clone(),
            })
            .await
            .expect("delete");
        refused(
            admin
                .get_sso_domain(pb::GetSsoDomainRequest {
                    name: b.name.clone(),
                })
                .await,
            Code::NotFound,
            "deleted",
        );
        let rebound = bea
            .create_sso_domain(create("beta", "acme.example", Default::default()))
            .await
            .expect("beta binds the freed domain")
            .into_inner()
            .sso_domain
            .expect("binding");
        assert_eq!(
            rebound.state,
            pb::SsoDomainState::PendingVerification as i32
        );
        assert_ne!(
            rebound.verification_record, b.verification_record,
            "a new token"
        );

        let changes = server
            .audit("acme", "", pb::AuditOutcome::Succeeded)
            .await
            .into_iter()
            .filter(|e| e.action.starts_with("maxai.iam.v1.SsoDomainService/"))
            .map(|e| {
                e.action
                    .trim_start_matches("maxai.iam.v1.SsoDomainService/")
                    .to_owned()
            })
            .collect::<Vec<_>>();
        assert_eq!(
            changes,
            [
                "DeleteSsoDomain",
                "UpdateSsoDomain",
                "VerifySsoDomain",
                "CreateSsoDomain"
            ],
            "newest first"
        );
        eprintln!("sso domains passed on {}", backend.name);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Refresh tokens

async fn refresh(
    auth: &mut AuthServiceClient<Channel>,
    token: &str,
) -> Result<pb::TokenSet, Status> {
    auth.refresh_token(pb::RefreshTokenRequest {
        refresh_token: token.into(),
    })
    .await
    .map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn revoke(auth: &mut AuthServiceClient<Channel>, token: &str) -> Result<(), Status> {
    auth.revoke_token(pb::RevokeTokenRequest {
        token: token.into(),
        token_type_hint: pb::TokenTypeHint::Unspecified as i32,
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_detect_reuse_and_revoke_their_family() {
    for backend in backends().await {
        let server = serve(&backend, iam_config()).await;
        server.create_tenant("acme").await;
        let ann = "tenants/acme/users/ann";
        let sessions = RefreshTokens::new(server.db.clone(), Duration::from_secs(3600));
        let mut auth = server.public().await;

        // Rotation: a new token each time, the old one spent; the family keeps its expiry.
        let first = sessions.issue("acme", ann).await.expect("issue");
        let t1 = refresh(&mut auth, &first.token).await.expect("refresh");
        assert_ne!(t1.refresh_token, first.token);
        assert_eq!(
            (t1.principal.as_str(), t1.tenant.as_str()),
            (ann, "tenants/acme")
        );
        assert_eq!(
            t1.refresh_token_expire_time.as_ref().map(|t| t.seconds),
            Some(first.family_expires_at_us / 1_000_000)
        );
        let who = server
            .iam
            .guard
            .verifier()
            .verify(&t1.access_token)
            .await
            .expect("verifies");
        assert_eq!(who.subject, ann);
        let t2 = refresh(&mut auth, &t1.refresh_token)
            .await
            .expect("refresh");
        assert_ne!(t2.refresh_token, t1.refresh_token);
        assert_eq!(
            t2.refresh_token_expire_time, t1.refresh_token_expire_time,
            "refreshing does not extend"
        );

        // Reuse: the spent token is refused and takes the family down, newest token included.
        refused(
            refresh(&mut auth, &first.token).await,
            Code::Unauthenticated,
            "reuse",
        );
        refused(
            refresh(&mut auth, &t2.refresh_token).await,
            Code::Unauthenticated,
            "newest of a reused family",
        );
        let reuse = server
            .audit(
                "acme",
                "maxai.iam.v1.AuthService/RefreshToken",
                pb::AuditOutcome::Denied,
            )
            .await;
        assert_eq!(reuse.len(), 1, "{reuse:?}");
        assert_eq!(reuse[0].actor, ann);
        assert!(
            reuse[0].reason.contains("family is revoked"),
            "{}",
            reuse[0].reason
        );

        // Families are independent: another sign-in of the same user is untouched.
        let other = sessions.issue("acme", ann).await.expect("issue");
        let o1 = refresh(&mut auth, &other.token)
            .await
            .expect("an unrelated family works");

        // Revocation of a refresh token takes its family; a spent token of it is enough.
        let fam = sessions.issue("acme", ann).await.expect("issue");
        let f1 = refresh(&mut auth, &fam.token).await.expect("refresh");
        revoke(&mut auth, &fam.token).await.expect("revoke");
        refused(
            refresh(&mut auth, &f1.refresh_token).await,
            Code::Unauthenticated,
            "revoked family",
        );
        let fam = sessions.issue("acme", ann).await.expect("issue");
        revoke(&mut auth, &fam.token).await.expect("revoke");
        refused(
            refresh(&mut auth, &fam.token).await,
            Code::Unauthenticated,
            "revoked token",
        );
        refresh(&mut auth, &o1.refresh_token)
            .await
            .expect("the other family still works");
        let revocations = server
            .audit(
                "acme",
                "maxai.iam.v1.AuthService/RevokeToken",
                pb::AuditOutcome::Succeeded,
            )
            .await;
        assert_eq!(revocations.len(), 2);

        // RFC 7009: unknown tokens are not an error; an empty one is.
        for unknown in ["mxr_unknown", "not-a-token", "a.b.c"] {
            revoke(&mut auth, unknown).await.expect("unknown token");
        }
        refused(
            revoke(&mut auth, "").await,
            Code::InvalidArgument,
            "empty token",
        );
        refused(
            refresh(&mut auth, "mxr_unknown").await,
            Code::Unauthenticated,
            "unknown refresh token",
        );
        refused(
            refresh(&mut auth, "").await,
            Code::Unauthenticated,
            "empty refresh token",
        );

        // A family past its lifetime.
        let short = RefreshTokens::new(server.db.clone(), Duration::from_millis(1));
        let old = short.issue("acme", ann).await.expect("issue");
        tokio::time::sleep(Duration::from_millis(5)).await;
        refused(
            refresh(&mut auth, &old.token).await,
            Code::Unauthenticated,
            "expired family",
        );

        // Two refreshes of one token racing: one wins, the other counts as reuse, and the
        // winner's successor dies with the family whichever order the writes landed in.
        for round in 0..8 {
            let t = sessions.issue("acme", ann).await.expect("issue");
            let (mut a, mut b) = (auth.clone(), auth.clone());
            let (ra, rb) = tokio::join!(refresh(&mut a, &t.token), refresh(&mut b, &t.token));
            let winners: Vec<_> = [ra, rb].into_iter().filter_map(Result::ok).collect();
            assert_eq!(winners.len(), 1, "round {round}: exactly one refresh wins");
            refused(
                refresh(&mut auth, &winners[0].refresh_token).await,
                Code::Unauthenticated,
                &format!("round {round}: successor of a raced token"),
            );
        }

        // The same interleaving, laid down deterministically: the reuse revoked the family
        // before the winner's successor was written, so the successor row itself is clean.
        let t = sessions.issue("acme", ann).await.expect("issue");
        let s1 = refresh(&mut auth, &t.token).await.expect("refresh");
        on_db!(&server.db, |pool| sqlx::query(
            "UPDATE refresh_tokens SET revoked_at_us = 1 WHERE token_hash = $1"
        )
        .bind(maxai_iam::domain::secret_hash(&t.token))
        .execute(pool)
        .await
        .map(|_| ()))
        .expect("revoke the first token only");
        refused(
            refresh(&mut auth, &s1.refresh_token).await,
            Code::Unauthenticated,
            "a token of a family with a revoked member",
        );
        eprintln!("refresh tokens passed on {}", backend.name);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Access-token revocation

#[tokio::test]
async fn revoked_access_tokens_are_refused_by_every_verifier() {
    for backend in backends().await {
        let server = serve(&backend, iam_config()).await;
        server.create_tenant("acme").await;
        let ann = &server.member("acme", "ann", "roles/tenant-member").await;
        let token = server.iam.token(ann);
        let other = server.iam.token(ann);
        server
            .get_tenant(&token, "acme")
            .await
            .expect("works before");
        server
            .get_tenant(&other, "acme")
            .await
            .expect("works before");

        // Another replica's verifier, fed by its own connection to the shared notifier
        // (PostgreSQL runs go through Redis; the SQLite setup is one process by design).
        let shutdown = CancellationToken::new();
        let replica = if backend.name == "postgres" {
            let shared = SharedState::connect(&backend.storage)
                .await
                .expect("shared state");
            let v = Verifier::new("maxai", server.iam.key_ring.clone());
            v.follow_revocations(shared.notifier.as_ref(), shutdown.clone())
                .await
                .expect("follow");
            v.verify(&token)
                .await
                .expect("the replica accepts it before");
            Some((v, shared))
        } else {
            None
        };

        let mut auth = server.public().await;
        revoke(&mut auth, &token).await.expect("revoke");
        let gone = eventually(Duration::from_secs(1), || async {
            matches!(server.get_tenant(&token, "acme").await, Err(s) if s.code() == Code::Unauthenticated)
        })
        .await;
        assert!(
            gone,
            "the guard still accepts a revoked token a second later"
        );
        let direct = server.iam.guard.verifier().verify(&token).await;
        assert!(
            matches!(&direct, Err(e) if e.kind == maxai_kit::ErrorKind::Unauthenticated),
            "{direct:?}"
        );
        if let Some((v, _shared)) = &replica {
            let gone = eventually(Duration::from_secs(1), || async {
                v.verify(&token).await.is_err()
            })
            .await;
            assert!(
                gone,
                "the other replica still accepts a revoked token a second later"
            );
            v.verify(&other)
                .await
                .expect("the replica keeps other tokens");
        }
        // Only that token: another token of the same user goes on working.
        server
            .get_tenant(&other, "acme")
            .await
            .expect("another token of ann");
        // Revoking again, or revoking garbage, is fine (RFC 7009).
        revoke(&mut auth, &token).await.expect("revoke twice");
        let audited = server
            .audit(
                "acme",
                "maxai.iam.v1.AuthService/RevokeToken",
                pb::AuditOutcome::Succeeded,
            )
            .await;
        assert!(
            !audited.is_empty() && audited.iter().all(|e| e.actor == *ann),
            "{audited:?}"
        );
        shutdown.cancel();
        eprintln!("access-token revocation passed on {}", backend.name);
    }
}

// ---------------------------------------------------------------------------------------
// 5. API keys

#[tokio::test]
async fn api_keys_exchange_for_short_lived_service_account_tokens() {
    for backend in backends().await {
        let server = serve(&backend, iam_config()).await;
        server.create_tenant("acme").await;
        server.create_tenant("beta").await;
        let mut sa = ServiceAccountServiceClient::new(server.admin().await);
        let account = sa
            .create_service_account(pb::CreateServiceAccountRequest {
                parent: "tenants/acme".into(),
                service_account: Some(pb::ServiceAccount {
                    display_name: "n8n".into(),
                    ..Default::default()
                }),
                service_account_id: "n8n".into(),
                request_id: String::new(),
            })
            .await
            .expect("account")
            .into_inner()
            .service_account
            .expect("account");
        server
            .grant("acme", &account.name, "roles/tenant-member")
            .await;
        let new_key = |sa: &mut ServiceAccountServiceClient<Authed>| {
            let mut sa = sa.clone();
            let parent = account.name.clone();
            async move {
                sa.create_api_key(pb::CreateApiKeyRequest {
                    parent,
                    api_key: Some(pb::ApiKey {
                        display_name: "workflows".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("key")
                .into_inner()
            }
        };
        let key = new_key(&mut sa).await;
        let mut auth = server.public().await;
        let exchange = |secret: &str, ttl: Option<u64>| pb::ExchangeApiKeyRequest {
            api_key: secret.into(),
            scope: String::new(),
            ttl: ttl.map(|s| prost_types::Duration {
                seconds: s as i64,
                nanos: 0,
            }),
        };

        let tokens = auth
            .exchange_api_key(exchange(&key.secret, None))
            .await
            .expect("exchange")
            .into_inner()
            .tokens
            .expect("tokens");
        assert_eq!(tokens.principal, "tenants/acme/serviceAccounts/n8n");
        assert_eq!(tokens.tenant, "tenants/acme");
        assert!(tokens.refresh_token.is_empty() && tokens.refresh_token_expire_time.is_none());
        let who = server
            .iam
            .guard
            .verifier()
            .verify(&tokens.access_token)
            .await
            .expect("verifies");
        assert_eq!(
            (who.subject.as_str(), who.tenant.as_str()),
            (account.name.as_str(), "acme")
        );
        let life = who.expires_at - unix_now();
        assert!(
            (3590..=3600).contains(&life),
            "default lifetime is the 1 h maximum: {life}"
        );

        // The token carries the account's grants through the guard, and only those.
        server
            .get_tenant(&tokens.access_token, "acme")
            .await
            .expect("its own tenant");
        refused(
            server.get_tenant(&tokens.access_token, "beta").await,
            Code::PermissionDenied,
            "another tenant",
        );

        // Lifetimes: capped at 1 h, shorter on request.
        for (asked, lo, hi) in [
            (Some(7200), 3590, 3600),
            (Some(120), 110, 120),
            (Some(0), 3590, 3600),
        ] {
            let t = auth
                .exchange_api_key(exchange(&key.secret, asked))
                .await
                .expect("exchange")
                .into_inner()
                .tokens
                .expect("tokens");
            let exp = t.access_token_expire_time.expect("expiry").seconds - unix_now();
            assert!((lo..=hi).contains(&exp), "ttl {asked:?} gave {exp}s");
        }

        // Refusals.
        let scoped = pb::ExchangeApiKeyRequest {
            scope: "tenants/acme/clients/x".into(),
            ..exchange(&key.secret, None)
        };
        refused(
            auth.exchange_api_key(scoped).await,
            Code::InvalidArgument,
            "scope",
        );
        let wrong = format!("{}x", key.secret);
        refused(
            auth.exchange_api_key(exchange(&wrong, None)).await,
            Code::Unauthenticated,
            "wrong key",
        );
        refused(
            auth.exchange_api_key(exchange("", None)).await,
            Code::Unauthenticated,
            "no key",
        );

        // A deleted key no longer exchanges; the account's other key does.
        let second = new_key(&mut sa).await;
        sa.delete_api_key(pb::DeleteApiKeyRequest {
            name: key.api_key.as_ref().expect("key").name.clone(),
        })
        .await
        .expect("delete key");
        refused(
            auth.exchange_api_key(exchange(&key.secret, None)).await,
            Code::Unauthenticated,
            "deleted key",
        );
        // Tokens already exchanged for the deleted key are refused too (the contract says so),
        // once the announcement has reached the verifier.
        let revoked = eventually(Duration::from_secs(1), || async {
            matches!(
                server.get_tenant(&tokens.access_token, "acme").await,
                Err(s) if s.code() == Code::Unauthenticated
            )
        })
        .await;
        assert!(revoked, "a token of a deleted key still works");
        auth.exchange_api_key(exchange(&second.secret, None))
            .await
            .expect("the other key");

        // A disabled account's keys stop exchanging.
        sa.update_service_account(pb::UpdateServiceAccountRequest {
            service_account: Some(pb::ServiceAccount {
                name: account.name.clone(),
                disabled: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["disabled".into()],
            }),
        })
        .await
        .expect("disable");
        refused(
            auth.exchange_api_key(exchange(&second.secret, None)).await,
            Code::Unauthenticated,
            "disabled account",
        );

        let action = "maxai.iam.v1.AuthService/ExchangeApiKey";
        let ok = server
            .audit("acme", action, pb::AuditOutcome::Succeeded)
            .await;
        assert_eq!(ok.len(), 5, "{ok:?}");
        assert!(ok.iter().all(|e| e.actor == account.name));
        let denied_unknown = server
            .audit("platform", action, pb::AuditOutcome::Denied)
            .await;
        assert_eq!(
            denied_unknown.len(),
            3,
            "wrong, empty and deleted keys: {denied_unknown:?}"
        );
        let denied_disabled = server.audit("acme", action, pb::AuditOutcome::Denied).await;
        assert_eq!(denied_disabled.len(), 1, "{denied_disabled:?}");
        eprintln!("api keys passed on {}", backend.name);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Signing keys

#[tokio::test]
async fn signing_keys_are_published_rotated_and_guarded() {
    for backend in backends().await {
        let server = serve(&backend, iam_config()).await;
        server.create_tenant("acme").await;
        let mut public = server.public().await;
        let jwks = |public: &mut AuthServiceClient<Channel>| {
            let mut p = public.clone();
            async move {
                p.get_jwks(pb::GetJwksRequest {})
                    .await
                    .expect("jwks")
                    .into_inner()
                    .keys
            }
        };
        let before = jwks(&mut public).await;
        assert_eq!(before.len(), 1, "{before:?}");
        let k = &before[0];
        assert_eq!(
            (
                k.kty.as_str(),
                k.crv.as_str(),
                k.alg.as_str(),
                k.key_use.as_str()
            ),
            ("OKP", "Ed25519", "EdDSA", "sig")
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&k.x).expect("x").len(), 32);
        assert!(k.n.is_empty() && k.e.is_empty() && k.y.is_empty(), "{k:?}");
        let old_kid = k.kid.clone();
        let old_token = server.iam.admin();
        server
            .get_tenant(&old_token, "platform")
            .await
            .expect("works before");
        assert_eq!(
            jsonwebtoken::decode_header(&old_token).expect("header").kid,
            Some(old_kid.clone())
        );

        let mut admin = AuthServiceClient::new(server.admin().await);
        let listed = admin
            .list_signing_keys(pb::ListSigningKeysRequest::default())
            .await
            .expect("list")
            .into_inner()
            .signing_keys;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, format!("signingKeys/{old_kid}"));
        assert_eq!(listed[0].state, pb::SigningKeyState::Active as i32);

        // Who may rotate, and with what.
        let ann = server.member("acme", "ann", "roles/tenant-admin").await;
        server
            .get_tenant(&server.iam.token(&ann), "acme")
            .await
            .expect("a tenant admin, who may act in the tenant");
        let mut ann = AuthServiceClient::new(server.with(&server.iam.token(&ann)).await);
        refused(
            ann.rotate_signing_keys(pb::RotateSigningKeysRequest::default())
                .await,
            Code::PermissionDenied,
            "a tenant admin rotates",
        );
        refused(
            ann.list_signing_keys(pb::ListSigningKeysRequest::default())
                .await,
            Code::PermissionDenied,
            "a tenant admin lists signing keys",
        );
        refused(
            public
                .rotate_signing_keys(pb::RotateSigningKeysRequest::default())
                .await,
            Code::Unauthenticated,
            "no token",
        );
        let grace = |s: i64| pb::RotateSigningKeysRequest {
            grace_period: Some(prost_types::Duration {
                seconds: s,
                nanos: 0,
            }),
            ..Default::default()
        };
        for (req, why) in [
            (grace(60), "grace shorter than the access-token lifetime"),
            (grace(-1), "negative grace"),
            (
                pb::RotateSigningKeysRequest {
                    algorithm: "RS256".into(),
                    ..Default::default()
                },
                "another algorithm",
            ),
        ] {
            refused(
                admin.rotate_signing_keys(req).await,
                Code::InvalidArgument,
                why,
            );
        }
        assert_eq!(
            jwks(&mut public).await,
            before,
            "refused rotations change nothing"
        );

        // Rotation: a new active key; the old one retires after the grace, published meanwhile.
        let rotated = admin
            .rotate_signing_keys(grace(1800))
            .await
            .expect("rotate")
            .into_inner();
        let active = rotated.active_key.expect("active key");
        let new_kid = active.public_key.as_ref().expect("jwk").kid.clone();
        assert_ne!(new_kid, old_kid);
        assert_eq!(active.state, pb::SigningKeyState::Active as i32);
        assert_eq!(rotated.retiring_keys.len(), 1);
        let retiring = &rotated.retiring_keys[0];
        assert_eq!(retiring.name, format!("signingKeys/{old_kid}"));
        assert_eq!(retiring.state, pb::SigningKeyState::Retiring as i32);
        let retire_in = retiring.retire_time.as_ref().expect("retire_time").seconds - unix_now();
        assert!((1790..=1800).contains(&retire_in), "{retire_in}");
        let after: Vec<String> = jwks(&mut public).await.into_iter().map(|k| k.kid).collect();
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(
            after.contains(&old_kid) && after.contains(&new_kid),
            "{after:?}"
        );
        let listed = admin
            .list_signing_keys(pb::ListSigningKeysRequest::default())
            .await
            .expect("list")
            .into_inner()
            .signing_keys;
        let states: Vec<(String, i32)> = listed.iter().map(|k| (k.name.clone(), k.state)).collect();
        assert_eq!(
            states,
            [
                (
                    format!("signingKeys/{new_kid}"),
                    pb::SigningKeyState::Active as i32
                ),
                (
                    format!("signingKeys/{old_kid}"),
                    pb::SigningKeyState::Retiring as i32
                ),
            ],
            "newest first"
        );

        // A token signed before the rotation still passes the guard; new tokens use the new key.
        server
            .get_tenant(&old_token, "platform")
            .await
            .expect("a token of the retiring key");
        let new_token = server.iam.admin();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).expect("header").kid,
            Some(new_kid.clone())
        );
        // The rotation is announced: the guard's verifier reloads at once instead of waiting to
        // refetch the JWKS (allow the announcement's trip, no more).
        let since = Instant::now();
        let accepted = eventually(Duration::from_millis(500), || async {
            server.get_tenant(&new_token, "platform").await.is_ok()
        })
        .await;
        assert!(
            accepted,
            "a token of the new key is refused {:?} after the rotation",
            since.elapsed()
        );
        eprintln!(
            "a token of the new key passed the guard {:?} after the rotation",
            since.elapsed()
        );
        let audited = server
            .audit(
                "platform",
                "maxai.iam.v1.AuthService/RotateSigningKeys",
                pb::AuditOutcome::Succeeded,
            )
            .await;
        assert_eq!(audited.len(), 1);
        assert_eq!(audited[0].actor, BOOTSTRAP_ADMIN);
        eprintln!("signing keys passed on {}", backend.name);
    }
}
