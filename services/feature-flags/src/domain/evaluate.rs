//! Evaluation: environment switch → prerequisites → user allowlist → tenant allowlist →
//! percentage rollout → default. Allowlists are hash sets, so a 10,000-entry list costs the same
//! as a 1-entry list; the rollout bucket is a stable hash of flag key and subject.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use xxhash_rust::xxh3::xxh3_64;

use super::model::{AllowlistKind, Flag, RolloutUnit, MAX_BASIS_POINTS};

/// Prerequisite chains deeper than this are refused on save and fail evaluation.
pub const MAX_PREREQUISITE_DEPTH: usize = 8;

/// A flag with its allowlists, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledFlag {
    pub flag: Flag,
    /// (environment, kind) → subjects.
    pub allowlists: HashMap<(String, AllowlistKind), HashSet<String>>,
}

impl CompiledFlag {
    fn allows(&self, env: &str, kind: AllowlistKind, subject: &str) -> bool {
        !subject.is_empty()
            && self
                .allowlists
                .get(&(env.to_owned(), kind))
                .is_some_and(|set| set.contains(subject))
    }
}

/// Every flag, as one replica currently knows it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub flags: HashMap<String, Arc<CompiledFlag>>,
}

/// Who a flag is evaluated for.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub environment: String,
    pub tenant_id: String,
    pub user_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Disabled,
    PrerequisiteFailed,
    TargetingMatch,
    Split,
    Default,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub key: String,
    pub value: bool,
    pub reason: Reason,
    pub explanation: String,
    /// OpenFeature error code when `reason` is `Error`.
    pub error_code: Option<&'static str>,
    pub failed_prerequisite: Option<String>,
    pub etag: Option<String>,
}

/// The rollout bucket of a subject for a flag: 0..10_000, stable across processes and releases.
pub fn bucket(flag_key: &str, subject: &str) -> u32 {
    let h = xxh3_64(format!("{flag_key}:{subject}").as_bytes());
    (h % u64::from(MAX_BASIS_POINTS)) as u32
}

pub fn evaluate(snapshot: &Snapshot, key: &str, ctx: &Context) -> Evaluation {
    evaluate_at(snapshot, key, ctx, 0)
}

