//! Provider failures as gRPC statuses. The code says what the caller can do (fix the input,
//! re-authorize the connection, retry later); `ErrorInfo` metadata keeps the provider's own
//! status, code and message so an operator sees what the provider said. Secrets never reach a
//! message: adapters build messages from response bodies, never from requests.
use std::collections::HashMap;
use std::time::Duration;

use maxai_kit::error::ERROR_DOMAIN;
use maxai_kit::ErrorKind;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// Longest provider message kept, so a provider's HTML error page does not flood a status.
const MAX_MESSAGE_CHARS: usize = 500;

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// e.g. "ghl", "twilio".
    pub provider: &'static str,
    pub kind: ErrorKind,
    /// The provider's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// The provider's own error code, when it gives one (Twilio 21211, Google "notFound").
    pub provider_code: String,
    /// The provider's message (or ours when it did not answer).
    pub message: String,
    /// When to try again, from `Retry-After` or a rate-limit reset header.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(provider: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            provider,
            kind,
            http_status: None,
            provider_code: String::new(),
            message: truncate(message.into()),
            retry_after: None,
        }
    }

    /// The provider answered `status`; `code` and `message` come from its error body.
    pub fn http(
        provider: &'static str,
        status: u16,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ProviderError {
            provider,
            kind: kind_for_status(status),
            http_status: Some(status),
            provider_code: code.into(),
            message: truncate(message.into()),
            retry_after: None,
        }
    }

    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// Whether repeating the same call may succeed (rate limit, provider outage, timeout).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.http_status {
            Some(s) => write!(f, "{} answered {s}: {}", self.provider, self.message),
            None => write!(f, "{}: {}", self.provider, self.message),
        }
    }
}

impl std::error::Error for ProviderError {}

/// The error kind a provider's HTTP status means for our caller.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        400 | 413 | 415 | 422 => ErrorKind::InvalidArgument,
        // The connection's credential was refused: the caller's own call was fine, the
        // connection needs re-authorizing.
        401 => ErrorKind::PreconditionFailed,
        402 => ErrorKind::PreconditionFailed,
        403 => ErrorKind::PermissionDenied,
        404 | 410 => ErrorKind::NotFound,
        409 => ErrorKind::AlreadyExists,
        412 => ErrorKind::Conflict,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Provider,
    }
}

impl From<ProviderError> for Status {
    fn from(e: ProviderError) -> Status {
        let mut metadata = HashMap::new();
        metadata.insert("provider".to_owned(), e.provider.to_owned());
        if let Some(s) = e.http_status {
            metadata.insert("http_status".to_owned(), s.to_string());
        }
        if !e.provider_code.is_empty() {
            metadata.insert("provider_code".to_owned(), e.provider_code.clone());
        }
        metadata.insert("provider_message".to_owned(), e.message.clone());
        let mut details = ErrorDetails::new();
        details.set_error_info(e.kind.reason(), ERROR_DOMAIN, metadata);
        if let Some(after) = e.retry_after {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(e.kind.grpc_code(), e.to_string(), details)
    }
}

fn truncate(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn statuses_map_to_what_the_caller_can_do() {
        assert_eq!(kind_for_status(400), ErrorKind::InvalidArgument);
        assert_eq!(kind_for_status(401), ErrorKind::PreconditionFailed);
        assert_eq!(kind_for_status(404), ErrorKind::NotFound);
        assert_eq!(kind_for_status(429), ErrorKind::RateLimited);
        assert_eq!(kind_for_status(503), ErrorKind::Unavailable);
        assert_eq!(kind_for_status(302), ErrorKind::Provider);
    }

    #[test]
    fn status_keeps_the_providers_words_and_retry_info() {
        let e = ProviderError::http("twilio", 429, "20429", "Too Many Requests")
            .with_retry_after(Some(Duration::from_secs(3)));
        let status: Status = e.into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "RATE_LIMITED");
        assert_eq!(info.metadata["provider"], "twilio");
        assert_eq!(info.metadata["http_status"], "429");
        assert_eq!(info.metadata["provider_code"], "20429");
        assert_eq!(info.metadata["provider_message"], "Too Many Requests");
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn long_messages_are_cut() {
        let e = ProviderError::new("ghl", ErrorKind::Provider, "x".repeat(10_000));
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
