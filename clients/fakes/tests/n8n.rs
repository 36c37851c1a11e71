//! The n8n fake answers as n8n's public API and webhooks do (PROVIDERS.md §7), over real HTTP.
use std::time::Duration;

use maxai_fakes::harness::REDACTED;
use maxai_fakes::n8n::{FakeN8n, FakeN8nConfig, Outcome, TEST_API_KEY, WEBHOOK_NODE_TYPE};
use serde_json::{json, Value};

fn workflow(path: &str, response_mode: &str) -> Value {
    json!({
        "name": "Booking follow-up",
        "nodes": [
            {"name": "Webhook", "type": WEBHOOK_NODE_TYPE, "typeVersion": 2, "position": [0, 0],
             "parameters": {"path": path, "httpMethod": "POST", "responseMode": response_mode}},
            {"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 3, "position": [200, 0],
             "parameters": {}}
        ],
        "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
        "settings": {"executionOrder": "v1"}
    })
}

async fn api(
    fake: &FakeN8n,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/api/v1{path}", fake.base_url()))
        .header("X-N8N-API-KEY", TEST_API_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

async fn hook(fake: &FakeN8n, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/webhook/{path}", fake.base_url()))
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

#[tokio::test]
async fn api_keys_are_checked_as_n8n_checks_them() {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let url = format!("{}/api/v1/workflows", fake.base_url());
    let client = reqwest::Client::new();
    let res = client.get(&url).send().await.expect("send");
    assert_eq!(res.status().as_u16(), 401);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body, json!({"message": "'X-N8N-API-KEY' header required"}));
    let res = client
        .get(&url)
        .header("X-N8N-API-KEY", "wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"message": "Unauthorized"})
    );
    let recorded = fake.requests();
    assert_eq!(recorded[1].header("x-n8n-api-key"), Some(REDACTED));
}

#[tokio::test]
async fn bodies_are_validated_like_the_openapi_spec() {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let mut body = workflow("a", "onReceived");
    body.as_object_mut().expect("object").remove("settings");
    let (status, err) = api(&fake, reqwest::Method::POST, "/workflows", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        err["message"],
        "request/body must have required property 'settings'"
    );
    let mut body = workflow("a", "onReceived");
    body["active"] = json!(true);
    let (status, err) = api(&fake, reqwest::Method::POST, "/workflows", Some(body)).await;
    assert_eq!(status, 400);
    assert_eq!(err["message"], "request/body/active is read-only");
    let (status, err) = api(&fake, reqwest::Method::GET, "/workflows/nope", None).await;
    assert_eq!((status, err), (404, json!({"message": "Not Found"})));
}

#[tokio::test]
async fn a_webhook_starts_an_execution_that_records_the_payload() {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let (status, created) = api(
        &fake,
        reqwest::Method::POST,
        "/workflows",
        Some(workflow("book", "onReceived")),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["active"], false);

    let (status, missing) = hook(&fake, "book", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        missing["message"],
        "The requested webhook \"POST book\" is not registered."
    );

    let (status, active) = api(
        &fake,
        reqwest::Method::POST,
        &format!("/workflows/{id}/activate"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(active["active"], true);

    let (status, answer) = hook(&fake, "book", json!({"correlationId": "corr-1", "x": 1})).await;
    assert_eq!(
        (status, answer),
        (200, json!({"message": "Workflow was started"}))
    );

    let (_, list) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/executions?workflowId={id}&includeData=true"),
        None,
    )
    .await;
    let execution = &list["data"][0];
    assert_eq!(execution["status"], "running");
    assert_eq!(execution["mode"], "webhook");
    assert_eq!(execution["workflowId"], id.as_str());
    assert_eq!(
        execution["data"]["resultData"]["runData"]["Webhook"][0]["data"]["main"][0][0]["json"]
            ["body"]["correlationId"],
        "corr-1"
    );
    let exec_id = execution["id"].as_u64().expect("numeric id");

    assert!(fake.finish_execution(exec_id, Outcome::Error("boom".into())));
    let (_, got) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/executions/{exec_id}?includeData=true"),
        None,
    )
    .await;
    assert_eq!(got["status"], "error");
    assert_eq!(got["finished"], false);
    assert_eq!(got["data"]["resultData"]["error"]["message"], "boom");
    let (_, got) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/executions/{exec_id}"),
        None,
    )
    .await;
    assert!(got.get("data").is_none());
    let (_, running) = api(
        &fake,
        reqwest::Method::GET,
        "/executions?status=running",
        None,
    )
    .await;
    assert_eq!(running["data"], json!([]));
}

#[tokio::test]
async fn last_node_mode_waits_for_the_execution_and_updates_change_the_version() {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let (_, created) = api(
        &fake,
        reqwest::Method::POST,
        "/workflows",
        Some(workflow("sync", "lastNode")),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let mut renamed = workflow("sync", "lastNode");
    renamed["name"] = json!("Renamed");
    let (status, updated) = api(
        &fake,
        reqwest::Method::PUT,
        &format!("/workflows/{id}"),
        Some(renamed),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["name"], "Renamed");
    assert_ne!(updated["versionId"], created["versionId"]);
    api(
        &fake,
        reqwest::Method::POST,
        &format!("/workflows/{id}/activate"),
        None,
    )
    .await;

    fake.finish_automatically(Some((
        Duration::from_millis(50),
        Outcome::Success(json!({"ok": true})),
    )));
    let (status, answer) = hook(&fake, "sync", json!({"a": 1})).await;
    assert_eq!((status, answer), (200, json!({"ok": true})));
    let executions = fake.executions();
    assert_eq!(executions[0]["status"], "success");
    assert_eq!(executions[0]["finished"], true);
    assert!(executions[0]["stoppedAt"].is_string());
}

#[tokio::test]
async fn executions_are_paged_newest_first() {
    let fake = FakeN8n::start(FakeN8nConfig::default()).await;
    let (_, created) = api(
        &fake,
        reqwest::Method::POST,
        "/workflows",
        Some(workflow("p", "onReceived")),
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    api(
        &fake,
        reqwest::Method::POST,
        &format!("/workflows/{id}/activate"),
        None,
    )
    .await;
    for n in 0..3 {
        hook(&fake, "p", json!({ "n": n })).await;
    }
    let (_, first) = api(&fake, reqwest::Method::GET, "/executions?limit=2", None).await;
    let ids: Vec<u64> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert_eq!(ids, [3, 2]);
    let cursor = first["nextCursor"]
        .as_str()
        .expect("cursor")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (_, second) = api(
        &fake,
        reqwest::Method::GET,
        &format!("/executions?cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(second["data"][0]["id"], 1);
    assert_eq!(second["nextCursor"], Value::Null);
}
