//! Fake Retell AI (PROVIDERS.md §2): agents, Retell LLMs, phone and web calls, and the signed
//! call webhooks (`call_started`, `call_ended`, `call_analyzed`).
//!
//! Serves Retell's own paths under a loopback base URL (`/create-agent`, `/update-agent/{id}`,
//! `/get-agent/{id}`, `/create-retell-llm`, `/update-retell-llm/{id}`, `/get-retell-llm/{id}`,
//! `/delete-retell-llm/{id}`, `/v2/create-phone-call`, `/v2/create-web-call`,
//! `/v2/get-call/{id}`) with `Authorization: Bearer <api key>`. Tests drive a call's life with
//! hooks ([`FakeRetell::start_call`], [`FakeRetell::end_call`], [`FakeRetell::analyze_call`]),
//! each posting the webhook Retell would post, signed as Retell signs it.
//!
//! Fidelity choices worth knowing:
//! - every API key belongs to a workspace (Retell's account); agents, LLMs and calls are only
//!   visible to keys of their workspace, and an asset of another workspace or an unknown id is
//!   422 "Cannot find requested asset under given api key." — Retell's published answer for
//!   an unknown asset, not 404;
//! - error bodies are Retell's `{"status":"error","message":...}` with the messages of its
//!   OpenAPI document; a missing or wrong key is 401 "API key is missing or invalid.";
//! - webhooks are signed `x-retell-signature: v=<ms>,d=hex(HMAC-SHA256(api key, body ‖ ms))`
//!   with the workspace's webhook key (the first key added unless
//!   [`FakeRetell::set_webhook_key`] picks another), sent to the agent's `webhook_url` or else
//!   the workspace's account-level URL, only for events in the agent's `webhook_events`, and
//!   retried up to 3 times without a 2xx (immediately: a fake must not slow tests down);
//! - `call_ended` carries the call without `call_analysis`; `call_analyzed` with it; unset
//!   `metadata` and `retell_llm_dynamic_variables` are omitted, as Retell omits them;
//! - stricter than Retell on purpose: output-only fields (`agent_id`, `llm_id`, `version`,
//!   `last_modification_timestamp`, `is_published`) in a create or update body are 400, so an
//!   adapter that echoes a fetched object back is caught;
//! - `null` in an update body resets the field to Retell's default.
//! - money in call costs is in cents, as JSON numbers, as Retell sends it; hooks take cents as
//!   decimal text so tests never build a price from a float.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::harness::{self, Failure, Harness, Recorded, Running};

/// The webhook signature header.
pub const SIGNATURE_HEADER: &str = "x-retell-signature";
/// The workspace keys added with [`FakeRetell::add_api_key`] belong to.
pub const DEFAULT_WORKSPACE: &str = "default";
/// Retell's default LLM model.
pub const DEFAULT_MODEL: &str = "gpt-4.1";

/// Retell's messages (its OpenAPI document's examples).
pub const MSG_BAD_REQUEST: &str = "Invalid request format, please check API reference.";
pub const MSG_UNAUTHORIZED: &str = "API key is missing or invalid.";
pub const MSG_NOT_FOUND_ASSET: &str = "Cannot find requested asset under given api key.";
pub const MSG_RATE_LIMITED: &str = "Account rate limited, please throttle your requests.";
pub const MSG_INTERNAL: &str = "An unexpected server error occurred.";

/// Models the fake's Retell LLM accepts (a snapshot; Retell's list changes often).
pub const MODELS: &[&str] = &[
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "claude-3.7-sonnet",
    "claude-3.5-haiku",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
];

/// Webhook events an agent can subscribe to.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "call_started",
    "call_ended",
    "call_analyzed",
    "transcript_updated",
    "transfer_started",
    "transfer_bridged",
    "transfer_cancelled",
    "transfer_ended",
];
const DEFAULT_WEBHOOK_EVENTS: &[&str] = &["call_started", "call_ended", "call_analyzed"];
const DATA_STORAGE_SETTINGS: &[&str] = &[
    "everything",
    "everything_except_pii",
    "basic_attributes_only",
];
const ANALYSIS_TYPES: &[&str] = &["string", "enum", "boolean", "number"];
const READ_ONLY_AGENT: &[&str] = &[
    "agent_id",
    "version",
    "last_modification_timestamp",
    "is_published",
];
const READ_ONLY_LLM: &[&str] = &[
    "llm_id",
    "version",
    "last_modification_timestamp",
    "is_published",
];
/// Retell's limits on call length and silence (ms).
const MAX_CALL_DURATION_RANGE: (u64, u64) = (60_000, 7_200_000);
const MIN_END_CALL_AFTER_SILENCE_MS: u64 = 10_000;
/// Retries after the first webhook attempt without a 2xx.
const WEBHOOK_RETRIES: u32 = 3;

/// Signs a webhook body as Retell does: the header value `v=<ms>,d=<hex digest>`.
pub fn signature(api_key: &str, body: &[u8], timestamp_ms: u64) -> String {
    let ms = timestamp_ms.to_string();
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256>>::new_from_slice(api_key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(body);
    mac.update(ms.as_bytes());
    format!("v={ms},d={}", hex::encode(mac.finalize().into_bytes()))
}

#[cold]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 accepts keys of every length")
}

/// Who spoke a transcript turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent,
    User,
    TransferTarget,
}

