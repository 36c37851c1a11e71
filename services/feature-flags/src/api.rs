//! The gRPC surface: validate → convert → store / evaluate → map errors.
use std::{collections::HashMap, sync::Arc};

use maxai_kit::{
    error::Violations,
    paging::{decode_token, next_page, page_size},
    resource::expected_revision,
    Error, Result,
};
use maxai_proto::maxai::flags::v1::{
    self as pb, feature_flags_service_server::FeatureFlagsService,
};
use tonic::{Request, Response, Status};

use crate::{
    config::FlagsConfig,
    convert::{evaluation_to_pb, flag_fields, flag_to_pb, kind_from_pb, stage_from_pb},
    domain::{
        etag, evaluate, AllowlistKind, Context, EnvName, Flag, FlagKey, MAX_PREREQUISITE_DEPTH,
    },
    metrics::EVALUATIONS_TOTAL,
    store::FlagStore,
    view::FlagView,
};

const MAX_SUBJECTS_PER_CALL: usize = 1000;
const MAX_BATCH_KEYS: usize = 1000;

pub struct FlagsApi {
    store: Arc<dyn FlagStore>,
    view: Arc<FlagView>,
    config: FlagsConfig,
}

impl FlagsApi {
    pub fn new(store: Arc<dyn FlagStore>, view: Arc<FlagView>, config: FlagsConfig) -> Self {
        FlagsApi {
            store,
            view,
            config,
        }
    }

    fn context(&self, ctx: Option<&pb::EvaluationContext>, field: &str) -> Result<Context> {
        let pb::EvaluationContext {
            environment,
            tenant_id,
            user_id,
        } = ctx.cloned().unwrap_or_default();
        let environment = if environment.is_empty() {
            self.config.default_environment.clone()
        } else {
            environment
        };
        let mut v = Violations::new();
        if let Err(msg) = EnvName::parse(&environment) {
            v.add(format!("{field}.environment"), msg);
        }
        v.check(
            tenant_id.len() <= 128,
            format!("{field}.tenant_id"),
            "must be at most 128 bytes",
        );
        v.check(
            user_id.len() <= 128,
            format!("{field}.user_id"),
            "must be at most 128 bytes",
        );
        v.into_result()?;
        Ok(Context {
            environment,
            tenant_id,
            user_id,
        })
    }

    /// Refuses prerequisite lists that would make a cycle or a chain deeper than evaluation allows.
    async fn check_prerequisite_graph(
        &self,
        key: &FlagKey,
        prerequisites: &[FlagKey],
    ) -> Result<()> {
        if prerequisites.contains(key) {
            return Err(Error::invalid(
                "flag.prerequisites",
                "a flag cannot be its own prerequisite",
            ));
        }
        let mut graph: HashMap<String, Vec<String>> = HashMap::new();
        for (flag, pre) in self.store.prerequisite_edges().await? {
            if flag != key.as_str() {
                graph.entry(flag).or_default().push(pre);
            }
        }
        graph.insert(
            key.to_string(),
            prerequisites.iter().map(|p| p.to_string()).collect(),
        );
        // Depth-first from the changed flag: a path back to it is a cycle.
        let mut stack: Vec<(String, usize)> = vec![(key.to_string(), 0)];
        while let Some((node, depth)) = stack.pop() {
            if depth > MAX_PREREQUISITE_DEPTH {
                return Err(Error::invalid(
                    "flag.prerequisites",
                    format!("prerequisite chains may be at most {MAX_PREREQUISITE_DEPTH} deep"),
                ));
            }
            for next in graph.get(&node).into_iter().flatten() {
                if next == key.as_str() {
                    return Err(Error::invalid(
                        "flag.prerequisites",
                        format!("would make a cycle through {node}"),
                    ));
                }
                stack.push((next.clone(), depth + 1));
            }
        }
        Ok(())
    }

