//! Provider webhooks end to end through the gateway's raw route, on SQLite and on PostgreSQL +
//! Redis: signed webhooks are stored once and answered as each provider expects; forged,
//! stale, unattributable ones are refused with nothing stored; a signed payload that fails its
//! schema is quarantined, acknowledged and replayable.
mod common;

use common::{
    invoice_paid, retell_signature, stripe_signature, twilio_signature, unix_now, Up, WHSEC,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TWILIO_TOKEN: &str = "twilio-auth-token";
const RETELL_KEY: &str = "retell-api-key";

async fn post(
    up: &Up,
    provider: &str,
    query: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, String, String) {
    let mut req = up
        .client
        .post(format!("{}/v1/webhooks/{provider}{query}", up.http))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.text().await.expect("body"))
}

async fn events(up: &Up, tenant: &str) -> Vec<Value> {
    let admin = up.token(maxai_iam::BOOTSTRAP_ADMIN);
    let (status, reply) = up
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/events?pageSize=100"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn webhooks_are_verified_stored_once_and_answered_as_each_provider_expects() {
    for backend in maxai_testkit::backends().await {
        let up = common::up(&backend).await;
        up.admin(
            Method::POST,
            "/v1/tenants?tenantId=acme",
            json!({"displayName": "Acme", "contactEmail": "ops@acme.example"}),
        )
        .await;
        up.admin(
            Method::POST,
            "/v1/tenants/acme/clients?clientId=smile",
            json!({"displayName": "Smile Dental", "timeZone": "America/Chicago"}),
        )
        .await;
        for (id, endpoint) in [
            (
                "stripe",
                json!({"displayName": "Stripe", "provider": "PROVIDER_STRIPE", "stripe": {"accountId": "acct_agency1"}, "secret": WHSEC}),
            ),
            (
                "twilio",
                json!({"displayName": "Twilio", "provider": "PROVIDER_TWILIO", "twilio": {"accountSid": "AC0123456789abcdef0123456789abcdef", "toNumber": "+15550001111"}, "secret": TWILIO_TOKEN}),
            ),
            (
                "retell",
                json!({"displayName": "Retell", "provider": "PROVIDER_RETELL", "retell": {"agentId": "agent_1"}, "secret": RETELL_KEY}),
            ),
        ] {
            up.admin(
                Method::POST,
                &format!("/v1/tenants/acme/clients/smile/webhookEndpoints?webhookEndpointId={id}"),
                endpoint,
            )
            .await;
        }

        // Stripe: stored once, acknowledged twice.
        let body = invoice_paid("evt_1");
        let sig = stripe_signature(WHSEC, unix_now(), &body);
        let headers = [
            ("stripe-signature", sig.clone()),
            ("content-type", "application/json".into()),
        ];
        let (status, _, reply) = post(&up, "stripe", "", &headers, &body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let (status, _, _) = post(&up, "stripe", "", &headers, &body).await;
        assert_eq!(status, StatusCode::OK, "a duplicate is acknowledged");
        let stored = events(&up, "acme").await;
        assert_eq!(stored.len(), 1, "stored once: {stored:?}");
        let ce = &stored[0]["canonicalEvent"];
        assert_eq!(ce["type"], "payments.invoice.paid", "{ce}");
        assert_eq!(ce["tenant"], "tenants/acme");
        assert_eq!(ce["client"], "tenants/acme/clients/smile");
        assert_eq!(ce["providerEventId"], "evt_1");

        // Refusals store nothing and say so as problem+json.
        let tampered = body.replace("4900", "1");
        let refusals = [
            ("tampered body", "stripe", headers.to_vec(), tampered),
            (
                "wrong secret",
                "stripe",
                vec![
                    (
                        "stripe-signature",
                        stripe_signature("whsec_other", unix_now(), &invoice_paid("evt_2")),
                    ),
                    ("content-type", "application/json".into()),
                ],
                invoice_paid("evt_2"),
            ),
            (
                "expired",
                "stripe",
                vec![
                    (
                        "stripe-signature",
                        stripe_signature(WHSEC, unix_now() - 3600, &invoice_paid("evt_3")),
                    ),
                    ("content-type", "application/json".into()),
                ],
                invoice_paid("evt_3"),
            ),
            (
                "from the future",
                "stripe",
                vec![
                    (
                        "stripe-signature",
                        stripe_signature(WHSEC, unix_now() + 3600, &invoice_paid("evt_4")),
                    ),
                    ("content-type", "application/json".into()),
                ],
                invoice_paid("evt_4"),
            ),
            (
                "missing header",
                "stripe",
                vec![("content-type", "application/json".into())],
                invoice_paid("evt_5"),
            ),
            (
                "unknown account",
                "stripe",
                vec![
                    (
                        "stripe-signature",
                        stripe_signature(
                            WHSEC,
                            unix_now(),
                            &invoice_paid("evt_6").replace("acct_agency1", "acct_nobody"),
                        ),
                    ),
                    ("content-type", "application/json".into()),
                ],
                invoice_paid("evt_6").replace("acct_agency1", "acct_nobody"),
            ),
        ];
        for (what, provider, headers, body) in refusals {
            let (status, ct, reply) = post(&up, provider, "", &headers, &body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {reply}");
            assert_eq!(ct, "application/problem+json", "{what}");
        }
        let (status, _, _) = post(&up, "mailchimp", "", &[], "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "unknown provider");
        assert_eq!(
            events(&up, "acme").await.len(),
            1,
            "nothing stored by a refusal"
        );

        // Twilio: the signature covers the public URL the provider called (through a proxy here),
        // and the answer is empty TwiML.
        let public = "https://hooks.acme.example/v1/webhooks/twilio";
        let params = [
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15557654321"),
            ("To", "+15550001111"),
            ("Body", "Can I book Tuesday?"),
            ("NumMedia", "0"),
            ("SmsStatus", "received"),
            ("ApiVersion", "2010-04-01"),
        ];
        let form: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let twilio_headers = [
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-forwarded-proto", "https".to_owned()),
            ("x-forwarded-host", "hooks.acme.example".to_owned()),
            (
                "x-twilio-signature",
                twilio_signature(TWILIO_TOKEN, public, &params),
            ),
        ];
        let (status, ct, reply) = post(&up, "twilio", "", &twilio_headers, &form).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(ct, "text/xml");
        assert!(reply.ends_with("<Response></Response>"), "{reply}");
        // Signed for another URL: refused.
        let mut wrong_url = twilio_headers.clone();
        wrong_url[3].1 = twilio_signature(
            TWILIO_TOKEN,
            "https://elsewhere.example/v1/webhooks/twilio",
            &params,
        );
        let (status, _, _) = post(
            &up,
            "twilio",
            "",
            &wrong_url,
            &form.replace("SM0123456789abcdef", "SM1123456789abcdef"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Retell: 204, no body; a payload that fails its schema is quarantined, acknowledged, and
        // listed.
        let now_ms = unix_now() * 1000;
        let ended = json!({"event": "call_ended", "call": {
            "call_id": "call_1", "agent_id": "agent_1", "call_type": "phone_call", "call_status": "ended",
            "direction": "inbound", "from_number": "+15557654321", "to_number": "+15550001111",
            "start_timestamp": now_ms - 60_000, "end_timestamp": now_ms, "disconnection_reason": "user_hangup",
            "transcript": "Agent: Hello"
        }})
        .to_string();
        let retell_headers = |body: &str| {
            vec![
                ("content-type", "application/json".to_owned()),
                (
                    "x-retell-signature",
                    retell_signature(RETELL_KEY, unix_now() * 1000, body),
                ),
            ]
        };
        let (status, _, reply) = post(&up, "retell", "", &retell_headers(&ended), &ended).await;
        assert_eq!((status, reply.as_str()), (StatusCode::NO_CONTENT, ""));
        let broken = json!({"event": "call_ended", "call": {"call_id": 42, "agent_id": "agent_1"}})
            .to_string();
        let (status, _, _) = post(&up, "retell", "", &retell_headers(&broken), &broken).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "quarantined, yet acknowledged"
        );
        let admin = up.token(maxai_iam::BOOTSTRAP_ADMIN);
        let (status, q) = up
            .call(
                Method::GET,
                "/v1/tenants/acme/quarantinedEvents",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{q}");
        assert_eq!(
            q["quarantinedEvents"].as_array().map(Vec::len),
            Some(1),
            "{q}"
        );

        // Replaying the quarantined payload re-runs validation: it fails again and stays
        // quarantined with the new errors, nothing stored.
        let q_name = q["quarantinedEvents"][0]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        let (status, replayed) = up
            .call(
                Method::POST,
                &format!("/v1/{q_name}:replay"),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{replayed}");
        assert_eq!(
            replayed["outcome"], "INGEST_OUTCOME_QUARANTINED",
            "{replayed}"
        );
        // A payload quarantined by an older, stricter schema replays into a stored event once
        // the schema is fixed (simulated: the store holds a payload today's schema accepts).
        let db = maxai_kit::storage::connect(
            &backend.storage,
            maxai_webhook_ingress::STORAGE_NAME,
            &maxai_webhook_ingress::MIGRATIONS,
        )
        .await
        .expect("webhook db");
        let store = maxai_webhook_ingress::store::SqlEventStore::new(db);
        let fixed = ended.replace("call_1", "call_2");
        let held = maxai_webhook_ingress::store::EventStore::quarantine(
            &store,
            &maxai_webhook_ingress::domain::NewQuarantined {
                tenant_id: "acme".into(),
                client_id: "smile".into(),
                endpoint_id: "retell".into(),
                provider: maxai_webhook_ingress::domain::Provider::Retell,
                raw_body: fixed.into_bytes(),
                headers: vec![maxai_webhook_ingress::domain::Header {
                    name: "content-type".into(),
                    value: "application/json".into(),
                }],
                provider_event_type: "call_ended".into(),
                provider_event_id: String::new(),
                failure: maxai_webhook_ingress::domain::QuarantineFailure {
                    reason: maxai_webhook_ingress::domain::QuarantineReason::SchemaInvalid,
                    schema_errors: Vec::new(),
                    error_message: "an older schema refused it".into(),
                    schema_url: String::new(),
                },
                received_at_us: maxai_kit::storage::now_micros(),
            },
        )
        .await
        .expect("quarantine");
        let (status, replayed) = up
            .call(
                Method::POST,
                &format!("/v1/tenants/acme/quarantinedEvents/{}:replay", held.id),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{replayed}");
        assert_eq!(replayed["outcome"], "INGEST_OUTCOME_ACCEPTED", "{replayed}");
        assert_eq!(
            replayed["quarantinedEvent"]["state"], "QUARANTINE_STATE_REPLAYED",
            "{replayed}"
        );
        let (status, again) = up
            .call(
                Method::POST,
                &format!("/v1/tenants/acme/quarantinedEvents/{}:replay", held.id),
                Some(&admin),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(
            again["outcome"], "INGEST_OUTCOME_DUPLICATE",
            "a second replay stores nothing new: {again}"
        );

        let types: Vec<String> = events(&up, "acme")
            .await
            .iter()
            .map(|e| {
                e["canonicalEvent"]["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        for want in [
            "payments.invoice.paid",
            "messaging.sms.received",
            "voice.call.ended",
        ] {
            assert!(types.iter().any(|t| t == want), "{want} not in {types:?}");
        }
        assert_eq!(types.len(), 4, "three webhooks and one replay: {types:?}");
        eprintln!("webhooks passed on {}", backend.name);
    }
}

/// An event acknowledged by a process that stopped before delivering it is delivered by the
/// next one, once, with the platform's service identity.
#[tokio::test]
async fn acknowledged_events_are_delivered_after_a_restart() {
    for backend in maxai_testkit::backends().await {
        let recorder = common::Recorder::default();
        let consumer = recorder.serve().await;
        let with_consumer = |deliver: bool| {
            let consumer = consumer.clone();
            move |c: &mut maxai_platform::PlatformConfig| {
                c.webhook.consumers.insert("recorder".into(), consumer);
                c.webhook.dispatch.enabled = deliver;
            }
        };
        let first = common::up_with(&backend, with_consumer(false)).await;
        first
            .admin(
                Method::POST,
                "/v1/tenants?tenantId=acme",
                json!({"displayName": "Acme", "contactEmail": "ops@acme.example"}),
            )
            .await;
        first
            .admin(
                Method::POST,
                "/v1/tenants/acme/clients?clientId=smile",
                json!({"displayName": "Smile", "timeZone": "UTC"}),
            )
            .await;
        first
            .admin(
                Method::POST,
                "/v1/tenants/acme/clients/smile/webhookEndpoints?webhookEndpointId=stripe",
                json!({"displayName": "Stripe", "provider": "PROVIDER_STRIPE", "stripe": {"accountId": "acct_agency1"}, "secret": WHSEC}),
            )
            .await;
        let body = invoice_paid("evt_restart");
        let headers = [
            (
                "stripe-signature",
                stripe_signature(WHSEC, unix_now(), &body),
            ),
            ("content-type", "application/json".into()),
        ];
        let (status, _, _) = post(&first, "stripe", "", &headers, &body).await;
        assert_eq!(status, StatusCode::OK);
        drop(first);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            recorder.got.lock().expect("lock").is_empty(),
            "nothing delivered while delivery was off"
        );

        let second = common::up_with(&backend, with_consumer(true)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while recorder.got.lock().expect("lock").is_empty() && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Give a second delivery the chance to happen, if it wrongly would.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let got = recorder.got.lock().expect("lock").clone();
        assert_eq!(
            got.len(),
            1,
            "delivered once after the restart: {:?}",
            got.iter().map(|(e, _)| &e.id).collect::<Vec<_>>()
        );
        let (event, bearer) = &got[0];
        assert_eq!(
            (event.r#type.as_str(), event.tenant.as_str()),
            ("payments.invoice.paid", "tenants/acme")
        );
        let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
        let claims = second.ring.verify(token).expect("a platform token");
        assert_eq!(
            claims.sub,
            maxai_iam::SERVICE_ACCOUNT,
            "the platform's service identity"
        );
        // The event shows as delivered.
        let admin = second.token(maxai_iam::BOOTSTRAP_ADMIN);
        let (status, listed) = second
            .call(Method::GET, "/v1/tenants/acme/events", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            listed["events"][0]["deliveryState"], "DELIVERY_STATE_DELIVERED",
            "{listed}"
        );
        recorder.got.lock().expect("lock").clear();
    }
}
