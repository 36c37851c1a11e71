//! Fake OpenRouter (PROVIDERS.md §6): `POST /api/v1/chat/completions`, `GET /api/v1/models`,
//! `GET /api/v1/generation?id=` and `GET /api/v1/key` under a loopback base URL.
//!
//! Fidelity choices worth knowing:
//! - auth is `Authorization: Bearer <key>`; no header is 401 "No auth credentials found", an
//!   unknown key 401 "User not found." (OpenRouter's wording); `/models` needs no key, as there;
//! - every error is `{"error":{"code","message","metadata"?}}` with the HTTP status equal to
//!   `code`, except errors after generation started, which come back as HTTP 200: either the
//!   body carries only `error` ([`Reply::ErrorInBody`]) or the choice ends with
//!   `finish_reason: "error"` next to partial content ([`Reply::ErrorAfterStart`]);
//! - `usage` carries `prompt_tokens`, `completion_tokens`, `total_tokens` and `cost`; tokens are
//!   whitespace-separated words (deterministic, so tests can predict them) and `cost` is computed
//!   exactly from the model's decimal-string prices, never through float arithmetic;
//! - `response_format: {type: "json_schema"}` is honoured: without a scripted reply the model
//!   answers a JSON document generated from the schema (required properties, enums, consts,
//!   minimums), as a string in `choices[0].message.content`;
//! - fallbacks (`models: [...]`) are tried in order when a model is marked down, and the answer
//!   names the model that answered; `max_tokens` truncates (finish_reason `length`) and `stop`
//!   sequences cut the content;
//! - streaming is not modelled: `stream: true` is refused with 400.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::harness::{loopback, Failure, Harness, Recorded, Running};

pub const COMPLETIONS_PATH: &str = "/api/v1/chat/completions";
pub const MODELS_PATH: &str = "/api/v1/models";
pub const GENERATION_PATH: &str = "/api/v1/generation";
pub const KEY_PATH: &str = "/api/v1/key";

/// The key a default fake accepts.
pub const TEST_API_KEY: &str = "sk-or-v1-fake0000000000000000000000000000000000000000000000000000";

/// A model the fake lists and serves; prices are USD per token as decimal strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeModel {
    pub id: String,
    pub name: String,
    pub context_length: u64,
    pub prompt: String,
    pub completion: String,
    pub request: String,
    /// Whether the model's providers take `response_format` / `structured_outputs`.
    pub structured_outputs: bool,
}

