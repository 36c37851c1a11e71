//! The gateway over real sockets, in front of the real feature-flags service.
use maxai_feature_flags::{start, FlagsConfig, SERVICE_NAME};
use maxai_kit::{server::GrpcApp, shared_state::SharedState, CancellationToken};
use maxai_testkit::{serve_gateway, serve_grpc, sqlite, Backend, Running, TestIam};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

struct Stack {
    _backend: Backend,
    _grpc: Running,
    rest: Running,
    http: Client,
    token: String,
}

/// The flags service (and IAM, whose guard it is behind) on SQLite, served over gRPC on a
/// fresh port.
async fn flags_grpc() -> (Backend, Running, TestIam) {
    let backend = sqlite();
    let mut iam = TestIam::start(&backend).await;
    let server = start(
        &FlagsConfig::default(),
        &backend.storage,
        &SharedState::memory(),
        4 << 20,
        CancellationToken::new(),
    )
    .await
    .expect("flags");
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(server);
    iam.take_servers().add_to(&mut routes);
    let grpc = serve_grpc(GrpcApp {
        routes: routes.routes(),
        service_names: vec![SERVICE_NAME.into()],
        guard: iam.layer(),
    })
    .await;
    (backend, grpc, iam)
}

async fn stack() -> Stack {
    let (backend, grpc, iam) = flags_grpc().await;
    let rest = serve_gateway(&grpc, vec![SERVICE_NAME.into()], &iam).await;
    Stack {
        _backend: backend,
        _grpc: grpc,
        rest,
        http: Client::new(),
        token: iam.admin(),
    }
}

impl Stack {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.rest.url())
    }
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }
}

fn assert_problem(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    want_code: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["status"], want_status);
    let id = body["correlation_id"].as_str().expect("correlation id");
    assert_eq!(
        headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some(id)
    );
}

