//! The Retell adapter over real HTTP against the fake Retell on loopback: every RPC, the
//! error mapping, retries, timeouts, the circuit, credential refresh and input checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maxai_adapter::breaker::BreakerConfig;
use maxai_adapter::{HttpConfig, StaticCredentials};
use maxai_fakes::harness::Failure;
use maxai_fakes::retell::{Analysis, CallEnd, FakeRetell, Role, MSG_UNAUTHORIZED};
use maxai_kit::auth::Principal;
use maxai_proto::maxai::common::v1::{CallContext, Money};
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::voice::v1::voice_service_server::VoiceService;
use maxai_proto::maxai::ports::voice::v1::{
    Agent, AgentLlm, AnalysisField, AnalysisFieldKind, CallDirection, CallKind, CallStatus,
    CreateAgentRequest, DataStorageSetting, GetCallAnalysisRequest, Sentiment, StartSpeaker,
    TranscriptRole, UpdateAgentRequest,
};
use maxai_retell::{RetellAdapter, RetellConfig};
use serde_json::{json, Value};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

const CONN: &str = "tenants/acme/clients/dental/connections/retell-main";
const KEY: &str = "key_3f9c1d2e8a7b4c6d";

fn credential(key: &str) -> ConnectionCredential {
    ConnectionCredential {
        connection: CONN.to_owned(),
        provider: ConnectionProvider::Retell as i32,
        api_key: key.to_owned(),
        ..ConnectionCredential::default()
    }
}

fn fast_http() -> HttpConfig {
    HttpConfig {
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        max_attempts: 3,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        breaker: BreakerConfig {
            failures: 50,
            cooldown: Duration::from_secs(30),
        },
    }
}

struct Env {
    fake: FakeRetell,
    creds: Arc<StaticCredentials>,
    adapter: RetellAdapter,
}

async fn env_with(http: HttpConfig) -> Env {
    let fake = FakeRetell::start().await;
    fake.add_api_key(KEY);
    let creds = StaticCredentials::new();
    creds.insert(credential(KEY));
    let adapter = RetellAdapter::with_http(fake.base_url(), http, creds.clone());
    Env {
        fake,
        creds,
        adapter,
    }
}

async fn env() -> Env {
    env_with(fast_http()).await
}

fn request<T>(message: T) -> Request<T> {
    request_as("acme", message)
}

fn request_as<T>(tenant: &str, message: T) -> Request<T> {
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

fn context() -> Option<CallContext> {
    Some(CallContext {
        connection: CONN.to_owned(),
        idempotency_key: "exec-1/step-1".to_owned(),
    })
}

fn get_call(call_id: &str) -> Request<GetCallAnalysisRequest> {
    request(GetCallAnalysisRequest {
        context: context(),
        call_id: call_id.to_owned(),
    })
}

fn new_agent() -> Agent {
    Agent {
        agent_name: "Front desk".into(),
        voice_id: "11labs-Adrian".into(),
        webhook_url: "http://127.0.0.1:9/v1/webhooks/retell".into(),
        webhook_events: vec!["call_ended".into(), "call_analyzed".into()],
        llm: Some(AgentLlm {
            general_prompt: "You book dental appointments for {{clinic}}.".into(),
            begin_message: "Hi, thanks for calling!".into(),
            temperature: Some(0.3),
            start_speaker: StartSpeaker::Agent as i32,
            default_dynamic_variables: HashMap::from([("clinic".into(), "Bright Smiles".into())]),
            ..AgentLlm::default()
        }),
        post_call_analysis_fields: vec![AnalysisField {
            name: "appointment_booked".into(),
            kind: AnalysisFieldKind::Boolean as i32,
            description: "Whether an appointment was booked".into(),
            ..AnalysisField::default()
        }],
        max_call_duration: Some(prost_types::Duration {
            seconds: 900,
            nanos: 0,
        }),
        data_storage_setting: DataStorageSetting::EverythingExceptPii as i32,
        ..Agent::default()
    }
}

async fn create(env: &Env, agent: Agent) -> Result<Agent, Status> {
    let response = env
        .adapter
        .create_agent(request(CreateAgentRequest {
            context: context(),
            agent: Some(agent),
        }))
        .await?;
    Ok(response.into_inner().agent.expect("agent"))
}

fn fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}

