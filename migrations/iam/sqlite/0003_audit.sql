-- Audit trail: one hash chain per tenant ("" is the platform's own chain).
CREATE TABLE audit_entries (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    occur_at_us BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    permission TEXT NOT NULL,
    resource TEXT NOT NULL,
    client TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    -- JSON object, hashed exactly as stored.
    details TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_entries_by_time ON audit_entries (tenant_id, occur_at_us);

-- After a purge the chain starts from the hash of the last removed entry.
CREATE TABLE audit_anchors (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
