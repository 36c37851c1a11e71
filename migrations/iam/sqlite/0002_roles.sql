-- Tenant-defined roles and role assignments (built-in roles live in code, derived from the contracts).
CREATE TABLE roles (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON array of permission names.
    permissions TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, create_request_id)
);

CREATE TABLE role_assignments (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    description TEXT NOT NULL,
    expire_at_us BIGINT,
    creator TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, create_request_id)
);
-- The policy engine reads a principal's assignments on every uncached decision.
CREATE INDEX role_assignments_by_principal ON role_assignments (principal);
CREATE INDEX role_assignments_by_role ON role_assignments (tenant_id, role);