fn info(status: &Status) -> HashMap<String, String> {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.metadata.clone())
        .unwrap_or_default()
}

fn paths(env: &Env) -> Vec<String> {
    env.fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn usd(units: i64, nanos: i32) -> Money {
    Money {
        currency_code: "USD".into(),
        units,
        nanos,
    }
}

/// A finished, analysed call of a fresh agent.
async fn analysed_call(env: &Env) -> String {
    let agent = create(env, new_agent()).await.expect("agent");
    let call_id = env
        .fake
        .start_call(&agent.agent_id, "+14155550100", "+14155550199")
        .await
        .expect("start");
    let end = CallEnd::new(62_500)
        .turn(Role::Agent, "Hi, thanks for calling!", 0, 1_800)
        .turn(Role::User, "Can I come in Friday at three?", 2_000, 4_250)
        .cost("11.6666667")
        .product("elevenlabs_tts", "7.2916667", "0.1166667")
        .product("gpt_4_1", "4.375", "0.07");
    env.fake.end_call(&call_id, end).await.expect("end");
    let analysis = Analysis::new(
        "Booked a cleaning for Friday 3pm",
        json!({"appointment_booked": true, "appointment_time": "2026-12-11T15:00:00Z"}),
    );
    env.fake
        .analyze_call(&call_id, analysis)
        .await
        .expect("analyze");
    call_id
}

#[test]
fn config_defaults_to_the_real_retell() {
    let config = RetellConfig::default();
    assert_eq!(config.base_url, "https://api.retellai.com");
    assert_eq!(config.http(), HttpConfig::default());
}

#[tokio::test]
async fn create_agent_creates_the_llm_then_the_agent() {
    let env = env().await;
    let agent = create(&env, new_agent()).await.expect("create");
    assert_eq!(
        paths(&env),
        ["POST /create-retell-llm", "POST /create-agent"]
    );
    let requests = env.fake.requests();
    let llm_body = requests[0].json().expect("json");
    assert_eq!(
        llm_body,
        json!({
            "general_prompt": "You book dental appointments for {{clinic}}.",
            "begin_message": "Hi, thanks for calling!",
            "model_temperature": 0.3,
            "start_speaker": "agent",
            "default_dynamic_variables": {"clinic": "Bright Smiles"},
        })
    );
    let agent_body = requests[1].json().expect("json");
    let llm = agent.llm.clone().expect("llm");
    assert!(llm.llm_id.starts_with("llm_"));
    assert_eq!(
        agent_body,
        json!({
            "response_engine": {"type": "retell-llm", "llm_id": llm.llm_id},
            "agent_name": "Front desk",
            "voice_id": "11labs-Adrian",
            "webhook_url": "http://127.0.0.1:9/v1/webhooks/retell",
            "webhook_events": ["call_ended", "call_analyzed"],
            "post_call_analysis_data": [{"type": "boolean", "name": "appointment_booked",
                                         "description": "Whether an appointment was booked"}],
            "max_call_duration_ms": 900_000,
            "data_storage_setting": "everything_except_pii",
        })
    );
    assert!(agent.agent_id.starts_with("agent_"));
    assert_eq!(agent.voice_id, "11labs-Adrian");
    assert_eq!(agent.language, "en-US", "Retell's default, as stored");
    assert_eq!(agent.version, 0);
    assert!(agent.update_time.is_some());
    assert_eq!(
        agent.max_call_duration,
        Some(prost_types::Duration {
            seconds: 900,
            nanos: 0
        })
    );
    assert_eq!(
        agent.post_call_analysis_fields,
        new_agent().post_call_analysis_fields
    );
    assert_eq!(llm.model, "gpt-4.1", "Retell's default model");
    assert_eq!(llm.temperature, Some(0.3));
    assert_eq!(llm.start_speaker, StartSpeaker::Agent as i32);
    assert_eq!(llm.default_dynamic_variables["clinic"], "Bright Smiles");
    let stored = env.fake.agent(&agent.agent_id).expect("stored");
    assert_eq!(stored["response_engine"]["llm_id"], llm.llm_id.as_str());
}

#[tokio::test]
async fn create_agent_reuses_an_llm_by_id() {
    let env = env().await;
    let first = create(&env, new_agent()).await.expect("first");
    let llm_id = first.llm.expect("llm").llm_id;
    env.fake.clear_requests();
    let mut agent = new_agent();
    agent.llm = Some(AgentLlm {
        llm_id: llm_id.clone(),
        ..AgentLlm::default()
    });
    let second = create(&env, agent).await.expect("second");
    assert_eq!(
        paths(&env),
        [
            format!("GET /get-retell-llm/{llm_id}"),
            "POST /create-agent".to_owned()
        ]
    );
    let llm = second.llm.expect("llm");
    assert_eq!(llm.llm_id, llm_id);
    assert_eq!(
        llm.general_prompt,
        "You book dental appointments for {{clinic}}."
    );
}

#[tokio::test]
async fn a_failed_agent_create_deletes_the_llm_it_made() {
    let env = env().await;
    env.fake
        .fail_next_at("/create-agent", 1, Failure::Status(500));
    let err = create(&env, new_agent()).await.expect_err("500");
    assert_eq!(err.code(), Code::Unknown);
    let requests = env.fake.requests();
    assert_eq!(
        requests.len(),
        3,
        "create is not retried: {:?}",
        paths(&env)
    );
    assert_eq!(requests[1].path, "/create-agent");
    assert_eq!(requests[2].method, "DELETE");
    let llm_id = requests[2].path.trim_start_matches("/delete-retell-llm/");
    assert!(env.fake.llm(llm_id).is_none());
}

#[tokio::test]
async fn update_agent_sends_exactly_the_masked_paths() {
    let env = env().await;
    let agent = create(&env, new_agent()).await.expect("create");
    let llm_id = agent.llm.clone().expect("llm").llm_id;
    env.fake.clear_requests();
    let change = Agent {
        agent_id: agent.agent_id.clone(),
        agent_name: "Night desk".into(),
        webhook_url: String::new(),
        llm: Some(AgentLlm {
            general_prompt: "You take messages after hours.".into(),
            ..AgentLlm::default()
        }),
        ..Agent::default()
    };
    let updated = env
        .adapter
        .update_agent(request(UpdateAgentRequest {
            context: context(),
            agent: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "agent_name".into(),
                    "webhook_url".into(),
                    "llm.general_prompt".into(),
                ],
            }),
        }))
        .await
        .expect("update")
        .into_inner()
        .agent
        .expect("agent");
    let id = &agent.agent_id;
    assert_eq!(
        paths(&env),
        [
            format!("GET /get-agent/{id}"),
            format!("PATCH /update-retell-llm/{llm_id}"),
            format!("PATCH /update-agent/{id}"),
        ]
    );
    let requests = env.fake.requests();
    assert_eq!(
        requests[1].json(),
        Some(json!({"general_prompt": "You take messages after hours."}))
    );
    assert_eq!(
        requests[2].json(),
        Some(json!({"agent_name": "Night desk", "webhook_url": null}))
    );
    assert_eq!(updated.agent_name, "Night desk");
    assert_eq!(updated.webhook_url, "");
    assert_eq!(updated.voice_id, "11labs-Adrian", "unmasked fields stay");
    let llm = updated.llm.expect("llm");
    assert_eq!(llm.general_prompt, "You take messages after hours.");
    assert_eq!(
        llm.begin_message, "Hi, thanks for calling!",
        "unmasked llm fields stay"
    );
}

