//! Twilio's JSON resources ⇄ the messaging port's messages. Twilio's resources are destructured
//! without `..`, so a field added here has to be given a meaning (or an explicit `_`).
use maxai_adapter::money;
use maxai_proto::maxai::common::v1::{Money, Usage, UsageItem};
use maxai_proto::maxai::ports::messaging::v1::{
    CallStatus, CallStatusEvent, GetMessageStatusResponse, MakeCallResponse, MessageStatus,
    SendSmsResponse,
};
use prost_types::Timestamp;
use serde::{Deserialize, Deserializer};

/// Meter of billed SMS segments.
pub const SMS_SEGMENTS_METER: &str = "sms.segments";

/// A Message resource, as far as the port needs it. Unread fields are listed so a reader
/// sees what Twilio sends and that it was left out on purpose.
#[derive(Debug, Clone, Deserialize)]
pub struct TwilioMessage {
    pub sid: String,
    #[serde(default)]
    pub status: String,
    /// A string on the wire ("2"); some API versions send a number.
    #[serde(default, deserialize_with = "count")]
    pub num_segments: Option<i64>,
    /// Negative decimal text ("-0.00790"), null until final.
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub price_unit: Option<String>,
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// RFC 2822.
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub date_sent: Option<String>,
    #[serde(default)]
    pub date_updated: Option<String>,
}

/// A Call resource, as far as the port needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct TwilioCall {
    pub sid: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub date_created: Option<String>,
}

/// Twilio's legacy error body `{code, message, more_info, status}` or an RFC 9457 problem.
#[derive(Debug, Default, Deserialize)]
struct TwilioErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// `(provider code, message)` of a Twilio error answer, for the shared HTTP client.
pub fn parse_error(status: u16, body: &[u8]) -> (String, String) {
    let Ok(parsed) = serde_json::from_slice::<TwilioErrorBody>(body) else {
        return (String::new(), format!("HTTP {status}"));
    };
    let TwilioErrorBody {
        code,
        message,
        detail,
        title,
    } = parsed;
    let code = match code {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s,
        _ => String::new(),
    };
    let message = message.or(detail).or(title).unwrap_or_default();
    (code, message)
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(i64),
        Text(String),
    }
    Ok(match Option::<Count>::deserialize(d)? {
        Some(Count::Number(n)) => Some(n),
        Some(Count::Text(s)) => s.trim().parse().ok(),
        None => None,
    })
}

pub fn message_status(status: &str) -> MessageStatus {
    match status {
        "accepted" => MessageStatus::Accepted,
        "scheduled" => MessageStatus::Scheduled,
        "queued" => MessageStatus::Queued,
        "sending" => MessageStatus::Sending,
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "undelivered" => MessageStatus::Undelivered,
        "failed" => MessageStatus::Failed,
        "receiving" => MessageStatus::Receiving,
        "received" => MessageStatus::Received,
        "read" => MessageStatus::Read,
        "partially_delivered" => MessageStatus::PartiallyDelivered,
        "canceled" => MessageStatus::Canceled,
        other => {
            tracing::warn!(status = other, "unknown twilio message status");
            MessageStatus::Unspecified
        }
    }
}

pub fn call_status(status: &str) -> CallStatus {
    match status {
        "queued" => CallStatus::Queued,
        "ringing" => CallStatus::Ringing,
        "in-progress" => CallStatus::InProgress,
        "completed" => CallStatus::Completed,
        "busy" => CallStatus::Busy,
        "failed" => CallStatus::Failed,
        "no-answer" => CallStatus::NoAnswer,
        "canceled" => CallStatus::Canceled,
        other => {
            tracing::warn!(status = other, "unknown twilio call status");
            CallStatus::Unspecified
        }
    }
}

/// Twilio's `StatusCallbackEvent` word; `None` for the unspecified value.
pub fn callback_event(event: CallStatusEvent) -> Option<&'static str> {
    match event {
        CallStatusEvent::Unspecified => None,
        CallStatusEvent::Initiated => Some("initiated"),
        CallStatusEvent::Ringing => Some("ringing"),
        CallStatusEvent::Answered => Some("answered"),
        CallStatusEvent::Completed => Some("completed"),
    }
}

