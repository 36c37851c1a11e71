//! IAM tenancy over real gRPC and REST, on SQLite and (when reachable, always in CI) PostgreSQL.
use maxai_iam::{
    store::{conformance, SqlIamStore},
    MIGRATIONS, SERVICE_NAMES, STORAGE_NAME,
};
use maxai_kit::{server::GrpcApp, storage};
use maxai_proto::maxai::iam::v1::{
    self as pb, client_service_client::ClientServiceClient,
    tenant_service_client::TenantServiceClient,
};
use maxai_testkit::{
    authed, backends, serve_gateway, serve_grpc, Authed, Backend, Running, TestIam,
};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::StatusExt;

/// IAM served over gRPC behind its own guard.
struct Server {
    running: Running,
    iam: TestIam,
}

impl Server {
    fn url(&self) -> String {
        self.running.url()
    }
    /// A channel whose calls carry the bootstrap platform admin's token.
    async fn admin(&self) -> Authed {
        authed(&self.url(), &self.iam.admin()).await
    }
    /// A channel whose calls carry `subject`'s token.
    #[allow(dead_code)]
    async fn as_principal(&self, subject: &str) -> Authed {
        authed(&self.url(), &self.iam.token(subject)).await
    }
}

async fn serve(backend: &Backend) -> Server {
    let mut iam = TestIam::start(backend).await;
    let mut routes = tonic::service::RoutesBuilder::default();
    iam.take_servers().add_to(&mut routes);
    let running = serve_grpc(GrpcApp {
        routes: routes.routes(),
        service_names: SERVICE_NAMES.map(String::from).to_vec(),
        guard: iam.layer(),
    })
    .await;
    Server { running, iam }
}

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn tenant(display: &str) -> pb::Tenant {
    pb::Tenant {
        display_name: display.into(),
        contact_email: "ops@acme.example".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn store_conformance_on_every_backend() {
    for backend in backends().await {
        let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
            .await
            .expect("connect");
        conformance::run_all(&SqlIamStore::new(db)).await;
        eprintln!("iam conformance passed on {}", backend.name);
    }
}

#[tokio::test]
async fn tenants_and_clients_over_grpc() {
    for backend in backends().await {
        let server = serve(&backend).await;
        let mut tenants = TenantServiceClient::new(server.admin().await);
        let mut clients = ClientServiceClient::new(server.admin().await);

        let bad = tenants
            .create_tenant(pb::CreateTenantRequest {
                tenant: Some(pb::Tenant {
                    display_name: String::new(),
                    contact_email: "nope".into(),
                    audit_retention: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                tenant_id: "A!".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let f = fields(&bad);
        for want in [
            "tenant_id",
            "tenant.display_name",
            "tenant.contact_email",
            "tenant.audit_retention",
        ] {
            assert!(f.iter().any(|x| x == want), "{want} not in {f:?}");
        }
        let empty = tenants
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .expect("list")
            .into_inner();
        // Only the operator's own tenant (bootstrapped) is there.
        let names: Vec<_> = empty.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["tenants/platform"], "refused create stored nothing");

        let t = tenants
            .create_tenant(pb::CreateTenantRequest {
                tenant: Some(tenant("Acme")),
                tenant_id: "acme".into(),
                request_id: String::new(),
            })
            .await
            .expect("create")
            .into_inner()
            .tenant
            .expect("tenant");
        assert_eq!(
            (t.name.as_str(), t.state, t.etag.as_str()),
            ("tenants/acme", pb::TenantState::Active as i32, "r1")
        );
        assert_eq!(t.audit_retention.map(|d| d.seconds), Some(400 * 24 * 3600));

        let c = clients
            .create_client(pb::CreateClientRequest {
                parent: "tenants/acme".into(),
                client: Some(pb::Client {
                    display_name: "Smile Dental".into(),
                    time_zone: "America/Chicago".into(),
                    ..Default::default()
                }),
                client_id: "smile".into(),
                request_id: "rq-1".into(),
            })
            .await
            .expect("create client")
            .into_inner()
            .client
            .expect("client");
        assert_eq!(c.name, "tenants/acme/clients/smile");
        let bad_tz = clients
            .create_client(pb::CreateClientRequest {
                parent: "tenants/acme".into(),
                client: Some(pb::Client {
                    display_name: "X".into(),
                    time_zone: "chicago".into(),
                    ..Default::default()
                }),
                client_id: "x".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(fields(&bad_tz), ["client.time_zone"]);

        // Update with a mask; a stale etag loses.
        let paused = clients
            .update_client(pb::UpdateClientRequest {
                client: Some(pb::Client {
                    name: c.name.clone(),
                    state: pb::ClientState::Paused as i32,
                    etag: c.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
            })
            .await
            .expect("pause")
            .into_inner()
            .client
            .expect("client");
        assert_eq!(
            (paused.state, paused.display_name.as_str()),
            (pb::ClientState::Paused as i32, "Smile Dental")
        );
        let stale = clients
            .update_client(pb::UpdateClientRequest {
                client: Some(pb::Client {
                    name: c.name.clone(),
                    website: "https://x.example".into(),
                    etag: c.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["website".into()],
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted);

        // A deleted tenant is gone for clients and lists, and takes no new clients.
        tenants
            .delete_tenant(pb::DeleteTenantRequest {
                name: "tenants/acme".into(),
                etag: String::new(),
            })
            .await
            .expect("delete");
        let after = tenants
            .get_tenant(pb::GetTenantRequest {
                name: "tenants/acme".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .tenant
            .expect("t");
        assert_eq!(after.state, pb::TenantState::Deleted as i32);
        assert!(after.delete_time.is_some());
        let listed = tenants
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .expect("list")
            .into_inner();
        let names: Vec<_> = listed.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["tenants/platform"],
            "deleted tenants are not listed"
        );
        let refused = clients
            .create_client(pb::CreateClientRequest {
                parent: "tenants/acme".into(),
                client: Some(pb::Client {
                    display_name: "Late".into(),
                    time_zone: "UTC".into(),
                    ..Default::default()
                }),
                client_id: "late".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        eprintln!("iam grpc passed on {}", backend.name);
    }
}

/// Every annotated RPC of the tenancy services answers over REST and is in the OpenAPI document.
#[tokio::test]
async fn tenancy_over_rest() {
    let backend = maxai_testkit::sqlite();
    let grpc = serve(&backend).await;
    let rest = serve_gateway(
        &grpc.running,
        SERVICE_NAMES.map(String::from).to_vec(),
        &grpc.iam,
    )
    .await;
    let admin = grpc.iam.admin();
    let http = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {admin}").parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let url = |p: &str| format!("{}{p}", rest.url());
    let created: Value = http
        .post(url("/v1/tenants?tenantId=acme"))
        .json(&json!({"displayName": "Acme", "contactEmail": "ops@acme.example", "rateLimits": {"requestsPerMinute": 600}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(created["name"], "tenants/acme", "{created}");
    assert_eq!(created["rateLimits"]["requestsPerMinute"], 600);
    let client: Value = http
        .post(url("/v1/tenants/acme/clients?clientId=smile"))
        .json(&json!({"displayName": "Smile", "timeZone": "America/Chicago"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(client["name"], "tenants/acme/clients/smile", "{client}");
    let listed: Value = http
        .get(url("/v1/tenants/acme/clients"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["clients"].as_array().map(Vec::len), Some(1));
    let missing = http
        .get(url("/v1/tenants/nobody/clients/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

    maxai_testkit::assert_every_rpc_reachable(&rest, &SERVICE_NAMES, &admin).await;
}

mod access {
    use super::*;
    use maxai_proto::maxai::iam::v1::{
        authorization_service_client::AuthorizationServiceClient,
        role_service_client::RoleServiceClient,
    };

    async fn tenant_and_client(server: &Server, tenant_id: &str) {
        let mut t = TenantServiceClient::new(server.admin().await);
        t.create_tenant(pb::CreateTenantRequest {
            tenant: Some(tenant("T")),
            tenant_id: tenant_id.into(),
            request_id: String::new(),
        })
        .await
        .expect("tenant");
        let mut c = ClientServiceClient::new(server.admin().await);
        c.create_client(pb::CreateClientRequest {
            parent: format!("tenants/{tenant_id}"),
            client: Some(pb::Client {
                display_name: "C".into(),
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            client_id: "shop".into(),
            request_id: String::new(),
        })
        .await
        .expect("client");
        // The people the checks are about: a principal that does not exist holds nothing.
        let mut u = maxai_proto::maxai::iam::v1::user_service_client::UserServiceClient::new(
            server.admin().await,
        );
        for id in ["ann", "bob", "cy"] {
            u.create_user(pb::CreateUserRequest {
                parent: format!("tenants/{tenant_id}"),
                user: Some(pb::User {
                    email: format!("{id}@{tenant_id}.example"),
                    ..Default::default()
                }),
                user_id: id.into(),
                request_id: String::new(),
            })
            .await
            .expect("user");
        }
    }

    fn check(subject: &str, permission: &str, resource: &str) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            check: Some(pb::AuthorizationCheck {
                subject: subject.into(),
                permission: permission.into(),
                resource: resource.into(),
            }),
        }
    }

    async fn allowed(
        a: &mut AuthorizationServiceClient<Authed>,
        subject: &str,
        permission: &str,
        resource: &str,
    ) -> (bool, String) {
        let r = a
            .authorize(check(subject, permission, resource))
            .await
            .expect("authorize")
            .into_inner()
            .result
            .expect("result");
        (r.decision == pb::Decision::Allow as i32, r.reason)
    }

    /// Roles and assignments decide, scoped to their tenant and client; revoking is immediate.
    #[tokio::test]
    async fn policy_engine_decides_and_forgets_on_change() {
        for backend in backends().await {
            let server = serve(&backend).await;
            tenant_and_client(&server, "acme").await;
            tenant_and_client(&server, "beta").await;
            let mut roles = RoleServiceClient::new(server.admin().await);
            let mut authz = AuthorizationServiceClient::new(server.admin().await);

            let admin = roles
                .create_role_assignment(pb::CreateRoleAssignmentRequest {
                    parent: "tenants/acme".into(),
                    role_assignment: Some(pb::RoleAssignment {
                        principal: "tenants/acme/users/ann".into(),
                        role: "roles/tenant-admin".into(),
                        scope: "tenants/acme".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("assign")
                .into_inner()
                .role_assignment
                .expect("assignment");
            assert_eq!(admin.scope_kind, pb::ScopeKind::Tenant as i32);

            let (ok, reason) = allowed(
                &mut authz,
                "tenants/acme/users/ann",
                "iam.clients.delete",
                "tenants/acme/clients/shop",
            )
            .await;
            assert!(ok && reason.contains("roles/tenant-admin"), "{reason}");
            let (ok, reason) = allowed(
                &mut authz,
                "tenants/acme/users/ann",
                "iam.clients.delete",
                "tenants/beta/clients/shop",
            )
            .await;
            assert!(!ok, "a tenant admin of acme has nothing in beta: {reason}");
            let (ok, _) = allowed(
                &mut authz,
                "tenants/acme/users/ann",
                "flags.flags.create",
                "flags/x",
            )
            .await;
            assert!(!ok, "platform permissions need a platform admin");

            // Cross-tenant grants are refused at assignment time and nothing is stored.
            let refused = roles
                .create_role_assignment(pb::CreateRoleAssignmentRequest {
                    parent: "tenants/acme".into(),
                    role_assignment: Some(pb::RoleAssignment {
                        principal: "tenants/beta/users/bob".into(),
                        role: "roles/tenant-admin".into(),
                        scope: "tenants/beta".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                fields(&refused),
                ["role_assignment.principal", "role_assignment.scope"]
            );

            // A custom role of acme, on one client only.
            roles
                .create_role(pb::CreateRoleRequest {
                    parent: "tenants/acme".into(),
                    role: Some(pb::Role {
                        title: "Publisher".into(),
                        permissions: vec!["prompt.instances.publish".into()],
                        ..Default::default()
                    }),
                    role_id: "publisher".into(),
                    request_id: String::new(),
                })
                .await
                .expect("role");
            let bad_role = roles
                .create_role(pb::CreateRoleRequest {
                    parent: "tenants/acme".into(),
                    role: Some(pb::Role {
                        title: "Sneaky".into(),
                        permissions: vec!["flags.flags.create".into(), "nope.x.y".into()],
                        ..Default::default()
                    }),
                    role_id: "sneaky".into(),
                    request_id: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                fields(&bad_role),
                ["role.permissions[0]", "role.permissions[1]"]
            );
            roles
                .create_role_assignment(pb::CreateRoleAssignmentRequest {
                    parent: "tenants/acme".into(),
                    role_assignment: Some(pb::RoleAssignment {
                        principal: "tenants/acme/users/cy".into(),
                        role: "tenants/acme/roles/publisher".into(),
                        scope: "tenants/acme/clients/shop".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("assign custom");
            let inside = "tenants/acme/clients/shop/promptInstances/p1";
            assert!(
                allowed(
                    &mut authz,
                    "tenants/acme/users/cy",
                    "prompt.instances.publish",
                    inside
                )
                .await
                .0
            );
            assert!(
                !allowed(
                    &mut authz,
                    "tenants/acme/users/cy",
                    "prompt.instances.delete",
                    inside
                )
                .await
                .0
            );
            assert!(
                !allowed(
                    &mut authz,
                    "tenants/acme/users/cy",
                    "prompt.instances.publish",
                    "tenants/acme/clients/other/promptInstances/p1"
                )
                .await
                .0
            );

            // Revoking the assignment takes effect on the next check (the cache is invalidated).
            roles
                .delete_role_assignment(pb::DeleteRoleAssignmentRequest {
                    name: admin.name.clone(),
                    etag: String::new(),
                })
                .await
                .expect("revoke");
            let (ok, reason) = allowed(
                &mut authz,
                "tenants/acme/users/ann",
                "iam.clients.delete",
                "tenants/acme/clients/shop",
            )
            .await;
            assert!(!ok, "still allowed after revocation: {reason}");

            let batch = authz
                .batch_authorize(pb::BatchAuthorizeRequest {
                    parent: "tenants/acme".into(),
                    checks: vec![
                        pb::AuthorizationCheck {
                            subject: "tenants/acme/users/cy".into(),
                            permission: "prompt.instances.publish".into(),
                            resource: inside.into(),
                        },
                        pb::AuthorizationCheck {
                            subject: "tenants/acme/users/cy".into(),
                            permission: "iam.clients.get".into(),
                            resource: "tenants/acme/clients/shop".into(),
                        },
                    ],
                })
                .await
                .expect("batch")
                .into_inner()
                .results;
            assert_eq!(
                batch.iter().map(|r| r.decision).collect::<Vec<_>>(),
                [pb::Decision::Allow as i32, pb::Decision::Deny as i32]
            );
            let outside = authz
                .batch_authorize(pb::BatchAuthorizeRequest {
                    parent: "tenants/acme".into(),
                    checks: vec![pb::AuthorizationCheck {
                        subject: "tenants/acme/users/cy".into(),
                        permission: "iam.clients.get".into(),
                        resource: "tenants/beta".into(),
                    }],
                })
                .await
                .unwrap_err();
            assert_eq!(fields(&outside), ["checks[0].resource"]);
            eprintln!("policy passed on {}", backend.name);
        }
    }

    #[tokio::test]
    async fn built_in_roles_and_permissions_are_listed() {
        let backend = maxai_testkit::sqlite();
        let server = serve(&backend).await;
        let mut roles = RoleServiceClient::new(server.admin().await);
        let built_in = roles
            .list_roles(pb::ListRolesRequest::default())
            .await
            .expect("list")
            .into_inner()
            .roles;
        let names: Vec<&str> = built_in.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "roles/platform-admin",
                "roles/tenant-admin",
                "roles/tenant-member",
                "roles/client-admin",
                "roles/client-viewer",
                "roles/platform-service"
            ]
        );
        let viewer = roles
            .get_role(pb::GetRoleRequest {
                name: "roles/client-viewer".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .role
            .expect("role");
        assert!(viewer.built_in && viewer.permissions.contains(&"iam.clients.get".to_owned()));
        let perms = roles
            .list_permissions(pb::ListPermissionsRequest {
                page_size: 5,
                page_token: String::new(),
                area: "iam".into(),
                scope: 0,
            })
            .await
            .expect("perms")
            .into_inner();
        assert_eq!(perms.permissions.len(), 5);
        assert!(perms
            .permissions
            .iter()
            .all(|p| p.permission.starts_with("iam.")));
        assert!(!perms.next_page_token.is_empty());
        let immutable = roles
            .delete_role(pb::DeleteRoleRequest {
                name: "roles/tenant-admin".into(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(immutable.code(), Code::FailedPrecondition);
    }

    /// A revocation through one replica reaches another replica's decision cache within a
    /// second (Redis pub/sub between separately connected replicas).
    #[tokio::test]
    async fn revocation_reaches_other_replicas() {
        let Some(backend) = maxai_testkit::postgres().await else {
            return;
        };
        let a = serve(&backend).await;
        let b = serve(&backend).await;
        tenant_and_client(&a, "acme").await;
        let mut roles = RoleServiceClient::new(a.admin().await);
        let mut authz_b = AuthorizationServiceClient::new(b.admin().await);
        let grant = roles
            .create_role_assignment(pb::CreateRoleAssignmentRequest {
                parent: "tenants/acme".into(),
                role_assignment: Some(pb::RoleAssignment {
                    principal: "tenants/acme/users/ann".into(),
                    role: "roles/client-admin".into(),
                    scope: "tenants/acme/clients/shop".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("assign")
            .into_inner()
            .role_assignment
            .expect("assignment");
        // Replica b decides (and caches) the allow.
        assert!(
            allowed(
                &mut authz_b,
                "tenants/acme/users/ann",
                "iam.clients.update",
                "tenants/acme/clients/shop"
            )
            .await
            .0
        );
        roles
            .delete_role_assignment(pb::DeleteRoleAssignmentRequest {
                name: grant.name,
                etag: String::new(),
            })
            .await
            .expect("revoke");
        let start = std::time::Instant::now();
        loop {
            if !allowed(
                &mut authz_b,
                "tenants/acme/users/ann",
                "iam.clients.update",
                "tenants/acme/clients/shop",
            )
            .await
            .0
            {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(1),
                "replica b still allows a second after revocation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        eprintln!(
            "replica b forgot the revoked grant after {:?}",
            start.elapsed()
        );
    }
}

mod audit_trail {
    use super::*;
    use maxai_iam::{
        domain::AuditRecord,
        store::{AuditFilter, AuditStore},
    };
    use maxai_kit::on_db;
    use maxai_proto::maxai::iam::v1::audit_service_client::AuditServiceClient;

    const DAY_US: i64 = 24 * 3600 * 1_000_000;

    /// Changes are recorded in the tenant's chain, a modified row fails verification, and a
    /// purge keeps the rest verifiable from its anchor.
    #[tokio::test]
    async fn changes_are_chained_verified_and_purged() {
        for backend in backends().await {
            let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
                .await
                .expect("connect");
            let store = SqlIamStore::new(db.clone());
            // Two entries from long ago, older than any retention.
            let old = maxai_kit::storage::now_micros() - 500 * DAY_US;
            for i in 0..2 {
                let r = AuditRecord {
                    actor: "system".into(),
                    action: format!("old-{i}"),
                    details: "{}".into(),
                    ..Default::default()
                };
                store.append("acme", old + i, &r).await.expect("append");
            }
            let server = serve(&backend).await;
            let mut tenants = TenantServiceClient::new(server.admin().await);
            let mut req = tonic::Request::new(pb::CreateTenantRequest {
                tenant: Some(tenant("Acme")),
                tenant_id: "acme".into(),
                request_id: String::new(),
            });
            req.metadata_mut()
                .insert("x-correlation-id", "corr-42".parse().expect("metadata"));
            tenants.create_tenant(req).await.expect("tenant");
            let mut clients = ClientServiceClient::new(server.admin().await);
            clients
                .create_client(pb::CreateClientRequest {
                    parent: "tenants/acme".into(),
                    client: Some(pb::Client {
                        display_name: "Shop".into(),
                        time_zone: "UTC".into(),
                        ..Default::default()
                    }),
                    client_id: "shop".into(),
                    request_id: String::new(),
                })
                .await
                .expect("client");

            let mut audit = AuditServiceClient::new(server.admin().await);
            let listed = audit
                .list_audit_entries(pb::ListAuditEntriesRequest {
                    parent: "tenants/acme".into(),
                    page_size: 2,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            let actions: Vec<&str> = listed
                .audit_entries
                .iter()
                .map(|e| e.action.as_str())
                .collect();
            assert_eq!(
                actions,
                [
                    "maxai.iam.v1.ClientService/CreateClient",
                    "maxai.iam.v1.TenantService/CreateTenant"
                ],
                "newest first"
            );
            assert_eq!(listed.audit_entries[1].request_id, "corr-42");
            assert_eq!(listed.audit_entries[0].client, "tenants/acme/clients/shop");
            assert!(!listed.next_page_token.is_empty());
            let by_resource = |resource: &str| {
                let mut a = audit.clone();
                let req = pb::ListAuditEntriesRequest {
                    parent: "tenants/acme".into(),
                    resource: resource.into(),
                    ..Default::default()
                };
                async move {
                    a.list_audit_entries(req)
                        .await
                        .expect("list")
                        .into_inner()
                        .audit_entries
                        .len()
                }
            };
            assert_eq!(by_resource("tenants/acme/clients/shop").await, 1);
            assert_eq!(
                by_resource("tenants/acme").await,
                2,
                "the tenant and everything inside it"
            );
            assert_eq!(
                by_resource("tenants/acme/clients/sh").await,
                0,
                "a resource filter matches names, not text prefixes"
            );

            let verify = |audit: &mut AuditServiceClient<Authed>| {
                let mut a = audit.clone();
                async move {
                    a.verify_audit_chain(pb::VerifyAuditChainRequest {
                        parent: "tenants/acme".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("verify")
                    .into_inner()
                }
            };
            let ok = verify(&mut audit).await;
            assert!(ok.valid, "{ok:?}");
            assert_eq!((ok.verified_count, ok.end_sequence), (4, 4));

            // Purge: the two old entries go, the chain still verifies from the anchor.
            let purged = audit
                .purge_audit_entries(pb::PurgeAuditEntriesRequest {
                    parent: "tenants/acme".into(),
                    ..Default::default()
                })
                .await
                .expect("purge")
                .into_inner();
            assert_eq!((purged.purged_count, purged.last_purged_sequence), (2, 2));
            let after = verify(&mut audit).await;
            assert!(
                after.valid && after.verified_count == 2 && after.anchor_hash == purged.anchor_hash,
                "{after:?}"
            );
            assert_eq!(
                store
                    .list_entries("acme", &AuditFilter::default(), None, 10)
                    .await
                    .expect("list")
                    .len(),
                2
            );

            // Tampering with a stored row is found.
            on_db!(&db, |pool| sqlx::query(
                "UPDATE audit_entries SET actor = 'mallory' WHERE tenant_id = 'acme' AND seq = 4"
            )
            .execute(pool)
            .await
            .map(|_| ()))
            .expect("tamper");
            let broken = verify(&mut audit).await;
            assert!(!broken.valid);
            assert_eq!(broken.first_invalid_sequence, 4, "{broken:?}");
            eprintln!("audit passed on {}", backend.name);
        }
    }
}

mod people {
    use super::*;
    use maxai_proto::maxai::iam::v1::{
        authorization_service_client::AuthorizationServiceClient,
        role_service_client::RoleServiceClient, user_service_client::UserServiceClient,
    };

    #[tokio::test]
    async fn users_are_invited_listed_suspended_and_deleted_with_their_grants() {
        for backend in backends().await {
            let server = serve(&backend).await;
            let mut tenants = TenantServiceClient::new(server.admin().await);
            tenants
                .create_tenant(pb::CreateTenantRequest {
                    tenant: Some(tenant("Acme")),
                    tenant_id: "acme".into(),
                    request_id: String::new(),
                })
                .await
                .expect("tenant");
            let mut users = UserServiceClient::new(server.admin().await);
            let invite = |email: &str, id: &str| pb::CreateUserRequest {
                parent: "tenants/acme".into(),
                user: Some(pb::User {
                    email: email.into(),
                    display_name: "Ann".into(),
                    ..Default::default()
                }),
                user_id: id.into(),
                request_id: String::new(),
            };
            let ann = users
                .create_user(invite("Ann@Acme.example ", "ann"))
                .await
                .expect("invite")
                .into_inner()
                .user
                .expect("user");
            assert_eq!(
                (ann.email.as_str(), ann.state),
                ("ann@acme.example", pb::UserState::Invited as i32)
            );
            let generated = users
                .create_user(invite("bob@acme.example", ""))
                .await
                .expect("invite")
                .into_inner()
                .user
                .expect("user");
            assert!(
                generated.name.starts_with("tenants/acme/users/u"),
                "{}",
                generated.name
            );
            let dup = users
                .create_user(invite("ann@acme.example", "ann2"))
                .await
                .unwrap_err();
            assert_eq!(dup.code(), Code::AlreadyExists);
            let bad = users
                .create_user(invite("not-an-email", "Bad Id"))
                .await
                .unwrap_err();
            assert_eq!(fields(&bad), ["user.email", "user_id"]);
            let listed = users
                .list_users(pb::ListUsersRequest {
                    parent: "tenants/acme".into(),
                    email_prefix: "ANN".into(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .users;
            assert_eq!(
                listed.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
                ["tenants/acme/users/ann"]
            );

            let activate = users
                .update_user(pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: ann.name.clone(),
                        state: pb::UserState::Active as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["state".into()],
                    }),
                })
                .await
                .unwrap_err();
            assert_eq!(fields(&activate), ["user.state"]);
            let suspended = users
                .update_user(pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: ann.name.clone(),
                        state: pb::UserState::Suspended as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["state".into()],
                    }),
                })
                .await
                .expect("suspend")
                .into_inner()
                .user
                .expect("user");
            assert_eq!(suspended.state, pb::UserState::Suspended as i32);

            // Deleting a user takes their grants with them.
            let mut roles = RoleServiceClient::new(server.admin().await);
            roles
                .create_role_assignment(pb::CreateRoleAssignmentRequest {
                    parent: "tenants/acme".into(),
                    role_assignment: Some(pb::RoleAssignment {
                        principal: generated.name.clone(),
                        role: "roles/tenant-member".into(),
                        scope: "tenants/acme".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .expect("assign");
            let mut authz = AuthorizationServiceClient::new(server.admin().await);
            let ask = || pb::AuthorizeRequest {
                check: Some(pb::AuthorizationCheck {
                    subject: generated.name.clone(),
                    permission: "iam.users.list".into(),
                    resource: "tenants/acme".into(),
                }),
            };
            let before = authz
                .authorize(ask())
                .await
                .expect("authorize")
                .into_inner()
                .result
                .expect("result");
            assert_eq!(before.decision, pb::Decision::Allow as i32);
            users
                .delete_user(pb::DeleteUserRequest {
                    name: generated.name.clone(),
                    etag: String::new(),
                })
                .await
                .expect("delete");
            let after = authz
                .authorize(ask())
                .await
                .expect("authorize")
                .into_inner()
                .result
                .expect("result");
            assert_eq!(after.decision, pb::Decision::Deny as i32);
            let left = roles
                .list_role_assignments(pb::ListRoleAssignmentsRequest {
                    parent: "tenants/acme".into(),
                    principal: generated.name.clone(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            assert!(left.role_assignments.is_empty());
            eprintln!("users passed on {}", backend.name);
        }
    }
}

mod access_tokens {
    use std::time::Duration;

    use maxai_iam::{config::IamConfig, key_ring, tokens::AccessClaims};
    use maxai_kit::{on_db, ErrorKind};
    use secrecy::SecretString;

    use super::*;

    fn config(master_key: &str) -> IamConfig {
        IamConfig {
            master_key: SecretString::from(master_key.to_owned()),
            issuer: "maxai".into(),
            access_token_ttl_secs: 900,
            ..maxai_testkit::iam_config()
        }
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // base64 of 32 bytes

    #[tokio::test]
    async fn tokens_verify_rotate_and_refuse_forgeries() {
        for backend in backends().await {
            if backend.name == "postgres" {
                let err = key_ring(&backend.storage, &config(""))
                    .await
                    .err()
                    .expect("refused");
                assert!(
                    err.to_string().contains("iam.master_key is required"),
                    "{err}"
                );
            }
            let ring = key_ring(&backend.storage, &config(KEY))
                .await
                .expect("key ring");
            let (token, claims) = ring
                .issue("tenants/acme/users/ann", "acme", None)
                .expect("issue");
            assert_eq!(ring.verify(&token).expect("verify"), claims);
            assert_eq!(claims.exp - claims.iat, 900);

            // Forgeries and misfits.
            let mut parts: Vec<String> = token.split('.').map(String::from).collect();
            parts[1] = parts[1].replacen('e', "f", 1);
            assert_eq!(
                ring.verify(&parts.join(".")).unwrap_err().kind,
                ErrorKind::Unauthenticated,
                "tampered payload"
            );
            let sign = |f: &dyn Fn(&mut AccessClaims)| {
                let mut c = claims.clone();
                f(&mut c);
                ring.sign(&c).expect("sign")
            };
            assert!(
                ring.verify(&sign(&|c| c.exp = c.iat - 120)).is_err(),
                "expired"
            );
            assert!(
                ring.verify(&sign(&|c| c.iss = "someone-else".into()))
                    .is_err(),
                "wrong issuer"
            );
            assert!(
                ring.verify(&sign(&|c| c.aud = "other-api".into())).is_err(),
                "wrong audience"
            );
            let stranger = key_ring(&maxai_testkit::sqlite().storage, &config(""))
                .await
                .expect("other ring");
            let (foreign, _) = stranger
                .issue("tenants/acme/users/ann", "acme", None)
                .expect("issue");
            assert!(ring.verify(&foreign).is_err(), "unknown kid");

            // Rotation: the previous key verifies through its window, then not at all.
            let old_kid = ring
                .published()
                .into_iter()
                .find(|k| k.retire_at_us.is_none())
                .expect("active")
                .kid;
            ring.rotate(Duration::from_secs(3600))
                .await
                .expect("rotate");
            assert!(
                ring.verify(&token).is_ok(),
                "previous key still in its overlap window"
            );
            assert_eq!(ring.published().len(), 2);
            let (fresh, _) = ring
                .issue("tenants/acme/users/ann", "acme", None)
                .expect("issue");
            assert!(ring.verify(&fresh).is_ok());
            ring.rotate(Duration::ZERO).await.expect("rotate");
            ring.rotate(Duration::ZERO).await.expect("rotate");
            assert!(
                ring.verify(&token).is_err(),
                "a retired key no longer verifies"
            );
            assert!(!ring.published().iter().any(|k| k.kid == old_kid));

            // The private half is stored sealed: nonce + ciphertext + tag, never the 32-byte seed.
            let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
                .await
                .expect("connect");
            let sealed: Vec<String> = on_db!(&db, |pool| sqlx::query_scalar(
                "SELECT private_key FROM signing_keys WHERE state = 'active'"
            )
            .fetch_all(pool)
            .await)
            .expect("read");
            assert_eq!(sealed.len(), 1);
            assert_eq!(base64_len(&sealed[0]), 12 + 32 + 16);
            let retired: Vec<String> = on_db!(&db, |pool| sqlx::query_scalar(
                "SELECT private_key FROM signing_keys WHERE state = 'retired'"
            )
            .fetch_all(pool)
            .await)
            .expect("read");
            assert!(
                !retired.is_empty() && retired.iter().all(String::is_empty),
                "retired keys lose their private half"
            );
            // A wrong master key cannot open the keys.
            let wrong = key_ring(
                &backend.storage,
                &config("MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="),
            )
            .await;
            let err = wrong.err().expect("opened with another master key");
            assert!(
                format!("{err:#}").contains("does not open with this master key"),
                "{err:#}"
            );
            eprintln!("tokens passed on {}", backend.name);
        }
    }

    fn base64_len(s: &str) -> usize {
        let pad = s.chars().rev().take_while(|c| *c == '=').count();
        s.len() / 4 * 3 - pad
    }
}

mod machines {
    use super::*;
    use maxai_iam::{domain::secret_hash, store::AccountStore};
    use maxai_kit::on_db;
    use maxai_proto::maxai::iam::v1::service_account_service_client::ServiceAccountServiceClient;

    #[tokio::test]
    async fn service_accounts_and_api_keys() {
        for backend in backends().await {
            let server = serve(&backend).await;
            let mut tenants = TenantServiceClient::new(server.admin().await);
            tenants
                .create_tenant(pb::CreateTenantRequest {
                    tenant: Some(tenant("Acme")),
                    tenant_id: "acme".into(),
                    request_id: String::new(),
                })
                .await
                .expect("tenant");
            let mut sa = ServiceAccountServiceClient::new(server.admin().await);
            let account = sa
                .create_service_account(pb::CreateServiceAccountRequest {
                    parent: "tenants/acme".into(),
                    service_account: Some(pb::ServiceAccount {
                        display_name: "CI bot".into(),
                        ..Default::default()
                    }),
                    service_account_id: "ci-bot".into(),
                    request_id: String::new(),
                })
                .await
                .expect("account")
                .into_inner()
                .service_account
                .expect("account");
            assert_eq!(account.name, "tenants/acme/serviceAccounts/ci-bot");

            let create_key = |rid: &str| pb::CreateApiKeyRequest {
                parent: account.name.clone(),
                api_key: Some(pb::ApiKey {
                    display_name: "deploys".into(),
                    ..Default::default()
                }),
                request_id: rid.into(),
            };
            let first = sa
                .create_api_key(create_key("rq-k"))
                .await
                .expect("key")
                .into_inner();
            let key = first.api_key.expect("key");
            assert!(first.secret.starts_with(&key.secret_prefix) && first.secret.len() > 40);
            let retry = sa
                .create_api_key(create_key("rq-k"))
                .await
                .expect("retry")
                .into_inner();
            assert_eq!(
                retry.api_key.expect("key").name,
                key.name,
                "the same request answers with the same key"
            );
            assert!(retry.secret.is_empty(), "the secret is shown once");

            // Only the hash is stored, and the exchange can find the key by it.
            let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
                .await
                .expect("connect");
            let stored: Vec<String> = on_db!(&db, |pool| sqlx::query_scalar(
                "SELECT secret_hash FROM api_keys"
            )
            .fetch_all(pool)
            .await)
            .expect("read");
            assert_eq!(stored, [secret_hash(&first.secret)]);
            let store = SqlIamStore::new(db.clone());
            assert_eq!(
                store
                    .key_by_hash(&secret_hash(&first.secret))
                    .await
                    .expect("by hash")
                    .map(|k| k.name()),
                Some(key.name.clone())
            );

            // Disabled accounts get no new keys.
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
            let refused = sa.create_api_key(create_key("")).await.unwrap_err();
            assert_eq!(refused.code(), Code::FailedPrecondition);

            let keys = sa
                .list_api_keys(pb::ListApiKeysRequest {
                    parent: account.name.clone(),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            assert_eq!(keys.api_keys.len(), 1);
            sa.delete_service_account(pb::DeleteServiceAccountRequest {
                name: account.name.clone(),
                etag: String::new(),
            })
            .await
            .expect("delete");
            assert!(
                store
                    .key_by_hash(&secret_hash(&first.secret))
                    .await
                    .expect("by hash")
                    .is_none(),
                "keys go with their account"
            );
            let gone = sa
                .get_api_key(pb::GetApiKeyRequest {
                    name: key.name.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(gone.code(), Code::NotFound);
            eprintln!("service accounts passed on {}", backend.name);
        }
    }
}
