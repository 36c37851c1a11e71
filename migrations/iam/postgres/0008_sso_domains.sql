-- Google Workspace hosted domains bound to tenants. A domain binds to at most one tenant, and
-- only a verified binding provisions users.
CREATE TABLE sso_domains (
    domain TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    default_role TEXT NOT NULL,
    default_scope TEXT NOT NULL,
    auto_provision BOOLEAN NOT NULL,
    verification_token TEXT NOT NULL,
    verified_at_us BIGINT,
    revision BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
CREATE INDEX sso_domains_tenant ON sso_domains (tenant_id, domain);
