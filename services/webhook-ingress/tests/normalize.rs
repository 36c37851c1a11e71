//! Validation and normalization of provider webhooks: one sample payload per schema (built
//! from the shapes in PROVIDERS.md), the canonical events they map to, schema failures with
//! JSON pointers, unsupported types, stable ids, ordering keys and exact money.
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maxai_webhook_ingress::domain::QuarantineReason;
use maxai_webhook_ingress::normalize::{
    self, account_keys, parse, schemas, types, validate, AccountKeys, Invalid, Normalized, Parsed,
    Provider,
};
use serde_json::{json, Value};

// ---- helpers ---------------------------------------------------------------------------------

fn received_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A webhook body as the provider sends it: JSON, or form-encoded for Twilio.
#[derive(Clone)]
enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

impl Body {
    fn bytes(&self) -> (&'static str, Vec<u8>) {
        match self {
            Body::Json(v) => ("application/json", v.to_string().into_bytes()),
            Body::Form(pairs) => {
                let mut s = form_urlencoded::Serializer::new(String::new());
                for (k, v) in pairs {
                    s.append_pair(k, v);
                }
                ("application/x-www-form-urlencoded", s.finish().into_bytes())
            }
        }
    }

    fn parsed(&self, provider: Provider) -> Parsed {
        let (content_type, bytes) = self.bytes();
        parse(provider, content_type, &bytes).expect("readable")
    }

    fn normalized(&self, provider: Provider) -> Normalized {
        let parsed = self.parsed(provider);
        normalize::normalize(provider, &parsed, received_at())
            .unwrap_or_else(|e| panic!("{provider:?} {}: {e}", parsed.event_type))
    }

    fn with(&self, name: &'static str, value: &str) -> Body {
        match self {
            Body::Form(pairs) => {
                let mut pairs: Vec<_> = pairs.iter().filter(|(k, _)| *k != name).cloned().collect();
                pairs.push((name, value.to_owned()));
                Body::Form(pairs)
            }
            Body::Json(_) => panic!("form bodies only"),
        }
    }
}

fn form(pairs: &[(&'static str, &str)]) -> Body {
    Body::Form(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
}

/// Every JSON number in `v` is an integer (no floats reach normalized data).
fn assert_no_floats(v: &Value, at: &str) {
    match v {
        Value::Number(n) => assert!(n.is_i64() || n.is_u64(), "float at {at}: {n}"),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_no_floats(item, &format!("{at}/{i}"));
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                assert_no_floats(item, &format!("{at}/{k}"));
            }
        }
        _ => {}
    }
}

// ---- samples ---------------------------------------------------------------------------------

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const SMS_IN: &str = "SM11111111111111111111111111111111";
const SMS_OUT: &str = "SM22222222222222222222222222222222";
const CALL: &str = "CA33333333333333333333333333333333";
const CONTACT_NUMBER: &str = "+15550100";
const OUR_NUMBER: &str = "+15550199";

fn ghl_contact(event: &str) -> Value {
    json!({
        "type": event, "locationId": "loc_123", "id": "contact_123",
        "firstName": "Ada", "lastName": "Lovelace", "name": "Ada Lovelace",
        "email": "ada@example.com", "phone": CONTACT_NUMBER, "companyName": "Engines Ltd",
        "address1": "1 Main St", "city": "Austin", "state": "TX", "country": "US",
        "postalCode": "78701", "source": "web form", "dateAdded": "2025-01-28T14:35:00.000Z",
        "dateOfBirth": null, "dnd": false, "tags": ["lead", "vip"],
        "website": "https://example.com", "attachments": [], "assignedTo": "user_1",
        "customFields": [{"id": "cf_1", "value": "blue"}]
    })
}

fn ghl_contact_update() -> Value {
    let mut v = ghl_contact("ContactUpdate");
    v["dateUpdated"] = json!("2025-01-29T09:00:00Z");
    v["tags"] = json!(["lead", "vip", "booked"]);
    v
}

fn ghl_contact_delete() -> Value {
    json!({"type": "ContactDelete", "locationId": "loc_123", "id": "contact_123",
           "webhookId": "wh_del_1", "timestamp": "2025-01-30T10:00:00Z"})
}

fn ghl_inbound_sms() -> Value {
    json!({
        "type": "InboundMessage", "locationId": "loc_123", "attachments": [],
        "body": "Do you have openings tomorrow?", "contactId": "contact_123",
        "contentType": "text/plain", "conversationId": "conv_1",
        "dateAdded": "2025-01-28T15:00:00.000Z", "direction": "inbound", "messageType": "SMS",
        "status": "delivered", "messageId": "msg_1", "conversationProviderId": "prov_1"
    })
}

fn ghl_outbound_email() -> Value {
    json!({
        "type": "OutboundMessage", "locationId": "loc_123",
        "attachments": ["https://files.example.com/a.pdf"], "body": "See attached",
        "contactId": "contact_123", "conversationId": "conv_1",
        "dateAdded": "2025-01-28T15:05:00.000Z", "direction": "outbound",
        "messageType": "Email", "status": "sent", "messageId": "msg_2", "userId": "user_1"
    })
}

fn ghl_appointment(event: &str, status: &str, updated: &str) -> Value {
    json!({
        "type": event, "locationId": "loc_123",
        "appointment": {
            "id": "appt_1", "address": "Zoom", "title": "Consultation", "calendarId": "cal_1",
            "contactId": "contact_123", "groupId": "grp_1", "appointmentStatus": status,
            "assignedUserId": "user_1", "users": ["user_1"], "notes": "First visit",
            "source": "booking_widget", "startTime": "2025-02-01T10:00:00-06:00",
            "endTime": "2025-02-01T10:30:00-06:00", "dateAdded": "2025-01-28T15:10:00.000Z",
            "dateUpdated": updated
        }
    })
}

fn ghl_opportunity(event: &str, status: &str) -> Value {
    json!({
        "type": event, "locationId": "loc_123", "id": "opp_1", "assignedTo": "user_1",
        "contactId": "contact_123", "monetaryValue": 1500.5, "name": "Annual plan",
        "pipelineId": "pipe_1", "pipelineStageId": "stage_1", "source": "ai agent",
        "status": status, "dateAdded": "2025-01-28T15:20:00.000Z"
    })
}

fn retell_call(event: &str) -> Value {
    let mut call = json!({
        "call_type": "phone_call", "from_number": CONTACT_NUMBER, "to_number": OUR_NUMBER,
        "direction": "inbound", "call_id": "call_abc", "agent_id": "agent_1",
        "agent_version": 3, "call_status": "ongoing", "metadata": {"client_ref": "x1"},
        "start_timestamp": 1_738_075_200_000_i64,
        "telephony_identifier": {"twilio_call_sid": CALL},
        "opt_out_sensitive_data_storage": false
    });
    if event != "call_started" {
        let extra = json!({
            "call_status": "ended", "end_timestamp": 1_738_075_325_500_i64,
            "duration_ms": 125_500, "disconnection_reason": "user_hangup",
            "transcript": "Agent: Hi, this is Max.\nUser: I'd like to book.\n",
            "transcript_object": [{"role": "agent", "content": "Hi, this is Max.", "words": []}],
            "recording_url": "https://retell.example/recording.wav",
            "call_cost": {
                "combined_cost": 70.5,
                "product_costs": [{"product": "retell_platform", "cost": 70.5, "unit_price": 0.56, "is_transfer_leg_cost": false}],
                "total_duration_seconds": 126, "total_duration_unit_price": 0.56
            },
            "latency": {"e2e": {"p50": 812.5}}
        });
        for (k, v) in extra.as_object().unwrap() {
            call[k] = v.clone();
        }
    }
    if event == "call_analyzed" {
        call["call_analysis"] = json!({
            "call_summary": "The caller booked a consultation.",
            "user_sentiment": "Positive", "call_successful": true, "in_voicemail": false,
            "custom_analysis_data": {"appointment_booked": true, "appointment_time": "2025-02-01T10:00:00-06:00"}
        });
    }
    json!({"event": event, "call": call})
}

fn twilio_inbound() -> Body {
    form(&[
        ("ToCountry", "US"),
        ("MediaContentType0", "image/jpeg"),
        ("SmsMessageSid", SMS_IN),
        ("NumMedia", "1"),
        ("SmsSid", SMS_IN),
        ("SmsStatus", "received"),
        ("Body", "Hi, can I book for Friday?"),
        ("To", OUR_NUMBER),
        ("NumSegments", "1"),
        ("MessageSid", SMS_IN),
        ("AccountSid", ACCOUNT),
        ("MessagingServiceSid", SERVICE),
        ("From", CONTACT_NUMBER),
        (
            "MediaUrl0",
            "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/SM/Media/ME1",
        ),
        ("ApiVersion", "2010-04-01"),
        ("FromCity", "AUSTIN"),
    ])
}

fn twilio_status(status: &str) -> Body {
    form(&[
        ("MessageSid", SMS_OUT),
        ("MessageStatus", status),
        ("SmsSid", SMS_OUT),
        ("SmsStatus", status),
        ("AccountSid", ACCOUNT),
        ("MessagingServiceSid", SERVICE),
        ("From", OUR_NUMBER),
        ("To", CONTACT_NUMBER),
        ("ApiVersion", "2010-04-01"),
    ])
}

fn twilio_call(status: &str) -> Body {
    let mut pairs = vec![
        ("CallSid", CALL),
        ("AccountSid", ACCOUNT),
        ("From", OUR_NUMBER),
        ("To", CONTACT_NUMBER),
        ("CallStatus", status),
        ("Direction", "outbound-api"),
        ("ApiVersion", "2010-04-01"),
        ("Timestamp", "Tue, 28 Jan 2025 14:45:00 +0000"),
        ("CallbackSource", "call-progress-events"),
        ("SequenceNumber", "3"),
    ];
    if status == "completed" {
        pairs.push(("CallDuration", "42"));
    }
    form(&pairs)
}

fn stripe_event(id: &str, event: &str, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2025-03-31.basil",
        "created": 1_738_075_200, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": event,
        "data": {"object": object}
    })
}