impl Role {
    fn wire(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::User => "user",
            Role::TransferTarget => "transfer_target",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Role::Agent => "Agent",
            Role::User => "User",
            Role::TransferTarget => "Transfer Target",
        }
    }
}

/// One utterance; its words are spread evenly between `start_ms` and `end_ms` (from the
/// start of the call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// One item of `call_cost.product_costs`; amounts in cents as decimal text (e.g. "7.5").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductCost {
    pub product: String,
    pub cost_cents: String,
    pub unit_price_cents: String,
}

/// How a call ended, for [`FakeRetell::end_call`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEnd {
    pub duration_ms: u64,
    /// e.g. "user_hangup"; a `dial_*` reason makes the call `not_connected`.
    pub disconnection_reason: String,
    pub turns: Vec<Turn>,
    /// `call_cost.combined_cost` in cents as decimal text; `None` leaves `call_cost` out.
    pub combined_cost_cents: Option<String>,
    pub product_costs: Vec<ProductCost>,
    /// `call_cost.total_duration_unit_price` (cents per second) as decimal text.
    pub total_duration_unit_price_cents: Option<String>,
    pub recording_url: Option<String>,
}

impl CallEnd {
    /// A call of `duration_ms` the user hung up, with no transcript and no cost yet.
    pub fn new(duration_ms: u64) -> Self {
        CallEnd {
            duration_ms,
            disconnection_reason: "user_hangup".to_owned(),
            turns: Vec::new(),
            combined_cost_cents: None,
            product_costs: Vec::new(),
            total_duration_unit_price_cents: None,
            recording_url: None,
        }
    }

    pub fn turn(mut self, role: Role, content: &str, start_ms: u64, end_ms: u64) -> Self {
        self.turns.push(Turn {
            role,
            content: content.to_owned(),
            start_ms,
            end_ms,
        });
        self
    }

    pub fn cost(mut self, combined_cents: &str) -> Self {
        self.combined_cost_cents = Some(combined_cents.to_owned());
        self
    }

    pub fn product(mut self, product: &str, cost_cents: &str, unit_price_cents: &str) -> Self {
        self.product_costs.push(ProductCost {
            product: product.to_owned(),
            cost_cents: cost_cents.to_owned(),
            unit_price_cents: unit_price_cents.to_owned(),
        });
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.disconnection_reason = reason.to_owned();
        self
    }
}

/// The post-call analysis, for [`FakeRetell::analyze_call`].
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub call_summary: String,
    /// "Positive", "Negative", "Neutral" or "Unknown".
    pub user_sentiment: String,
    pub call_successful: Option<bool>,
    pub in_voicemail: bool,
    /// `custom_analysis_data`, e.g. `{"appointment_booked": true}`.
    pub custom_analysis_data: Value,
}

impl Analysis {
    pub fn new(summary: &str, custom_analysis_data: Value) -> Self {
        Analysis {
            call_summary: summary.to_owned(),
            user_sentiment: "Positive".to_owned(),
            call_successful: Some(true),
            in_voicemail: false,
            custom_analysis_data,
        }
    }
}

/// A webhook the fake posted (the last attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub event: String,
    pub url: String,
    /// The exact bytes posted.
    pub body: Bytes,
    /// The `x-retell-signature` value of the last attempt.
    pub signature: String,
    /// The receiver's status on the last attempt; `None` when it could not be reached.
    pub status: Option<u16>,
    pub attempts: u32,
}

/// Why a test hook could not do what it was asked.
#[derive(Debug)]
pub enum HookError {
    UnknownAgent(String),
    UnknownCall(String),
    /// The call is not in a state the hook applies to (e.g. ending an ended call).
    WrongState {
        call_id: String,
        status: String,
    },
    /// A cost was not a decimal number.
    BadAmount(String),
    /// The workspace has no API key to sign with.
    NoWebhookKey,
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::UnknownAgent(id) => write!(f, "no agent {id}"),
            HookError::UnknownCall(id) => write!(f, "no call {id}"),
            HookError::WrongState { call_id, status } => {
                write!(f, "call {call_id} is {status}")
            }
            HookError::BadAmount(text) => write!(f, "not a decimal amount: {text}"),
            HookError::NoWebhookKey => f.write_str("workspace has no api key to sign with"),
        }
    }
}

impl std::error::Error for HookError {}

#[derive(Default)]
struct Workspace {
    /// Keys in the order added; the webhook key is chosen among them.
    keys: Vec<String>,
    webhook_key: Option<String>,
    webhook_url: Option<String>,
    agents: BTreeMap<String, Map<String, Value>>,
    llms: BTreeMap<String, Map<String, Value>>,
    calls: BTreeMap<String, Map<String, Value>>,
    /// Retell numbers bound to the agent that places outbound calls from them.
    numbers: BTreeMap<String, String>,
    /// When the requests of the current rate window arrived.
    hits: VecDeque<Instant>,
}

impl Workspace {
    fn signing_key(&self) -> Option<String> {
        self.webhook_key
            .clone()
            .or_else(|| self.keys.first().cloned())
    }
}

#[derive(Default)]
struct Inner {
    workspaces: BTreeMap<String, Workspace>,
    deliveries: Vec<WebhookDelivery>,
    /// Requests a workspace may make per window; `None` is unlimited.
    rate_limit: Option<(usize, Duration)>,
}

