//! One list of error kinds for the whole platform, mapped exhaustively to gRPC codes (here) and
//! to HTTP statuses (the gateway uses [`http_status`]). A new kind breaks the build until someone
//! decides both mappings.
use std::{fmt, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Domain put in every `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "maxai.dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// A concurrent change won (etag mismatch, lost race).
    Conflict,
    Unauthenticated,
    PermissionDenied,
    RateLimited,
    /// The system is not in a state that allows the operation (e.g. a flag still referenced).
    PreconditionFailed,
    Unavailable,
    Timeout,
    /// An external provider refused or failed the call.
    Provider,
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::RateLimited,
        ErrorKind::PreconditionFailed,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Provider,
        ErrorKind::Internal,
    ];

    pub fn grpc_code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::Conflict => Code::Aborted,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::RateLimited => Code::ResourceExhausted,
            ErrorKind::PreconditionFailed => Code::FailedPrecondition,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::Provider => Code::Unknown,
            ErrorKind::Internal => Code::Internal,
        }
    }

    /// The stable reason string (`maxai.common.v1.ErrorReason` without its prefix).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::AlreadyExists => "ALREADY_EXISTS",
            ErrorKind::Conflict => "CONFLICT",
            ErrorKind::Unauthenticated => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::RateLimited => "RATE_LIMITED",
            ErrorKind::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorKind::Unavailable => "UNAVAILABLE",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Provider => "PROVIDER_ERROR",
            ErrorKind::Internal => "INTERNAL",
        }
    }

    /// The kind a gRPC code stands for, for callers that only see a `Status`.
    pub fn from_code(code: Code) -> ErrorKind {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::Aborted => ErrorKind::Conflict,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::ResourceExhausted => ErrorKind::RateLimited,
            Code::FailedPrecondition => ErrorKind::PreconditionFailed,
            Code::Unavailable | Code::Cancelled => ErrorKind::Unavailable,
            Code::DeadlineExceeded => ErrorKind::Timeout,
            Code::Unknown => ErrorKind::Provider,
            Code::Ok | Code::Internal | Code::Unimplemented | Code::DataLoss => ErrorKind::Internal,
        }
    }
}

/// The canonical name of a gRPC code (`UNAVAILABLE`), as retry policies and failure records
/// name codes.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// HTTP status for a gRPC code (the gateway answers with it), as Google's HTTP mapping does.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => S::BAD_REQUEST,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unknown => S::BAD_GATEWAY,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
    }
}

/// A field that failed validation, named by its proto path (e.g. `flag.environments[0].environment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// A platform error: what kind it is, a message safe to show, and details.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    pub retry_after: Option<Duration>,
    /// Logged, never sent: the cause behind an internal error.
    pub source: Option<anyhow::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
            source: None,
        }
    }
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::NotFound, format!("{what} not found"))
    }
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut e = Error::new(ErrorKind::InvalidArgument, "the request has invalid fields");
        e.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
        e
    }
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Error::new(ErrorKind::Internal, "internal error");
        e.source = Some(source.into());
        e
    }
    /// Keeps `source` as the logged cause (never sent to the caller).
    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.reason(), self.message)?;
        for v in &self.violations {
            write!(f, "; {}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => Error::new(ErrorKind::Unavailable, "storage is busy")
                .with_retry_after(Duration::from_secs(1)),
            _ => Error::internal(e),
        }
    }
}

/// Collects every violation of a request before failing, so a caller sees all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }
    pub fn check(&mut self, ok: bool, field: impl Into<String>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_fields(self) -> Vec<FieldViolation> {
        self.0
    }
    /// `Ok(())` when nothing was added, else one InvalidArgument error carrying every violation.
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut e = Error::new(ErrorKind::InvalidArgument, "the request has invalid fields");
        e.violations = self.0;
        Err(e)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        if let Some(source) = &e.source {
            tracing::error!(error = %source, kind = e.kind.reason(), "request failed");
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(
            e.kind.reason(),
            ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        for v in &e.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        if let Some(after) = e.retry_after {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(e.kind.grpc_code(), e.message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_grpc_code() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.grpc_code()), kind, "{kind:?}");
        }
    }

    #[test]
    fn status_carries_reason_and_field_violations() {
        let mut v = Violations::new();
        v.add("flag.name", "must not be empty");
        v.add("page_size", "must be 0..=1000");
        let status: Status = v.into_result().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["flag.name", "page_size"]);
    }

    #[test]
    fn internal_errors_reveal_nothing() {
        let status: Status = Error::internal(anyhow::anyhow!("password=hunter2 at db")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
