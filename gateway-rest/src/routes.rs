//! The route table: every RPC of the served services that carries `google.api.http` (and its
//! additional bindings), with the `(maxai.api.v1.auth)` rule read from the same descriptor.
use http::Method;
use maxai_kit::descriptors::{auth_rule, http_redirect, http_rule, pool};
use maxai_proto::{
    google::api::{http_rule::Pattern, HttpRule},
    maxai::api::v1::AuthRule,
};
use prost_reflect::MethodDescriptor;

use crate::template::PathTemplate;

#[derive(Debug, Clone)]
pub struct Route {
    pub http_method: Method,
    pub template: PathTemplate,
    pub method: MethodDescriptor,
    /// "" (no body), "*" (the whole request) or one top-level request field.
    pub body: String,
    /// "" (the whole response) or one top-level response field.
    pub response_body: String,
    pub auth: AuthRule,
    /// gRPC path, `/{service}/{method}`.
    pub grpc_path: String,
    /// Response field answered as a 302 Location (browser flows), when set.
    pub redirect: Option<String>,
}

/// Routes of `services` (full names), most specific first.
pub fn build(services: &[String]) -> anyhow::Result<Vec<Route>> {
    let mut routes = Vec::new();
    for name in services {
        let service = pool()
            .get_service_by_name(name)
            .ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?;
        for method in service.methods() {
            let Some(rule) = http_rule(&method) else {
                continue;
            };
            let auth = auth_rule(&method).ok_or_else(|| {
                anyhow::anyhow!("{} has an http rule but no auth rule", method.full_name())
            })?;
            let mut rules = vec![rule.clone()];
            rules.extend(rule.additional_bindings.iter().cloned());
            for r in rules {
                routes.push(route(&method, &r, &auth)?);
            }
        }
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
    Ok(routes)
}

fn route(method: &MethodDescriptor, rule: &HttpRule, auth: &AuthRule) -> anyhow::Result<Route> {
    let (http_method, path) = match rule.pattern.as_ref() {
        Some(Pattern::Get(p)) => (Method::GET, p),
        Some(Pattern::Put(p)) => (Method::PUT, p),
        Some(Pattern::Post(p)) => (Method::POST, p),
        Some(Pattern::Delete(p)) => (Method::DELETE, p),
        Some(Pattern::Patch(p)) => (Method::PATCH, p),
        Some(Pattern::Custom(c)) => (Method::from_bytes(c.kind.as_bytes())?, &c.path),
        None => anyhow::bail!("{} has an http rule without a pattern", method.full_name()),
    };
    let template =
        PathTemplate::parse(path).map_err(|e| anyhow::anyhow!("{}: {e}", method.full_name()))?;
    Ok(Route {
        http_method,
        template,
        method: method.clone(),
        body: rule.body.clone(),
        response_body: rule.response_body.clone(),
        auth: auth.clone(),
        grpc_path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        redirect: http_redirect(method),
    })
}