impl Inner {
    fn workspace_of_key(&self, key: &str) -> Option<String> {
        self.workspaces
            .iter()
            .find(|(_, w)| w.keys.iter().any(|k| k == key))
            .map(|(name, _)| name.clone())
    }

    fn workspace_of_call(&mut self, call_id: &str) -> Option<&mut Workspace> {
        self.workspaces
            .values_mut()
            .find(|w| w.calls.contains_key(call_id))
    }

    fn workspace_of_agent(&mut self, agent_id: &str) -> Option<&mut Workspace> {
        self.workspaces
            .values_mut()
            .find(|w| w.agents.contains_key(agent_id))
    }
}

struct Shared {
    inner: Mutex<Inner>,
    webhook_client: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake Retell; the server stops when this is dropped.
pub struct FakeRetell {
    shared: Arc<Shared>,
    harness: Harness,
    running: Running,
}

impl FakeRetell {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test that needs this fake can run then.
    pub async fn start() -> FakeRetell {
        match Self::try_start().await {
            Ok(fake) => fake,
            Err(err) => panic!("fake retell failed to start: {err}"),
        }
    }

    pub async fn try_start() -> io::Result<FakeRetell> {
        Self::try_start_on(harness::loopback().await?)
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(listener: TcpListener) -> io::Result<FakeRetell> {
        let webhook_client = reqwest::Client::builder()
            // Retell's default webhook_timeout_ms.
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            webhook_client,
        });
        let harness = Harness::new(&[]);
        let running = harness.serve(listener, router(shared.clone()), Arc::new(injected_error))?;
        Ok(FakeRetell {
            shared,
            harness,
            running,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.running.base_url
    }

    /// Adds an API key to the default workspace.
    pub fn add_api_key(&self, key: &str) {
        self.add_api_key_in(DEFAULT_WORKSPACE, key);
    }

    /// Adds an API key to `workspace` (another Retell account), creating it.
    pub fn add_api_key_in(&self, workspace: &str, key: &str) {
        let mut inner = self.shared.lock();
        let ws = inner.workspaces.entry(workspace.to_owned()).or_default();
        if !ws.keys.iter().any(|k| k == key) {
            ws.keys.push(key.to_owned());
        }
    }

    /// Deletes a key: requests with it are 401 from now on.
    pub fn revoke_api_key(&self, key: &str) {
        for ws in self.shared.lock().workspaces.values_mut() {
            ws.keys.retain(|k| k != key);
            if ws.webhook_key.as_deref() == Some(key) {
                ws.webhook_key = None;
            }
        }
    }

    /// Gives `key` the "webhook" badge: webhooks of its workspace are signed with it.
    pub fn set_webhook_key(&self, key: &str) {
        let mut inner = self.shared.lock();
        if let Some(name) = inner.workspace_of_key(key) {
            if let Some(ws) = inner.workspaces.get_mut(&name) {
                ws.webhook_key = Some(key.to_owned());
            }
        }
    }

    /// The account-level webhook URL of the default workspace, used for agents without
    /// their own `webhook_url`.
    pub fn set_account_webhook_url(&self, url: &str) {
        let mut inner = self.shared.lock();
        let ws = inner
            .workspaces
            .entry(DEFAULT_WORKSPACE.to_owned())
            .or_default();
        ws.webhook_url = Some(url.to_owned());
    }

    /// Binds a Retell number to the agent that places outbound calls from it.
    pub fn bind_number(&self, number: &str, agent_id: &str) -> Result<(), HookError> {
        let mut inner = self.shared.lock();
        let ws = inner
            .workspace_of_agent(agent_id)
            .ok_or_else(|| HookError::UnknownAgent(agent_id.to_owned()))?;
        ws.numbers.insert(number.to_owned(), agent_id.to_owned());
        Ok(())
    }

    /// Every request received so far (the API key redacted), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.harness.requests_to(method, path)
    }

    pub fn clear_requests(&self) {
        self.harness.clear_requests();
    }

    /// The next `n` requests fail with `failure`, in Retell's error shape.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    pub fn fail_next_at(&self, path_prefix: &str, n: usize, failure: Failure) {
        self.harness.fail_next_at(path_prefix, n, failure);
    }

    pub fn fail_share(&self, share: f64, failure: Failure) {
        self.harness.fail_share(share, failure);
    }

    pub fn clear_failures(&self) {
        self.harness.clear_failures();
    }

    /// Answers 429 "Account rate limited" once a workspace made `requests` within `window`
    /// (Retell publishes neither its numbers nor a `Retry-After`, so none is sent).
    pub fn limit_requests(&self, requests: usize, window: Duration) {
        self.shared.lock().rate_limit = Some((requests, window));
    }

    /// The stored agent as get-agent returns it.
    pub fn agent(&self, agent_id: &str) -> Option<Value> {
        let inner = self.shared.lock();
        inner
            .workspaces
            .values()
            .find_map(|w| w.agents.get(agent_id))
            .map(|a| Value::Object(a.clone()))
    }

    /// The stored Retell LLM as get-retell-llm returns it.
    pub fn llm(&self, llm_id: &str) -> Option<Value> {
        let inner = self.shared.lock();
        inner
            .workspaces
            .values()
            .find_map(|w| w.llms.get(llm_id))
            .map(|l| Value::Object(l.clone()))
    }

