//! `maxai demo`: the agency story of `tests/story.rs` told against a running `maxai up`, step
//! by step in plain words with the REST call behind each step, so a newcomer sees the platform
//! work end to end in under a minute.
//!
//! The story: the platform admin onboards an agency (tenant) and its client; the client
//! connects GHL and Google Calendar (OAuth against the sandbox fakes), Retell and Twilio (API
//! keys); a Retell webhook endpoint ties the client's voice agent to the tenant; the tenant
//! activates a flow "when a call has been analyzed: note and tag the CRM contact, wait a
//! moment, text a follow-up, and book the appointment if the call booked one"; then a call
//! ends and its signed webhooks arrive.
//!
//! Fidelity choices:
//! - The demo reaches the platform only as a client does: over REST, plus gRPC for the CRM
//!   port (ports are internal and have no REST route), with tokens minted from the local key
//!   store exactly as `maxai token` mints them.
//! - It cannot drive the in-process fake Retell, so it posts the `call_ended` and
//!   `call_analyzed` webhooks itself, built as Retell builds them and signed with the sandbox
//!   Retell key by the fake's own signing function ([`maxai_fakes::retell::signature`]).
//! - Every run uses a fresh tenant id, so the demo can be repeated against the same `./data`.
//!
//! [`Rest`], [`Story`] and [`flow_definition`] are shared with the story test, which drives
//! the same calls against the in-process platform and checks what the fakes received.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{sandbox, PlatformConfig};

/// The flow's trigger: Retell's `call_analyzed` carries the call and its analysis, so one event
/// has everything the follow-up needs (`voice.call.ended` has no analysis yet).
pub const TRIGGER_EVENT: &str = "voice.call.analyzed";
/// The tag the flow puts on the contact.
pub const CALL_TAG: &str = "ai-call";
/// The follow-up text the flow sends.
pub const FOLLOW_UP_SMS: &str =
    "Thanks for talking with Sandbox Dental! Reply to this text if you have any questions.";
/// Terminal execution states, as REST spells them.
const FINISHED: [&str; 3] = [
    "EXECUTION_STATE_SUCCEEDED",
    "EXECUTION_STATE_FAILED",
    "EXECUTION_STATE_CANCELLED",
];

/// A REST client of the gateway that can narrate each call.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    narrate: bool,
}