#[tokio::test]
async fn an_empty_mask_without_llm_leaves_the_prompt_alone() {
    let env = env().await;
    let agent = create(&env, new_agent()).await.expect("create");
    let llm_id = agent.llm.clone().expect("llm").llm_id;
    env.fake.clear_requests();
    let mut change = new_agent();
    change.agent_id = agent.agent_id.clone();
    change.llm = None;
    change.voice_id = "11labs-Myra".into();
    change.max_call_duration = None;
    let updated = env
        .adapter
        .update_agent(request(UpdateAgentRequest {
            context: context(),
            agent: Some(change),
            update_mask: None,
        }))
        .await
        .expect("update")
        .into_inner()
        .agent
        .expect("agent");
    assert_eq!(
        paths(&env),
        [
            format!("PATCH /update-agent/{}", agent.agent_id),
            format!("GET /get-retell-llm/{llm_id}"),
        ]
    );
    let body = env.fake.requests()[0].json().expect("json");
    assert_eq!(body["voice_id"], "11labs-Myra");
    assert_eq!(
        body["max_call_duration_ms"],
        Value::Null,
        "reset to default"
    );
    assert_eq!(updated.voice_id, "11labs-Myra");
    assert_eq!(
        updated.max_call_duration,
        Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0
        }),
        "Retell's default"
    );
    assert_eq!(
        updated.llm.expect("llm").general_prompt,
        "You book dental appointments for {{clinic}}."
    );
}

