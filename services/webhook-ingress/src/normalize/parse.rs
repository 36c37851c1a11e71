//! Reading a verified body and naming its provider account.
use serde_json::{Map, Value};

use super::{Invalid, Provider};
use crate::domain::Account;

/// A webhook body, read: the provider's own event type and the body as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The provider's event type: GHL `type`, Retell `event`, Stripe `type`, PayPal
    /// `event_type`; for Twilio, which names none, one of `inbound_message`, `message_status`
    /// and `call_status` (see [`parse`]). Empty when the body names none.
    pub event_type: String,
    /// The body: a JSON object (Twilio form data as an object of strings).
    pub body: Value,
}

/// Twilio event types (Twilio's webhooks carry no type; the ingress names them by shape).
pub(crate) const TWILIO_INBOUND_MESSAGE: &str = "inbound_message";
pub(crate) const TWILIO_MESSAGE_STATUS: &str = "message_status";
pub(crate) const TWILIO_CALL_STATUS: &str = "call_status";

/// Reads a body that passed its signature check.
///
/// Every provider's body is a JSON object, except Twilio's, which is
/// `application/x-www-form-urlencoded` by default: read as a flat object of strings (a
/// parameter sent more than once becomes an array of its values, which no schema accepts). A
/// Twilio body with a JSON content type (or none, starting with `{`) is read as JSON.
///
/// Twilio's type is found by shape: `CallSid` makes a `call_status`; else `MessageStatus` a
/// `message_status`; else a message SID (`MessageSid`, `SmsSid`, `SmsMessageSid`) an
/// `inbound_message`; else the `EventType` parameter of Twilio's other products, or empty.
///
/// Fails only when the body cannot be read at all ([`Invalid::Unreadable`]); a missing event
/// type is left to [`super::validate`].
pub fn parse(provider: Provider, content_type: &str, body: &[u8]) -> Result<Parsed, Invalid> {
    let body = if provider == Provider::Twilio && is_form(content_type, body) {
        read_form(body)
    } else {
        read_json(body)?
    };
    let event_type = match provider {
        Provider::Ghl => type_field(&body, "type"),
        Provider::Retell => type_field(&body, "event"),
        Provider::Stripe => type_field(&body, "type"),
        Provider::Paypal => type_field(&body, "event_type"),
        Provider::Twilio => twilio_type(&body),
    };
    Ok(Parsed { event_type, body })
}

fn is_form(content_type: &str, body: &[u8]) -> bool {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/x-www-form-urlencoded" => true,
        "" => body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{'),
        _ => !(media_type == "application/json" || media_type.ends_with("+json")),
    }
}

fn read_json(body: &[u8]) -> Result<Value, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Invalid::Unreadable {
            message: "the body is JSON but not an object".into(),
        }),
        Err(e) => Err(Invalid::Unreadable {
            message: format!("the body is not JSON: {e}"),
        }),
    }
}

fn read_form(body: &[u8]) -> Value {
    let mut map = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match map.get_mut(name.as_ref()) {
            None => {
                map.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                map.insert(name.into_owned(), Value::Array(vec![first, value]));
            }
        }
    }
    Value::Object(map)
}

fn type_field(body: &Value, name: &str) -> String {
    body.get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn twilio_type(body: &Value) -> String {
    let has = |name: &str| body.get(name).is_some();
    if has("CallSid") {
        TWILIO_CALL_STATUS.into()
    } else if has("MessageStatus") {
        TWILIO_MESSAGE_STATUS.into()
    } else if has("MessageSid") || has("SmsSid") || has("SmsMessageSid") {
        TWILIO_INBOUND_MESSAGE.into()
    } else {
        type_field(body, "EventType")
    }
}

/// The provider account a webhook names, to find its endpoint before the signature check.
/// Read leniently from the unvalidated body: absent fields are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKeys {
    /// `locationId` (a sub-account) and `companyId` (an agency).
    Ghl {
        location_id: String,
        company_id: String,
    },
    /// `AccountSid` and the account's own number in the exchange: `To` of an inbound message
    /// or call, `From` of an outbound message's status or an outbound call (`Direction`
    /// `outbound-*`).
    Twilio { account_sid: String, number: String },
    /// `call.agent_id`.
    Retell { agent_id: String },
    /// The Connect account (`account`) for events of connected accounts; `None` for the
    /// platform account's own events, which resolve by the endpoint named in the ingest URL.
    Stripe { account_id: Option<String> },
    /// PayPal names no account: the endpoint is named in the ingest URL.
    Paypal,
}

