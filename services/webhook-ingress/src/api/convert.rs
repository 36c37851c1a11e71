//! Domain ⇄ proto conversions: resource names, enums, and the messages the RPCs return.
//! Domain → proto conversions destructure their input, so a new domain field breaks the build
//! until someone decides how it is shown. Expire times come from [`Retention`]: the tenant's
//! settings where it has them, else the platform defaults of `[webhook.retention]`.
use maxai_kit::resource::{etag, timestamp};
use maxai_proto::maxai::{common::v1 as common, webhook::v1 as pb};

use crate::{
    config::WebhookConfig,
    domain::{
        Account, CanonicalEvent, ConsumerDelivery, DeadLetter, DeadLetterState, DeliveryAttempt,
        DeliveryState, Endpoint, EventRecord, Header, Provider, QuarantineFailure,
        QuarantineReason, QuarantineState, QuarantinedEvent, RetentionSettings, SchemaError,
        SecretState, SecretVersion, StoredEvent, SPEC_VERSION,
    },
};
pub use maxai_kit::structs::json_to_struct;

const DAY_SECS: i64 = 86_400;
const MICROS: i64 = 1_000_000;

// ---- names ---------------------------------------------------------------------------------

pub fn tenant_name(tenant_id: &str) -> String {
    format!("tenants/{tenant_id}")
}

pub fn client_name(tenant_id: &str, client_id: &str) -> String {
    format!("tenants/{tenant_id}/clients/{client_id}")
}

pub fn endpoint_name(tenant_id: &str, client_id: &str, id: &str) -> String {
    format!("tenants/{tenant_id}/clients/{client_id}/webhookEndpoints/{id}")
}

pub fn event_name(tenant_id: &str, id: &str) -> String {
    format!("tenants/{tenant_id}/events/{id}")
}

pub fn quarantined_name(tenant_id: &str, id: &str) -> String {
    format!("tenants/{tenant_id}/quarantinedEvents/{id}")
}

pub fn dead_letter_name(tenant_id: &str, id: i64) -> String {
    format!("tenants/{tenant_id}/deadLetters/{id}")
}

pub fn retention_name(tenant_id: &str) -> String {
    format!("tenants/{tenant_id}/eventRetentionSettings")
}

/// The path to configure at the provider (relative to the platform's public origin). PayPal
/// and Stripe platform-account payloads name no account the endpoint could be found by, so
/// their URL names the endpoint; the others are found by the account in the payload.
pub fn ingest_url(e: &Endpoint) -> String {
    let provider = e.provider();
    let path = format!("/v1/webhooks/{}", provider.as_str());
    match provider {
        Provider::Paypal | Provider::Stripe => {
            let name = endpoint_name(&e.key.tenant_id, &e.key.client_id, &e.key.id);
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("endpoint", &name)
                .finish();
            format!("{path}?{query}")
        }
        Provider::Ghl | Provider::Retell | Provider::Twilio => path,
    }
}

// ---- enums ---------------------------------------------------------------------------------

/// A number that an enum of the contract does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undefined(pub i32);

pub fn provider_to_pb(p: Provider) -> pb::Provider {
    match p {
        Provider::Ghl => pb::Provider::Ghl,
        Provider::Retell => pb::Provider::Retell,
        Provider::Twilio => pb::Provider::Twilio,
        Provider::Stripe => pb::Provider::Stripe,
        Provider::Paypal => pb::Provider::Paypal,
    }
}

/// `Ok(None)` for PROVIDER_UNSPECIFIED; `Err` for a number the contract does not define.
pub fn provider_from_pb(v: i32) -> Result<Option<Provider>, Undefined> {
    match pb::Provider::try_from(v).map_err(|_| Undefined(v))? {
        pb::Provider::Unspecified => Ok(None),
        pb::Provider::Ghl => Ok(Some(Provider::Ghl)),
        pb::Provider::Retell => Ok(Some(Provider::Retell)),
        pb::Provider::Twilio => Ok(Some(Provider::Twilio)),
        pb::Provider::Stripe => Ok(Some(Provider::Stripe)),
        pb::Provider::Paypal => Ok(Some(Provider::Paypal)),
    }
}

pub fn delivery_state_to_pb(s: DeliveryState) -> pb::DeliveryState {
    match s {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Retrying => pb::DeliveryState::Retrying,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::DeadLettered => pb::DeliveryState::DeadLettered,
    }
}

