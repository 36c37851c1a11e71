//! GHL error bodies. The API answers NestJS-style `{"statusCode","message","error"}` where
//! `message` is a string or, for validation failures (422), an array of sentences; the OAuth
//! endpoints answer `{"error","error_description"}`. GHL has no error codes, so the `error`
//! text stands in as the provider code.
use maxai_adapter::ProviderError;
use maxai_kit::ErrorKind;
use serde_json::Value;

pub const PROVIDER: &str = "ghl";

/// `(provider code, message)` of an error body; empty when the body is not GHL's JSON (an HTML
/// page from a proxy is not worth quoting).
pub fn parse_error(_status: u16, body: &[u8]) -> (String, String) {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return (String::new(), String::new());
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    };
    let mut message = text(map.get("message"));
    if message.is_empty() {
        message = text(map.get("error_description"));
    }
    let code = text(map.get("error"));
    (code, message)
}

/// GHL's own meanings of some 400s, which the shared status mapping cannot know.
pub fn refine(error: ProviderError) -> ProviderError {
    if error.http_status != Some(400) {
        return error;
    }
    let message = error.message.to_ascii_lowercase();
    if message.contains("not found") {
        error.with_kind(ErrorKind::NotFound)
    } else if message.contains("does not allow duplicated contacts") {
        error.with_kind(ErrorKind::AlreadyExists)
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_array_messages_are_read() {
        let (code, message) = parse_error(
            401,
            br#"{"statusCode":401,"message":"Invalid token: access token is invalid","error":"Unauthorized"}"#,
        );
        assert_eq!(code, "Unauthorized");
        assert_eq!(message, "Invalid token: access token is invalid");
        let (_, message) = parse_error(
            422,
            br#"{"statusCode":422,"message":["email must be an email","property x should not exist"],"error":"Unprocessable Entity"}"#,
        );
        assert_eq!(
            message,
            "email must be an email; property x should not exist"
        );
        let (code, message) = parse_error(
            400,
            br#"{"error":"invalid_grant","error_description":"refresh token is invalid"}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("invalid_grant", "refresh token is invalid")
        );
        assert_eq!(
            parse_error(502, b"<html>bad gateway</html>"),
            (String::new(), String::new())
        );
    }

    #[test]
    fn ghl_400s_are_refined() {
        let e = |m: &str| ProviderError::http(PROVIDER, 400, "", m);
        assert_eq!(refine(e("Contact not found")).kind, ErrorKind::NotFound);
        assert_eq!(
            refine(e("This location does not allow duplicated contacts.")).kind,
            ErrorKind::AlreadyExists
        );
        assert_eq!(refine(e("Bad Request")).kind, ErrorKind::InvalidArgument);
        let not_400 = ProviderError::http(PROVIDER, 404, "", "not found");
        assert_eq!(refine(not_400).kind, ErrorKind::NotFound);
    }
}
