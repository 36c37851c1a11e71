//! Metric names.
pub const EXECUTIONS_STARTED_TOTAL: &str = "orchestrator_executions_started_total";
pub const EXECUTIONS_FINISHED_TOTAL: &str = "orchestrator_executions_finished_total";
/// Trigger firings dropped because the tenant had too many pending executions.
pub const EXECUTIONS_DROPPED_TOTAL: &str = "orchestrator_executions_dropped_total";
pub const PORT_CALLS_TOTAL: &str = "orchestrator_port_calls_total";
pub const EVENTS_CONSUMED_TOTAL: &str = "orchestrator_events_consumed_total";
pub const SCHEDULE_FIRES_TOTAL: &str = "orchestrator_schedule_fires_total";