    /// The stored call as get-call returns it.
    pub fn call(&self, call_id: &str) -> Option<Value> {
        let inner = self.shared.lock();
        inner
            .workspaces
            .values()
            .find_map(|w| w.calls.get(call_id))
            .map(|c| Value::Object(c.clone()))
    }

    /// Every webhook posted so far, oldest first.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.lock().deliveries.clone()
    }

    /// An inbound phone call from `from` to `to` answered by `agent_id`; posts
    /// `call_started`. Returns the call id.
    pub async fn start_call(
        &self,
        agent_id: &str,
        from: &str,
        to: &str,
    ) -> Result<String, HookError> {
        let call_id = {
            let mut inner = self.shared.lock();
            let ws = inner
                .workspace_of_agent(agent_id)
                .ok_or_else(|| HookError::UnknownAgent(agent_id.to_owned()))?;
            let agent = ws.agents.get(agent_id).cloned().unwrap_or_default();
            let mut call = new_call(&agent, "phone_call");
            call.insert("direction".into(), json!("inbound"));
            call.insert("from_number".into(), json!(from));
            call.insert("to_number".into(), json!(to));
            call.insert("call_status".into(), json!("ongoing"));
            call.insert("start_timestamp".into(), json!(now_ms()));
            let call_id = string_field(&call, "call_id");
            ws.calls.insert(call_id.clone(), call);
            call_id
        };
        self.send(&call_id, "call_started").await?;
        Ok(call_id)
    }

    /// A registered (outbound or web) call connects; posts `call_started`.
    pub async fn connect_call(&self, call_id: &str) -> Result<Option<WebhookDelivery>, HookError> {
        {
            let mut inner = self.shared.lock();
            let call = call_mut(&mut inner, call_id)?;
            require_status(call_id, call, &["registered"])?;
            call.insert("call_status".into(), json!("ongoing"));
            call.insert("start_timestamp".into(), json!(now_ms()));
        }
        self.send(call_id, "call_started").await
    }

    /// The call ends with `end`'s transcript, duration and cost; posts `call_ended`.
    pub async fn end_call(
        &self,
        call_id: &str,
        end: CallEnd,
    ) -> Result<Option<WebhookDelivery>, HookError> {
        let cost = call_cost(&end)?;
        {
            let mut inner = self.shared.lock();
            let call = call_mut(&mut inner, call_id)?;
            require_status(call_id, call, &["registered", "ongoing"])?;
            let never_connected = end.disconnection_reason.starts_with("dial_")
                || string_field(call, "call_status") == "registered";
            let start = call
                .get("start_timestamp")
                .and_then(Value::as_u64)
                .unwrap_or_else(now_ms);
            call.insert("start_timestamp".into(), json!(start));
            call.insert("end_timestamp".into(), json!(start + end.duration_ms));
            call.insert("duration_ms".into(), json!(end.duration_ms));
            call.insert(
                "call_status".into(),
                json!(if never_connected {
                    "not_connected"
                } else {
                    "ended"
                }),
            );
            call.insert(
                "disconnection_reason".into(),
                json!(end.disconnection_reason),
            );
            call.insert("transcript".into(), json!(transcript_text(&end.turns)));
            let turns: Vec<Value> = end.turns.iter().map(transcript_turn).collect();
            call.insert("transcript_object".into(), json!(turns.clone()));
            call.insert("transcript_with_tool_calls".into(), json!(turns));
            if let Some(cost) = cost {
                call.insert("call_cost".into(), cost);
            }
            if let Some(url) = &end.recording_url {
                call.insert("recording_url".into(), json!(url));
            }
            let public_log = format!("https://dxc03zgurdly9.cloudfront.net/{call_id}/public.log");
            call.insert("public_log_url".into(), json!(public_log));
        }
        self.send(call_id, "call_ended").await
    }

    /// The post-call analysis is ready; posts `call_analyzed`.
    pub async fn analyze_call(
        &self,
        call_id: &str,
        analysis: Analysis,
    ) -> Result<Option<WebhookDelivery>, HookError> {
        {
            let mut inner = self.shared.lock();
            let call = call_mut(&mut inner, call_id)?;
            require_status(call_id, call, &["ended", "not_connected", "error"])?;
            let Analysis {
                call_summary,
                user_sentiment,
                call_successful,
                in_voicemail,
                custom_analysis_data,
            } = analysis;
            let mut value = json!({
                "call_summary": call_summary,
                "user_sentiment": user_sentiment,
                "in_voicemail": in_voicemail,
                "custom_analysis_data": custom_analysis_data,
            });
            if let Some(successful) = call_successful {
                value["call_successful"] = json!(successful);
            }
            call.insert("call_analysis".into(), value);
        }
        self.send(call_id, "call_analyzed").await
    }

    /// The body and signature Retell would post for `event` of `call_id` right now, without
    /// sending it (for ingress tests that post it themselves).
    pub fn signed_webhook(&self, call_id: &str, event: &str) -> Result<(Bytes, String), HookError> {
        let mut inner = self.shared.lock();
        let ws = inner
            .workspace_of_call(call_id)
            .ok_or_else(|| HookError::UnknownCall(call_id.to_owned()))?;
        let key = ws.signing_key().ok_or(HookError::NoWebhookKey)?;
        let call = ws.calls.get(call_id).cloned().unwrap_or_default();
        let body = webhook_body(event, call);
        let sig = signature(&key, &body, now_ms());
        Ok((body, sig))
    }

    /// Posts `event` for `call_id` to the agent's (or account's) webhook URL, when the agent
    /// subscribes to it.
    async fn send(&self, call_id: &str, event: &str) -> Result<Option<WebhookDelivery>, HookError> {
        let (url, key, body) = {
            let mut inner = self.shared.lock();
            let ws = inner
                .workspace_of_call(call_id)
                .ok_or_else(|| HookError::UnknownCall(call_id.to_owned()))?;
            let call = ws.calls.get(call_id).cloned().unwrap_or_default();
            let agent_id = string_field(&call, "agent_id");
            let agent = ws.agents.get(&agent_id).cloned().unwrap_or_default();
            let subscribed = match agent.get("webhook_events").and_then(Value::as_array) {
                Some(events) => events.iter().any(|e| e.as_str() == Some(event)),
                None => DEFAULT_WEBHOOK_EVENTS.contains(&event),
            };
            let url = agent
                .get("webhook_url")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| ws.webhook_url.clone());
            let Some(url) = url.filter(|_| subscribed) else {
                return Ok(None);
            };
            let key = ws.signing_key().ok_or(HookError::NoWebhookKey)?;
            (url, key, webhook_body(event, call))
        };
        let mut delivery = WebhookDelivery {
            event: event.to_owned(),
            url: url.clone(),
            body: body.clone(),
            signature: String::new(),
            status: None,
            attempts: 0,
        };
        while delivery.attempts <= WEBHOOK_RETRIES {
            delivery.attempts += 1;
            // Signed per attempt, so a retry carries a fresh timestamp.
            delivery.signature = signature(&key, &body, now_ms());
            let headers = [
                (SIGNATURE_HEADER, delivery.signature.clone()),
                ("content-type", "application/json".to_owned()),
            ];
            let result =
                harness::deliver(&self.shared.webhook_client, &url, &headers, body.clone()).await;
            delivery.status = result.ok().map(|(status, _)| status);
            if delivery.status.is_some_and(|s| (200..300).contains(&s)) {
                break;
            }
        }
        self.shared.lock().deliveries.push(delivery.clone());
        Ok(Some(delivery))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn string_field(object: &Map<String, Value>, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn call_mut<'a>(
    inner: &'a mut Inner,
    call_id: &str,
) -> Result<&'a mut Map<String, Value>, HookError> {
    inner
        .workspace_of_call(call_id)
        .and_then(|w| w.calls.get_mut(call_id))
        .ok_or_else(|| HookError::UnknownCall(call_id.to_owned()))
}

