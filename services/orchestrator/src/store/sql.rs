//! [`OrchestratorStore`] over SQL, the same statements on PostgreSQL and SQLite. Writes run in
//! transactions that write first (SQLite: `BEGIN IMMEDIATE`, so a read-then-write never fails
//! on a stale snapshot). Leases are compare-and-set updates on the execution row (owner and
//! state in the `WHERE`), so a worker that lost its lease writes nothing. Claims serialize on
//! one lock row: cheap next to running steps, and it makes every concurrency cap exact across
//! replicas on both dialects. Writers that create executions first lock their tenant's row in
//! `tenant_locks`, so `max_pending` is exact on PostgreSQL as well (under READ COMMITTED two
//! inserts would each miss the other's row); request-id and dedupe races end in
//! `ON CONFLICT DO NOTHING` and a re-read, never in a unique-violation error.
use std::collections::HashMap;

use async_trait::async_trait;
use maxai_kit::{on_db, storage::Db, Error, ErrorKind, Result};
use serde_json::Value;
use sqlx::Row;

use super::{
    Checkpoint, ClaimCaps, ExecutionFilter, ExecutionRecord, FlowRecord, Limits, LimitsRecord,
    NewExecution, NewStepRun, OrchestratorStore, StepEnd, StepRunRecord, StepWrite, TriggerFilter,
    TriggerRecord, VersionRecord,
};
use crate::domain::{ExecError, ExecState, StepKind, StepState, TriggerKind, VersionState};

macro_rules! write_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            Db::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Db::Sqlite(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

fn bad_data(what: &str) -> Error {
    Error::internal(anyhow::anyhow!("stored {what} is not valid"))
}

fn json_of(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|_| bad_data("json"))
}

fn opt_json(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| json_of(&t)).transpose()
}

fn opt_error(text: Option<String>) -> Result<Option<ExecError>> {
    text.map(|t| serde_json::from_str(&t).map_err(|_| bad_data("error")))
        .transpose()
}

fn to_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn iteration_text(path: &[i32]) -> String {
    path.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn iteration_of(text: &str) -> Vec<i32> {
    text.split('.').filter_map(|s| s.parse().ok()).collect()
}

macro_rules! flow_row {
    ($r:expr) => {{
        let r = $r;
        FlowRecord {
            tenant: r.try_get("tenant")?,
            flow_id: r.try_get("flow_id")?,
            display_name: r.try_get("display_name")?,
            description: r.try_get("description")?,
            revision: r.try_get("revision")?,
            draft_version: r.try_get("draft_version")?,
            active_version: r.try_get("active_version")?,
            latest_version: r.try_get("latest_version")?,
            create_us: r.try_get("create_us")?,
            update_us: r.try_get("update_us")?,
        }
    }};
}

macro_rules! version_row {
    ($r:expr) => {{
        let r = $r;
        let state: String = r.try_get("state")?;
        let definition: String = r.try_get("definition")?;
        VersionRecord {
            tenant: r.try_get("tenant")?,
            flow_id: r.try_get("flow_id")?,
            version: r.try_get("version")?,
            state: VersionState::parse(&state).ok_or_else(|| bad_data("version state"))?,
            definition: json_of(&definition)?,
            schema_url: r.try_get("schema_url")?,
            revision: r.try_get("revision")?,
            create_us: r.try_get("create_us")?,
            update_us: r.try_get("update_us")?,
            activate_us: r.try_get("activate_us")?,
            retire_us: r.try_get("retire_us")?,
            activated_by: r.try_get("activated_by")?,
        }
    }};
}

macro_rules! trigger_row {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        TriggerRecord {
            tenant: r.try_get("tenant")?,
            flow_id: r.try_get("flow_id")?,
            trigger_id: r.try_get("trigger_id")?,
            version: r.try_get("version")?,
            kind: TriggerKind::parse(&kind).ok_or_else(|| bad_data("trigger kind"))?,
            event_type: r.try_get("event_type")?,
            filter: r.try_get("filter")?,
            schedule: r.try_get("schedule")?,
            time_zone: r.try_get("time_zone")?,
            missed: r.try_get("missed")?,
            next_fire_us: r.try_get("next_fire_us")?,
        }
    }};
}

macro_rules! exec_row {
    ($r:expr) => {{
        let r = $r;
        let state: String = r.try_get("state")?;
        let trigger: String = r.try_get("trigger_json")?;
        let input: String = r.try_get("input")?;
        let ctx: String = r.try_get("ctx")?;
        let handling: i64 = r.try_get("handling")?;
        ExecutionRecord {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            flow_id: r.try_get("flow_id")?,
            version: r.try_get("version")?,
            state: ExecState::parse(&state).ok_or_else(|| bad_data("execution state"))?,
            trigger: serde_json::from_str(&trigger).map_err(|_| bad_data("trigger"))?,
            client: r.try_get("client")?,
            input: json_of(&input)?,
            output: opt_json(r.try_get("output")?)?,
            error: opt_error(r.try_get("error")?)?,
            rerun_of: r.try_get("rerun_of")?,
            cursor: r.try_get("cursor")?,
            ctx: json_of(&ctx)?,
            handling: handling != 0,
            ready_us: r.try_get("ready_us")?,
            lease_owner: r.try_get("lease_owner")?,
            create_us: r.try_get("create_us")?,
            start_us: r.try_get("start_us")?,
            end_us: r.try_get("end_us")?,
            update_us: r.try_get("update_us")?,
        }
    }};
}

macro_rules! step_row {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        let state: String = r.try_get("state")?;
        let iteration: String = r.try_get("iteration")?;
        StepRunRecord {
            execution_id: r.try_get("execution_id")?,
            seq: r.try_get("seq")?,
            step_id: r.try_get("step_id")?,
            kind: StepKind::parse(&kind).ok_or_else(|| bad_data("step kind"))?,
            attempt: r.try_get("attempt")?,
            state: StepState::parse(&state).ok_or_else(|| bad_data("step state"))?,
            iteration: iteration_of(&iteration),
            method: r.try_get("method")?,
            input: opt_json(r.try_get("input")?)?,
            output: opt_json(r.try_get("output")?)?,
            error: opt_error(r.try_get("error")?)?,
            start_us: r.try_get("start_us")?,
            end_us: r.try_get("end_us")?,
            resume_us: r.try_get("resume_us")?,
        }
    }};
}