fn stripe_invoice_paid() -> Value {
    stripe_event(
        "evt_1Inv",
        "invoice.paid",
        json!({
            "id": "in_1", "object": "invoice", "customer": "cus_1", "customer_email": "ada@example.com",
            "currency": "usd", "amount_due": 4900, "amount_paid": 4900, "amount_remaining": 0,
            "total": 4900, "subtotal": 4900, "status": "paid", "number": "ABC-0001",
            "billing_reason": "subscription_cycle", "attempt_count": 1, "next_payment_attempt": null,
            "period_start": 1_735_689_600, "period_end": 1_738_368_000,
            "hosted_invoice_url": "https://invoice.stripe.com/i/x",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1", "metadata": {}}},
            "metadata": {"client": "c1"}, "lines": {"object": "list", "data": []}
        }),
    )
}

fn stripe_invoice_failed() -> Value {
    let mut v = stripe_event(
        "evt_2Fail",
        "invoice.payment_failed",
        json!({
            "id": "in_2", "object": "invoice", "customer": "cus_1", "currency": "jpy",
            "amount_due": 5000, "amount_paid": 0, "amount_remaining": 5000, "total": 5000,
            "status": "open", "billing_reason": "subscription_cycle", "attempt_count": 2,
            "next_payment_attempt": 1_738_161_600, "subscription": "sub_1"
        }),
    );
    v["account"] = json!("acct_1");
    v
}

fn stripe_subscription(id: &str, event: &str, status: &str) -> Value {
    stripe_event(
        id,
        event,
        json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
            "cancel_at_period_end": false, "canceled_at": null,
            "items": {"object": "list", "data": [{
                "id": "si_1", "price": {"id": "price_pro"},
                "current_period_start": 1_735_689_600, "current_period_end": 1_738_368_000
            }]},
            "metadata": {"client": "c1"}
        }),
    )
}

fn stripe_subscription_updated() -> Value {
    let mut v = stripe_subscription("evt_sub_u", "customer.subscription.updated", "past_due");
    v["data"]["previous_attributes"] = json!({"status": "active", "latest_invoice": "in_0"});
    v
}

fn stripe_subscription_deleted() -> Value {
    let mut v = stripe_subscription("evt_sub_d", "customer.subscription.deleted", "canceled");
    v["data"]["object"]["canceled_at"] = json!(1_738_161_600);
    v["data"]["object"]["ended_at"] = json!(1_738_161_600);
    v
}

fn stripe_checkout() -> Value {
    stripe_event(
        "evt_cs",
        "checkout.session.completed",
        json!({
            "id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
            "status": "complete", "payment_status": "paid", "customer": "cus_1",
            "customer_details": {"email": "ada@example.com"}, "subscription": "sub_1",
            "invoice": "in_1", "client_reference_id": "client_42", "amount_total": 4900,
            "amount_subtotal": 4900, "currency": "usd", "metadata": {}
        }),
    )
}

fn paypal_subscription(id: &str, event: &str, status: &str) -> Value {
    json!({
        "id": id, "event_version": "1.0", "create_time": "2025-01-28T14:35:00.000Z",
        "resource_type": "subscription", "resource_version": "2.0", "event_type": event,
        "summary": "Subscription changed",
        "resource": {
            "id": "I-BW452GLLEP1G", "status": status, "plan_id": "P-5ML4271244454362WXNWU5NQ",
            "custom_id": "client_42", "start_time": "2025-01-28T14:30:00Z", "quantity": "1",
            "subscriber": {"payer_id": "PAYER1", "email_address": "ada@example.com"},
            "billing_info": {
                "next_billing_time": "2025-02-28T10:00:00Z",
                "last_payment": {"amount": {"currency_code": "USD", "value": "49.00"}, "time": "2025-01-28T14:31:00Z"}
            },
            "status_update_time": "2025-01-28T14:31:00Z"
        },
        "links": []
    })
}

/// The PAYMENT.SALE.COMPLETED body from PayPal's SDK tests, byte for byte (PROVIDERS.md §5).
const PAYPAL_SALE: &str = r#"{"id":"WH-0G2756385H040842W-5Y612302CV158622M","create_time":"2015-05-18T15:45:13Z","resource_type":"sale","event_type":"PAYMENT.SALE.COMPLETED","summary":"Payment completed for $ 20.0 USD","resource":{"id":"4EU7004268015634R","create_time":"2015-05-18T15:44:02Z","update_time":"2015-05-18T15:44:21Z","amount":{"total":"20.00","currency":"USD"},"payment_mode":"INSTANT_TRANSFER","state":"completed","protection_eligibility":"ELIGIBLE","protection_eligibility_type":"ITEM_NOT_RECEIVED_ELIGIBLE,UNAUTHORIZED_PAYMENT_ELIGIBLE","parent_payment":"PAY-86C81811X5228590KKVNARQQ","transaction_fee":{"value":"0.88","currency":"USD"},"links":[{"href":"https://api.sandbox.paypal.com/v1/payments/sale/4EU7004268015634R","rel":"self","method":"GET"},{"href":"https://api.sandbox.paypal.com/v1/payments/sale/4EU7004268015634R/refund","rel":"refund","method":"POST"},{"href":"https://api.sandbox.paypal.com/v1/payments/payment/PAY-86C81811X5228590KKVNARQQ","rel":"parent_payment","method":"GET"}]},"links":[{"href":"https://api.sandbox.paypal.com/v1/notifications/webhooks-events/WH-0G2756385H040842W-5Y612302CV158622M","rel":"self","method":"GET"},{"href":"https://api.sandbox.paypal.com/v1/notifications/webhooks-events/WH-0G2756385H040842W-5Y612302CV158622M/resend","rel":"resend","method":"POST"}]}"#;