/// An RFC 2822 date as a UTC timestamp; `None` when absent or unreadable.
pub fn timestamp(rfc2822: Option<&str>) -> Option<Timestamp> {
    let text = rfc2822?.trim();
    let parsed = chrono::DateTime::parse_from_rfc2822(text)
        .map_err(|e| tracing::warn!(date = text, error = %e, "unreadable twilio date"))
        .ok()?;
    let utc = parsed.with_timezone(&chrono::Utc);
    Some(Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// The price charged, positive (Twilio reports what it charges as a negative amount). An
/// unreadable price is logged and left out rather than failing a message that was sent.
pub fn price(price: Option<&str>, unit: Option<&str>) -> Option<Money> {
    let text = price?.trim();
    if text.is_empty() {
        return None;
    }
    let unit = unit.filter(|u| !u.is_empty()).unwrap_or("USD");
    match money::from_decimal_str(text, unit) {
        Ok(amount) => Some(money::abs(&amount)),
        Err(e) => {
            tracing::warn!(price = text, error = %e, "unreadable twilio price");
            None
        }
    }
}

fn segments_of(m: &TwilioMessage) -> i32 {
    m.num_segments
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

/// "sms.segments" with the segments and, when known, their cost.
pub fn sms_usage(segments: i32, price: Option<&Money>) -> Usage {
    Usage {
        items: vec![UsageItem {
            meter: SMS_SEGMENTS_METER.to_owned(),
            quantity: i64::from(segments),
            cost: price.cloned(),
        }],
        provider_cost: price.cloned(),
    }
}

pub fn send_sms_response(m: TwilioMessage) -> SendSmsResponse {
    let segments = segments_of(&m);
    let TwilioMessage {
        sid,
        status,
        num_segments: _,
        price: raw_price,
        price_unit,
        // A just-created message has no error and is not sent yet.
        error_code: _,
        error_message: _,
        date_created,
        date_sent: _,
        date_updated: _,
    } = m;
    let price = price(raw_price.as_deref(), price_unit.as_deref());
    SendSmsResponse {
        sid,
        status: message_status(&status) as i32,
        segments,
        usage: Some(sms_usage(segments, price.as_ref())),
        price,
        create_time: timestamp(date_created.as_deref()),
    }
}

pub fn message_status_response(m: TwilioMessage) -> GetMessageStatusResponse {
    let segments = segments_of(&m);
    let TwilioMessage {
        sid,
        status,
        num_segments: _,
        price: raw_price,
        price_unit,
        error_code,
        error_message,
        date_created,
        date_sent,
        date_updated,
    } = m;
    GetMessageStatusResponse {
        sid,
        status: message_status(&status) as i32,
        error_code: error_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(0),
        error_message: error_message.unwrap_or_default(),
        segments,
        price: price(raw_price.as_deref(), price_unit.as_deref()),
        create_time: timestamp(date_created.as_deref()),
        send_time: timestamp(date_sent.as_deref()),
        update_time: timestamp(date_updated.as_deref()),
    }
}

pub fn make_call_response(c: TwilioCall) -> MakeCallResponse {
    let TwilioCall {
        sid,
        status,
        date_created,
    } = c;
    MakeCallResponse {
        sid,
        status: call_status(&status) as i32,
        // The port says so: price and duration arrive with the completed callback.
        usage: Some(Usage::default()),
        create_time: timestamp(date_created.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_become_positive_exact_money() {
        let m = price(Some("-0.00790"), Some("USD")).expect("price");
        assert_eq!(
            (m.units, m.nanos, m.currency_code.as_str()),
            (0, 7_900_000, "USD")
        );
        let m = price(Some("-1.5"), Some("eur")).expect("price");
        assert_eq!(
            (m.units, m.nanos, m.currency_code.as_str()),
            (1, 500_000_000, "EUR")
        );
        assert_eq!(price(None, Some("USD")), None);
        assert_eq!(price(Some("n/a"), Some("USD")), None);
    }

    #[test]
    fn errors_keep_twilio_code_and_message() {
        let body = br#"{"code": 21211, "message": "Invalid 'To' Phone Number", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            parse_error(400, body),
            ("21211".to_owned(), "Invalid 'To' Phone Number".to_owned())
        );
        let problem = br#"{"type": "https://x", "title": "Bad", "status": 400, "code": 20001, "detail": "Missing field"}"#;
        assert_eq!(
            parse_error(400, problem),
            ("20001".to_owned(), "Missing field".to_owned())
        );
        assert_eq!(
            parse_error(502, b"<html>"),
            (String::new(), "HTTP 502".to_owned())
        );
    }

    #[test]
    fn dates_and_statuses() {
        let t = timestamp(Some("Fri, 04 Dec 2026 03:29:53 +0000")).expect("date");
        assert_eq!(t.seconds, 1_796_354_993);
        assert_eq!(timestamp(Some("yesterday")), None);
        assert_eq!(
            message_status("partially_delivered"),
            MessageStatus::PartiallyDelivered
        );
        assert_eq!(message_status("new"), MessageStatus::Unspecified);
        assert_eq!(call_status("no-answer"), CallStatus::NoAnswer);
    }
}
