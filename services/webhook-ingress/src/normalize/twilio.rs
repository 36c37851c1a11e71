//! Twilio: inbound messages, message status callbacks and voice status callbacks.
//!
//! Twilio sends no event id. A message arrives once (`<MessageSid>:received`); status
//! callbacks repeat per status, so their id is `<MessageSid>:<MessageStatus>` or
//! `<CallSid>:<CallStatus>`. Messages are ordered per conversation: the account and the two
//! numbers, in either direction (`twilio:sms:<AccountSid>:<lower number>:<higher number>`), so a
//! contact's messages and the status of the replies to them keep their order; calls per
//! `CallSid`.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::money::Money;
use super::parse::{TWILIO_CALL_STATUS, TWILIO_INBOUND_MESSAGE, TWILIO_MESSAGE_STATUS};
use super::types;
use super::util::{into_object, opt_time, Doc};
use super::{Invalid, Mapped, Parsed};

/// Media entries read from one message at most (Twilio allows 10).
const MAX_MEDIA: u32 = 100;

pub(crate) fn normalize(parsed: &Parsed, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let d = Doc(&parsed.body);
    match parsed.event_type.as_str() {
        TWILIO_INBOUND_MESSAGE => inbound_message(d, received_at),
        TWILIO_MESSAGE_STATUS => message_status(d, received_at),
        TWILIO_CALL_STATUS => call_status(d, received_at),
        other => Err(Invalid::normalization(format!(
            "no mapping for Twilio event type {other:?}"
        ))),
    }
}

/// `whatsapp` when either address is a WhatsApp one (`whatsapp:+1…`), else `sms`.
fn channel(from: &str, to: &str) -> &'static str {
    if from.starts_with("whatsapp:") || to.starts_with("whatsapp:") {
        "whatsapp"
    } else {
        "sms"
    }
}

fn conversation_key(account_sid: &str, a: &str, b: &str) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("twilio:sms:{account_sid}:{low}:{high}")
}

/// A decimal-string form parameter as an integer.
fn int_param(d: Doc<'_>, pointer: &str) -> Option<i64> {
    d.str(pointer).and_then(|s| s.parse().ok())
}

/// `Price`/`PriceUnit`, when present, as a cost: Twilio reports a charge as a negative price,
/// the cost is positive.
fn cost(d: Doc<'_>) -> Result<Value, Invalid> {
    let Some(price) = d.str("/Price").filter(|s| !s.is_empty()) else {
        return Ok(Value::Null);
    };
    let money = Money::from_decimal(price, d.str("/PriceUnit"))
        .and_then(|m| {
            Some(Money {
                amount_micros: m.amount_micros.checked_neg()?,
                currency: m.currency,
            })
        })
        .ok_or_else(|| Invalid::normalization("/Price is not a usable decimal"))?;
    Ok(money.to_json())
}

fn inbound_message(d: Doc<'_>, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let sid = d.req_str("/MessageSid")?;
    let account_sid = d.req_str("/AccountSid")?;
    let from = d.req_str("/From")?;
    let to = d.req_str("/To")?;
    let channel = channel(from, to);
    let num_media = d
        .str("/NumMedia")
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0)
        .min(MAX_MEDIA);
    let media: Vec<Value> = (0..num_media)
        .filter_map(|i| {
            let url = d.str(&format!("/MediaUrl{i}"))?;
            Some(json!({
                "url": url,
                "content_type": d.non_empty(&format!("/MediaContentType{i}")),
            }))
        })
        .collect();
    let status = d
        .str("/SmsStatus")
        .filter(|s| !s.is_empty())
        .unwrap_or("received");
    let data = json!({
        "message_id": sid,
        "channel": channel,
        "direction": "inbound",
        "from": from,
        "to": to,
        "body": d.string("/Body"),
        "media": media,
        "status": status,
        "conversation_id": null,
        "contact_id": null,
        "location_id": null,
        "user_id": null,
        "account_sid": account_sid,
        "messaging_service_sid": d.non_empty("/MessagingServiceSid"),
        "num_segments": int_param(d, "/NumSegments"),
        "call_duration_seconds": null,
        "call_status": null,
    });
    Ok(Mapped {
        event_type: if channel == "sms" {
            types::MESSAGING_SMS_RECEIVED
        } else {
            types::MESSAGING_MESSAGE_RECEIVED
        },
        subject: format!("messages/{sid}"),
        time: received_at,
        data,
        provider_event_id: format!("{sid}:received"),
        ordering_key: conversation_key(account_sid, from, to),
    })
}

