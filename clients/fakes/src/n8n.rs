//! Fake n8n instance (PROVIDERS.md §7): the public REST API under `/api/v1` (workflows,
//! activation, executions) and production webhook triggers under `/webhook/{path}`.
//!
//! Fidelity choices worth knowing:
//! - the API takes `X-N8N-API-KEY`: without it 401 `{"message":"'X-N8N-API-KEY' header
//!   required"}`, with a wrong key 401 `{"message":"Unauthorized"}`; webhook URLs take no key;
//! - every API error is `{"message": "..."}`; request bodies are checked as n8n's OpenAPI
//!   validator does (`request/body must have required property 'settings'`, no additional
//!   properties). Stricter than n8n on purpose: read-only fields (`id`, `active`, `versionId`,
//!   ...) in a create or update body are refused with 400 (`request/body/active is read-only`),
//!   because whether n8n ignores or refuses them is unconfirmed and an adapter must not send them;
//! - a webhook runs only while its workflow is active and only for the node's `httpMethod`
//!   (n8n's default is GET); an unregistered one answers n8n's 404 with its `hint`;
//!   `responseMode` `onReceived` (default) answers `{"message":"Workflow was started"}` at once,
//!   `lastNode`/`responseNode` wait for the execution and answer its last node's first item;
//! - executions have numeric ids, mode `webhook`, and n8n's statuses; their `data` (with
//!   `includeData=true`) holds the Webhook node's output item `{headers, params, query, body}`,
//!   so a correlation id sent in the payload can be found by listing executions;
//! - executions stay `running` until a test finishes them ([`FakeN8n::finish_execution`]) or
//!   [`FakeN8n::finish_automatically`] is set, so a hanging workflow can be modelled.
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng as _;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::harness::{loopback, Failure, Harness, Recorded, Running};

/// The key a default fake accepts.
pub const TEST_API_KEY: &str = "n8n_api_fake_0123456789abcdef";
/// The node type of n8n's Webhook trigger.
pub const WEBHOOK_NODE_TYPE: &str = "n8n-nodes-base.webhook";

const WRITABLE_FIELDS: &[&str] = &[
    "name",
    "nodes",
    "connections",
    "settings",
    "staticData",
    "pinData",
    "description",
    "externalId",
];
const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "active",
    "createdAt",
    "updatedAt",
    "isArchived",
    "versionId",
    "triggerCount",
    "tags",
    "meta",
    "shared",
    "activeVersion",
];
const REQUIRED_FIELDS: &[&str] = &["name", "nodes", "connections", "settings"];

#[derive(Clone, Debug)]
pub struct FakeN8nConfig {
    /// Keys answered as valid.
    pub api_keys: Vec<String>,
}

impl Default for FakeN8nConfig {
    fn default() -> Self {
        FakeN8nConfig {
            api_keys: vec![TEST_API_KEY.to_owned()],
        }
    }
}

/// How a test ends an execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Status `success`, `finished: true`; the value is the last node's output item.
    Success(Value),
    /// Status `error` with this message in `data.resultData.error`.
    Error(String),
    /// Status `crashed`: the worker died.
    Crashed,
    /// Status `canceled`.
    Canceled,
}

struct Workflow {
    id: String,
    name: String,
    nodes: Vec<Value>,
    connections: Value,
    settings: Value,
    static_data: Value,
    pin_data: Value,
    description: Value,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version_id: String,
}

struct Execution {
    id: u64,
    workflow_id: String,
    status: &'static str,
    finished: bool,
    started_at: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    wait_till: Option<DateTime<Utc>>,
    trigger_node: String,
    trigger_item: Value,
    last_node: Option<(String, Value)>,
    error: Option<String>,
}

#[derive(Default)]
struct Inner {
    workflows: BTreeMap<String, Workflow>,
    executions: BTreeMap<u64, Execution>,
    next_execution: u64,
    auto_finish: Option<(Duration, Outcome)>,
}