/// One sample per schema: (provider, provider event type, body).
fn samples() -> Vec<(Provider, &'static str, Body)> {
    use Body::Json;
    vec![
        (
            Provider::Ghl,
            "ContactCreate",
            Json(ghl_contact("ContactCreate")),
        ),
        (Provider::Ghl, "ContactUpdate", Json(ghl_contact_update())),
        (Provider::Ghl, "ContactDelete", Json(ghl_contact_delete())),
        (Provider::Ghl, "InboundMessage", Json(ghl_inbound_sms())),
        (Provider::Ghl, "OutboundMessage", Json(ghl_outbound_email())),
        (
            Provider::Ghl,
            "AppointmentCreate",
            Json(ghl_appointment(
                "AppointmentCreate",
                "confirmed",
                "2025-01-28T15:10:00.000Z",
            )),
        ),
        (
            Provider::Ghl,
            "AppointmentUpdate",
            Json(ghl_appointment(
                "AppointmentUpdate",
                "cancelled",
                "2025-01-29T08:00:00.000Z",
            )),
        ),
        (
            Provider::Ghl,
            "OpportunityCreate",
            Json(ghl_opportunity("OpportunityCreate", "open")),
        ),
        (
            Provider::Ghl,
            "OpportunityStatusUpdate",
            Json(ghl_opportunity("OpportunityStatusUpdate", "won")),
        ),
        (
            Provider::Retell,
            "call_started",
            Json(retell_call("call_started")),
        ),
        (
            Provider::Retell,
            "call_ended",
            Json(retell_call("call_ended")),
        ),
        (
            Provider::Retell,
            "call_analyzed",
            Json(retell_call("call_analyzed")),
        ),
        (Provider::Twilio, "inbound_message", twilio_inbound()),
        (
            Provider::Twilio,
            "message_status",
            twilio_status("delivered"),
        ),
        (Provider::Twilio, "call_status", twilio_call("completed")),
        (
            Provider::Stripe,
            "invoice.paid",
            Json(stripe_invoice_paid()),
        ),
        (
            Provider::Stripe,
            "invoice.payment_failed",
            Json(stripe_invoice_failed()),
        ),
        (
            Provider::Stripe,
            "customer.subscription.created",
            Json(stripe_subscription(
                "evt_sub_c",
                "customer.subscription.created",
                "active",
            )),
        ),
        (
            Provider::Stripe,
            "customer.subscription.updated",
            Json(stripe_subscription_updated()),
        ),
        (
            Provider::Stripe,
            "customer.subscription.deleted",
            Json(stripe_subscription_deleted()),
        ),
        (
            Provider::Stripe,
            "checkout.session.completed",
            Json(stripe_checkout()),
        ),
        (
            Provider::Paypal,
            "BILLING.SUBSCRIPTION.ACTIVATED",
            Json(paypal_subscription(
                "WH-ACT-1",
                "BILLING.SUBSCRIPTION.ACTIVATED",
                "ACTIVE",
            )),
        ),
        (
            Provider::Paypal,
            "BILLING.SUBSCRIPTION.UPDATED",
            Json(paypal_subscription(
                "WH-UPD-1",
                "BILLING.SUBSCRIPTION.UPDATED",
                "ACTIVE",
            )),
        ),
        (
            Provider::Paypal,
            "BILLING.SUBSCRIPTION.CANCELLED",
            Json(paypal_subscription(
                "WH-CAN-1",
                "BILLING.SUBSCRIPTION.CANCELLED",
                "CANCELLED",
            )),
        ),
        (
            Provider::Paypal,
            "PAYMENT.SALE.COMPLETED",
            Json(serde_json::from_str(PAYPAL_SALE).unwrap()),
        ),
    ]
}

// ---- every schema ----------------------------------------------------------------------------

#[test]
fn every_schema_has_a_sample_that_validates_and_normalizes() {
    let samples = samples();
    for info in schemas() {
        let (provider, event, body) = samples
            .iter()
            .find(|(p, e, _)| *p == info.provider && *e == info.event_type)
            .unwrap_or_else(|| panic!("no sample for {}", info.path));
        let parsed = body.parsed(*provider);
        assert_eq!(parsed.event_type, *event, "{}", info.path);
        validate(*provider, &parsed).unwrap_or_else(|e| panic!("{}: {e}", info.path));
        let n = body.normalized(*provider);
        assert!(
            types::ALL.contains(&n.event_type.as_str()),
            "{}",
            n.event_type
        );
        assert_eq!(n.source, format!("maxai://providers/{}", provider.as_str()));
        assert_eq!(n.provider, *provider);
        assert_eq!(n.provider_event_type, *event);
        assert_eq!(
            n.id,
            normalize::cloud_event_id(*provider, &n.provider_event_id)
        );
        assert!(!n.subject.is_empty() && !n.ordering_key.is_empty());
        assert!(n.data.is_object());
        assert_no_floats(&n.data, info.path);
    }
    assert_eq!(samples.len(), schemas().len());
}

#[test]
fn ids_and_keys_are_distinct_across_the_samples() {
    let mut ids = BTreeSet::new();
    for (provider, event, body) in samples() {
        let n = body.normalized(provider);
        assert!(
            ids.insert(n.id.clone()),
            "{provider:?} {event}: duplicate id"
        );
        // Same input, same event.
        assert_eq!(body.normalized(provider), n);
    }
}

/// Every required field of every schema, removed or given a wrong type, is reported with its
/// JSON pointer (found by walking the schema alongside the sample).
#[test]
fn missing_or_mistyped_required_fields_fail_with_their_pointer() {
    fn walk(schema: &Value, pointer: &str, out: &mut Vec<String>) {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            let field = format!("{pointer}/{name}");
            out.push(field.clone());
            if let Some(sub) = schema["properties"].get(name) {
                walk(sub, &field, out);
            }
        }
    }
    let samples = samples();
    let mut checked = 0;
    for info in schemas() {
        let (provider, _, body) = samples
            .iter()
            .find(|(p, e, _)| *p == info.provider && *e == info.event_type)
            .unwrap();
        let good = body.parsed(*provider);
        let schema: Value = serde_json::from_str(info.text).unwrap();
        let mut required = Vec::new();
        walk(&schema, "", &mut required);
        assert!(!required.is_empty(), "{}", info.path);
        for field in required {
            let (parent, name) = field.rsplit_once('/').unwrap();
            // Removed.
            let mut missing = good.clone();
            missing
                .body
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .unwrap()
                .remove(name)
                .unwrap_or_else(|| panic!("{}: sample lacks {field}", info.path));
            match validate(*provider, &missing) {
                Err(Invalid::Schema { schema_url, errors }) => {
                    assert_eq!(schema_url, info.url);
                    assert!(
                        errors.iter().any(|e| e.instance_path == field),
                        "{}: {field} missing gave {errors:?}",
                        info.path
                    );
                }
                other => panic!("{}: {field} missing gave {other:?}", info.path),
            }
            assert!(normalize::normalize(*provider, &missing, received_at()).is_err());
            // Wrong type: an array is none of string, integer, number, object, const or enum.
            let mut mistyped = good.clone();
            *mistyped.body.pointer_mut(&field).unwrap() = json!([true]);
            match validate(*provider, &mistyped) {
                Err(Invalid::Schema { errors, .. }) => assert!(
                    errors.iter().any(|e| e.instance_path == field),
                    "{}: {field} mistyped gave {errors:?}",
                    info.path
                ),
                other => panic!("{}: {field} mistyped gave {other:?}", info.path),
            }
            checked += 1;
        }
    }
    assert!(checked > 75, "walked {checked} required fields");
}

