//! The agency story end to end over real sockets, on SQLite and on PostgreSQL + Redis: an
//! agency onboards a client, connects GHL and Google Calendar (OAuth against the sandbox fakes),
//! Retell and Twilio (API keys), registers its Retell agent's webhook endpoint and activates a
//! flow; the fake Retell places, ends and analyzes a call and posts the signed webhooks; the
//! flow notes and tags the GHL contact, texts the caller once — although the webhook arrives
//! twice and the platform is restarted while the execution waits — and books the appointment
//! in Google Calendar. The execution and its steps are the tenant's alone.
//!
//! The REST steps are `maxai_platform::demo`'s, so `maxai demo` tells exactly this story.
mod common;

use std::time::Duration;

use common::{up_config_joined, Up};
use maxai_fakes::retell::{Analysis, CallEnd, Role};
use maxai_platform::{
    demo::{self, finished, Rest, Story},
    sandbox, PlatformConfig,
};
use maxai_proto::maxai::common::v1::CallContext;
use maxai_proto::maxai::ports::crm::v1::{
    crm_service_client::CrmServiceClient, Contact, CreateContactRequest,
};
use maxai_proto::maxai::ports::voice::v1::{
    voice_service_client::VoiceServiceClient, Agent, AgentLlm, CreateAgentRequest,
};
use maxai_testkit::{authed, backends};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MESH: &str = "tenants/platform/serviceAccounts/mesh";
const ANN: &str = "tenants/acme/users/ann";
const ROB: &str = "tenants/rival/users/rob";
const LEAD_PHONE: &str = "+14155550123";
/// Long enough to stop and restart the platform while the execution waits on it.
const FOLLOW_UP_DELAY_SECS: u32 = 3;
const DEADLINE: Duration = Duration::from_secs(60);

fn story(up: &Up) -> Story {
    Story {
        rest: Rest::new(&up.http, false).expect("rest client"),
        tenant: "acme".into(),
        client_id: "dental".into(),
        admin: up.token(maxai_iam::BOOTSTRAP_ADMIN),
        tenant_admin: up.token(ANN),
    }
}

