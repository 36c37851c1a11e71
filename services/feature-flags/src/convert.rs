//! proto ⇄ domain. Every proto message is destructured without `..`, so a new field breaks the
//! build here until someone decides what it means.
use maxai_kit::error::Violations;
use maxai_proto::maxai::flags::v1 as pb;

use crate::domain::{
    self, AllowlistKind, EnvName, EnvironmentState, Flag, FlagKey, Reason, RolloutUnit, Stage,
    MAX_BASIS_POINTS,
};

pub use maxai_kit::resource::timestamp;

pub fn stage_to_pb(s: Stage) -> pb::Stage {
    match s {
        Stage::Alpha => pb::Stage::Alpha,
        Stage::Beta => pb::Stage::Beta,
        Stage::Ga => pb::Stage::Ga,
    }
}

pub fn stage_from_pb(raw: i32) -> Option<Stage> {
    match pb::Stage::try_from(raw).ok()? {
        pb::Stage::Unspecified => None,
        pb::Stage::Alpha => Some(Stage::Alpha),
        pb::Stage::Beta => Some(Stage::Beta),
        pb::Stage::Ga => Some(Stage::Ga),
    }
}

pub fn kind_from_pb(raw: i32) -> Option<AllowlistKind> {
    match pb::AllowlistKind::try_from(raw).ok()? {
        pb::AllowlistKind::Unspecified => None,
        pb::AllowlistKind::Tenant => Some(AllowlistKind::Tenant),
        pb::AllowlistKind::User => Some(AllowlistKind::User),
    }
}

pub fn flag_to_pb(f: &Flag) -> pb::Flag {
    let Flag {
        key,
        description,
        stage,
        environments,
        prerequisites,
        revision: _,
        created_at_us,
        updated_at_us,
    } = f;
    pb::Flag {
        name: key.name(),
        description: description.clone(),
        stage: stage_to_pb(*stage) as i32,
        environments: environments
            .iter()
            .map(|e| {
                let EnvironmentState {
                    environment,
                    enabled,
                    rollout_basis_points,
                    rollout_unit,
                } = e;
                pb::EnvironmentState {
                    environment: environment.as_str().to_owned(),
                    enabled: *enabled,
                    rollout_basis_points: *rollout_basis_points,
                    rollout_unit: match rollout_unit {
                        RolloutUnit::Tenant => pb::RolloutUnit::Tenant,
                        RolloutUnit::User => pb::RolloutUnit::User,
                    } as i32,
                }
            })
            .collect(),
        prerequisites: prerequisites.iter().map(|p| p.to_string()).collect(),
        etag: f.etag(),
        create_time: Some(timestamp(*created_at_us)),
        update_time: Some(timestamp(*updated_at_us)),
    }
}

/// The mutable fields of a proto flag, validated; `prefix` is the request field holding it.
pub struct FlagFields {
    pub description: String,
    pub stage: Stage,
    pub environments: Vec<EnvironmentState>,
    pub prerequisites: Vec<FlagKey>,
}

pub fn flag_fields(f: &pb::Flag, prefix: &str, v: &mut Violations) -> FlagFields {
    let pb::Flag {
        name: _,
        description,
        stage,
        environments,
        prerequisites,
        etag: _,
        create_time: _,
        update_time: _,
    } = f;
    v.check(
        description.len() <= 1024,
        format!("{prefix}.description"),
        "must be at most 1024 bytes",
    );
    let stage = stage_from_pb(*stage).unwrap_or_else(|| {
        v.add(
            format!("{prefix}.stage"),
            "must be STAGE_ALPHA, STAGE_BETA or STAGE_GA",
        );
        Stage::Alpha
    });
    let mut envs = Vec::new();
    for (i, e) in environments.iter().enumerate() {
        let pb::EnvironmentState {
            environment,
            enabled,
            rollout_basis_points,
            rollout_unit,
        } = e;
        let field = format!("{prefix}.environments[{i}]");
        let name = match EnvName::parse(environment) {
            Ok(n) => n,
            Err(msg) => {
                v.add(format!("{field}.environment"), msg);
                continue;
            }
        };
        if envs
            .iter()
            .any(|x: &EnvironmentState| x.environment == name)
        {
            v.add(format!("{field}.environment"), "is listed twice");
        }
        v.check(
            *rollout_basis_points <= MAX_BASIS_POINTS,
            format!("{field}.rollout_basis_points"),
            "must be 0..=10000",
        );
        let unit = match pb::RolloutUnit::try_from(*rollout_unit) {
            Ok(pb::RolloutUnit::Unspecified | pb::RolloutUnit::Tenant) => RolloutUnit::Tenant,
            Ok(pb::RolloutUnit::User) => RolloutUnit::User,
            Err(_) => {
                v.add(
                    format!("{field}.rollout_unit"),
                    "is not a known rollout unit",
                );
                RolloutUnit::Tenant
            }
        };
        envs.push(EnvironmentState {
            environment: name,
            enabled: *enabled,
            rollout_basis_points: *rollout_basis_points,
            rollout_unit: unit,
        });
    }
    let mut pres = Vec::new();
    for (i, p) in prerequisites.iter().enumerate() {
        match FlagKey::parse(p) {
            Ok(k) if pres.contains(&k) => {
                v.add(format!("{prefix}.prerequisites[{i}]"), "is listed twice")
            }
            Ok(k) => pres.push(k),
            Err(msg) => v.add(format!("{prefix}.prerequisites[{i}]"), msg),
        }
    }
    FlagFields {
        description: description.clone(),
        stage,
        environments: envs,
        prerequisites: pres,
    }
}

pub fn reason_to_pb(r: Reason) -> pb::Reason {
    match r {
        Reason::Disabled => pb::Reason::Disabled,
        Reason::PrerequisiteFailed => pb::Reason::PrerequisiteFailed,
        Reason::TargetingMatch => pb::Reason::TargetingMatch,
        Reason::Split => pb::Reason::Split,
        Reason::Default => pb::Reason::Default,
        Reason::Error => pb::Reason::Error,
    }
}

pub fn evaluation_to_pb(e: domain::Evaluation) -> pb::Evaluation {
    let domain::Evaluation {
        key,
        value,
        reason,
        explanation,
        error_code,
        failed_prerequisite,
        etag,
    } = e;
    pb::Evaluation {
        key,
        value,
        reason: reason_to_pb(reason) as i32,
        explanation,
        error_code: error_code.unwrap_or_default().to_owned(),
        failed_prerequisite: failed_prerequisite.unwrap_or_default(),
        etag: etag.unwrap_or_default(),
    }
}