#[tokio::test]
async fn get_call_analysis_reports_transcript_analysis_and_exact_cost() {
    let env = env().await;
    let call_id = analysed_call(&env).await;
    let call = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(call.call_id, call_id);
    assert_eq!(call.call_kind, CallKind::Phone as i32);
    assert_eq!(call.call_status, CallStatus::Ended as i32);
    assert_eq!(call.direction, CallDirection::Inbound as i32);
    assert_eq!(call.from_number, "+14155550100");
    assert_eq!(call.to_number, "+14155550199");
    assert_eq!(
        call.duration,
        Some(prost_types::Duration {
            seconds: 62,
            nanos: 500_000_000
        })
    );
    let (start, end) = (call.start_time.expect("start"), call.end_time.expect("end"));
    assert_eq!(
        (end.seconds - start.seconds) * 1000 + i64::from(end.nanos - start.nanos) / 1_000_000,
        62_500
    );
    assert_eq!(call.disconnection_reason, "user_hangup");
    assert_eq!(
        call.transcript,
        "Agent: Hi, thanks for calling!\nUser: Can I come in Friday at three?\n"
    );
    assert_eq!(call.transcript_turns.len(), 2);
    let user = &call.transcript_turns[1];
    assert_eq!(user.role, TranscriptRole::User as i32);
    assert_eq!(
        user.start_offset,
        Some(prost_types::Duration {
            seconds: 2,
            nanos: 0
        })
    );
    assert_eq!(
        user.end_offset,
        Some(prost_types::Duration {
            seconds: 4,
            nanos: 250_000_000
        })
    );
    let analysis = call.analysis.expect("analysis");
    assert_eq!(analysis.summary, "Booked a cleaning for Friday 3pm");
    assert_eq!(analysis.sentiment, Sentiment::Positive as i32);
    assert_eq!(analysis.successful, Some(true));
    assert_eq!(analysis.appointment_booked, Some(true));
    let custom = analysis.custom_analysis.expect("custom");
    assert_eq!(
        custom.fields["appointment_time"].kind,
        Some(prost_types::value::Kind::StringValue(
            "2026-12-11T15:00:00Z".into()
        ))
    );
    // 11.6666667 cents is 0.116666667 USD, exactly.
    assert_eq!(call.cost, Some(usd(0, 116_666_667)));
    let usage = call.usage.expect("usage");
    assert_eq!(usage.provider_cost, Some(usd(0, 116_666_667)));
    let items: Vec<(String, i64, Option<Money>)> = usage
        .items
        .into_iter()
        .map(|i| (i.meter, i.quantity, i.cost))
        .collect();
    assert_eq!(
        items,
        [
            (
                "voice.call.seconds".to_owned(),
                63,
                Some(usd(0, 116_666_667))
            ),
            (
                "voice.call.product.elevenlabs_tts".to_owned(),
                63,
                Some(usd(0, 72_916_667))
            ),
            (
                "voice.call.product.gpt_4_1".to_owned(),
                63,
                Some(usd(0, 43_750_000))
            ),
        ]
    );
    assert_eq!(
        paths(&env).last().map(String::as_str),
        Some(&*format!("GET /v2/get-call/{call_id}"))
    );
}

#[tokio::test]
async fn a_webhook_call_object_converts_like_get_call() {
    let env = env().await;
    let call_id = analysed_call(&env).await;
    let delivery = env
        .fake
        .deliveries()
        .into_iter()
        .find(|d| d.event == "call_analyzed")
        .expect("call_analyzed posted");
    let payload: Value = serde_json::from_slice(&delivery.body).expect("json");
    let from_webhook =
        maxai_retell::convert::call_from_json(payload["call"].to_string().as_bytes())
            .expect("convert");
    let fetched = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(from_webhook, fetched);
}