    fn allowlist_args(
        &self,
        flag: &str,
        env: &str,
        kind: i32,
        subjects: Option<&[String]>,
    ) -> Result<(FlagKey, EnvName, AllowlistKind)> {
        let mut v = Violations::new();
        let key = FlagKey::from_name(flag).map_err(|m| v.add("flag", m)).ok();
        let env = EnvName::parse(env)
            .map_err(|m| v.add("environment", m))
            .ok();
        let kind = kind_from_pb(kind);
        v.check(
            kind.is_some(),
            "kind",
            "must be ALLOWLIST_KIND_TENANT or ALLOWLIST_KIND_USER",
        );
        if let Some(subjects) = subjects {
            v.check(
                !subjects.is_empty(),
                "subjects",
                "must name at least one subject",
            );
            v.check(
                subjects.len() <= MAX_SUBJECTS_PER_CALL,
                "subjects",
                "at most 1000 per call",
            );
            for (i, s) in subjects.iter().enumerate() {
                v.check(
                    !s.is_empty() && s.len() <= 128,
                    format!("subjects[{i}]"),
                    "must be 1-128 bytes",
                );
            }
        }
        v.into_result()?;
        match (key, env, kind) {
            (Some(k), Some(e), Some(kind)) => Ok((k, e, kind)),
            _ => Err(Error::invalid("flag", "is invalid")),
        }
    }
}