fn require_status(
    call_id: &str,
    call: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), HookError> {
    let status = string_field(call, "call_status");
    if allowed.contains(&status.as_str()) {
        Ok(())
    } else {
        Err(HookError::WrongState {
            call_id: call_id.to_owned(),
            status,
        })
    }
}

fn new_call(agent: &Map<String, Value>, call_type: &str) -> Map<String, Value> {
    let mut call = Map::new();
    call.insert("call_id".into(), json!(new_id("call_")));
    call.insert("call_type".into(), json!(call_type));
    call.insert(
        "agent_id".into(),
        agent.get("agent_id").cloned().unwrap_or(Value::Null),
    );
    call.insert(
        "agent_version".into(),
        agent.get("version").cloned().unwrap_or(json!(0)),
    );
    if let Some(name) = agent.get("agent_name") {
        call.insert("agent_name".into(), name.clone());
    }
    call.insert("call_status".into(), json!("registered"));
    call.insert(
        "data_storage_setting".into(),
        agent
            .get("data_storage_setting")
            .cloned()
            .unwrap_or(json!("everything")),
    );
    call.insert("opt_out_sensitive_data_storage".into(), json!(false));
    call
}

/// `{"event": ..., "call": {...}}`, compact, as Retell posts it; `call_ended` and
/// `call_started` leave the analysis out.
fn webhook_body(event: &str, mut call: Map<String, Value>) -> Bytes {
    if event != "call_analyzed" {
        call.remove("call_analysis");
    }
    let body = json!({"event": event, "call": call});
    Bytes::from(body.to_string())
}

fn transcript_text(turns: &[Turn]) -> String {
    turns
        .iter()
        .map(|t| format!("{}: {}\n", t.role.label(), t.content))
        .collect()
}

fn transcript_turn(turn: &Turn) -> Value {
    let words: Vec<&str> = turn.content.split_whitespace().collect();
    let count = u64::try_from(words.len().max(1)).unwrap_or(1);
    let span = turn.end_ms.saturating_sub(turn.start_ms);
    let words: Vec<Value> = words
        .iter()
        .zip(0u64..)
        .map(|(word, i)| {
            let start = turn.start_ms + span * i / count;
            let end = turn.start_ms + span * (i + 1) / count;
            json!({"word": word, "start": seconds(start), "end": seconds(end)})
        })
        .collect();
    json!({"role": turn.role.wire(), "content": turn.content, "words": words})
}

/// Retell's word timings are seconds as JSON numbers.
fn seconds(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn amount(text: &str) -> Result<Value, HookError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Number(_)) => Ok(v),
        _ => Err(HookError::BadAmount(text.to_owned())),
    }
}