#[tokio::test]
async fn an_ongoing_call_has_no_usage_cost_or_analysis_yet() {
    let env = env().await;
    let agent = create(&env, new_agent()).await.expect("agent");
    let call_id = env
        .fake
        .start_call(&agent.agent_id, "+14155550100", "+14155550199")
        .await
        .expect("start");
    let call = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(call.call_status, CallStatus::Ongoing as i32);
    assert!(call.usage.is_none());
    assert!(call.cost.is_none());
    assert!(call.analysis.is_none());
    assert!(call.duration.is_none());
}

#[tokio::test]
async fn bad_input_is_refused_before_any_retell_call() {
    let env = env().await;
    let mut agent = new_agent();
    agent.voice_id.clear();
    agent.webhook_url = "hooks.example.com".into();
    agent.webhook_events = vec!["call_exploded".into()];
    agent.post_call_analysis_fields.push(AnalysisField {
        name: "outcome".into(),
        kind: AnalysisFieldKind::Enum as i32,
        ..AnalysisField::default()
    });
    agent.llm.as_mut().expect("llm").temperature = Some(1.5);
    let err = create(&env, agent).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "agent.voice_id",
            "agent.webhook_url",
            "agent.webhook_events[0]",
            "agent.post_call_analysis_fields[1].choices",
            "agent.llm.temperature",
        ]
    );

    let err = env
        .adapter
        .update_agent(request(UpdateAgentRequest {
            context: context(),
            agent: Some(Agent::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["llm.voice".into()],
            }),
        }))
        .await
        .expect_err("invalid");
    assert_eq!(fields(&err), ["agent.agent_id", "update_mask"]);

    for bad in ["", "../get-agent/x", "call id"] {
        let err = env
            .adapter
            .get_call_analysis(get_call(bad))
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(fields(&err), ["call_id"]);
    }

    let mut reuse = new_agent();
    reuse.llm.as_mut().expect("llm").llm_id = "llm_0123".into();
    let err = create(&env, reuse).await.expect_err("mixed");
    assert_eq!(fields(&err), ["agent.llm"]);

    let mut no_context = get_call("call_1").into_inner();
    no_context.context = None;
    let err = env
        .adapter
        .get_call_analysis(request(no_context))
        .await
        .expect_err("no context");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(env.fake.requests().is_empty(), "{:?}", paths(&env));
}

#[tokio::test]
async fn another_tenants_connection_or_a_non_retell_credential_is_refused() {
    let env = env().await;
    let err = env
        .adapter
        .get_call_analysis(request_as(
            "globex",
            GetCallAnalysisRequest {
                context: context(),
                call_id: "call_1".into(),
            },
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(err.code(), Code::PermissionDenied);
    env.creds.insert(ConnectionCredential {
        provider: ConnectionProvider::Twilio as i32,
        ..credential(KEY)
    });
    let err = env
        .adapter
        .get_call_analysis(get_call("call_1"))
        .await
        .expect_err("twilio credential");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(env.fake.requests().is_empty());
}

#[tokio::test]
async fn retell_errors_map_to_grpc_codes_with_retells_message() {
    let env = env().await;
    // Unknown ids are Retell's 422 "Cannot find requested asset".
    let err = env
        .adapter
        .get_call_analysis(get_call("call_0000"))
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let meta = info(&err);
    assert_eq!(meta["provider"], "retell");
    assert_eq!(meta["http_status"], "422");
    assert_eq!(
        meta["provider_message"],
        "Cannot find requested asset under given api key."
    );

    // Retell's own validation (a model it does not offer) is INVALID_ARGUMENT.
    let mut agent = new_agent();
    agent.llm.as_mut().expect("llm").model = "gpt-9-ultra".into();
    let err = create(&env, agent).await.expect_err("model");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(info(&err)["http_status"], "400");
    assert!(info(&err)["provider_message"].contains("model"));

    for (status, code) in [
        (400, Code::InvalidArgument),
        (402, Code::FailedPrecondition),
        (403, Code::PermissionDenied),
        (409, Code::AlreadyExists),
        // The fake's 422 carries Retell's unknown-asset message.
        (422, Code::NotFound),
    ] {
        env.fake.fail_next(1, Failure::Status(status));
        let err = env
            .adapter
            .get_call_analysis(get_call("call_1"))
            .await
            .expect_err("injected");
        assert_eq!(err.code(), code, "{status}");
        assert_eq!(info(&err)["http_status"], status.to_string());
        assert!(!info(&err)["provider_message"].is_empty());
    }
}

#[tokio::test]
async fn a_wrong_api_key_is_refused_once_refreshed_and_never_leaks() {
    let env = env().await;
    let wrong = "key_wrong_9a8b7c6d5e";
    env.creds.insert(credential(wrong));
    let err = env
        .adapter
        .get_call_analysis(get_call("call_1"))
        .await
        .expect_err("401");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(info(&err)["http_status"], "401");
    assert_eq!(info(&err)["provider_message"], MSG_UNAUTHORIZED);
    assert_eq!(env.creds.refreshes(CONN), 1, "exactly one forced refresh");
    let requests = env.fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.status == Some(401)));
    let everything = format!("{requests:?} {err:?} {}", err.message());
    assert!(!everything.contains(wrong));
    assert!(!everything.contains(KEY));
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer [redacted]")
    );
}