impl FakeModel {
    pub fn new(id: &str, prompt: &str, completion: &str) -> Self {
        FakeModel {
            id: id.to_owned(),
            name: id.to_owned(),
            context_length: 128_000,
            prompt: prompt.to_owned(),
            completion: completion.to_owned(),
            request: "0".to_owned(),
            structured_outputs: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FakeOpenRouterConfig {
    /// Keys answered as valid.
    pub api_keys: Vec<String>,
    pub models: Vec<FakeModel>,
}

impl Default for FakeOpenRouterConfig {
    fn default() -> Self {
        let mut sonar = FakeModel::new("perplexity/sonar", "0.000001", "0.000001");
        sonar.request = "0.005".to_owned();
        sonar.structured_outputs = false;
        let mut free = FakeModel::new("meta-llama/llama-3.1-8b-instruct:free", "0", "0");
        free.structured_outputs = false;
        FakeOpenRouterConfig {
            api_keys: vec![TEST_API_KEY.to_owned()],
            models: vec![
                FakeModel::new("openai/gpt-4o-mini", "0.00000015", "0.0000006"),
                FakeModel::new("anthropic/claude-3.5-sonnet", "0.000003", "0.000015"),
                sonar,
                free,
            ],
        }
    }
}

/// A scripted answer for the next completion of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The assistant says `content`, finishing with `finish_reason` ("stop", "length", ...).
    Content {
        content: String,
        finish_reason: String,
    },
    /// HTTP 200 whose body is only `{"error": {...}}`: the upstream failed once processing began.
    ErrorInBody { code: u16, message: String },
    /// HTTP 200 with `partial` content, `finish_reason: "error"` and the error on the choice.
    ErrorAfterStart {
        partial: String,
        code: u16,
        message: String,
    },
}

/// A generation as `/generation` reports it.
#[derive(Clone, Debug, PartialEq)]
struct Generation {
    id: String,
    model: String,
    created_at: String,
    tokens_prompt: u64,
    tokens_completion: u64,
    total_cost: String,
    finish_reason: String,
}

struct State_ {
    config: FakeOpenRouterConfig,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    scripted: HashMap<String, VecDeque<Reply>>,
    down: HashSet<String>,
    out_of_credits: bool,
    generations: BTreeMap<String, Generation>,
    next_generation: u64,
}

type Shared = Arc<State_>;

impl State_ {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake OpenRouter; it stops when dropped.
pub struct FakeOpenRouter {
    shared: Shared,
    harness: Harness,
    running: Running,
}

impl FakeOpenRouter {
    /// Starts on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound: no test that needs this fake can run then.
    pub async fn start(config: FakeOpenRouterConfig) -> FakeOpenRouter {
        match Self::try_start(config).await {
            Ok(fake) => fake,
            Err(err) => panic!("fake openrouter failed to start: {err}"),
        }
    }

    pub async fn try_start(config: FakeOpenRouterConfig) -> io::Result<FakeOpenRouter> {
        Self::try_start_on(loopback().await?, config)
    }

    /// Serves on a listener the caller bound (the sandbox uses a fixed port).
    pub fn try_start_on(
        listener: TcpListener,
        config: FakeOpenRouterConfig,
    ) -> io::Result<FakeOpenRouter> {
        let shared = Arc::new(State_ {
            config,
            inner: Mutex::new(Inner::default()),
        });
        let router = Router::new()
            .route(COMPLETIONS_PATH, post(completions))
            .route(MODELS_PATH, get(models))
            .route(GENERATION_PATH, get(generation))
            .route(KEY_PATH, get(key))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
            .with_state(shared.clone());
        let harness = Harness::new(&[]);
        let running = harness.serve(
            listener,
            router,
            Arc::new(|status: StatusCode| {
                error(status, status.canonical_reason().unwrap_or("Error"))
            }),
        )?;
        Ok(FakeOpenRouter {
            shared,
            harness,
            running,
        })
    }

    /// e.g. `http://127.0.0.1:PORT/api/v1`, the counterpart of `https://openrouter.ai/api/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/api/v1", self.running.base_url)
    }

    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.harness.requests()
    }

    /// Completion requests received so far.
    pub fn completion_requests(&self) -> Vec<Recorded> {
        self.harness.requests_to("POST", COMPLETIONS_PATH)
    }

    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.harness.fail_next(n, failure);
    }

    pub fn fail_next_at(&self, path: &str, n: usize, failure: Failure) {
        self.harness.fail_next_at(path, n, failure);
    }

    /// The next completion of `model` answers `content` (for a JSON-schema request, the JSON
    /// text the model "wrote", valid or not).
    pub fn respond_with(&self, model: &str, content: &str) {
        self.script(
            model,
            Reply::Content {
                content: content.to_owned(),
                finish_reason: "stop".to_owned(),
            },
        );
    }

    /// Queues any scripted reply for `model`.
    pub fn script(&self, model: &str, reply: Reply) {
        self.shared
            .lock()
            .scripted
            .entry(model.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// Marks a model down (502 unless a fallback answers) or up again.
    pub fn set_model_down(&self, model: &str, down: bool) {
        let mut inner = self.shared.lock();
        if down {
            inner.down.insert(model.to_owned());
        } else {
            inner.down.remove(model);
        }
    }

    /// With `true`, completions answer 402 as for a key without credits.
    pub fn set_out_of_credits(&self, out: bool) {
        self.shared.lock().out_of_credits = out;
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    error_with(status, message, None)
}

fn error_with(status: StatusCode, message: &str, metadata: Option<Value>) -> Response {
    let mut error = json!({"code": status.as_u16(), "message": message});
    if let Some(metadata) = metadata {
        error["metadata"] = metadata;
    }
    (status, Json(json!({ "error": error }))).into_response()
}

/// A request-level error before it is rendered: small, so `Result`s that carry it stay small.
struct Refusal {
    status: StatusCode,
    message: String,
    metadata: Option<Value>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_with(self.status, &self.message, self.metadata)
    }
}

fn refuse(status: StatusCode, message: &str) -> Refusal {
    Refusal {
        status,
        message: message.to_owned(),
        metadata: None,
    }
}

fn check_key(shared: &State_, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "No auth credentials found",
        ));
    };
    let key = value.strip_prefix("Bearer ").unwrap_or_default().trim();
    if key.is_empty() {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "No auth credentials found",
        ));
    }
    if shared.config.api_keys.iter().any(|k| k == key) {
        Ok(())
    } else {
        Err(refuse(StatusCode::UNAUTHORIZED, "User not found."))
    }
}

