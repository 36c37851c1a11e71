//! The fake Retell against Retell's documented behaviour: auth, agents and LLMs per
//! workspace, calls and their signed webhooks, injected failures.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac as _};
use maxai_fakes::harness::{loopback, Failure};
use maxai_fakes::retell::{
    signature, Analysis, CallEnd, FakeRetell, Role, MSG_NOT_FOUND_ASSET, MSG_RATE_LIMITED,
    MSG_UNAUTHORIZED, SIGNATURE_HEADER,
};
use serde_json::{json, Value};
use sha2::Sha256;

const KEY: &str = "key_live_0123456789abcdef";

// Official vector: retell-python-sdk tests/test_webhook_auth.py (PROVIDERS.md §2.1), the same
// one services/webhook-ingress/src/signature/retell.rs verifies.
const VECTOR_BODY: &str = r#"{"event":"call_ended"}"#;
const VECTOR_KEY: &str = "test-api-key";
const VECTOR_MS: u64 = 1_700_000_000_000;
const VECTOR_HEADER: &str =
    "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";

#[test]
fn signer_matches_the_official_vector() {
    assert_eq!(
        signature(VECTOR_KEY, VECTOR_BODY.as_bytes(), VECTOR_MS),
        VECTOR_HEADER
    );
    let spaced = format!("{VECTOR_BODY} ");
    assert_ne!(
        signature(VECTOR_KEY, spaced.as_bytes(), VECTOR_MS),
        VECTOR_HEADER
    );
    assert_ne!(
        signature("wrong-api-key", VECTOR_BODY.as_bytes(), VECTOR_MS),
        VECTOR_HEADER
    );
    assert_ne!(
        signature(VECTOR_KEY, VECTOR_BODY.as_bytes(), VECTOR_MS + 1),
        VECTOR_HEADER
    );
}

/// Verifies as the platform's ingress does: `v=<ms>,d=<hex>` over body ‖ ms.
fn verifies(header: &str, body: &[u8], key: &str) -> bool {
    let Some((ms, digest)) = header
        .strip_prefix("v=")
        .and_then(|rest| rest.split_once(",d="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(body);
    mac.update(ms.as_bytes());
    let Ok(digest) = hex::decode(digest) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let fresh = ms
        .parse::<u128>()
        .is_ok_and(|ms| now.abs_diff(ms) <= 300_000);
    fresh && mac.verify_slice(&digest).is_ok()
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    _server: tokio::task::JoinHandle<()>,
}

/// A webhook receiver answering `status` to everything.
async fn receiver(status: StatusCode) -> Receiver {
    type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
    let got: Got = Arc::default();
    async fn hook(
        State((got, status)): State<(Got, StatusCode)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        got.lock().expect("lock").push((headers, body));
        status
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state((got.clone(), status));
    let listener = loopback().await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url,
        got,
        _server: server,
    }
}

struct Api {
    fake: FakeRetell,
    http: reqwest::Client,
}

impl Api {
    async fn new() -> Api {
        let fake = FakeRetell::start().await;
        fake.add_api_key(KEY);
        Api {
            fake,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.fake.base_url()))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, KEY, Some(body))
            .await
    }

    async fn llm_and_agent(
        &self,
        webhook_url: Option<&str>,
        events: Option<Value>,
    ) -> (String, String) {
        let (status, llm) = self
            .post(
                "/create-retell-llm",
                json!({"general_prompt": "You book dental appointments.", "begin_message": "Hi!"}),
            )
            .await;
        assert_eq!(status, 201, "{llm}");
        let llm_id = llm["llm_id"].as_str().expect("llm_id").to_owned();
        let mut agent = json!({
            "response_engine": {"type": "retell-llm", "llm_id": llm_id},
            "voice_id": "11labs-Adrian",
            "agent_name": "Front desk",
        });
        if let Some(url) = webhook_url {
            agent["webhook_url"] = json!(url);
        }
        if let Some(events) = events {
            agent["webhook_events"] = events;
        }
        let (status, agent) = self.post("/create-agent", agent).await;
        assert_eq!(status, 201, "{agent}");
        (
            llm_id,
            agent["agent_id"].as_str().expect("agent_id").to_owned(),
        )
    }
}

