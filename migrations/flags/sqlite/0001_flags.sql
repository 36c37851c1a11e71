-- Feature flags. Timestamps are microseconds since the Unix epoch (UTC), as in the SQLite twin.
CREATE TABLE flags (
    key TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    stage TEXT NOT NULL,
    -- JSON array of environment states; small and always read whole.
    environments TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_request_id TEXT UNIQUE,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

CREATE TABLE flag_prerequisites (
    flag_key TEXT NOT NULL REFERENCES flags (key) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    prerequisite_key TEXT NOT NULL REFERENCES flags (key),
    PRIMARY KEY (flag_key, prerequisite_key)
);
CREATE INDEX flag_prerequisites_by_prerequisite ON flag_prerequisites (prerequisite_key);

-- Allowlists as indexed sets: add/remove touch one row, never the flag.
CREATE TABLE allowlist_entries (
    flag_key TEXT NOT NULL REFERENCES flags (key) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (flag_key, environment, kind, subject)
);
