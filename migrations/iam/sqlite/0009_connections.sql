-- Connected provider accounts of a client. Secrets (OAuth tokens, API keys) live only in
-- `sealed`, AES-256-GCM under the master key with the connection's name as associated data.
CREATE TABLE connections (
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    id TEXT NOT NULL,
    provider INTEGER NOT NULL,
    auth_method INTEGER NOT NULL,
    state INTEGER NOT NULL,
    display_name TEXT NOT NULL,
    external_account_id TEXT NOT NULL,
    external_account_name TEXT NOT NULL,
    base_url TEXT NOT NULL,
    scopes TEXT NOT NULL,
    config TEXT NOT NULL,
    secret_hint TEXT NOT NULL,
    sealed TEXT NOT NULL,
    access_expires_at_us BIGINT,
    last_error TEXT NOT NULL,
    creator TEXT NOT NULL,
    request_id TEXT,
    revision BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT,
    -- A replica refreshing the OAuth token holds this lease, so one refresh token is spent once.
    refresh_lease_until_us BIGINT,
    PRIMARY KEY (tenant_id, client_id, id)
);
CREATE UNIQUE INDEX connections_request ON connections (tenant_id, client_id, request_id);

-- OAuth connections in flight: the single-use state, the PKCE verifier and where to return.
CREATE TABLE connection_oauth_states (
    state TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    return_to TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL
);
