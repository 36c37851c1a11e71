//! `SsoDomainService`: Google Workspace hosted domains bound to a tenant. A binding provisions
//! users only once verified: the tenant publishes the binding's record at the configured URL
//! of the domain (an HTTP file, as Google Search Console's HTML-file method does), so no tenant
//! can claim a domain it does not control.
use std::{sync::Arc, time::Duration};

use maxai_kit::{
    error::Violations,
    on_db,
    paging::{decode_token, next_page, page_size},
    resource::{etag, expected_revision, mask_paths, timestamp},
    storage::{now_micros, Db},
    Error, ErrorKind, Result,
};
use maxai_proto::maxai::iam::v1::{self as pb, sso_domain_service_server::SsoDomainService};
use tonic::{Request, Response, Status};

use super::names;
use crate::{
    audit::{AuditLog, Caller},
    domain::built_in,
    sso::{binding_from, domain_binding, DomainBinding, BINDING_COLUMNS},
    store::TenancyStore,
};

const PATHS: &[&str] = &["default_role", "default_scope", "auto_provision"];

pub struct SsoDomainsApi {
    db: Db,
    tenancy: Arc<dyn TenancyStore>,
    audit: Arc<AuditLog>,
    http: reqwest::Client,
    /// `{domain}` is replaced by the domain being verified.
    verification_url: String,
}

fn record(b: &DomainBinding) -> String {
    format!("maxai-domain-verification={}", b.verification_token)
}

fn to_pb(b: &DomainBinding) -> pb::SsoDomain {
    pb::SsoDomain {
        name: format!("tenants/{}/ssoDomains/{}", b.tenant_id, b.domain),
        domain: b.domain.clone(),
        default_role: b.default_role.clone(),
        default_scope: b.default_scope.clone(),
        auto_provision: b.auto_provision,
        state: if b.verified_at_us.is_some() {
            pb::SsoDomainState::Verified
        } else {
            pb::SsoDomainState::PendingVerification
        } as i32,
        verification_record: record(b),
        verify_time: b.verified_at_us.map(timestamp),
        etag: etag(b.revision),
        create_time: Some(timestamp(b.created_at_us)),
        update_time: Some(timestamp(b.updated_at_us)),
    }
}

/// `tenants/{t}/ssoDomains/{domain}` → (t, domain).
fn domain_name(name: &str, field: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["tenants", t, "ssoDomains", d] if !t.is_empty() && !d.is_empty() => {
            Ok(((*t).to_owned(), (*d).to_owned()))
        }
        _ => Err(Error::invalid(
            field,
            "must be tenants/{tenant}/ssoDomains/{domain}",
        )),
    }
}

fn valid_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

/// Checks the role and scope new users of tenant `t` would get.
fn check_defaults(t: &str, b: &DomainBinding, v: &mut Violations) {
    let role_ok = match b.default_role.strip_prefix("roles/") {
        Some(id) => built_in(id)
            .is_some_and(|_| id != "platform-admin" && id != crate::domain::PLATFORM_SERVICE),
        None => b
            .default_role
            .strip_prefix(&format!("tenants/{t}/roles/"))
            .is_some_and(|r| !r.is_empty() && !r.contains('/')),
    };
    v.check(
        role_ok,
        "sso_domain.default_role",
        "must be a built-in tenant role or one of this tenant's roles",
    );
    v.check(
        maxai_kit::auth::tenant_of(&b.default_scope) == Some(t),
        "sso_domain.default_scope",
        "must be the tenant or one of its clients",
    );
}

impl SsoDomainsApi {
    pub fn new(
        db: Db,
        tenancy: Arc<dyn TenancyStore>,
        audit: Arc<AuditLog>,
        verification_url: String,
    ) -> Self {
        SsoDomainsApi {
            db,
            tenancy,
            audit,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            verification_url,
        }
    }

    /// The binding `name`, refusing bindings of other tenants as unknown.
    async fn get(&self, name: &str, field: &str) -> Result<(String, DomainBinding)> {
        let (t, d) = domain_name(name, field)?;
        match domain_binding(&self.db, &d).await? {
            Some(b) if b.tenant_id == t => Ok((t, b)),
            _ => Err(Error::not_found(name)),
        }
    }