/// `Ok(None)` for DELIVERY_STATE_UNSPECIFIED; `Err` for an undefined number.
pub fn delivery_state_from_pb(v: i32) -> Result<Option<DeliveryState>, Undefined> {
    match pb::DeliveryState::try_from(v).map_err(|_| Undefined(v))? {
        pb::DeliveryState::Unspecified => Ok(None),
        pb::DeliveryState::Pending => Ok(Some(DeliveryState::Pending)),
        pb::DeliveryState::Retrying => Ok(Some(DeliveryState::Retrying)),
        pb::DeliveryState::Delivered => Ok(Some(DeliveryState::Delivered)),
        pb::DeliveryState::DeadLettered => Ok(Some(DeliveryState::DeadLettered)),
    }
}

pub fn quarantine_state_to_pb(s: QuarantineState) -> pb::QuarantineState {
    match s {
        QuarantineState::Quarantined => pb::QuarantineState::Quarantined,
        QuarantineState::Replayed => pb::QuarantineState::Replayed,
    }
}

/// `Ok(None)` for QUARANTINE_STATE_UNSPECIFIED; `Err` for an undefined number.
pub fn quarantine_state_from_pb(v: i32) -> Result<Option<QuarantineState>, Undefined> {
    match pb::QuarantineState::try_from(v).map_err(|_| Undefined(v))? {
        pb::QuarantineState::Unspecified => Ok(None),
        pb::QuarantineState::Quarantined => Ok(Some(QuarantineState::Quarantined)),
        pb::QuarantineState::Replayed => Ok(Some(QuarantineState::Replayed)),
    }
}

pub fn quarantine_reason_to_pb(r: QuarantineReason) -> pb::QuarantineReason {
    match r {
        QuarantineReason::SchemaInvalid => pb::QuarantineReason::SchemaInvalid,
        QuarantineReason::UnknownEventType => pb::QuarantineReason::UnknownEventType,
        QuarantineReason::NormalizationFailed => pb::QuarantineReason::NormalizationFailed,
    }
}

pub fn dead_letter_state_to_pb(s: DeadLetterState) -> pb::DeadLetterState {
    match s {
        DeadLetterState::Failed => pb::DeadLetterState::Failed,
        DeadLetterState::Replaying => pb::DeadLetterState::Replaying,
        DeadLetterState::Replayed => pb::DeadLetterState::Replayed,
    }
}

/// `Ok(None)` for DEAD_LETTER_STATE_UNSPECIFIED; `Err` for an undefined number.
pub fn dead_letter_state_from_pb(v: i32) -> Result<Option<DeadLetterState>, Undefined> {
    match pb::DeadLetterState::try_from(v).map_err(|_| Undefined(v))? {
        pb::DeadLetterState::Unspecified => Ok(None),
        pb::DeadLetterState::Failed => Ok(Some(DeadLetterState::Failed)),
        pb::DeadLetterState::Replaying => Ok(Some(DeadLetterState::Replaying)),
        pb::DeadLetterState::Replayed => Ok(Some(DeadLetterState::Replayed)),
    }
}

fn secret_state_to_pb(s: SecretState) -> pb::SecretState {
    match s {
        SecretState::Active => pb::SecretState::Active,
        SecretState::Expired => pb::SecretState::Expired,
    }
}

// ---- small values --------------------------------------------------------------------------

/// Microseconds → protobuf duration.
pub fn duration_us(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us.div_euclid(MICROS),
        nanos: (us.rem_euclid(MICROS) * 1_000) as i32,
    }
}

