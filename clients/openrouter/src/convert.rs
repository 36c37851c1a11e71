//! OpenRouter JSON ⇄ port messages. Requests are built from the port's fields one by one;
//! responses are read into typed structs and destructured without `..`, so a field added on
//! either side is a decision, not an accident.
use maxai_adapter::{money, ProviderError};
use maxai_kit::ErrorKind;
use maxai_proto::maxai::common::v1::{Money, Usage, UsageItem};
use maxai_proto::maxai::ports::llm::v1::{ChatMessage, FinishReason, Role};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::PROVIDER;
pub use maxai_kit::structs::{json_to_struct, json_to_value, struct_to_json, value_to_json};

/// OpenRouter's credits are USD-denominated.
pub const CURRENCY: &str = "USD";

/// Reads `{"error": {"code", "message"}}` from a non-2xx body; never echoes the request.
pub fn parse_error(status: u16, body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorJson,
    }
    let (code, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => (code_text(&error.code), error.message),
        // Not OpenRouter's JSON (a proxy's page): keep a short, printable prefix.
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    };
    if message.trim().is_empty() {
        (code, format!("HTTP {status}"))
    } else {
        (code, message)
    }
}

fn code_text(code: &Value) -> String {
    match code {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An error object OpenRouter reports inside a 200 answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorJson {
    #[serde(default)]
    pub code: Value,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl ErrorJson {
    /// Mapped as the same HTTP status would be (502 upstream failure → UNAVAILABLE, ...).
    pub fn into_provider_error(self) -> ProviderError {
        let ErrorJson {
            code,
            message,
            metadata: _,
        } = self;
        let status = code
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(502);
        ProviderError::http(PROVIDER, status, code_text(&code), message)
    }
}

/// A `/chat/completions` answer (non-streaming).
#[derive(Debug, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<UsageJson>,
    #[serde(default)]
    pub error: Option<ErrorJson>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub message: Option<MessageJson>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorJson>,
}

#[derive(Debug, Deserialize)]
pub struct MessageJson {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UsageJson {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    /// Kept as JSON text so the amount is never an f64.
    #[serde(default)]
    pub cost: Option<Box<RawValue>>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: i64,
}

#[derive(Debug, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: i64,
}

/// What a completion said, ready for either response message.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub finish_reason: FinishReason,
    /// Set when the provider reported an error after generation started.
    pub late_error: Option<ProviderError>,
    pub model: String,
    pub generation_id: String,
    pub usage: Usage,
}

pub fn role(role: Role) -> Option<&'static str> {
    match role {
        Role::System => Some("system"),
        Role::User => Some("user"),
        Role::Assistant => Some("assistant"),
        Role::Unspecified => None,
    }
}

/// The parameters common to both generate RPCs.
pub struct Sampling<'a> {
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub max_tokens: i32,
    pub temperature: Option<f32>,
    pub stop: &'a [String],
    pub fallback_models: &'a [String],
}

/// The chat-completions body; `response_format` is added by the structured call.
pub fn completion_body(s: &Sampling<'_>) -> Map<String, Value> {
    let Sampling {
        model,
        messages,
        max_tokens,
        temperature,
        stop,
        fallback_models,
    } = s;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let ChatMessage { role: r, content } = m;
            json!({"role": role(Role::try_from(*r).unwrap_or(Role::Unspecified)), "content": content})
        })
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(false));
    if *max_tokens > 0 {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(t) = temperature {
        // Through the f32's shortest text, so 0.7 is sent as 0.7, not 0.699999988.
        if let Some(n) = t
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            body.insert("temperature".into(), Value::Number(n));
        }
    }
    if !stop.is_empty() {
        body.insert("stop".into(), json!(stop));
    }
    if !fallback_models.is_empty() {
        let mut models = vec![(*model).to_owned()];
        models.extend(fallback_models.iter().cloned());
        body.insert("models".into(), json!(models));
    }
    body
}

pub fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop" | "tool_calls" | "function_call") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("error") => FinishReason::Error,
        _ => FinishReason::Unspecified,
    }
}

fn provider_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(PROVIDER, ErrorKind::Provider, message)
}