/// The schemas cover what the mappings need: removing any part of a valid sample, nulling it
/// or giving it a wrong type either still normalizes or fails its schema (quarantined with a
/// pointer), and never gets past validation only to fail in the mapping.
#[test]
fn every_field_the_mapping_needs_is_in_the_schema() {
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (key, child) in children {
            let pointer = format!("{at}/{key}");
            out.push(pointer.clone());
            pointers(child, pointer, out);
        }
    }
    let mut mutations = 0;
    let mut gaps = Vec::new();
    for (provider, event, body) in samples() {
        let good = body.parsed(provider);
        let mut all = Vec::new();
        pointers(&good.body, String::new(), &mut all);
        for pointer in all {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let mut variants = Vec::new();
            let mut removed = good.clone();
            match removed.body.pointer_mut(parent).unwrap() {
                Value::Object(map) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(key.parse::<usize>().unwrap());
                }
                _ => unreachable!(),
            }
            variants.push(("removed", removed));
            for (what, value) in [
                ("null", Value::Null),
                ("array", json!([true])),
                ("number", json!(-1)),
            ] {
                let mut changed = good.clone();
                *changed.body.pointer_mut(&pointer).unwrap() = value;
                variants.push((what, changed));
            }
            for (what, parsed) in variants {
                mutations += 1;
                match normalize::normalize(provider, &parsed, received_at()) {
                    Ok(_) | Err(Invalid::Schema { .. }) => {}
                    Err(other) => {
                        gaps.push(format!("{provider:?} {event}: {pointer} {what}: {other}"))
                    }
                }
            }
        }
    }
    assert!(gaps.is_empty(), "{}", gaps.join("\n"));
    assert!(mutations > 1000, "{mutations}");
}

#[test]
fn schema_failures_are_quarantined_with_their_errors() {
    // Retell's official signature vector body has no call at all.
    let parsed = parse(
        Provider::Retell,
        "application/json",
        br#"{"event":"call_ended"}"#,
    )
    .unwrap();
    let err = normalize::normalize(Provider::Retell, &parsed, received_at()).unwrap_err();
    let failure = err.quarantine_failure();
    assert_eq!(failure.reason, QuarantineReason::SchemaInvalid);
    assert_eq!(
        failure.schema_url,
        "maxai://schemas/webhook/retell/call_ended.json"
    );
    assert_eq!(failure.schema_errors[0].instance_path, "/call");
    // Stripe's derived signature vector body lacks created and data.
    let parsed = parse(
        Provider::Stripe,
        "application/json",
        br#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#,
    )
    .unwrap();
    let Err(Invalid::Schema { errors, .. }) = validate(Provider::Stripe, &parsed) else {
        panic!("must fail");
    };
    let paths: BTreeSet<_> = errors.iter().map(|e| e.instance_path.as_str()).collect();
    assert_eq!(paths, BTreeSet::from(["/created", "/data"]));
    // Formats are asserted: a GHL time that is not RFC 3339.
    let mut contact = ghl_contact("ContactCreate");
    contact["dateAdded"] = json!("28/01/2025");
    let Err(Invalid::Schema { errors, .. }) =
        validate(Provider::Ghl, &Body::Json(contact).parsed(Provider::Ghl))
    else {
        panic!("must fail");
    };
    assert_eq!(errors[0].instance_path, "/dateAdded");
    // An unknown Twilio status is a schema failure, not a silent drop.
    let Err(Invalid::Schema { errors, .. }) = validate(
        Provider::Twilio,
        &twilio_status("exploded").parsed(Provider::Twilio),
    ) else {
        panic!("must fail");
    };
    assert_eq!(errors[0].instance_path, "/MessageStatus");
}