fn count(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

pub fn header_to_pb(h: &Header) -> pb::Header {
    let Header { name, value } = h;
    pb::Header {
        name: name.clone(),
        value: value.clone(),
    }
}

pub fn header_from_pb(h: &pb::Header) -> Header {
    let pb::Header { name, value } = h;
    Header {
        name: name.clone(),
        value: value.clone(),
    }
}

// ---- endpoints -----------------------------------------------------------------------------

pub fn account_to_pb(a: &Account) -> pb::webhook_endpoint::Account {
    use pb::webhook_endpoint::Account as A;
    match a {
        Account::Ghl {
            location_id,
            company_id,
        } => A::Ghl(pb::GhlAccount {
            location_id: location_id.clone(),
            company_id: company_id.clone(),
        }),
        Account::Twilio {
            account_sid,
            to_number,
        } => A::Twilio(pb::TwilioAccount {
            account_sid: account_sid.clone(),
            to_number: to_number.clone(),
        }),
        Account::Retell { agent_id } => A::Retell(pb::RetellAccount {
            agent_id: agent_id.clone(),
        }),
        Account::Stripe { account_id } => A::Stripe(pb::StripeAccount {
            account_id: account_id.clone(),
        }),
        Account::Paypal {
            account_id,
            webhook_id,
        } => A::Paypal(pb::PaypalAccount {
            account_id: account_id.clone(),
            webhook_id: webhook_id.clone(),
        }),
    }
}

/// The account a proto oneof holds, as is (validation is the handler's); with the name of its
/// oneof field ("ghl", "twilio", ...), which is also its update-mask path.
pub fn account_from_pb(a: &pb::webhook_endpoint::Account) -> (Account, &'static str) {
    use pb::webhook_endpoint::Account as A;
    match a {
        A::Ghl(pb::GhlAccount {
            location_id,
            company_id,
        }) => (
            Account::Ghl {
                location_id: location_id.clone(),
                company_id: company_id.clone(),
            },
            "ghl",
        ),
        A::Twilio(pb::TwilioAccount {
            account_sid,
            to_number,
        }) => (
            Account::Twilio {
                account_sid: account_sid.clone(),
                to_number: to_number.clone(),
            },
            "twilio",
        ),
        A::Retell(pb::RetellAccount { agent_id }) => (
            Account::Retell {
                agent_id: agent_id.clone(),
            },
            "retell",
        ),
        A::Stripe(pb::StripeAccount { account_id }) => (
            Account::Stripe {
                account_id: account_id.clone(),
            },
            "stripe",
        ),
        A::Paypal(pb::PaypalAccount {
            account_id,
            webhook_id,
        }) => (
            Account::Paypal {
                account_id: account_id.clone(),
                webhook_id: webhook_id.clone(),
            },
            "paypal",
        ),
    }
}

/// The oneof field (and update-mask path) that holds an account of `provider`.
pub fn account_field(provider: Provider) -> &'static str {
    match provider {
        Provider::Ghl => "ghl",
        Provider::Twilio => "twilio",
        Provider::Retell => "retell",
        Provider::Stripe => "stripe",
        Provider::Paypal => "paypal",
    }
}

/// Metadata of a secret version as of `now_us` (the secret itself is never shown).
pub fn secret_version_to_pb(v: &SecretVersion, now_us: i64) -> pb::SecretVersion {
    let SecretVersion {
        version,
        fingerprint,
        created_at_us,
        expire_at_us,
        destroyed: _,
    } = v;
    pb::SecretVersion {
        version_id: version.to_string(),
        state: secret_state_to_pb(v.state(now_us)) as i32,
        fingerprint: fingerprint.clone(),
        create_time: Some(timestamp(*created_at_us)),
        expire_time: expire_at_us.map(timestamp),
    }
}

/// An endpoint as of `now_us` (which secret versions are still active). `secret` stays empty:
/// it is input only.
pub fn endpoint_to_pb(e: &Endpoint, now_us: i64) -> pb::WebhookEndpoint {
    let Endpoint {
        key,
        display_name,
        account,
        disabled,
        revision,
        created_at_us,
        updated_at_us,
        secret_versions,
    } = e;
    pb::WebhookEndpoint {
        name: endpoint_name(&key.tenant_id, &key.client_id, &key.id),
        display_name: display_name.clone(),
        provider: provider_to_pb(account.provider()) as i32,
        secret: String::new(),
        secret_versions: secret_versions
            .iter()
            .map(|v| secret_version_to_pb(v, now_us))
            .collect(),
        ingest_url: ingest_url(e),
        disabled: *disabled,
        etag: etag(*revision),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
        account: Some(account_to_pb(account)),
    }
}

// ---- retention -----------------------------------------------------------------------------

/// The retention periods in force for one tenant, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub events_secs: i64,
    pub dead_letters_secs: i64,
    pub quarantine_secs: i64,
}

