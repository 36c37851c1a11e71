//! The operators' surface of `WebhookIngressService` over real gRPC behind the real guard (IAM
//! on the same backend): endpoints and their sealed, rotating secrets; stored events,
//! quarantined events and dead letters newest first with paging; retention with etags; and
//! tenants kept apart. SQLite always, PostgreSQL + Redis whenever reachable (always in CI).
use std::{collections::BTreeMap, sync::Arc};

use hmac::{Hmac, Mac};
use maxai_kit::{
    on_db,
    sealed::MasterKey,
    server::GrpcApp,
    storage::{self, now_micros, Db},
};
use maxai_proto::maxai::{
    iam::v1 as iam,
    webhook::v1::{
        self as pb, webhook_endpoint::Account as A,
        webhook_ingress_service_client::WebhookIngressServiceClient,
        webhook_ingress_service_server::WebhookIngressServiceServer,
    },
};
use maxai_testkit::{authed, backends, serve_grpc, Authed, Backend, Running, TestIam};
use maxai_webhook_ingress::{
    api::WebhookApi,
    config::{
        DispatchConfig, GhlConfig, PaypalConfig, ProviderKeys, RetentionConfig, WebhookConfig,
    },
    domain::{
        Failure, Header, NewQuarantined, Next, Provider, QuarantineFailure, QuarantineReason,
        SchemaError,
    },
    store::{conformance, EventStore, GroupCommitConfig, GroupCommitter, SqlEventStore},
    MIGRATIONS, SERVICE_NAME, STORAGE_NAME,
};
use sha2::{Digest, Sha256};
use tonic::Code;

type Client = WebhookIngressServiceClient<Authed>;

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;
const MASTER: [u8; 32] = [7; 32];

fn config() -> WebhookConfig {
    WebhookConfig {
        consumers: BTreeMap::from([
            ("orchestrator".to_owned(), String::new()),
            ("billing".to_owned(), String::new()),
        ]),
        ghl: GhlConfig {
            public_keys: Vec::new(),
            legacy_public_keys: Vec::new(),
        },
        paypal: PaypalConfig {
            certificates: Vec::new(),
        },
        dispatch: DispatchConfig {
            enabled: false,
            batch: 10,
            lease_secs: 30,
            timeout_ms: 1_000,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_secs: 10,
            idle_poll_ms: 100,
        },
        retention: RetentionConfig {
            events_days: 30,
            dead_letters_days: 60,
            quarantine_days: 7,
            purge_every_secs: 3_600,
        },
    }
}

/// The webhook service and IAM on one gRPC server, with the store and the raw database beside
/// it for seeding and for looking at what was written.
struct Server {
    running: Running,
    iam: TestIam,
    store: Arc<dyn EventStore>,
    db: Db,
}

impl Server {
    async fn start(backend: &Backend) -> Server {
        let mut iam = TestIam::start(backend).await;
        let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
            .await
            .expect("connect");
        let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::new(db.clone()));
        let committer = GroupCommitter::spawn(store.clone(), GroupCommitConfig::default());
        let config = config();
        let keys = ProviderKeys::load(&config).expect("keys");
        let api = WebhookApi::new(
            store.clone(),
            Arc::new(committer),
            Arc::new(MasterKey::from_bytes(MASTER)),
            Arc::new(config),
            Arc::new(keys),
            None,
        );
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(WebhookIngressServiceServer::new(api));
        iam.take_servers().add_to(&mut routes);
        let running = serve_grpc(GrpcApp {
            routes: routes.routes(),
            service_names: vec![SERVICE_NAME.to_owned()],
            guard: iam.layer(),
        })
        .await;
        Server {
            running,
            iam,
            store,
            db,
        }
    }

    async fn channel(&self, token: &str) -> Authed {
        authed(&self.running.url(), token).await
    }

    /// The bootstrap platform admin.
    async fn admin(&self) -> Client {
        Client::new(self.channel(&self.iam.admin()).await)
    }

    async fn as_user(&self, subject: &str) -> Client {
        Client::new(self.channel(&self.iam.token(subject)).await)
    }

    /// A tenant with `clients` and a user holding `roles/tenant-admin` on it.
    async fn tenant(&self, tenant_id: &str, clients: &[&str], admin_user: &str) {
        let ch = self.channel(&self.iam.admin()).await;
        iam::tenant_service_client::TenantServiceClient::new(ch.clone())
            .create_tenant(iam::CreateTenantRequest {
                tenant: Some(iam::Tenant {
                    display_name: format!("Tenant {tenant_id}"),
                    contact_email: format!("ops@{tenant_id}.example"),
                    ..Default::default()
                }),
                tenant_id: tenant_id.into(),
                request_id: String::new(),
            })
            .await
            .expect("tenant");
        for c in clients {
            iam::client_service_client::ClientServiceClient::new(ch.clone())
                .create_client(iam::CreateClientRequest {
                    parent: format!("tenants/{tenant_id}"),
                    client: Some(iam::Client {
                        display_name: format!("Client {c}"),
                        time_zone: "UTC".into(),
                        ..Default::default()
                    }),
                    client_id: (*c).into(),
                    request_id: String::new(),
                })
                .await
                .expect("client");
        }
        iam::user_service_client::UserServiceClient::new(ch.clone())
            .create_user(iam::CreateUserRequest {
                parent: format!("tenants/{tenant_id}"),
                user: Some(iam::User {
                    email: format!("{admin_user}@{tenant_id}.example"),
                    ..Default::default()
                }),
                user_id: admin_user.into(),
                request_id: String::new(),
            })
            .await
            .expect("user");
        iam::role_service_client::RoleServiceClient::new(ch)
            .create_role_assignment(iam::CreateRoleAssignmentRequest {
                parent: format!("tenants/{tenant_id}"),
                role_assignment: Some(iam::RoleAssignment {
                    principal: format!("tenants/{tenant_id}/users/{admin_user}"),
                    role: "roles/tenant-admin".into(),
                    scope: format!("tenants/{tenant_id}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("role assignment");
    }

    /// Every stored secret version of an endpoint: (version, ciphertext, fingerprint).
    async fn secret_rows(
        &self,
        tenant: &str,
        endpoint: &str,
    ) -> Vec<(i64, Option<String>, String)> {
        on_db!(&self.db, |pool| sqlx::query_as::<
            _,
            (i64, Option<String>, String),
        >(
            "SELECT version, ciphertext, fingerprint FROM webhook_endpoint_secrets \
             WHERE tenant_id = $1 AND endpoint_id = $2 ORDER BY version"
        )
        .bind(tenant)
        .bind(endpoint)
        .fetch_all(pool)
        .await)
        .expect("secret rows")
    }
}

/// The field names of the BadRequest violations in a status's details (`google.rpc.Status` →
/// `Any` → `google.rpc.BadRequest`), read off the wire so the test needs no protobuf runtime.
fn fields(status: &tonic::Status) -> Vec<String> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// The length-delimited fields of a message, as (number, bytes).
    fn parts(b: &[u8]) -> Vec<(u64, &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let Some(key) = varint(b, &mut i) else { break };
            match key & 7 {
                0 if varint(b, &mut i).is_some() => {}
                1 => i += 8,
                5 => i += 4,
                2 => {
                    let Some(len) = varint(b, &mut i) else { break };
                    let end = i + len as usize;
                    if end > b.len() {
                        break;
                    }
                    out.push((key >> 3, &b[i..end]));
                    i = end;
                }
                _ => break,
            }
        }
        out
    }
    let mut found = Vec::new();
    for (n, any) in parts(status.details()) {
        let any = parts(any);
        if n != 3
            || !any
                .iter()
                .any(|(n, v)| *n == 1 && v.ends_with(b"google.rpc.BadRequest"))
        {
            continue;
        }
        for (_, bad_request) in any.iter().filter(|(n, _)| *n == 2) {
            for (_, violation) in parts(bad_request).iter().filter(|(n, _)| *n == 1) {
                for (_, field) in parts(violation).iter().filter(|(n, _)| *n == 1) {
                    found.push(String::from_utf8_lossy(field).into_owned());
                }
            }
        }
    }
    found
}

#[track_caller]
fn assert_invalid(status: &tonic::Status, expected: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let got = fields(status);
    for f in expected {
        assert!(
            got.iter().any(|g| g == f),
            "{f} missing from {got:?} ({status:?})"
        );
    }
}

fn endpoint(account: A, secret: &str) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        display_name: "Front desk".into(),
        account: Some(account),
        secret: secret.into(),
        ..Default::default()
    }
}

