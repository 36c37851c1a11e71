//! `[orchestrator]` settings with documented defaults; unknown keys are refused.
use serde::Deserialize;

/// `[orchestrator]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Worker tasks this replica runs (each claims and runs executions).
    pub workers: usize,
    /// Executions one worker runs at once.
    pub executions_per_worker: usize,
    /// How long a claim lasts without renewal; a killed worker's executions are taken over
    /// after it. Renewed at every step boundary and while a port call is in flight.
    pub lease_ms: u64,
    /// Idle workers look for runnable executions this often (RunFlow and events wake them sooner).
    pub poll_ms: u64,
    /// Running executions across every tenant of this platform.
    pub global_max_running: i64,
    /// Defaults for a tenant's limits left at 0.
    pub default_max_running: i64,
    pub default_max_running_per_flow: i64,
    pub default_max_running_per_client: i64,
    pub default_max_pending: i64,
    /// Ceiling for a tenant's own limits (UpdateConcurrencyLimits refuses more).
    pub max_limit: i64,
    /// Port call timeout when a step sets none.
    pub default_step_timeout_ms: u64,
    /// Steps one execution may run before it is failed (guards against runaway flows).
    pub max_steps_per_execution: u32,
    /// Largest port response accepted.
    pub max_message_bytes: usize,
    /// How often the scheduler looks for due schedule triggers.
    pub schedule_tick_ms: u64,
    /// Most missed slots one catch-up fires.
    pub max_catch_up_slots: u32,
    /// At shutdown, how long running executions get to reach their next step boundary; then
    /// the rest are stopped and every lease is released so another replica resumes at once.
    pub drain_ms: u64,
    /// Consumed event ids and fired schedule slots are remembered this long. Keep it above the
    /// webhook dispatcher's redelivery window (retries and dead-letter replays), or a late
    /// redelivery starts the flows again.
    pub dedupe_retention_secs: u64,
    /// How often the scheduler loop purges older dedupe records.
    pub dedupe_purge_every_secs: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            // Sizing (Little's law: throughput = executions in flight / time per execution).
            // An execution spends nearly all its time waiting on commits and port calls, and a
            // running one costs a task and a few KB, so slots are cheap; the old 16 per flow
            // capped an instant three-step flow at ~160/s on PostgreSQL. 256 per tenant (and
            // per flow and client) still leaves most of the 1,024 global slots to other tenants
            // (fairness across tenants stays the claim's job); the store pool, not these caps,
            // is what bounds a replica now.
            workers: 2,
            executions_per_worker: 256,
            lease_ms: 30_000,
            poll_ms: 500,
            global_max_running: 1_024,
            default_max_running: 256,
            default_max_running_per_flow: 256,
            default_max_running_per_client: 256,
            default_max_pending: 10_000,
            max_limit: 1_000,
            default_step_timeout_ms: 20_000,
            max_steps_per_execution: 10_000,
            max_message_bytes: 4 << 20,
            schedule_tick_ms: 1_000,
            max_catch_up_slots: 100,
            drain_ms: 10_000,
            dedupe_retention_secs: 7 * 24 * 3600,
            dedupe_purge_every_secs: 900,
        }
    }
}