impl Retention {
    /// The platform defaults (`[webhook.retention]`).
    pub fn defaults(config: &WebhookConfig) -> Retention {
        let r = &config.retention;
        Retention {
            events_secs: i64::from(r.events_days) * DAY_SECS,
            dead_letters_secs: i64::from(r.dead_letters_days) * DAY_SECS,
            quarantine_secs: i64::from(r.quarantine_days) * DAY_SECS,
        }
    }

    /// A tenant's settings over the defaults (an unset period is the default).
    pub fn of(config: &WebhookConfig, settings: Option<&RetentionSettings>) -> Retention {
        let d = Retention::defaults(config);
        let Some(s) = settings else {
            return d;
        };
        Retention {
            events_secs: s.event_retention_secs.unwrap_or(d.events_secs),
            dead_letters_secs: s.dead_letter_retention_secs.unwrap_or(d.dead_letters_secs),
            quarantine_secs: s.quarantine_retention_secs.unwrap_or(d.quarantine_secs),
        }
    }

    fn after(from_us: i64, secs: i64) -> i64 {
        from_us.saturating_add(secs.saturating_mul(MICROS))
    }

    /// When the purge removes the event: once its retention has passed and no delivery is
    /// pending (unset while one is) nor any dead letter of it is within its own retention.
    /// A dead delivery's last attempt stands for the time its row last changed.
    pub fn event_expire_us(&self, r: &EventRecord) -> Option<i64> {
        let mut at = Self::after(r.event.received_at_us, self.events_secs);
        for d in &r.deliveries {
            match d.state {
                DeliveryState::Pending | DeliveryState::Retrying => return None,
                DeliveryState::DeadLettered => {
                    let changed = d.last_attempt_at_us.unwrap_or(r.event.received_at_us);
                    at = at.max(Self::after(changed, self.dead_letters_secs));
                }
                DeliveryState::Delivered => {}
            }
        }
        Some(at)
    }

    /// When the purge removes the dead letter (with its event), at the earliest: unset while it
    /// is being replayed; another consumer's delivery of the same event may keep it longer.
    pub fn dead_letter_expire_us(&self, d: &DeadLetter) -> Option<i64> {
        let event = Self::after(d.event.received_at_us, self.events_secs);
        match d.state {
            DeadLetterState::Failed => {
                Some(event.max(Self::after(d.updated_at_us, self.dead_letters_secs)))
            }
            DeadLetterState::Replaying => None,
            DeadLetterState::Replayed => Some(event),
        }
    }

    pub fn quarantine_expire_us(&self, q: &QuarantinedEvent) -> i64 {
        Self::after(q.entry.received_at_us, self.quarantine_secs)
    }
}

/// A tenant's retention settings; `None` periods are shown unset (the platform default).
pub fn retention_to_pb(s: &RetentionSettings) -> pb::EventRetentionSettings {
    let RetentionSettings {
        tenant_id,
        event_retention_secs,
        quarantine_retention_secs,
        dead_letter_retention_secs,
        revision,
        updated_at_us,
    } = s;
    let secs = |s: &Option<i64>| s.map(|s| duration_us(s.saturating_mul(MICROS)));
    pb::EventRetentionSettings {
        name: retention_name(tenant_id),
        event_retention: secs(event_retention_secs),
        quarantine_retention: secs(quarantine_retention_secs),
        dead_letter_retention: secs(dead_letter_retention_secs),
        etag: etag(*revision),
        // Never stored: never updated.
        update_time: (*revision > 0).then(|| timestamp(*updated_at_us)),
    }
}

// ---- events --------------------------------------------------------------------------------

/// The canonical event as consumers receive it (`tenant` and `client` as resource names).
pub fn canonical_to_pb(e: &CanonicalEvent) -> common::CanonicalEvent {
    let CanonicalEvent {
        cloud_event_id,
        source,
        event_type,
        subject,
        time_us,
        data,
        tenant_id,
        client_id,
        provider,
        provider_event_id,
        ordering_key,
    } = e;
    let data = serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| json_to_struct(&v));
    common::CanonicalEvent {
        id: cloud_event_id.clone(),
        source: source.clone(),
        r#type: event_type.clone(),
        subject: subject.clone(),
        time: Some(timestamp(*time_us)),
        data,
        spec_version: SPEC_VERSION.to_owned(),
        tenant: tenant_name(tenant_id),
        client: client_name(tenant_id, client_id),
        provider: provider.as_str().to_owned(),
        provider_event_id: provider_event_id.clone(),
        ordering_key: ordering_key.clone(),
    }
}

