//! The ingest pipeline: provider → account → signature → schema → canonical event → stored
//! with its outbox (group commit) → the provider's own idea of a fast 2xx. A request we cannot
//! attribute or authenticate stores nothing and is refused (problem+json); a signed payload
//! that fails its schema is quarantined and acknowledged, so the provider stops retrying.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use maxai_kit::{resource::micros, storage::now_micros, Error, ErrorKind};
use maxai_proto::maxai::webhook::v1::{self as pb, IngestOutcome, RejectionReason};
use tonic::{Request, Response, Status};

use super::WebhookApi;
use crate::{
    domain::{Appended, EndpointKey, Header, NewEvent, NewQuarantined, Provider, ResolvedEndpoint},
    normalize::{self, Parsed},
    signature::{ghl, paypal, retell, stripe, twilio, Inbound, Rejection},
};

/// Headers kept with a quarantined payload: enough to understand and replay it, never a
/// credential.
const KEPT_HEADERS: &[&str] = &["content-type", "user-agent", "stripe-signature"];

/// The provider's answer for an accepted (stored, duplicate or quarantined) webhook.
fn acknowledged(provider: Provider, outcome: IngestOutcome) -> pb::IngestResponse {
    let (status, content_type, body): (i32, &str, &[u8]) = match provider {
        // Twilio reads the answer as TwiML: an empty <Response/> does nothing.
        Provider::Twilio => (
            200,
            "text/xml",
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        ),
        // Retell's docs answer 204 with no body.
        Provider::Retell => (204, "", b""),
        _ => (200, "application/json", b"{\"received\":true}"),
    };
    pb::IngestResponse {
        status_code: status,
        content_type: content_type.into(),
        body: body.to_vec(),
        outcome: outcome as i32,
        ..Default::default()
    }
}

/// A refusal: nothing was stored. The body says only what the provider's operator needs.
fn refused(status: u16, reason: RejectionReason, detail: &str) -> pb::IngestResponse {
    let code = match status {
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        413 => "PAYLOAD_TOO_LARGE",
        _ => "INVALID_ARGUMENT",
    };
    let body = serde_json::json!({
        "type": format!("https://maxai.dev/problems/{}", code.to_lowercase().replace('_', "-")),
        "title": http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Refused"),
        "status": status,
        "detail": detail,
        "code": code,
    });
    pb::IngestResponse {
        status_code: i32::from(status),
        content_type: "application/problem+json".into(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
        outcome: IngestOutcome::Rejected as i32,
        rejection_reason: reason as i32,
        ..Default::default()
    }
}

fn header_map(headers: &[pb::Header]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for h in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The endpoint named in the ingest URL (`?endpoint=tenants/{t}/clients/{c}/webhookEndpoints/{e}`),
/// for providers whose payload names no account (PayPal, a Stripe platform account).
fn endpoint_in_url(url: &str) -> Option<EndpointKey> {
    let query = url.split_once('?')?.1;
    let name = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "endpoint")
        .map(|(_, v)| v.into_owned())?;
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c, "webhookEndpoints", e] => Some(EndpointKey {
            tenant_id: (*t).into(),
            client_id: (*c).into(),
            id: (*e).into(),
        }),
        _ => None,
    }
}

fn rejection(r: &Rejection) -> (RejectionReason, &'static str) {
    match r {
        Rejection::MissingHeader(_) => (
            RejectionReason::SignatureMissing,
            "the signature header is missing",
        ),
        Rejection::Expired | Rejection::FromTheFuture => (
            RejectionReason::TimestampOutOfWindow,
            "the signed timestamp is outside the replay window",
        ),
        _ => (
            RejectionReason::SignatureInvalid,
            "the signature does not verify",
        ),
    }
}

impl WebhookApi {
    /// The endpoint's secrets in the clear, newest first (unsealed with the endpoint's name as
    /// associated data, so a secret cannot be moved to another endpoint's row).
    fn secrets(&self, resolved: &ResolvedEndpoint) -> Result<Vec<String>, Error> {
        let owner = endpoint_name(&resolved.endpoint.key);
        resolved
            .secrets
            .iter()
            .map(|s| {
                let plain = self.master.open(&owner, &s.ciphertext)?;
                String::from_utf8(plain).map_err(Error::internal)
            })
            .collect()
    }

    fn verify(
        &self,
        provider: Provider,
        inbound: &Inbound<'_>,
        resolved: &ResolvedEndpoint,
    ) -> Result<Result<(), Rejection>, Error> {
        let keys = &self.keys;
        Ok(match provider {
            Provider::Ghl => ghl::verify(inbound, &keys.ghl_ed25519, &keys.ghl_rsa).map(|_| ()),
            Provider::Retell => retell::verify(inbound, &self.secrets(resolved)?).map(|_| ()),
            Provider::Twilio => twilio::verify(inbound, &self.secrets(resolved)?).map(|_| ()),
            Provider::Stripe => stripe::verify(inbound, &self.secrets(resolved)?).map(|_| ()),
            Provider::Paypal => {
                let webhook_id = match &resolved.endpoint.account {
                    crate::domain::Account::Paypal { webhook_id, .. } => webhook_id.as_str(),
                    _ => "",
                };
                paypal::verify(inbound, webhook_id, &keys.paypal).map(|_| ())
            }
        })
    }

