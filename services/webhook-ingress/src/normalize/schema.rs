//! The JSON Schemas of the accepted provider events, embedded from `schemas/webhook/` and
//! compiled once (draft 2020-12, `format` asserted, no remote or file references).
use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::parse::Parsed;
use super::{Invalid, Provider, SchemaError};

/// One embedded schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaInfo {
    pub provider: Provider,
    /// The provider's event type the schema is for.
    pub event_type: &'static str,
    /// The schema's `$id`: `maxai://schemas/webhook/<provider>/<event>.json`.
    pub url: &'static str,
    /// Path of the schema file from the repository root.
    pub path: &'static str,
    /// The schema text, as embedded.
    pub text: &'static str,
}

macro_rules! schema {
    ($provider:ident, $dir:literal, $event:literal) => {
        SchemaInfo {
            provider: Provider::$provider,
            event_type: $event,
            url: concat!("maxai://schemas/webhook/", $dir, "/", $event, ".json"),
            path: concat!("schemas/webhook/", $dir, "/", $event, ".json"),
            text: include_str!(concat!(
                "../../../../schemas/webhook/",
                $dir,
                "/",
                $event,
                ".json"
            )),
        }
    };
}

const SCHEMAS: &[SchemaInfo] = &[
    schema!(Ghl, "ghl", "ContactCreate"),
    schema!(Ghl, "ghl", "ContactUpdate"),
    schema!(Ghl, "ghl", "ContactDelete"),
    schema!(Ghl, "ghl", "InboundMessage"),
    schema!(Ghl, "ghl", "OutboundMessage"),
    schema!(Ghl, "ghl", "AppointmentCreate"),
    schema!(Ghl, "ghl", "AppointmentUpdate"),
    schema!(Ghl, "ghl", "OpportunityCreate"),
    schema!(Ghl, "ghl", "OpportunityStatusUpdate"),
    schema!(Retell, "retell", "call_started"),
    schema!(Retell, "retell", "call_ended"),
    schema!(Retell, "retell", "call_analyzed"),
    schema!(Twilio, "twilio", "inbound_message"),
    schema!(Twilio, "twilio", "message_status"),
    schema!(Twilio, "twilio", "call_status"),
    schema!(Stripe, "stripe", "invoice.paid"),
    schema!(Stripe, "stripe", "invoice.payment_failed"),
    schema!(Stripe, "stripe", "customer.subscription.created"),
    schema!(Stripe, "stripe", "customer.subscription.updated"),
    schema!(Stripe, "stripe", "customer.subscription.deleted"),
    schema!(Stripe, "stripe", "checkout.session.completed"),
    schema!(Paypal, "paypal", "BILLING.SUBSCRIPTION.ACTIVATED"),
    schema!(Paypal, "paypal", "BILLING.SUBSCRIPTION.UPDATED"),
    schema!(Paypal, "paypal", "BILLING.SUBSCRIPTION.CANCELLED"),
    schema!(Paypal, "paypal", "PAYMENT.SALE.COMPLETED"),
];

/// Every embedded schema: one per accepted (provider, event type).
pub fn schemas() -> &'static [SchemaInfo] {
    SCHEMAS
}

/// The schema of `(provider, event_type)`, if that event is accepted.
pub fn schema(provider: Provider, event_type: &str) -> Option<&'static SchemaInfo> {
    SCHEMAS
        .iter()
        .find(|s| s.provider == provider && s.event_type == event_type)
}

type Compiled = HashMap<(Provider, &'static str), Validator>;

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|info| ((info.provider, info.event_type), compile(info)))
            .collect()
    })
}

/// Compiles an embedded schema. The schemas are constants of the build and a unit test
/// compiles every one, so a failure here is a build defect, reported with the file's path.
fn compile(info: &SchemaInfo) -> Validator {
    let schema: Value = serde_json::from_str(info.text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", info.path));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", info.path))
}

/// At most this many errors are reported for one payload.
pub const MAX_ERRORS: usize = 20;

/// Validates `parsed` against the schema of its (provider, event type).
///
/// [`Invalid::Unsupported`] when the event type has no schema; [`Invalid::Schema`] with up to
/// [`MAX_ERRORS`] errors, each with the JSON pointer of the failing value (for a missing
/// required field, the pointer of the field itself, e.g. `/call/call_id`), when it fails, or
/// when a JSON provider's body names no event type (pointer of the type field, `schema_url`
/// empty). Messages never quote payload values.
pub fn validate(provider: Provider, parsed: &Parsed) -> Result<(), Invalid> {
    if parsed.event_type.is_empty() && provider != Provider::Twilio {
        let field = match provider {
            Provider::Retell => "/event",
            Provider::Paypal => "/event_type",
            _ => "/type",
        };
        return Err(Invalid::Schema {
            schema_url: String::new(),
            errors: vec![SchemaError {
                instance_path: field.to_owned(),
                schema_path: String::new(),
                message: "the event type is missing, empty or not a string".to_owned(),
            }],
        });
    }
    let Some(info) = schema(provider, &parsed.event_type) else {
        return Err(Invalid::Unsupported {
            provider,
            event_type: parsed.event_type.clone(),
        });
    };
    let validator = &compiled()[&(info.provider, info.event_type)];
    let errors: Vec<SchemaError> = validator
        .iter_errors(&parsed.body)
        .take(MAX_ERRORS)
        .map(|e| schema_error(&e))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid::Schema {
            schema_url: info.url.to_owned(),
            errors,
        })
    }
}

fn schema_error(error: &ValidationError<'_>) -> SchemaError {
    let mut instance_path = error.instance_path().as_str().to_owned();
    if let ValidationErrorKind::Required {
        property: Value::String(name),
    } = error.kind()
    {
        instance_path.push('/');
        instance_path.push_str(&name.replace('~', "~0").replace('/', "~1"));
    }
    SchemaError {
        instance_path,
        schema_path: error.schema_path().as_str().to_owned(),
        message: error.masked().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_compiles_and_names_itself() {
        for info in SCHEMAS {
            let doc: Value = serde_json::from_str(info.text).unwrap();
            assert_eq!(doc["$id"], info.url, "{}", info.path);
            assert_eq!(
                doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                info.path
            );
            assert_eq!(doc["type"], "object", "{}", info.path);
            assert_ne!(
                doc.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{}: providers add fields, so the top level stays open",
                info.path
            );
            let _ = compile(info);
        }
        assert_eq!(compiled().len(), SCHEMAS.len(), "no duplicate entries");
    }

    #[test]
    fn missing_required_fields_point_at_the_field() {
        let parsed = Parsed {
            event_type: "call_ended".into(),
            body: serde_json::json!({"event": "call_ended", "call": {"agent_id": "ag"}}),
        };
        let Err(Invalid::Schema { errors, schema_url }) = validate(Provider::Retell, &parsed)
        else {
            panic!("must fail");
        };
        assert_eq!(schema_url, "maxai://schemas/webhook/retell/call_ended.json");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].instance_path, "/call/call_id");
        assert_eq!(errors[0].schema_path, "/properties/call/required");
    }

    #[test]
    fn messages_do_not_quote_payload_values() {
        let parsed = Parsed {
            event_type: "ContactCreate".into(),
            body: serde_json::json!({"type": "ContactCreate", "locationId": "loc", "id": "c1", "email": ["secret@example.com"]}),
        };
        let Err(Invalid::Schema { errors, .. }) = validate(Provider::Ghl, &parsed) else {
            panic!("must fail");
        };
        assert_eq!(errors[0].instance_path, "/email");
        assert!(
            !errors[0].message.contains("secret"),
            "{}",
            errors[0].message
        );
    }
}
