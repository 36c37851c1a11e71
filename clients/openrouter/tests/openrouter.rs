//! The OpenRouter adapter against the OpenRouter fake over loopback HTTP: only the base URL
//! differs from production.
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::harness::Failure;
use maxai_fakes::openrouter::{
    FakeOpenRouter, FakeOpenRouterConfig, Reply, COMPLETIONS_PATH, MODELS_PATH, TEST_API_KEY,
};
use maxai_kit::auth::Principal;
use maxai_openrouter::convert::{json_to_struct, struct_to_json};
use maxai_openrouter::{OpenRouterAdapter, OpenRouterConfig};
use maxai_proto::maxai::common::v1::{CallContext, Money};
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::llm::v1::llm_service_server::LlmService;
use maxai_proto::maxai::ports::llm::v1::{
    ChatMessage, EstimateCostRequest, FinishReason, GenerateStructuredRequest, GenerateTextRequest,
    Role,
};
use serde_json::{json, Value};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/openrouter-main";

struct Env {
    fake: FakeOpenRouter,
    creds: Arc<StaticCredentials>,
    adapter: OpenRouterAdapter,
}

fn credential(key: &str) -> ConnectionCredential {
    ConnectionCredential {
        connection: CONN.to_owned(),
        provider: ConnectionProvider::Openrouter as i32,
        api_key: key.to_owned(),
        ..Default::default()
    }
}

fn http() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(2),
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