fn ghl(location: &str) -> A {
    A::Ghl(pb::GhlAccount {
        location_id: location.into(),
        company_id: String::new(),
    })
}

fn twilio(sid: &str, to: &str) -> A {
    A::Twilio(pb::TwilioAccount {
        account_sid: sid.into(),
        to_number: to.into(),
    })
}

fn retell(agent: &str) -> A {
    A::Retell(pb::RetellAccount {
        agent_id: agent.into(),
    })
}

fn stripe(account: &str) -> A {
    A::Stripe(pb::StripeAccount {
        account_id: account.into(),
    })
}

fn paypal(webhook_id: &str) -> A {
    A::Paypal(pb::PaypalAccount {
        account_id: "MERCHANT1".into(),
        webhook_id: webhook_id.into(),
    })
}

const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

async fn create(
    c: &mut Client,
    parent: &str,
    id: &str,
    e: pb::WebhookEndpoint,
) -> Result<pb::WebhookEndpoint, tonic::Status> {
    c.create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
        parent: parent.into(),
        webhook_endpoint: Some(e),
        webhook_endpoint_id: id.into(),
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner().webhook_endpoint.expect("endpoint"))
}

async fn get(c: &mut Client, name: &str) -> Result<pb::WebhookEndpoint, tonic::Status> {
    c.get_webhook_endpoint(pb::GetWebhookEndpointRequest { name: name.into() })
        .await
        .map(|r| r.into_inner().webhook_endpoint.expect("endpoint"))
}

async fn list(c: &mut Client, parent: &str, provider: pb::Provider) -> Vec<String> {
    c.list_webhook_endpoints(pb::ListWebhookEndpointsRequest {
        parent: parent.into(),
        provider: provider as i32,
        ..Default::default()
    })
    .await
    .expect("list")
    .into_inner()
    .webhook_endpoints
    .into_iter()
    .map(|e| e.name)
    .collect()
}

async fn update(
    c: &mut Client,
    e: pb::WebhookEndpoint,
    paths: &[&str],
) -> Result<pb::WebhookEndpoint, tonic::Status> {
    c.update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
        webhook_endpoint: Some(e),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    })
    .await
    .map(|r| r.into_inner().webhook_endpoint.expect("endpoint"))
}

async fn rotate(
    c: &mut Client,
    name: &str,
    secret: &str,
    ttl: Option<i64>,
    request_id: &str,
) -> Result<pb::WebhookEndpoint, tonic::Status> {
    c.rotate_secret(pb::RotateSecretRequest {
        name: name.into(),
        new_secret: secret.into(),
        previous_secret_ttl: ttl.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        request_id: request_id.into(),
    })
    .await
    .map(|r| r.into_inner().webhook_endpoint.expect("endpoint"))
}

fn active(e: &pb::WebhookEndpoint) -> Vec<String> {
    e.secret_versions
        .iter()
        .filter(|v| v.state == pb::SecretState::Active as i32)
        .map(|v| v.version_id.clone())
        .collect()
}

fn fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..4])
}

fn ts_us(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp");
    t.seconds * SECOND + i64::from(t.nanos) / 1_000
}