fn message_status(d: Doc<'_>, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let sid = d.req_str("/MessageSid")?;
    let status = d.req_str("/MessageStatus")?;
    let account_sid = d.req_str("/AccountSid")?;
    let from = d.req_str("/From")?;
    let to = d.req_str("/To")?;
    let channel = channel(from, to);
    let data = json!({
        "message_id": sid,
        "channel": channel,
        "status": status,
        "error_code": int_param(d, "/ErrorCode"),
        "from": from,
        "to": to,
        "account_sid": account_sid,
        "messaging_service_sid": d.non_empty("/MessagingServiceSid"),
        "cost": cost(d)?,
    });
    Ok(Mapped {
        event_type: if channel == "sms" {
            types::MESSAGING_SMS_STATUS
        } else {
            types::MESSAGING_MESSAGE_STATUS
        },
        subject: format!("messages/{sid}"),
        time: received_at,
        data,
        provider_event_id: format!("{sid}:{status}"),
        ordering_key: conversation_key(account_sid, from, to),
    })
}

/// Twilio's `Direction` as `inbound` or `outbound` (`outbound-api`, `outbound-dial`).
fn direction(d: Doc<'_>) -> Value {
    match d.str("/Direction") {
        Some("inbound") => json!("inbound"),
        Some(other) if other.starts_with("outbound") => json!("outbound"),
        Some(other) if !other.is_empty() => json!(other),
        _ => Value::Null,
    }
}

/// A call that did not complete, in Retell's `disconnection_reason` words.
fn disconnection_reason(status: &str) -> Option<&'static str> {
    match status {
        "busy" => Some("dial_busy"),
        "no-answer" => Some("dial_no_answer"),
        "failed" => Some("dial_failed"),
        "canceled" => Some("canceled"),
        _ => None,
    }
}

fn call_status(d: Doc<'_>, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let sid = d.req_str("/CallSid")?;
    let status = d.req_str("/CallStatus")?;
    // `Timestamp` is RFC 2822; a callback without a readable one is timed by its receipt.
    let time = d
        .str("/Timestamp")
        .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
        .map_or(received_at, |t| t.with_timezone(&Utc));
    let event_type = match status {
        "queued" | "initiated" | "ringing" => types::VOICE_CALL_PROGRESS,
        "in-progress" => types::VOICE_CALL_STARTED,
        "completed" | "busy" | "failed" | "no-answer" | "canceled" => types::VOICE_CALL_ENDED,
        other => {
            return Err(Invalid::normalization(format!(
                "no mapping for Twilio CallStatus {other:?}"
            )))
        }
    };
    let started = event_type == types::VOICE_CALL_STARTED;
    let mut data = into_object(json!({
        "call_id": sid,
        "agent_id": null,
        "agent_version": null,
        "call_type": "phone",
        "direction": direction(d),
        "from": d.req_str("/From")?,
        "to": d.req_str("/To")?,
        "status": status,
        "started_at": opt_time(started.then_some(time)),
        "metadata": null,
        "twilio_call_sid": sid,
    }));
    if event_type == types::VOICE_CALL_ENDED {
        let seconds = int_param(d, "/CallDuration");
        data.insert("ended_at".into(), opt_time(Some(time)));
        data.insert(
            "duration_ms".into(),
            json!(seconds.and_then(|s| s.checked_mul(1000))),
        );
        data.insert("duration_seconds".into(), json!(seconds));
        data.insert(
            "disconnection_reason".into(),
            json!(disconnection_reason(status)),
        );
        data.insert("transcript".into(), Value::Null);
        data.insert("recording_url".into(), d.non_empty("/RecordingUrl"));
        data.insert("cost".into(), cost(d)?);
    }
    Ok(Mapped {
        event_type,
        subject: format!("calls/{sid}"),
        time,
        data: Value::Object(data),
        provider_event_id: format!("{sid}:{status}"),
        ordering_key: format!("twilio:call:{sid}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_keys_ignore_direction() {
        assert_eq!(
            conversation_key("AC1", "+1555", "+1444"),
            conversation_key("AC1", "+1444", "+1555")
        );
        assert_ne!(
            conversation_key("AC1", "+1555", "+1444"),
            conversation_key("AC2", "+1555", "+1444")
        );
    }

    #[test]
    fn channels_and_reasons() {
        assert_eq!(channel("whatsapp:+1555", "whatsapp:+1444"), "whatsapp");
        assert_eq!(channel("+1555", "+1444"), "sms");
        assert_eq!(disconnection_reason("no-answer"), Some("dial_no_answer"));
        assert_eq!(disconnection_reason("completed"), None);
    }
}