fn call_cost(end: &CallEnd) -> Result<Option<Value>, HookError> {
    let Some(combined) = &end.combined_cost_cents else {
        return Ok(None);
    };
    let products = end
        .product_costs
        .iter()
        .map(|p| {
            Ok(json!({
                "product": p.product,
                "cost": amount(&p.cost_cents)?,
                "unit_price": amount(&p.unit_price_cents)?,
                "is_transfer_leg_cost": false,
            }))
        })
        .collect::<Result<Vec<_>, HookError>>()?;
    let mut cost = json!({
        "product_costs": products,
        "combined_cost": amount(combined)?,
        // Retell bills whole seconds.
        "total_duration_seconds": end.duration_ms.div_ceil(1000),
    });
    if let Some(unit) = &end.total_duration_unit_price_cents {
        cost["total_duration_unit_price"] = amount(unit)?;
    }
    Ok(Some(cost))
}

// ---------------------------------------------------------------------------------------
// HTTP

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/create-agent", post(create_agent))
        .route("/update-agent/{agent_id}", patch(update_agent))
        .route("/get-agent/{agent_id}", get(get_agent))
        .route("/delete-agent/{agent_id}", delete(delete_agent))
        .route("/v2/list-agents", get(list_agents))
        .route("/create-retell-llm", post(create_llm))
        .route("/update-retell-llm/{llm_id}", patch(update_llm))
        .route("/get-retell-llm/{llm_id}", get(get_llm))
        .route("/delete-retell-llm/{llm_id}", delete(delete_llm))
        .route("/v2/create-phone-call", post(create_phone_call))
        .route("/v2/create-web-call", post(create_web_call))
        .route("/v2/get-call/{call_id}", get(get_call))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(shared)
}

/// Retell's error body.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"status": "error", "message": message});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn injected_error(status: StatusCode) -> Response {
    let message = match status.as_u16() {
        400 => MSG_BAD_REQUEST,
        401 => MSG_UNAUTHORIZED,
        402 => "Trial has ended, please add payment method.",
        403 => "Forbidden",
        422 => MSG_NOT_FOUND_ASSET,
        429 => MSG_RATE_LIMITED,
        500..=599 => MSG_INTERNAL,
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    error(status, message)
}

/// A refusal in Retell's error shape, small enough for helpers to return by value.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

fn ok(status: StatusCode, object: &Map<String, Value>) -> Response {
    let body = Value::Object(object.clone()).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_request(message: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: message.to_owned(),
    }
}

fn not_found() -> Refusal {
    Refusal {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: MSG_NOT_FOUND_ASSET.to_owned(),
    }
}

/// The workspace of the bearer key, or Retell's 401.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Refusal> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|k| !k.is_empty());
    let mut inner = shared.lock();
    let name = key
        .and_then(|k| inner.workspace_of_key(k))
        .ok_or_else(|| Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: MSG_UNAUTHORIZED.to_owned(),
        })?;
    let limit = inner.rate_limit;
    if let (Some((requests, window)), Some(ws)) = (limit, inner.workspaces.get_mut(&name)) {
        let now = Instant::now();
        while ws
            .hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            ws.hits.pop_front();
        }
        if ws.hits.len() >= requests {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: MSG_RATE_LIMITED.to_owned(),
            });
        }
        ws.hits.push_back(now);
    }
    Ok(name)
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_request(MSG_BAD_REQUEST)),
    }
}

fn reject_read_only(body: &Map<String, Value>, read_only: &[&str]) -> Result<(), Refusal> {
    match read_only.iter().find(|k| body.contains_key(**k)) {
        Some(k) => Err(bad_request(&format!("{k} is read only"))),
        None => Ok(()),
    }
}

fn check_string(body: &Map<String, Value>, key: &str) -> Result<(), Refusal> {
    match body.get(key) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(bad_request(&format!("{key} must be a string"))),
    }
}

fn check_enum(body: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(bad_request(&format!(
            "{key} must be one of {}",
            allowed.join(", ")
        ))),
    }
}

fn check_u64(body: &Map<String, Value>, key: &str, min: u64, max: u64) -> Result<(), Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| (min..=max).contains(&n)) => Ok(()),
        Some(_) => Err(bad_request(&format!(
            "{key} must be an integer between {min} and {max}"
        ))),
    }
}

fn check_agent(body: &Map<String, Value>, ws: &Workspace) -> Result<(), Refusal> {
    reject_read_only(body, READ_ONLY_AGENT)?;
    if let Some(engine) = body.get("response_engine") {
        let Some(engine) = engine.as_object() else {
            return Err(bad_request("response_engine must be an object"));
        };
        let id = |key: &str| {
            engine
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        match engine.get("type").and_then(Value::as_str) {
            Some("retell-llm") => match id("llm_id") {
                Some(llm_id) if ws.llms.contains_key(llm_id) => {}
                Some(_) => return Err(not_found()),
                None => return Err(bad_request("response_engine.llm_id is required")),
            },
            Some("custom-llm") if id("llm_websocket_url").is_some() => {}
            Some("conversation-flow") if id("conversation_flow_id").is_some() => {}
            _ => return Err(bad_request("response_engine is invalid")),
        }
    }
    for key in [
        "voice_id",
        "agent_name",
        "language",
        "webhook_url",
        "post_call_analysis_model",
    ] {
        check_string(body, key)?;
    }
    if matches!(body.get("voice_id"), Some(Value::Null)) {
        return Err(bad_request("voice_id is required"));
    }
    check_enum(body, "data_storage_setting", DATA_STORAGE_SETTINGS)?;
    check_u64(
        body,
        "max_call_duration_ms",
        MAX_CALL_DURATION_RANGE.0,
        MAX_CALL_DURATION_RANGE.1,
    )?;
    check_u64(
        body,
        "end_call_after_silence_ms",
        MIN_END_CALL_AFTER_SILENCE_MS,
        u64::MAX,
    )?;
    check_u64(body, "webhook_timeout_ms", 1, u64::MAX)?;
    match body.get("webhook_events") {
        None | Some(Value::Null) => {}
        Some(Value::Array(events))
            if events
                .iter()
                .all(|e| e.as_str().is_some_and(|e| WEBHOOK_EVENTS.contains(&e))) => {}
        Some(_) => return Err(bad_request("webhook_events holds an unknown event")),
    }
    match body.get("post_call_analysis_data") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                check_analysis_item(item)?;
            }
        }
        Some(_) => return Err(bad_request("post_call_analysis_data must be an array")),
    }
    Ok(())
}