/// A Stripe webhook for `account`, signed with `secret` now.
async fn stripe_webhook(
    c: &mut Client,
    secret: &str,
    account: &str,
    id: &str,
) -> pb::IngestResponse {
    let now_s = now_micros() / SECOND;
    let body = serde_json::json!({
        "id": id,
        "object": "event",
        "type": "customer.created",
        "account": account,
        "created": now_s,
        "livemode": false,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(format!("{now_s}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    c.ingest(pb::IngestRequest {
        provider: "stripe".into(),
        raw_body: body.into_bytes(),
        headers: vec![
            pb::Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            pb::Header {
                name: "stripe-signature".into(),
                value: format!("t={now_s},v1={signature}"),
            },
        ],
        public_url: "https://hooks.example/v1/webhooks/stripe".into(),
        remote_address: "203.0.113.9:443".into(),
        http_method: "POST".into(),
        receive_time: Some(prost_types::Timestamp {
            seconds: now_s,
            nanos: 0,
        }),
    })
    .await
    .expect("ingest")
    .into_inner()
}

fn verified(r: &pb::IngestResponse) -> bool {
    r.outcome != pb::IngestOutcome::Rejected as i32
}

#[tokio::test]
async fn endpoints_per_provider_validate_and_keep_their_secrets_sealed() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        server.tenant("acme", &["shop", "spa"], "ann").await;
        let mut c = server.admin().await;
        let shop = "tenants/acme/clients/shop";
        let master = MasterKey::from_bytes(MASTER);

        // One endpoint per provider; secrets only where the provider signs with one.
        let secrets = [
            ("twilio-main", "twilio-auth-token-1"),
            ("retell-main", "key_retell_0001"),
            ("stripe-main", "whsec_stripe_0001"),
        ];
        let made = [
            create(&mut c, shop, "ghl-main", endpoint(ghl("loc123"), "")).await,
            create(
                &mut c,
                shop,
                "twilio-main",
                endpoint(twilio(TWILIO_SID, "+15550100"), secrets[0].1),
            )
            .await,
            create(
                &mut c,
                shop,
                "retell-main",
                endpoint(retell("agent_1"), secrets[1].1),
            )
            .await,
            create(
                &mut c,
                shop,
                "stripe-main",
                endpoint(stripe("acct_1Shop"), secrets[2].1),
            )
            .await,
            create(&mut c, shop, "paypal-main", endpoint(paypal("WH-1"), "")).await,
        ];
        let made: Vec<pb::WebhookEndpoint> = made.into_iter().map(|r| r.expect("create")).collect();
        let providers: Vec<i32> = made.iter().map(|e| e.provider).collect();
        assert_eq!(
            providers,
            [
                pb::Provider::Ghl,
                pb::Provider::Twilio,
                pb::Provider::Retell,
                pb::Provider::Stripe,
                pb::Provider::Paypal
            ]
            .map(|p| p as i32)
        );
        for e in &made {
            assert_eq!(e.etag, "r1");
            assert!(
                e.secret.is_empty(),
                "{}: the secret is never returned",
                e.name
            );
            assert!(e.create_time.is_some() && e.update_time.is_some());
            let text = format!("{e:?}");
            for (_, s) in secrets {
                assert!(
                    !text.contains(s),
                    "{}: the secret leaked: {text}",
                    backend.name
                );
            }
        }
        assert_eq!(
            made[0].name,
            "tenants/acme/clients/shop/webhookEndpoints/ghl-main"
        );
        assert!(made[0].secret_versions.is_empty() && made[4].secret_versions.is_empty());
        assert_eq!(made[0].ingest_url, "/v1/webhooks/ghl");
        assert_eq!(
            made[4].ingest_url,
            "/v1/webhooks/paypal?endpoint=tenants%2Facme%2Fclients%2Fshop%2FwebhookEndpoints%2Fpaypal-main"
        );

        // Sealed at rest for this endpoint only; the fingerprint is of the plain secret.
        for (id, plain) in secrets {
            let e = made.iter().find(|e| e.name.ends_with(id)).expect("made");
            assert_eq!(e.secret_versions.len(), 1);
            let v = &e.secret_versions[0];
            assert_eq!(
                (v.version_id.as_str(), v.state),
                ("1", pb::SecretState::Active as i32)
            );
            assert_eq!(v.fingerprint, fingerprint(plain));
            assert!(
                v.expire_time.is_none(),
                "the newest version does not expire"
            );
            let rows = server.secret_rows("acme", id).await;
            assert_eq!(rows.len(), 1);
            let (_, ciphertext, fp) = &rows[0];
            let ciphertext = ciphertext.as_deref().expect("stored");
            assert!(
                !ciphertext.contains(plain),
                "{}: {id} stored in the clear",
                backend.name
            );
            assert_eq!(fp, &fingerprint(plain));
            assert_eq!(
                master
                    .open(&e.name, ciphertext)
                    .expect("opens for its endpoint"),
                plain.as_bytes()
            );
            assert!(
                master
                    .open(
                        "tenants/acme/clients/shop/webhookEndpoints/other",
                        ciphertext
                    )
                    .is_err(),
                "a ciphertext does not open for another endpoint"
            );
        }

        // Validation: every violation is named, nothing is stored.
        let bad = [
            (
                endpoint(twilio("AC12", "555-0100"), ""),
                vec![
                    "webhook_endpoint.twilio.account_sid",
                    "webhook_endpoint.twilio.to_number",
                    "webhook_endpoint.secret",
                ],
            ),
            (
                endpoint(stripe(""), "sk_live_123"),
                vec![
                    "webhook_endpoint.stripe.account_id",
                    "webhook_endpoint.secret",
                ],
            ),
            (
                endpoint(retell(""), ""),
                vec![
                    "webhook_endpoint.retell.agent_id",
                    "webhook_endpoint.secret",
                ],
            ),
            (
                endpoint(ghl(""), "a-pem-key"),
                vec![
                    "webhook_endpoint.ghl.location_id",
                    "webhook_endpoint.secret",
                ],
            ),
            (
                endpoint(paypal(""), "x"),
                vec![
                    "webhook_endpoint.paypal.webhook_id",
                    "webhook_endpoint.secret",
                ],
            ),
            (
                pb::WebhookEndpoint::default(),
                vec!["webhook_endpoint.account"],
            ),
            (
                pb::WebhookEndpoint {
                    provider: pb::Provider::Stripe as i32,
                    display_name: "x".repeat(201),
                    ..endpoint(retell("agent_9"), "key_9")
                },
                vec!["webhook_endpoint.provider", "webhook_endpoint.display_name"],
            ),
        ];
        for (e, expected) in bad {
            let err = create(&mut c, shop, "", e).await.expect_err("invalid");
            assert_invalid(&err, &expected);
        }
        let err = create(
            &mut c,
            "tenants/acme",
            "Bad_Id",
            endpoint(retell("agent_9"), "k"),
        )
        .await
        .expect_err("invalid");
        assert_invalid(&err, &["parent", "webhook_endpoint_id"]);
        assert_eq!(
            list(&mut c, "tenants/acme/clients/-", pb::Provider::Unspecified)
                .await
                .len(),
            5
        );

        // An account is one endpoint's, across clients and tenants; ids are unique.
        let taken = create(
            &mut c,
            "tenants/acme/clients/spa",
            "",
            endpoint(retell("agent_1"), "key_x"),
        )
        .await
        .expect_err("taken account");
        assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
        let taken = create(
            &mut c,
            shop,
            "retell-main",
            endpoint(retell("agent_2"), "key_x"),
        )
        .await
        .expect_err("taken id");
        assert_eq!(taken.code(), Code::AlreadyExists);

        // Generated ids, and retries with a request id create once.
        let req = pb::CreateWebhookEndpointRequest {
            parent: "tenants/acme/clients/spa".into(),
            webhook_endpoint: Some(endpoint(twilio(TWILIO_SID, ""), "twilio-auth-token-1")),
            webhook_endpoint_id: String::new(),
            request_id: "rq-spa-1".into(),
        };
        let first = c
            .create_webhook_endpoint(req.clone())
            .await
            .expect("create")
            .into_inner();
        let again = c
            .create_webhook_endpoint(req)
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(first, again);
        let spa_twilio = first.webhook_endpoint.expect("endpoint");
        assert!(
            spa_twilio
                .name
                .starts_with("tenants/acme/clients/spa/webhookEndpoints/twilio-"),
            "{}",
            spa_twilio.name
        );

        // Get and list.
        assert_eq!(get(&mut c, &made[1].name).await.expect("get"), made[1]);
        assert_eq!(
            get(&mut c, "tenants/acme/clients/shop/webhookEndpoints/nope")
                .await
                .expect_err("missing")
                .code(),
            Code::NotFound
        );
        assert_invalid(
            &get(&mut c, "tenants/acme/webhookEndpoints/x")
                .await
                .expect_err("bad name"),
            &["name"],
        );
        let ids = |names: Vec<String>| -> Vec<String> {
            names
                .into_iter()
                .map(|n| n.rsplit('/').next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            ids(list(&mut c, shop, pb::Provider::Unspecified).await),
            [
                "ghl-main",
                "paypal-main",
                "retell-main",
                "stripe-main",
                "twilio-main"
            ],
            "by id"
        );
        let everyone = list(&mut c, "tenants/acme/clients/-", pb::Provider::Twilio).await;
        assert_eq!(
            everyone,
            [made[1].name.clone(), spa_twilio.name.clone()],
            "clients/- lists every client"
        );
        assert_eq!(
            list(
                &mut c,
                "tenants/acme/clients/spa",
                pb::Provider::Unspecified
            )
            .await,
            [spa_twilio.name.as_str()]
        );
        let mut pages = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .list_webhook_endpoints(pb::ListWebhookEndpointsRequest {
                    parent: "tenants/acme/clients/-".into(),
                    page_size: 2,
                    page_token: token.clone(),
                    provider: 0,
                })
                .await
                .expect("page")
                .into_inner();
            pages.push(page.webhook_endpoints.len());
            if page.next_page_token.is_empty() {
                break;
            }
            if pages.len() == 1 {
                let foreign = c
                    .list_webhook_endpoints(pb::ListWebhookEndpointsRequest {
                        parent: shop.into(),
                        page_size: 2,
                        page_token: page.next_page_token.clone(),
                        provider: 0,
                    })
                    .await
                    .expect_err("another list's token");
                assert_invalid(&foreign, &["page_token"]);
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, [2, 2, 2]);

        // Update: masked fields, etags, and no change of provider.
        let mut change = made[1].clone();
        change.display_name = "Reception".into();
        change.secret = "ignored-on-update".into();
        let renamed = update(&mut c, change.clone(), &["display_name"])
            .await
            .expect("update");
        assert_eq!(
            (renamed.display_name.as_str(), renamed.etag.as_str()),
            ("Reception", "r2")
        );
        assert_eq!(
            renamed.secret_versions, made[1].secret_versions,
            "the secret is not changed by update"
        );
        let stale = update(&mut c, change.clone(), &["display_name"])
            .await
            .expect_err("stale etag");
        assert_eq!(stale.code(), Code::Aborted);
        let mut number = renamed.clone();
        number.account = Some(twilio(TWILIO_SID, "+15550199"));
        number.disabled = true;
        let moved = update(&mut c, number.clone(), &["twilio", "disabled"])
            .await
            .expect("update");
        assert!(moved.disabled);
        assert_eq!(moved.account, Some(twilio(TWILIO_SID, "+15550199")));
        let mut other = moved.clone();
        other.account = Some(stripe("acct_x"));
        let refused = update(&mut c, other.clone(), &["stripe"])
            .await
            .expect_err("another provider");
        assert_invalid(&refused, &["update_mask.paths[0]"]);
        let refused = update(&mut c, other, &[])
            .await
            .expect_err("another provider");
        assert_invalid(&refused, &["webhook_endpoint.stripe"]);
        let mut broken = moved.clone();
        broken.account = Some(twilio("nope", ""));
        assert_invalid(
            &update(&mut c, broken, &["twilio"])
                .await
                .expect_err("invalid"),
            &["webhook_endpoint.twilio.account_sid"],
        );
        let same = update(&mut c, made[2].clone(), &["retell"])
            .await
            .expect("its own account again");
        assert_eq!(same.etag, "r2");
        let mut other_retell = create(
            &mut c,
            shop,
            "retell-two",
            endpoint(retell("agent_2"), "key_2"),
        )
        .await
        .expect("create");
        other_retell.account = Some(retell("agent_1"));
        assert_eq!(
            update(&mut c, other_retell, &["retell"])
                .await
                .expect_err("account taken")
                .code(),
            Code::AlreadyExists
        );
        assert_eq!(
            get(&mut c, &moved.name).await.expect("get"),
            moved,
            "refused updates changed nothing"
        );

        // Delete: etag-guarded, secrets destroyed with the endpoint.
        let gone = c
            .delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
                name: moved.name.clone(),
                etag: "r1".into(),
            })
            .await
            .expect_err("stale");
        assert_eq!(gone.code(), Code::Aborted);
        c.delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
            name: moved.name.clone(),
            etag: moved.etag.clone(),
        })
        .await
        .expect("delete");
        assert_eq!(
            get(&mut c, &moved.name).await.expect_err("deleted").code(),
            Code::NotFound
        );
        assert!(
            server.secret_rows("acme", "twilio-main").await.is_empty(),
            "secrets went with it"
        );
        let again = c
            .delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
                name: moved.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_err("already gone");
        assert_eq!(again.code(), Code::NotFound);
        eprintln!("endpoints passed on {}", backend.name);
    }
}