#[tokio::test]
async fn rest_crud_follows_the_proto3_json_mapping() {
    let s = stack().await;
    let (status, _, flag) = s
        .send(
            Method::POST,
            "/v1/flags?flagId=new-dash",
            Some(r#"{"description":"d","stage":"STAGE_BETA","environments":[{"environment":"production","enabled":true,"rolloutBasisPoints":10000}]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{flag}");
    assert_eq!(flag["name"], "flags/new-dash");
    assert_eq!(flag["environments"][0]["rolloutBasisPoints"], 10000);
    assert!(flag["createTime"]
        .as_str()
        .expect("timestamp")
        .ends_with('Z'));

    let (status, _, got) = s.send(Method::GET, "/v1/flags/new-dash", None).await;
    assert_eq!((status, &got["etag"]), (StatusCode::OK, &json!("r1")));
    let (_, _, list) = s
        .send(Method::GET, "/v1/flags?pageSize=10&stage=STAGE_BETA", None)
        .await;
    assert_eq!(list["flags"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, _, patched) = s
        .send(
            Method::PATCH,
            "/v1/flags/new-dash?updateMask=description",
            Some(r#"{"description":"new words","etag":"r1"}"#),
        )
        .await;
    assert_eq!(
        (status, &patched["description"]),
        (StatusCode::OK, &json!("new words")),
        "{patched}"
    );
    let (status, _, eval) = s
        .send(
            Method::POST,
            "/v1/flags/new-dash:evaluate",
            Some(r#"{"context":{"tenantId":"acme"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&eval["evaluation"]["value"], &eval["evaluation"]["reason"]),
        (&json!(true), &json!("REASON_SPLIT")),
        "{eval}"
    );
    let (status, _, _) = s.send(Method::DELETE, "/v1/flags/new-dash", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = s.send(Method::GET, "/v1/flags/new-dash", None).await;
    assert_problem(status, &headers, &body, 404, "NOT_FOUND");
}

#[tokio::test]
async fn every_failure_is_problem_json() {
    let s = stack().await;
    let (st, h, b) = s.send(Method::GET, "/v1/nothing/here", None).await;
    assert_problem(st, &h, &b, 404, "ROUTE_NOT_FOUND");
    let (st, h, b) = s.send(Method::PUT, "/v1/flags/x", None).await;
    assert_problem(st, &h, &b, 405, "METHOD_NOT_ALLOWED");
    assert!(h
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("GET") && a.contains("PATCH")));
    let (st, h, b) = s
        .send(Method::POST, "/v1/flags?flagId=x", Some("{not json"))
        .await;
    assert_problem(st, &h, &b, 400, "INVALID_JSON");
    let (st, h, b) = s
        .send(
            Method::POST,
            "/v1/flags?flagId=x",
            Some(r#"{"stage":"STAGE_BETA","colour":"red"}"#),
        )
        .await;
    assert_problem(st, &h, &b, 400, "INVALID_ARGUMENT");
    assert_eq!(b["violations"][0]["field"], "colour", "{b}");
    let (st, h, b) = s
        .send(
            Method::POST,
            "/v1/flags?flagId=x",
            Some(r#"{"stage":"STAGE_BETA","environments":"production"}"#),
        )
        .await;
    assert_problem(st, &h, &b, 400, "INVALID_ARGUMENT");
    let (st, h, b) = s.send(Method::GET, "/v1/flags?pageSize=abc", None).await;
    assert_problem(st, &h, &b, 400, "INVALID_ARGUMENT");
    assert_eq!(b["violations"][0]["field"], "pageSize", "{b}");
    let (st, h, b) = s.send(Method::GET, "/v1/flags?colour=red", None).await;
    assert_problem(st, &h, &b, 400, "INVALID_ARGUMENT");
    let big = format!(r#"{{"description":"{}"}}"#, "x".repeat(70 * 1024));
    let (st, h, b) = s.send(Method::POST, "/v1/flags?flagId=x", Some(&big)).await;
    assert_problem(st, &h, &b, 413, "PAYLOAD_TOO_LARGE");
    // Upstream validation errors keep their field violations.
    let (st, h, b) = s
        .send(
            Method::POST,
            "/v1/flags?flagId=Bad%20Key",
            Some(r#"{"stage":"STAGE_BETA"}"#),
        )
        .await;
    assert_problem(st, &h, &b, 400, "INVALID_ARGUMENT");
    assert_eq!(b["violations"][0]["field"], "flag_id", "{b}");
    // Nothing was stored by any of the refused requests.
    let (_, _, list) = s.send(Method::GET, "/v1/flags", None).await;
    assert_eq!(list["flags"], json!([]), "{list}");
}

#[tokio::test]
async fn correlation_ids_are_echoed_or_generated() {
    let s = stack().await;
    let resp = s
        .http
        .get(s.url("/v1/flags"))
        .header("x-correlation-id", "trace-me-123")
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-123")
    );
    let resp = s
        .http
        .get(s.url("/v1/flags/none"))
        .send()
        .await
        .expect("send");
    let generated = resp
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("generated id");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["correlation_id"], generated);
    assert_eq!(generated.len(), 36);
}

/// Every annotated RPC of the served service answers over REST (the service itself answers,
/// not the router) and is described in the OpenAPI document.
#[tokio::test]
async fn every_annotated_rpc_is_reachable_and_documented() {
    let s = stack().await;
    maxai_testkit::assert_every_rpc_reachable(&s.rest, &[SERVICE_NAME], &s.token).await;
    // Descriptions come from the proto comments.
    let (_, _, doc) = s.send(Method::GET, "/openapi.json", None).await;
    assert_eq!(
        doc["paths"]["/v1/flags/{flag}"]["get"]["summary"],
        "Gets a flag with its per-environment state (allowlists are listed separately)",
        "{}",
        doc["paths"]["/v1/flags/{flag}"]
    );
    let rollout = &doc["components"]["schemas"]["maxai.flags.v1.EnvironmentState"]["properties"]
        ["rolloutBasisPoints"]["description"];
    assert!(
        rollout.as_str().is_some_and(|d| d.contains("basis points")),
        "{rollout}"
    );
}

#[tokio::test]
async fn ofrep_single_bulk_and_etag() {
    let s = stack().await;
    s.send(
        Method::POST,
        "/v1/flags?flagId=checkout",
        Some(r#"{"stage":"STAGE_GA","environments":[{"environment":"production","enabled":true,"rolloutBasisPoints":0}]}"#),
    )
    .await;
    s.send(
        Method::POST,
        "/v1/flags/checkout:addAllowlistEntries",
        Some(r#"{"environment":"production","kind":"ALLOWLIST_KIND_USER","subjects":["u-1"]}"#),
    )
    .await;
    let (st, _, one) = s
        .send(
            Method::POST,
            "/ofrep/v1/evaluate/flags/checkout",
            Some(r#"{"context":{"targetingKey":"u-1"}}"#),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (&one["value"], &one["reason"], &one["variant"]),
        (&json!(true), &json!("TARGETING_MATCH"), &json!("on")),
        "{one}"
    );
    let (st, _, missing) = s
        .send(
            Method::POST,
            "/ofrep/v1/evaluate/flags/nope",
            Some(r#"{"context":{}}"#),
        )
        .await;
    assert_eq!(
        (st, &missing["errorCode"]),
        (StatusCode::NOT_FOUND, &json!("FLAG_NOT_FOUND"))
    );
    let (st, _, bad) = s
        .send(
            Method::POST,
            "/ofrep/v1/evaluate/flags/checkout",
            Some(r#"{"context":{"targetingKey":7}}"#),
        )
        .await;
    assert_eq!(
        (st, &bad["errorCode"]),
        (StatusCode::BAD_REQUEST, &json!("INVALID_CONTEXT"))
    );

    let resp = s
        .http
        .post(s.url("/ofrep/v1/evaluate/flags"))
        .bearer_auth(&s.token)
        .body(r#"{"context":{"targetingKey":"u-2"}}"#)
        .send()
        .await
        .expect("bulk");
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("etag");
    let bulk: Value = resp.json().await.expect("json");
    assert_eq!(bulk["flags"][0]["value"], false);
    let again = s
        .http
        .post(s.url("/ofrep/v1/evaluate/flags"))
        .bearer_auth(&s.token)
        .header("if-none-match", &etag)
        .body(r#"{"context":{"targetingKey":"u-2"}}"#)
        .send()
        .await
        .expect("bulk");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn health_and_readiness() {
    let s = stack().await;
    let (st, _, body) = s.send(Method::GET, "/healthz", None).await;
    assert_eq!((st, &body["status"]), (StatusCode::OK, &json!("ok")));
    let (st, _, body) = s.send(Method::GET, "/readyz", None).await;
    assert_eq!((st, &body["status"]), (StatusCode::OK, &json!("ready")));
}

#[tokio::test]
async fn readiness_fails_when_the_upstream_is_gone() {
    let (_backend, grpc, iam) = flags_grpc().await;
    let rest = serve_gateway(&grpc, vec![SERVICE_NAME.into()], &iam).await;
    drop(grpc);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let resp = Client::new()
        .get(format!("{}/readyz", rest.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = Client::new()
        .get(format!("{}/v1/flags", rest.url()))
        .bearer_auth(iam.admin())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("problem");
    assert_eq!(body["code"], "UNAVAILABLE");
}

/// A service served elsewhere is reached at the address `upstreams` names for it.
#[tokio::test]
async fn per_service_upstreams() {
    let (_backend, grpc, iam) = flags_grpc().await;
    let mut config = maxai_testkit::gateway_config();
    config.upstreams.insert("maxai.flags.v1".into(), grpc.url());
    // The default upstream is nowhere: only the mapping can make this work.
    let rest = maxai_testkit::serve_gateway_with(
        config,
        "http://127.0.0.1:9",
        vec![SERVICE_NAME.into()],
        &iam,
    )
    .await;
    let resp = Client::new()
        .get(format!("{}/v1/flags", rest.url()))
        .bearer_auth(iam.admin())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = Client::new()
        .get(format!("{}/readyz", rest.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Per-IP limits apply before authentication, per-tenant limits after it; both answer 429
/// problem+json with Retry-After, and each bucket refills on its own.
#[tokio::test]
async fn rate_limits_per_ip_and_per_tenant() {
    let (_backend, grpc, iam) = flags_grpc().await;
    let tight = maxai_kit::rate_limit::Rate {
        per_minute: 60,
        burst: 3,
    };
    let mut config = maxai_testkit::gateway_config();
    config.rate_limits.per_tenant = tight;
    let rest =
        maxai_testkit::serve_gateway_with(config, &grpc.url(), vec![SERVICE_NAME.into()], &iam)
            .await;
    let admin = iam.admin();
    let get = |token: String| {
        let url = format!("{}/v1/flags", rest.url());
        async move {
            Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
        }
    };
    for i in 0..3 {
        assert_eq!(
            get(admin.clone()).await.status(),
            StatusCode::OK,
            "request {i}"
        );
    }
    let limited = get(admin.clone()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let headers = limited.headers().clone();
    let body: Value = limited.json().await.expect("problem");
    assert_problem(
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        &body,
        429,
        "RATE_LIMITED",
    );
    // Another tenant's bucket is its own, and refused calls count too: this user holds no
    // grant, so its first three calls are 403 and the fourth is already limited.
    let other = iam.token("tenants/other/users/x");
    for i in 0..3 {
        assert_eq!(
            get(other.clone()).await.status(),
            StatusCode::FORBIDDEN,
            "call {i}"
        );
    }
    assert_eq!(get(other).await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Per IP: refused before any credential is looked at.
    let mut config = maxai_testkit::gateway_config();
    config.rate_limits.per_ip = tight;
    let rest =
        maxai_testkit::serve_gateway_with(config, &grpc.url(), vec![SERVICE_NAME.into()], &iam)
            .await;
    let url = format!("{}/v1/flags", rest.url());
    for _ in 0..3 {
        Client::new().get(&url).send().await.expect("send");
    }
    let limited = Client::new().get(&url).send().await.expect("send");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    // Health probes are never limited.
    let health = Client::new()
        .get(format!("{}/healthz", rest.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
}