async fn env_with(tweak: impl FnOnce(&mut OpenRouterConfig)) -> Env {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let creds = StaticCredentials::new();
    creds.insert(credential(TEST_API_KEY));
    let mut config = OpenRouterConfig {
        base_url: fake.base_url(),
        ..OpenRouterConfig::default()
    };
    tweak(&mut config);
    let adapter = OpenRouterAdapter::with_http(config, http(), creds.clone());
    Env {
        fake,
        creds,
        adapter,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn req<T>(message: T, tenant: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.extensions_mut().insert(Principal {
        subject: format!("tenants/{tenant}/users/ann"),
        tenant: tenant.to_owned(),
        token_id: "tok-1".into(),
        expires_at: i64::MAX,
        api_key: String::new(),
    });
    r
}

fn ctx() -> Option<CallContext> {
    Some(CallContext {
        connection: CONN.to_owned(),
        idempotency_key: "exec-1/step-1".into(),
    })
}

fn msg(role: Role, content: &str) -> ChatMessage {
    ChatMessage {
        role: role as i32,
        content: content.to_owned(),
    }
}

fn text_request(model: &str, user: &str) -> GenerateTextRequest {
    GenerateTextRequest {
        context: ctx(),
        model: model.to_owned(),
        messages: vec![msg(Role::System, "be brief"), msg(Role::User, user)],
        max_tokens: 0,
        temperature: None,
        stop: vec![],
        fallback_models: vec![],
    }
}

fn contact_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["name", "age"],
           "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}}})
}

fn structured_request(model: &str) -> GenerateStructuredRequest {
    GenerateStructuredRequest {
        context: ctx(),
        model: model.to_owned(),
        messages: vec![msg(Role::User, "extract the contact")],
        json_schema: json_to_struct(&contact_schema()),
        schema_name: "contact".into(),
        strict: true,
        max_tokens: 0,
        temperature: None,
        stop: vec![],
        fallback_models: vec![],
    }
}

fn usd(units: i64, nanos: i32) -> Money {
    Money {
        currency_code: "USD".into(),
        units,
        nanos,
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
async fn generate_text_returns_the_reply_with_exact_usage() {
    let env = env_with(|c| c.app_url = "https://maxai.example".into()).await;
    let mut request = text_request("openai/gpt-4o-mini", "hello there model");
    request.temperature = Some(0.7);
    request.max_tokens = 50;
    request.stop = vec!["STOP".into()];
    let reply = env
        .adapter
        .generate_text(req(request, "acme"))
        .await
        .expect("generate")
        .into_inner();
    assert_eq!(reply.text, "hello there model");
    assert_eq!(reply.finish_reason(), FinishReason::Stop);
    assert_eq!(reply.model, "openai/gpt-4o-mini");
    assert!(reply.generation_id.starts_with("gen-"));
    let usage = reply.usage.expect("usage");
    let meters: Vec<_> = usage
        .items
        .iter()
        .map(|i| (i.meter.as_str(), i.quantity))
        .collect();
    assert_eq!(meters, [("llm.tokens.input", 5), ("llm.tokens.output", 3)]);
    // 5 × 0.00000015 + 3 × 0.0000006 = 0.00000255 USD, exactly.
    assert_eq!(usage.provider_cost, Some(usd(0, 2550)));

    let sent = env.fake.completion_requests();
    assert_eq!(sent.len(), 1);
    let body = sent[0].json().expect("json body");
    assert_eq!(body["model"], "openai/gpt-4o-mini");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["stop"], json!(["STOP"]));
    assert_eq!(body["stream"], false);
    assert!(String::from_utf8_lossy(&sent[0].body).contains("\"temperature\":0.7"));
    assert_eq!(sent[0].header("x-title"), Some("MaxAI Platform"));
    assert_eq!(
        sent[0].header("http-referer"),
        Some("https://maxai.example")
    );
    assert!(!format!("{:?}", env.fake.requests()).contains(TEST_API_KEY));
}

#[tokio::test]
async fn fallbacks_answer_when_the_model_is_down() {
    let env = env().await;
    env.fake.set_model_down("openai/gpt-4o-mini", true);
    let mut request = text_request("openai/gpt-4o-mini", "hi");
    request.fallback_models = vec!["anthropic/claude-3.5-sonnet".into()];
    let reply = env
        .adapter
        .generate_text(req(request, "acme"))
        .await
        .expect("generate")
        .into_inner();
    assert_eq!(reply.model, "anthropic/claude-3.5-sonnet");
    let body = env.fake.completion_requests()[0].json().expect("json");
    assert_eq!(
        body["models"],
        json!(["openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"])
    );
}

#[tokio::test]
async fn an_error_after_generation_started_keeps_the_partial_text() {
    let env = env().await;
    env.fake.script(
        "openai/gpt-4o-mini",
        Reply::ErrorAfterStart {
            partial: "half an answer".into(),
            code: 502,
            message: "upstream cut".into(),
        },
    );
    let reply = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect("partial reply")
        .into_inner();
    assert_eq!(reply.finish_reason(), FinishReason::Error);
    assert_eq!(reply.text, "half an answer");
    assert_eq!(reply.usage.expect("usage").items[1].quantity, 3);

    env.fake.script(
        "openai/gpt-4o-mini",
        Reply::ErrorInBody {
            code: 502,
            message: "model crashed".into(),
        },
    );
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("error in body");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(provider_message(&err), "model crashed");
}

#[tokio::test]
async fn generate_structured_validates_the_reply_against_the_schema() {
    let env = env().await;
    let reply = env
        .adapter
        .generate_structured(req(structured_request("openai/gpt-4o-mini"), "acme"))
        .await
        .expect("structured")
        .into_inner();
    assert_eq!(
        struct_to_json(&reply.output.expect("output")),
        json!({"name": "example", "age": 18})
    );
    assert!(reply.usage.expect("usage").provider_cost.is_some());
    let body = env.fake.completion_requests()[0].json().expect("json");
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "contact");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"],
        contact_schema()
    );
    assert_eq!(body["provider"]["require_parameters"], true);

    env.fake
        .respond_with("openai/gpt-4o-mini", r#"{"name": "Ann", "age": 12}"#);
    let err = env
        .adapter
        .generate_structured(req(structured_request("openai/gpt-4o-mini"), "acme"))
        .await
        .expect_err("age below minimum");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(
        err.get_error_details().error_info().expect("info").reason,
        "PROVIDER_ERROR"
    );
    assert!(
        err.message().contains("does not match the schema"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("/age"), "{}", err.message());

    env.fake
        .respond_with("openai/gpt-4o-mini", "Sure! Here is the contact");
    let err = env
        .adapter
        .generate_structured(req(structured_request("openai/gpt-4o-mini"), "acme"))
        .await
        .expect_err("not JSON");
    assert_eq!(err.code(), Code::Unknown);
    assert!(err.message().contains("is not JSON"), "{}", err.message());

    env.fake.respond_with(
        "openai/gpt-4o-mini",
        "```json\n{\"name\": \"Ann\", \"age\": 40}\n```",
    );
    let reply = env
        .adapter
        .generate_structured(req(structured_request("openai/gpt-4o-mini"), "acme"))
        .await
        .expect("fenced JSON")
        .into_inner();
    assert_eq!(
        struct_to_json(&reply.output.expect("output")),
        json!({"name": "Ann", "age": 40})
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_any_completion() {
    let env = env().await;
    let mut bad = text_request("gpt-4o", "hi");
    bad.messages.push(msg(Role::Unspecified, "x"));
    bad.temperature = Some(3.0);
    let err = env
        .adapter
        .generate_text(req(bad, "acme"))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&err),
        ["model", "messages[2].role", "temperature"]
    );

    let err = env
        .adapter
        .generate_text(req(text_request("nope/not-a-model", "hi"), "acme"))
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["model"]);

    let err = env
        .adapter
        .generate_structured(req(structured_request("perplexity/sonar"), "acme"))
        .await
        .expect_err("no structured outputs");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(format!("{:?}", err.get_error_details().bad_request()).contains("structured outputs"));

    let mut schema_bad = structured_request("openai/gpt-4o-mini");
    schema_bad.json_schema = json_to_struct(&json!({"type": "array"}));
    schema_bad.schema_name = "bad name".into();
    let err = env
        .adapter
        .generate_structured(req(schema_bad, "acme"))
        .await
        .expect_err("bad schema");
    assert_eq!(
        violations(&err),
        ["schema_name", "json_schema", "json_schema"]
    );

    let mut no_schema = structured_request("openai/gpt-4o-mini");
    no_schema.json_schema = None;
    let err = env
        .adapter
        .generate_structured(req(no_schema, "acme"))
        .await
        .expect_err("no schema");
    assert_eq!(violations(&err), ["json_schema"]);

    let mut bad_context = text_request("openai/gpt-4o-mini", "hi");
    bad_context.context = Some(CallContext {
        connection: "connections/x".into(),
        idempotency_key: String::new(),
    });
    let err = env
        .adapter
        .generate_text(req(bad_context, "acme"))
        .await
        .expect_err("bad connection");
    assert_eq!(violations(&err), ["context.connection"]);

    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "other"))
        .await
        .expect_err("another tenant");
    assert_eq!(err.code(), Code::PermissionDenied);

    assert!(
        env.fake.completion_requests().is_empty(),
        "nothing was generated"
    );
}

