-- Webhook ingress storage. Timestamps are microseconds since the Unix epoch (UTC), durations are
-- seconds, as in the PostgreSQL twin. JSON columns hold small documents always read whole.

-- Canonical events: one row per provider event, ever (the UNIQUE key makes a provider's retry an
-- acknowledged duplicate). `id` is the platform id ({event} in tenants/{tenant}/events/{event});
-- `cloud_event_id` is the CloudEvents id derived from the provider event id.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_event_id TEXT NOT NULL,
    cloud_event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    data TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    replayed_from TEXT,
    UNIQUE (provider, provider_event_id)
);
-- Newest-first listing per tenant and the retention purge.
CREATE INDEX events_tenant_received ON events (tenant_id, received_at_us, id);

-- The outbox: one row per (event, consumer), written in the event's transaction. `id` is the
-- delivery order: a row is only claimable when no lower-id row of the same (consumer,
-- ordering_key) is still pending. Only the lease owner may complete a row.
CREATE TABLE outbox (
    -- AUTOINCREMENT: ids are never reused, so a dead letter's name never names another row.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    consumer TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    -- pending | delivered | dead
    state TEXT NOT NULL,
    -- Attempts ever started (across replays) and since the last replay (the retry budget).
    attempts BIGINT NOT NULL,
    round_attempts BIGINT NOT NULL,
    next_attempt_at_us BIGINT NOT NULL,
    last_attempt_at_us BIGINT,
    lease_owner TEXT,
    lease_until_us BIGINT,
    last_error TEXT,
    delivered_at_us BIGINT,
    duplicate BOOLEAN NOT NULL,
    -- Set when delivery first gave up: the row is a dead letter from then on.
    dead_at_us BIGINT,
    replayed_at_us BIGINT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    UNIQUE (event_id, consumer)
);
-- Claim: due pending rows, oldest first; the in-order check: an earlier pending row of the key.
CREATE INDEX outbox_due ON outbox (next_attempt_at_us, id) WHERE state = 'pending';
CREATE INDEX outbox_order ON outbox (consumer, ordering_key, id) WHERE state = 'pending';
-- Dead letters per tenant, newest first.
CREATE INDEX outbox_dead ON outbox (tenant_id, dead_at_us, id) WHERE dead_at_us IS NOT NULL;

-- Failed delivery attempts, the most recent 50 per outbox row (shown on dead letters).
CREATE TABLE delivery_attempts (
    outbox_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    attempted_at_us BIGINT NOT NULL,
    latency_us BIGINT NOT NULL,
    status_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    PRIMARY KEY (outbox_id, attempt)
);

-- Verified webhooks that failed schema validation or normalization, kept byte for byte until an
-- operator replays them (or retention removes them).
CREATE TABLE quarantined_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    raw_body BLOB NOT NULL,
    headers TEXT NOT NULL,
    provider_event_type TEXT NOT NULL,
    provider_event_id TEXT NOT NULL,
    -- schema_invalid | unknown_event_type | normalization_failed
    reason TEXT NOT NULL,
    schema_errors TEXT NOT NULL,
    error_message TEXT NOT NULL,
    schema_url TEXT NOT NULL,
    received_at_us BIGINT NOT NULL,
    replayed_event_id TEXT,
    replayed_at_us BIGINT,
    updated_at_us BIGINT NOT NULL
);
CREATE INDEX quarantined_tenant_received ON quarantined_events (tenant_id, received_at_us, id);

-- Provider accounts of clients. `account_key` is what an inbound webhook is resolved by (e.g.
-- "location/{locationId}", "{AccountSid}/{To or *}", a Retell agent id); unique per provider
-- across the platform so that a webhook names exactly one endpoint.
CREATE TABLE webhook_endpoints (
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    account_key TEXT NOT NULL,
    account TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, client_id, id),
    UNIQUE (provider, account_key),
    UNIQUE (tenant_id, create_request_id)
);

-- Secret versions of an endpoint. `ciphertext` is encrypted by the caller (AES-256-GCM under the
-- master key) and set to NULL when the version expires; the metadata stays for audit.
CREATE TABLE webhook_endpoint_secrets (
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    ciphertext TEXT,
    fingerprint TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    expire_at_us BIGINT,
    destroyed_at_us BIGINT,
    request_id TEXT,
    PRIMARY KEY (tenant_id, client_id, endpoint_id, version),
    UNIQUE (tenant_id, client_id, endpoint_id, request_id),
    FOREIGN KEY (tenant_id, client_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, client_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_endpoint_secrets_expiring ON webhook_endpoint_secrets (expire_at_us)
    WHERE ciphertext IS NOT NULL;

-- Per-tenant retention; NULL means the platform default.
CREATE TABLE retention_settings (
    tenant_id TEXT PRIMARY KEY,
    event_retention_secs BIGINT,
    quarantine_retention_secs BIGINT,
    dead_letter_retention_secs BIGINT,
    revision BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
