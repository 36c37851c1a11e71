-- Keys that sign access tokens. The private half is AES-256-GCM encrypted under the master key.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    state TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    rotated_at_us BIGINT,
    retire_at_us BIGINT
);