struct Shared {
    config: FakeN8nConfig,
    base_url: String,
    inner: Mutex<Inner>,
    /// Woken whenever an execution ends, for webhooks that answer when the last node finishes.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, id: u64, outcome: Outcome) -> bool {
        let done = {
            let mut inner = self.lock();
            let Some(e) = inner.executions.get_mut(&id) else {
                return false;
            };
            let now = Utc::now();
            e.stopped_at = Some(now);
            e.wait_till = None;
            match outcome {
                Outcome::Success(output) => {
                    e.status = "success";
                    e.finished = true;
                    e.last_node = Some(("Respond".to_owned(), output));
                }
                Outcome::Error(message) => {
                    e.status = "error";
                    e.error = Some(message);
                }
                Outcome::Crashed => e.status = "crashed",
                Outcome::Canceled => e.status = "canceled",
            }
            true
        };
        self.changed.notify_waiters();
        done
    }
}

/// A running fake n8n instance; it stops when dropped.
pub struct FakeN8n {
    shared: Arc<Shared>,
    harness: Harness,
    _running: Running,
}

impl FakeN8n {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test that needs this fake can run then.
    pub async fn start(config: FakeN8nConfig) -> FakeN8n {
        match Self::try_start(config).await {
            Ok(fake) => fake,
            Err(err) => panic!("fake n8n failed to start: {err}"),
        }
    }

    pub async fn try_start(config: FakeN8nConfig) -> io::Result<FakeN8n> {
        Self::try_start_on(loopback().await?, config)
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(listener: TcpListener, config: FakeN8nConfig) -> io::Result<FakeN8n> {
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            config,
            base_url,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        });
        let router = Router::new()
            .route(
                "/api/v1/workflows",
                post(create_workflow).get(list_workflows),
            )
            .route(
                "/api/v1/workflows/{id}",
                get(get_workflow)
                    .put(update_workflow)
                    .delete(delete_workflow),
            )
            .route("/api/v1/workflows/{id}/activate", post(activate))
            .route("/api/v1/workflows/{id}/deactivate", post(deactivate))
            .route("/api/v1/executions", get(list_executions))
            .route("/api/v1/executions/{id}", get(get_execution))
            .route("/webhook/{*path}", any(webhook))
            .route("/webhook-test/{*path}", any(webhook_test))
            .fallback(|| async { message(StatusCode::NOT_FOUND, "Not Found") })
            .with_state(shared.clone());
        let harness = Harness::new(&[]);
        let running = harness.serve(
            listener,
            router,
            Arc::new(|status: StatusCode| {
                message(status, status.canonical_reason().unwrap_or("Error"))
            }),
        )?;
        Ok(FakeN8n {
            shared,
            harness,
            _running: running,
        })
    }

    /// The instance URL (what a connection's `base_url` holds), e.g. `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    pub fn fail_next_at(&self, path: &str, n: usize, failure: Failure) {
        self.harness.fail_next_at(path, n, failure);
    }

    /// The workflow as `GET /api/v1/workflows/{id}` answers it.
    pub fn workflow(&self, id: &str) -> Option<Value> {
        self.shared.lock().workflows.get(id).map(workflow_json)
    }

    /// Every execution (with data), newest first, as the API lists them.
    pub fn executions(&self) -> Vec<Value> {
        self.shared
            .lock()
            .executions
            .values()
            .rev()
            .map(|e| execution_json(e, true))
            .collect()
    }

    /// Ends an execution; `false` when there is none with that id.
    pub fn finish_execution(&self, id: u64, outcome: Outcome) -> bool {
        self.shared.finish(id, outcome)
    }

    /// Pauses a running execution (a Wait node) until `until`.
    pub fn set_waiting(&self, id: u64, until: DateTime<Utc>) -> bool {
        let mut inner = self.shared.lock();
        let Some(e) = inner.executions.get_mut(&id) else {
            return false;
        };
        e.status = "waiting";
        e.wait_till = Some(until);
        true
    }

    /// From now on, every new execution ends with `outcome` after `delay`; `None` leaves new
    /// executions running (hanging) until a test ends them.
    pub fn finish_automatically(&self, plan: Option<(Duration, Outcome)>) {
        self.shared.lock().auto_finish = plan;
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// An API error before it is rendered: small, so `Result`s that carry it stay small.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        message(self.0, &self.1)
    }
}