fn check_analysis_item(item: &Value) -> Result<(), Refusal> {
    let Some(item) = item.as_object() else {
        return Err(bad_request("post_call_analysis_data items must be objects"));
    };
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    if !ANALYSIS_TYPES.contains(&kind) {
        return Err(bad_request("post_call_analysis_data type is invalid"));
    }
    if item
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(bad_request("post_call_analysis_data name is required"));
    }
    if kind == "enum"
        && item
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        return Err(bad_request("post_call_analysis_data enum needs choices"));
    }
    Ok(())
}

fn check_llm(body: &Map<String, Value>) -> Result<(), Refusal> {
    reject_read_only(body, READ_ONLY_LLM)?;
    for key in ["general_prompt", "begin_message", "starting_state"] {
        check_string(body, key)?;
    }
    check_enum(body, "model", MODELS)?;
    check_enum(body, "start_speaker", &["user", "agent"])?;
    match body.get("model_temperature") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)) => {}
        Some(_) => return Err(bad_request("model_temperature must be between 0 and 1")),
    }
    match body.get("default_dynamic_variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(vars)) if vars.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(bad_request(
                "default_dynamic_variables must map names to strings",
            ))
        }
    }
    match body.get("knowledge_base_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => {}
        Some(_) => return Err(bad_request("knowledge_base_ids must be strings")),
    }
    Ok(())
}

/// Applies a partial body: `null` resets a field to Retell's default.
fn merge(target: &mut Map<String, Value>, body: Map<String, Value>, defaults: &Map<String, Value>) {
    for (key, value) in body {
        if value.is_null() {
            match defaults.get(&key) {
                Some(default) => target.insert(key, default.clone()),
                None => target.remove(&key),
            };
        } else {
            target.insert(key, value);
        }
    }
    target.insert("last_modification_timestamp".into(), json!(now_ms()));
}

fn agent_defaults() -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("language".into(), json!("en-US"));
    d.insert("data_storage_setting".into(), json!("everything"));
    d.insert("max_call_duration_ms".into(), json!(3_600_000));
    d.insert("end_call_after_silence_ms".into(), json!(600_000));
    d.insert("webhook_timeout_ms".into(), json!(10_000));
    d
}

fn llm_defaults() -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("model".into(), json!(DEFAULT_MODEL));
    d.insert("model_temperature".into(), json!(0));
    d.insert("start_speaker".into(), json!("agent"));
    d
}

async fn create_agent(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    let Some(ws) = inner.workspaces.get_mut(&ws_name) else {
        return error(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED);
    };
    if let Err(r) = check_agent(&body, ws) {
        return r.into_response();
    }
    if !body.contains_key("response_engine") {
        return bad_request("response_engine is required").into_response();
    }
    if body
        .get("voice_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return bad_request("voice_id is required").into_response();
    }
    let mut agent = agent_defaults();
    let agent_id = new_id("agent_");
    agent.insert("agent_id".into(), json!(agent_id));
    agent.insert("version".into(), json!(0));
    agent.insert("is_published".into(), json!(false));
    merge(&mut agent, body, &agent_defaults());
    ws.agents.insert(agent_id, agent.clone());
    ok(StatusCode::CREATED, &agent)
}

async fn update_agent(
    State(shared): State<Arc<Shared>>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    let Some(ws) = inner.workspaces.get_mut(&ws_name) else {
        return error(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED);
    };
    if !ws.agents.contains_key(&agent_id) {
        return not_found().into_response();
    }
    if let Err(r) = check_agent(&body, ws) {
        return r.into_response();
    }
    if matches!(body.get("response_engine"), Some(Value::Null)) {
        return bad_request("response_engine is required").into_response();
    }
    let Some(agent) = ws.agents.get_mut(&agent_id) else {
        return not_found().into_response();
    };
    merge(agent, body, &agent_defaults());
    ok(StatusCode::OK, agent)
}

async fn get_agent(
    State(shared): State<Arc<Shared>>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let inner = shared.lock();
    match inner
        .workspaces
        .get(&ws_name)
        .and_then(|w| w.agents.get(&agent_id))
    {
        Some(agent) => ok(StatusCode::OK, agent),
        None => not_found().into_response(),
    }
}

