-- Orchestrator: flows and their versions, live triggers, executions and their step runs,
-- per-tenant concurrency limits, consumed event ids and fired schedule slots.
-- Times are UTC microseconds since the epoch; JSON documents are TEXT.

CREATE TABLE flows (
    tenant          TEXT   NOT NULL,
    flow_id         TEXT   NOT NULL,
    display_name    TEXT   NOT NULL,
    description     TEXT   NOT NULL,
    revision        BIGINT NOT NULL,
    draft_version   BIGINT,
    active_version  BIGINT,
    latest_version  BIGINT NOT NULL,
    request_id      TEXT,
    create_us       BIGINT NOT NULL,
    update_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant, flow_id)
);
CREATE UNIQUE INDEX flows_request ON flows (tenant, request_id);
CREATE INDEX flows_by_name ON flows (tenant, display_name, flow_id);

CREATE TABLE flow_versions (
    tenant        TEXT   NOT NULL,
    flow_id       TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    definition    TEXT   NOT NULL,
    schema_url    TEXT   NOT NULL,
    revision      BIGINT NOT NULL,
    create_us     BIGINT NOT NULL,
    update_us     BIGINT NOT NULL,
    activate_us   BIGINT,
    retire_us     BIGINT,
    activated_by  TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, flow_id, version),
    FOREIGN KEY (tenant, flow_id) REFERENCES flows (tenant, flow_id) ON DELETE CASCADE
);

-- Triggers of active versions only: replaced on activation, removed with the flow.
CREATE TABLE triggers (
    tenant        TEXT   NOT NULL,
    flow_id       TEXT   NOT NULL,
    trigger_id    TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    event_type    TEXT   NOT NULL DEFAULT '',
    filter        TEXT   NOT NULL DEFAULT '',
    schedule      TEXT   NOT NULL DEFAULT '',
    time_zone     TEXT   NOT NULL DEFAULT '',
    missed        TEXT   NOT NULL DEFAULT 'skip',
    next_fire_us  BIGINT,
    PRIMARY KEY (tenant, flow_id, trigger_id),
    FOREIGN KEY (tenant, flow_id) REFERENCES flows (tenant, flow_id) ON DELETE CASCADE
);
CREATE INDEX triggers_by_event ON triggers (tenant, kind, event_type);
CREATE INDEX triggers_due ON triggers (kind, next_fire_us);

-- ready_us: when the row can next be claimed — creation for pending, wake-up for waiting,
-- lease expiry for running (a dead worker's execution becomes claimable when it passes).
CREATE TABLE executions (
    id            TEXT   PRIMARY KEY,
    tenant        TEXT   NOT NULL,
    flow_id       TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    trigger_kind  TEXT   NOT NULL,
    trigger_json  TEXT   NOT NULL,
    event_name    TEXT   NOT NULL DEFAULT '',
    client        TEXT   NOT NULL DEFAULT '',
    input         TEXT   NOT NULL,
    output        TEXT,
    error         TEXT,
    rerun_of      TEXT   NOT NULL DEFAULT '',
    request_id    TEXT,
    cursor        TEXT,
    ctx           TEXT   NOT NULL,
    handling      BIGINT NOT NULL DEFAULT 0,
    ready_us      BIGINT NOT NULL,
    lease_owner   TEXT   NOT NULL DEFAULT '',
    next_seq      BIGINT NOT NULL DEFAULT 0,
    create_us     BIGINT NOT NULL,
    start_us      BIGINT,
    end_us        BIGINT,
    update_us     BIGINT NOT NULL
);
CREATE UNIQUE INDEX executions_request ON executions (tenant, request_id);
CREATE INDEX executions_runnable ON executions (state, ready_us);
CREATE INDEX executions_by_tenant ON executions (tenant, create_us, id);
CREATE INDEX executions_by_flow ON executions (tenant, flow_id, state);

CREATE TABLE step_runs (
    execution_id  TEXT   NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    step_id       TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    attempt       BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    iteration     TEXT   NOT NULL DEFAULT '',
    method        TEXT   NOT NULL DEFAULT '',
    input         TEXT,
    output        TEXT,
    error         TEXT,
    start_us      BIGINT NOT NULL,
    end_us        BIGINT,
    resume_us     BIGINT,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE concurrency_limits (
    tenant                 TEXT   PRIMARY KEY,
    max_running            BIGINT NOT NULL,
    max_running_per_flow   BIGINT NOT NULL,
    max_running_per_client BIGINT NOT NULL,
    max_pending            BIGINT NOT NULL,
    revision               BIGINT NOT NULL,
    update_us              BIGINT NOT NULL
);

-- Writers that create executions lock their tenant's row first, so the max_pending count is
-- exact on PostgreSQL too (READ COMMITTED would let concurrent inserts miss each other).
CREATE TABLE tenant_locks (
    tenant TEXT   PRIMARY KEY,
    n      BIGINT NOT NULL
);

-- Claims serialize on this row so concurrency caps hold across replicas.
CREATE TABLE claim_lock (
    id BIGINT PRIMARY KEY,
    n  BIGINT NOT NULL
);
INSERT INTO claim_lock (id, n) VALUES (1, 0);

-- Per tenant: one tenant cannot pre-consume (or collide with) another tenant's event ids.
-- Rows older than the retention window are purged by the scheduler loop.
CREATE TABLE consumed_events (
    tenant       TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    consumed_us  BIGINT NOT NULL,
    PRIMARY KEY (tenant, source, event_id)
);
CREATE INDEX consumed_events_age ON consumed_events (consumed_us);

-- One row per (trigger, slot): the replica that inserts it fires the slot, the others do not.
CREATE TABLE schedule_fires (
    tenant      TEXT   NOT NULL,
    flow_id     TEXT   NOT NULL,
    trigger_id  TEXT   NOT NULL,
    slot_us     BIGINT NOT NULL,
    fired_us    BIGINT NOT NULL,
    PRIMARY KEY (tenant, flow_id, trigger_id, slot_us)
);
CREATE INDEX schedule_fires_age ON schedule_fires (fired_us);