#[tokio::test]
async fn rotation_keeps_two_secrets_verifying_and_expires_the_older() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        server.tenant("acme", &["shop"], "ann").await;
        let mut c = server.admin().await;
        let shop = "tenants/acme/clients/shop";
        let e = create(
            &mut c,
            shop,
            "stripe-main",
            endpoint(stripe("acct_Rot"), "whsec_one"),
        )
        .await
        .expect("create");
        assert!(verified(
            &stripe_webhook(&mut c, "whsec_one", "acct_Rot", "evt_r1").await
        ));
        let forged = stripe_webhook(&mut c, "whsec_never", "acct_Rot", "evt_r0").await;
        assert_eq!(
            (forged.outcome, forged.rejection_reason),
            (
                pb::IngestOutcome::Rejected as i32,
                pb::RejectionReason::SignatureInvalid as i32
            ),
            "the check can fail"
        );

        // Rotate with the default overlap: both verify, the previous one expires in a day.
        let before = now_micros();
        let r2 = rotate(&mut c, &e.name, "whsec_two", None, "rot-1")
            .await
            .expect("rotate");
        assert_eq!(active(&r2), ["2", "1"]);
        assert_eq!(r2.etag, "r2");
        assert!(r2.secret_versions[0].expire_time.is_none());
        let expires = ts_us(&r2.secret_versions[1].expire_time);
        assert!(
            (before + DAY..=now_micros() + DAY).contains(&expires),
            "{}: the previous secret verifies for 24 hours",
            backend.name
        );
        assert_eq!(r2.secret_versions[0].fingerprint, fingerprint("whsec_two"));
        assert_eq!(
            rotate(&mut c, &e.name, "whsec_two", None, "rot-1")
                .await
                .expect("retry"),
            r2,
            "the same request id does not rotate again"
        );
        assert!(
            !format!("{r2:?}").contains("whsec_"),
            "secrets are never returned"
        );
        assert!(verified(
            &stripe_webhook(&mut c, "whsec_one", "acct_Rot", "evt_r2").await
        ));
        assert!(verified(
            &stripe_webhook(&mut c, "whsec_two", "acct_Rot", "evt_r3").await
        ));

        // Another rotation: at most two verify, so version 1 expires now and is destroyed.
        let r3 = rotate(&mut c, &e.name, "whsec_three", Some(3_600), "")
            .await
            .expect("rotate");
        assert_eq!(active(&r3), ["3", "2"]);
        assert_eq!(r3.secret_versions[2].state, pb::SecretState::Expired as i32);
        let old = stripe_webhook(&mut c, "whsec_one", "acct_Rot", "evt_r4").await;
        assert_eq!(
            old.rejection_reason,
            pb::RejectionReason::SignatureInvalid as i32
        );
        assert!(verified(
            &stripe_webhook(&mut c, "whsec_two", "acct_Rot", "evt_r5").await
        ));
        let rows = server.secret_rows("acme", "stripe-main").await;
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].1.is_none(),
            "{}: the expired ciphertext is erased",
            backend.name
        );
        assert!(rows[1].1.is_some() && rows[2].1.is_some());
        for (_, ciphertext, _) in &rows {
            assert!(!ciphertext.as_deref().unwrap_or("").contains("whsec_"));
        }

        // A leaked secret: zero overlap, only the new one verifies.
        let r4 = rotate(&mut c, &e.name, "whsec_four", Some(0), "")
            .await
            .expect("rotate");
        assert_eq!(active(&r4), ["4"]);
        assert!(!verified(
            &stripe_webhook(&mut c, "whsec_three", "acct_Rot", "evt_r6").await
        ));
        assert!(verified(
            &stripe_webhook(&mut c, "whsec_four", "acct_Rot", "evt_r7").await
        ));

        // What rotation refuses.
        assert_invalid(
            &rotate(&mut c, &e.name, "sk_live_1", None, "")
                .await
                .expect_err("not whsec"),
            &["new_secret"],
        );
        assert_invalid(
            &rotate(&mut c, &e.name, "whsec_5", Some(-1), "")
                .await
                .expect_err("negative"),
            &["previous_secret_ttl"],
        );
        assert_invalid(
            &rotate(&mut c, &e.name, "whsec_5", Some(31 * 86_400), "")
                .await
                .expect_err("too long"),
            &["previous_secret_ttl"],
        );
        assert_eq!(
            rotate(
                &mut c,
                "tenants/acme/clients/shop/webhookEndpoints/nope",
                "whsec_5",
                None,
                ""
            )
            .await
            .expect_err("missing")
            .code(),
            Code::NotFound
        );
        let g = create(&mut c, shop, "ghl-main", endpoint(ghl("loc1"), ""))
            .await
            .expect("create");
        assert_eq!(
            rotate(&mut c, &g.name, "pem", None, "")
                .await
                .expect_err("no secret")
                .code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            get(&mut c, &e.name).await.expect("get").etag,
            "r4",
            "refused rotations changed nothing"
        );
        eprintln!("rotation passed on {}", backend.name);
    }
}

