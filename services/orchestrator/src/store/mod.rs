//! Persistence: flows, versions, live triggers, executions with their step runs and leases,
//! concurrency limits, consumed event ids and fired schedule slots. One trait; one SQL
//! implementation for PostgreSQL and SQLite (same statements), checked by one conformance suite
//! (compiled only for tests and with the `conformance` feature, never into the binary).
#[cfg(any(test, feature = "conformance"))]
#[doc(hidden)]
pub mod conformance;
mod sql;

use async_trait::async_trait;
use maxai_kit::Result;
use serde_json::Value;

use crate::domain::{
    ExecError, ExecState, StepKind, StepState, TriggerInfo, TriggerKind, VersionState,
};

pub use sql::SqlStore;

#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub tenant: String,
    pub flow_id: String,
    pub display_name: String,
    pub description: String,
    pub revision: i64,
    pub draft_version: Option<i64>,
    pub active_version: Option<i64>,
    pub latest_version: i64,
    pub create_us: i64,
    pub update_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub tenant: String,
    pub flow_id: String,
    pub version: i64,
    pub state: VersionState,
    pub definition: Value,
    pub schema_url: String,
    pub revision: i64,
    pub create_us: i64,
    pub update_us: i64,
    pub activate_us: Option<i64>,
    pub retire_us: Option<i64>,
    pub activated_by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    pub tenant: String,
    pub flow_id: String,
    pub trigger_id: String,
    pub version: i64,
    pub kind: TriggerKind,
    pub event_type: String,
    pub filter: String,
    pub schedule: String,
    pub time_zone: String,
    pub missed: String,
    pub next_fire_us: Option<i64>,
}

/// An execution to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    pub id: String,
    pub tenant: String,
    pub flow_id: String,
    pub version: i64,
    pub trigger: TriggerInfo,
    pub client: String,
    pub input: Value,
    pub rerun_of: String,
    /// Starting context (`vars`, `steps`) — a rerun from the failed step carries the outputs.
    pub ctx: Value,
    /// First step to run; `None` starts at the first.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub id: String,
    pub tenant: String,
    pub flow_id: String,
    pub version: i64,
    pub state: ExecState,
    pub trigger: TriggerInfo,
    pub client: String,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<ExecError>,
    pub rerun_of: String,
    pub cursor: Option<String>,
    pub ctx: Value,
    pub handling: bool,
    pub ready_us: i64,
    pub lease_owner: String,
    pub create_us: i64,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    pub update_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRunRecord {
    pub execution_id: String,
    pub seq: i64,
    pub step_id: String,
    pub kind: StepKind,
    pub attempt: i64,
    pub state: StepState,
    pub iteration: Vec<i32>,
    pub method: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub error: Option<ExecError>,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub resume_us: Option<i64>,
}

/// A tenant's limits as stored; 0 means the platform default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_running: i64,
    pub max_running_per_flow: i64,
    pub max_running_per_client: i64,
    pub max_pending: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsRecord {
    pub limits: Limits,
    pub revision: i64,
    pub update_us: i64,
}

/// Platform-wide caps a claim respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimCaps {
    /// RUNNING executions across every tenant.
    pub global_running: i64,
    /// Defaults for a tenant's limits left at 0.
    pub defaults: Limits,
}

#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub flow_id: Option<String>,
    pub state: Option<ExecState>,
    pub client: Option<String>,
    pub trigger_kind: Option<TriggerKind>,
    pub event: Option<String>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TriggerFilter {
    pub flow_id: Option<String>,
    pub kind: Option<TriggerKind>,
    pub event_type: Option<String>,
}

/// What a worker writes at a step boundary (only while it holds the lease).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub state: ExecState,
    pub cursor: Option<String>,
    pub ctx: Value,
    pub handling: bool,
    /// For WAITING: when to wake up.
    pub wake_us: Option<i64>,
    pub output: Option<Value>,
    pub error: Option<ExecError>,
}