fn refuse(status: StatusCode, text: &str) -> Refusal {
    Refusal(status, text.to_owned())
}

fn check_key(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get("x-n8n-api-key").and_then(|v| v.to_str().ok()) {
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "'X-N8N-API-KEY' header required",
        )),
        Some(key) if shared.config.api_keys.iter().any(|k| k == key) => Ok(()),
        Some(_) => Err(refuse(StatusCode::UNAUTHORIZED, "Unauthorized")),
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn workflow_json(w: &Workflow) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "active": w.active,
        "isArchived": false,
        "createdAt": timestamp(w.created_at),
        "updatedAt": timestamp(w.updated_at),
        "nodes": w.nodes,
        "connections": w.connections,
        "settings": w.settings,
        "staticData": w.static_data,
        "pinData": w.pin_data,
        "description": w.description,
        "meta": null,
        "versionId": w.version_id,
        "triggerCount": if w.active { trigger_count(&w.nodes) } else { 0 },
        "tags": []
    })
}

fn is_trigger(node: &Value) -> bool {
    let ty = node.get("type").and_then(Value::as_str).unwrap_or_default();
    ty == WEBHOOK_NODE_TYPE
        || ty.ends_with("Trigger")
        || ty.ends_with("trigger")
        || ty == "n8n-nodes-base.cron"
}

fn trigger_count(nodes: &[Value]) -> usize {
    nodes.iter().filter(|n| is_trigger(n)).count()
}

/// The (method, path) a Webhook node listens on.
fn webhook_of(node: &Value) -> Option<(String, String)> {
    if node.get("type").and_then(Value::as_str) != Some(WEBHOOK_NODE_TYPE) {
        return None;
    }
    let params = node.get("parameters")?;
    let path = params.get("path").and_then(Value::as_str)?;
    let method = params
        .get("httpMethod")
        .and_then(Value::as_str)
        .unwrap_or("GET");
    Some((
        method.to_ascii_uppercase(),
        path.trim_matches('/').to_owned(),
    ))
}

/// The workflow fields of a create or update body, checked as n8n's OpenAPI validator does.
struct Body {
    name: String,
    nodes: Vec<Value>,
    connections: Value,
    settings: Value,
    static_data: Value,
    pin_data: Value,
    description: Value,
}

fn parse_body(body: &str) -> Result<Body, Refusal> {
    let bad = |m: &str| refuse(StatusCode::BAD_REQUEST, m);
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body) else {
        return Err(bad("request/body must be object"));
    };
    for key in map.keys() {
        if READ_ONLY_FIELDS.contains(&key.as_str()) {
            return Err(bad(&format!("request/body/{key} is read-only")));
        }
        if !WRITABLE_FIELDS.contains(&key.as_str()) {
            return Err(bad("request/body must NOT have additional properties"));
        }
    }
    for key in REQUIRED_FIELDS {
        if !map.contains_key(*key) {
            return Err(bad(&format!(
                "request/body must have required property '{key}'"
            )));
        }
    }
    let Some(Value::String(name)) = map.remove("name") else {
        return Err(bad("request/body/name must be string"));
    };
    let Some(Value::Array(nodes)) = map.remove("nodes") else {
        return Err(bad("request/body/nodes must be array"));
    };
    let mut names = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for field in ["name", "type"] {
            if node.get(field).and_then(Value::as_str).is_none() {
                return Err(bad(&format!(
                    "request/body/nodes/{i} must have required property '{field}'"
                )));
            }
        }
        let name = node.get("name").and_then(Value::as_str).unwrap_or_default();
        if names.contains(&name) {
            return Err(bad(&format!("Duplicate node name: {name}")));
        }
        names.push(name);
    }
    let connections = map.remove("connections").unwrap_or_default();
    let settings = map.remove("settings").unwrap_or_default();
    if !connections.is_object() {
        return Err(bad("request/body/connections must be object"));
    }
    if !settings.is_object() {
        return Err(bad("request/body/settings must be object"));
    }
    Ok(Body {
        name,
        nodes,
        connections,
        settings,
        static_data: map.remove("staticData").unwrap_or(Value::Null),
        pin_data: map.remove("pinData").unwrap_or(Value::Null),
        description: map.remove("description").unwrap_or(Value::Null),
    })
}

