//! IAM tenancy over real gRPC and REST, on SQLite and (when reachable, always in CI) PostgreSQL.
use maxai_iam::{
    start,
    store::{conformance, SqlIamStore},
    MIGRATIONS, SERVICE_NAMES, STORAGE_NAME,
};
use maxai_kit::{server::GrpcApp, storage};
use maxai_proto::maxai::iam::v1::{
    self as pb, client_service_client::ClientServiceClient,
    tenant_service_client::TenantServiceClient,
};
use maxai_testkit::{backends, serve_gateway, serve_grpc, Backend, Running};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::StatusExt;

async fn serve(backend: &Backend) -> Running {
    let servers = start(&backend.storage, 4 << 20).await.expect("start iam");
    let mut routes = tonic::service::RoutesBuilder::default();
    servers.add_to(&mut routes);
    serve_grpc(GrpcApp {
        routes: routes.routes(),
        service_names: SERVICE_NAMES.map(String::from).to_vec(),
    })
    .await
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
        conformance::run(&SqlIamStore::new(db)).await;
        eprintln!("iam conformance passed on {}", backend.name);
    }
}

#[tokio::test]
async fn tenants_and_clients_over_grpc() {
    for backend in backends().await {
        let server = serve(&backend).await;
        let mut tenants = TenantServiceClient::connect(server.url())
            .await
            .expect("connect");
        let mut clients = ClientServiceClient::connect(server.url())
            .await
            .expect("connect");

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
        assert!(empty.tenants.is_empty(), "refused create stored nothing");

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
        assert!(listed.tenants.is_empty());
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
    let rest = serve_gateway(&grpc, SERVICE_NAMES.map(String::from).to_vec()).await;
    let http = reqwest::Client::new();
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

    let doc: Value = http
        .get(url("/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| {
            item.as_object().into_iter().flat_map(|o| {
                o.values()
                    .map(|op| op["operationId"].as_str().unwrap_or("").to_owned())
            })
        })
        .collect();
    for service in SERVICE_NAMES {
        for method in maxai_kit::descriptors::methods(service) {
            assert!(
                ids.iter().any(|id| id == method.full_name()),
                "{} missing from OpenAPI",
                method.full_name()
            );
        }
    }
}