impl Rest {
    /// `base` is the gateway's URL (`http://127.0.0.1:8080`); `narrate` prints every call.
    pub fn new(base: &str, narrate: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // OAuth redirects are followed by hand, as a browser would, to show each hop.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Rest {
            http,
            base: base.trim_end_matches('/').to_owned(),
            narrate,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client, silent (for polling).
    pub fn quiet(&self) -> Rest {
        Rest {
            narrate: false,
            ..self.clone()
        }
    }

    fn say(&self, line: &str) {
        if self.narrate {
            println!("{line}");
        }
    }

    /// One call; any status is returned with its JSON body (or the text, as a JSON string).
    pub async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| {
            format!("{method} {path}: is the platform running at {}?", self.base)
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.say(&format!(
            "    {method} {} → {status} {}",
            shorten(path),
            summary(&value)
        ));
        Ok((status, value))
    }

    /// One call that must succeed (2xx).
    pub async fn ok(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(Some(token), method.clone(), path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {value}"
        );
        Ok(value)
    }

    /// Posts a webhook body as the provider does (raw bytes, its signature header).
    pub async fn webhook(
        &self,
        provider: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> anyhow::Result<u16> {
        let path = format!("/v1/webhooks/{provider}");
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let status = req.send().await?.status().as_u16();
        self.say(&format!("    POST {path} → {status}"));
        Ok(status)
    }
}

/// Long query strings (OAuth codes) are cut so each call fits on a line.
fn shorten(path: &str) -> String {
    match path.split_once('?') {
        Some((p, q)) if q.len() > 40 => format!("{p}?…"),
        _ => path.to_owned(),
    }
}

/// The resource name (and state) of an answer, or the first words of an error.
fn summary(value: &Value) -> String {
    let state = value
        .get("state")
        .and_then(Value::as_str)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if value.get("authorizationUrl").is_some() {
        return "authorization URL issued; the browser goes there".to_owned();
    }
    if let Some(name) = value.get("name").and_then(Value::as_str) {
        return format!("{name}{state}");
    }
    if let Some(name) = value.pointer("/connection/name").and_then(Value::as_str) {
        return format!("{name} connected");
    }
    if let Some(list) = value.get("executions").and_then(Value::as_array) {
        return format!("{} execution(s)", list.len());
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().take(100).collect()
}

/// The story's REST steps for one tenant and one client.
pub struct Story {
    pub rest: Rest,
    pub tenant: String,
    pub client_id: String,
    /// The platform admin's token.
    pub admin: String,
    /// The tenant admin's token; the platform admin's until [`Story::onboard`] made a tenant.
    pub tenant_admin: String,
}

impl Story {
    pub fn tenant_name(&self) -> String {
        format!("tenants/{}", self.tenant)
    }

    /// `tenants/{tenant}/clients/{client}`.
    pub fn client(&self) -> String {
        format!("tenants/{}/clients/{}", self.tenant, self.client_id)
    }

    pub fn connection(&self, id: &str) -> String {
        format!("{}/connections/{id}", self.client())
    }

    /// The platform admin creates the agency and its client business.
    pub async fn onboard(&self) -> anyhow::Result<()> {
        self.rest
            .ok(
                &self.admin,
                Method::POST,
                &format!("/v1/tenants?tenantId={}", self.tenant),
                Some(&json!({"displayName": "Acme Agency", "contactEmail": "ops@acme.example"})),
            )
            .await?;
        self.rest
            .ok(
                &self.admin,
                Method::POST,
                &format!(
                    "/v1/tenants/{}/clients?clientId={}",
                    self.tenant, self.client_id
                ),
                Some(&json!({"displayName": "Sandbox Dental", "timeZone": "America/Chicago"})),
            )
            .await?;
        Ok(())
    }

    /// Connects an account with an API key (Retell, Twilio).
    pub async fn connect_api_key(
        &self,
        id: &str,
        provider: &str,
        credential: Value,
    ) -> anyhow::Result<Value> {
        self.rest
            .ok(
                &self.tenant_admin,
                Method::POST,
                &format!("/v1/{}/connections", self.client()),
                Some(&json!({
                    "connectionId": id,
                    "connection": {"provider": provider, "displayName": id},
                    "credential": credential,
                })),
            )
            .await
    }

    /// Connects an account through OAuth (GHL, Google Calendar): start over REST, let the
    /// provider's authorize page answer (the sandbox approves at once), and hand its redirect
    /// to the platform's public callback route, as the browser would.
    pub async fn connect_oauth(&self, id: &str, provider: &str) -> anyhow::Result<Value> {
        let started = self
            .rest
            .ok(
                &self.tenant_admin,
                Method::POST,
                &format!("/v1/{}/connections:startOAuth", self.client()),
                Some(&json!({"provider": provider, "connectionId": id})),
            )
            .await?;
        let authorize = started["authorizationUrl"]
            .as_str()
            .context("startOAuth gave no authorizationUrl")?;
        let consent = self.rest.http.get(authorize).send().await?;
        let location = consent
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("the provider did not redirect back ({})", consent.status()))?
            .to_owned();
        self.rest.say(&format!(
            "    GET <provider authorize page> → {} back to the platform",
            consent.status().as_u16()
        ));
        let query = location
            .split_once('?')
            .map(|(_, q)| q)
            .context("the redirect carries no code")?;
        let (status, done) = self
            .rest
            .send(
                None,
                Method::GET,
                &format!("/v1/connections/oauth/callback?{query}"),
                None,
            )
            .await?;
        anyhow::ensure!(status == 200, "OAuth callback answered {status}: {done}");
        Ok(done["connection"].clone())
    }

    /// Ties the client's Retell agent to the tenant: ingest finds the endpoint by the call's
    /// `agent_id` and verifies the signature with `api_key`.
    pub async fn register_retell_endpoint(
        &self,
        agent_id: &str,
        api_key: &str,
    ) -> anyhow::Result<Value> {
        self.rest
            .ok(
                &self.tenant_admin,
                Method::POST,
                &format!(
                    "/v1/{}/webhookEndpoints?webhookEndpointId=retell",
                    self.client()
                ),
                Some(&json!({
                    "displayName": "Front desk voice agent",
                    "provider": "PROVIDER_RETELL",
                    "retell": {"agentId": agent_id},
                    "secret": api_key,
                })),
            )
            .await
    }

    /// Creates the follow-up flow and activates its first version; returns the flow's name.
    pub async fn install_flow(&self, flow_id: &str, delay_secs: u32) -> anyhow::Result<String> {
        let created = self
            .rest
            .ok(
                &self.tenant_admin,
                Method::POST,
                &format!("/v1/{}/flows?flowId={flow_id}", self.tenant_name()),
                Some(&json!({
                    "displayName": "After-call follow-up",
                    "definition": flow_definition(&self.client(), sandbox::TWILIO_NUMBER, delay_secs),
                })),
            )
            .await?;
        let draft = created["draftVersion"]
            .as_str()
            .context("the new flow has no draft version")?;
        self.rest
            .ok(
                &self.tenant_admin,
                Method::POST,
                &format!("/v1/{draft}:activate"),
                Some(&json!({})),
            )
            .await?;
        created["name"]
            .as_str()
            .map(str::to_owned)
            .context("the new flow has no name")
    }

    /// The latest execution of `flow` once `done` holds for it (with its steps), polling until
    /// `deadline`.
    pub async fn execution_when(
        &self,
        flow: &str,
        deadline: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let until = Instant::now() + deadline;
        let path = format!("/v1/{}/executions?flow={flow}", self.tenant_name());
        // Polled quietly; the final answer is narrated once.
        let quiet = self.rest.quiet();
        let mut last = Value::Null;
        loop {
            let list = quiet
                .ok(&self.tenant_admin, Method::GET, &path, None)
                .await?;
            if let Some(name) = list["executions"]
                .as_array()
                .and_then(|l| l.first())
                .and_then(|e| e["name"].as_str())
            {
                let execution = quiet
                    .ok(
                        &self.tenant_admin,
                        Method::GET,
                        &format!("/v1/{name}"),
                        None,
                    )
                    .await?;
                if done(&execution) {
                    self.rest
                        .say(&format!("    GET /v1/{name} → 200 {}", summary(&execution)));
                    return Ok(execution);
                }
                last = execution;
            }
            anyhow::ensure!(
                Instant::now() < until,
                "no execution of {flow} reached the expected state in {deadline:?}; last seen: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether an execution (as REST returns it) has finished.
pub fn finished(execution: &Value) -> bool {
    execution["state"]
        .as_str()
        .is_some_and(|s| FINISHED.contains(&s))
}

/// The follow-up flow of `client`. The call's metadata carries the GHL contact (`contact_id`,
/// `phone`), as the agency's dialer sets it when it places the call; the analysis says whether
/// an appointment was booked and when. The text waits `delay_secs` so it does not arrive while
/// the caller is still on the phone — and gives the test a point to restart the platform at.
pub fn flow_definition(client: &str, from_number: &str, delay_secs: u32) -> Value {
    let connection = |id: &str| format!("{client}/connections/{id}");
    let booked = "event.data.custom_analysis_data";
    json!({
        "$schema": "https://schemas.maxai.dev/orchestrator/flow.schema.json",
        "triggers": [{"id": "call-analyzed", "event": {
            "type": TRIGGER_EVENT,
            "filter": format!("event.client == '{client}' && has(event.data.metadata.contact_id)"),
        }}],
        "steps": [
            {"id": "note", "call": {
                "method": "maxai.ports.crm.v1.CrmService/AddContactNote",
                "connection": connection("crm"),
                "input": {
                    "contactId": "event.data.metadata.contact_id",
                    "body": "'AI call summary: ' + event.data.summary",
                },
            }, "retry": {"maxAttempts": 3, "initialBackoffMs": 200}},
            {"id": "tag", "call": {
                "method": "maxai.ports.crm.v1.CrmService/UpdateContact",
                "connection": connection("crm"),
                "input": {
                    "contact": {"id": "event.data.metadata.contact_id"},
                    "addTags": format!("['{CALL_TAG}']"),
                },
            }, "retry": {"maxAttempts": 3, "initialBackoffMs": 200}},
            {"id": "pause", "delay": {"seconds": delay_secs}},
            {"id": "sms", "call": {
                "method": "maxai.ports.messaging.v1.MessagingService/SendSms",
                "connection": connection("twilio"),
                "input": {
                    "fromNumber": format!("'{from_number}'"),
                    "toNumber": "event.data.metadata.phone",
                    "body": format!("'{FOLLOW_UP_SMS}'"),
                },
            }, "retry": {"maxAttempts": 3, "initialBackoffMs": 200}},
            {"id": "booked", "if": {
                "condition": format!("has({booked}.appointment_booked) && {booked}.appointment_booked == true"),
                "then": "book",
                "else": "end",
            }},
            {"id": "book", "call": {
                "method": "maxai.ports.calendar.v1.CalendarService/CreateEvent",
                "connection": connection("calendar"),
                "input": {
                    "calendarId": "'primary'",
                    "event": {
                        "summary": "'Appointment booked by the AI receptionist'",
                        "description": "event.data.summary",
                        "startTime": format!("{booked}.appointment_start"),
                        "endTime": format!("{booked}.appointment_end"),
                    },
                },
            }, "retry": {"maxAttempts": 3, "initialBackoffMs": 200}},
        ],
        "output": {"smsSid": "steps.sms.output.sid"},
    })
}

/// A Retell call webhook body (`call_ended`, or `call_analyzed` with `analysis`), shaped as
/// Retell posts it (and as the fake Retell builds it).
pub fn retell_call_webhook(
    event: &str,
    call_id: &str,
    agent_id: &str,
    metadata: &Value,
    start_ms: u64,
    analysis: Option<&Value>,
) -> Vec<u8> {
    let duration_ms = 94_000;
    let mut call = json!({
        "call_id": call_id,
        "call_type": "phone_call",
        "agent_id": agent_id,
        "agent_version": 0,
        "call_status": "ended",
        "direction": "outbound",
        "from_number": sandbox::TWILIO_NUMBER,
        "to_number": metadata["phone"],
        "metadata": metadata,
        "start_timestamp": start_ms,
        "end_timestamp": start_ms + duration_ms,
        "duration_ms": duration_ms,
        "disconnection_reason": "user_hangup",
        "transcript": "Agent: Hi Pat, this is Sandbox Dental. Shall we book your check-up?\nUser: Yes, Tuesday at three works.\n",
    });
    if let Some(a) = analysis {
        call["call_analysis"] = a.clone();
    }
    json!({"event": event, "call": call})
        .to_string()
        .into_bytes()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn step(n: u32, words: &str) {
    println!("\n{n}. {words}");
}

/// `maxai demo`: runs the story against the platform at `url` (REST) and `grpc`, minting
/// tokens from the key store `config` names (the same `./data` as `maxai up`).
pub async fn run(config: &PlatformConfig, url: &str, grpc: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let ring = maxai_iam::key_ring(&config.storage, &config.iam)
        .await
        .context(
            "the local key store (run the demo where `maxai up` runs, with the same config)",
        )?;
    let issue = |subject: &str| -> anyhow::Result<String> {
        let tenant = maxai_kit::auth::tenant_of(subject).unwrap_or_default();
        Ok(ring.issue(subject, tenant, None)?.0)
    };
    let stamp = now_ms() / 1000;
    let rest = Rest::new(url, true)?;
    let (status, _) = rest.send(None, Method::GET, "/healthz", None).await?;
    anyhow::ensure!(
        status == 200,
        "the platform at {url} is not healthy ({status})"
    );
    let mut story = Story {
        rest,
        tenant: format!("demo-{stamp}"),
        client_id: "smile-dental".to_owned(),
        admin: issue(maxai_iam::BOOTSTRAP_ADMIN)?,
        tenant_admin: String::new(),
    };

    step(
        1,
        &format!(
            "The platform admin onboards agency {} and its client Sandbox Dental.",
            story.tenant
        ),
    );
    story.onboard().await?;
    let ann = format!("tenants/{}/users/ann", story.tenant);
    maxai_iam::ensure_grant(&config.storage, &ann, "roles/tenant-admin", None).await?;
    println!("    (key store) {ann} holds roles/tenant-admin — as `maxai token --role` does");
    story.tenant_admin = issue(&ann)?;

    step(
        2,
        "Ann, the agency's admin, connects the client's accounts (sandbox providers).",
    );
    story
        .connect_oauth("crm", "CONNECTION_PROVIDER_GHL")
        .await?;
    story
        .connect_oauth("calendar", "CONNECTION_PROVIDER_GOOGLE_CALENDAR")
        .await?;
    story
        .connect_api_key(
            "retell",
            "CONNECTION_PROVIDER_RETELL",
            json!({"apiKey": sandbox::RETELL_API_KEY}),
        )
        .await?;
    story
        .connect_api_key(
            "twilio",
            "CONNECTION_PROVIDER_TWILIO",
            json!({"apiKey": sandbox::TWILIO_AUTH_TOKEN, "accountId": sandbox::TWILIO_ACCOUNT_SID}),
        )
        .await?;

    step(
        3,
        "A lead exists in the client's CRM (the CRM port, over gRPC: ports have no REST route).",
    );
    let phone = "+14155550123";
    let contact_id =
        create_contact(&story, grpc, &issue(maxai_iam::SERVICE_ACCOUNT)?, phone).await?;

    step(
        4,
        "The client's Retell voice agent is registered, so its webhooks reach this tenant.",
    );
    let agent_id = format!("agent_demo{stamp}");
    story
        .register_retell_endpoint(&agent_id, sandbox::RETELL_API_KEY)
        .await?;

    step(
        5,
        "Ann activates the flow: call analyzed → CRM note + tag → (pause) → SMS → book if booked.",
    );
    let flow = story.install_flow("after-call", 2).await?;

    step(6, "The voice agent calls the lead; Retell posts the signed call_ended and call_analyzed webhooks.");
    let call_id = format!("call_demo{stamp}");
    let metadata = json!({"contact_id": contact_id, "phone": phone});
    let start_ms = now_ms().saturating_sub(120_000);
    let analysis = json!({
        "call_summary": "Pat agreed to a check-up on Tuesday at 15:00.",
        "user_sentiment": "Positive",
        "call_successful": true,
        "in_voicemail": false,
        "custom_analysis_data": {
            "appointment_booked": true,
            "appointment_start": "2027-01-12T15:00:00Z",
            "appointment_end": "2027-01-12T15:30:00Z",
        },
    });
    for (event, analysis) in [("call_ended", None), ("call_analyzed", Some(&analysis))] {
        let body = retell_call_webhook(event, &call_id, &agent_id, &metadata, start_ms, analysis);
        let signature = maxai_fakes::retell::signature(sandbox::RETELL_API_KEY, &body, now_ms());
        let status = story
            .rest
            .webhook(
                "retell",
                &body,
                &[(maxai_fakes::retell::SIGNATURE_HEADER, signature)],
            )
            .await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "the {event} webhook answered {status}"
        );
    }

    step(
        7,
        "The flow runs; its execution and every step are visible to the tenant over REST.",
    );
    let execution = story
        .execution_when(&flow, Duration::from_secs(45), finished)
        .await?;
    println!(
        "\n    execution {} is {}",
        execution["name"].as_str().unwrap_or("?"),
        execution["state"].as_str().unwrap_or("?")
    );
    for s in execution["steps"].as_array().into_iter().flatten() {
        println!(
            "      {:<7} {:<10} {:<52} {}",
            s["stepId"].as_str().unwrap_or("?"),
            s["state"]
                .as_str()
                .unwrap_or("?")
                .trim_start_matches("STEP_RUN_STATE_"),
            s["method"].as_str().unwrap_or(""),
            step_result(s),
        );
    }
    anyhow::ensure!(
        execution["state"] == "EXECUTION_STATE_SUCCEEDED",
        "the execution did not succeed: {}",
        execution["error"]
    );
    println!(
        "\nDone in {:.1} s: the CRM note and tag, the SMS and the calendar event are in the sandbox providers.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a step run left, in a few words: the provider's id of what it made, or its error.
fn step_result(run: &Value) -> String {
    if let Some(message) = run["error"]["message"].as_str() {
        return message.chars().take(80).collect();
    }
    let out = &run["output"];
    let found = [
        ("/note/id", "note"),
        ("/sid", "SMS"),
        ("/event/id", "calendar event"),
    ]
    .into_iter()
    .find_map(|(pointer, what)| {
        out.pointer(pointer)
            .and_then(Value::as_str)
            .map(|id| format!("{what} {id}"))
    });
    if let Some(found) = found {
        return found;
    }
    if let Some(tags) = out.pointer("/contact/tags") {
        return format!("tags {tags}");
    }
    match run["kind"].as_str() {
        Some("STEP_KIND_DELAY") => "waited".to_owned(),
        Some("STEP_KIND_CONDITION") => format!("→ {out}"),
        _ => String::new(),
    }
}

/// Creates (upserts) the lead in the client's GHL location through the CRM port, as the
/// platform's service identity; returns its GHL contact id.
async fn create_contact(
    story: &Story,
    grpc: &str,
    mesh: &str,
    phone: &str,
) -> anyhow::Result<String> {
    use maxai_proto::maxai::{
        common::v1::CallContext,
        ports::crm::v1::{crm_service_client::CrmServiceClient, Contact, CreateContactRequest},
    };
    let channel = tonic::transport::Channel::from_shared(grpc.to_owned())?
        .connect()
        .await
        .with_context(|| format!("gRPC at {grpc}"))?;
    let mut crm = CrmServiceClient::new(maxai_kit::auth::authed(channel, mesh)?);
    let created = crm
        .create_contact(CreateContactRequest {
            context: Some(CallContext {
                connection: story.connection("crm"),
                idempotency_key: format!("demo/{}/contact", story.tenant),
            }),
            contact: Some(Contact {
                first_name: "Pat".into(),
                last_name: "Lee".into(),
                phone: phone.into(),
                email: "pat@example.test".into(),
                source: "maxai demo".into(),
                ..Default::default()
            }),
            upsert: true,
        })
        .await
        .map_err(|s| anyhow::anyhow!("CrmService/CreateContact: {} {}", s.code(), s.message()))?
        .into_inner();
    let id = created
        .contact
        .map(|c| c.id)
        .filter(|id| !id.is_empty())
        .context("GHL returned no contact id")?;
    println!("    gRPC maxai.ports.crm.v1.CrmService/CreateContact → contact {id} ({phone})");
    Ok(id)
}