async fn models(State(shared): State<Shared>) -> Response {
    let data: Vec<Value> = shared.config.models.iter().map(model_json).collect();
    Json(json!({ "data": data })).into_response()
}

fn model_json(m: &FakeModel) -> Value {
    let mut supported = vec!["max_tokens", "temperature", "stop", "seed"];
    if m.structured_outputs {
        supported.extend(["response_format", "structured_outputs"]);
    }
    let (author, _) = m.id.split_once('/').unwrap_or((m.id.as_str(), ""));
    json!({
        "id": m.id,
        "canonical_slug": m.id,
        "hugging_face_id": "",
        "name": m.name,
        "created": 1_721_260_800,
        "description": format!("{} served by the fake", m.name),
        "context_length": m.context_length,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": author,
            "instruct_type": null
        },
        "pricing": {
            "prompt": m.prompt,
            "completion": m.completion,
            "request": m.request,
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0"
        },
        "top_provider": {
            "context_length": m.context_length,
            "max_completion_tokens": 16_384,
            "is_moderated": false
        },
        "per_request_limits": null,
        "supported_parameters": supported
    })
}

async fn key(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let inner = shared.lock();
    let mut usage = Decimal::ZERO;
    for g in inner.generations.values() {
        usage = usage.add(Decimal::parse(&g.total_cost).unwrap_or(Decimal::ZERO));
    }
    Json(json!({"data": {
        "label": "sk-or-v1-fak...000",
        "limit": null,
        "limit_remaining": null,
        "limit_reset": null,
        "usage": usage.to_json(),
        "is_free_tier": false,
        "is_provisioning_key": false,
        "expires_at": null
    }}))
    .into_response()
}

async fn generation(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let Some(id) = query.get("id") else {
        return error(StatusCode::BAD_REQUEST, "id is required");
    };
    let inner = shared.lock();
    let Some(g) = inner.generations.get(id) else {
        return error(StatusCode::NOT_FOUND, "Generation not found");
    };
    Json(json!({"data": {
        "id": g.id,
        "total_cost": Decimal::parse(&g.total_cost).unwrap_or(Decimal::ZERO).to_json(),
        "cache_discount": null,
        "upstream_inference_cost": null,
        "created_at": g.created_at,
        "model": g.model,
        "provider_name": "Fake",
        "tokens_prompt": g.tokens_prompt,
        "tokens_completion": g.tokens_completion,
        "native_tokens_prompt": g.tokens_prompt,
        "native_tokens_completion": g.tokens_completion,
        "native_tokens_reasoning": 0,
        "native_tokens_cached": 0,
        "finish_reason": g.finish_reason,
        "latency": 1,
        "generation_time": 1,
        "streamed": false,
        "cancelled": false,
        "is_byok": false
    }}))
    .into_response()
}

