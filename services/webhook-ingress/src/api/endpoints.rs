//! Webhook endpoints: the provider accounts of a client, and their verification secrets.
//!
//! A secret arrives in the clear on create and rotate only; it is sealed with the master key for
//! the endpoint's resource name (so a ciphertext cannot be moved to another endpoint's row), and
//! only its version metadata and fingerprint are ever returned. GoHighLevel and PayPal sign with
//! their own keys and certificates (platform configuration): their endpoints take no secret.
use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::{check_id, expected_revision, mask_paths, request_id},
    storage::now_micros,
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::webhook::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{
    convert::{account_field, account_from_pb, endpoint_to_pb, provider_from_pb},
    ingest::endpoint_name,
    WebhookApi,
};
use crate::domain::{
    Account, EndpointFilter, EndpointKey, EndpointUpdate, NewEndpoint, NewSecret, Provider,
};

/// Update-mask paths: the account is named by its oneof field.
const ENDPOINT_PATHS: &[&str] = &[
    "display_name",
    "disabled",
    "ghl",
    "twilio",
    "retell",
    "stripe",
    "paypal",
];
const ACCOUNT_REQUIRED: &str = "is required: set one of ghl, twilio, retell, stripe or paypal";
const MAX_DISPLAY_NAME: usize = 200;
const MAX_SECRET_BYTES: usize = 1024;
const MAX_ACCOUNT_ID: usize = 128;
const HOUR_US: i64 = 3_600 * 1_000_000;
/// How long the previous secret keeps verifying when RotateSecret does not say.
const DEFAULT_PREVIOUS_TTL_US: i64 = 24 * HOUR_US;
/// Longest overlap a rotation may leave: a rotation that never ends is no rotation.
const MAX_PREVIOUS_TTL_US: i64 = 30 * 24 * HOUR_US;

/// `tenants/{tenant}/clients/{client}/webhookEndpoints/{webhook_endpoint}` → its key.
fn endpoint_key(name: &str, field: &str) -> Result<EndpointKey> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c, "webhookEndpoints", e]
            if check_id(t, 3, 63).is_ok()
                && check_id(c, 1, 63).is_ok()
                && check_id(e, 1, 63).is_ok() =>
        {
            Ok(EndpointKey {
                tenant_id: (*t).to_owned(),
                client_id: (*c).to_owned(),
                id: (*e).to_owned(),
            })
        }
        _ => Err(Error::invalid(
            field,
            "must be of the form tenants/{tenant}/clients/{client}/webhookEndpoints/{webhook_endpoint}",
        )),
    }
}

/// `tenants/{tenant}/clients/{client}` → (tenant, client).
fn client(name: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "clients", c]
            if check_id(t, 3, 63).is_ok() && check_id(c, 1, 63).is_ok() =>
        {
            Ok(((*t).to_owned(), (*c).to_owned()))
        }
        _ => Err(Error::invalid(
            "parent",
            "must be of the form tenants/{tenant}/clients/{client}",
        )),
    }
}

/// A list's parent: one client (`Some`), or every client of the tenant for client "-".
fn list_parent(name: &str) -> Result<(String, Option<String>)> {
    match name.strip_suffix("/clients/-").and_then(|t| t.strip_prefix("tenants/")) {
        Some(t) if check_id(t, 3, 63).is_ok() => Ok((t.to_owned(), None)),
        _ => client(name).map(|(t, c)| (t, Some(c))).map_err(|_| {
            Error::invalid(
                "parent",
                "must be of the form tenants/{tenant}/clients/{client}, or tenants/{tenant}/clients/- for every client",
            )
        }),
    }
}

/// First 8 hex digits of the SHA-256 of the plain secret, to tell versions apart.
fn fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..4])
}

fn check_display_name(v: &mut Violations, field: &str, value: &str) {
    v.check(
        value.len() <= MAX_DISPLAY_NAME && !value.chars().any(char::is_control),
        field,
        "must be at most 200 bytes without control characters",
    );
}

/// An account identifier as providers issue them: letters, digits and a little punctuation.
fn check_identifier(v: &mut Violations, field: String, value: &str, required: bool) {
    if value.is_empty() {
        if required {
            v.add(field, "is required");
        }
        return;
    }
    v.check(
        value.len() <= MAX_ACCOUNT_ID
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:@".contains(c)),
        field,
        "must be at most 128 characters of letters, digits, '_', '-', '.', ':' or '@'",
    );
}