#[tokio::test]
async fn another_providers_connection_is_refused() {
    let env = env().await;
    let mut twilio = credential(TEST_API_KEY);
    twilio.provider = ConnectionProvider::Twilio as i32;
    env.creds.insert(twilio);
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("wrong provider");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.fake.requests().is_empty());
}

#[tokio::test]
async fn estimate_cost_uses_the_cached_prices_exactly() {
    let env = env().await;
    let estimate = |model: &str, input: i64, output: i64| EstimateCostRequest {
        context: ctx(),
        model: model.to_owned(),
        input_tokens: input,
        output_tokens: output,
    };
    let e = env
        .adapter
        .estimate_cost(req(estimate("openai/gpt-4o-mini", 1000, 500), "acme"))
        .await
        .expect("estimate")
        .into_inner();
    assert_eq!(e.input_cost, Some(usd(0, 150_000)));
    assert_eq!(e.output_cost, Some(usd(0, 300_000)));
    assert_eq!(e.estimated_cost, Some(usd(0, 450_000)));
    let pricing = e.pricing.expect("pricing");
    assert_eq!(pricing.input_token_price, Some(usd(0, 150)));
    assert_eq!(pricing.output_token_price, Some(usd(0, 600)));

    let e = env
        .adapter
        .estimate_cost(req(estimate("perplexity/sonar", 1_000_000, 0), "acme"))
        .await
        .expect("estimate with a request price")
        .into_inner();
    assert_eq!(e.estimated_cost, Some(usd(1, 5_000_000)));

    let err = env
        .adapter
        .estimate_cost(req(estimate("nope/model", 1, 1), "acme"))
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["model"]);
    let err = env
        .adapter
        .estimate_cost(req(estimate("openai/gpt-4o-mini", -1, 1), "acme"))
        .await
        .expect_err("negative");
    assert_eq!(violations(&err), ["input_tokens"]);
    assert_eq!(
        env.fake.harness().requests_to("GET", MODELS_PATH).len(),
        1,
        "the list is cached"
    );
    assert!(env.fake.completion_requests().is_empty());
}

#[tokio::test]
async fn provider_errors_map_to_codes_with_openrouters_words() {
    let env = env().await;
    env.fake.set_out_of_credits(true);
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("402");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(provider_message(&err).starts_with("Insufficient credits"));
    let info = err.get_error_details().error_info().expect("info").clone();
    assert_eq!(info.metadata["http_status"], "402");
    assert_eq!(info.metadata["provider_code"], "402");
    env.fake.set_out_of_credits(false);

    for (status, code) in [
        (400, Code::InvalidArgument),
        (403, Code::PermissionDenied),
        (404, Code::NotFound),
        // A completion is not repeated: failing after it may have run, it is UNKNOWN.
        (408, Code::Unknown),
        (422, Code::InvalidArgument),
        (503, Code::Unknown),
    ] {
        env.fake
            .fail_next_at(COMPLETIONS_PATH, 1, Failure::Status(status));
        let err = env
            .adapter
            .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
            .await
            .expect_err("injected");
        assert_eq!(err.code(), code, "{status}");
        let info = err.get_error_details().error_info().expect("info").clone();
        assert_eq!(info.metadata["http_status"], status.to_string());
        assert_eq!(info.metadata["provider"], "openrouter");
    }
}