    async fn save(&self, b: &DomainBinding, expected: i64) -> Result<DomainBinding> {
        let now = now_micros();
        let changed = on_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE sso_domains SET default_role = $1, default_scope = $2, auto_provision = $3, verified_at_us = $4, \
                 revision = revision + 1, updated_at_us = $5 WHERE domain = $6 AND tenant_id = $7 AND revision = $8",
            )
            .bind(&b.default_role)
            .bind(&b.default_scope)
            .bind(b.auto_provision)
            .bind(b.verified_at_us)
            .bind(now)
            .bind(&b.domain)
            .bind(&b.tenant_id)
            .bind(expected)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        if changed == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the binding changed meanwhile; read it again",
            ));
        }
        Ok(DomainBinding {
            revision: expected + 1,
            updated_at_us: now,
            ..b.clone()
        })
    }
}

#[tonic::async_trait]
impl SsoDomainService for SsoDomainsApi {
    async fn create_sso_domain(
        &self,
        request: Request<pb::CreateSsoDomainRequest>,
    ) -> Result<Response<pb::CreateSsoDomainResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::CreateSsoDomainRequest {
            parent,
            sso_domain,
            sso_domain_id,
            request_id: _,
        } = request.into_inner();
        let t = names::tenant(&parent, "parent")?;
        super::active_tenant(self.tenancy.as_ref(), &t).await?;
        let d = sso_domain_id.to_lowercase();
        let input = sso_domain.unwrap_or_default();
        let now = now_micros();
        let b = DomainBinding {
            domain: d.clone(),
            tenant_id: t.clone(),
            default_role: if input.default_role.is_empty() {
                "roles/tenant-member".into()
            } else {
                input.default_role
            },
            default_scope: if input.default_scope.is_empty() {
                format!("tenants/{t}")
            } else {
                input.default_scope
            },
            auto_provision: input.auto_provision,
            verification_token: uuid::Uuid::new_v4().simple().to_string(),
            verified_at_us: None,
            revision: 1,
            created_at_us: now,
            updated_at_us: now,
        };
        let mut v = Violations::new();
        v.check(
            valid_domain(&d),
            "sso_domain_id",
            "must be a domain name such as acme.com",
        );
        check_defaults(&t, &b, &mut v);
        v.into_result()?;
        let inserted = on_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO sso_domains (domain, tenant_id, default_role, default_scope, auto_provision, verification_token, \
                 verified_at_us, revision, created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, NULL, 1, $7, $7) \
                 ON CONFLICT (domain) DO NOTHING",
            )
            .bind(&b.domain)
            .bind(&b.tenant_id)
            .bind(&b.default_role)
            .bind(&b.default_scope)
            .bind(b.auto_provision)
            .bind(&b.verification_token)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(Error::from)?;
        if inserted == 0 {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{d} is already bound to a tenant"),
            )
            .into());
        }
        let out = to_pb(&b);
        self.audit
            .changed(
                &caller,
                &t,
                "maxai.iam.v1.SsoDomainService/CreateSsoDomain",
                "iam.ssoDomains.create",
                &out.name,
                serde_json::json!({"default_role": b.default_role, "default_scope": b.default_scope, "auto_provision": b.auto_provision}),
            )
            .await;
        Ok(Response::new(pb::CreateSsoDomainResponse {
            sso_domain: Some(out),
        }))
    }

    async fn get_sso_domain(
        &self,
        request: Request<pb::GetSsoDomainRequest>,
    ) -> Result<Response<pb::GetSsoDomainResponse>, Status> {
        let (_, b) = self.get(&request.into_inner().name, "name").await?;
        Ok(Response::new(pb::GetSsoDomainResponse {
            sso_domain: Some(to_pb(&b)),
        }))
    }

    async fn list_sso_domains(
        &self,
        request: Request<pb::ListSsoDomainsRequest>,
    ) -> Result<Response<pb::ListSsoDomainsResponse>, Status> {
        let pb::ListSsoDomainsRequest {
            parent,
            page_size: size,
            page_token,
        } = request.into_inner();
        let t = names::tenant(&parent, "parent")?;
        let limit = page_size(size)?;
        let scope = format!("ssoDomains/{t}");
        let after = decode_token(&scope, &page_token)?.unwrap_or_default();
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM sso_domains WHERE tenant_id = $1 AND domain > $2 ORDER BY domain LIMIT $3"
        );
        let rows = on_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(&t)
                .bind(&after)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })
        .map_err(Error::from)?;
        let mut page: Vec<DomainBinding> = rows.into_iter().map(binding_from).collect();
        let next_page_token = next_page(&mut page, limit, &scope, |b| b.domain.clone());
        Ok(Response::new(pb::ListSsoDomainsResponse {
            sso_domains: page.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_sso_domain(
        &self,
        request: Request<pb::UpdateSsoDomainRequest>,
    ) -> Result<Response<pb::UpdateSsoDomainResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::UpdateSsoDomainRequest {
            sso_domain,
            update_mask,
        } = request.into_inner();
        let input = sso_domain.ok_or_else(|| Error::invalid("sso_domain", "is required"))?;
        let paths = mask_paths(update_mask.as_ref(), PATHS)?;
        let (t, mut b) = self.get(&input.name, "sso_domain.name").await?;
        let expected = expected_revision(&input.etag, "sso_domain.etag")?.unwrap_or(b.revision);
        for p in &paths {
            match p.as_str() {
                "default_role" => b.default_role = input.default_role.clone(),
                "default_scope" => b.default_scope = input.default_scope.clone(),
                "auto_provision" => b.auto_provision = input.auto_provision,
                _ => {}
            }
        }
        let mut v = Violations::new();
        check_defaults(&t, &b, &mut v);
        v.into_result()?;
        let b = self.save(&b, expected).await?;
        let out = to_pb(&b);
        self.audit
            .changed(
                &caller,
                &t,
                "maxai.iam.v1.SsoDomainService/UpdateSsoDomain",
                "iam.ssoDomains.update",
                &out.name,
                serde_json::json!({"update_mask": paths}),
            )
            .await;
        Ok(Response::new(pb::UpdateSsoDomainResponse {
            sso_domain: Some(out),
        }))
    }

    async fn delete_sso_domain(
        &self,
        request: Request<pb::DeleteSsoDomainRequest>,
    ) -> Result<Response<pb::DeleteSsoDomainResponse>, Status> {
        let caller = Caller::of(&request);
        let pb::DeleteSsoDomainRequest { name, etag } = request.into_inner();
        let (t, b) = self.get(&name, "name").await?;
        let expected = expected_revision(&etag, "etag")?.unwrap_or(b.revision);
        let gone = on_db!(&self.db, |pool| {
            sqlx::query(
                "DELETE FROM sso_domains WHERE domain = $1 AND tenant_id = $2 AND revision = $3",
            )
            .bind(&b.domain)
            .bind(&t)
            .bind(expected)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })
        .map_err(Error::from)?;
        if gone == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the binding changed meanwhile; read it again",
            )
            .into());
        }
        self.audit
            .changed(
                &caller,
                &t,
                "maxai.iam.v1.SsoDomainService/DeleteSsoDomain",
                "iam.ssoDomains.delete",
                &name,
                serde_json::json!({}),
            )
            .await;
        Ok(Response::new(pb::DeleteSsoDomainResponse {}))
    }

    async fn verify_sso_domain(
        &self,
        request: Request<pb::VerifySsoDomainRequest>,
    ) -> Result<Response<pb::VerifySsoDomainResponse>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        let (t, mut b) = self.get(&name, "name").await?;
        if b.verified_at_us.is_none() {
            let url = self.verification_url.replace("{domain}", &b.domain);
            let found = match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r
                    .text()
                    .await
                    .is_ok_and(|body| body.lines().any(|l| l.trim() == record(&b))),
                _ => false,
            };
            if !found {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("publish \"{}\" at {url}, then verify again", record(&b)),
                )
                .into());
            }
            b.verified_at_us = Some(now_micros());
            let revision = b.revision;
            b = self.save(&b, revision).await?;
            self.audit
                .changed(
                    &caller,
                    &t,
                    "maxai.iam.v1.SsoDomainService/VerifySsoDomain",
                    "iam.ssoDomains.verify",
                    &name,
                    serde_json::json!({"url": url}),
                )
                .await;
        }
        Ok(Response::new(pb::VerifySsoDomainResponse {
            sso_domain: Some(to_pb(&b)),
        }))
    }
}