#[tokio::test]
async fn wrong_or_missing_key_is_retells_401() {
    let api = Api::new().await;
    let (status, body) = api
        .call(
            reqwest::Method::GET,
            "/get-agent/agent_x",
            "not-a-key",
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"status": "error", "message": MSG_UNAUTHORIZED})
    );
    let resp = api
        .http
        .get(format!("{}/get-agent/agent_x", api.fake.base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    api.fake.revoke_api_key(KEY);
    let (status, _) = api
        .call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_api_key_never_reaches_the_record() {
    let api = Api::new().await;
    api.call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
        .await;
    let requests = api.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer [redacted]")
    );
    assert!(!format!("{requests:?}").contains(KEY));
}

#[tokio::test]
async fn agents_and_llms_are_stored_and_updated_as_retell_does() {
    let api = Api::new().await;
    let (llm_id, agent_id) = api.llm_and_agent(None, None).await;
    assert!(llm_id.starts_with("llm_"));
    assert!(agent_id.starts_with("agent_"));

    let (status, agent) = api
        .call(
            reqwest::Method::GET,
            &format!("/get-agent/{agent_id}"),
            KEY,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(agent["voice_id"], "11labs-Adrian");
    assert_eq!(agent["response_engine"]["llm_id"], llm_id.as_str());
    assert_eq!(agent["version"], 0);
    assert_eq!(agent["language"], "en-US");
    assert!(agent["last_modification_timestamp"].as_u64().is_some());

    let (status, agent) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/update-agent/{agent_id}"),
            KEY,
            Some(json!({"agent_name": "Night desk", "language": null})),
        )
        .await;
    assert_eq!(status, 200, "{agent}");
    assert_eq!(agent["agent_name"], "Night desk");
    assert_eq!(agent["voice_id"], "11labs-Adrian");
    assert_eq!(agent["language"], "en-US");

    let (status, llm) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/update-retell-llm/{llm_id}"),
            KEY,
            Some(json!({"general_prompt": "New prompt", "model": "gpt-4o-mini"})),
        )
        .await;
    assert_eq!(status, 200, "{llm}");
    assert_eq!(llm["general_prompt"], "New prompt");
    assert_eq!(llm["begin_message"], "Hi!");
    assert_eq!(
        api.fake.llm(&llm_id).expect("stored")["model"],
        "gpt-4o-mini"
    );
}