#[tokio::test]
async fn tenants_cannot_see_or_change_each_others_records() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        server.tenant("acme", &["shop"], "ann").await;
        server.tenant("beta", &["shop"], "bob").await;
        let mut ann = server.as_user("tenants/acme/users/ann").await;
        let mut bob = server.as_user("tenants/beta/users/bob").await;

        let e = create(
            &mut ann,
            "tenants/acme/clients/shop",
            "retell-main",
            endpoint(retell("agent_a"), "key_a"),
        )
        .await
        .expect("a tenant admin manages its endpoints");
        let ids: Vec<String> = server
            .store
            .append(&[conformance::new_event("acme", "a-1", "call-a", true)])
            .await
            .expect("append")
            .iter()
            .map(|a| a.event().id.clone())
            .collect();
        let event = format!("tenants/acme/events/{}", ids[0]);

        let denied = |s: tonic::Status| {
            assert!(
                matches!(s.code(), Code::PermissionDenied | Code::NotFound),
                "expected a refusal, got {s:?}"
            );
        };
        denied(get(&mut bob, &e.name).await.expect_err("get"));
        denied(
            bob.list_webhook_endpoints(pb::ListWebhookEndpointsRequest {
                parent: "tenants/acme/clients/-".into(),
                ..Default::default()
            })
            .await
            .expect_err("list"),
        );
        let mut change = e.clone();
        change.disabled = true;
        denied(
            update(&mut bob, change, &["disabled"])
                .await
                .expect_err("update"),
        );
        denied(
            rotate(&mut bob, &e.name, "key_b", None, "")
                .await
                .expect_err("rotate"),
        );
        denied(
            bob.delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
                name: e.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_err("delete"),
        );
        denied(
            create(
                &mut bob,
                "tenants/acme/clients/shop",
                "sneaky",
                endpoint(retell("agent_b"), "key_b"),
            )
            .await
            .expect_err("create in another tenant"),
        );
        denied(
            bob.get_event(pb::GetEventRequest {
                name: event.clone(),
            })
            .await
            .expect_err("event"),
        );
        denied(
            bob.list_events(pb::ListEventsRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .expect_err("events"),
        );
        denied(
            bob.list_dead_letters(pb::ListDeadLettersRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await
            .expect_err("dead letters"),
        );
        denied(
            bob.update_event_retention_settings(pb::UpdateEventRetentionSettingsRequest {
                event_retention_settings: Some(pb::EventRetentionSettings {
                    name: "tenants/acme/eventRetentionSettings".into(),
                    event_retention: Some(prost_types::Duration {
                        seconds: 86_400,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect_err("retention"),
        );
        // In its own tenant, bob sees none of acme's records, even naming them.
        let own = bob
            .list_events(pb::ListEventsRequest {
                parent: "tenants/beta".into(),
                ..Default::default()
            })
            .await
            .expect("own events")
            .into_inner();
        assert!(own.events.is_empty(), "{}", backend.name);
        assert_invalid(
            &bob.list_events(pb::ListEventsRequest {
                parent: "tenants/beta".into(),
                client: "tenants/acme/clients/shop".into(),
                ..Default::default()
            })
            .await
            .expect_err("another tenant's client"),
            &["client"],
        );
        let moved = format!("tenants/beta/events/{}", ids[0]);
        assert_eq!(
            bob.get_event(pb::GetEventRequest { name: moved })
                .await
                .expect_err("not beta's")
                .code(),
            Code::NotFound
        );
        assert!(bob
            .list_webhook_endpoints(pb::ListWebhookEndpointsRequest {
                parent: "tenants/beta/clients/-".into(),
                ..Default::default()
            })
            .await
            .expect("own endpoints")
            .into_inner()
            .webhook_endpoints
            .is_empty());
        // Nothing of acme's changed.
        let mut ann_again = server.as_user("tenants/acme/users/ann").await;
        assert_eq!(get(&mut ann_again, &e.name).await.expect("get"), e);
        let seen = ann
            .get_event(pb::GetEventRequest { name: event })
            .await
            .expect("ann sees acme's event")
            .into_inner()
            .event
            .expect("event");
        assert_eq!(
            seen.canonical_event.expect("canonical").tenant,
            "tenants/acme"
        );
        eprintln!("isolation passed on {}", backend.name);
    }
}

fn quarantined(tenant: &str, client: &str, received_at_us: i64, n: usize) -> NewQuarantined {
    NewQuarantined {
        tenant_id: tenant.into(),
        client_id: client.into(),
        endpoint_id: "retell-main".into(),
        provider: Provider::Retell,
        raw_body: format!(r#"{{"event":"call_ended","n":{n}}}"#).into_bytes(),
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        provider_event_type: "call_ended".into(),
        provider_event_id: format!("call_ended:q{n}"),
        failure: QuarantineFailure {
            reason: QuarantineReason::SchemaInvalid,
            schema_errors: vec![SchemaError {
                instance_path: "/call".into(),
                schema_path: "/required".into(),
                message: "\"call\" is a required property".into(),
            }],
            error_message: String::new(),
            schema_url: "https://maxai.dev/schemas/webhook/retell/call_ended.json".into(),
        },
        received_at_us,
    }
}

#[tokio::test]
async fn events_quarantine_and_dead_letters_newest_first_with_paging() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let mut c = server.admin().await;
        let store = &server.store;
        let base = now_micros() - 10 * SECOND;

        // Five events of acme (two clients) and one of beta.
        let mut batch = Vec::new();
        for i in 0..5i64 {
            let mut e =
                conformance::new_event("acme", &format!("evt-{i}"), &format!("call-{i}"), true);
            e.received_at_us = base + i * SECOND;
            if i % 2 == 1 {
                e.event.client_id = "spa".into();
            }
            batch.push(e);
        }
        batch.push(conformance::new_event("beta", "evt-beta", "call-b", false));
        let ids: Vec<String> = store
            .append(&batch)
            .await
            .expect("append")
            .iter()
            .map(|a| a.event().id.clone())
            .collect();

        let mut names = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = c
                .list_events(pb::ListEventsRequest {
                    parent: "tenants/acme".into(),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("list events")
                .into_inner();
            pages += 1;
            for e in &page.events {
                assert_eq!(e.delivery_state, pb::DeliveryState::Pending as i32);
                assert!(e.expire_time.is_none(), "kept while undelivered");
                assert_eq!(e.deliveries.len(), 2);
                names.push(e.name.clone());
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(pages, 3);
        let newest_first: Vec<String> = ids[..5]
            .iter()
            .rev()
            .map(|id| format!("tenants/acme/events/{id}"))
            .collect();
        assert_eq!(
            names, newest_first,
            "{}: newest first, acme only",
            backend.name
        );

        let spa = c
            .list_events(pb::ListEventsRequest {
                parent: "tenants/acme".into(),
                client: "tenants/acme/clients/spa".into(),
                ..Default::default()
            })
            .await
            .expect("spa")
            .into_inner()
            .events;
        assert_eq!(spa.len(), 2);
        let filtered = |f: pb::ListEventsRequest| {
            let mut c = c.clone();
            async move {
                c.list_events(f)
                    .await
                    .expect("list")
                    .into_inner()
                    .events
                    .len()
            }
        };
        let acme = || pb::ListEventsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        };
        assert_eq!(
            filtered(pb::ListEventsRequest {
                provider: pb::Provider::Twilio as i32,
                ..acme()
            })
            .await,
            0
        );
        assert_eq!(
            filtered(pb::ListEventsRequest {
                provider_event_id: "evt-3".into(),
                ..acme()
            })
            .await,
            1
        );
        assert_eq!(
            filtered(pb::ListEventsRequest {
                event_type: "voice.call.ended".into(),
                ..acme()
            })
            .await,
            5
        );
        assert_eq!(
            filtered(pb::ListEventsRequest {
                start_time: Some(maxai_kit::resource::timestamp(base + SECOND)),
                end_time: Some(maxai_kit::resource::timestamp(base + 3 * SECOND)),
                ..acme()
            })
            .await,
            2
        );
        assert_invalid(
            &c.list_events(pb::ListEventsRequest {
                start_time: Some(maxai_kit::resource::timestamp(base)),
                end_time: Some(maxai_kit::resource::timestamp(base)),
                delivery_state: 42,
                ..acme()
            })
            .await
            .expect_err("invalid filters"),
            &["end_time", "delivery_state"],
        );

        let got = c
            .get_event(pb::GetEventRequest {
                name: newest_first[4].clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .event
            .expect("event");
        let ce = got.canonical_event.clone().expect("canonical");
        assert_eq!(
            (
                ce.provider_event_id.as_str(),
                ce.tenant.as_str(),
                ce.client.as_str(),
                ce.r#type.as_str()
            ),
            (
                "evt-0",
                "tenants/acme",
                "tenants/acme/clients/dental",
                "voice.call.ended"
            )
        );
        assert!(ce.data.is_some());
        assert_eq!(
            got.webhook_endpoint,
            "tenants/acme/clients/dental/webhookEndpoints/retell-main"
        );
        assert_eq!(ts_us(&got.receive_time), base);
        assert_eq!(
            c.get_event(pb::GetEventRequest {
                name: format!("tenants/beta/events/{}", ids[0])
            })
            .await
            .expect_err("another tenant's id")
            .code(),
            Code::NotFound
        );

        // Deliver everything except two rows, which become dead letters a second apart.
        let now = now_micros();
        let claimed = store
            .claim("test", now, 60 * SECOND, 100)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 11);
        let mut dead = Vec::new();
        for d in claimed {
            let name = d.event.event.provider_event_id.clone();
            let fail_at = match (name.as_str(), d.consumer.as_str()) {
                ("evt-0", "billing") => Some(now),
                ("evt-1", "orchestrator") => Some(now + SECOND),
                _ => None,
            };
            match fail_at {
                Some(at) => {
                    let failure = Failure {
                        status_code: "UNAVAILABLE".into(),
                        error_message: format!("{} is down", d.consumer),
                        attempted_at_us: at,
                        latency_us: 2_500,
                    };
                    store
                        .failed(d.outbox_id, "test", &failure, Next::Dead)
                        .await
                        .expect("dead");
                    dead.push((name, d.outbox_id));
                }
                None => store
                    .delivered(d.outbox_id, "test", false, now)
                    .await
                    .expect("delivered"),
            }
        }
        dead.sort();
        let letters = c
            .list_dead_letters(pb::ListDeadLettersRequest {
                parent: "tenants/acme".into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .expect("dead letters")
            .into_inner();
        assert_eq!(letters.dead_letters.len(), 1);
        let newest = &letters.dead_letters[0];
        assert_eq!(
            newest.name,
            format!("tenants/acme/deadLetters/{}", dead[1].1),
            "newest first"
        );
        assert_eq!(newest.consumer, "orchestrator");
        assert_eq!(newest.state, pb::DeadLetterState::Failed as i32);
        assert_eq!(newest.attempt_count, 1);
        assert_eq!(newest.attempts.len(), 1);
        assert_eq!(newest.attempts[0].status_code, "UNAVAILABLE");
        assert_eq!(newest.last_error, "orchestrator is down");
        assert_eq!(newest.event, format!("tenants/acme/events/{}", ids[1]));
        assert!(newest.expire_time.is_some());
        let rest = c
            .list_dead_letters(pb::ListDeadLettersRequest {
                parent: "tenants/acme".into(),
                page_size: 1,
                page_token: letters.next_page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page 2")
            .into_inner();
        let older_name = format!("tenants/acme/deadLetters/{}", dead[0].1);
        assert_eq!(
            rest.dead_letters
                .iter()
                .map(|d| d.name.clone())
                .collect::<Vec<_>>(),
            [older_name.as_str()]
        );
        assert!(rest.next_page_token.is_empty());
        let foreign = c
            .list_quarantined_events(pb::ListQuarantinedEventsRequest {
                parent: "tenants/acme".into(),
                page_token: letters.next_page_token,
                ..Default::default()
            })
            .await
            .expect_err("a dead letter token on the quarantine list");
        assert_invalid(&foreign, &["page_token"]);

        for name in [
            "tenants/acme/deadLetters/abc".to_owned(),
            format!("tenants/beta/deadLetters/{}", dead[0].1),
        ] {
            assert_eq!(
                c.get_dead_letter(pb::GetDeadLetterRequest { name })
                    .await
                    .expect_err("no such")
                    .code(),
                Code::NotFound
            );
        }
        let event0 = c
            .get_event(pb::GetEventRequest {
                name: newest_first[4].clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .event
            .expect("event");
        assert_eq!(
            event0.delivery_state,
            pb::DeliveryState::DeadLettered as i32
        );
        let billing = event0
            .deliveries
            .iter()
            .find(|d| d.consumer == "billing")
            .expect("billing");
        assert_eq!(billing.dead_letter, older_name);
        assert_eq!(billing.state, pb::DeliveryState::DeadLettered as i32);
        // Dead letters are kept 60 days from when delivery gave up, beyond the event's 30.
        assert_eq!(ts_us(&event0.expire_time), now + 60 * DAY);

        let replayed = c
            .replay_dead_letter(pb::ReplayDeadLetterRequest {
                name: older_name.clone(),
            })
            .await
            .expect("replay")
            .into_inner()
            .dead_letter
            .expect("dead letter");
        assert_eq!(replayed.state, pb::DeadLetterState::Replaying as i32);
        assert!(replayed.replay_time.is_some() && replayed.expire_time.is_none());
        let got = c
            .get_dead_letter(pb::GetDeadLetterRequest {
                name: older_name.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .dead_letter
            .expect("dead letter");
        assert_eq!(got.state, pb::DeadLetterState::Replaying as i32);
        let by_state = |state: pb::DeadLetterState| {
            let mut c = c.clone();
            async move {
                c.list_dead_letters(pb::ListDeadLettersRequest {
                    parent: "tenants/acme".into(),
                    state: state as i32,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .dead_letters
                .into_iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            by_state(pb::DeadLetterState::Replaying).await,
            [older_name.as_str()]
        );
        assert_eq!(
            by_state(pb::DeadLetterState::Failed).await,
            [newest.name.as_str()]
        );
        let requeued = store
            .claim("test", now_micros() + SECOND, SECOND, 10)
            .await
            .expect("claim");
        assert_eq!(
            requeued.iter().map(|d| d.outbox_id).collect::<Vec<_>>(),
            [dead[0].1],
            "queued again"
        );

        // Quarantine: newest first, paged, tenant-scoped.
        let mut q_ids = Vec::new();
        for i in 0..3 {
            let client = if i == 2 { "spa" } else { "dental" };
            let q = store
                .quarantine(&quarantined("acme", client, base + i as i64 * SECOND, i))
                .await
                .expect("quarantine");
            q_ids.push(q.id);
        }
        store
            .quarantine(&quarantined("beta", "dental", base, 9))
            .await
            .expect("quarantine");
        let first = c
            .list_quarantined_events(pb::ListQuarantinedEventsRequest {
                parent: "tenants/acme".into(),
                page_size: 2,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let second = c
            .list_quarantined_events(pb::ListQuarantinedEventsRequest {
                parent: "tenants/acme".into(),
                page_size: 2,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("page 2")
            .into_inner();
        assert!(second.next_page_token.is_empty());
        let listed: Vec<String> = first
            .quarantined_events
            .iter()
            .chain(&second.quarantined_events)
            .map(|q| q.name.clone())
            .collect();
        let want: Vec<String> = q_ids
            .iter()
            .rev()
            .map(|id| format!("tenants/acme/quarantinedEvents/{id}"))
            .collect();
        assert_eq!(listed, want, "{}: newest first", backend.name);
        let q = c
            .get_quarantined_event(pb::GetQuarantinedEventRequest {
                name: want[2].clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .quarantined_event
            .expect("quarantined");
        assert_eq!(q.raw_body, br#"{"event":"call_ended","n":0}"#.to_vec());
        assert_eq!(q.reason, pb::QuarantineReason::SchemaInvalid as i32);
        assert_eq!(q.state, pb::QuarantineState::Quarantined as i32);
        assert_eq!(q.schema_errors[0].instance_path, "/call");
        assert_eq!(q.client, "tenants/acme/clients/dental");
        assert_eq!(
            q.webhook_endpoint,
            "tenants/acme/clients/dental/webhookEndpoints/retell-main"
        );
        assert_eq!(
            ts_us(&q.expire_time),
            base + 7 * DAY,
            "the default quarantine retention"
        );
        let spa_only = c
            .list_quarantined_events(pb::ListQuarantinedEventsRequest {
                parent: "tenants/acme".into(),
                client: "tenants/acme/clients/spa".into(),
                state: pb::QuarantineState::Quarantined as i32,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .quarantined_events;
        assert_eq!(spa_only.len(), 1);
        assert_eq!(
            c.get_quarantined_event(pb::GetQuarantinedEventRequest {
                name: format!("tenants/beta/quarantinedEvents/{}", q_ids[0]),
            })
            .await
            .expect_err("not beta's")
            .code(),
            Code::NotFound
        );
        eprintln!("events passed on {}", backend.name);
    }
}

#[tokio::test]
async fn retention_settings_with_etags_drive_expiry() {
    for backend in backends().await {
        let server = Server::start(&backend).await;
        let mut c = server.admin().await;
        let name = "tenants/acme/eventRetentionSettings";
        let days = |n: i64| {
            Some(prost_types::Duration {
                seconds: n * 86_400,
                nanos: 0,
            })
        };
        let read = |c: &mut Client| {
            let mut c = c.clone();
            async move {
                c.get_event_retention_settings(pb::GetEventRetentionSettingsRequest {
                    name: name.into(),
                })
                .await
                .expect("get")
                .into_inner()
                .event_retention_settings
                .expect("settings")
            }
        };
        let put = |c: &mut Client, s: pb::EventRetentionSettings, paths: &[&str]| {
            let mut c = c.clone();
            let paths = paths.iter().map(|p| p.to_string()).collect();
            async move {
                c.update_event_retention_settings(pb::UpdateEventRetentionSettingsRequest {
                    event_retention_settings: Some(s),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await
                .map(|r| r.into_inner().event_retention_settings.expect("settings"))
            }
        };

        let fresh = read(&mut c).await;
        assert_eq!(
            fresh,
            pb::EventRetentionSettings {
                name: name.into(),
                event_retention: None,
                quarantine_retention: None,
                dead_letter_retention: None,
                etag: "r0".into(),
                update_time: None,
            },
            "never stored: every period is the platform default"
        );

        // A delivered event and a quarantined one, to see expiry follow the settings.
        let received = now_micros() - DAY;
        let mut e = conformance::new_event("acme", "ret-1", "call-r", false);
        e.received_at_us = received;
        let id = server.store.append(&[e]).await.expect("append")[0]
            .event()
            .id
            .clone();
        for d in server
            .store
            .claim("t", now_micros(), SECOND, 10)
            .await
            .expect("claim")
        {
            server
                .store
                .delivered(d.outbox_id, "t", false, now_micros())
                .await
                .expect("delivered");
        }
        let q = server
            .store
            .quarantine(&quarantined("acme", "dental", received, 1))
            .await
            .expect("quarantine");
        let event_expiry = |c: &mut Client| {
            let mut c = c.clone();
            let name = format!("tenants/acme/events/{id}");
            async move {
                ts_us(
                    &c.get_event(pb::GetEventRequest { name })
                        .await
                        .expect("event")
                        .into_inner()
                        .event
                        .expect("event")
                        .expire_time,
                )
            }
        };
        let quarantine_expiry = |c: &mut Client| {
            let mut c = c.clone();
            let name = format!("tenants/acme/quarantinedEvents/{}", q.id);
            async move {
                ts_us(
                    &c.get_quarantined_event(pb::GetQuarantinedEventRequest { name })
                        .await
                        .expect("quarantined")
                        .into_inner()
                        .quarantined_event
                        .expect("quarantined")
                        .expire_time,
                )
            }
        };
        assert_eq!(
            event_expiry(&mut c).await,
            received + 30 * DAY,
            "platform default"
        );
        assert_eq!(quarantine_expiry(&mut c).await, received + 7 * DAY);

        let v1 = put(
            &mut c,
            pb::EventRetentionSettings {
                name: name.into(),
                event_retention: days(7),
                etag: fresh.etag.clone(),
                ..Default::default()
            },
            &["event_retention"],
        )
        .await
        .expect("create");
        assert_eq!(
            (
                v1.etag.as_str(),
                v1.event_retention,
                v1.quarantine_retention
            ),
            ("r1", days(7), None)
        );
        assert!(v1.update_time.is_some());
        assert_eq!(
            event_expiry(&mut c).await,
            received + 7 * DAY,
            "the tenant's period"
        );
        assert_eq!(read(&mut c).await, v1);

        let stale = put(
            &mut c,
            pb::EventRetentionSettings {
                name: name.into(),
                event_retention: days(3),
                etag: "r0".into(),
                ..Default::default()
            },
            &["event_retention"],
        )
        .await
        .expect_err("stale etag");
        assert_eq!(stale.code(), Code::Aborted);
        let invalid = put(
            &mut c,
            pb::EventRetentionSettings {
                name: name.into(),
                event_retention: days(400),
                quarantine_retention: Some(prost_types::Duration {
                    seconds: 129_600,
                    nanos: 0,
                }),
                dead_letter_retention: days(0),
                ..Default::default()
            },
            &[],
        )
        .await
        .expect_err("invalid");
        assert_invalid(
            &invalid,
            &[
                "event_retention_settings.event_retention",
                "event_retention_settings.quarantine_retention",
                "event_retention_settings.dead_letter_retention",
            ],
        );
        assert_invalid(
            &put(
                &mut c,
                pb::EventRetentionSettings {
                    name: name.into(),
                    ..Default::default()
                },
                &["events"],
            )
            .await
            .expect_err("unknown path"),
            &["update_mask.paths[0]"],
        );
        assert_invalid(
            &put(
                &mut c,
                pb::EventRetentionSettings {
                    name: "tenants/acme".into(),
                    ..Default::default()
                },
                &[],
            )
            .await
            .expect_err("bad name"),
            &["event_retention_settings.name"],
        );

        // Without an etag; only the masked field changes.
        let v2 = put(
            &mut c,
            pb::EventRetentionSettings {
                name: name.into(),
                quarantine_retention: days(2),
                ..Default::default()
            },
            &["quarantine_retention"],
        )
        .await
        .expect("update");
        assert_eq!(
            (
                v2.etag.as_str(),
                v2.event_retention,
                v2.quarantine_retention
            ),
            ("r2", days(7), days(2))
        );
        assert_eq!(quarantine_expiry(&mut c).await, received + 2 * DAY);
        // Unset again: back to the default.
        let v3 = put(
            &mut c,
            pb::EventRetentionSettings {
                name: name.into(),
                etag: v2.etag.clone(),
                ..Default::default()
            },
            &["event_retention"],
        )
        .await
        .expect("clear");
        assert_eq!(
            (
                v3.etag.as_str(),
                v3.event_retention,
                v3.quarantine_retention
            ),
            ("r3", None, days(2))
        );
        assert_eq!(event_expiry(&mut c).await, received + 30 * DAY);
        eprintln!("retention passed on {}", backend.name);
    }
}
