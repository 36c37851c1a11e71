//! `POST /v1/webhooks/{provider}`: provider webhooks go to `WebhookIngressService.Ingest`
//! untouched — the raw bytes (size-limited, never parsed here), every header in order, and the
//! public URL the provider called (rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host` when a
//! proxy sets them, as Twilio signs that URL) — and the provider gets exactly the status, type
//! and body the ingress decided (Twilio's empty TwiML, Retell's 204, ...).
use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
};
use http::{header, HeaderName, HeaderValue, StatusCode};
use maxai_proto::maxai::webhook::v1::{
    webhook_ingress_service_client::WebhookIngressServiceClient, Header, IngestRequest,
};

use crate::{correlation, problem::Problem, read_body, Gateway};

/// The gRPC service webhooks go to.
pub const SERVICE: &str = "maxai.webhook.v1.WebhookIngressService";

/// The URL the provider called, as it saw it.
pub fn public_url(headers: &http::HeaderMap, uri: &http::Uri) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = first("x-forwarded-proto").unwrap_or("http");
    let host = first("x-forwarded-host")
        .or_else(|| first(header::HOST.as_str()))
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}

pub async fn handler(
    State(gw): State<Arc<Gateway>>,
    Path(provider): Path<String>,
    req: Request,
) -> Response {
    let id = correlation(&req);
    match ingest(&gw, provider, req, &id).await {
        Ok(resp) => resp,
        Err(p) => p.correlated(&id).into_response(),
    }
}

async fn ingest(
    gw: &Gateway,
    provider: String,
    req: Request,
    correlation_id: &str,
) -> Result<Response, Problem> {
    let received = maxai_kit::resource::timestamp(maxai_kit::storage::now_micros());
    let remote_address = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let url = public_url(&parts.headers, &parts.uri);
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect();
    let raw_body = read_body(body, gw.config.max_body_bytes).await?;
    let mut call = tonic::Request::new(IngestRequest {
        provider,
        raw_body: raw_body.to_vec(),
        headers,
        public_url: url,
        remote_address,
        http_method: parts.method.as_str().to_owned(),
        receive_time: Some(received),
    });
    gw.metadata(&mut call, &parts.headers, None, correlation_id);
    let reply = WebhookIngressServiceClient::new(gw.channel(SERVICE))
        .ingest(call)
        .await
        // A platform failure: the provider retries on a 5xx, which is what we want.
        .map_err(|s| Problem::from_status(&s))?
        .into_inner();
    let status = u16::try_from(reply.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&reply.content_type) {
        if !reply.content_type.is_empty() {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    for extra in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(extra.name.as_bytes()),
            HeaderValue::from_str(&extra.value),
        ) {
            h.append(n, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_honours_the_proxy_headers() {
        let uri: http::Uri = "/v1/webhooks/twilio?x=1".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("host", "10.0.0.5:8080".parse().unwrap());
        assert_eq!(
            public_url(&h, &uri),
            "http://10.0.0.5:8080/v1/webhooks/twilio?x=1"
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert(
            "x-forwarded-host",
            "hooks.example.com, 10.0.0.1".parse().unwrap(),
        );
        assert_eq!(
            public_url(&h, &uri),
            "https://hooks.example.com/v1/webhooks/twilio?x=1"
        );
    }
}