/// The fields each provider's account needs, named `{prefix}.{oneof field}.{field}`.
fn check_account(v: &mut Violations, prefix: &str, account: &Account) {
    let field = |name: &str| format!("{prefix}.{}.{name}", account_field(account.provider()));
    match account {
        Account::Ghl {
            location_id,
            company_id,
        } => {
            if location_id.is_empty() && company_id.is_empty() {
                v.add(
                    field("location_id"),
                    "location_id (a sub-account) or company_id (an agency) is required",
                );
            }
            check_identifier(v, field("location_id"), location_id, false);
            check_identifier(v, field("company_id"), company_id, false);
        }
        Account::Twilio {
            account_sid,
            to_number,
        } => {
            let sid_ok = account_sid.len() == 34
                && account_sid.starts_with("AC")
                && account_sid[2..].chars().all(|c| c.is_ascii_hexdigit());
            if account_sid.is_empty() {
                v.add(field("account_sid"), "is required");
            } else {
                v.check(
                    sid_ok,
                    field("account_sid"),
                    "must be a Twilio Account SID: AC followed by 32 hexadecimal digits",
                );
            }
            let digits = to_number.strip_prefix('+').unwrap_or("");
            v.check(
                to_number.is_empty()
                    || ((2..=15).contains(&digits.len())
                        && digits.chars().all(|c| c.is_ascii_digit())
                        && !digits.starts_with('0')),
                field("to_number"),
                "must be an E.164 number such as +15550100, or empty for every number of the account",
            );
        }
        Account::Retell { agent_id } => check_identifier(v, field("agent_id"), agent_id, true),
        Account::Stripe { account_id } => {
            if account_id.is_empty() {
                v.add(field("account_id"), "is required");
            } else {
                v.check(
                    account_id.len() <= MAX_ACCOUNT_ID
                        && account_id.strip_prefix("acct_").is_some_and(|r| {
                            !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric())
                        }),
                    field("account_id"),
                    "must be a Stripe account id: acct_ followed by letters and digits",
                );
            }
        }
        Account::Paypal {
            account_id,
            webhook_id,
        } => {
            check_identifier(v, field("account_id"), account_id, false);
            check_identifier(v, field("webhook_id"), webhook_id, true);
        }
    }
}

/// Why a provider takes no secret, or `None` when it needs one.
fn no_secret_because(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::Ghl => Some(
            "GoHighLevel webhooks are verified with GoHighLevel's own public keys (platform configuration); the endpoint takes no secret",
        ),
        Provider::Paypal => Some(
            "PayPal webhooks are verified with PayPal's certificate and the account's webhook_id; the endpoint takes no secret",
        ),
        Provider::Retell | Provider::Twilio | Provider::Stripe => None,
    }
}

/// The verification secret a provider needs: Retell's API key, Twilio's Auth Token, Stripe's
/// `whsec_` signing secret; none for GoHighLevel and PayPal.
fn check_secret(v: &mut Violations, field: &str, provider: Provider, secret: &str) {
    if let Some(why) = no_secret_because(provider) {
        v.check(secret.is_empty(), field, format!("must be empty: {why}"));
        return;
    }
    if secret.is_empty() {
        let what = match provider {
            Provider::Retell => "the Retell API key that signs the webhooks",
            Provider::Twilio => "the Twilio account's Auth Token",
            _ => "the Stripe endpoint's signing secret (whsec_...)",
        };
        v.add(field, format!("is required: {what}"));
        return;
    }
    v.check(
        secret.len() <= MAX_SECRET_BYTES,
        field,
        "must be at most 1024 bytes",
    );
    v.check(
        secret.trim() == secret && !secret.chars().any(char::is_control),
        field,
        "must not start or end with whitespace nor contain control characters",
    );
    if provider == Provider::Stripe {
        v.check(
            secret.starts_with("whsec_") && secret.len() > "whsec_".len(),
            field,
            "must be a Stripe signing secret starting with whsec_",
        );
    }
}

/// Seals `secret` for the endpoint `key`.
fn seal(api: &WebhookApi, key: &EndpointKey, secret: &str) -> Result<NewSecret> {
    Ok(NewSecret {
        ciphertext: api.master.seal(&endpoint_name(key), secret.as_bytes())?,
        fingerprint: fingerprint(secret),
    })
}

/// A generated endpoint id: the provider and 16 random hex digits.
fn generated_id(provider: Provider) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", provider.as_str(), &hex[..16])
}