async fn completions(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if let Err(refused) = check_key(&shared, &headers) {
        return refused.into_response();
    }
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid JSON body");
    };
    match complete(&shared, &req) {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

fn complete(shared: &State_, req: &Map<String, Value>) -> Result<Response, Refusal> {
    let bad = |m: &str| refuse(StatusCode::BAD_REQUEST, m);
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad("streaming is not modelled by this fake"));
    }
    let messages = match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(bad("Input required: specify \"prompt\" or \"messages\"")),
    };
    let mut prompt_tokens = 0u64;
    let mut last_user = String::new();
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let Some(content) = m.get("content").and_then(Value::as_str) else {
            return Err(bad("messages[].content must be a string"));
        };
        if !["system", "user", "assistant", "developer", "tool"].contains(&role) {
            return Err(bad("messages[].role is invalid"));
        }
        prompt_tokens += words(content).max(1);
        if role == "user" {
            content.clone_into(&mut last_user);
        }
    }
    let Some(primary) = req.get("model").and_then(Value::as_str) else {
        return Err(bad("model is required"));
    };
    let mut candidates = vec![primary.to_owned()];
    if let Some(Value::Array(fallbacks)) = req.get("models") {
        candidates.extend(
            fallbacks
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
    }
    for id in &candidates {
        if !shared.config.models.iter().any(|m| &m.id == id) {
            return Err(bad(&format!("{id} is not a valid model ID")));
        }
    }
    let schema = match req.get("response_format") {
        None | Some(Value::Null) => None,
        Some(format) => response_format_schema(format).map_err(|m| bad(&m))?,
    };
    let require_parameters = req
        .get("provider")
        .and_then(|p| p.get("require_parameters"))
        .and_then(Value::as_bool)
        == Some(true);
    let mut inner = shared.lock();
    if inner.out_of_credits {
        return Err(Refusal {
            status: StatusCode::PAYMENT_REQUIRED,
            message: "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
                .to_owned(),
            metadata: Some(json!({"limit_source": "openrouter_credits"})),
        });
    }
    let model = candidates
        .iter()
        .filter_map(|id| shared.config.models.iter().find(|m| &m.id == id))
        .find(|m| {
            !inner.down.contains(&m.id)
                && (schema.is_none() || !require_parameters || m.structured_outputs)
        })
        .cloned();
    let Some(model) = model else {
        if schema.is_some() && require_parameters {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "No endpoints found that can handle the requested parameters.",
            ));
        }
        return Err(Refusal {
            status: StatusCode::BAD_GATEWAY,
            message: format!("{primary} is temporarily unavailable"),
            metadata: Some(json!({"provider_name": "Fake", "raw": null})),
        });
    };
    let reply = inner
        .scripted
        .get_mut(&model.id)
        .and_then(VecDeque::pop_front)
        .unwrap_or_else(|| Reply::Content {
            content: match &schema {
                Some(Some(schema)) => example(schema).to_string(),
                Some(None) => json!({ "reply": last_user }).to_string(),
                None => last_user.clone(),
            },
            finish_reason: "stop".to_owned(),
        });
    inner.next_generation += 1;
    let id = format!(
        "gen-{}-fake{:08}",
        1_700_000_000 + inner.next_generation,
        inner.next_generation
    );
    let created = chrono::Utc::now();
    let (content, finish_reason, choice_error) = match reply {
        Reply::ErrorInBody { code, message } => {
            return Ok((
                StatusCode::OK,
                Json(json!({"error": {"code": code, "message": message}})),
            )
                .into_response());
        }
        Reply::Content {
            content,
            finish_reason,
        } => (content, finish_reason, None),
        Reply::ErrorAfterStart {
            partial,
            code,
            message,
        } => (
            partial,
            "error".to_owned(),
            Some(json!({"code": code, "message": message})),
        ),
    };
    let (content, finish_reason) = shape_output(req, content, finish_reason);
    let completion_tokens = words(&content);
    let cost = price(&model.prompt)
        .mul(prompt_tokens)
        .add(price(&model.completion).mul(completion_tokens))
        .add(price(&model.request));
    inner.generations.insert(
        id.clone(),
        Generation {
            id: id.clone(),
            model: model.id.clone(),
            created_at: created.to_rfc3339(),
            tokens_prompt: prompt_tokens,
            tokens_completion: completion_tokens,
            total_cost: cost.to_string(),
            finish_reason: finish_reason.clone(),
        },
    );
    let mut choice = json!({
        "index": 0,
        "logprobs": null,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "message": {"role": "assistant", "content": content, "refusal": null}
    });
    if let Some(e) = choice_error {
        choice["error"] = e;
    }
    let body = json!({
        "id": id,
        "provider": "Fake",
        "model": model.id,
        "object": "chat.completion",
        "created": created.timestamp(),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": COST_PLACEHOLDER,
            "is_byok": false,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "cost_details": {"upstream_inference_cost": null},
            "completion_tokens_details": {"reasoning_tokens": 0}
        }
    });
    // OpenRouter writes the cost as a plain decimal JSON number ("cost":0.00000255); serde_json
    // would print the f64 as 2.55e-6, so the exact text is put in by hand.
    let text = body
        .to_string()
        .replace(&format!("\"{COST_PLACEHOLDER}\""), &cost.to_string());
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

const COST_PLACEHOLDER: &str = "__fake_openrouter_cost__";

/// `Some(Some(schema))` for json_schema, `Some(None)` for json_object, `None` for text;
/// refuses what OpenRouter refuses.
fn response_format_schema(format: &Value) -> Result<Option<Option<Value>>, String> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(None)),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .ok_or("response_format.json_schema is required")?;
            let name = spec.get("name").and_then(Value::as_str).unwrap_or_default();
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(
                    "response_format.json_schema.name must match ^[a-zA-Z0-9_-]{1,64}$".into(),
                );
            }
            match spec.get("schema") {
                Some(schema @ Value::Object(_)) => Ok(Some(Some(schema.clone()))),
                _ => Err("response_format.json_schema.schema must be an object".into()),
            }
        }
        _ => Err("response_format.type must be json_schema, json_object or text".into()),
    }
}