async fn delete_agent(
    State(shared): State<Arc<Shared>>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    match inner
        .workspaces
        .get_mut(&ws_name)
        .and_then(|w| w.agents.remove(&agent_id))
    {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found().into_response(),
    }
}

async fn list_agents(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let inner = shared.lock();
    let agents: Vec<Value> = inner
        .workspaces
        .get(&ws_name)
        .map(|w| w.agents.values().cloned().map(Value::Object).collect())
        .unwrap_or_default();
    let body = Value::Array(agents).to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn create_llm(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_llm(&body) {
        return r.into_response();
    }
    let mut inner = shared.lock();
    let Some(ws) = inner.workspaces.get_mut(&ws_name) else {
        return error(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED);
    };
    let mut llm = llm_defaults();
    let llm_id = new_id("llm_");
    llm.insert("llm_id".into(), json!(llm_id));
    llm.insert("version".into(), json!(0));
    llm.insert("is_published".into(), json!(false));
    merge(&mut llm, body, &llm_defaults());
    ws.llms.insert(llm_id, llm.clone());
    ok(StatusCode::CREATED, &llm)
}

async fn update_llm(
    State(shared): State<Arc<Shared>>,
    Path(llm_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    let Some(llm) = inner
        .workspaces
        .get_mut(&ws_name)
        .and_then(|w| w.llms.get_mut(&llm_id))
    else {
        return not_found().into_response();
    };
    if let Err(r) = check_llm(&body) {
        return r.into_response();
    }
    merge(llm, body, &llm_defaults());
    ok(StatusCode::OK, llm)
}

async fn get_llm(
    State(shared): State<Arc<Shared>>,
    Path(llm_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let inner = shared.lock();
    match inner
        .workspaces
        .get(&ws_name)
        .and_then(|w| w.llms.get(&llm_id))
    {
        Some(llm) => ok(StatusCode::OK, llm),
        None => not_found().into_response(),
    }
}

async fn delete_llm(
    State(shared): State<Arc<Shared>>,
    Path(llm_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    match inner
        .workspaces
        .get_mut(&ws_name)
        .and_then(|w| w.llms.remove(&llm_id))
    {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found().into_response(),
    }
}

fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Copies the optional per-call fields Retell keeps on the call object.
fn call_extras(call: &mut Map<String, Value>, body: &Map<String, Value>) -> Result<(), Refusal> {
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => {
            call.insert("metadata".into(), v.clone());
        }
        Some(_) => return Err(bad_request("metadata must be an object")),
    }
    match body.get("retell_llm_dynamic_variables") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(vars)) if vars.values().all(Value::is_string) => {
            call.insert("retell_llm_dynamic_variables".into(), v.clone());
        }
        Some(_) => {
            return Err(bad_request(
                "retell_llm_dynamic_variables must map names to strings",
            ))
        }
    }
    Ok(())
}

async fn create_phone_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let number = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (from, to) = (number("from_number"), number("to_number"));
    let lax = body
        .get("ignore_e164_validation")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if from.is_empty() || to.is_empty() {
        return bad_request("from_number and to_number are required").into_response();
    }
    let valid = lax || (is_e164(&from) && is_e164(&to));
    if !valid {
        return bad_request("from_number and to_number must be E.164").into_response();
    }
    let mut inner = shared.lock();
    let Some(ws) = inner.workspaces.get_mut(&ws_name) else {
        return error(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED);
    };
    let agent_id = match body.get("override_agent_id").and_then(Value::as_str) {
        Some(id) => Some(id.to_owned()),
        None => ws.numbers.get(&from).cloned(),
    };
    let Some(agent) = agent_id.and_then(|id| ws.agents.get(&id)) else {
        return not_found().into_response();
    };
    let mut call = new_call(agent, "phone_call");
    call.insert("direction".into(), json!("outbound"));
    call.insert("from_number".into(), json!(from));
    call.insert("to_number".into(), json!(to));
    if let Err(r) = call_extras(&mut call, &body) {
        return r.into_response();
    }
    ws.calls
        .insert(string_field(&call, "call_id"), call.clone());
    ok(StatusCode::CREATED, &call)
}

async fn create_web_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let body = match json_object(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(agent_id) = body.get("agent_id").and_then(Value::as_str) else {
        return bad_request("agent_id is required").into_response();
    };
    let mut inner = shared.lock();
    let Some(ws) = inner.workspaces.get_mut(&ws_name) else {
        return error(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED);
    };
    let Some(agent) = ws.agents.get(agent_id) else {
        return not_found().into_response();
    };
    let mut call = new_call(agent, "web_call");
    // A web call's room token, which a browser uses to join.
    call.insert(
        "access_token".into(),
        json!(uuid::Uuid::new_v4().simple().to_string()),
    );
    if let Err(r) = call_extras(&mut call, &body) {
        return r.into_response();
    }
    ws.calls
        .insert(string_field(&call, "call_id"), call.clone());
    ok(StatusCode::CREATED, &call)
}

async fn get_call(
    State(shared): State<Arc<Shared>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ws_name = match authorize(&shared, &headers) {
        Ok(ws) => ws,
        Err(r) => return r.into_response(),
    };
    let inner = shared.lock();
    match inner
        .workspaces
        .get(&ws_name)
        .and_then(|w| w.calls.get(&call_id))
    {
        Some(call) => ok(StatusCode::OK, call),
        None => not_found().into_response(),
    }
}