fn new_workflow_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

async fn create_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let now = Utc::now();
    let workflow = Workflow {
        id: new_workflow_id(),
        name: body.name,
        nodes: body.nodes,
        connections: body.connections,
        settings: body.settings,
        static_data: body.static_data,
        pin_data: body.pin_data,
        description: body.description,
        active: false,
        created_at: now,
        updated_at: now,
        version_id: uuid::Uuid::new_v4().to_string(),
    };
    let out = workflow_json(&workflow);
    shared
        .lock()
        .workflows
        .insert(workflow.id.clone(), workflow);
    Json(out).into_response()
}

async fn get_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    match shared.lock().workflows.get(&id) {
        Some(w) => Json(workflow_json(w)).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let body = match parse_body(&body) {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let mut inner = shared.lock();
    if !inner.workflows.contains_key(&id) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let active = inner.workflows.get(&id).is_some_and(|w| w.active);
    if active {
        if let Err(conflict) = check_webhooks(&inner, &id, &body.nodes) {
            return conflict.into_response();
        }
    }
    let Some(w) = inner.workflows.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    w.name = body.name;
    w.nodes = body.nodes;
    w.connections = body.connections;
    w.settings = body.settings;
    w.static_data = body.static_data;
    w.pin_data = body.pin_data;
    w.description = body.description;
    w.updated_at = Utc::now();
    w.version_id = uuid::Uuid::new_v4().to_string();
    Json(workflow_json(w)).into_response()
}

async fn delete_workflow(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    match shared.lock().workflows.remove(&id) {
        Some(w) => Json(workflow_json(&w)).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Refuses webhooks that another active workflow already listens on.
fn check_webhooks(inner: &Inner, id: &str, nodes: &[Value]) -> Result<(), Refusal> {
    for hook in nodes.iter().filter_map(webhook_of) {
        let taken = inner.workflows.values().any(|other| {
            other.id != id
                && other.active
                && other.nodes.iter().filter_map(webhook_of).any(|h| h == hook)
        });
        if taken {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                &format!(
                    "The URL path that the \"Webhook\" node uses ({}) is already taken by another active workflow.",
                    hook.1
                ),
            ));
        }
    }
    Ok(())
}

async fn activate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_active(&shared, &headers, &id, true)
}

async fn deactivate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_active(&shared, &headers, &id, false)
}

fn set_active(shared: &Shared, headers: &HeaderMap, id: &str, active: bool) -> Response {
    if let Err(refused) = check_key(shared, headers) {
        return refused.into_response();
    }
    let mut inner = shared.lock();
    let Some(nodes) = inner.workflows.get(id).map(|w| w.nodes.clone()) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if active {
        if trigger_count(&nodes) == 0 {
            return message(
                StatusCode::BAD_REQUEST,
                "Workflow has no node to start the workflow - at least one trigger, poller or webhook node is required",
            );
        }
        if let Err(conflict) = check_webhooks(&inner, id, &nodes) {
            return conflict.into_response();
        }
    }
    let Some(w) = inner.workflows.get_mut(id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    w.active = active;
    Json(workflow_json(w)).into_response()
}

/// n8n's cursor: base64 of `{"lastId", "limit"}`.
fn cursor(last_id: &str, limit: usize) -> String {
    STANDARD.encode(json!({"lastId": last_id, "limit": limit}).to_string())
}

fn parse_cursor(text: &str) -> Option<(String, usize)> {
    let v: Value = serde_json::from_slice(&STANDARD.decode(text).ok()?).ok()?;
    let last = match v.get("lastId")? {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let limit = usize::try_from(v.get("limit")?.as_u64()?).ok()?;
    Some((last, limit))
}

fn page_limit(query: &HashMap<String, String>) -> Result<usize, Refusal> {
    match query.get("limit") {
        None => Ok(100),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=250).contains(&n) => Ok(n),
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                "request/query/limit must be <= 250",
            )),
        },
    }
}