    /// Normalizes a verified payload and stores it (or quarantines it).
    async fn store(
        &self,
        provider: Provider,
        parsed: &Parsed,
        resolved: &ResolvedEndpoint,
        raw: Raw<'_>,
        replayed_from: Option<String>,
    ) -> Result<Stored, Error> {
        let key = &resolved.endpoint.key;
        let received_at = UNIX_EPOCH + Duration::from_micros(raw.received_at_us.max(0) as u64);
        match normalize::normalize(provider, parsed, received_at) {
            Ok(n) => {
                let appended = self
                    .committer
                    .submit(NewEvent {
                        event: n.into_event(&key.tenant_id, &key.client_id),
                        endpoint_id: key.id.clone(),
                        received_at_us: raw.received_at_us,
                        replayed_from,
                        consumers: self.config.consumers.keys().cloned().collect(),
                    })
                    .await?;
                if let Some(notify) = &self.stored {
                    notify.notify_one();
                }
                Ok(Stored::Event(appended))
            }
            Err(invalid) => Ok(Stored::Quarantine(NewQuarantined {
                tenant_id: key.tenant_id.clone(),
                client_id: key.client_id.clone(),
                endpoint_id: key.id.clone(),
                provider,
                raw_body: raw.body.to_vec(),
                headers: raw
                    .headers
                    .iter()
                    .filter(|h| KEPT_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()))
                    .cloned()
                    .collect(),
                provider_event_type: parsed.event_type.clone(),
                provider_event_id: String::new(),
                failure: invalid.quarantine_failure(),
                received_at_us: raw.received_at_us,
            })),
        }
    }
}

struct Raw<'a> {
    body: &'a [u8],
    headers: &'a [Header],
    received_at_us: i64,
}

enum Stored {
    Event(Appended),
    Quarantine(NewQuarantined),
}

pub(crate) fn endpoint_name(key: &EndpointKey) -> String {
    format!(
        "tenants/{}/clients/{}/webhookEndpoints/{}",
        key.tenant_id, key.client_id, key.id
    )
}

pub(super) async fn ingest(
    api: &WebhookApi,
    request: Request<pb::IngestRequest>,
) -> Result<Response<pb::IngestResponse>, Status> {
    let req = request.into_inner();
    let received_at_us = req.receive_time.as_ref().map_or_else(now_micros, micros);
    let Some(provider) = Provider::parse(&req.provider) else {
        return Ok(Response::new(refused(
            404,
            RejectionReason::UnknownProvider,
            "no such provider; use ghl, retell, twilio, stripe or paypal",
        )));
    };
    let headers = header_map(&req.headers);
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(parsed) = normalize::parse(provider, content_type, &req.raw_body) else {
        return Ok(Response::new(refused(
            400,
            RejectionReason::MalformedBody,
            "the body cannot be read",
        )));
    };
    // Account first: the secret that verifies the signature is the account's.
    let lookup = normalize::account_keys(provider, &parsed).lookup();
    let named = if lookup.is_empty() {
        endpoint_in_url(&req.public_url)
    } else {
        None
    };
    let resolved = api
        .resolve(provider, &lookup, named.as_ref(), received_at_us)
        .await?;
    let Some(resolved) = resolved else {
        return Ok(Response::new(refused(
            401,
            RejectionReason::UnknownAccount,
            "no webhook endpoint is registered for this account",
        )));
    };
    if resolved.endpoint.disabled {
        return Ok(Response::new(refused(
            401,
            RejectionReason::EndpointDisabled,
            "the webhook endpoint for this account is disabled",
        )));
    }
    let now = UNIX_EPOCH + Duration::from_micros(received_at_us.max(0) as u64);
    let inbound = Inbound {
        body: &req.raw_body,
        headers: &headers,
        url: &req.public_url,
        now: now.max(SystemTime::UNIX_EPOCH),
    };
    if let Err(r) = api.verify(provider, &inbound, &resolved)? {
        let (reason, detail) = rejection(&r);
        tracing::info!(provider = provider.as_str(), endpoint = %endpoint_name(&resolved.endpoint.key), rejection = r.code(), "webhook refused");
        return Ok(Response::new(refused(401, reason, detail)));
    }
    let headers_kept: Vec<Header> = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect();
    let raw = Raw {
        body: &req.raw_body,
        headers: &headers_kept,
        received_at_us,
    };
    let endpoint = endpoint_name(&resolved.endpoint.key);
    let mut resp = match api.store(provider, &parsed, &resolved, raw, None).await? {
        Stored::Event(appended) => {
            let r = appended.event();
            let outcome = if appended.is_duplicate() {
                IngestOutcome::Duplicate
            } else {
                IngestOutcome::Accepted
            };
            let mut resp = acknowledged(provider, outcome);
            // A duplicate of another tenant's event (an account that moved) is not named.
            if r.tenant_id == resolved.endpoint.key.tenant_id {
                resp.event = format!("tenants/{}/events/{}", r.tenant_id, r.id);
                resp.event_id = r.cloud_event_id.clone();
            }
            resp
        }
        Stored::Quarantine(entry) => {
            let q = api.store.quarantine(&entry).await?;
            tracing::warn!(provider = provider.as_str(), endpoint = %endpoint, reason = entry.failure.reason.as_str(), "webhook quarantined");
            let mut resp = acknowledged(provider, IngestOutcome::Quarantined);
            resp.quarantined_event =
                format!("tenants/{}/quarantinedEvents/{}", q.entry.tenant_id, q.id);
            resp
        }
    };
    resp.webhook_endpoint = endpoint;
    Ok(Response::new(resp))
}