impl AccountKeys {
    /// The account keys to look the endpoint up by (`EventStore::resolve`), best first; empty
    /// when the body names no account and only the ingest URL can.
    pub fn lookup(&self) -> Vec<String> {
        match self {
            AccountKeys::Ghl {
                location_id,
                company_id,
            } => Account::ghl_lookup(location_id, company_id),
            AccountKeys::Twilio {
                account_sid,
                number,
            } if !account_sid.is_empty() => Account::twilio_lookup(account_sid, number),
            AccountKeys::Retell { agent_id } if !agent_id.is_empty() => {
                Account::retell_lookup(agent_id)
            }
            AccountKeys::Stripe {
                account_id: Some(account_id),
            } => Account::stripe_lookup(account_id),
            _ => Vec::new(),
        }
    }
}

/// The provider account `parsed` names (see [`AccountKeys`]).
pub fn account_keys(provider: Provider, parsed: &Parsed) -> AccountKeys {
    let field = |pointer: &str| -> String {
        parsed
            .body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match provider {
        Provider::Ghl => AccountKeys::Ghl {
            location_id: field("/locationId"),
            company_id: field("/companyId"),
        },
        Provider::Twilio => {
            let outbound = match parsed.event_type.as_str() {
                TWILIO_MESSAGE_STATUS => true,
                TWILIO_CALL_STATUS => field("/Direction").starts_with("outbound"),
                _ => false,
            };
            AccountKeys::Twilio {
                account_sid: field("/AccountSid"),
                number: field(if outbound { "/From" } else { "/To" }),
            }
        }
        Provider::Retell => AccountKeys::Retell {
            agent_id: field("/call/agent_id"),
        },
        Provider::Stripe => AccountKeys::Stripe {
            account_id: Some(field("/account")).filter(|a| !a.is_empty()),
        },
        Provider::Paypal => AccountKeys::Paypal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_bodies_become_objects_of_strings() {
        let parsed = parse(
            Provider::Twilio,
            "application/x-www-form-urlencoded; charset=utf-8",
            b"MessageSid=SM1&Body=Hi+there%21&To=%2B15550100&Tag=a&Tag=b&Tag=c",
        )
        .unwrap();
        assert_eq!(parsed.event_type, TWILIO_INBOUND_MESSAGE);
        assert_eq!(
            parsed.body,
            json!({"MessageSid": "SM1", "Body": "Hi there!", "To": "+15550100", "Tag": ["a", "b", "c"]})
        );
    }

    #[test]
    fn twilio_content_types() {
        assert!(is_form("application/x-www-form-urlencoded", b"{"));
        assert!(is_form("", b"A=1"));
        assert!(!is_form("", b" {\"A\":\"1\"}"));
        assert!(!is_form("application/json; charset=utf-8", b"{}"));
        assert!(!is_form("application/cloudevents+json", b"{}"));
        let parsed = parse(
            Provider::Twilio,
            "application/json",
            br#"{"CallSid":"CA1"}"#,
        )
        .unwrap();
        assert_eq!(parsed.event_type, TWILIO_CALL_STATUS);
        let other = parse(Provider::Twilio, "", b"EventType=onMessageAdded").unwrap();
        assert_eq!(other.event_type, "onMessageAdded");
    }

    #[test]
    fn unreadable_bodies() {
        for (provider, body) in [
            (Provider::Stripe, &b"not json"[..]),
            (Provider::Retell, b"[1,2]"),
            (Provider::Ghl, b""),
            (Provider::Twilio, b"\"text\""),
        ] {
            let err = parse(provider, "application/json", body).unwrap_err();
            assert!(matches!(err, Invalid::Unreadable { .. }), "{provider:?}");
        }
    }

    #[test]
    fn event_types_come_from_each_providers_field() {
        let cases = [
            (
                Provider::Ghl,
                r#"{"type":"ContactCreate"}"#,
                "ContactCreate",
            ),
            (Provider::Retell, r#"{"event":"call_ended"}"#, "call_ended"),
            (
                Provider::Stripe,
                r#"{"type":"invoice.paid"}"#,
                "invoice.paid",
            ),
            (
                Provider::Paypal,
                r#"{"event_type":"PAYMENT.SALE.COMPLETED"}"#,
                "PAYMENT.SALE.COMPLETED",
            ),
            (Provider::Ghl, r#"{"type":7}"#, ""),
        ];
        for (provider, body, want) in cases {
            let parsed = parse(provider, "application/json", body.as_bytes()).unwrap();
            assert_eq!(parsed.event_type, want);
        }
    }

    #[test]
    fn account_keys_name_the_endpoint_account() {
        let p = |provider, body: &str| parse(provider, "", body.as_bytes()).unwrap();
        let twilio_in = p(
            Provider::Twilio,
            "MessageSid=SM1&AccountSid=AC1&From=%2B1555&To=%2B1666",
        );
        assert_eq!(
            account_keys(Provider::Twilio, &twilio_in).lookup(),
            ["AC1/+1666", "AC1/*"]
        );
        let twilio_status = p(
            Provider::Twilio,
            "MessageSid=SM1&MessageStatus=sent&AccountSid=AC1&From=%2B1666&To=%2B1555",
        );
        assert_eq!(
            account_keys(Provider::Twilio, &twilio_status),
            AccountKeys::Twilio {
                account_sid: "AC1".into(),
                number: "+1666".into()
            }
        );
        let outbound_call = p(
            Provider::Twilio,
            "CallSid=CA1&CallStatus=ringing&Direction=outbound-api&AccountSid=AC1&From=%2B1666&To=%2B1555",
        );
        assert_eq!(
            account_keys(Provider::Twilio, &outbound_call).lookup(),
            ["AC1/+1666", "AC1/*"]
        );
        let nothing = p(Provider::Twilio, "Foo=bar");
        assert!(account_keys(Provider::Twilio, &nothing).lookup().is_empty());

        let ghl = p(
            Provider::Ghl,
            r#"{"type":"ContactCreate","locationId":"loc_1"}"#,
        );
        assert_eq!(
            account_keys(Provider::Ghl, &ghl).lookup(),
            ["location/loc_1"]
        );
        let retell = p(
            Provider::Retell,
            r#"{"event":"call_ended","call":{"agent_id":"ag_1"}}"#,
        );
        assert_eq!(account_keys(Provider::Retell, &retell).lookup(), ["ag_1"]);
        let connect = p(
            Provider::Stripe,
            r#"{"type":"invoice.paid","account":"acct_1"}"#,
        );
        assert_eq!(
            account_keys(Provider::Stripe, &connect).lookup(),
            ["acct_1"]
        );
        let platform = p(Provider::Stripe, r#"{"type":"invoice.paid"}"#);
        assert_eq!(
            account_keys(Provider::Stripe, &platform),
            AccountKeys::Stripe { account_id: None }
        );
        assert!(account_keys(Provider::Stripe, &platform)
            .lookup()
            .is_empty());
        let paypal = p(
            Provider::Paypal,
            r#"{"event_type":"PAYMENT.SALE.COMPLETED"}"#,
        );
        assert_eq!(account_keys(Provider::Paypal, &paypal), AccountKeys::Paypal);
    }
}