/// How far below its pending cap a tenant's event is consumed without the tenant lock; more
/// than the executions any realistic set of concurrent transactions can add.
const UNLOCKED_PENDING_MARGIN: i64 = 1_024;

/// Serializes, per tenant, the transactions that count and create executions (held to commit).
macro_rules! lock_tenant {
    ($tx:expr, $tenant:expr) => {{
        sqlx::query(
            "INSERT INTO tenant_locks (tenant, n) VALUES ($1, 1) \
             ON CONFLICT (tenant) DO UPDATE SET n = tenant_locks.n + 1",
        )
        .bind($tenant)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Inserts one execution inside a transaction `$tx`; evaluates to `false` when its id or
/// request id is taken (a concurrent retry won).
macro_rules! insert_execution {
    ($tx:expr, $new:expr, $request_id:expr, $now:expr) => {{
        let n: &NewExecution = $new;
        sqlx::query(
            "INSERT INTO executions (id, tenant, flow_id, version, state, trigger_kind, trigger_json, \
             event_name, client, input, rerun_of, request_id, cursor, ctx, ready_us, create_us, update_us) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $14) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&n.id)
        .bind(&n.tenant)
        .bind(&n.flow_id)
        .bind(n.version)
        .bind(&n.trigger.kind)
        .bind(to_text(&n.trigger))
        .bind(&n.trigger.event)
        .bind(&n.client)
        .bind(to_text(&n.input))
        .bind(&n.rerun_of)
        .bind($request_id)
        .bind(n.cursor.as_deref())
        .bind(to_text(&n.ctx))
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1
    }};
}

const EXEC_COLS: &str =
    "id, tenant, flow_id, version, state, trigger_json, client, input, output, error, \
    rerun_of, cursor, ctx, handling, ready_us, lease_owner, create_us, start_us, end_us, update_us";

/// `ready_us` of a write by the lease holder: the lease expiry stays while more than `$half`
/// of it is left after `$now`, else `$new`. An unchanged `ready_us` leaves every index of the
/// row as it is, so PostgreSQL can update the row in place (HOT) instead of adding an entry to
/// each of its indexes per step.
macro_rules! kept_lease {
    ($new:literal, $now:literal, $half:literal) => {
        concat!(
            "ready_us = CASE WHEN ready_us - ",
            $now,
            " > ",
            $half,
            " THEN ready_us ELSE ",
            $new,
            " END"
        )
    };
}
/// The columns a step boundary writes ($3–$13; $1 id, $2 worker), for [`bind_checkpoint`].
macro_rules! checkpoint_set {
    () => {
        concat!(
            "state = $3, cursor = $4, ctx = $5, handling = $6, ",
            kept_lease!("$7", "$12", "$13"),
            ", output = $8, error = $9, lease_owner = $10, \
             end_us = CASE WHEN $11 = 1 THEN $12 ELSE end_us END, update_us = $12"
        )
    };
}
/// The compare-and-set on the lease: a worker that lost it writes nothing.
macro_rules! lease_held {
    () => {
        "id = $1 AND lease_owner = $2 AND state = 'running'"
    };
}
const CHECKPOINT: &str = concat!(
    "UPDATE executions SET ",
    checkpoint_set!(),
    " WHERE ",
    lease_held!()
);
const FINISH_STEP: &str =
    "UPDATE step_runs SET state = $3, output = $4, error = $5, resume_us = $6, \
    end_us = CASE WHEN $3 = 'waiting' THEN NULL ELSE $7 END \
    WHERE execution_id = $1 AND seq = $2 AND state IN ('running', 'waiting')";

/// A checkpoint that takes `$14` step-run seqs (the last one is returned).
const CHECKPOINT_TAKE_SEQS: &str = concat!(
    "UPDATE executions SET next_seq = next_seq + $14, ",
    checkpoint_set!(),
    " WHERE ",
    lease_held!(),
    " RETURNING next_seq"
);
/// A step run as started (state running) or as recorded whole (started and ended at `$13`).
const INSERT_STEP_RUN: &str =
    "INSERT INTO step_runs (execution_id, seq, step_id, kind, attempt, state, \
     iteration, method, input, output, error, resume_us, start_us, end_us) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
     CASE WHEN $6 IN ('running', 'waiting') THEN NULL ELSE $13 END)";

/// Binds [`INSERT_STEP_RUN`]: `run` started at `$now`, ended there too when `end` is given.
macro_rules! bind_step_run {
    ($q:expr, $id:expr, $seq:expr, $run:expr, $end:expr, $now:expr) => {{
        let run: &NewStepRun = $run;
        let end: Option<&StepEnd> = $end;
        $q.bind($id)
            .bind($seq)
            .bind(&run.step_id)
            .bind(run.kind.as_str())
            .bind(run.attempt)
            .bind(end.map_or(StepState::Running.as_str(), |e| e.state.as_str()))
            .bind(iteration_text(&run.iteration))
            .bind(&run.method)
            .bind(run.input.as_ref().map(to_text))
            .bind(end.and_then(|e| e.output.as_ref()).map(to_text))
            .bind(end.and_then(|e| e.error.as_ref()).map(to_text))
            .bind(end.and_then(|e| e.resume_us))
            .bind($now)
    }};
}

/// Binds `$1`–`$13` of [`CHECKPOINT`] and [`CHECKPOINT_TAKE_SEQS`].
macro_rules! bind_checkpoint {
    ($q:expr, $id:expr, $worker:expr, $cp:expr, $now:expr, $lease_us:expr) => {{
        let cp: &Checkpoint = $cp;
        let now: i64 = $now;
        let ready = match cp.state {
            ExecState::Waiting => cp.wake_us.unwrap_or(now),
            ExecState::Running => now + $lease_us,
            _ => now,
        };
        let owner = if cp.state == ExecState::Running {
            $worker
        } else {
            ""
        };
        $q.bind($id)
            .bind($worker)
            .bind(cp.state.as_str())
            .bind(cp.cursor.as_deref())
            .bind(to_text(&cp.ctx))
            .bind(i64::from(cp.handling))
            .bind(ready)
            .bind(cp.output.as_ref().map(to_text))
            .bind(cp.error.as_ref().map(to_text))
            .bind(owner)
            .bind(i64::from(cp.state.is_finished()))
            .bind(now)
            // Only a boundary that stays running may keep the lease expiry; any other state
            // writes its own `ready_us` (the wake time, or now).
            .bind(if cp.state == ExecState::Running {
                $lease_us / 2
            } else {
                i64::MAX
            })
    }};
}

/// Binds `$1`–`$7` of [`FINISH_STEP`].
macro_rules! bind_finish_step {
    ($q:expr, $id:expr, $seq:expr, $end:expr, $now:expr) => {{
        let end: &StepEnd = $end;
        $q.bind($id)
            .bind($seq)
            .bind(end.state.as_str())
            .bind(end.output.as_ref().map(to_text))
            .bind(end.error.as_ref().map(to_text))
            .bind(end.resume_us)
            .bind($now)
    }};
}

#[derive(Clone, Debug)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    pub fn new(db: Db) -> Self {
        SqlStore { db }
    }
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn flow_by_request(
        &self,
        tenant: &str,
        request_id: Option<&str>,
    ) -> Result<Option<FlowRecord>> {
        let Some(rid) = request_id else {
            return Ok(None);
        };
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query("SELECT * FROM flows WHERE tenant = $1 AND request_id = $2")
                .bind(tenant)
                .bind(rid)
                .fetch_optional(pool)
                .await?
            {
                Some(r) => Some(flow_row!(&r)),
                None => None,
            }
        }))
    }

    async fn execution_by_request(
        &self,
        tenant: &str,
        request_id: Option<&str>,
    ) -> Result<Option<ExecutionRecord>> {
        let Some(rid) = request_id else {
            return Ok(None);
        };
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query(&format!(
                "SELECT {EXEC_COLS} FROM executions WHERE tenant = $1 AND request_id = $2"
            ))
            .bind(tenant)
            .bind(rid)
            .fetch_optional(pool)
            .await?
            {
                Some(r) => Some(exec_row!(&r)),
                None => None,
            }
        }))
    }
}