#[tonic::async_trait]
impl FeatureFlagsService for FlagsApi {
    async fn create_flag(
        &self,
        request: Request<pb::CreateFlagRequest>,
    ) -> Result<Response<pb::CreateFlagResponse>, Status> {
        let pb::CreateFlagRequest {
            flag,
            flag_id,
            request_id,
        } = request.into_inner();
        let mut v = Violations::new();
        let key = FlagKey::parse(&flag_id)
            .map_err(|m| v.add("flag_id", m))
            .ok();
        v.check(
            request_id.len() <= 128,
            "request_id",
            "must be at most 128 bytes",
        );
        let Some(flag) = flag else {
            v.add("flag", "is required");
            return Err(v.into_result().unwrap_err().into());
        };
        let fields = flag_fields(&flag, "flag", &mut v);
        v.into_result()?;
        let key = key.ok_or_else(|| Error::invalid("flag_id", "is required"))?;
        self.check_prerequisite_graph(&key, &fields.prerequisites)
            .await?;
        let new = Flag {
            key,
            description: fields.description,
            stage: fields.stage,
            environments: fields.environments,
            prerequisites: fields.prerequisites,
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
        let rid = (!request_id.is_empty()).then_some(request_id.as_str());
        let created = self.store.create(&new, rid).await?;
        self.view.changed(&created.key).await?;
        tracing::info!(flag = %created.key, "flag created");
        Ok(Response::new(pb::CreateFlagResponse {
            flag: Some(flag_to_pb(&created)),
        }))
    }

    async fn get_flag(
        &self,
        request: Request<pb::GetFlagRequest>,
    ) -> Result<Response<pb::GetFlagResponse>, Status> {
        let pb::GetFlagRequest { name } = request.into_inner();
        let key = FlagKey::from_name(&name).map_err(|m| Error::invalid("name", m))?;
        // Served from the replica's snapshot: the same rows, kept current by change
        // notifications (this replica's own writes are visible before they return).
        let snapshot = self.view.current();
        let compiled = snapshot
            .flags
            .get(key.as_str())
            .ok_or_else(|| Error::not_found(format!("flag {key}")))?;
        Ok(Response::new(pb::GetFlagResponse {
            flag: Some(flag_to_pb(&compiled.flag)),
        }))
    }

    async fn list_flags(
        &self,
        request: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        let pb::ListFlagsRequest {
            page_size: size,
            page_token,
            stage,
        } = request.into_inner();
        let limit = page_size(size)?;
        let stage_filter = if stage == 0 {
            None
        } else {
            Some(
                stage_from_pb(stage)
                    .ok_or_else(|| Error::invalid("stage", "is not a known stage"))?,
            )
        };
        let scope = format!("flags:{stage}");
        let after = decode_token(&scope, &page_token)?;
        let mut flags = self
            .store
            .list(after.as_deref(), limit + 1, stage_filter)
            .await?;
        let next_page_token = next_page(&mut flags, limit, &scope, |f| f.key.to_string());
        Ok(Response::new(pb::ListFlagsResponse {
            flags: flags.iter().map(flag_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_flag(
        &self,
        request: Request<pb::UpdateFlagRequest>,
    ) -> Result<Response<pb::UpdateFlagResponse>, Status> {
        let pb::UpdateFlagRequest { flag, update_mask } = request.into_inner();
        let flag = flag.ok_or_else(|| Error::invalid("flag", "is required"))?;
        let key = FlagKey::from_name(&flag.name).map_err(|m| Error::invalid("flag.name", m))?;
        let expected = expected_revision(&flag.etag, "flag.etag")?;
        let paths: Vec<String> = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        for (i, p) in paths.iter().enumerate() {
            v.check(
                matches!(
                    p.as_str(),
                    "description" | "stage" | "environments" | "prerequisites"
                ),
                format!("update_mask.paths[{i}]"),
                "must be one of description, stage, environments, prerequisites",
            );
        }
        let wants = |p: &str| paths.is_empty() || paths.iter().any(|x| x == p);
        let fields = flag_fields(&flag, "flag", &mut v);
        if !wants("stage") {
            // An absent stage is fine when the mask leaves the stage alone.
            v = {
                let mut kept = Violations::new();
                for f in v.into_fields() {
                    if f.field != "flag.stage" {
                        kept.add(f.field, f.description);
                    }
                }
                kept
            };
        }
        v.into_result()?;
        let current = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| Error::not_found(format!("flag {key}")))?;
        let mut next = current.clone();
        if wants("description") {
            next.description = fields.description;
        }
        if wants("stage") {
            next.stage = fields.stage;
        }
        if wants("environments") {
            next.environments = fields.environments;
        }
        if wants("prerequisites") {
            self.check_prerequisite_graph(&key, &fields.prerequisites)
                .await?;
            next.prerequisites = fields.prerequisites;
        }
        // Without an etag the write still must not interleave with a concurrent one.
        let updated = self
            .store
            .update(&next, Some(expected.unwrap_or(current.revision)))
            .await?;
        self.view.changed(&key).await?;
        tracing::info!(flag = %key, revision = updated.revision, "flag updated");
        Ok(Response::new(pb::UpdateFlagResponse {
            flag: Some(flag_to_pb(&updated)),
        }))
    }

    async fn delete_flag(
        &self,
        request: Request<pb::DeleteFlagRequest>,
    ) -> Result<Response<pb::DeleteFlagResponse>, Status> {
        let pb::DeleteFlagRequest { name, etag } = request.into_inner();
        let key = FlagKey::from_name(&name).map_err(|m| Error::invalid("name", m))?;
        let expected = expected_revision(&etag, "etag")?;
        self.store.delete(&key, expected).await?;
        self.view.changed(&key).await?;
        tracing::info!(flag = %key, "flag deleted");
        Ok(Response::new(pb::DeleteFlagResponse {}))
    }

    async fn add_allowlist_entries(
        &self,
        request: Request<pb::AddAllowlistEntriesRequest>,
    ) -> Result<Response<pb::AddAllowlistEntriesResponse>, Status> {
        let pb::AddAllowlistEntriesRequest {
            flag,
            environment,
            kind,
            subjects,
        } = request.into_inner();
        let (key, env, kind) = self.allowlist_args(&flag, &environment, kind, Some(&subjects))?;
        let (added, revision) = self
            .store
            .add_allowlist(&key, env.as_str(), kind, &subjects)
            .await?;
        self.view.changed(&key).await?;
        Ok(Response::new(pb::AddAllowlistEntriesResponse {
            added_count: added as i32,
            etag: etag(revision),
        }))
    }

    async fn remove_allowlist_entries(
        &self,
        request: Request<pb::RemoveAllowlistEntriesRequest>,
    ) -> Result<Response<pb::RemoveAllowlistEntriesResponse>, Status> {
        let pb::RemoveAllowlistEntriesRequest {
            flag,
            environment,
            kind,
            subjects,
        } = request.into_inner();
        let (key, env, kind) = self.allowlist_args(&flag, &environment, kind, Some(&subjects))?;
        let (removed, revision) = self
            .store
            .remove_allowlist(&key, env.as_str(), kind, &subjects)
            .await?;
        self.view.changed(&key).await?;
        Ok(Response::new(pb::RemoveAllowlistEntriesResponse {
            removed_count: removed as i32,
            etag: etag(revision),
        }))
    }

    async fn list_allowlist_entries(
        &self,
        request: Request<pb::ListAllowlistEntriesRequest>,
    ) -> Result<Response<pb::ListAllowlistEntriesResponse>, Status> {
        let pb::ListAllowlistEntriesRequest {
            flag,
            environment,
            kind,
            page_size: size,
            page_token,
        } = request.into_inner();
        let (key, env, kind) = self.allowlist_args(&flag, &environment, kind, None)?;
        let limit = page_size(size)?;
        let scope = format!("allowlist:{key}:{}:{}", env.as_str(), kind.as_str());
        let after = decode_token(&scope, &page_token)?;
        if self.store.get(&key).await?.is_none() {
            return Err(Error::not_found(format!("flag {key}")).into());
        }
        let mut subjects = self
            .store
            .list_allowlist(&key, env.as_str(), kind, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = next_page(&mut subjects, limit, &scope, |s| s.clone());
        Ok(Response::new(pb::ListAllowlistEntriesResponse {
            subjects,
            next_page_token,
        }))
    }

    async fn evaluate_flag(
        &self,
        request: Request<pb::EvaluateFlagRequest>,
    ) -> Result<Response<pb::EvaluateFlagResponse>, Status> {
        let pb::EvaluateFlagRequest { flag, context } = request.into_inner();
        let key = FlagKey::from_name(&flag).map_err(|m| Error::invalid("flag", m))?;
        let ctx = self.context(context.as_ref(), "context")?;
        let snapshot = self.view.current();
        if !snapshot.flags.contains_key(key.as_str()) {
            return Err(Error::not_found(format!("flag {key}")).into());
        }
        let evaluation = evaluate(&snapshot, key.as_str(), &ctx);
        metrics::counter!(EVALUATIONS_TOTAL).increment(1);
        Ok(Response::new(pb::EvaluateFlagResponse {
            evaluation: Some(evaluation_to_pb(evaluation)),
        }))
    }

    async fn batch_evaluate_flags(
        &self,
        request: Request<pb::BatchEvaluateFlagsRequest>,
    ) -> Result<Response<pb::BatchEvaluateFlagsResponse>, Status> {
        let pb::BatchEvaluateFlagsRequest { context, keys } = request.into_inner();
        let ctx = self.context(context.as_ref(), "context")?;
        let mut v = Violations::new();
        v.check(
            keys.len() <= MAX_BATCH_KEYS,
            "keys",
            "at most 1000 per call",
        );
        for (i, k) in keys.iter().enumerate() {
            if let Err(m) = FlagKey::parse(k) {
                v.add(format!("keys[{i}]"), m);
            }
        }
        v.into_result()?;
        let snapshot = self.view.current();
        let evaluations: Vec<pb::Evaluation> = if keys.is_empty() {
            let mut all: Vec<&String> = snapshot.flags.keys().collect();
            all.sort();
            all.into_iter()
                .map(|k| evaluation_to_pb(evaluate(&snapshot, k, &ctx)))
                .collect()
        } else {
            keys.iter()
                .map(|k| evaluation_to_pb(evaluate(&snapshot, k, &ctx)))
                .collect()
        };
        metrics::counter!(EVALUATIONS_TOTAL).increment(evaluations.len() as u64);
        Ok(Response::new(pb::BatchEvaluateFlagsResponse {
            evaluations,
        }))
    }
}