#[test]
fn bodies_without_an_event_type_fail_their_envelope() {
    for (provider, body, pointer) in [
        (Provider::Ghl, r#"{"locationId":"loc_1"}"#, "/type"),
        (Provider::Retell, r#"{"call":{}}"#, "/event"),
        (Provider::Stripe, r#"{"id":"evt_1","type":""}"#, "/type"),
        (
            Provider::Paypal,
            r#"{"id":"WH-1","event_type":42}"#,
            "/event_type",
        ),
    ] {
        let parsed = parse(provider, "application/json", body.as_bytes()).unwrap();
        let err = validate(provider, &parsed).unwrap_err();
        assert_eq!(err.quarantine_reason(), QuarantineReason::SchemaInvalid);
        let Invalid::Schema { errors, .. } = err else {
            panic!("{provider:?}: {err:?}");
        };
        assert_eq!(errors[0].instance_path, pointer);
    }
}

#[test]
fn unknown_event_types_are_unsupported() {
    let cases = [
        (
            Provider::Ghl,
            Body::Json(json!({"type": "NoteCreate", "locationId": "loc_1"})),
            "NoteCreate",
        ),
        (
            Provider::Retell,
            Body::Json(
                json!({"event": "transcript_updated", "call": {"call_id": "c", "agent_id": "a"}}),
            ),
            "transcript_updated",
        ),
        (
            Provider::Stripe,
            Body::Json(json!({"id": "evt_9", "type": "customer.created"})),
            "customer.created",
        ),
        (
            Provider::Paypal,
            Body::Json(json!({"id": "WH-9", "event_type": "BILLING.SUBSCRIPTION.SUSPENDED"})),
            "BILLING.SUBSCRIPTION.SUSPENDED",
        ),
        (
            Provider::Twilio,
            form(&[("EventType", "onMessageAdded")]),
            "onMessageAdded",
        ),
        (Provider::Twilio, form(&[("Foo", "bar")]), ""),
    ];
    for (provider, body, event_type) in cases {
        let parsed = body.parsed(provider);
        let err = normalize::normalize(provider, &parsed, received_at()).unwrap_err();
        assert_eq!(
            err,
            Invalid::Unsupported {
                provider,
                event_type: event_type.to_owned()
            }
        );
        let failure = err.quarantine_failure();
        assert_eq!(failure.reason, QuarantineReason::UnknownEventType);
        assert!(failure.error_message.contains("unsupported"));
    }
}

#[test]
fn unreadable_bodies_are_reported_as_such() {
    let err = parse(Provider::Stripe, "application/json", b"{\"id\":").unwrap_err();
    assert!(matches!(err, Invalid::Unreadable { .. }));
    assert_eq!(err.quarantine_reason(), QuarantineReason::SchemaInvalid);
}

// ---- GoHighLevel -----------------------------------------------------------------------------

#[test]
fn ghl_contacts() {
    let n = Body::Json(ghl_contact("ContactCreate")).normalized(Provider::Ghl);
    assert_eq!(n.event_type, types::CRM_CONTACT_CREATED);
    assert_eq!(n.subject, "contacts/contact_123");
    assert_eq!(n.ordering_key, "ghl:contact:contact_123");
    assert_eq!(n.provider_event_id, "ContactCreate:contact_123");
    assert_eq!(rfc3339(n.time), "2025-01-28T14:35:00Z");
    assert_eq!(n.data["contact_id"], "contact_123");
    assert_eq!(n.data["location_id"], "loc_123");
    assert_eq!(n.data["email"], "ada@example.com");
    assert_eq!(n.data["phone"], CONTACT_NUMBER);
    assert_eq!(n.data["tags"], json!(["lead", "vip"]));
    assert_eq!(n.data["dnd"], false);
    assert_eq!(
        n.data["custom_fields"],
        json!([{"id": "cf_1", "value": "blue"}])
    );
    assert_eq!(n.data["date_added"], "2025-01-28T14:35:00Z");
    assert_eq!(n.data["date_updated"], Value::Null);
    assert!(
        n.data.get("type").is_none(),
        "the raw payload stays out of data"
    );

    let updated = Body::Json(ghl_contact_update()).normalized(Provider::Ghl);
    assert_eq!(updated.event_type, types::CRM_CONTACT_UPDATED);
    assert_eq!(rfc3339(updated.time), "2025-01-29T09:00:00Z");
    assert!(updated
        .provider_event_id
        .starts_with("ContactUpdate:contact_123:"));
    assert_eq!(updated.ordering_key, n.ordering_key);

    let deleted = Body::Json(ghl_contact_delete()).normalized(Provider::Ghl);
    assert_eq!(deleted.event_type, types::CRM_CONTACT_DELETED);
    assert_eq!(deleted.provider_event_id, "wh_del_1");
    assert_eq!(rfc3339(deleted.time), "2025-01-30T10:00:00Z");
    assert_eq!(deleted.data["email"], Value::Null);
    assert_eq!(deleted.data["tags"], json!([]));
}

#[test]
fn ghl_update_ids_follow_content_not_key_order() {
    let a = ghl_contact_update();
    let mut b = ghl_contact_update();
    b["tags"] = json!(["lead"]);
    let id_a = Body::Json(a.clone())
        .normalized(Provider::Ghl)
        .provider_event_id;
    let id_b = Body::Json(b).normalized(Provider::Ghl).provider_event_id;
    assert_ne!(id_a, id_b, "two different updates are two events");
    // The same update with its keys in another order is the same event.
    let mut reordered: Vec<(String, Value)> = a.as_object().unwrap().clone().into_iter().collect();
    reordered.reverse();
    let text = format!(
        "{{{}}}",
        reordered
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect::<Vec<_>>()
            .join(",")
    );
    let parsed = parse(Provider::Ghl, "application/json", text.as_bytes()).unwrap();
    let again = normalize::normalize(Provider::Ghl, &parsed, received_at()).unwrap();
    assert_eq!(again.provider_event_id, id_a);
}

#[test]
fn ghl_signed_vector_body_uses_webhook_id_and_timestamp() {
    // The exact body of the derived x-ghl-signature vector in PROVIDERS.md §1.1.
    let body = br#"{"type":"ContactCreate","locationId":"loc_123","id":"contact_123","timestamp":"2025-01-28T14:35:00Z","webhookId":"wh_123"}"#;
    let parsed = parse(Provider::Ghl, "application/json", body).unwrap();
    let n = normalize::normalize(Provider::Ghl, &parsed, received_at()).unwrap();
    assert_eq!(n.provider_event_id, "wh_123");
    assert_eq!(n.id, normalize::cloud_event_id(Provider::Ghl, "wh_123"));
    assert_eq!(rfc3339(n.time), "2025-01-28T14:35:00Z");
    assert_eq!(
        account_keys(Provider::Ghl, &parsed).lookup(),
        ["location/loc_123"]
    );
}

#[test]
fn ghl_messages() {
    let sms = Body::Json(ghl_inbound_sms()).normalized(Provider::Ghl);
    assert_eq!(sms.event_type, types::MESSAGING_SMS_RECEIVED);
    assert_eq!(sms.subject, "messages/msg_1");
    assert_eq!(sms.ordering_key, "ghl:conversation:conv_1");
    assert_eq!(sms.provider_event_id, "InboundMessage:msg_1");
    assert_eq!(rfc3339(sms.time), "2025-01-28T15:00:00Z");
    assert_eq!(sms.data["channel"], "sms");
    assert_eq!(sms.data["direction"], "inbound");
    assert_eq!(sms.data["body"], "Do you have openings tomorrow?");
    assert_eq!(sms.data["contact_id"], "contact_123");
    assert_eq!(sms.data["conversation_id"], "conv_1");
    assert_eq!(sms.data["media"], json!([]));

    let email = Body::Json(ghl_outbound_email()).normalized(Provider::Ghl);
    assert_eq!(email.event_type, types::MESSAGING_MESSAGE_SENT);
    assert_eq!(email.data["channel"], "email");
    assert_eq!(email.data["direction"], "outbound");
    assert_eq!(email.data["user_id"], "user_1");
    assert_eq!(
        email.data["media"],
        json!([{"url": "https://files.example.com/a.pdf", "content_type": null}])
    );
    assert_eq!(
        email.ordering_key, sms.ordering_key,
        "one conversation, one order"
    );

    let mut call = ghl_inbound_sms();
    call["messageType"] = json!("CALL");
    call["callDuration"] = json!(95);
    call["callStatus"] = json!("completed");
    let call = Body::Json(call).normalized(Provider::Ghl);
    assert_eq!(call.event_type, types::MESSAGING_MESSAGE_RECEIVED);
    assert_eq!(call.data["channel"], "call");
    assert_eq!(call.data["call_duration_seconds"], 95);
    assert_eq!(call.data["call_status"], "completed");
}

#[test]
fn ghl_appointments_and_opportunities() {
    let created = Body::Json(ghl_appointment(
        "AppointmentCreate",
        "confirmed",
        "2025-01-28T15:10:00.000Z",
    ))
    .normalized(Provider::Ghl);
    assert_eq!(created.event_type, types::CRM_APPOINTMENT_CREATED);
    assert_eq!(created.subject, "appointments/appt_1");
    assert_eq!(created.provider_event_id, "AppointmentCreate:appt_1");
    assert_eq!(created.data["start_time"], "2025-02-01T16:00:00Z", "UTC");
    assert_eq!(created.data["end_time"], "2025-02-01T16:30:00Z");
    assert_eq!(created.data["status"], "confirmed");
    assert_eq!(created.data["calendar_id"], "cal_1");
    let updated = Body::Json(ghl_appointment(
        "AppointmentUpdate",
        "cancelled",
        "2025-01-29T08:00:00.000Z",
    ))
    .normalized(Provider::Ghl);
    assert_eq!(updated.event_type, types::CRM_APPOINTMENT_UPDATED);
    assert_eq!(rfc3339(updated.time), "2025-01-29T08:00:00Z");
    assert_eq!(updated.data["status"], "cancelled");
    assert_eq!(updated.ordering_key, created.ordering_key);

    let opp = Body::Json(ghl_opportunity("OpportunityCreate", "open")).normalized(Provider::Ghl);
    assert_eq!(opp.event_type, types::CRM_OPPORTUNITY_CREATED);
    assert_eq!(
        opp.data["monetary_value"],
        json!({"amount_micros": 1_500_500_000_i64, "currency": null})
    );
    let won =
        Body::Json(ghl_opportunity("OpportunityStatusUpdate", "won")).normalized(Provider::Ghl);
    assert_eq!(won.event_type, types::CRM_OPPORTUNITY_STATUS_CHANGED);
    assert_eq!(won.data["status"], "won");
    assert_eq!(won.ordering_key, "ghl:opportunity:opp_1");
    assert_eq!(
        rfc3339(won.time),
        rfc3339(received_at()),
        "no update time: receipt"
    );
}

// ---- Retell ----------------------------------------------------------------------------------

#[test]
fn retell_call_lifecycle() {
    let started = Body::Json(retell_call("call_started")).normalized(Provider::Retell);
    assert_eq!(started.event_type, types::VOICE_CALL_STARTED);
    assert_eq!(started.subject, "calls/call_abc");
    assert_eq!(started.provider_event_id, "call_started:call_abc");
    assert_eq!(started.ordering_key, "retell:call:call_abc");
    assert_eq!(rfc3339(started.time), "2025-01-28T14:40:00Z");
    assert_eq!(started.data["call_id"], "call_abc");
    assert_eq!(started.data["agent_id"], "agent_1");
    assert_eq!(started.data["agent_version"], 3);
    assert_eq!(started.data["call_type"], "phone");
    assert_eq!(started.data["direction"], "inbound");
    assert_eq!(started.data["from"], CONTACT_NUMBER);
    assert_eq!(started.data["to"], OUR_NUMBER);
    assert_eq!(started.data["started_at"], "2025-01-28T14:40:00Z");
    assert_eq!(started.data["metadata"], json!({"client_ref": "x1"}));
    assert_eq!(started.data["twilio_call_sid"], CALL);
    assert!(started.data.get("ended_at").is_none());

    let ended = Body::Json(retell_call("call_ended")).normalized(Provider::Retell);
    assert_eq!(ended.event_type, types::VOICE_CALL_ENDED);
    assert_eq!(ended.provider_event_id, "call_ended:call_abc");
    assert_eq!(ended.ordering_key, started.ordering_key);
    assert_eq!(rfc3339(ended.time), "2025-01-28T14:42:05.500Z");
    assert_eq!(ended.data["ended_at"], "2025-01-28T14:42:05.500Z");
    assert_eq!(ended.data["duration_ms"], 125_500);
    assert_eq!(
        ended.data["duration_seconds"], 126,
        "whole seconds, rounded up"
    );
    assert_eq!(ended.data["disconnection_reason"], "user_hangup");
    assert_eq!(
        ended.data["recording_url"],
        "https://retell.example/recording.wav"
    );
    assert!(ended.data["transcript"]
        .as_str()
        .unwrap()
        .starts_with("Agent: Hi"));
    assert_eq!(
        ended.data["cost"],
        json!({"amount_micros": 705_000, "currency": "USD"}),
        "70.5 cents"
    );
    assert!(ended.data["cost"]["amount_micros"].is_i64());
    assert!(ended.data.get("transcript_object").is_none());
    assert!(ended.data.get("latency").is_none());

    let analyzed = Body::Json(retell_call("call_analyzed")).normalized(Provider::Retell);
    assert_eq!(analyzed.event_type, types::VOICE_CALL_ANALYZED);
    assert_eq!(analyzed.provider_event_id, "call_analyzed:call_abc");
    assert_eq!(
        analyzed.time,
        received_at(),
        "Retell does not date the analysis"
    );
    assert_eq!(
        analyzed.data["summary"],
        "The caller booked a consultation."
    );
    assert_eq!(analyzed.data["sentiment"], "positive");
    assert_eq!(analyzed.data["successful"], true);
    assert_eq!(analyzed.data["in_voicemail"], false);
    assert_eq!(
        analyzed.data["custom_analysis_data"]["appointment_booked"],
        true
    );
    assert_eq!(analyzed.data["cost"], ended.data["cost"]);

    let ids: BTreeSet<_> = [&started.id, &ended.id, &analyzed.id].into_iter().collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn retell_calls_that_never_connect() {
    let mut body = retell_call("call_ended");
    let call = body["call"].as_object_mut().unwrap();
    for field in [
        "start_timestamp",
        "end_timestamp",
        "duration_ms",
        "call_cost",
        "transcript",
    ] {
        call.remove(field);
    }
    call.insert("disconnection_reason".into(), json!("dial_no_answer"));
    call.insert("call_status".into(), json!("not_connected"));
    let n = Body::Json(body).normalized(Provider::Retell);
    assert_eq!(n.event_type, types::VOICE_CALL_ENDED);
    assert_eq!(n.time, received_at());
    assert_eq!(n.data["duration_ms"], Value::Null);
    assert_eq!(n.data["cost"], Value::Null);
    assert_eq!(n.data["disconnection_reason"], "dial_no_answer");
    assert_eq!(n.data["status"], "not_connected");
}

#[test]
fn retell_fractional_cents_round_to_micro_dollars() {
    for (cents, micros) in [
        (json!(0), 0_i64),
        (json!(12), 120_000),
        (json!(70.5), 705_000),
        (json!(0.0001), 1),
        (json!(33.33333), 333_333),
        (json!(1.00005), 10_000), // half to even
        (json!(1.00015), 10_002),
    ] {
        let mut body = retell_call("call_ended");
        body["call"]["call_cost"]["combined_cost"] = cents.clone();
        let n = Body::Json(body).normalized(Provider::Retell);
        assert_eq!(n.data["cost"]["amount_micros"], json!(micros), "{cents}");
        assert!(n.data["cost"]["amount_micros"].is_i64());
    }
}

// ---- Twilio ----------------------------------------------------------------------------------

#[test]
fn twilio_inbound_sms() {
    let body = twilio_inbound();
    let parsed = body.parsed(Provider::Twilio);
    assert_eq!(parsed.event_type, "inbound_message");
    assert_eq!(
        parsed.body["Body"], "Hi, can I book for Friday?",
        "form decoding"
    );
    assert_eq!(
        parsed.body["From"], CONTACT_NUMBER,
        "`+` survives percent-encoding"
    );
    assert_eq!(
        account_keys(Provider::Twilio, &parsed),
        AccountKeys::Twilio {
            account_sid: ACCOUNT.into(),
            number: OUR_NUMBER.into()
        }
    );
    let n = body.normalized(Provider::Twilio);
    assert_eq!(n.event_type, types::MESSAGING_SMS_RECEIVED);
    assert_eq!(n.subject, format!("messages/{SMS_IN}"));
    assert_eq!(n.provider_event_id, format!("{SMS_IN}:received"));
    assert_eq!(n.time, received_at(), "Twilio does not date messages");
    assert_eq!(n.data["message_id"], SMS_IN);
    assert_eq!(n.data["channel"], "sms");
    assert_eq!(n.data["direction"], "inbound");
    assert_eq!(n.data["from"], CONTACT_NUMBER);
    assert_eq!(n.data["to"], OUR_NUMBER);
    assert_eq!(n.data["account_sid"], ACCOUNT);
    assert_eq!(n.data["messaging_service_sid"], SERVICE);
    assert_eq!(n.data["num_segments"], 1);
    assert_eq!(
        n.data["media"],
        json!([{"url": "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/SM/Media/ME1", "content_type": "image/jpeg"}])
    );

    let whatsapp = body
        .with("From", "whatsapp:+15550100")
        .with("To", "whatsapp:+15550199")
        .normalized(Provider::Twilio);
    assert_eq!(whatsapp.event_type, types::MESSAGING_MESSAGE_RECEIVED);
    assert_eq!(whatsapp.data["channel"], "whatsapp");
}

#[test]
fn twilio_status_callbacks_are_distinct_events_in_one_order() {
    let statuses = ["queued", "sent", "delivered"];
    let events: Vec<Normalized> = statuses
        .iter()
        .map(|s| twilio_status(s).normalized(Provider::Twilio))
        .collect();
    let ids: BTreeSet<_> = events.iter().map(|n| n.provider_event_id.clone()).collect();
    assert_eq!(ids.len(), 3, "one event per status");
    let cloud_ids: BTreeSet<_> = events.iter().map(|n| n.id.clone()).collect();
    assert_eq!(cloud_ids.len(), 3);
    for (n, status) in events.iter().zip(statuses) {
        assert_eq!(n.event_type, types::MESSAGING_SMS_STATUS);
        assert_eq!(n.provider_event_id, format!("{SMS_OUT}:{status}"));
        assert_eq!(n.data["status"], status);
        assert_eq!(n.data["error_code"], Value::Null);
        assert_eq!(n.data["cost"], Value::Null);
        assert_eq!(n.ordering_key, events[0].ordering_key);
    }
    // The contact's inbound message and the status of our reply share the conversation order.
    let inbound = twilio_inbound().normalized(Provider::Twilio);
    assert_eq!(inbound.ordering_key, events[0].ordering_key);
    assert_eq!(
        inbound.ordering_key,
        format!("twilio:sms:{ACCOUNT}:{CONTACT_NUMBER}:{OUR_NUMBER}")
    );
    // Redelivered: same ids.
    assert_eq!(
        twilio_status("sent").normalized(Provider::Twilio),
        events[1]
    );
    // Status callbacks resolve by our number, the sender.
    let parsed = twilio_status("sent").parsed(Provider::Twilio);
    assert_eq!(
        account_keys(Provider::Twilio, &parsed).lookup(),
        [format!("{ACCOUNT}/{OUR_NUMBER}"), format!("{ACCOUNT}/*")]
    );
}

#[test]
fn twilio_failed_messages_and_prices() {
    let n = twilio_status("undelivered")
        .with("ErrorCode", "30003")
        .with("Price", "-0.00750")
        .with("PriceUnit", "USD")
        .normalized(Provider::Twilio);
    assert_eq!(n.data["status"], "undelivered");
    assert_eq!(n.data["error_code"], 30003);
    assert_eq!(
        n.data["cost"],
        json!({"amount_micros": 7500, "currency": "USD"}),
        "a charge of $0.0075"
    );
    let bad_price = twilio_status("sent").with("Price", "-0,0075");
    let err = validate(Provider::Twilio, &bad_price.parsed(Provider::Twilio)).unwrap_err();
    let Invalid::Schema { errors, .. } = err else {
        panic!()
    };
    assert_eq!(errors[0].instance_path, "/Price");
}

#[test]
fn twilio_voice_status_callbacks() {
    let ringing = twilio_call("ringing").normalized(Provider::Twilio);
    assert_eq!(ringing.event_type, types::VOICE_CALL_PROGRESS);
    let answered = twilio_call("in-progress").normalized(Provider::Twilio);
    assert_eq!(answered.event_type, types::VOICE_CALL_STARTED);
    assert_eq!(answered.data["started_at"], "2025-01-28T14:45:00Z");
    let completed = twilio_call("completed")
        .with("Price", "-0.0140")
        .with("PriceUnit", "USD")
        .normalized(Provider::Twilio);
    assert_eq!(completed.event_type, types::VOICE_CALL_ENDED);
    assert_eq!(completed.subject, format!("calls/{CALL}"));
    assert_eq!(completed.provider_event_id, format!("{CALL}:completed"));
    assert_eq!(completed.ordering_key, format!("twilio:call:{CALL}"));
    assert_eq!(
        rfc3339(completed.time),
        "2025-01-28T14:45:00Z",
        "from Timestamp"
    );
    assert_eq!(completed.data["call_id"], CALL);
    assert_eq!(completed.data["direction"], "outbound");
    assert_eq!(completed.data["from"], OUR_NUMBER);
    assert_eq!(completed.data["duration_seconds"], 42);
    assert_eq!(completed.data["duration_ms"], 42_000);
    assert_eq!(completed.data["disconnection_reason"], Value::Null);
    assert_eq!(
        completed.data["cost"],
        json!({"amount_micros": 14_000, "currency": "USD"})
    );
    let busy = twilio_call("busy").normalized(Provider::Twilio);
    assert_eq!(busy.event_type, types::VOICE_CALL_ENDED);
    assert_eq!(busy.data["disconnection_reason"], "dial_busy");
    let keys: BTreeSet<_> = [&ringing, &answered, &completed, &busy]
        .iter()
        .map(|n| n.ordering_key.clone())
        .collect();
    assert_eq!(keys.len(), 1);
    let ids: BTreeSet<_> = [&ringing, &answered, &completed, &busy]
        .iter()
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(ids.len(), 4);
    // Without a readable Timestamp the receipt time is used.
    let undated = twilio_call("completed")
        .with("Timestamp", "soon")
        .normalized(Provider::Twilio);
    assert_eq!(undated.time, received_at());
    // An outbound call resolves by the caller, our number.
    let parsed = twilio_call("completed").parsed(Provider::Twilio);
    assert_eq!(
        account_keys(Provider::Twilio, &parsed),
        AccountKeys::Twilio {
            account_sid: ACCOUNT.into(),
            number: OUR_NUMBER.into()
        }
    );
}

#[test]
fn twilio_inbound_without_message_sid_is_quarantined_not_dropped() {
    let body = form(&[
        ("SmsSid", SMS_IN),
        ("AccountSid", ACCOUNT),
        ("From", CONTACT_NUMBER),
        ("To", OUR_NUMBER),
        ("Body", "hello"),
    ]);
    let parsed = body.parsed(Provider::Twilio);
    assert_eq!(parsed.event_type, "inbound_message");
    let Err(Invalid::Schema { errors, .. }) = validate(Provider::Twilio, &parsed) else {
        panic!("must fail");
    };
    assert_eq!(errors[0].instance_path, "/MessageSid");
}

// ---- Stripe ----------------------------------------------------------------------------------

#[test]
fn stripe_invoices() {
    let paid = Body::Json(stripe_invoice_paid()).normalized(Provider::Stripe);
    assert_eq!(paid.event_type, types::PAYMENTS_INVOICE_PAID);
    assert_eq!(paid.provider_event_id, "evt_1Inv");
    assert_eq!(paid.subject, "invoices/in_1");
    assert_eq!(
        paid.ordering_key, "stripe:subscription:sub_1",
        "basil parent"
    );
    assert_eq!(rfc3339(paid.time), "2025-01-28T14:40:00Z");
    assert_eq!(paid.data["invoice_id"], "in_1");
    assert_eq!(paid.data["customer_id"], "cus_1");
    assert_eq!(paid.data["subscription_id"], "sub_1");
    assert_eq!(paid.data["status"], "paid");
    assert_eq!(
        paid.data["amount_paid"],
        json!({"amount_micros": 49_000_000, "currency": "USD"})
    );
    assert_eq!(
        paid.data["amount_remaining"],
        json!({"amount_micros": 0, "currency": "USD"})
    );
    assert_eq!(paid.data["period_start"], "2025-01-01T00:00:00Z");
    assert_eq!(paid.data["period_end"], "2025-02-01T00:00:00Z");
    assert_eq!(paid.data["next_payment_attempt"], Value::Null);
    assert_eq!(paid.data["metadata"], json!({"client": "c1"}));
    assert_eq!(paid.data["livemode"], false);
    assert!(paid.data.get("lines").is_none());
    let parsed = Body::Json(stripe_invoice_paid()).parsed(Provider::Stripe);
    assert_eq!(
        account_keys(Provider::Stripe, &parsed),
        AccountKeys::Stripe { account_id: None }
    );

    let failed = Body::Json(stripe_invoice_failed()).normalized(Provider::Stripe);
    assert_eq!(failed.event_type, types::PAYMENTS_INVOICE_PAYMENT_FAILED);
    assert_eq!(
        failed.ordering_key, "stripe:subscription:sub_1",
        "pre-basil field"
    );
    assert_eq!(
        failed.data["amount_due"],
        json!({"amount_micros": 5_000_000_000_i64, "currency": "JPY"}),
        "JPY is zero-decimal: 5000 yen"
    );
    assert_eq!(failed.data["attempt_count"], 2);
    assert_eq!(failed.data["next_payment_attempt"], "2025-01-29T14:40:00Z");
    let parsed = Body::Json(stripe_invoice_failed()).parsed(Provider::Stripe);
    assert_eq!(account_keys(Provider::Stripe, &parsed).lookup(), ["acct_1"]);

    let mut standalone = stripe_invoice_paid();
    standalone["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("parent");
    let n = Body::Json(standalone).normalized(Provider::Stripe);
    assert_eq!(n.ordering_key, "stripe:invoice:in_1");
    assert_eq!(n.data["subscription_id"], Value::Null);
}

#[test]
fn stripe_subscriptions() {
    let created = Body::Json(stripe_subscription(
        "evt_sub_c",
        "customer.subscription.created",
        "active",
    ))
    .normalized(Provider::Stripe);
    assert_eq!(created.event_type, types::PAYMENTS_SUBSCRIPTION_CREATED);
    assert_eq!(created.subject, "subscriptions/sub_1");
    assert_eq!(created.ordering_key, "stripe:subscription:sub_1");
    assert_eq!(created.data["status"], "active");
    assert_eq!(created.data["plan_id"], "price_pro");
    assert_eq!(
        created.data["current_period_start"], "2025-01-01T00:00:00Z",
        "from items"
    );
    assert_eq!(created.data["current_period_end"], "2025-02-01T00:00:00Z");
    assert_eq!(created.data["cancel_at_period_end"], false);
    assert_eq!(created.data["changed_fields"], Value::Null);

    let updated = Body::Json(stripe_subscription_updated()).normalized(Provider::Stripe);
    assert_eq!(updated.event_type, types::PAYMENTS_SUBSCRIPTION_UPDATED);
    assert_eq!(updated.data["status"], "past_due");
    assert_eq!(
        updated.data["changed_fields"],
        json!(["latest_invoice", "status"])
    );

    let deleted = Body::Json(stripe_subscription_deleted()).normalized(Provider::Stripe);
    assert_eq!(deleted.event_type, types::PAYMENTS_SUBSCRIPTION_CANCELED);
    assert_eq!(deleted.data["status"], "canceled");
    assert_eq!(deleted.data["canceled_at"], "2025-01-29T14:40:00Z");

    // Before basil, the period sits on the subscription itself.
    let mut legacy = stripe_subscription("evt_sub_l", "customer.subscription.updated", "active");
    let object = &mut legacy["data"]["object"];
    object["current_period_start"] = json!(1_738_000_000);
    object["items"]["data"][0]
        .as_object_mut()
        .unwrap()
        .remove("current_period_start");
    let n = Body::Json(legacy).normalized(Provider::Stripe);
    assert_eq!(n.data["current_period_start"], "2025-01-27T17:46:40Z");
}

#[test]
fn stripe_checkout_sessions() {
    let n = Body::Json(stripe_checkout()).normalized(Provider::Stripe);
    assert_eq!(n.event_type, types::PAYMENTS_CHECKOUT_COMPLETED);
    assert_eq!(n.subject, "checkout_sessions/cs_test_1");
    assert_eq!(n.ordering_key, "stripe:subscription:sub_1");
    assert_eq!(n.data["mode"], "subscription");
    assert_eq!(n.data["customer_email"], "ada@example.com");
    assert_eq!(n.data["client_reference_id"], "client_42");
    assert_eq!(
        n.data["amount_total"],
        json!({"amount_micros": 49_000_000, "currency": "USD"})
    );
    let mut payment = stripe_checkout();
    let object = payment["data"]["object"].as_object_mut().unwrap();
    object.insert("mode".into(), json!("payment"));
    object.insert("subscription".into(), Value::Null);
    let n = Body::Json(payment).normalized(Provider::Stripe);
    assert_eq!(n.ordering_key, "stripe:checkout:cs_test_1");
}

// ---- PayPal ----------------------------------------------------------------------------------

#[test]
fn paypal_subscriptions() {
    let activated = Body::Json(paypal_subscription(
        "WH-ACT-1",
        "BILLING.SUBSCRIPTION.ACTIVATED",
        "ACTIVE",
    ))
    .normalized(Provider::Paypal);
    assert_eq!(activated.event_type, types::PAYMENTS_SUBSCRIPTION_UPDATED);
    assert_eq!(activated.provider_event_id, "WH-ACT-1");
    assert_eq!(activated.subject, "subscriptions/I-BW452GLLEP1G");
    assert_eq!(activated.ordering_key, "paypal:subscription:I-BW452GLLEP1G");
    assert_eq!(rfc3339(activated.time), "2025-01-28T14:35:00Z");
    assert_eq!(activated.data["status"], "active");
    assert_eq!(activated.data["provider_status"], "ACTIVE");
    assert_eq!(activated.data["plan_id"], "P-5ML4271244454362WXNWU5NQ");
    assert_eq!(activated.data["custom_id"], "client_42");
    assert_eq!(activated.data["customer_id"], "PAYER1");
    assert_eq!(activated.data["current_period_end"], "2025-02-28T10:00:00Z");
    assert_eq!(activated.data["canceled_at"], Value::Null);
    let parsed = Body::Json(paypal_subscription(
        "WH-ACT-1",
        "BILLING.SUBSCRIPTION.ACTIVATED",
        "ACTIVE",
    ))
    .parsed(Provider::Paypal);
    assert!(account_keys(Provider::Paypal, &parsed).lookup().is_empty());

    let cancelled = Body::Json(paypal_subscription(
        "WH-CAN-1",
        "BILLING.SUBSCRIPTION.CANCELLED",
        "CANCELLED",
    ))
    .normalized(Provider::Paypal);
    assert_eq!(cancelled.event_type, types::PAYMENTS_SUBSCRIPTION_CANCELED);
    assert_eq!(cancelled.data["status"], "canceled");
    assert_eq!(cancelled.data["canceled_at"], "2025-01-28T14:31:00Z");
    assert_ne!(cancelled.id, activated.id);
}

#[test]
fn paypal_sale_from_the_sdk_vector() {
    let parsed = parse(Provider::Paypal, "application/json", PAYPAL_SALE.as_bytes()).unwrap();
    let n = normalize::normalize(Provider::Paypal, &parsed, received_at()).unwrap();
    assert_eq!(n.event_type, types::PAYMENTS_INVOICE_PAID);
    assert_eq!(
        n.provider_event_id,
        "WH-0G2756385H040842W-5Y612302CV158622M"
    );
    assert_eq!(n.subject, "sales/4EU7004268015634R");
    assert_eq!(n.ordering_key, "paypal:sale:4EU7004268015634R");
    assert_eq!(rfc3339(n.time), "2015-05-18T15:45:13Z");
    assert_eq!(n.data["status"], "paid");
    assert_eq!(
        n.data["amount_paid"],
        json!({"amount_micros": 20_000_000, "currency": "USD"})
    );
    assert_eq!(n.data["total"], n.data["amount_paid"]);
    assert_eq!(
        n.data["fee"],
        json!({"amount_micros": 880_000, "currency": "USD"})
    );
    assert_eq!(n.data["subscription_id"], Value::Null);

    let mut recurring: Value = serde_json::from_str(PAYPAL_SALE).unwrap();
    recurring["id"] = json!("WH-REC-1");
    recurring["resource"]["billing_agreement_id"] = json!("I-BW452GLLEP1G");
    let n = Body::Json(recurring).normalized(Provider::Paypal);
    assert_eq!(n.data["subscription_id"], "I-BW452GLLEP1G");
    assert_eq!(
        n.ordering_key, "paypal:subscription:I-BW452GLLEP1G",
        "a subscription's payments follow its order"
    );
}

// ---- the event as stored, the docs and the schema files ---------------------------------------

#[test]
fn normalized_events_become_canonical_events_for_a_tenant() {
    let n = Body::Json(retell_call("call_ended")).normalized(Provider::Retell);
    let time_us = n.time_us();
    let expected_id = n.id.clone();
    let event = n.into_event("t1", "c1");
    assert_eq!(event.cloud_event_id, expected_id);
    assert_eq!(event.tenant_id, "t1");
    assert_eq!(event.client_id, "c1");
    assert_eq!(event.time_us, 1_738_075_325_500_000);
    assert_eq!(event.time_us, time_us);
    assert_eq!(event.provider, Provider::Retell);
    assert_eq!(event.provider_event_id, "call_ended:call_abc");
    assert_eq!(event.ordering_key, "retell:call:call_abc");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["call_id"], "call_abc");
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_catalogue_documents_every_type_and_provider_event() {
    let doc = std::fs::read_to_string(repo_root().join("docs/events.md")).unwrap();
    for t in types::ALL {
        assert!(doc.contains(&format!("`{t}`")), "docs/events.md lacks {t}");
    }
    for info in schemas() {
        assert!(
            doc.contains(&format!("`{}`", info.event_type)),
            "docs/events.md lacks {} {}",
            info.provider.as_str(),
            info.event_type
        );
    }
}

#[test]
fn every_schema_file_is_embedded() {
    let dir = repo_root().join("schemas/webhook");
    let mut on_disk = BTreeSet::new();
    for provider in std::fs::read_dir(&dir).unwrap() {
        let provider = provider.unwrap();
        for file in std::fs::read_dir(provider.path()).unwrap() {
            let file = file.unwrap();
            on_disk.insert(format!(
                "schemas/webhook/{}/{}",
                provider.file_name().to_string_lossy(),
                file.file_name().to_string_lossy()
            ));
        }
    }
    let embedded: BTreeSet<String> = schemas().iter().map(|s| s.path.to_owned()).collect();
    assert_eq!(on_disk, embedded);
    for info in schemas() {
        let text = std::fs::read_to_string(repo_root().join(info.path)).unwrap();
        assert_eq!(text, info.text, "{} embedded as on disk", info.path);
    }
}