fn step_states(execution: &Value) -> Vec<(String, String)> {
    execution["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["stepId"].as_str().unwrap_or_default().to_owned(),
                s["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_analyzed_call_updates_the_crm_texts_once_and_books_across_a_restart() {
    for backend in backends().await {
        let mut config = PlatformConfig::load(None).expect("defaults");
        let sandbox = sandbox::start(&mut config).await.expect("sandbox");
        let (up, running) = up_config_joined(&backend, config.clone(), |_| {}).await;

        // The platform admin onboards the agency and its client; Ann runs the agency.
        let mut acme = story(&up);
        acme.onboard().await.expect("onboard");
        maxai_iam::ensure_grant(&backend.storage, ANN, "roles/tenant-admin", None)
            .await
            .expect("grant ann");
        up.admin(
            Method::POST,
            "/v1/tenants?tenantId=rival",
            json!({"displayName": "Rival", "contactEmail": "ops@rival.example"}),
        )
        .await;
        maxai_iam::ensure_grant(&backend.storage, ROB, "roles/tenant-admin", None)
            .await
            .expect("grant rob");
        acme.tenant_admin = up.token(ANN);

        // The client's accounts.
        let crm = acme
            .connect_oauth("crm", "CONNECTION_PROVIDER_GHL")
            .await
            .expect("ghl");
        assert_eq!(crm["state"], "CONNECTION_STATE_ACTIVE", "{crm}");
        assert_eq!(crm["externalAccountId"], sandbox::GHL_LOCATION, "{crm}");
        let calendar = acme
            .connect_oauth("calendar", "CONNECTION_PROVIDER_GOOGLE_CALENDAR")
            .await
            .expect("google calendar");
        assert_eq!(calendar["state"], "CONNECTION_STATE_ACTIVE", "{calendar}");
        for (id, provider, credential) in [
            (
                "retell",
                "CONNECTION_PROVIDER_RETELL",
                json!({"apiKey": sandbox::RETELL_API_KEY}),
            ),
            (
                "twilio",
                "CONNECTION_PROVIDER_TWILIO",
                json!({"apiKey": sandbox::TWILIO_AUTH_TOKEN, "accountId": sandbox::TWILIO_ACCOUNT_SID}),
            ),
        ] {
            let connected = acme
                .connect_api_key(id, provider, credential)
                .await
                .expect(id);
            assert_eq!(connected["state"], "CONNECTION_STATE_ACTIVE", "{connected}");
        }

        // The lead in GHL, and the client's voice agent at Retell (through the ports, as the
        // agency's onboarding does), posting its webhooks to the platform.
        let mesh = up.token(MESH);
        let contact = CrmServiceClient::new(authed(&up.grpc, &mesh).await)
            .create_contact(CreateContactRequest {
                context: Some(CallContext {
                    connection: acme.connection("crm"),
                    idempotency_key: "story/contact".into(),
                }),
                contact: Some(Contact {
                    first_name: "Pat".into(),
                    last_name: "Lee".into(),
                    phone: LEAD_PHONE.into(),
                    email: "pat@example.test".into(),
                    ..Default::default()
                }),
                upsert: true,
            })
            .await
            .expect("create contact")
            .into_inner()
            .contact
            .expect("contact");
        let agent = VoiceServiceClient::new(authed(&up.grpc, &mesh).await)
            .create_agent(CreateAgentRequest {
                context: Some(CallContext {
                    connection: acme.connection("retell"),
                    idempotency_key: "story/agent".into(),
                }),
                agent: Some(Agent {
                    agent_name: "Front desk".into(),
                    voice_id: "11labs-Adrian".into(),
                    webhook_url: format!("{}/v1/webhooks/retell", up.http),
                    llm: Some(AgentLlm {
                        general_prompt: "You book dental check-ups.".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect("create agent")
            .into_inner()
            .agent
            .expect("agent");
        acme.register_retell_endpoint(&agent.agent_id, sandbox::RETELL_API_KEY)
            .await
            .expect("retell endpoint");
        let flow = acme
            .install_flow("after-call", FOLLOW_UP_DELAY_SECS)
            .await
            .expect("flow");

        // The agent calls the lead, carrying the CRM contact in the call's metadata.
        let placed: Value = reqwest::Client::new()
            .post(format!(
                "{}/v2/create-phone-call",
                sandbox.retell.base_url()
            ))
            .bearer_auth(sandbox::RETELL_API_KEY)
            .json(&json!({
                "from_number": sandbox::TWILIO_NUMBER,
                "to_number": LEAD_PHONE,
                "override_agent_id": agent.agent_id,
                "metadata": {"contact_id": contact.id, "phone": LEAD_PHONE},
            }))
            .send()
            .await
            .expect("create call")
            .json()
            .await
            .expect("call json");
        let call_id = placed["call_id"].as_str().expect("call id").to_owned();
        sandbox
            .retell
            .connect_call(&call_id)
            .await
            .expect("connect");
        let ended = sandbox
            .retell
            .end_call(
                &call_id,
                CallEnd::new(94_000)
                    .turn(Role::Agent, "Shall we book your check-up?", 0, 3_000)
                    .turn(Role::User, "Yes, Tuesday at three works.", 3_500, 6_000)
                    .cost("12.5"),
            )
            .await
            .expect("end")
            .expect("call_ended posted");
        assert_eq!(ended.status, Some(204), "{ended:?}");
        let analyzed = sandbox
            .retell
            .analyze_call(
                &call_id,
                Analysis::new(
                    "Pat agreed to a check-up on Tuesday at 15:00.",
                    json!({
                        "appointment_booked": true,
                        "appointment_start": "2027-01-12T15:00:00Z",
                        "appointment_end": "2027-01-12T15:30:00Z",
                    }),
                ),
            )
            .await
            .expect("analyze")
            .expect("call_analyzed posted");
        assert_eq!(analyzed.status, Some(204), "{analyzed:?}");
        assert_eq!(analyzed.attempts, 1, "acknowledged at once: {analyzed:?}");

        // Retell delivers the same webhook again: acknowledged, and nothing more happens.
        let redeliver = |rest: &Rest| {
            let body = analyzed.body.clone();
            let rest = rest.clone();
            async move {
                let ms = maxai_kit::storage::now_micros() as u64 / 1000;
                let signature = maxai_fakes::retell::signature(sandbox::RETELL_API_KEY, &body, ms);
                rest.webhook(
                    "retell",
                    &body,
                    &[(maxai_fakes::retell::SIGNATURE_HEADER, signature)],
                )
                .await
                .expect("redeliver")
            }
        };
        assert_eq!(redeliver(&acme.rest).await, 204);

        // The execution notes and tags the contact, then waits before texting.
        let waiting = acme
            .execution_when(&flow, DEADLINE, |e| {
                e["state"] == "EXECUTION_STATE_WAITING" || finished(e)
            })
            .await
            .expect("execution waits");
        assert_eq!(waiting["state"], "EXECUTION_STATE_WAITING", "{waiting}");
        assert_eq!(waiting["client"], acme.client(), "{waiting}");
        let notes = sandbox.ghl.notes(&contact.id);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0]["body"]
                .as_str()
                .is_some_and(|b| b.contains("Pat agreed to a check-up")),
            "{notes:?}"
        );
        let tags = sandbox.ghl.contact(&contact.id).expect("contact")["tags"].clone();
        assert!(
            tags.as_array()
                .is_some_and(|t| t.iter().any(|t| t == demo::CALL_TAG)),
            "{tags}"
        );
        assert!(sandbox.twilio.messages().is_empty(), "not texted yet");

        // The platform stops while the execution waits, and a new one starts on the same
        // storage (the sandbox providers keep running, as the outside world would).
        drop(up);
        running.await.expect("platform stopped");
        let (up, running) = up_config_joined(&backend, config.clone(), |_| {}).await;
        let acme = story(&up);
        assert_eq!(
            redeliver(&acme.rest).await,
            204,
            "a redelivery after the restart"
        );

        let done = acme
            .execution_when(&flow, DEADLINE, finished)
            .await
            .expect("execution finishes");
        assert_eq!(done["state"], "EXECUTION_STATE_SUCCEEDED", "{done}");
        assert_eq!(done["name"], waiting["name"], "the same execution resumed");
        assert_eq!(done["trigger"]["eventType"], demo::TRIGGER_EVENT, "{done}");
        let states = step_states(&done);
        for id in ["note", "tag", "pause", "sms", "booked", "book"] {
            assert!(
                states
                    .iter()
                    .any(|(s, st)| s == id && st == "STEP_RUN_STATE_SUCCEEDED"),
                "step {id} succeeded: {states:?}"
            );
        }
        assert_eq!(
            states.iter().filter(|(s, _)| s == "sms").count(),
            1,
            "the SMS step ran once: {states:?}"
        );

        // Exactly one text, to the caller; exactly one note; the appointment is in the calendar.
        let messages = sandbox.twilio.messages();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0].to, LEAD_PHONE);
        assert_eq!(messages[0].from, sandbox::TWILIO_NUMBER);
        assert_eq!(messages[0].body, demo::FOLLOW_UP_SMS);
        assert_eq!(done["output"]["smsSid"], messages[0].sid.as_str(), "{done}");
        assert_eq!(sandbox.ghl.notes(&contact.id).len(), 1);
        let events = sandbox.google_calendar.events(sandbox::GOOGLE_USER);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0]["summary"], "Appointment booked by the AI receptionist",
            "{events:?}"
        );
        assert!(
            events[0]["start"]["dateTime"]
                .as_str()
                .is_some_and(|t| t.starts_with("2027-01-12T15:00:00")),
            "{events:?}"
        );

        // Another agency's admin sees none of it.
        let rob = up.token(ROB);
        let name = done["name"].as_str().expect("name");
        for path in [
            format!("/v1/{name}"),
            format!("/v1/tenants/acme/executions?flow={flow}"),
            format!("/v1/{flow}"),
        ] {
            let (status, reply) = up.call(Method::GET, &path, Some(&rob), None).await;
            assert!(
                status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                "{path}: {status} {reply}"
            );
        }
        drop(up);
        running.await.expect("platform stopped");
    }
}
