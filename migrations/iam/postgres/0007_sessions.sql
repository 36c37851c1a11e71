-- Opaque refresh tokens (only a SHA-256 of each is kept). Each refresh spends one token and
-- issues the next in the same family; spending a token twice revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    issued_at_us BIGINT NOT NULL,
    family_expires_at_us BIGINT NOT NULL,
    used_at_us BIGINT,
    revoked_at_us BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Google sign-ins in flight: state, nonce and the PKCE verifier, spent once by the callback.
CREATE TABLE sign_in_states (
    state TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    return_to TEXT NOT NULL,
    tenant TEXT NOT NULL,
    expires_at_us BIGINT NOT NULL
);