/// A duration in µs (the rotation overlap), refusing negative and too long ones.
fn previous_ttl_us(v: &mut Violations, ttl: Option<&prost_types::Duration>) -> i64 {
    let Some(d) = ttl else {
        return DEFAULT_PREVIOUS_TTL_US;
    };
    let us = d
        .seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(d.nanos) / 1_000);
    v.check(
        d.seconds >= 0 && d.nanos >= 0 && us <= MAX_PREVIOUS_TTL_US,
        "previous_secret_ttl",
        "must be from 0 (the previous secret stops at once) to 30 days",
    );
    us.clamp(0, MAX_PREVIOUS_TTL_US)
}

pub(super) async fn create(
    api: &WebhookApi,
    request: Request<pb::CreateWebhookEndpointRequest>,
) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
    let pb::CreateWebhookEndpointRequest {
        parent,
        webhook_endpoint,
        webhook_endpoint_id,
        request_id: rid,
    } = request.into_inner();
    let mut v = Violations::new();
    let parent = client(&parent);
    if let Err(e) = &parent {
        for f in &e.violations {
            v.add(f.field.clone(), f.description.clone());
        }
    }
    if !webhook_endpoint_id.is_empty() {
        if let Err(m) = check_id(&webhook_endpoint_id, 1, 63) {
            v.add("webhook_endpoint_id", m);
        }
    }
    let rid = match request_id(&rid) {
        Ok(r) => r,
        Err(_) => {
            v.add("request_id", "must be at most 128 bytes");
            None
        }
    };
    let e = webhook_endpoint.unwrap_or_default();
    check_display_name(&mut v, "webhook_endpoint.display_name", &e.display_name);
    let account = e.account.as_ref().map(account_from_pb).map(|(a, _)| a);
    let declared = provider_from_pb(e.provider);
    match (&account, declared) {
        (_, Err(_)) => v.add("webhook_endpoint.provider", "is not a provider"),
        (None, _) => v.add("webhook_endpoint.account", ACCOUNT_REQUIRED),
        (Some(a), Ok(Some(p))) if p != a.provider() => v.add(
            "webhook_endpoint.provider",
            format!(
                "must match the account: the account set is {}",
                account_field(a.provider())
            ),
        ),
        (Some(_), Ok(_)) => {}
    }
    if let Some(a) = &account {
        check_account(&mut v, "webhook_endpoint", a);
        check_secret(&mut v, "webhook_endpoint.secret", a.provider(), &e.secret);
    }
    v.into_result()?;
    // Both are violations above when missing.
    let (tenant_id, client_id) = parent?;
    let account =
        account.ok_or_else(|| Error::invalid("webhook_endpoint.account", ACCOUNT_REQUIRED))?;
    let id = if webhook_endpoint_id.is_empty() {
        generated_id(account.provider())
    } else {
        webhook_endpoint_id
    };
    let key = EndpointKey {
        tenant_id,
        client_id,
        id,
    };
    let secret = if e.secret.is_empty() {
        None
    } else {
        Some(seal(api, &key, &e.secret)?)
    };
    let now = now_micros();
    let created = api
        .store
        .create_endpoint(
            &NewEndpoint {
                key,
                display_name: e.display_name,
                account,
                disabled: e.disabled,
            },
            secret.as_ref(),
            rid,
            now,
        )
        .await?;
    api.forget_endpoints();
    Ok(Response::new(pb::CreateWebhookEndpointResponse {
        webhook_endpoint: Some(endpoint_to_pb(&created, now)),
    }))
}

pub(super) async fn get(
    api: &WebhookApi,
    request: Request<pb::GetWebhookEndpointRequest>,
) -> Result<Response<pb::GetWebhookEndpointResponse>, Status> {
    let pb::GetWebhookEndpointRequest { name } = request.into_inner();
    let key = endpoint_key(&name, "name")?;
    let found = api
        .store
        .get_endpoint(&key)
        .await?
        .ok_or_else(|| Error::not_found(&name))?;
    Ok(Response::new(pb::GetWebhookEndpointResponse {
        webhook_endpoint: Some(endpoint_to_pb(&found, now_micros())),
    }))
}

pub(super) async fn list(
    api: &WebhookApi,
    request: Request<pb::ListWebhookEndpointsRequest>,
) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
    let pb::ListWebhookEndpointsRequest {
        parent,
        page_size: size,
        page_token,
        provider,
    } = request.into_inner();
    let (tenant_id, client_id) = list_parent(&parent)?;
    let provider =
        provider_from_pb(provider).map_err(|_| Error::invalid("provider", "is not a provider"))?;
    let limit = page_size(size)?;
    let scope = format!("webhookEndpoints/{parent}");
    let after = decode_token(&scope, &page_token)?;
    let filter = EndpointFilter {
        client_id,
        provider,
    };
    let mut rows = api
        .store
        .list_endpoints(&tenant_id, &filter, after.as_deref(), limit + 1)
        .await?;
    let next_page_token = next_page(&mut rows, limit, &scope, |e| e.page_key());
    let now = now_micros();
    Ok(Response::new(pb::ListWebhookEndpointsResponse {
        webhook_endpoints: rows.iter().map(|e| endpoint_to_pb(e, now)).collect(),
        next_page_token,
    }))
}

