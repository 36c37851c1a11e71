-- What the adapters remember between calls when no Redis is configured: the first result per
-- idempotency key (Twilio's at-most-once sends), kept until it expires.
CREATE TABLE cache_entries (
    key        TEXT   PRIMARY KEY,
    value      BYTEA  NOT NULL,
    expires_us BIGINT NOT NULL
);
CREATE INDEX cache_entries_expiry ON cache_entries (expires_us);