async fn list_workflows(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let (after, limit) = match query.get("cursor") {
        Some(c) => match parse_cursor(c) {
            Some((last, limit)) => (Some(last), limit),
            None => return message(StatusCode::BAD_REQUEST, "An invalid cursor was provided"),
        },
        None => match page_limit(&query) {
            Ok(limit) => (None, limit),
            Err(refused) => return refused.into_response(),
        },
    };
    let active = query.get("active").map(|a| a == "true");
    let inner = shared.lock();
    let matching: Vec<&Workflow> = inner
        .workflows
        .values()
        .filter(|w| active.is_none_or(|a| w.active == a))
        .filter(|w| after.as_ref().is_none_or(|last| &w.id > last))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|w| workflow_json(w))
        .collect();
    let next = (matching.len() > limit)
        .then(|| matching.get(limit - 1).map(|w| cursor(&w.id, limit)))
        .flatten();
    Json(json!({"data": page, "nextCursor": next})).into_response()
}

fn execution_json(e: &Execution, include_data: bool) -> Value {
    let mut out = json!({
        "id": e.id,
        "finished": e.finished,
        "mode": "webhook",
        "retryOf": null,
        "retrySuccessId": null,
        "startedAt": timestamp(e.started_at),
        "stoppedAt": e.stopped_at.map(timestamp),
        "workflowId": e.workflow_id,
        "waitTill": e.wait_till.map(timestamp),
        "customData": {},
        "status": e.status
    });
    if include_data {
        let started_ms = e.started_at.timestamp_millis();
        let run = |item: &Value| {
            json!([{
                "startTime": started_ms,
                "executionTime": 1,
                "executionStatus": "success",
                "source": [],
                "data": {"main": [[{"json": item, "pairedItem": {"item": 0}}]]}
            }])
        };
        let mut run_data = Map::new();
        run_data.insert(e.trigger_node.clone(), run(&e.trigger_item));
        let mut last = e.trigger_node.clone();
        if let Some((node, item)) = &e.last_node {
            run_data.insert(node.clone(), run(item));
            last.clone_from(node);
        }
        let mut result = json!({"runData": run_data, "lastNodeExecuted": last});
        if let Some(err) = &e.error {
            result["error"] = json!({"message": err, "name": "NodeOperationError"});
        }
        out["data"] = json!({"startData": {}, "resultData": result});
    }
    out
}

fn include_data(query: &HashMap<String, String>) -> bool {
    query.get("includeData").is_some_and(|v| v == "true")
}