pub(super) async fn update(
    api: &WebhookApi,
    request: Request<pb::UpdateWebhookEndpointRequest>,
) -> Result<Response<pb::UpdateWebhookEndpointResponse>, Status> {
    let pb::UpdateWebhookEndpointRequest {
        webhook_endpoint,
        update_mask,
    } = request.into_inner();
    let e = webhook_endpoint.ok_or_else(|| Error::invalid("webhook_endpoint", "is required"))?;
    let key = endpoint_key(&e.name, "webhook_endpoint.name")?;
    let expected = expected_revision(&e.etag, "webhook_endpoint.etag")?;
    let explicit = update_mask.as_ref().is_some_and(|m| !m.paths.is_empty());
    let paths = mask_paths(update_mask.as_ref(), ENDPOINT_PATHS)?;
    let current = api
        .store
        .get_endpoint(&key)
        .await?
        .ok_or_else(|| Error::not_found(&e.name))?;
    let provider = current.provider();
    let own = account_field(provider);
    let mut v = Violations::new();
    match provider_from_pb(e.provider) {
        Err(_) => v.add("webhook_endpoint.provider", "is not a provider"),
        Ok(Some(p)) if p != provider => v.add(
            "webhook_endpoint.provider",
            format!(
                "cannot change: the endpoint receives {} webhooks",
                provider.as_str()
            ),
        ),
        Ok(_) => {}
    }
    let mut next = EndpointUpdate {
        key: key.clone(),
        display_name: current.display_name.clone(),
        account: current.account.clone(),
        disabled: current.disabled,
    };
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "display_name" => {
                check_display_name(&mut v, "webhook_endpoint.display_name", &e.display_name);
                next.display_name = e.display_name.clone();
            }
            "disabled" => next.disabled = e.disabled,
            field if field == own => match e.account.as_ref().map(account_from_pb) {
                Some((account, f)) if f == own => {
                    check_account(&mut v, "webhook_endpoint", &account);
                    next.account = account;
                }
                Some((_, other)) => v.add(
                    format!("webhook_endpoint.{other}"),
                    format!(
                        "the provider of a webhook endpoint cannot change: this one receives {} webhooks",
                        provider.as_str()
                    ),
                ),
                None => v.add(
                    format!("webhook_endpoint.{own}"),
                    format!(
                        "is required: the endpoint receives {} webhooks",
                        provider.as_str()
                    ),
                ),
            },
            // An empty mask names every path: only the endpoint's own account applies.
            _ if explicit => v.add(
                format!("update_mask.paths[{i}]"),
                format!(
                    "names another provider's account: this endpoint receives {} webhooks (use {own})",
                    provider.as_str()
                ),
            ),
            _ => {}
        }
    }
    v.into_result()?;
    let updated = api
        .store
        .update_endpoint(
            &next,
            Some(expected.unwrap_or(current.revision)),
            now_micros(),
        )
        .await?;
    api.forget_endpoints();
    Ok(Response::new(pb::UpdateWebhookEndpointResponse {
        webhook_endpoint: Some(endpoint_to_pb(&updated, now_micros())),
    }))
}

pub(super) async fn delete(
    api: &WebhookApi,
    request: Request<pb::DeleteWebhookEndpointRequest>,
) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
    let pb::DeleteWebhookEndpointRequest { name, etag } = request.into_inner();
    let key = endpoint_key(&name, "name")?;
    let expected = expected_revision(&etag, "etag")?;
    api.store.delete_endpoint(&key, expected).await?;
    api.forget_endpoints();
    Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
}

