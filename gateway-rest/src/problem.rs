//! RFC 7807 `application/problem+json`: the one shape of every failure the gateway answers.
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use maxai_kit::error::http_status;
use serde::Serialize;
use tonic_types::StatusExt;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code (`maxai.common.v1.ErrorReason` names, or gateway codes).
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    pub correlation_id: String,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    #[serde(skip)]
    pub allow: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!(
                "https://maxai.dev/problems/{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            violations: Vec::new(),
            correlation_id: String::new(),
            retry_after_secs: None,
            allow: None,
        }
    }

    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.violations.push(Violation {
            field: field.into(),
            description: description.into(),
        });
        self
    }

    pub fn correlated(mut self, id: &str) -> Self {
        self.correlation_id = id.to_owned();
        self
    }

    /// A gRPC status from a service, with its ErrorInfo reason, field violations and RetryInfo.
    pub fn from_status(status: &tonic::Status) -> Self {
        let http = http_status(status.code());
        let details = status.get_error_details();
        let code = details
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_else(|| {
                maxai_kit::ErrorKind::from_code(status.code())
                    .reason()
                    .to_owned()
            });
        // Transport-level failures carry tonic's own wording; keep internals out of answers.
        let detail = match status.code() {
            tonic::Code::Internal | tonic::Code::Unknown if details.error_info().is_none() => {
                "internal error".to_owned()
            }
            tonic::Code::Unavailable if details.error_info().is_none() => {
                "a service is unavailable; try again".to_owned()
            }
            _ => status.message().to_owned(),
        };
        let mut p = Problem::new(http, &code, detail);
        if let Some(br) = details.bad_request() {
            for v in &br.field_violations {
                p = p.with_violation(v.field.clone(), v.description.clone());
            }
        }
        p.retry_after_secs = details
            .retry_info()
            .and_then(|r| r.retry_delay)
            .map(|d| d.as_secs().max(1));
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            headers.insert(header::ALLOW, allow);
        }
        resp
    }
}