#[tokio::test]
async fn a_401_refreshes_the_credential_once_and_succeeds() {
    let env = env().await;
    let call_id = analysed_call(&env).await;
    env.fake.clear_requests();
    let rotated = "key_rotated_1a2b3c4d";
    env.fake.add_api_key(rotated);
    env.fake.revoke_api_key(KEY);
    env.creds.insert_refreshed(credential(rotated));
    let call = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("after refresh");
    assert_eq!(call.into_inner().call_id, call_id);
    assert_eq!(env.creds.refreshes(CONN), 1);
    let statuses: Vec<_> = env.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(401), Some(200)]);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_a_long_one_returned() {
    let env = env().await;
    let call_id = analysed_call(&env).await;
    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    env.adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("retried");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(env.fake.requests().len(), 2);

    env.fake.clear_requests();
    env.fake.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let err = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect_err("too long to wait");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay),
        Some(Duration::from_secs(60))
    );
    assert_eq!(env.fake.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_for_safe_calls_only() {
    let env = env().await;
    let call_id = analysed_call(&env).await;
    env.fake.clear_requests();
    env.fake.fail_next(2, Failure::Status(503));
    env.adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("third attempt");
    assert_eq!(env.fake.requests().len(), 3);

    env.fake.clear_requests();
    env.fake
        .fail_next_at("/create-retell-llm", 1, Failure::Status(500));
    let err = create(&env, new_agent()).await.expect_err("unsafe");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(
        paths(&env),
        ["POST /create-retell-llm"],
        "a create is not repeated"
    );
}

#[tokio::test]
async fn a_slow_retell_times_out() {
    let env = env_with(HttpConfig {
        timeout: Duration::from_millis(150),
        max_attempts: 1,
        ..fast_http()
    })
    .await;
    env.fake
        .fail_next(1, Failure::Slow(Duration::from_millis(600)));
    let err = env
        .adapter
        .get_call_analysis(get_call("call_1"))
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_failures_and_closes_after_cooldown() {
    let env = env_with(HttpConfig {
        max_attempts: 1,
        breaker: BreakerConfig {
            failures: 2,
            cooldown: Duration::from_millis(300),
        },
        ..fast_http()
    })
    .await;
    let call_id = analysed_call(&env).await;
    env.fake.clear_requests();
    env.fake.fail_next(2, Failure::Status(500));
    for _ in 0..2 {
        let err = env
            .adapter
            .get_call_analysis(get_call(&call_id))
            .await
            .expect_err("500");
        assert_eq!(err.code(), Code::Unavailable);
    }
    let err = env
        .adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect_err("open");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit open"), "{}", err.message());
    assert_eq!(
        env.fake.requests().len(),
        2,
        "an open circuit sends nothing"
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    env.adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("trial call closes the circuit");
    env.adapter
        .get_call_analysis(get_call(&call_id))
        .await
        .expect("closed");
    assert_eq!(env.fake.requests().len(), 4);
}
