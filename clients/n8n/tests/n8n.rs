//! The n8n adapter against the n8n fake over loopback HTTP: only the instance URL differs from
//! production.
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::harness::Failure;
use maxai_fakes::n8n::{FakeN8n, FakeN8nConfig, Outcome, TEST_API_KEY, WEBHOOK_NODE_TYPE};
use maxai_kit::auth::Principal;
use maxai_n8n::convert::{json_to_struct, struct_to_json, value_to_json};
use maxai_n8n::{N8nAdapter, N8nConfig};
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::workflow::v1::workflow_service_server::WorkflowService;
use maxai_proto::maxai::ports::workflow::v1::{
    CreateWorkflowRequest, ExecuteWorkflowRequest, ExecutionStatus, GetExecutionStatusRequest,
    UpdateWorkflowRequest, Workflow,
};
use serde_json::{json, Value};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/n8n-main";

struct Env {
    fake: FakeN8n,
    creds: Arc<StaticCredentials>,
    adapter: N8nAdapter,
}

fn credential(base_url: &str, key: &str) -> ConnectionCredential {
    ConnectionCredential {
        connection: CONN.to_owned(),
        provider: ConnectionProvider::N8n as i32,
        api_key: key.to_owned(),
        base_url: base_url.to_owned(),
        ..Default::default()
    }
}

fn http(timeout: Duration) -> HttpConfig {
    HttpConfig {
        timeout,
        connect_timeout: Duration::from_secs(1),
        max_attempts: 3,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
        breaker: BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(300),
        },
    }
}

async fn env_with(api_timeout: Duration) -> Env {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let creds = StaticCredentials::new();
    // A trailing slash, as operators paste instance URLs.
    creds.insert(credential(&format!("{}/", fake.base_url()), TEST_API_KEY));
    let config = N8nConfig {
        lookup_attempts: 3,
        lookup_interval_ms: 20,
        ..N8nConfig::default()
    };
    let adapter = N8nAdapter::with_http(config, http(api_timeout), creds.clone());
    Env {
        fake,
        creds,
        adapter,
    }
}

async fn env() -> Env {
    env_with(Duration::from_secs(2)).await
}

