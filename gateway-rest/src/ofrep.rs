//! OpenFeature Remote Evaluation Protocol (OFREP) v1 over the flags service, so any OpenFeature
//! SDK with an OFREP provider can read MaxAI flags:
//! `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags` (bulk, with ETag).
use std::sync::Arc;

use axum::{
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use http::{header, HeaderValue, StatusCode};
use maxai_proto::maxai::flags::v1::{
    self as pb, feature_flags_service_client::FeatureFlagsServiceClient, BatchEvaluateFlagsRequest,
    EvaluationContext,
};
use serde_json::{json, Map, Value};
use xxhash_rust::xxh3::xxh3_64;

use crate::{correlation, read_body, Gateway};

pub fn router() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/evaluate/flags/{key}", post(single))
        .route("/evaluate/flags", post(bulk))
}

fn ofrep_error(
    status: StatusCode,
    key: Option<&str>,
    code: &str,
    details: impl Into<String>,
) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details.into()});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    (status, Json(body)).into_response()
}

/// OFREP context → ours: `environment`, `tenantId` (or `tenant_id`), and `targetingKey` as the
/// user id unless `userId` is given.
fn context(body: &Value) -> Result<EvaluationContext, String> {
    let empty = Map::new();
    let ctx = match body.get("context") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err("context must be an object".into()),
    };
    let text = |names: &[&str]| -> Result<String, String> {
        for n in names {
            match ctx.get(*n) {
                Some(Value::String(s)) => return Ok(s.clone()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(format!("context.{n} must be a string")),
            }
        }
        Ok(String::new())
    };
    let user = text(&["userId", "user_id"])?;
    Ok(EvaluationContext {
        environment: text(&["environment"])?,
        tenant_id: text(&["tenantId", "tenant_id"])?,
        user_id: if user.is_empty() {
            text(&["targetingKey"])?
        } else {
            user
        },
    })
}

fn reason(r: i32) -> &'static str {
    match pb::Reason::try_from(r).unwrap_or(pb::Reason::Unspecified) {
        pb::Reason::Disabled => "DISABLED",
        pb::Reason::PrerequisiteFailed | pb::Reason::Default => "DEFAULT",
        pb::Reason::TargetingMatch => "TARGETING_MATCH",
        pb::Reason::Split => "SPLIT",
        pb::Reason::Error => "ERROR",
        pb::Reason::Unspecified => "UNKNOWN",
    }
}

fn evaluation_json(e: &pb::Evaluation) -> Value {
    if !e.error_code.is_empty() {
        return json!({"key": e.key, "errorCode": e.error_code, "errorDetails": e.explanation});
    }
    json!({
        "key": e.key,
        "value": e.value,
        "reason": reason(e.reason),
        "variant": if e.value { "on" } else { "off" },
        "metadata": {"explanation": e.explanation, "etag": e.etag},
    })
}

async fn evaluate(
    gw: &Gateway,
    req: Request,
    keys: Vec<String>,
) -> Result<(Vec<pb::Evaluation>, String), Response> {
    let id = correlation(&req);
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, gw.config.max_body_bytes)
        .await
        .map_err(|p| ofrep_error(StatusCode::BAD_REQUEST, None, "PARSE_ERROR", p.detail))?;
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ofrep_error(StatusCode::BAD_REQUEST, None, "PARSE_ERROR", e.to_string()))?
    };
    let ctx = context(&body)
        .map_err(|e| ofrep_error(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", e))?;
    let mut grpc = tonic::Request::new(BatchEvaluateFlagsRequest {
        context: Some(ctx),
        keys,
    });
    let token = gw.access_token(&parts.headers).await.map_err(|p| {
        ofrep_error(
            StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNAUTHORIZED),
            None,
            "GENERAL",
            p.detail,
        )
    })?;
    gw.metadata(&mut grpc, &parts.headers, token.as_deref(), &id);
    let channel = gw.channel("maxai.flags.v1.FeatureFlagsService");
    let reply = FeatureFlagsServiceClient::new(channel)
        .batch_evaluate_flags(grpc)
        .await
        .map_err(|s| match s.code() {
            tonic::Code::InvalidArgument => ofrep_error(
                StatusCode::BAD_REQUEST,
                None,
                "INVALID_CONTEXT",
                s.message(),
            ),
            tonic::Code::Unauthenticated => ofrep_error(
                StatusCode::UNAUTHORIZED,
                None,
                "GENERAL",
                "a credential is required",
            ),
            tonic::Code::PermissionDenied => {
                ofrep_error(StatusCode::FORBIDDEN, None, "GENERAL", "not allowed")
            }
            _ => ofrep_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "GENERAL",
                "flag evaluation failed",
            ),
        })?;
    let if_none_match = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((reply.into_inner().evaluations, if_none_match))
}

async fn single(State(gw): State<Arc<Gateway>>, Path(key): Path<String>, req: Request) -> Response {
    let (evaluations, _) = match evaluate(&gw, req, vec![key.clone()]).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match evaluations.first() {
        Some(e) if e.error_code == "FLAG_NOT_FOUND" => ofrep_error(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            e.explanation.clone(),
        ),
        Some(e) if !e.error_code.is_empty() => ofrep_error(
            StatusCode::BAD_REQUEST,
            Some(&key),
            &e.error_code,
            e.explanation.clone(),
        ),
        Some(e) => Json(evaluation_json(e)).into_response(),
        None => ofrep_error(
            StatusCode::NOT_FOUND,
            Some(&key),
            "FLAG_NOT_FOUND",
            "flag not found",
        ),
    }
}

async fn bulk(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let (evaluations, if_none_match) = match evaluate(&gw, req, Vec::new()).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let flags: Vec<Value> = evaluations.iter().map(evaluation_json).collect();
    let body = json!({ "flags": flags });
    let etag = format!("\"{:016x}\"", xxh3_64(body.to_string().as_bytes()));
    if if_none_match == etag {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return resp;
    }
    let mut resp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}