pub(super) async fn replay_quarantined(
    api: &WebhookApi,
    request: Request<pb::ReplayQuarantinedEventRequest>,
) -> Result<Response<pb::ReplayQuarantinedEventResponse>, Status> {
    let name = request.into_inner().name;
    let parts: Vec<&str> = name.split('/').collect();
    let ["tenants", t, "quarantinedEvents", id] = parts.as_slice() else {
        return Err(Error::invalid(
            "name",
            "must be tenants/{tenant}/quarantinedEvents/{quarantined_event}",
        )
        .into());
    };
    let q = api
        .store
        .get_quarantined(t, id)
        .await?
        .ok_or_else(|| Error::not_found(&name))?;
    let entry = &q.entry;
    let key = EndpointKey {
        tenant_id: entry.tenant_id.clone(),
        client_id: entry.client_id.clone(),
        id: entry.endpoint_id.clone(),
    };
    // The payload was verified when it arrived; the replay only re-runs what failed after that.
    let endpoint = api.store.get_endpoint(&key).await?.ok_or_else(|| {
        Error::new(
            ErrorKind::PreconditionFailed,
            "the payload's webhook endpoint was deleted",
        )
    })?;
    let resolved = ResolvedEndpoint {
        endpoint,
        secrets: Vec::new(),
    };
    let content_type = entry
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| h.value.as_str())
        .unwrap_or("");
    let now = now_micros();
    let parsed = normalize::parse(entry.provider, content_type, &entry.raw_body).map_err(|_| {
        Error::new(
            ErrorKind::PreconditionFailed,
            "the payload still cannot be read",
        )
    })?;
    let raw = Raw {
        body: &entry.raw_body,
        headers: &entry.headers,
        received_at_us: entry.received_at_us,
    };
    let (quarantined, outcome, event) = match api
        .store(entry.provider, &parsed, &resolved, raw, Some(q.id.clone()))
        .await?
    {
        Stored::Event(appended) => {
            let r = appended.event().clone();
            let marked = api.store.mark_replayed(t, id, &r.id, now).await?;
            let outcome = if appended.is_duplicate() {
                IngestOutcome::Duplicate
            } else {
                IngestOutcome::Accepted
            };
            (
                marked,
                outcome,
                format!("tenants/{}/events/{}", r.tenant_id, r.id),
            )
        }
        Stored::Quarantine(again) => {
            let marked = api
                .store
                .record_replay_failure(t, id, &again.failure, now)
                .await?;
            (marked, IngestOutcome::Quarantined, String::new())
        }
    };
    Ok(Response::new(pb::ReplayQuarantinedEventResponse {
        quarantined_event: Some(super::convert::quarantined_to_pb_in(
            &quarantined,
            &super::convert::Retention::of(&api.config, api.store.get_retention(t).await?.as_ref()),
        )),
        outcome: outcome as i32,
        event,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_can_be_named_in_the_url() {
        let key = endpoint_in_url(
            "https://h.example/v1/webhooks/paypal?endpoint=tenants%2Facme%2Fclients%2Fshop%2FwebhookEndpoints%2Fpp",
        )
        .unwrap();
        assert_eq!(
            (
                key.tenant_id.as_str(),
                key.client_id.as_str(),
                key.id.as_str()
            ),
            ("acme", "shop", "pp")
        );
        assert!(endpoint_in_url("https://h.example/v1/webhooks/paypal").is_none());
        assert!(endpoint_in_url("https://h.example/x?endpoint=tenants/a").is_none());
    }

    #[test]
    fn twilio_gets_empty_twiml_and_retell_a_204() {
        let t = acknowledged(Provider::Twilio, IngestOutcome::Accepted);
        assert_eq!((t.status_code, t.content_type.as_str()), (200, "text/xml"));
        assert!(String::from_utf8(t.body)
            .unwrap()
            .ends_with("<Response></Response>"));
        let r = acknowledged(Provider::Retell, IngestOutcome::Duplicate);
        assert_eq!((r.status_code, r.body.len()), (204, 0));
    }
}
