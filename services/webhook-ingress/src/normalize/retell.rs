//! Retell: `call_started`, `call_ended` and `call_analyzed`.
//!
//! Retell's payload carries no event id; each event happens once per call, so the provider
//! event id is `<event>:<call_id>`.
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::money::Money;
use super::types;
use super::util::{first_time, into_object, opt_time, Doc};
use super::{Invalid, Mapped, Parsed};

/// Retell bills in US dollars; `call_cost` amounts are in cents.
const RETELL_CURRENCY: &str = "USD";

pub(crate) fn normalize(parsed: &Parsed, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let d = Doc(&parsed.body);
    let event = parsed.event_type.as_str();
    let call_id = d.req_str("/call/call_id")?;
    let started_at = d.unix_ms("/call/start_timestamp")?;
    let ended_at = d.unix_ms("/call/end_timestamp")?;

    let mut data = call_data(d, call_id, started_at)?;
    let (event_type, time) = match event {
        "call_started" => (
            types::VOICE_CALL_STARTED,
            first_time([started_at], received_at),
        ),
        "call_ended" => {
            end_data(&mut data, d, started_at, ended_at)?;
            (types::VOICE_CALL_ENDED, first_time([ended_at], received_at))
        }
        "call_analyzed" => {
            end_data(&mut data, d, started_at, ended_at)?;
            analysis_data(&mut data, d);
            // The analysis is done some time after the call; Retell does not say when.
            (types::VOICE_CALL_ANALYZED, received_at)
        }
        other => {
            return Err(Invalid::normalization(format!(
                "no mapping for Retell event {other:?}"
            )))
        }
    };
    Ok(Mapped {
        event_type,
        subject: format!("calls/{call_id}"),
        time,
        data: Value::Object(data),
        provider_event_id: format!("{event}:{call_id}"),
        ordering_key: format!("retell:call:{call_id}"),
    })
}

/// `phone_call` → `phone`, `web_call` → `web`; other values as sent.
fn call_type(d: Doc<'_>) -> Value {
    match d.str("/call/call_type") {
        Some("phone_call") => json!("phone"),
        Some("web_call") => json!("web"),
        Some(other) if !other.is_empty() => json!(other),
        _ => Value::Null,
    }
}

fn call_data(
    d: Doc<'_>,
    call_id: &str,
    started_at: Option<DateTime<Utc>>,
) -> Result<Map<String, Value>, Invalid> {
    let data = json!({
        "call_id": call_id,
        "agent_id": d.req_str("/call/agent_id")?,
        "agent_version": d.int("/call/agent_version"),
        "call_type": call_type(d),
        "direction": d.non_empty("/call/direction"),
        "from": d.non_empty("/call/from_number"),
        "to": d.non_empty("/call/to_number"),
        "status": d.non_empty("/call/call_status"),
        "started_at": opt_time(started_at),
        "metadata": d.object("/call/metadata"),
        "twilio_call_sid": d.non_empty("/call/telephony_identifier/twilio_call_sid"),
    });
    Ok(into_object(data))
}

fn end_data(
    data: &mut Map<String, Value>,
    d: Doc<'_>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
) -> Result<(), Invalid> {
    let duration_ms = d
        .i64("/call/duration_ms")
        .or_else(|| match (started_at, ended_at) {
            (Some(start), Some(end)) if end >= start => Some((end - start).num_milliseconds()),
            _ => None,
        });
    // Retell's `combined_cost` is in cents and may be fractional: cents × 10⁴ = micro-dollars.
    let cost = d
        .scaled_number("/call/call_cost/combined_cost", 4)?
        .map(|micros| {
            Money {
                amount_micros: micros,
                currency: Some(RETELL_CURRENCY.to_owned()),
            }
            .to_json()
        });
    data.insert("ended_at".into(), opt_time(ended_at));
    data.insert("duration_ms".into(), json!(duration_ms));
    data.insert(
        "duration_seconds".into(),
        json!(duration_ms.map(|ms| (ms + 999) / 1000)),
    );
    data.insert(
        "disconnection_reason".into(),
        d.non_empty("/call/disconnection_reason"),
    );
    data.insert("transcript".into(), d.string("/call/transcript"));
    data.insert("recording_url".into(), d.non_empty("/call/recording_url"));
    data.insert("cost".into(), json!(cost));
    Ok(())
}

fn analysis_data(data: &mut Map<String, Value>, d: Doc<'_>) {
    let sentiment = d
        .str("/call/call_analysis/user_sentiment")
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase);
    data.insert(
        "summary".into(),
        d.string("/call/call_analysis/call_summary"),
    );
    data.insert("sentiment".into(), json!(sentiment));
    data.insert(
        "successful".into(),
        d.bool("/call/call_analysis/call_successful"),
    );
    data.insert(
        "in_voicemail".into(),
        d.bool("/call/call_analysis/in_voicemail"),
    );
    data.insert(
        "custom_analysis_data".into(),
        d.object("/call/call_analysis/custom_analysis_data"),
    );
}