fn req<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.extensions_mut().insert(Principal {
        subject: "tenants/acme/users/ann".into(),
        tenant: "acme".into(),
        token_id: "tok-1".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    r
}

fn ctx(key: &str) -> Option<CallContext> {
    Some(CallContext {
        connection: CONN.to_owned(),
        idempotency_key: key.to_owned(),
    })
}

fn workflow(path: &str, mode: &str, active: bool) -> Workflow {
    let nodes = [
        json!({"name": "Webhook", "type": WEBHOOK_NODE_TYPE, "typeVersion": 2, "position": [0, 0],
               "parameters": {"path": path, "httpMethod": "POST", "responseMode": mode}}),
        json!({"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 3, "position": [220, 0],
               "parameters": {}}),
    ];
    Workflow {
        name: "Booking follow-up".into(),
        nodes: nodes.iter().filter_map(json_to_struct).collect(),
        connections: json_to_struct(
            &json!({"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}}),
        ),
        settings: json_to_struct(&json!({"executionOrder": "v1"})),
        active,
        ..Workflow::default()
    }
}

async fn create(env: &Env, path: &str, mode: &str) -> Workflow {
    env.adapter
        .create_workflow(req(CreateWorkflowRequest {
            context: ctx(""),
            workflow: Some(workflow(path, mode, true)),
        }))
        .await
        .expect("create")
        .into_inner()
        .workflow
        .expect("workflow")
}

fn execute(path: &str, payload: Value, timeout_ms: Option<u64>) -> ExecuteWorkflowRequest {
    ExecuteWorkflowRequest {
        context: ctx("exec-7/step-2"),
        webhook_path: path.to_owned(),
        payload: json_to_struct(&payload),
        timeout: timeout_ms.map(|ms| prost_types::Duration {
            seconds: 0,
            nanos: (ms * 1_000_000) as i32,
        }),
    }
}

fn status_request(id: &str, include_data: bool) -> GetExecutionStatusRequest {
    GetExecutionStatusRequest {
        context: ctx(""),
        execution_id: id.to_owned(),
        include_data,
    }
}

fn provider_message(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("provider_message").cloned())
        .unwrap_or_default()
}

fn violations(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_sends_only_writable_fields_and_activates() {
    let env = env().await;
    let created = create(&env, "book", "onReceived").await;
    assert_eq!(created.id.len(), 16);
    assert!(created.active);
    assert!(!created.version_id.is_empty());
    assert!(created.create_time.is_some() && created.update_time.is_some());
    assert_eq!(created.nodes.len(), 2);
    assert_eq!(struct_to_json(&created.nodes[0])["typeVersion"], 2);
    assert_eq!(
        env.fake.workflow(&created.id).expect("stored")["active"],
        true
    );

    let posted = env.fake.harness().requests_to("POST", "/api/v1/workflows");
    let body = posted[0].json().expect("json");
    let mut keys: Vec<_> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["connections", "name", "nodes", "settings"]);
    assert_eq!(body["nodes"][0]["position"], json!([0, 0]));
    assert_eq!(
        env.fake
            .harness()
            .requests_to(
                "POST",
                &format!("/api/v1/workflows/{}/activate", created.id)
            )
            .len(),
        1
    );

    let inactive = env
        .adapter
        .create_workflow(req(CreateWorkflowRequest {
            context: ctx(""),
            workflow: Some(workflow("other", "onReceived", false)),
        }))
        .await
        .expect("create inactive")
        .into_inner()
        .workflow
        .expect("workflow");
    assert!(!inactive.active);
}

#[tokio::test]
async fn update_merges_the_masked_fields_into_the_whole_workflow() {
    let env = env().await;
    let created = create(&env, "book", "onReceived").await;
    let mut change = Workflow {
        id: created.id.clone(),
        name: "Renamed".into(),
        ..Workflow::default()
    };
    let updated = env
        .adapter
        .update_workflow(req(UpdateWorkflowRequest {
            context: ctx(""),
            workflow: Some(change.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        }))
        .await
        .expect("update")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!(updated.name, "Renamed");
    assert_eq!(updated.nodes.len(), 2, "nodes kept");
    assert!(updated.active, "still active");
    assert_ne!(updated.version_id, created.version_id);
    let put = env
        .fake
        .harness()
        .requests_to("PUT", &format!("/api/v1/workflows/{}", created.id));
    assert_eq!(put.len(), 1);
    assert_eq!(put[0].json().expect("json")["nodes"][0]["name"], "Webhook");

    change.active = false;
    let updated = env
        .adapter
        .update_workflow(req(UpdateWorkflowRequest {
            context: ctx(""),
            workflow: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
        }))
        .await
        .expect("deactivate")
        .into_inner()
        .workflow
        .expect("workflow");
    assert!(!updated.active);
    assert_eq!(updated.name, "Renamed");
    assert_eq!(
        env.fake
            .harness()
            .requests_to("PUT", &format!("/api/v1/workflows/{}", created.id))
            .len(),
        1
    );

    let err = env
        .adapter
        .update_workflow(req(UpdateWorkflowRequest {
            context: ctx(""),
            workflow: Some(Workflow {
                id: "missing1".into(),
                name: "x".into(),
                ..Workflow::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        }))
        .await
        .expect_err("unknown workflow");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(provider_message(&err), "Not Found");
}

#[tokio::test]
async fn execute_finds_the_execution_by_its_correlation_id() {
    let env = env().await;
    create(&env, "book", "onReceived").await;
    let answer = env
        .adapter
        .execute_workflow(req(execute("book", json!({"lead": "Ann"}), None)))
        .await
        .expect("execute")
        .into_inner();
    assert_eq!(answer.status_code, 200);
    assert_eq!(
        value_to_json(&answer.response.expect("answer")),
        json!({"message": "Workflow was started"})
    );
    assert_eq!(answer.execution_id, "1");

    let hook = env.fake.harness().requests_to("POST", "/webhook/book");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].header("x-correlation-id"), Some("exec-7/step-2"));
    assert_eq!(
        hook[0].json().expect("json"),
        json!({"lead": "Ann", "maxaiCorrelationId": "exec-7/step-2"})
    );
    assert!(
        hook[0].header("x-n8n-api-key").is_none(),
        "webhooks get no API key"
    );

    let status = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.status(), ExecutionStatus::Running);
    assert!(!status.finished);
    assert!(status.data.is_none());
    assert!(status.start_time.is_some() && status.stop_time.is_none());
}

#[tokio::test]
async fn last_node_mode_answers_with_the_output_and_hangs_time_out() {
    let env = env().await;
    create(&env, "sync", "lastNode").await;
    env.fake.finish_automatically(Some((
        Duration::from_millis(30),
        Outcome::Success(json!({"booked": true})),
    )));
    let answer = env
        .adapter
        .execute_workflow(req(execute("sync", json!({}), None)))
        .await
        .expect("execute")
        .into_inner();
    assert_eq!(
        value_to_json(&answer.response.expect("answer")),
        json!({"booked": true})
    );
    assert_eq!(answer.execution_id, "1");

    env.fake.finish_automatically(None);
    let started = Instant::now();
    let err = env
        .adapter
        .execute_workflow(req(execute("sync", json!({}), Some(200))))
        .await
        .expect_err("hangs");
    assert_eq!(err.code(), Code::Unknown);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        env.fake
            .harness()
            .requests_to("POST", "/webhook/sync")
            .len(),
        2,
        "never re-sent"
    );

    let err = env
        .adapter
        .execute_workflow(req(execute("nope", json!({}), None)))
        .await
        .expect_err("unregistered");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        provider_message(&err),
        "The requested webhook \"POST nope\" is not registered."
    );
}

