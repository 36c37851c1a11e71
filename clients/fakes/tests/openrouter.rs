//! The OpenRouter fake answers as OpenRouter does (PROVIDERS.md §6), over real HTTP.
use maxai_fakes::harness::{Failure, REDACTED};
use maxai_fakes::openrouter::{FakeOpenRouter, FakeOpenRouterConfig, Reply, TEST_API_KEY};
use serde_json::{json, Value};

async fn post(fake: &FakeOpenRouter, key: Option<&str>, body: Value) -> (u16, Value, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).expect("json body");
    (status, json, text)
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}
    ]})
}

#[tokio::test]
async fn completion_reports_tokens_and_exact_cost() {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let (status, body, text) = post(
        &fake,
        Some(TEST_API_KEY),
        chat("openai/gpt-4o-mini", "hello there model"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "openai/gpt-4o-mini");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "hello there model"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 2 + 3 prompt words, 3 completion words: 5 × 0.00000015 + 3 × 0.0000006.
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 8);
    assert!(text.contains("\"cost\":0.00000255"), "{text}");

    let id = body["id"].as_str().expect("id");
    assert!(id.starts_with("gen-"));
    let generation: Value = reqwest::Client::new()
        .get(format!("{}/generation?id={id}", fake.base_url()))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(generation["data"]["tokens_prompt"], 5);
    assert_eq!(generation["data"]["model"], "openai/gpt-4o-mini");

    let recorded = fake.completion_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(format!("Bearer {REDACTED}").as_str())
    );
    assert!(!format!("{recorded:?}").contains(TEST_API_KEY));
}

#[tokio::test]
async fn keys_are_checked_as_openrouter_checks_them() {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let (status, body, _) = post(&fake, None, chat("openai/gpt-4o-mini", "hi")).await;
    assert_eq!((status, body["error"]["code"].clone()), (401, json!(401)));
    assert_eq!(body["error"]["message"], "No auth credentials found");
    let (status, body, _) = post(
        &fake,
        Some("sk-or-v1-wrong"),
        chat("openai/gpt-4o-mini", "hi"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "User not found.");
    // The model list is public.
    let models: Value = reqwest::get(format!("{}/models", fake.base_url()))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let mini = models["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == "openai/gpt-4o-mini"))
        .expect("model listed");
    assert_eq!(mini["pricing"]["prompt"], "0.00000015");
    assert_eq!(mini["pricing"]["completion"], "0.0000006");
}

#[tokio::test]
async fn json_schema_is_honoured_and_scripts_win() {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let mut body = chat("openai/gpt-4o-mini", "extract");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {
        "name": "contact", "strict": true,
        "schema": {"type": "object", "additionalProperties": false, "required": ["name", "age"],
                   "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}}}
    }});
    let (status, reply, _) = post(&fake, Some(TEST_API_KEY), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let content: Value = serde_json::from_str(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .expect("content"),
    )
    .expect("content is JSON");
    assert_eq!(content, json!({"name": "example", "age": 18}));

    fake.respond_with("openai/gpt-4o-mini", "{\"name\": 5}");
    let (_, reply, _) = post(&fake, Some(TEST_API_KEY), body.clone()).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "{\"name\": 5}");

    body["response_format"]["json_schema"]["name"] = json!("bad name!");
    let (status, reply, _) = post(&fake, Some(TEST_API_KEY), body).await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["code"], 400);
}

#[tokio::test]
async fn request_errors_and_errors_after_generation_started() {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), chat("nope/model", "hi")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "nope/model is not a valid model ID"
    );

    fake.set_out_of_credits(true);
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), chat("openai/gpt-4o-mini", "hi")).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], 402);
    fake.set_out_of_credits(false);

    fake.script(
        "openai/gpt-4o-mini",
        Reply::ErrorInBody {
            code: 502,
            message: "upstream died".into(),
        },
    );
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), chat("openai/gpt-4o-mini", "hi")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"error": {"code": 502, "message": "upstream died"}})
    );

    fake.script(
        "openai/gpt-4o-mini",
        Reply::ErrorAfterStart {
            partial: "half an".into(),
            code: 502,
            message: "cut".into(),
        },
    );
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), chat("openai/gpt-4o-mini", "hi")).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["finish_reason"], "error");
    assert_eq!(body["choices"][0]["error"]["message"], "cut");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn fallbacks_limits_and_injected_failures() {
    let fake = FakeOpenRouter::start(FakeOpenRouterConfig::default()).await;
    fake.set_model_down("openai/gpt-4o-mini", true);
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), chat("openai/gpt-4o-mini", "hi")).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], 502);
    let mut with_fallback = chat("openai/gpt-4o-mini", "one two three four");
    with_fallback["models"] = json!(["anthropic/claude-3.5-sonnet"]);
    with_fallback["max_tokens"] = json!(2);
    let (status, body, _) = post(&fake, Some(TEST_API_KEY), with_fallback).await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], "anthropic/claude-3.5-sonnet");
    assert_eq!(body["choices"][0]["message"]["content"], "one two");
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(3),
        },
    );
    let res = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth(TEST_API_KEY)
        .json(&chat("anthropic/claude-3.5-sonnet", "hi"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], 429);
}