pub(super) async fn rotate_secret(
    api: &WebhookApi,
    request: Request<pb::RotateSecretRequest>,
) -> Result<Response<pb::RotateSecretResponse>, Status> {
    let pb::RotateSecretRequest {
        name,
        new_secret,
        previous_secret_ttl,
        request_id: rid,
    } = request.into_inner();
    let key = endpoint_key(&name, "name")?;
    let rid = request_id(&rid)?;
    let mut v = Violations::new();
    let ttl_us = previous_ttl_us(&mut v, previous_secret_ttl.as_ref());
    v.into_result()?;
    let current = api
        .store
        .get_endpoint(&key)
        .await?
        .ok_or_else(|| Error::not_found(&name))?;
    let provider = current.provider();
    if let Some(why) = no_secret_because(provider) {
        return Err(Error::new(ErrorKind::PreconditionFailed, why).into());
    }
    let mut v = Violations::new();
    check_secret(&mut v, "new_secret", provider, &new_secret);
    v.into_result()?;
    let secret = seal(api, &key, &new_secret)?;
    let now = now_micros();
    let rotated = api
        .store
        .rotate_secret(&key, &secret, ttl_us, rid, now)
        .await?;
    api.forget_endpoints();
    Ok(Response::new(pb::RotateSecretResponse {
        webhook_endpoint: Some(endpoint_to_pb(&rotated, now)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Violations) -> Vec<String> {
        v.into_fields().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn names_parse_and_clients_dash_only_lists() {
        let k = endpoint_key(
            "tenants/acme/clients/shop/webhookEndpoints/retell-1",
            "name",
        )
        .unwrap();
        assert_eq!(
            (k.tenant_id.as_str(), k.client_id.as_str(), k.id.as_str()),
            ("acme", "shop", "retell-1")
        );
        assert!(endpoint_key("tenants/acme/clients/shop/webhookEndpoints/", "name").is_err());
        assert!(endpoint_key("tenants/acme/clients/-/webhookEndpoints/x", "name").is_err());
        assert_eq!(
            list_parent("tenants/acme/clients/-").unwrap(),
            ("acme".into(), None)
        );
        assert!(client("tenants/acme/clients/-").is_err());
        assert_eq!(
            list_parent("tenants/acme/clients/shop").unwrap(),
            ("acme".into(), Some("shop".into()))
        );
        assert!(list_parent("tenants/acme/clients").is_err());
    }

    #[test]
    fn accounts_name_the_missing_field() {
        let mut v = Violations::new();
        check_account(
            &mut v,
            "webhook_endpoint",
            &Account::Twilio {
                account_sid: "AC12".into(),
                to_number: "555".into(),
            },
        );
        assert_eq!(
            fields(v),
            [
                "webhook_endpoint.twilio.account_sid",
                "webhook_endpoint.twilio.to_number"
            ]
        );
        let mut v = Violations::new();
        check_account(
            &mut v,
            "webhook_endpoint",
            &Account::Ghl {
                location_id: String::new(),
                company_id: String::new(),
            },
        );
        assert_eq!(fields(v), ["webhook_endpoint.ghl.location_id"]);
        let mut v = Violations::new();
        check_account(
            &mut v,
            "webhook_endpoint",
            &Account::Paypal {
                account_id: String::new(),
                webhook_id: String::new(),
            },
        );
        assert_eq!(fields(v), ["webhook_endpoint.paypal.webhook_id"]);
        let mut v = Violations::new();
        check_account(
            &mut v,
            "webhook_endpoint",
            &Account::Stripe {
                account_id: "acct_1Abc".into(),
            },
        );
        check_account(
            &mut v,
            "webhook_endpoint",
            &Account::Twilio {
                account_sid: format!("AC{}", "a1".repeat(16)),
                to_number: "+15550100".into(),
            },
        );
        assert!(v.is_empty());
    }

    #[test]
    fn secrets_per_provider() {
        let check = |p, s: &str| {
            let mut v = Violations::new();
            check_secret(&mut v, "s", p, s);
            v.is_empty()
        };
        assert!(check(Provider::Stripe, "whsec_abc"));
        assert!(!check(Provider::Stripe, "sk_live_abc"));
        assert!(!check(Provider::Retell, ""));
        assert!(!check(Provider::Twilio, " token"));
        assert!(check(Provider::Ghl, ""));
        assert!(!check(Provider::Paypal, "anything"));
        assert_eq!(fingerprint("whsec_abc").len(), 8);
        assert_eq!(fingerprint("a"), "ca978112");
    }

    #[test]
    fn rotation_overlap_is_bounded() {
        let mut v = Violations::new();
        assert_eq!(previous_ttl_us(&mut v, None), DEFAULT_PREVIOUS_TTL_US);
        assert_eq!(
            previous_ttl_us(
                &mut v,
                Some(&prost_types::Duration {
                    seconds: 0,
                    nanos: 0
                })
            ),
            0
        );
        assert!(v.is_empty());
        previous_ttl_us(
            &mut v,
            Some(&prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        );
        previous_ttl_us(
            &mut v,
            Some(&prost_types::Duration {
                seconds: 31 * 86_400,
                nanos: 0,
            }),
        );
        assert_eq!(fields(v), ["previous_secret_ttl", "previous_secret_ttl"]);
    }
}
