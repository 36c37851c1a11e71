-- Tenants (agencies) and their clients (businesses). Timestamps are microseconds since the Unix
-- epoch (UTC), as in the SQLite twin; JSON columns hold small documents always read whole.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    rate_limits TEXT NOT NULL,
    audit_retention_secs BIGINT NOT NULL,
    labels TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT UNIQUE,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    deleted_at_us BIGINT
);

CREATE TABLE clients (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    website TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    labels TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, create_request_id)
);
