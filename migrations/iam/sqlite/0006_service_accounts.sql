-- Non-human principals of a tenant and their API keys (only a SHA-256 of each secret is kept).
CREATE TABLE service_accounts (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, create_request_id)
);

CREATE TABLE api_keys (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    secret_prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    expire_at_us BIGINT,
    last_use_at_us BIGINT,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account_id, id),
    UNIQUE (tenant_id, account_id, create_request_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES service_accounts (tenant_id, id) ON DELETE CASCADE
);