/// A step attempt being started.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStepRun {
    pub step_id: String,
    pub kind: StepKind,
    pub attempt: i64,
    pub iteration: Vec<i32>,
    pub method: String,
    pub input: Option<Value>,
}

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEnd {
    pub state: StepState,
    pub output: Option<Value>,
    pub error: Option<ExecError>,
    pub resume_us: Option<i64>,
}

/// A step's end not yet written, carried into the next step boundary's transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum StepWrite {
    /// A step that started and ended at once (condition, set, fail): its whole run.
    Record(NewStepRun, StepEnd),
    /// The end of step run `seq`, whose start is stored already.
    Finish(i64, StepEnd),
}

#[async_trait]
pub trait OrchestratorStore: Send + Sync + 'static {
    // ---- flows and versions
    /// Creates a flow with version 1 as its draft. A reused `request_id` returns that flow.
    async fn create_flow(
        &self,
        flow: &FlowRecord,
        definition: &Value,
        schema_url: &str,
        request_id: Option<&str>,
    ) -> Result<FlowRecord>;
    async fn get_flow(&self, tenant: &str, flow_id: &str) -> Result<Option<FlowRecord>>;
    /// Flows ordered by (display name, id) after the key `after` (`display\nid`).
    async fn list_flows(
        &self,
        tenant: &str,
        after: Option<(String, String)>,
        limit: i64,
        active_only: bool,
    ) -> Result<Vec<FlowRecord>>;
    /// Updates metadata and, with a definition, the draft (created from it when none exists).
    async fn update_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        meta: Option<(String, String)>,
        definition: Option<(Value, String)>,
        now: i64,
    ) -> Result<FlowRecord>;
    /// Refused (`PreconditionFailed`) while executions run, unless `force` cancels them.
    async fn delete_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        expected_revision: Option<i64>,
        force: bool,
        now: i64,
    ) -> Result<()>;
    async fn get_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
    ) -> Result<Option<VersionRecord>>;
    /// Newest first, versions below `before` when given.
    async fn list_versions(
        &self,
        tenant: &str,
        flow_id: &str,
        before: Option<i64>,
        limit: i64,
        state: Option<VersionState>,
    ) -> Result<Vec<VersionRecord>>;
    /// Makes `version` active (the previous active one retires) and replaces the flow's triggers.
    #[allow(clippy::too_many_arguments)]
    async fn activate_version(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
        expected_revision: Option<i64>,
        by: &str,
        triggers: &[TriggerRecord],
        now: i64,
    ) -> Result<VersionRecord>;
    async fn list_triggers(
        &self,
        tenant: &str,
        filter: &TriggerFilter,
        after: Option<(String, String)>,
        limit: i64,
    ) -> Result<Vec<TriggerRecord>>;
    /// Schedule triggers due at `now` (every tenant).
    async fn due_schedules(&self, now: i64, limit: i64) -> Result<Vec<TriggerRecord>>;

    // ---- executions
    /// Creates a PENDING execution; `RateLimited` when the tenant already has `max_pending`.
    /// A reused `request_id` returns that execution and `false`.
    async fn create_execution(
        &self,
        new: &NewExecution,
        request_id: Option<&str>,
        max_pending: i64,
        now: i64,
    ) -> Result<(ExecutionRecord, bool)>;
    async fn get_execution(&self, tenant: &str, id: &str) -> Result<Option<ExecutionRecord>>;
    /// Newest first after the key `after` (`create_us\nid`).
    async fn list_executions(
        &self,
        tenant: &str,
        filter: &ExecutionFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>>;
    async fn step_runs(&self, execution_id: &str) -> Result<Vec<StepRunRecord>>;
    /// `PreconditionFailed` when finished.
    async fn cancel_execution(
        &self,
        tenant: &str,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<ExecutionRecord>;
    /// Claims up to `max` runnable executions for `worker`, fairly across tenants (fewest
    /// running first), within every concurrency cap; leases end at `now + lease_us`.
    async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_us: i64,
        max: i64,
        caps: ClaimCaps,
    ) -> Result<Vec<ExecutionRecord>>;
    /// Extends the lease; `false` when it is lost (expired and taken, or cancelled).
    async fn renew(&self, id: &str, worker: &str, now: i64, lease_us: i64) -> Result<bool>;
    /// Writes a step boundary; `false` when the lease is lost (nothing written).
    async fn checkpoint(
        &self,
        id: &str,
        worker: &str,
        cp: &Checkpoint,
        now: i64,
        lease_us: i64,
    ) -> Result<bool>;
    /// Records a step attempt's start (renewing the lease); `None` when the lease is lost.
    async fn start_step(
        &self,
        id: &str,
        worker: &str,
        run: &NewStepRun,
        now: i64,
        lease_us: i64,
    ) -> Result<Option<i64>>;
    async fn finish_step(&self, id: &str, seq: i64, end: &StepEnd, now: i64) -> Result<()>;

    // ---- limits
    async fn get_limits(&self, tenant: &str) -> Result<Option<LimitsRecord>>;
    async fn put_limits(
        &self,
        tenant: &str,
        limits: Limits,
        expected_revision: Option<i64>,
        now: i64,
    ) -> Result<LimitsRecord>;

    // ---- triggers firing
    /// Records event `(tenant, source, id)` and creates `executions` in one transaction; `None`
    /// (and nothing created) when the tenant consumed that event before.
    async fn consume_event(
        &self,
        source: &str,
        event_id: &str,
        tenant: &str,
        executions: &[NewExecution],
        max_pending: i64,
        now: i64,
    ) -> Result<Option<Vec<String>>>;
    /// [`fire_schedule_slot`](Self::fire_schedule_slot) without a pending cap.
    async fn fire_schedule(
        &self,
        trigger: &TriggerRecord,
        slot_us: i64,
        next_fire_us: Option<i64>,
        execution: Option<&NewExecution>,
        now: i64,
    ) -> Result<bool>;

    /// One step boundary in one transaction: the last step's end not yet written (`before`:
    /// a whole instant step, or the end of a started run), the checkpoint `cp`, and — when the
    /// next step is a port call — that call's attempt recorded as started (`start`, the lease
    /// renewed as [`start_step`](Self::start_step) does). A recorded step takes a seq of its
    /// own, before the started one. Returns the last seq taken (the started run's when there is
    /// one); `None`, with nothing written, when the lease is lost.
    #[allow(clippy::too_many_arguments)]
    async fn write_boundary(
        &self,
        id: &str,
        worker: &str,
        before: Option<&StepWrite>,
        cp: &Checkpoint,
        start: Option<&NewStepRun>,
        now: i64,
        lease_us: i64,
    ) -> Result<Option<i64>>;

    // The methods below have defaults so that wrappers written against the first version of
    // this trait (the bench's timing store) keep compiling; SqlStore implements all of them.

    /// Fires one slot of a schedule trigger: records (trigger, slot) and creates `execution`;
    /// `false` when another replica fired that slot already, when the trigger is gone or now
    /// belongs to another version (re-activated or deleted since it was read), or when the
    /// tenant has `max_pending` (> 0) pending executions (the slot is dropped and counted).
    /// Moves `next_fire_us` forward unless the trigger is gone or stale. The default ignores
    /// `max_pending`.
    async fn fire_schedule_slot(
        &self,
        trigger: &TriggerRecord,
        slot_us: i64,
        next_fire_us: Option<i64>,
        execution: Option<&NewExecution>,
        max_pending: i64,
        now: i64,
    ) -> Result<bool> {
        let _ = max_pending;
        self.fire_schedule(trigger, slot_us, next_fire_us, execution, now)
            .await
    }

    /// Gives up `worker`'s leases — every one, or only execution `id` — so another replica can
    /// claim them at once instead of after expiry; returns how many. The default releases
    /// nothing (the leases expire).
    async fn release_leases(&self, worker: &str, id: Option<&str>, now: i64) -> Result<u64> {
        let _ = (worker, id, now);
        Ok(0)
    }

    /// Forgets consumed event ids and fired schedule slots recorded before `before_us`;
    /// returns how many rows went. The default keeps everything.
    async fn purge_dedupe(&self, before_us: i64) -> Result<u64> {
        let _ = before_us;
        Ok(0)
    }
}
