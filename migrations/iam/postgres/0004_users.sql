-- People of a tenant. The email is unique within the tenant; the Google subject binds at first sign-in.
CREATE TABLE users (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL,
    google_subject TEXT NOT NULL,
    hosted_domain TEXT NOT NULL,
    picture_uri TEXT NOT NULL,
    last_sign_in_at_us BIGINT,
    revision BIGINT NOT NULL,
    create_request_id TEXT,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, create_request_id)
);
