//! Metric names of the feature-flags service (RPC metrics come from the kit).
pub const EVALUATIONS_TOTAL: &str = "maxai_flags_evaluations_total";
pub const SNAPSHOT_FLAGS: &str = "maxai_flags_snapshot_flags";
pub const SNAPSHOT_RELOADS_TOTAL: &str = "maxai_flags_snapshot_reloads_total";
