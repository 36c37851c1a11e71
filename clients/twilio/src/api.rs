//! `MessagingService` over Twilio: validate → convert → provider call → map.
use maxai_adapter::credentials::require_provider;
use maxai_adapter::validate;
use maxai_adapter::{Connection, ProviderError, Retry};
use maxai_kit::error::Violations;
use maxai_kit::ErrorKind;
use maxai_proto::maxai::iam::v1::{ConnectionCredential, ConnectionProvider};
use maxai_proto::maxai::ports::messaging::v1::make_call_request::Instructions;
use maxai_proto::maxai::ports::messaging::v1::messaging_service_server::MessagingService;
use maxai_proto::maxai::ports::messaging::v1::{
    CallStatusEvent, GetMessageStatusRequest, GetMessageStatusResponse, MakeCallRequest,
    MakeCallResponse, SendSmsRequest, SendSmsResponse,
};
use tonic::{Request, Response, Status};

use crate::convert::{self, TwilioCall, TwilioMessage};
use crate::TwilioAdapter;

/// Path prefix of every account resource.
const API_VERSION: &str = "2010-04-01";
/// Longest body Twilio accepts.
const MAX_BODY_CHARS: usize = 1600;
/// Twilio's `ValidityPeriod` range, in seconds.
const VALIDITY_SECS: std::ops::RangeInclusive<i64> = 1..=36_000;
/// Twilio's `Timeout` (ring time) range, in seconds.
const RING_TIMEOUT_SECS: std::ops::RangeInclusive<i64> = 5..=600;

/// Twilio errors whose fix is on the connection's side (an opted-out recipient, a region not
/// enabled for the account), not in the request's fields.
const PRECONDITION_CODES: &[&str] = &["21610", "21408", "21612", "30034"];