pub fn delivery_to_pb(tenant_id: &str, d: &ConsumerDelivery) -> pb::ConsumerDelivery {
    let ConsumerDelivery {
        outbox_id,
        consumer,
        state,
        attempts,
        last_attempt_at_us,
        next_attempt_at_us,
        delivered_at_us,
        duplicate,
        last_error,
        dead_letter,
    } = d;
    pb::ConsumerDelivery {
        consumer: consumer.clone(),
        state: delivery_state_to_pb(*state) as i32,
        attempt_count: count(*attempts),
        last_attempt_time: last_attempt_at_us.map(timestamp),
        next_attempt_time: match state {
            DeliveryState::Pending | DeliveryState::Retrying => next_attempt_at_us.map(timestamp),
            DeliveryState::Delivered | DeliveryState::DeadLettered => None,
        },
        deliver_time: delivered_at_us.map(timestamp),
        duplicate: *duplicate,
        last_error: last_error.clone().unwrap_or_default(),
        // Named once it has been a dead letter, so a replayed one can still be followed.
        dead_letter: if *dead_letter {
            dead_letter_name(tenant_id, *outbox_id)
        } else {
            String::new()
        },
    }
}

pub fn event_to_pb(r: &EventRecord, retention: &Retention) -> pb::Event {
    let EventRecord { event, deliveries } = r;
    let StoredEvent {
        id,
        event: canonical,
        endpoint_id,
        received_at_us,
        replayed_from,
    } = event;
    let tenant = &canonical.tenant_id;
    pb::Event {
        name: event_name(tenant, id),
        canonical_event: Some(canonical_to_pb(canonical)),
        webhook_endpoint: endpoint_name(tenant, &canonical.client_id, endpoint_id),
        delivery_state: delivery_state_to_pb(r.delivery_state()) as i32,
        deliveries: deliveries
            .iter()
            .map(|d| delivery_to_pb(tenant, d))
            .collect(),
        receive_time: Some(timestamp(*received_at_us)),
        expire_time: retention.event_expire_us(r).map(timestamp),
        replayed_from: replayed_from
            .as_deref()
            .map(|q| quarantined_name(tenant, q))
            .unwrap_or_default(),
    }
}

fn attempt_to_pb(a: &DeliveryAttempt) -> pb::DeliveryAttempt {
    let DeliveryAttempt {
        attempt,
        attempted_at_us,
        latency_us,
        status_code,
        error_message,
    } = a;
    pb::DeliveryAttempt {
        attempt: count(*attempt),
        attempt_time: Some(timestamp(*attempted_at_us)),
        latency: Some(duration_us(*latency_us)),
        status_code: status_code.clone(),
        error_message: error_message.clone(),
    }
}

pub fn dead_letter_to_pb(d: &DeadLetter, retention: &Retention) -> pb::DeadLetter {
    let DeadLetter {
        id,
        tenant_id,
        event,
        consumer,
        state,
        attempt_count,
        attempts,
        last_error,
        created_at_us,
        updated_at_us,
        replayed_at_us,
    } = d;
    pb::DeadLetter {
        name: dead_letter_name(tenant_id, *id),
        event: event_name(tenant_id, &event.id),
        canonical_event: Some(canonical_to_pb(&event.event)),
        consumer: consumer.clone(),
        state: dead_letter_state_to_pb(*state) as i32,
        attempt_count: count(*attempt_count),
        attempts: attempts.iter().map(attempt_to_pb).collect(),
        last_error: last_error.clone(),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
        replay_time: replayed_at_us.map(timestamp),
        expire_time: retention.dead_letter_expire_us(d).map(timestamp),
    }
}

// ---- quarantine ----------------------------------------------------------------------------

fn schema_error_to_pb(e: &SchemaError) -> pb::SchemaError {
    let SchemaError {
        instance_path,
        schema_path,
        message,
    } = e;
    pb::SchemaError {
        instance_path: instance_path.clone(),
        schema_path: schema_path.clone(),
        message: message.clone(),
    }
}

