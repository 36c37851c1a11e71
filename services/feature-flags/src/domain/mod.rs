//! Flags as the service understands them, parsed from requests once (newtypes), and the pure
//! evaluation rules. No IO here.
mod evaluate;
mod model;

pub use evaluate::{
    bucket, evaluate, CompiledFlag, Context, Evaluation, Reason, Snapshot, MAX_PREREQUISITE_DEPTH,
};
pub use model::{
    etag, revision_of, AllowlistKind, EnvName, EnvironmentState, Flag, FlagKey, RolloutUnit, Stage,
    MAX_BASIS_POINTS,
};