#[tonic::async_trait]
impl MessagingService for TwilioAdapter {
    async fn send_sms(
        &self,
        request: Request<SendSmsRequest>,
    ) -> Result<Response<SendSmsResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let req = request.into_inner();
        let form = sms_form(&req)?;
        self.twilio_account(&connection.name).await?;
        let response = self
            .dedupe
            .once(
                "send_sms",
                &connection.name,
                &connection.idempotency_key,
                || self.post_message(&connection.name, &form),
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn make_call(
        &self,
        request: Request<MakeCallRequest>,
    ) -> Result<Response<MakeCallResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let req = request.into_inner();
        let form = call_form(&req)?;
        self.twilio_account(&connection.name).await?;
        let response = self
            .dedupe
            .once(
                "make_call",
                &connection.name,
                &connection.idempotency_key,
                || self.post_call(&connection.name, &form),
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_message_status(
        &self,
        request: Request<GetMessageStatusRequest>,
    ) -> Result<Response<GetMessageStatusResponse>, Status> {
        let connection = Connection::of(&request, request.get_ref().context.as_ref())?;
        let GetMessageStatusRequest { context: _, sid } = request.into_inner();
        let mut v = Violations::new();
        if sid.is_empty() {
            v.add("sid", "is required");
        } else if !is_message_sid(&sid) {
            v.add(
                "sid",
                "must be a Twilio message SID (SM or MM and 32 hex digits)",
            );
        }
        v.into_result()?;
        self.twilio_account(&connection.name).await?;
        let path = format!("Messages/{sid}.json");
        let answer = self
            .http
            .call(
                &*self.creds,
                &connection.name,
                Retry::Safe,
                |client, cred| authed(client.get(self.account_url(cred, &path)), cred),
            )
            .await
            .map_err(map_error)?;
        let message: TwilioMessage = answer.json().map_err(map_error)?;
        Ok(Response::new(convert::message_status_response(message)))
    }
}

impl TwilioAdapter {
    async fn post_message(
        &self,
        connection: &str,
        form: &[(&'static str, String)],
    ) -> Result<SendSmsResponse, Status> {
        // Twilio has no idempotency key: a send is never repeated after an ambiguous failure
        // (the shared client still repeats a 429 or a refused connection, where Twilio did
        // nothing).
        let answer = self
            .http
            .call(&*self.creds, connection, Retry::Never, |client, cred| {
                authed(client.post(self.account_url(cred, "Messages.json")), cred).form(form)
            })
            .await
            .map_err(map_error)?;
        let message: TwilioMessage = answer.json().map_err(map_error)?;
        Ok(convert::send_sms_response(message))
    }

    async fn post_call(
        &self,
        connection: &str,
        form: &[(&'static str, String)],
    ) -> Result<MakeCallResponse, Status> {
        let answer = self
            .http
            .call(&*self.creds, connection, Retry::Never, |client, cred| {
                authed(client.post(self.account_url(cred, "Calls.json")), cred).form(form)
            })
            .await
            .map_err(map_error)?;
        let call: TwilioCall = answer.json().map_err(map_error)?;
        Ok(convert::make_call_response(call))
    }

    /// `{base}/2010-04-01/Accounts/{AccountSid}/{resource}`.
    fn account_url(&self, cred: &ConnectionCredential, resource: &str) -> String {
        self.http.url(&format!(
            "/{API_VERSION}/Accounts/{}/{resource}",
            cred.external_account_id
        ))
    }

    /// Refuses a connection that is not a usable Twilio account before anything is sent.
    async fn twilio_account(&self, connection: &str) -> Result<(), Status> {
        let cred = self
            .creds
            .credential(connection, false)
            .await
            .map_err(|s| {
                Status::from(ProviderError::new(
                    crate::PROVIDER,
                    match s.code() {
                        tonic::Code::NotFound | tonic::Code::Unauthenticated => {
                            ErrorKind::PreconditionFailed
                        }
                        code => ErrorKind::from_code(code),
                    },
                    format!("no usable credential for {connection}: {}", s.message()),
                ))
            })?;
        require_provider(&cred, &[ConnectionProvider::Twilio])?;
        if !is_sid(&cred.external_account_id, "AC") || cred.api_key.is_empty() {
            return Err(maxai_kit::Error::new(
                ErrorKind::PreconditionFailed,
                format!("connection {connection} has no Twilio Account SID and secret"),
            )
            .into());
        }
        Ok(())
    }
}

/// HTTP Basic as Twilio takes it: an API key `SK…` with its secret, else the Account SID with
/// its auth token.
fn authed(
    builder: reqwest::RequestBuilder,
    cred: &ConnectionCredential,
) -> reqwest::RequestBuilder {
    let user = if cred.key_id.is_empty() {
        &cred.external_account_id
    } else {
        &cred.key_id
    };
    builder.basic_auth(user, Some(&cred.api_key))
}

fn map_error(e: ProviderError) -> Status {
    let e = if e.http_status == Some(400) && PRECONDITION_CODES.contains(&e.provider_code.as_str())
    {
        e.with_kind(ErrorKind::PreconditionFailed)
    } else {
        e
    };
    e.into()
}

fn sms_form(req: &SendSmsRequest) -> Result<Vec<(&'static str, String)>, Status> {
    let SendSmsRequest {
        context: _,
        from_number,
        messaging_service_sid,
        to_number,
        body,
        media_urls,
        status_callback_url,
        validity_period,
    } = req;
    let mut v = Violations::new();
    let mut form = Vec::new();
    validate::e164("to_number", to_number, &mut v);
    form.push(("To", to_number.clone()));
    match (from_number.is_empty(), messaging_service_sid.is_empty()) {
        (true, true) => v.add(
            "from_number",
            "is required unless messaging_service_sid is set",
        ),
        (false, _) => {
            validate::e164("from_number", from_number, &mut v);
            form.push(("From", from_number.clone()));
        }
        (true, false) => {}
    }
    if !messaging_service_sid.is_empty() {
        if is_sid(messaging_service_sid, "MG") {
            form.push(("MessagingServiceSid", messaging_service_sid.clone()));
        } else {
            v.add(
                "messaging_service_sid",
                "must be a Twilio Messaging Service SID (MG and 32 hex digits)",
            );
        }
    }
    if body.is_empty() && media_urls.is_empty() {
        v.add("body", "is required unless media_urls is set");
    }
    if body.chars().count() > MAX_BODY_CHARS {
        v.add("body", "must be at most 1600 characters");
    }
    if !body.is_empty() {
        form.push(("Body", body.clone()));
    }
    for (i, url) in media_urls.iter().enumerate() {
        if is_http_url(url) {
            form.push(("MediaUrl", url.clone()));
        } else {
            v.add(format!("media_urls[{i}]"), "must be an http(s) URL");
        }
    }
    if !status_callback_url.is_empty() {
        if is_http_url(status_callback_url) {
            form.push(("StatusCallback", status_callback_url.clone()));
        } else {
            v.add("status_callback_url", "must be an http(s) URL");
        }
    }
    if let Some(period) = validity_period {
        if period.nanos == 0 && VALIDITY_SECS.contains(&period.seconds) {
            form.push(("ValidityPeriod", period.seconds.to_string()));
        } else {
            v.add(
                "validity_period",
                "must be whole seconds between 1 and 36000",
            );
        }
    }
    v.into_result()?;
    Ok(form)
}

fn call_form(req: &MakeCallRequest) -> Result<Vec<(&'static str, String)>, Status> {
    let MakeCallRequest {
        context: _,
        from_number,
        to_number,
        instructions,
        status_callback_url,
        status_callback_events,
        ring_timeout,
        record,
    } = req;
    let mut v = Violations::new();
    validate::e164("from_number", from_number, &mut v);
    validate::e164("to_number", to_number, &mut v);
    let mut form = vec![("To", to_number.clone()), ("From", from_number.clone())];
    match instructions {
        Some(Instructions::Twiml(twiml)) if !twiml.trim().is_empty() => {
            form.push(("Twiml", twiml.clone()));
        }
        Some(Instructions::Url(url)) if is_http_url(url) => {
            form.push(("Url", url.clone()));
        }
        Some(Instructions::Url(_)) => v.add("url", "must be an http(s) URL"),
        Some(Instructions::Twiml(_)) | None => v.add("twiml", "one of twiml or url is required"),
    }
    if !status_callback_url.is_empty() {
        if is_http_url(status_callback_url) {
            form.push(("StatusCallback", status_callback_url.clone()));
            form.push(("StatusCallbackMethod", "POST".to_owned()));
        } else {
            v.add("status_callback_url", "must be an http(s) URL");
        }
    } else if !status_callback_events.is_empty() {
        v.add(
            "status_callback_events",
            "needs status_callback_url to post to",
        );
    }
    for (i, raw) in status_callback_events.iter().enumerate() {
        match CallStatusEvent::try_from(*raw)
            .ok()
            .and_then(convert::callback_event)
        {
            Some(event) => form.push(("StatusCallbackEvent", event.to_owned())),
            None => v.add(
                format!("status_callback_events[{i}]"),
                "must be a call status event",
            ),
        }
    }
    if let Some(timeout) = ring_timeout {
        if timeout.nanos == 0 && RING_TIMEOUT_SECS.contains(&timeout.seconds) {
            form.push(("Timeout", timeout.seconds.to_string()));
        } else {
            v.add("ring_timeout", "must be whole seconds between 5 and 600");
        }
    }
    if *record {
        form.push(("Record", "true".to_owned()));
    }
    v.into_result()?;
    Ok(form)
}

/// `prefix` then 32 hex digits, the shape of every Twilio SID.
fn is_sid(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The SID goes into the URL path, so anything but a SID's shape is refused.
fn is_message_sid(sid: &str) -> bool {
    is_sid(sid, "SM") || is_sid(sid, "MM")
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_and_urls() {
        assert!(is_message_sid("SM0123456789abcdef0123456789abcdef"));
        assert!(is_message_sid("MM0123456789ABCDEF0123456789abcdef"));
        assert!(!is_message_sid("SM0123"));
        assert!(!is_message_sid(
            "../Calls/CA0123456789abcdef0123456789abcdef"
        ));
        assert!(is_http_url("https://example.com/cb?x=1"));
        assert!(!is_http_url("ftp://example.com"));
        assert!(!is_http_url("https:///path"));
    }
}