#[tokio::test]
async fn bad_bodies_are_400_and_unknown_assets_422() {
    let api = Api::new().await;
    let (status, body) = api
        .post("/create-agent", json!({"voice_id": "11labs-Adrian"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    let (status, _) = api
        .post(
            "/create-agent",
            json!({"response_engine": {"type": "retell-llm", "llm_id": "llm_nope"}, "voice_id": "v"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .post("/create-retell-llm", json!({"model": "no-such-model"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .post("/create-retell-llm", json!({"llm_id": "llm_mine"}))
        .await;
    assert_eq!(status, 400, "output-only fields are refused");
    let (status, body) = api
        .call(reqwest::Method::GET, "/v2/get-call/call_nope", KEY, None)
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], MSG_NOT_FOUND_ASSET);
}

#[tokio::test]
async fn another_workspace_cannot_see_an_agent() {
    let api = Api::new().await;
    api.fake.add_api_key_in("other", "key_other");
    let (_, agent_id) = api.llm_and_agent(None, None).await;
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/get-agent/{agent_id}"),
            "key_other",
            None,
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_call_posts_signed_started_ended_and_analyzed_webhooks() {
    let api = Api::new().await;
    let hook = receiver(StatusCode::NO_CONTENT).await;
    let (_, agent_id) = api.llm_and_agent(Some(&hook.url), None).await;

    let call_id = api
        .fake
        .start_call(&agent_id, "+14155550100", "+14155550199")
        .await
        .expect("start");
    assert!(call_id.starts_with("call_"));
    let end = CallEnd::new(62_500)
        .turn(Role::Agent, "Hi! How can I help?", 0, 1_800)
        .turn(Role::User, "I need a cleaning on Friday.", 2_000, 4_000)
        .cost("11.6666667")
        .product("elevenlabs_tts", "7.2916667", "0.1166667");
    let ended = api.fake.end_call(&call_id, end).await.expect("end");
    assert_eq!(ended.map(|d| d.status), Some(Some(204)));
    let analysis = Analysis::new(
        "Booked a cleaning",
        json!({"appointment_booked": true, "appointment_time": "2026-12-11T15:00:00Z"}),
    );
    api.fake
        .analyze_call(&call_id, analysis)
        .await
        .expect("analyze");

    let got = hook.got.lock().expect("lock").clone();
    assert_eq!(got.len(), 3);
    let events: Vec<Value> = got
        .iter()
        .map(|(headers, body)| {
            let sig = headers[SIGNATURE_HEADER].to_str().expect("ascii");
            assert!(verifies(sig, body, KEY), "signature {sig}");
            assert!(!verifies(sig, body, "wrong-api-key"));
            serde_json::from_slice(body).expect("json")
        })
        .collect();
    assert_eq!(events[0]["event"], "call_started");
    assert_eq!(events[0]["call"]["call_status"], "ongoing");
    assert_eq!(events[1]["event"], "call_ended");
    let call = &events[1]["call"];
    assert_eq!(call["call_id"], call_id.as_str());
    assert_eq!(call["duration_ms"], 62_500);
    assert_eq!(call["call_status"], "ended");
    assert!(call.get("call_analysis").is_none());
    assert!(call.get("metadata").is_none());
    assert_eq!(
        call["transcript"],
        "Agent: Hi! How can I help?\nUser: I need a cleaning on Friday.\n"
    );
    assert_eq!(call["transcript_object"][1]["role"], "user");
    assert_eq!(call["transcript_object"][1]["words"][0]["start"], 2.0);
    assert_eq!(call["call_cost"]["combined_cost"].to_string(), "11.6666667");
    assert_eq!(call["call_cost"]["total_duration_seconds"], 63);
    assert_eq!(events[2]["event"], "call_analyzed");
    assert_eq!(
        events[2]["call"]["call_analysis"]["custom_analysis_data"]["appointment_booked"],
        true
    );

    let (status, fetched) = api
        .call(
            reqwest::Method::GET,
            &format!("/v2/get-call/{call_id}"),
            KEY,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched, events[2]["call"]);
}

#[tokio::test]
async fn webhooks_follow_subscriptions_and_retry_without_a_2xx() {
    let api = Api::new().await;
    let failing = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (_, agent_id) = api
        .llm_and_agent(Some(&failing.url), Some(json!(["call_ended"])))
        .await;
    let call_id = api
        .fake
        .start_call(&agent_id, "+14155550100", "+14155550199")
        .await
        .expect("start");
    assert!(
        api.fake.deliveries().is_empty(),
        "not subscribed to call_started"
    );
    let delivery = api
        .fake
        .end_call(&call_id, CallEnd::new(1_000))
        .await
        .expect("end")
        .expect("subscribed");
    assert_eq!(delivery.attempts, 4, "one attempt and 3 retries");
    assert_eq!(delivery.status, Some(500));
    assert_eq!(failing.got.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn outbound_and_web_calls_are_registered_until_connected() {
    let api = Api::new().await;
    let hook = receiver(StatusCode::OK).await;
    api.fake.set_account_webhook_url(&hook.url);
    let (_, agent_id) = api.llm_and_agent(None, None).await;
    api.fake
        .bind_number("+14155550100", &agent_id)
        .expect("bind");
    let (status, call) = api
        .post(
            "/v2/create-phone-call",
            json!({"from_number": "+14155550100", "to_number": "+14155550123",
                   "metadata": {"lead": "42"}, "retell_llm_dynamic_variables": {"name": "Ann"}}),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["call_status"], "registered");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["agent_id"], agent_id.as_str());
    let call_id = call["call_id"].as_str().expect("id");
    let started = api.fake.connect_call(call_id).await.expect("connect");
    assert_eq!(started.map(|d| d.event), Some("call_started".to_owned()));
    let body: Value = serde_json::from_slice(&hook.got.lock().expect("lock")[0].1).expect("json");
    assert_eq!(body["call"]["metadata"]["lead"], "42");

    let (status, _) = api
        .post(
            "/v2/create-phone-call",
            json!({"from_number": "4155550100", "to_number": "+14155550123"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, web) = api
        .post("/v2/create-web-call", json!({"agent_id": agent_id}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(web["call_type"], "web_call");
    assert!(web["access_token"].as_str().is_some());
}

#[tokio::test]
async fn a_workspace_over_its_rate_limit_gets_429() {
    let api = Api::new().await;
    api.fake
        .limit_requests(2, std::time::Duration::from_millis(200));
    for _ in 0..2 {
        let (status, _) = api
            .call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
            .await;
        assert_eq!(status, 422);
    }
    let (status, body) = api
        .call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
        .await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"status": "error", "message": MSG_RATE_LIMITED})
    );
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let (status, _) = api
        .call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
        .await;
    assert_eq!(status, 422, "the window moved on");
}

#[tokio::test]
async fn injected_failures_use_retells_error_shape() {
    let api = Api::new().await;
    api.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(2),
        },
    );
    let resp = api
        .http
        .get(format!("{}/get-agent/agent_x", api.fake.base_url()))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "error", "message": MSG_RATE_LIMITED})
    );
    api.fake.fail_next(1, Failure::Status(503));
    let (status, body) = api
        .call(reqwest::Method::GET, "/get-agent/agent_x", KEY, None)
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "error");
}