async fn get_execution(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let Ok(id) = id.parse::<u64>() else {
        return message(StatusCode::BAD_REQUEST, "request/params/id must be number");
    };
    match shared.lock().executions.get(&id) {
        Some(e) => Json(execution_json(e, include_data(&query))).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

const STATUSES: &[&str] = &[
    "canceled", "crashed", "error", "new", "running", "success", "unknown", "waiting",
];

async fn list_executions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    if let Some(status) = query.get("status") {
        if !STATUSES.contains(&status.as_str()) {
            return message(
                StatusCode::BAD_REQUEST,
                "request/query/status must be equal to one of the allowed values: canceled, crashed, error, new, running, success, unknown, waiting",
            );
        }
    }
    let (before, limit) = match query.get("cursor") {
        Some(c) => match parse_cursor(c).and_then(|(last, l)| Some((last.parse::<u64>().ok()?, l)))
        {
            Some((last, limit)) => (Some(last), limit),
            None => return message(StatusCode::BAD_REQUEST, "An invalid cursor was provided"),
        },
        None => match page_limit(&query) {
            Ok(limit) => (None, limit),
            Err(refused) => return refused.into_response(),
        },
    };
    let with_data = include_data(&query);
    let inner = shared.lock();
    let matching: Vec<&Execution> = inner
        .executions
        .values()
        .rev()
        .filter(|e| query.get("workflowId").is_none_or(|w| &e.workflow_id == w))
        .filter(|e| query.get("status").is_none_or(|s| e.status == s))
        .filter(|e| before.is_none_or(|last| e.id < last))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|e| execution_json(e, with_data))
        .collect();
    let next = (matching.len() > limit)
        .then(|| {
            matching
                .get(limit - 1)
                .map(|e| cursor(&e.id.to_string(), limit))
        })
        .flatten();
    Json(json!({"data": page, "nextCursor": next})).into_response()
}

async fn webhook_test(Path(path): Path<String>) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "code": 404,
            "message": format!("The requested webhook \"{path}\" is not registered."),
            "hint": "Click the 'Execute workflow' button on the canvas, then try again. (In test mode, the webhook only works for one call after you click this button)"
        })),
    )
        .into_response()
}

async fn webhook(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let path = path.trim_matches('/').to_owned();
    let wanted = (method.as_str().to_owned(), path.clone());
    let (id, mode) = {
        let mut inner = shared.lock();
        let found = inner.workflows.values().filter(|w| w.active).find_map(|w| {
            w.nodes
                .iter()
                .find(|n| webhook_of(n).as_ref() == Some(&wanted))
                .map(|n| (w.id.clone(), n.clone()))
        });
        let Some((workflow_id, node)) = found else {
            drop(inner);
            return not_registered(&method, &path);
        };
        let parsed_body = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_str::<Value>(&body) {
                Ok(v) => v,
                Err(_) => Value::String(body.clone()),
            }
        };
        let header_map: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
            .collect();
        inner.next_execution += 1;
        let id = inner.next_execution;
        let node_name = node
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("Webhook")
            .to_owned();
        inner.executions.insert(
            id,
            Execution {
                id,
                workflow_id,
                status: "running",
                finished: false,
                started_at: Utc::now(),
                stopped_at: None,
                wait_till: None,
                trigger_node: node_name,
                trigger_item: json!({
                    "headers": header_map,
                    "params": {},
                    "query": query,
                    "body": parsed_body,
                    "webhookUrl": format!("{}{}", shared.base_url, uri.path()),
                    "executionMode": "production"
                }),
                last_node: None,
                error: None,
            },
        );
        if let Some((delay, outcome)) = inner.auto_finish.clone() {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                shared.finish(id, outcome);
            });
        }
        let mode = node
            .get("parameters")
            .and_then(|p| p.get("responseMode"))
            .and_then(Value::as_str)
            .unwrap_or("onReceived")
            .to_owned();
        (id, mode)
    };
    if mode == "onReceived" {
        return Json(json!({"message": "Workflow was started"})).into_response();
    }
    // lastNode / responseNode: the caller waits until the execution ends.
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let state = shared
            .lock()
            .executions
            .get(&id)
            .map(|e| (e.status, e.last_node.clone()));
        match state {
            Some(("success", Some((_, item)))) => return Json(item).into_response(),
            Some(("running" | "waiting" | "new", _)) => notified.await,
            _ => return message(StatusCode::INTERNAL_SERVER_ERROR, "Error in workflow"),
        }
    }
}

fn not_registered(method: &Method, path: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "code": 404,
            "message": format!("The requested webhook \"{method} {path}\" is not registered."),
            "hint": "The workflow must be active for a production URL to run successfully. You can activate the workflow using the toggle in the top-right of the editor. Note that unlike test URL calls, production URL calls aren't shown on the canvas (only in the executions list)"
        })),
    )
        .into_response()
}