fn conflict() -> Error {
    Error::new(
        ErrorKind::Conflict,
        "the resource changed since it was read (etag mismatch)",
    )
}

/// A candidate for a claim.
struct Candidate {
    id: String,
    flow_id: String,
    client: String,
    state: String,
    ready_us: i64,
}

fn limit_or(v: i64, default: i64) -> i64 {
    if v > 0 {
        v
    } else {
        default
    }
}

#[async_trait]
impl OrchestratorStore for SqlStore {
    async fn create_flow(
        &self,
        flow: &FlowRecord,
        definition: &Value,
        schema_url: &str,
        request_id: Option<&str>,
    ) -> Result<FlowRecord> {
        if let Some(f) = self.flow_by_request(&flow.tenant, request_id).await? {
            return Ok(f);
        }
        let inserted = write_tx!(&self.db, |tx| {
            let res = sqlx::query(
                "INSERT INTO flows (tenant, flow_id, display_name, description, revision, draft_version, \
                 active_version, latest_version, request_id, create_us, update_us) \
                 VALUES ($1, $2, $3, $4, 1, 1, NULL, 1, $5, $6, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&flow.tenant)
            .bind(&flow.flow_id)
            .bind(&flow.display_name)
            .bind(&flow.description)
            .bind(request_id)
            .bind(flow.create_us)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                sqlx::query(
                    "INSERT INTO flow_versions (tenant, flow_id, version, state, definition, schema_url, revision, create_us, update_us) \
                     VALUES ($1, $2, 1, 'draft', $3, $4, 1, $5, $5)",
                )
                .bind(&flow.tenant)
                .bind(&flow.flow_id)
                .bind(to_text(definition))
                .bind(schema_url)
                .bind(flow.create_us)
                .execute(&mut *tx)
                .await?;
            }
            res.rows_affected() == 1
        });
        if !inserted {
            // A concurrent retry with the same request id got there first: it is this call's flow.
            if let Some(f) = self.flow_by_request(&flow.tenant, request_id).await? {
                return Ok(f);
            }
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("flow {} already exists", flow.flow_id),
            ));
        }
        self.get_flow(&flow.tenant, &flow.flow_id)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("created flow vanished")))
    }

    async fn get_flow(&self, tenant: &str, flow_id: &str) -> Result<Option<FlowRecord>> {
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query("SELECT * FROM flows WHERE tenant = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow_id)
                .fetch_optional(pool)
                .await?
            {
                Some(r) => Some(flow_row!(&r)),
                None => None,
            }
        }))
    }

    async fn list_flows(
        &self,
        tenant: &str,
        after: Option<(String, String)>,
        limit: i64,
        active_only: bool,
    ) -> Result<Vec<FlowRecord>> {
        let (a_name, a_id) = after.unwrap_or_default();
        let has_after = !a_id.is_empty();
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM flows WHERE tenant = $1 \
                 AND ($2 = 0 OR display_name > $3 OR (display_name = $3 AND flow_id > $4)) \
                 AND ($5 = 0 OR active_version IS NOT NULL) \
                 ORDER BY display_name, flow_id LIMIT $6",
            )
            .bind(tenant)
            .bind(i64::from(has_after))
            .bind(&a_name)
            .bind(&a_id)
            .bind(i64::from(active_only))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(flow_row!(r));
            }
            out
        }))
    }

    async fn update_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        meta: Option<(String, String)>,
        definition: Option<(Value, String)>,
        now: i64,
    ) -> Result<FlowRecord> {
        let outcome: std::result::Result<(), Error> = write_tx!(&self.db, |tx| {
            // Write first: takes the row lock (PostgreSQL) before reading the flow.
            let res = sqlx::query("UPDATE flows SET revision = revision + 1, update_us = $3 WHERE tenant = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if res.rows_affected() == 0 {
                return Err(Error::not_found(format!("flow {flow_id}")));
            }
            let r = sqlx::query("SELECT * FROM flows WHERE tenant = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow_id)
                .fetch_one(&mut *tx)
                .await?;
            let flow = flow_row!(&r);
            if let Some(exp) = expected_revision {
                if flow.revision - 1 != exp {
                    return Err(conflict());
                }
            }
            if let Some((name, desc)) = &meta {
                sqlx::query("UPDATE flows SET display_name = $3, description = $4 WHERE tenant = $1 AND flow_id = $2")
                    .bind(tenant)
                    .bind(flow_id)
                    .bind(name)
                    .bind(desc)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some((def, schema_url)) = &definition {
                match flow.draft_version {
                    Some(v) => {
                        sqlx::query(
                            "UPDATE flow_versions SET definition = $4, schema_url = $5, revision = revision + 1, update_us = $6 \
                             WHERE tenant = $1 AND flow_id = $2 AND version = $3 AND state = 'draft'",
                        )
                        .bind(tenant)
                        .bind(flow_id)
                        .bind(v)
                        .bind(to_text(def))
                        .bind(schema_url)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        let v = flow.latest_version + 1;
                        sqlx::query(
                            "INSERT INTO flow_versions (tenant, flow_id, version, state, definition, schema_url, revision, create_us, update_us) \
                             VALUES ($1, $2, $3, 'draft', $4, $5, 1, $6, $6)",
                        )
                        .bind(tenant)
                        .bind(flow_id)
                        .bind(v)
                        .bind(to_text(def))
                        .bind(schema_url)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("UPDATE flows SET draft_version = $3, latest_version = $3 WHERE tenant = $1 AND flow_id = $2")
                            .bind(tenant)
                            .bind(flow_id)
                            .bind(v)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            Ok(())
        });
        outcome?;
        self.get_flow(tenant, flow_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("flow {flow_id}")))
    }

    async fn delete_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        force: bool,
        now: i64,
    ) -> Result<()> {
        write_tx!(&self.db, |tx| {
            let res =
                sqlx::query("UPDATE flows SET update_us = $3 WHERE tenant = $1 AND flow_id = $2")
                    .bind(tenant)
                    .bind(flow_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            if res.rows_affected() == 0 {
                return Err(Error::not_found(format!("flow {flow_id}")));
            }
            let rev: i64 =
                sqlx::query_scalar("SELECT revision FROM flows WHERE tenant = $1 AND flow_id = $2")
                    .bind(tenant)
                    .bind(flow_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if expected_revision.is_some_and(|e| e != rev) {
                return Err(conflict());
            }
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM executions WHERE tenant = $1 AND flow_id = $2 AND state IN ('pending', 'running', 'waiting')",
            )
            .bind(tenant)
            .bind(flow_id)
            .fetch_one(&mut *tx)
            .await?;
            if live > 0 && !force {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!(
                        "{live} executions of the flow are still running; set force to cancel them"
                    ),
                ));
            }
            let err = ExecError {
                reason: "PRECONDITION_FAILED".into(),
                message: "cancelled: the flow was deleted".into(),
                step_id: String::new(),
                code: String::new(),
                details: None,
            };
            sqlx::query(
                "UPDATE executions SET state = 'cancelled', error = $3, end_us = $4, update_us = $4, lease_owner = '' \
                 WHERE tenant = $1 AND flow_id = $2 AND state IN ('pending', 'running', 'waiting')",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(to_text(&err))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for table in ["triggers", "flow_versions", "flows"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE tenant = $1 AND flow_id = $2"
                ))
                .bind(tenant)
                .bind(flow_id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }

    async fn get_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
    ) -> Result<Option<VersionRecord>> {
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query(
                "SELECT * FROM flow_versions WHERE tenant = $1 AND flow_id = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(version)
            .fetch_optional(pool)
            .await?
            {
                Some(r) => Some(version_row!(&r)),
                None => None,
            }
        }))
    }

    async fn list_versions(
        &self,
        tenant: &str,
        flow_id: &str,
        before: Option<i64>,
        limit: i64,
        state: Option<VersionState>,
    ) -> Result<Vec<VersionRecord>> {
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM flow_versions WHERE tenant = $1 AND flow_id = $2 AND version < $3 \
                 AND ($4 = '' OR state = $4) ORDER BY version DESC LIMIT $5",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(state.map(|s| s.as_str()).unwrap_or(""))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(version_row!(r));
            }
            out
        }))
    }

    async fn activate_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
        expected_revision: Option<i64>,
        by: &str,
        triggers: &[TriggerRecord],
        now: i64,
    ) -> Result<VersionRecord> {
        write_tx!(&self.db, |tx| {
            let res = sqlx::query("UPDATE flows SET revision = revision + 1, update_us = $3 WHERE tenant = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if res.rows_affected() == 0 {
                return Err(Error::not_found(format!("flow {flow_id}")));
            }
            let row = sqlx::query(
                "SELECT * FROM flow_versions WHERE tenant = $1 AND flow_id = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::not_found(format!("version {version}")));
            };
            let current = version_row!(&row);
            if expected_revision.is_some_and(|e| e != current.revision) {
                return Err(conflict());
            }
            if current.state != VersionState::Active {
                sqlx::query(
                    "UPDATE flow_versions SET state = 'retired', retire_us = $3, update_us = $3 \
                     WHERE tenant = $1 AND flow_id = $2 AND state = 'active'",
                )
                .bind(tenant)
                .bind(flow_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE flow_versions SET state = 'active', activate_us = $4, update_us = $4, activated_by = $5 \
                 WHERE tenant = $1 AND flow_id = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(version)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE flows SET active_version = $3, \
                 draft_version = CASE WHEN draft_version = $3 THEN NULL ELSE draft_version END \
                 WHERE tenant = $1 AND flow_id = $2",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM triggers WHERE tenant = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow_id)
                .execute(&mut *tx)
                .await?;
            for t in triggers {
                sqlx::query(
                    "INSERT INTO triggers (tenant, flow_id, trigger_id, version, kind, event_type, filter, schedule, time_zone, missed, next_fire_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(tenant)
                .bind(flow_id)
                .bind(&t.trigger_id)
                .bind(version)
                .bind(t.kind.as_str())
                .bind(&t.event_type)
                .bind(&t.filter)
                .bind(&t.schedule)
                .bind(&t.time_zone)
                .bind(&t.missed)
                .bind(t.next_fire_us)
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query(
                "SELECT * FROM flow_versions WHERE tenant = $1 AND flow_id = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
            Ok(version_row!(&row))
        })
    }

    async fn list_triggers(
        &self,
        tenant: &str,
        filter: &TriggerFilter,
        after: Option<(String, String)>,
        limit: i64,
    ) -> Result<Vec<TriggerRecord>> {
        let (a_flow, a_trig) = after.unwrap_or_default();
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM triggers WHERE tenant = $1 AND ($2 = '' OR flow_id = $2) AND ($3 = '' OR kind = $3) \
                 AND ($4 = '' OR event_type = $4) AND (flow_id > $5 OR (flow_id = $5 AND trigger_id > $6)) \
                 ORDER BY flow_id, trigger_id LIMIT $7",
            )
            .bind(tenant)
            .bind(filter.flow_id.as_deref().unwrap_or(""))
            .bind(filter.kind.map(|k| k.as_str()).unwrap_or(""))
            .bind(filter.event_type.as_deref().unwrap_or(""))
            .bind(&a_flow)
            .bind(&a_trig)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(trigger_row!(r));
            }
            out
        }))
    }

    async fn due_schedules(&self, now: i64, limit: i64) -> Result<Vec<TriggerRecord>> {
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query(
                "SELECT * FROM triggers WHERE kind = 'schedule' AND next_fire_us IS NOT NULL AND next_fire_us <= $1 \
                 ORDER BY next_fire_us LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(trigger_row!(r));
            }
            out
        }))
    }

    async fn create_execution(
        &self,
        new: &NewExecution,
        request_id: Option<&str>,
        max_pending: i64,
        now: i64,
    ) -> Result<(ExecutionRecord, bool)> {
        if let Some(e) = self.execution_by_request(&new.tenant, request_id).await? {
            return Ok((e, false));
        }
        let inserted: bool = write_tx!(&self.db, |tx| {
            lock_tenant!(tx, &new.tenant);
            if !insert_execution!(tx, new, request_id, now) {
                false
            } else {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM executions WHERE tenant = $1 AND state = 'pending'",
                )
                .bind(&new.tenant)
                .fetch_one(&mut *tx)
                .await?;
                if max_pending > 0 && pending > max_pending {
                    // Returning rolls the insert back.
                    return Err(Error::new(
                        ErrorKind::RateLimited,
                        "the tenant has too many pending executions",
                    )
                    .with_retry_after(std::time::Duration::from_secs(1)));
                }
                true
            }
        });
        if !inserted {
            // A concurrent retry with the same request id committed first: answer with its
            // execution, as a sequential retry would get.
            if let Some(e) = self.execution_by_request(&new.tenant, request_id).await? {
                return Ok((e, false));
            }
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("execution {} already exists", new.id),
            ));
        }
        let e = self
            .get_execution(&new.tenant, &new.id)
            .await?
            .ok_or_else(|| Error::not_found("execution"))?;
        Ok((e, true))
    }

    async fn get_execution(&self, tenant: &str, id: &str) -> Result<Option<ExecutionRecord>> {
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query(&format!(
                "SELECT {EXEC_COLS} FROM executions WHERE tenant = $1 AND id = $2"
            ))
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?
            {
                Some(r) => Some(exec_row!(&r)),
                None => None,
            }
        }))
    }

    async fn list_executions(
        &self,
        tenant: &str,
        f: &ExecutionFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>> {
        let has_after = after.is_some();
        let (a_us, a_id) = after.unwrap_or((0, String::new()));
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query(&format!(
                "SELECT {EXEC_COLS} FROM executions WHERE tenant = $1 \
                 AND ($2 = '' OR flow_id = $2) AND ($3 = '' OR state = $3) AND ($4 = '' OR client = $4) \
                 AND ($5 = '' OR trigger_kind = $5) AND ($6 = '' OR event_name = $6) \
                 AND create_us >= $7 AND create_us < $8 \
                 AND ($9 = 0 OR create_us < $10 OR (create_us = $10 AND id < $11)) \
                 ORDER BY create_us DESC, id DESC LIMIT $12"
            ))
            .bind(tenant)
            .bind(f.flow_id.as_deref().unwrap_or(""))
            .bind(f.state.map(|s| s.as_str()).unwrap_or(""))
            .bind(f.client.as_deref().unwrap_or(""))
            .bind(f.trigger_kind.map(|k| k.as_str()).unwrap_or(""))
            .bind(f.event.as_deref().unwrap_or(""))
            .bind(f.from_us.unwrap_or(i64::MIN))
            .bind(f.to_us.unwrap_or(i64::MAX))
            .bind(i64::from(has_after))
            .bind(a_us)
            .bind(&a_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(exec_row!(r));
            }
            out
        }))
    }

    async fn step_runs(&self, execution_id: &str) -> Result<Vec<StepRunRecord>> {
        Ok(on_db!(&self.db, |pool| {
            let rows = sqlx::query("SELECT * FROM step_runs WHERE execution_id = $1 ORDER BY seq")
                .bind(execution_id)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(step_row!(r));
            }
            out
        }))
    }

    async fn cancel_execution(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<ExecutionRecord> {
        let err = ExecError {
            reason: "PRECONDITION_FAILED".into(),
            message: if reason.is_empty() {
                "cancelled".to_owned()
            } else {
                format!("cancelled: {reason}")
            },
            step_id: String::new(),
            code: "CANCELLED".into(),
            details: None,
        };
        let changed: u64 = write_tx!(&self.db, |tx| {
            let res = sqlx::query(
                "UPDATE executions SET state = 'cancelled', error = $3, end_us = $4, update_us = $4, lease_owner = '' \
                 WHERE tenant = $1 AND id = $2 AND state IN ('pending', 'running', 'waiting')",
            )
            .bind(tenant)
            .bind(id)
            .bind(to_text(&err))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() > 0 {
                sqlx::query("UPDATE step_runs SET state = 'cancelled', end_us = $2 WHERE execution_id = $1 AND state IN ('running', 'waiting')")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            res.rows_affected()
        });
        let e = self
            .get_execution(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("execution {id}")))?;
        if changed == 0 {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "the execution has already finished",
            ));
        }
        Ok(e)
    }

    async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_us: i64,
        max: i64,
        caps: ClaimCaps,
    ) -> Result<Vec<ExecutionRecord>> {
        if max <= 0 {
            return Ok(Vec::new());
        }
        // Workers ask after every execution they finish, mostly to find nothing: one indexed
        // read answers that without the write and the global lock a claim takes. Work created
        // after this read announces itself (notify) or is found at the next poll.
        let runnable: Option<i64> = on_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT ready_us FROM executions WHERE state IN ('pending', 'waiting', 'running') \
                 AND ready_us <= $1 LIMIT 1",
            )
            .bind(now)
            .fetch_optional(pool)
            .await
        })?;
        if runnable.is_none() {
            return Ok(Vec::new());
        }
        let claimed: Vec<ExecutionRecord> = write_tx!(&self.db, |tx| {
            sqlx::query("UPDATE claim_lock SET n = n + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            // Who runs what now.
            let rows = sqlx::query(
                "SELECT tenant, flow_id, client, COUNT(*) AS n FROM executions WHERE state = 'running' GROUP BY tenant, flow_id, client",
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut global = 0i64;
            let mut per_tenant: HashMap<String, i64> = HashMap::new();
            let mut per_flow: HashMap<(String, String), i64> = HashMap::new();
            let mut per_client: HashMap<(String, String), i64> = HashMap::new();
            for r in &rows {
                let tenant: String = r.try_get("tenant")?;
                let flow: String = r.try_get("flow_id")?;
                let client: String = r.try_get("client")?;
                let n: i64 = r.try_get("n")?;
                global += n;
                *per_tenant.entry(tenant.clone()).or_default() += n;
                *per_flow.entry((tenant.clone(), flow)).or_default() += n;
                if !client.is_empty() {
                    *per_client.entry((tenant, client)).or_default() += n;
                }
            }
            // Expired leases first, whatever the caps: they are counted as running already and
            // need no new slot, so pending work queued behind them at a cap can never hide them.
            let mut chosen: Vec<(String, String, i64)> = Vec::new();
            for r in sqlx::query(
                "SELECT id, ready_us FROM executions WHERE state = 'running' AND ready_us <= $1 \
                 ORDER BY ready_us, id LIMIT $2",
            )
            .bind(now)
            .bind(max)
            .fetch_all(&mut *tx)
            .await?
            {
                chosen.push((
                    r.try_get("id")?,
                    "running".to_owned(),
                    r.try_get("ready_us")?,
                ));
            }
            let tenants: Vec<String> = if (chosen.len() as i64) < max {
                sqlx::query_scalar(
                    "SELECT DISTINCT tenant FROM executions WHERE state IN ('pending', 'waiting') AND ready_us <= $1",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            // Per tenant: its limits and its oldest runnable executions.
            let mut queues: Vec<(String, Limits, std::collections::VecDeque<Candidate>)> =
                Vec::new();
            for tenant in tenants {
                let lim = sqlx::query("SELECT * FROM concurrency_limits WHERE tenant = $1")
                    .bind(&tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                let stored = match lim {
                    Some(r) => Limits {
                        max_running: r.try_get("max_running")?,
                        max_running_per_flow: r.try_get("max_running_per_flow")?,
                        max_running_per_client: r.try_get("max_running_per_client")?,
                        max_pending: r.try_get("max_pending")?,
                    },
                    None => Limits::default(),
                };
                let d = caps.defaults;
                let limits = Limits {
                    max_running: limit_or(stored.max_running, d.max_running),
                    max_running_per_flow: limit_or(
                        stored.max_running_per_flow,
                        d.max_running_per_flow,
                    ),
                    max_running_per_client: limit_or(
                        stored.max_running_per_client,
                        d.max_running_per_client,
                    ),
                    max_pending: limit_or(stored.max_pending, d.max_pending),
                };
                let rows = sqlx::query(
                    "SELECT id, flow_id, client, state, ready_us FROM executions WHERE tenant = $1 \
                     AND state IN ('pending', 'waiting') AND ready_us <= $2 ORDER BY ready_us, id LIMIT $3",
                )
                .bind(&tenant)
                .bind(now)
                .bind(max * 4)
                .fetch_all(&mut *tx)
                .await?;
                let mut q = std::collections::VecDeque::new();
                for r in &rows {
                    q.push_back(Candidate {
                        id: r.try_get("id")?,
                        flow_id: r.try_get("flow_id")?,
                        client: r.try_get("client")?,
                        state: r.try_get("state")?,
                        ready_us: r.try_get("ready_us")?,
                    });
                }
                queues.push((tenant, limits, q));
            }
            while (chosen.len() as i64) < max {
                // Fairness: the tenant running fewest goes first; ties go to the oldest work.
                let pick = queues
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, _, q))| !q.is_empty())
                    .min_by_key(|(_, (t, _, q))| {
                        (
                            per_tenant.get(t).copied().unwrap_or(0),
                            q.front().map(|c| c.ready_us).unwrap_or(i64::MAX),
                        )
                    })
                    .map(|(i, _)| i);
                let Some(i) = pick else { break };
                let (tenant, limits, q) = &mut queues[i];
                let Some(c) = q.pop_front() else { continue };
                // Every candidate here needs a new slot (expired leases were taken above).
                let t_run = per_tenant.get(tenant.as_str()).copied().unwrap_or(0);
                if global >= caps.global_running {
                    break;
                }
                if t_run >= limits.max_running {
                    q.clear();
                    continue;
                }
                let f_key = (tenant.clone(), c.flow_id.clone());
                if per_flow.get(&f_key).copied().unwrap_or(0) >= limits.max_running_per_flow {
                    continue;
                }
                let c_key = (tenant.clone(), c.client.clone());
                if !c.client.is_empty()
                    && per_client.get(&c_key).copied().unwrap_or(0) >= limits.max_running_per_client
                {
                    continue;
                }
                global += 1;
                *per_tenant.entry(tenant.clone()).or_default() += 1;
                *per_flow.entry(f_key).or_default() += 1;
                if !c.client.is_empty() {
                    *per_client.entry(c_key).or_default() += 1;
                }
                chosen.push((c.id, c.state, c.ready_us));
            }
            // RETURNING hands back the claimed rows in the same statement: no read per claim.
            let mut claimed = Vec::with_capacity(chosen.len());
            for (id, state, ready) in chosen {
                let row = sqlx::query(&format!(
                    "UPDATE executions SET state = 'running', lease_owner = $2, ready_us = $3, \
                     start_us = COALESCE(start_us, $4), update_us = $4 WHERE id = $1 AND state = $5 AND ready_us = $6 \
                     RETURNING {EXEC_COLS}"
                ))
                .bind(&id)
                .bind(worker)
                .bind(now + lease_us)
                .bind(now)
                .bind(&state)
                .bind(ready)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(r) = row {
                    claimed.push(exec_row!(&r));
                }
            }
            claimed
        });
        Ok(claimed)
    }

    async fn renew(&self, id: &str, worker: &str, now: i64, lease_us: i64) -> Result<bool> {
        let n = on_db!(&self.db, |pool| {
            sqlx::query("UPDATE executions SET ready_us = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'")
                .bind(id)
                .bind(worker)
                .bind(now + lease_us)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    async fn checkpoint(
        &self,
        id: &str,
        worker: &str,
        cp: &Checkpoint,
        now: i64,
        lease_us: i64,
    ) -> Result<bool> {
        let n = on_db!(&self.db, |pool| {
            bind_checkpoint!(sqlx::query(CHECKPOINT), id, worker, cp, now, lease_us)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    async fn start_step(
        &self,
        id: &str,
        worker: &str,
        run: &NewStepRun,
        now: i64,
        lease_us: i64,
    ) -> Result<Option<i64>> {
        Ok(write_tx!(&self.db, |tx| {
            let seq: Option<i64> = sqlx::query_scalar(concat!(
                "UPDATE executions SET next_seq = next_seq + 1, ",
                kept_lease!("$3", "$4", "$5"),
                " WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING next_seq"
            ))
            .bind(id)
            .bind(worker)
            .bind(now + lease_us)
            .bind(now)
            .bind(lease_us / 2)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(seq) = seq {
                bind_step_run!(sqlx::query(INSERT_STEP_RUN), id, seq, run, None, now)
                    .execute(&mut *tx)
                    .await?;
            }
            seq
        }))
    }

    async fn finish_step(&self, id: &str, seq: i64, end: &StepEnd, now: i64) -> Result<()> {
        on_db!(&self.db, |pool| {
            bind_finish_step!(sqlx::query(FINISH_STEP), id, seq, end, now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn write_boundary(
        &self,
        id: &str,
        worker: &str,
        before: Option<&StepWrite>,
        cp: &Checkpoint,
        start: Option<&NewStepRun>,
        now: i64,
        lease_us: i64,
    ) -> Result<Option<i64>> {
        let recorded = i64::from(matches!(before, Some(StepWrite::Record(..))));
        let started = i64::from(start.is_some());
        Ok(write_tx!(&self.db, |tx| {
            // The lease-checked boundary first: when it matches no row, nothing else is written.
            let last: Option<i64> = bind_checkpoint!(
                sqlx::query_scalar(CHECKPOINT_TAKE_SEQS),
                id,
                worker,
                cp,
                now,
                lease_us
            )
            .bind(recorded + started)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(last) = last {
                match before {
                    Some(StepWrite::Record(done, end)) => {
                        let seq = last - started;
                        bind_step_run!(sqlx::query(INSERT_STEP_RUN), id, seq, done, Some(end), now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some(StepWrite::Finish(seq, end)) => {
                        bind_finish_step!(sqlx::query(FINISH_STEP), id, *seq, end, now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    None => {}
                }
                if let Some(run) = start {
                    bind_step_run!(sqlx::query(INSERT_STEP_RUN), id, last, run, None, now)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            last
        }))
    }

    async fn get_limits(&self, tenant: &str) -> Result<Option<LimitsRecord>> {
        Ok(on_db!(&self.db, |pool| {
            match sqlx::query("SELECT * FROM concurrency_limits WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(pool)
                .await?
            {
                Some(r) => Some(LimitsRecord {
                    limits: Limits {
                        max_running: r.try_get("max_running")?,
                        max_running_per_flow: r.try_get("max_running_per_flow")?,
                        max_running_per_client: r.try_get("max_running_per_client")?,
                        max_pending: r.try_get("max_pending")?,
                    },
                    revision: r.try_get("revision")?,
                    update_us: r.try_get("update_us")?,
                }),
                None => None,
            }
        }))
    }

    async fn put_limits(
        &self,
        tenant: &str,
        limits: Limits,
        expected_revision: Option<i64>,
        now: i64,
    ) -> Result<LimitsRecord> {
        let outcome: std::result::Result<(), Error> = write_tx!(&self.db, |tx| {
            sqlx::query(
                "INSERT INTO concurrency_limits (tenant, max_running, max_running_per_flow, max_running_per_client, max_pending, revision, update_us) \
                 VALUES ($1, 0, 0, 0, 0, 0, $2) ON CONFLICT (tenant) DO UPDATE SET update_us = $2",
            )
            .bind(tenant)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let rev: i64 =
                sqlx::query_scalar("SELECT revision FROM concurrency_limits WHERE tenant = $1")
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?;
            if expected_revision.is_some_and(|e| e != rev) {
                return Err(conflict());
            }
            sqlx::query(
                "UPDATE concurrency_limits SET max_running = $2, max_running_per_flow = $3, max_running_per_client = $4, \
                 max_pending = $5, revision = revision + 1 WHERE tenant = $1",
            )
            .bind(tenant)
            .bind(limits.max_running)
            .bind(limits.max_running_per_flow)
            .bind(limits.max_running_per_client)
            .bind(limits.max_pending)
            .execute(&mut *tx)
            .await?;
            Ok(())
        });
        outcome?;
        self.get_limits(tenant)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("limits vanished")))
    }

    async fn consume_event(
        &self,
        source: &str,
        event_id: &str,
        tenant: &str,
        executions: &[NewExecution],
        max_pending: i64,
        now: i64,
    ) -> Result<Option<Vec<String>>> {
        const COUNT_PENDING: &str =
            "SELECT COUNT(*) FROM executions WHERE tenant = $1 AND state = 'pending'";
        Ok(write_tx!(&self.db, |tx| {
            let res = sqlx::query(
                "INSERT INTO consumed_events (tenant, source, event_id, consumed_us) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(source)
            .bind(event_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                None
            } else {
                let mut pending: i64 = sqlx::query_scalar(COUNT_PENDING)
                    .bind(tenant)
                    .fetch_one(&mut *tx)
                    .await?;
                // Far below the pending cap the count needs no lock: the transactions racing
                // this one (at most one per pooled connection, each adding one event's
                // executions) cannot carry the tenant past the cap from there. Near the cap the
                // tenant's lock serializes them so that the count is exact; taking it always
                // would put every event of a tenant through one commit at a time.
                let near_cap = max_pending > 0
                    && pending + executions.len() as i64 + UNLOCKED_PENDING_MARGIN > max_pending;
                if near_cap {
                    lock_tenant!(tx, tenant);
                    pending = sqlx::query_scalar(COUNT_PENDING)
                        .bind(tenant)
                        .fetch_one(&mut *tx)
                        .await?;
                }
                let mut started = Vec::new();
                for n in executions {
                    if max_pending > 0 && pending >= max_pending {
                        // Dropped and counted: a trigger cannot be refused to a caller.
                        metrics::counter!(crate::metrics::EXECUTIONS_DROPPED_TOTAL).increment(1);
                        continue;
                    }
                    if insert_execution!(tx, n, None::<&str>, now) {
                        pending += 1;
                        started.push(n.id.clone());
                    }
                }
                Some(started)
            }
        }))
    }

    async fn fire_schedule(
        &self,
        t: &TriggerRecord,
        slot_us: i64,
        next_fire_us: Option<i64>,
        execution: Option<&NewExecution>,
        now: i64,
    ) -> Result<bool> {
        self.fire_schedule_slot(t, slot_us, next_fire_us, execution, 0, now)
            .await
    }

    async fn fire_schedule_slot(
        &self,
        t: &TriggerRecord,
        slot_us: i64,
        next_fire_us: Option<i64>,
        execution: Option<&NewExecution>,
        max_pending: i64,
        now: i64,
    ) -> Result<bool> {
        Ok(write_tx!(&self.db, |tx| {
            // Write first: locks the trigger row (PostgreSQL) against a concurrent activation or
            // deletion, and matches only while the trigger still belongs to the version read.
            let current = sqlx::query(
                "UPDATE triggers SET version = version WHERE tenant = $1 AND flow_id = $2 AND trigger_id = $3 \
                 AND version = $4 AND kind = 'schedule'",
            )
            .bind(&t.tenant)
            .bind(&t.flow_id)
            .bind(&t.trigger_id)
            .bind(t.version)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !current {
                false
            } else {
                // Only forward: a slower replica must not move the trigger back.
                sqlx::query(
                    "UPDATE triggers SET next_fire_us = $4 WHERE tenant = $1 AND flow_id = $2 AND trigger_id = $3 \
                     AND (next_fire_us IS NULL OR $4 IS NULL OR next_fire_us < $4)",
                )
                .bind(&t.tenant)
                .bind(&t.flow_id)
                .bind(&t.trigger_id)
                .bind(next_fire_us)
                .execute(&mut *tx)
                .await?;
                let res = sqlx::query(
                    "INSERT INTO schedule_fires (tenant, flow_id, trigger_id, slot_us, fired_us) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&t.tenant)
                .bind(&t.flow_id)
                .bind(&t.trigger_id)
                .bind(slot_us)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let mut fired = res.rows_affected() == 1;
                if let (true, Some(n)) = (fired, execution) {
                    lock_tenant!(tx, &t.tenant);
                    let pending: i64 = if max_pending > 0 {
                        sqlx::query_scalar(
                            "SELECT COUNT(*) FROM executions WHERE tenant = $1 AND state = 'pending'",
                        )
                        .bind(&t.tenant)
                        .fetch_one(&mut *tx)
                        .await?
                    } else {
                        0
                    };
                    if max_pending > 0 && pending >= max_pending {
                        // The slot counts as fired (no replica fires it later) but starts
                        // nothing, as an event over the cap does.
                        metrics::counter!(crate::metrics::EXECUTIONS_DROPPED_TOTAL).increment(1);
                        fired = false;
                    } else {
                        fired = insert_execution!(tx, n, None::<&str>, now);
                    }
                }
                fired
            }
        }))
    }

    async fn release_leases(&self, worker: &str, id: Option<&str>, now: i64) -> Result<u64> {
        // ready_us = now: claimable at once, through the expired-lease path of `claim`.
        Ok(on_db!(&self.db, |pool| {
            match id {
                Some(id) => sqlx::query(
                    "UPDATE executions SET ready_us = $3, lease_owner = '', update_us = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
                )
                .bind(id)
                .bind(worker)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected(),
                None => sqlx::query(
                    "UPDATE executions SET ready_us = $2, lease_owner = '', update_us = $2 \
                     WHERE lease_owner = $1 AND state = 'running'",
                )
                .bind(worker)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected(),
            }
        }))
    }

    async fn purge_dedupe(&self, before_us: i64) -> Result<u64> {
        Ok(write_tx!(&self.db, |tx| {
            let events = sqlx::query("DELETE FROM consumed_events WHERE consumed_us < $1")
                .bind(before_us)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let slots = sqlx::query("DELETE FROM schedule_fires WHERE fired_us < $1")
                .bind(before_us)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            events + slots
        }))
    }
}