#[tokio::test]
async fn completions_are_not_retried_on_5xx_but_the_model_list_is() {
    let env = env().await;
    env.fake.fail_next_at(MODELS_PATH, 2, Failure::Status(502));
    let reply = env
        .adapter
        .estimate_cost(req(
            EstimateCostRequest {
                context: ctx(),
                model: "openai/gpt-4o-mini".into(),
                input_tokens: 1,
                output_tokens: 1,
            },
            "acme",
        ))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(env.fake.harness().requests_to("GET", MODELS_PATH).len(), 3);

    env.fake
        .fail_next_at(COMPLETIONS_PATH, 1, Failure::Status(500));
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("500");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(
        env.fake.completion_requests().len(),
        1,
        "a completion is never sent twice"
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_when_short_and_handed_back_when_long() {
    let env = env().await;
    env.fake.fail_next_at(
        COMPLETIONS_PATH,
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    let reply = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(env.fake.completion_requests().len(), 2);

    env.fake.fail_next_at(
        COMPLETIONS_PATH,
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let started = Instant::now();
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("long wait");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(60))
    );
    assert_eq!(env.fake.completion_requests().len(), 3);
}

#[tokio::test]
async fn a_slow_completion_times_out_once() {
    let env = env_with(|c| c.completion_timeout_ms = 200).await;
    env.fake.fail_next_at(
        COMPLETIONS_PATH,
        1,
        Failure::Slow(Duration::from_millis(600)),
    );
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(env.fake.completion_requests().len(), 1);
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_the_cooldown() {
    let env = env().await;
    env.fake
        .fail_next_at(COMPLETIONS_PATH, 3, Failure::Status(502));
    for _ in 0..3 {
        let err = env
            .adapter
            .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
            .await
            .expect_err("502");
        assert_eq!(err.code(), Code::Unknown);
    }
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("open circuit");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(
        env.fake.completion_requests().len(),
        3,
        "an open circuit sends nothing"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let reply = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    let reply = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await;
    assert!(reply.is_ok(), "closed again: {reply:?}");
}

#[tokio::test]
async fn a_refused_key_is_refreshed_once_and_never_leaks() {
    let env = env().await;
    let stale = "sk-or-v1-stale-key-0123456789";
    env.creds.insert(credential(stale));
    env.creds.insert_refreshed(credential(TEST_API_KEY));
    let reply = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await;
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(env.creds.refreshes(CONN), 1);
    let statuses: Vec<_> = env
        .fake
        .completion_requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [Some(401), Some(200)]);

    let wrong = "sk-or-v1-wrong-key-9876543210";
    env.creds.insert(credential(wrong));
    env.creds.insert_refreshed(credential(wrong));
    let err = env
        .adapter
        .generate_text(req(text_request("openai/gpt-4o-mini", "hi"), "acme"))
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(provider_message(&err), "User not found.");
    assert_eq!(env.creds.refreshes(CONN), 2, "exactly one more refresh");
    let everything = format!("{err:?} {:?}", env.fake.requests());
    for secret in [stale, wrong, TEST_API_KEY] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn an_unreachable_model_list_does_not_block_generation() {
    let env = env().await;
    env.fake.fail_next_at(MODELS_PATH, 3, Failure::Status(503));
    let reply = env
        .adapter
        .generate_text(req(
            text_request("openai/gpt-4o-mini", "still works"),
            "acme",
        ))
        .await
        .expect("generated without the model check")
        .into_inner();
    assert_eq!(reply.text, "still works");
    assert_eq!(env.fake.harness().requests_to("GET", MODELS_PATH).len(), 3);
    // OpenRouter's own refusal then answers for an unknown model.
    env.fake.fail_next_at(MODELS_PATH, 3, Failure::Status(503));
    let err = env
        .adapter
        .generate_text(req(text_request("nope/model", "hi"), "acme"))
        .await
        .expect_err("unknown model");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(provider_message(&err), "nope/model is not a valid model ID");
}