fn evaluate_at(snapshot: &Snapshot, key: &str, ctx: &Context, depth: usize) -> Evaluation {
    let result = |value, reason, explanation: String| Evaluation {
        key: key.to_owned(),
        value,
        reason,
        explanation,
        error_code: None,
        failed_prerequisite: None,
        etag: None,
    };
    let Some(compiled) = snapshot.flags.get(key) else {
        let mut e = result(false, Reason::Error, format!("flag {key} does not exist"));
        e.error_code = Some("FLAG_NOT_FOUND");
        return e;
    };
    let etag = Some(compiled.flag.etag());
    let flag = &compiled.flag;
    let env = ctx.environment.as_str();
    let decided = |mut e: Evaluation| {
        e.etag = etag.clone();
        e
    };
    let Some(state) = flag.environment(env) else {
        return decided(result(
            false,
            Reason::Disabled,
            format!("environment {env} is not configured"),
        ));
    };
    if !state.enabled {
        return decided(result(
            false,
            Reason::Disabled,
            format!("environment {env} is disabled"),
        ));
    }
    for prerequisite in &flag.prerequisites {
        if depth >= MAX_PREREQUISITE_DEPTH {
            let mut e = result(
                false,
                Reason::Error,
                "prerequisite chain too deep".to_owned(),
            );
            e.error_code = Some("GENERAL");
            return decided(e);
        }
        let pre = evaluate_at(snapshot, prerequisite.as_str(), ctx, depth + 1);
        if !pre.value {
            let mut e = result(
                false,
                Reason::PrerequisiteFailed,
                format!("prerequisite {prerequisite} is off ({})", pre.explanation),
            );
            e.failed_prerequisite = Some(prerequisite.to_string());
            return decided(e);
        }
    }
    if compiled.allows(env, AllowlistKind::User, &ctx.user_id) {
        return decided(result(
            true,
            Reason::TargetingMatch,
            format!("user {} is on the user allowlist", ctx.user_id),
        ));
    }
    if compiled.allows(env, AllowlistKind::Tenant, &ctx.tenant_id) {
        return decided(result(
            true,
            Reason::TargetingMatch,
            format!("tenant {} is on the tenant allowlist", ctx.tenant_id),
        ));
    }
    let (unit, subject) = match state.rollout_unit {
        RolloutUnit::Tenant => ("tenant", ctx.tenant_id.as_str()),
        RolloutUnit::User => ("user", ctx.user_id.as_str()),
    };
    if state.rollout_basis_points == 0 {
        return decided(result(
            false,
            Reason::Default,
            "no allowlist matched and the rollout is 0%".to_owned(),
        ));
    }
    if state.rollout_basis_points >= MAX_BASIS_POINTS {
        return decided(result(true, Reason::Split, "rollout is 100%".to_owned()));
    }
    if subject.is_empty() {
        return decided(result(
            false,
            Reason::Default,
            format!("no {unit} id in the context for the rollout"),
        ));
    }
    let b = bucket(key, subject);
    let on = b < state.rollout_basis_points;
    let words = format!(
        "{unit} {subject} is in bucket {b} of 10000, rollout covers 0..{}",
        state.rollout_basis_points
    );
    decided(result(on, Reason::Split, words))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{EnvName, EnvironmentState, FlagKey, Stage};

    fn flag(key: &str, enabled: bool, bp: u32, prerequisites: &[&str]) -> Flag {
        Flag {
            key: FlagKey::parse(key).unwrap(),
            description: String::new(),
            stage: Stage::Beta,
            environments: vec![EnvironmentState {
                environment: EnvName::parse("production").unwrap(),
                enabled,
                rollout_basis_points: bp,
                rollout_unit: RolloutUnit::Tenant,
            }],
            prerequisites: prerequisites
                .iter()
                .map(|p| FlagKey::parse(p).unwrap())
                .collect(),
            revision: 1,
            created_at_us: 0,
            updated_at_us: 0,
        }
    }

    fn snapshot(flags: Vec<(Flag, Vec<(AllowlistKind, &str)>)>) -> Snapshot {
        let mut s = Snapshot::default();
        for (f, entries) in flags {
            let mut allowlists: HashMap<_, HashSet<String>> = HashMap::new();
            for (kind, subject) in entries {
                allowlists
                    .entry(("production".to_owned(), kind))
                    .or_default()
                    .insert(subject.to_owned());
            }
            s.flags.insert(
                f.key.to_string(),
                Arc::new(CompiledFlag {
                    flag: f,
                    allowlists,
                }),
            );
        }
        s
    }

    fn ctx(tenant: &str, user: &str) -> Context {
        Context {
            environment: "production".into(),
            tenant_id: tenant.into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn rules_apply_in_order_and_explain_themselves() {
        let s = snapshot(vec![
            (
                flag("base", true, 0, &[]),
                vec![(AllowlistKind::Tenant, "t1")],
            ),
            (
                flag("child", true, 0, &["base"]),
                vec![(AllowlistKind::User, "u1")],
            ),
            (
                flag("off", false, 10_000, &[]),
                vec![(AllowlistKind::Tenant, "t1")],
            ),
        ]);
        let e = evaluate(&s, "child", &ctx("t1", "u1"));
        assert_eq!((e.value, e.reason), (true, Reason::TargetingMatch));
        assert!(e.explanation.contains("user u1"), "{}", e.explanation);
        let e = evaluate(&s, "child", &ctx("t2", "u1"));
        assert_eq!(
            (e.value, e.reason, e.failed_prerequisite.as_deref()),
            (false, Reason::PrerequisiteFailed, Some("base"))
        );
        let e = evaluate(&s, "off", &ctx("t1", ""));
        assert_eq!((e.value, e.reason), (false, Reason::Disabled));
        let e = evaluate(
            &s,
            "base",
            &Context {
                environment: "staging".into(),
                ..ctx("t1", "")
            },
        );
        assert_eq!((e.value, e.reason), (false, Reason::Disabled));
        let e = evaluate(&s, "missing", &ctx("t1", ""));
        assert_eq!(
            (e.value, e.reason, e.error_code),
            (false, Reason::Error, Some("FLAG_NOT_FOUND"))
        );
    }

    #[test]
    fn rollout_is_stable_and_close_to_its_share() {
        let s = snapshot(vec![(flag("half", true, 2_500, &[]), vec![])]);
        let on = (0..10_000)
            .filter(|i| evaluate(&s, "half", &ctx(&format!("tenant-{i}"), "")).value)
            .count();
        assert!(
            (2_200..2_800).contains(&on),
            "{on} of 10000 on for a 25% rollout"
        );
        let first = evaluate(&s, "half", &ctx("tenant-42", ""));
        assert_eq!(first, evaluate(&s, "half", &ctx("tenant-42", "")));
        assert_eq!(bucket("half", "tenant-42"), bucket("half", "tenant-42"));
        let e = evaluate(&s, "half", &ctx("", ""));
        assert_eq!((e.value, e.reason), (false, Reason::Default));
    }

    #[test]
    fn prerequisite_cycles_stop_with_an_error() {
        let s = snapshot(vec![
            (flag("a", true, 10_000, &["b"]), vec![]),
            (flag("b", true, 10_000, &["a"]), vec![]),
        ]);
        let e = evaluate(&s, "a", &ctx("t", ""));
        assert!(!e.value);
    }
}