#[tokio::test]
async fn execution_statuses_errors_data_and_waits() {
    let env = env().await;
    create(&env, "book", "onReceived").await;
    for _ in 0..3 {
        env.adapter
            .execute_workflow(req(execute("book", json!({}), None)))
            .await
            .expect("execute");
    }
    assert!(env
        .fake
        .finish_execution(1, Outcome::Success(json!({"ok": 1}))));
    assert!(env.fake.finish_execution(2, Outcome::Error("boom".into())));
    let until = chrono::Utc::now() + chrono::Duration::minutes(5);
    assert!(env.fake.set_waiting(3, until));

    let done = env
        .adapter
        .get_execution_status(req(status_request("1", true)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(done.status(), ExecutionStatus::Success);
    assert!(done.finished);
    assert!(done.stop_time.is_some());
    let data = struct_to_json(&done.data.expect("data"));
    assert_eq!(data["resultData"]["lastNodeExecuted"], "Respond");

    let failed = env
        .adapter
        .get_execution_status(req(status_request("2", false)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(failed.status(), ExecutionStatus::Error);
    assert_eq!(failed.error_message, "boom");
    assert!(failed.data.is_none(), "data only when asked");

    let waiting = env
        .adapter
        .get_execution_status(req(status_request("3", false)))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(waiting.status(), ExecutionStatus::Waiting);
    assert_eq!(waiting.wait_time.expect("wait").seconds, until.timestamp());

    let err = env
        .adapter
        .get_execution_status(req(status_request("99", false)))
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_call() {
    let env = env().await;
    let mut bad = execute("../api/v1/workflows", json!({}), None);
    bad.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    let err = env
        .adapter
        .execute_workflow(req(bad))
        .await
        .expect_err("bad execute");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["webhook_path", "timeout"]);

    let nameless = Workflow {
        nodes: vec![json_to_struct(&json!({"name": "A"})).expect("node")],
        ..Workflow::default()
    };
    let err = env
        .adapter
        .create_workflow(req(CreateWorkflowRequest {
            context: ctx(""),
            workflow: Some(nameless),
        }))
        .await
        .expect_err("bad create");
    assert_eq!(
        violations(&err),
        ["workflow.name", "workflow.nodes[0]", "workflow.connections"]
    );

    let err = env
        .adapter
        .update_workflow(req(UpdateWorkflowRequest {
            context: ctx(""),
            workflow: Some(Workflow::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tags".into()],
            }),
        }))
        .await
        .expect_err("bad update");
    assert_eq!(violations(&err), ["update_mask", "workflow.id"]);

    let err = env
        .adapter
        .get_execution_status(req(status_request("abc", false)))
        .await
        .expect_err("bad id");
    assert_eq!(violations(&err), ["execution_id"]);

    env.creds.insert(credential("", TEST_API_KEY));
    let err = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await
        .expect_err("no base url");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.fake.requests().is_empty(), "the fake received nothing");
}

#[tokio::test]
async fn a_wrong_key_is_refreshed_once_then_refused_without_leaking() {
    let env = env().await;
    let base = env.fake.base_url().to_owned();
    let stale = "n8n_api_stale_key_123";
    env.creds.insert(credential(&base, stale));
    env.creds.insert_refreshed(credential(&base, TEST_API_KEY));
    create(&env, "book", "onReceived").await;
    assert_eq!(env.creds.refreshes(CONN), 1);

    let wrong = "n8n_api_wrong_key_456";
    env.creds.insert(credential(&base, wrong));
    env.creds.insert_refreshed(credential(&base, wrong));
    let err = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(provider_message(&err), "Unauthorized");
    assert_eq!(env.creds.refreshes(CONN), 2);
    let everything = format!("{err:?} {:?}", env.fake.requests());
    for secret in [stale, wrong, TEST_API_KEY] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn provider_errors_map_to_codes() {
    let env = env().await;
    for (status, code) in [
        (400, Code::InvalidArgument),
        (403, Code::PermissionDenied),
        (404, Code::NotFound),
        (409, Code::AlreadyExists),
        (422, Code::InvalidArgument),
    ] {
        env.fake
            .fail_next_at("/api/v1/workflows", 1, Failure::Status(status));
        let err = env
            .adapter
            .create_workflow(req(CreateWorkflowRequest {
                context: ctx(""),
                workflow: Some(workflow("a", "onReceived", false)),
            }))
            .await
            .expect_err("injected");
        assert_eq!(err.code(), code, "{status}");
        let info = err.get_error_details().error_info().expect("info").clone();
        assert_eq!(info.metadata["http_status"], status.to_string());
        assert_eq!(info.metadata["provider"], "n8n");
        assert!(!info.metadata["provider_message"].is_empty());
    }
}

#[tokio::test]
async fn only_safe_calls_are_retried() {
    let env = env().await;
    create(&env, "book", "onReceived").await;
    env.adapter
        .execute_workflow(req(execute("book", json!({}), None)))
        .await
        .expect("execute");
    env.fake.harness().clear_requests();

    env.fake
        .fail_next_at("/api/v1/executions/1", 2, Failure::Status(503));
    let status = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await;
    assert!(status.is_ok(), "{status:?}");
    assert_eq!(
        env.fake
            .harness()
            .requests_to("GET", "/api/v1/executions/1")
            .len(),
        3
    );

    env.fake
        .fail_next_at("/api/v1/workflows", 1, Failure::Status(500));
    let err = env
        .adapter
        .create_workflow(req(CreateWorkflowRequest {
            context: ctx(""),
            workflow: Some(workflow("b", "onReceived", false)),
        }))
        .await
        .expect_err("500");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(
        env.fake
            .harness()
            .requests_to("POST", "/api/v1/workflows")
            .len(),
        1
    );

    env.fake
        .fail_next_at("/webhook/book", 1, Failure::Status(502));
    let err = env
        .adapter
        .execute_workflow(req(execute("book", json!({}), None)))
        .await
        .expect_err("502");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(
        env.fake
            .harness()
            .requests_to("POST", "/webhook/book")
            .len(),
        1
    );
}

#[tokio::test]
async fn rate_limits_and_slow_answers() {
    let env = env_with(Duration::from_millis(200)).await;
    create(&env, "book", "onReceived").await;
    env.adapter
        .execute_workflow(req(execute("book", json!({}), None)))
        .await
        .expect("execute");

    env.fake.fail_next_at(
        "/api/v1/executions/1",
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    let status = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await;
    assert!(status.is_ok(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );

    env.fake.fail_next_at(
        "/api/v1/executions/1",
        1,
        Failure::Slow(Duration::from_millis(400)),
    );
    let status = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await;
    assert!(
        status.is_ok(),
        "a GET that timed out once is retried: {status:?}"
    );

    env.fake.fail_next_at(
        "/api/v1/executions/1",
        3,
        Failure::Slow(Duration::from_millis(400)),
    );
    let err = env
        .adapter
        .get_execution_status(req(status_request("1", false)))
        .await
        .expect_err("timeouts");
    assert_eq!(err.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn the_circuit_opens_and_closes_after_the_cooldown() {
    let env = env().await;
    env.fake
        .fail_next_at("/api/v1/workflows", 3, Failure::Status(502));
    let create_req = || {
        req(CreateWorkflowRequest {
            context: ctx(""),
            workflow: Some(workflow("c", "onReceived", false)),
        })
    };
    for _ in 0..3 {
        let err = env
            .adapter
            .create_workflow(create_req())
            .await
            .expect_err("502");
        assert_eq!(err.code(), Code::Unknown);
    }
    let err = env
        .adapter
        .create_workflow(create_req())
        .await
        .expect_err("open");
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(
        env.fake.requests().len(),
        3,
        "an open circuit sends nothing"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let ok = env.adapter.create_workflow(create_req()).await;
    assert!(ok.is_ok(), "{ok:?}");
}