/// A quarantined event with its expiry under the platform's default retention (the ingest
/// pipeline's answer; the operator RPCs use [`quarantined_to_pb_in`] with the tenant's).
pub fn quarantined_to_pb(q: &QuarantinedEvent, config: &WebhookConfig) -> pb::QuarantinedEvent {
    quarantined_to_pb_in(q, &Retention::defaults(config))
}

/// A quarantined event with its expiry under `retention`.
pub fn quarantined_to_pb_in(q: &QuarantinedEvent, retention: &Retention) -> pb::QuarantinedEvent {
    let QuarantinedEvent {
        id,
        entry,
        state,
        replayed_event_id,
        replayed_at_us,
        updated_at_us: _,
    } = q;
    let crate::domain::NewQuarantined {
        tenant_id,
        client_id,
        endpoint_id,
        provider,
        raw_body,
        headers,
        provider_event_type,
        provider_event_id,
        failure,
        received_at_us,
    } = entry;
    let QuarantineFailure {
        reason,
        schema_errors,
        error_message,
        schema_url,
    } = failure;
    pb::QuarantinedEvent {
        name: quarantined_name(tenant_id, id),
        provider: provider_to_pb(*provider) as i32,
        webhook_endpoint: endpoint_name(tenant_id, client_id, endpoint_id),
        client: client_name(tenant_id, client_id),
        raw_body: raw_body.clone(),
        headers: headers.iter().map(header_to_pb).collect(),
        provider_event_type: provider_event_type.clone(),
        provider_event_id: provider_event_id.clone(),
        reason: quarantine_reason_to_pb(*reason) as i32,
        schema_errors: schema_errors.iter().map(schema_error_to_pb).collect(),
        error_message: error_message.clone(),
        schema_url: schema_url.clone(),
        state: quarantine_state_to_pb(*state) as i32,
        replayed_event: replayed_event_id
            .as_deref()
            .map(|e| event_name(tenant_id, e))
            .unwrap_or_default(),
        receive_time: Some(timestamp(*received_at_us)),
        replay_time: replayed_at_us.map(timestamp),
        expire_time: Some(timestamp(retention.quarantine_expire_us(q))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EndpointKey, NewQuarantined};

    fn config(events: u32, dead: u32, quarantine: u32) -> WebhookConfig {
        serde_json::from_value(serde_json::json!({
            "consumers": {},
            "ghl": {"public_keys": [], "legacy_public_keys": []},
            "paypal": {"certificates": []},
            "dispatch": {
                "enabled": false, "batch": 1, "lease_secs": 1, "timeout_ms": 1,
                "max_attempts": 1, "backoff_base_ms": 1, "backoff_max_secs": 1,
                "idle_poll_ms": 1
            },
            "retention": {
                "events_days": events, "dead_letters_days": dead,
                "quarantine_days": quarantine, "purge_every_secs": 60
            }
        }))
        .expect("config")
    }

    const DAY: i64 = DAY_SECS * MICROS;

    #[test]
    fn tenant_settings_override_the_defaults_one_by_one() {
        let c = config(30, 14, 7);
        let d = Retention::defaults(&c);
        assert_eq!(d.events_secs, 30 * DAY_SECS);
        let s = RetentionSettings {
            tenant_id: "t".into(),
            event_retention_secs: Some(DAY_SECS),
            quarantine_retention_secs: None,
            dead_letter_retention_secs: Some(2 * DAY_SECS),
            revision: 1,
            updated_at_us: 0,
        };
        let r = Retention::of(&c, Some(&s));
        assert_eq!(
            (r.events_secs, r.dead_letters_secs, r.quarantine_secs),
            (DAY_SECS, 2 * DAY_SECS, 7 * DAY_SECS)
        );
        assert_eq!(Retention::of(&c, None), d);
    }

    fn delivery(state: DeliveryState, last: Option<i64>) -> ConsumerDelivery {
        ConsumerDelivery {
            outbox_id: 7,
            consumer: "billing".into(),
            state,
            attempts: 3,
            last_attempt_at_us: last,
            next_attempt_at_us: Some(5),
            delivered_at_us: None,
            duplicate: false,
            last_error: Some("down".into()),
            dead_letter: state == DeliveryState::DeadLettered,
        }
    }

    fn canonical() -> CanonicalEvent {
        CanonicalEvent {
            cloud_event_id: "ce-1".into(),
            source: "maxai://providers/retell".into(),
            event_type: "voice.call.ended".into(),
            subject: "calls/c1".into(),
            time_us: 1_500_000,
            data: r#"{"call_id":"c1","n":2,"tags":["a"],"x":null}"#.into(),
            tenant_id: "acme".into(),
            client_id: "shop".into(),
            provider: Provider::Retell,
            provider_event_id: "call_ended:c1".into(),
            ordering_key: "c1".into(),
        }
    }

    fn record(deliveries: Vec<ConsumerDelivery>) -> EventRecord {
        EventRecord {
            event: StoredEvent {
                id: "e1".into(),
                event: canonical(),
                endpoint_id: "retell-main".into(),
                received_at_us: 10 * DAY,
                replayed_from: Some("q1".into()),
            },
            deliveries,
        }
    }

    #[test]
    fn events_expire_after_delivery_and_their_dead_letters() {
        let r = Retention::defaults(&config(30, 60, 7));
        let done = record(vec![delivery(DeliveryState::Delivered, Some(11 * DAY))]);
        assert_eq!(r.event_expire_us(&done), Some(40 * DAY));
        let pending = record(vec![
            delivery(DeliveryState::Delivered, None),
            delivery(DeliveryState::Retrying, Some(11 * DAY)),
        ]);
        assert_eq!(r.event_expire_us(&pending), None, "kept while undelivered");
        let dead = record(vec![delivery(DeliveryState::DeadLettered, Some(12 * DAY))]);
        assert_eq!(r.event_expire_us(&dead), Some(72 * DAY));

        let pb = event_to_pb(&dead, &r);
        assert_eq!(pb.name, "tenants/acme/events/e1");
        assert_eq!(
            pb.webhook_endpoint,
            "tenants/acme/clients/shop/webhookEndpoints/retell-main"
        );
        assert_eq!(pb.replayed_from, "tenants/acme/quarantinedEvents/q1");
        assert_eq!(pb.delivery_state, pb::DeliveryState::DeadLettered as i32);
        assert_eq!(pb.deliveries[0].dead_letter, "tenants/acme/deadLetters/7");
        assert_eq!(pb.deliveries[0].next_attempt_time, None);
        let ce = pb.canonical_event.expect("canonical");
        assert_eq!(
            (
                ce.tenant.as_str(),
                ce.client.as_str(),
                ce.spec_version.as_str()
            ),
            ("tenants/acme", "tenants/acme/clients/shop", "1.0")
        );
        let data = ce.data.expect("data");
        assert_eq!(data.fields.len(), 4);
        assert_eq!(
            data.fields["n"].kind,
            Some(prost_types::value::Kind::NumberValue(2.0))
        );
    }

    #[test]
    fn dead_letters_expire_with_their_own_retention_unless_replaying() {
        let r = Retention::defaults(&config(30, 60, 7));
        let mut d = DeadLetter {
            id: 9,
            tenant_id: "acme".into(),
            event: record(vec![]).event,
            consumer: "billing".into(),
            state: DeadLetterState::Failed,
            attempt_count: 5,
            attempts: vec![DeliveryAttempt {
                attempt: 5,
                attempted_at_us: 11 * DAY,
                latency_us: 1_500,
                status_code: "UNAVAILABLE".into(),
                error_message: "down".into(),
            }],
            last_error: "down".into(),
            created_at_us: 11 * DAY,
            updated_at_us: 11 * DAY,
            replayed_at_us: None,
        };
        assert_eq!(r.dead_letter_expire_us(&d), Some(71 * DAY));
        let pb = dead_letter_to_pb(&d, &r);
        assert_eq!(pb.name, "tenants/acme/deadLetters/9");
        assert_eq!(pb.event, "tenants/acme/events/e1");
        assert_eq!(
            pb.attempts[0].latency,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_500_000
            })
        );
        d.state = DeadLetterState::Replaying;
        assert_eq!(r.dead_letter_expire_us(&d), None);
        d.state = DeadLetterState::Replayed;
        assert_eq!(r.dead_letter_expire_us(&d), Some(40 * DAY));
    }

    #[test]
    fn quarantined_events_show_names_and_expiry() {
        let q = QuarantinedEvent {
            id: "q1".into(),
            entry: NewQuarantined {
                tenant_id: "acme".into(),
                client_id: "shop".into(),
                endpoint_id: "retell-main".into(),
                provider: Provider::Retell,
                raw_body: b"{}".to_vec(),
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "application/json".into(),
                }],
                provider_event_type: "call_ended".into(),
                provider_event_id: String::new(),
                failure: QuarantineFailure {
                    reason: QuarantineReason::SchemaInvalid,
                    schema_errors: vec![SchemaError {
                        instance_path: "/call".into(),
                        schema_path: "/required".into(),
                        message: "missing".into(),
                    }],
                    error_message: String::new(),
                    schema_url: "https://schemas/x".into(),
                },
                received_at_us: DAY,
            },
            state: QuarantineState::Replayed,
            replayed_event_id: Some("e1".into()),
            replayed_at_us: Some(2 * DAY),
            updated_at_us: 2 * DAY,
        };
        let pb = quarantined_to_pb(&q, &config(30, 60, 7));
        assert_eq!(pb.name, "tenants/acme/quarantinedEvents/q1");
        assert_eq!(pb.client, "tenants/acme/clients/shop");
        assert_eq!(pb.replayed_event, "tenants/acme/events/e1");
        assert_eq!(pb.expire_time, Some(timestamp(8 * DAY)));
        assert_eq!(pb.state, pb::QuarantineState::Replayed as i32);
        assert_eq!(pb.schema_errors.len(), 1);
    }

    #[test]
    fn endpoints_never_show_a_secret_and_name_their_ingest_url() {
        let e = Endpoint {
            key: EndpointKey {
                tenant_id: "acme".into(),
                client_id: "shop".into(),
                id: "pp".into(),
            },
            display_name: "PayPal".into(),
            account: Account::Paypal {
                account_id: "M1".into(),
                webhook_id: "WH-1".into(),
            },
            disabled: false,
            revision: 3,
            created_at_us: 1,
            updated_at_us: 2,
            secret_versions: vec![SecretVersion {
                version: 1,
                fingerprint: "abcd0123".into(),
                created_at_us: 1,
                expire_at_us: Some(10),
                destroyed: false,
            }],
        };
        let pb = endpoint_to_pb(&e, 10);
        assert_eq!(pb.etag, "r3");
        assert!(pb.secret.is_empty());
        assert_eq!(pb.provider, pb::Provider::Paypal as i32);
        assert_eq!(pb.secret_versions[0].state, pb::SecretState::Expired as i32);
        assert_eq!(
            pb.ingest_url,
            "/v1/webhooks/paypal?endpoint=tenants%2Facme%2Fclients%2Fshop%2FwebhookEndpoints%2Fpp"
        );
        let (back, field) = account_from_pb(pb.account.as_ref().expect("account"));
        assert_eq!((back, field), (e.account.clone(), "paypal"));
        assert_eq!(account_field(Provider::Paypal), "paypal");
    }

    #[test]
    fn enums_round_trip() {
        for p in Provider::ALL {
            assert_eq!(provider_from_pb(provider_to_pb(p) as i32), Ok(Some(p)));
        }
        assert_eq!(provider_from_pb(0), Ok(None));
        assert!(provider_from_pb(99).is_err());
        for s in [
            DeliveryState::Pending,
            DeliveryState::Retrying,
            DeliveryState::Delivered,
            DeliveryState::DeadLettered,
        ] {
            assert_eq!(
                delivery_state_from_pb(delivery_state_to_pb(s) as i32),
                Ok(Some(s))
            );
        }
        for s in [
            DeadLetterState::Failed,
            DeadLetterState::Replaying,
            DeadLetterState::Replayed,
        ] {
            assert_eq!(
                dead_letter_state_from_pb(dead_letter_state_to_pb(s) as i32),
                Ok(Some(s))
            );
        }
        for s in [QuarantineState::Quarantined, QuarantineState::Replayed] {
            assert_eq!(
                quarantine_state_from_pb(quarantine_state_to_pb(s) as i32),
                Ok(Some(s))
            );
        }
        assert_eq!(
            header_from_pb(&header_to_pb(&Header {
                name: "a".into(),
                value: "b".into()
            })),
            Header {
                name: "a".into(),
                value: "b".into()
            }
        );
    }
}