/// Applies `stop` and `max_tokens` as a model does.
fn shape_output(
    req: &Map<String, Value>,
    mut content: String,
    mut finish: String,
) -> (String, String) {
    if let Some(Value::Array(stops)) = req.get("stop") {
        for stop in stops
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if let Some(at) = content.find(stop) {
                content.truncate(at);
                finish = "stop".to_owned();
            }
        }
    }
    if let Some(max) = req.get("max_tokens").and_then(Value::as_u64) {
        if max > 0 && words(&content) > max {
            let kept: Vec<&str> = content
                .split_whitespace()
                .take(usize::try_from(max).unwrap_or(usize::MAX))
                .collect();
            content = kept.join(" ");
            finish = "length".to_owned();
        }
    }
    (content, finish)
}

fn words(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

fn price(text: &str) -> Decimal {
    Decimal::parse(text).unwrap_or(Decimal::ZERO)
}

/// A JSON value that satisfies the common keywords of `schema`, as a compliant model would write.
pub fn example(schema: &Value) -> Value {
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if let Some(first) = options.first() {
            return first.clone();
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = schema.get(key) {
            if let Some(first) = options.first() {
                return example(first);
            }
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, sub) in props {
                    out.insert(name.clone(), example(sub));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let item = schema.get("items").map(example).unwrap_or(Value::Null);
            Value::Array((0..n).map(|_| item.clone()).collect())
        }
        "integer" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => schema.get("minimum").cloned().unwrap_or_else(|| json!(1.5)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            let base = match schema.get("format").and_then(Value::as_str) {
                Some("email") => "ann@example.com".to_owned(),
                Some("date-time") => "2026-01-02T03:04:05Z".to_owned(),
                Some("date") => "2026-01-02".to_owned(),
                _ => "example".to_owned(),
            };
            let pad = usize::try_from(min).unwrap_or(0).saturating_sub(base.len());
            json!(format!("{base}{}", "x".repeat(pad)))
        }
    }
}

/// Exact decimal with 18 fractional digits: enough for per-token prices times token counts,
/// and no float ever touches a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decimal(i128);

const SCALE: u32 = 18;

impl Decimal {
    const ZERO: Decimal = Decimal(0);

    fn parse(text: &str) -> Option<Decimal> {
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty()
            || frac.len() > SCALE as usize
            || !whole
                .chars()
                .chain(frac.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let frac_value: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let frac_scaled =
            frac_value.checked_mul(10i128.pow(SCALE - u32::try_from(frac.len()).ok()?))?;
        let value = whole
            .checked_mul(10i128.pow(SCALE))?
            .checked_add(frac_scaled)?;
        Some(Decimal(if neg { -value } else { value }))
    }

    fn mul(self, n: u64) -> Decimal {
        Decimal(self.0.saturating_mul(i128::from(n)))
    }

    fn add(self, other: Decimal) -> Decimal {
        Decimal(self.0.saturating_add(other.0))
    }

    /// The nearest JSON number (serde_json may print it with an exponent), for the fields
    /// nothing bills from (`/key`, `/generation`); completions carry the exact text.
    fn to_json(self) -> Value {
        let text = self.to_string();
        text.parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or(Value::Null)
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = 10i128.pow(SCALE);
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / scale.unsigned_abs();
        let frac = abs % scale.unsigned_abs();
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:018}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        let p = Decimal::parse("0.00000015").expect("price");
        assert_eq!(p.mul(1000).to_string(), "0.00015");
        let total = p
            .mul(3)
            .add(Decimal::parse("0.0000006").expect("price").mul(2));
        assert_eq!(total.to_string(), "0.00000165");
        assert_eq!(Decimal::parse("0").expect("zero").to_json(), json!(0));
        assert!(Decimal::parse("1e-5").is_none());
    }

    #[test]
    fn examples_follow_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "minLength": 10},
            "kind": {"enum": ["a", "b"]},
            "n": {"type": "integer", "minimum": 3},
            "tags": {"type": "array", "items": {"type": "string"}}
        }});
        let v = example(&schema);
        assert_eq!(v["kind"], "a");
        assert_eq!(v["n"], 3);
        assert!(v["name"].as_str().is_some_and(|s| s.len() >= 10));
        assert_eq!(v["tags"], json!(["example"]));
    }
}