/// Reads a completion body. An error before any content is the call's error; one after content
/// started comes back in [`Answer::late_error`].
pub fn answer(body: &[u8]) -> Result<Answer, ProviderError> {
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|e| provider_error(format!("unexpected completion body: {e}")))?;
    let Completion {
        id,
        model,
        choices,
        usage,
        error,
    } = completion;
    if let Some(error) = error {
        return Err(error.into_provider_error());
    }
    let Some(Choice {
        message,
        finish_reason: reason,
        error: choice_error,
    }) = choices.into_iter().next()
    else {
        return Err(provider_error("the completion has no choices"));
    };
    let text = message.and_then(|m| m.content).unwrap_or_default();
    let mut finish = finish_reason(reason.as_deref());
    let late_error = choice_error.map(|e| {
        finish = FinishReason::Error;
        e.into_provider_error()
    });
    Ok(Answer {
        text,
        finish_reason: finish,
        late_error,
        model,
        generation_id: id,
        usage: usage.map(usage_of).transpose()?.unwrap_or_default(),
    })
}

fn item(meter: &str, quantity: i64) -> UsageItem {
    UsageItem {
        meter: meter.to_owned(),
        quantity,
        cost: None,
    }
}

/// Token meters and the provider's cost, exact from the JSON text of `usage.cost`.
pub fn usage_of(usage: UsageJson) -> Result<Usage, ProviderError> {
    let UsageJson {
        prompt_tokens,
        completion_tokens,
        cost,
        prompt_tokens_details,
        completion_tokens_details,
    } = usage;
    let mut items = vec![
        item("llm.tokens.input", prompt_tokens),
        item("llm.tokens.output", completion_tokens),
    ];
    if let Some(CompletionDetails { reasoning_tokens }) = completion_tokens_details {
        if reasoning_tokens > 0 {
            items.push(item("llm.tokens.reasoning", reasoning_tokens));
        }
    }
    if let Some(PromptDetails { cached_tokens }) = prompt_tokens_details {
        if cached_tokens > 0 {
            items.push(item("llm.tokens.cached", cached_tokens));
        }
    }
    let provider_cost = match cost.as_deref().map(RawValue::get) {
        None | Some("null") => None,
        Some(text) => Some(
            money::from_decimal_str(text, CURRENCY)
                .map_err(|e| provider_error(format!("usage.cost: {e}")))?,
        ),
    };
    Ok(Usage {
        items,
        provider_cost,
    })
}

/// Exact money from a decimal.
pub fn money_of(amount: rust_decimal::Decimal) -> Result<Money, ProviderError> {
    money::from_decimal(amount, CURRENCY).map_err(|e| provider_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_read_from_its_text() {
        let body = br#"{"id":"gen-1","model":"m","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":5,"completion_tokens":3,"cost":0.0000025512345,
                     "completion_tokens_details":{"reasoning_tokens":2}}}"#;
        let a = answer(body).expect("answer");
        let cost = a.usage.provider_cost.expect("cost");
        // 0.0000025512345 USD rounds half-even to 2551 nanos.
        assert_eq!((cost.units, cost.nanos), (0, 2551));
        let meters: Vec<_> = a
            .usage
            .items
            .iter()
            .map(|i| (i.meter.as_str(), i.quantity))
            .collect();
        assert_eq!(
            meters,
            [
                ("llm.tokens.input", 5),
                ("llm.tokens.output", 3),
                ("llm.tokens.reasoning", 2)
            ]
        );
    }

    #[test]
    fn errors_keep_openrouters_words() {
        let (code, message) = parse_error(
            402,
            br#"{"error":{"code":402,"message":"Insufficient credits"}}"#,
        );
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("402", "Insufficient credits")
        );
        let (code, message) = parse_error(502, b"");
        assert_eq!((code.as_str(), message.as_str()), ("", "HTTP 502"));
    }

    #[test]
    fn structs_round_trip() {
        let v = json!({"type": "object", "minimum": 18, "x": [true, null, "s", 1.5]});
        let s = json_to_struct(&v).expect("object");
        assert_eq!(struct_to_json(&s), v);
    }
}
