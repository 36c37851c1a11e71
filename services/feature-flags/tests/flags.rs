//! Feature flags end to end over real gRPC (tonic clients on port 0), on SQLite and — whenever
//! reachable, always in CI — PostgreSQL + Redis.
use std::time::Duration;

use maxai_feature_flags::{
    start,
    store::{conformance, SqlFlagStore},
    FlagsConfig, MIGRATIONS, SERVICE_NAME, STORAGE_NAME,
};
use maxai_kit::{server::GrpcApp, shared_state::SharedState, storage, CancellationToken};
use maxai_proto::maxai::flags::v1::{
    self as pb, feature_flags_service_client::FeatureFlagsServiceClient,
};
use maxai_testkit::{authed, backends, serve_grpc, Authed, Backend, Running, TestIam};
use tonic::Code;
use tonic_types::StatusExt;

type Client = FeatureFlagsServiceClient<Authed>;

/// One flags replica on `backend`, sharing `shared` (memory) or its own Redis connection.
async fn replica(backend: &Backend, shared: &SharedState) -> (Running, Client) {
    let server = start(
        &FlagsConfig::default(),
        &backend.storage,
        shared,
        4 << 20,
        CancellationToken::new(),
    )
    .await
    .expect("start flags");
    let iam = TestIam::start(backend).await;
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(server);
    let running = serve_grpc(GrpcApp {
        routes: routes.routes(),
        service_names: vec![SERVICE_NAME.into()],
        guard: iam.layer(),
    })
    .await;
    let client = FeatureFlagsServiceClient::new(authed(&running.url(), &iam.admin()).await);
    (running, client)
}

async fn shared_for(backend: &Backend) -> SharedState {
    SharedState::connect(&backend.storage)
        .await
        .expect("shared state")
}

fn env(name: &str, enabled: bool, bp: u32) -> pb::EnvironmentState {
    pb::EnvironmentState {
        environment: name.into(),
        enabled,
        rollout_basis_points: bp,
        rollout_unit: pb::RolloutUnit::Tenant as i32,
    }
}

fn flag(stage: pb::Stage, envs: Vec<pb::EnvironmentState>, prerequisites: &[&str]) -> pb::Flag {
    pb::Flag {
        description: "test flag".into(),
        stage: stage as i32,
        environments: envs,
        prerequisites: prerequisites.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn create(c: &mut Client, key: &str, f: pb::Flag) -> pb::Flag {
    c.create_flag(pb::CreateFlagRequest {
        flag: Some(f),
        flag_id: key.into(),
        request_id: String::new(),
    })
    .await
    .expect("create flag")
    .into_inner()
    .flag
    .expect("flag")
}

async fn eval(c: &mut Client, key: &str, tenant: &str, user: &str) -> pb::Evaluation {
    c.evaluate_flag(pb::EvaluateFlagRequest {
        flag: format!("flags/{key}"),
        context: Some(pb::EvaluationContext {
            environment: String::new(),
            tenant_id: tenant.into(),
            user_id: user.into(),
        }),
    })
    .await
    .expect("evaluate")
    .into_inner()
    .evaluation
    .expect("evaluation")
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn store_conformance_on_every_backend() {
    for backend in backends().await {
        let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
            .await
            .expect("connect");
        conformance::run(&SqlFlagStore::new(db)).await;
        eprintln!("conformance passed on {}", backend.name);
    }
}

#[tokio::test]
async fn crud_over_grpc_with_validation_and_etags() {
    for backend in backends().await {
        let shared = shared_for(&backend).await;
        let (_server, mut c) = replica(&backend, &shared).await;
        let created = create(
            &mut c,
            "voice-v2",
            flag(pb::Stage::Beta, vec![env("production", true, 2500)], &[]),
        )
        .await;
        assert_eq!(created.name, "flags/voice-v2");
        assert_eq!(created.etag, "r1");

        // Bad input: every violation named, nothing stored.
        let bad = c
            .create_flag(pb::CreateFlagRequest {
                flag: Some(flag(
                    pb::Stage::Unspecified,
                    vec![env("Prod!", true, 20_000)],
                    &["Bad Key"],
                )),
                flag_id: "Bad Key".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let fields = violations(&bad);
        for expected in [
            "flag_id",
            "flag.stage",
            "flag.environments[0].environment",
            "flag.prerequisites[0]",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} missing from {fields:?}"
            );
        }
        let list = c
            .list_flags(pb::ListFlagsRequest::default())
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.flags.len(), 1, "the refused create stored nothing");

        // Duplicate and idempotent creates.
        let dup = c
            .create_flag(pb::CreateFlagRequest {
                flag: Some(flag(pb::Stage::Ga, vec![], &[])),
                flag_id: "voice-v2".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists);
        let req = pb::CreateFlagRequest {
            flag: Some(flag(pb::Stage::Ga, vec![], &[])),
            flag_id: "sms-v2".into(),
            request_id: "rq-1".into(),
        };
        let a = c
            .create_flag(req.clone())
            .await
            .expect("create")
            .into_inner();
        let b = c.create_flag(req).await.expect("retry").into_inner();
        assert_eq!(a, b);

        // Update with mask and etag; a stale etag is refused and changes nothing.
        let mut change = created.clone();
        change.description = "updated".into();
        change.stage = 0; // not in the mask, so not validated
        let updated = c
            .update_flag(pb::UpdateFlagRequest {
                flag: Some(change.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
            })
            .await
            .expect("update")
            .into_inner()
            .flag
            .expect("flag");
        assert_eq!(
            (
                updated.description.as_str(),
                updated.stage,
                updated.etag.as_str()
            ),
            ("updated", pb::Stage::Beta as i32, "r2")
        );
        change.description = "stale write".into();
        let stale = c
            .update_flag(pb::UpdateFlagRequest {
                flag: Some(change),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted);
        let got = c
            .get_flag(pb::GetFlagRequest {
                name: "flags/voice-v2".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .flag
            .expect("flag");
        assert_eq!(got.description, "updated");
        let bad_mask = c
            .update_flag(pb::UpdateFlagRequest {
                flag: Some(got.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(violations(&bad_mask), ["update_mask.paths[0]"]);

        // Pagination walks every flag once.
        for i in 0..5 {
            create(
                &mut c,
                &format!("page-{i}"),
                flag(pb::Stage::Alpha, vec![], &[]),
            )
            .await;
        }
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let page = c
                .list_flags(pb::ListFlagsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    stage: 0,
                })
                .await
                .expect("list")
                .into_inner();
            seen.extend(page.flags.into_iter().map(|f| f.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 7);
        let bad_token = c
            .list_flags(pb::ListFlagsRequest {
                page_size: 3,
                page_token: "nonsense".into(),
                stage: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(bad_token.code(), Code::InvalidArgument);

        // Delete: a prerequisite is protected; not found afterwards.
        create(
            &mut c,
            "needs-voice",
            flag(pb::Stage::Beta, vec![], &["voice-v2"]),
        )
        .await;
        let refused = c
            .delete_flag(pb::DeleteFlagRequest {
                name: "flags/voice-v2".into(),
                etag: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        c.delete_flag(pb::DeleteFlagRequest {
            name: "flags/needs-voice".into(),
            etag: String::new(),
        })
        .await
        .expect("delete");
        c.delete_flag(pb::DeleteFlagRequest {
            name: "flags/voice-v2".into(),
            etag: String::new(),
        })
        .await
        .expect("delete");
        let gone = c
            .get_flag(pb::GetFlagRequest {
                name: "flags/voice-v2".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        eprintln!("crud passed on {}", backend.name);
    }
}

#[tokio::test]
async fn evaluation_rules_and_explanations() {
    for backend in backends().await {
        let shared = shared_for(&backend).await;
        let (_server, mut c) = replica(&backend, &shared).await;
        create(
            &mut c,
            "base",
            flag(
                pb::Stage::Ga,
                vec![
                    env("production", true, 10_000),
                    env("staging", false, 10_000),
                ],
                &[],
            ),
        )
        .await;
        create(
            &mut c,
            "child",
            flag(pb::Stage::Beta, vec![env("production", true, 0)], &["base"]),
        )
        .await;
        create(
            &mut c,
            "gated",
            flag(
                pb::Stage::Alpha,
                vec![env("production", true, 0)],
                &["child"],
            ),
        )
        .await;

        // Cycles are refused at save time.
        let cycle = c
            .update_flag(pb::UpdateFlagRequest {
                flag: Some(pb::Flag {
                    name: "flags/base".into(),
                    prerequisites: vec!["gated".into()],
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["prerequisites".into()],
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(violations(&cycle), ["flag.prerequisites"], "{cycle:?}");

        // A 10,000-entry tenant allowlist, added in chunks, edited by add/remove.
        let tenants: Vec<String> = (0..10_000).map(|i| format!("tenant-{i:05}")).collect();
        for chunk in tenants.chunks(1000) {
            let added = c
                .add_allowlist_entries(pb::AddAllowlistEntriesRequest {
                    flag: "flags/child".into(),
                    environment: "production".into(),
                    kind: pb::AllowlistKind::Tenant as i32,
                    subjects: chunk.to_vec(),
                })
                .await
                .expect("add")
                .into_inner();
            assert_eq!(added.added_count, 1000);
        }
        let e = eval(&mut c, "child", "tenant-09999", "").await;
        assert_eq!(
            (e.value, e.reason),
            (true, pb::Reason::TargetingMatch as i32),
            "{e:?}"
        );
        assert!(
            e.explanation.contains("tenant allowlist"),
            "{}",
            e.explanation
        );
        let e = eval(&mut c, "child", "stranger", "").await;
        assert_eq!((e.value, e.reason), (false, pb::Reason::Default as i32));
        let e = eval(&mut c, "gated", "tenant-00001", "").await;
        assert_eq!(
            (e.value, e.reason, e.failed_prerequisite.as_str()),
            (false, pb::Reason::Default as i32, ""),
            "{e:?}"
        );
        let e = eval(&mut c, "gated", "stranger", "").await;
        assert_eq!(
            (e.value, e.reason, e.failed_prerequisite.as_str()),
            (false, pb::Reason::PrerequisiteFailed as i32, "child")
        );

        c.remove_allowlist_entries(pb::RemoveAllowlistEntriesRequest {
            flag: "flags/child".into(),
            environment: "production".into(),
            kind: pb::AllowlistKind::Tenant as i32,
            subjects: vec!["tenant-09999".into()],
        })
        .await
        .expect("remove");
        let e = eval(&mut c, "child", "tenant-09999", "").await;
        assert!(!e.value, "removed tenant no longer matches");
        let page = c
            .list_allowlist_entries(pb::ListAllowlistEntriesRequest {
                flag: "flags/child".into(),
                environment: "production".into(),
                kind: pb::AllowlistKind::Tenant as i32,
                page_size: 2,
                page_token: String::new(),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.subjects, ["tenant-00000", "tenant-00001"]);

        // Environments: staging is disabled, unknown environments are not configured.
        let staging = c
            .batch_evaluate_flags(pb::BatchEvaluateFlagsRequest {
                context: Some(pb::EvaluationContext {
                    environment: "staging".into(),
                    tenant_id: "t".into(),
                    user_id: String::new(),
                }),
                keys: vec!["base".into(), "missing".into()],
            })
            .await
            .expect("batch")
            .into_inner()
            .evaluations;
        assert_eq!(staging[0].reason, pb::Reason::Disabled as i32);
        assert_eq!(
            (staging[1].reason, staging[1].error_code.as_str()),
            (pb::Reason::Error as i32, "FLAG_NOT_FOUND")
        );
        let all = c
            .batch_evaluate_flags(pb::BatchEvaluateFlagsRequest {
                context: None,
                keys: vec![],
            })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(
            all.evaluations
                .iter()
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>(),
            ["base", "child", "gated"]
        );
        let missing = c
            .evaluate_flag(pb::EvaluateFlagRequest {
                flag: "flags/missing".into(),
                context: None,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        eprintln!("evaluation passed on {}", backend.name);
    }
}

/// An update made through one replica is seen by another within a second: through the memory
/// notifier in one process, through Redis pub/sub across separately connected replicas.
#[tokio::test]
async fn updates_reach_every_replica_within_a_second() {
    for backend in backends().await {
        let shared_a = shared_for(&backend).await;
        let shared_b = if backend.name == "sqlite" {
            shared_a.clone()
        } else {
            shared_for(&backend).await
        };
        let (_a, mut a) = replica(&backend, &shared_a).await;
        let (_b, mut b) = replica(&backend, &shared_b).await;
        create(
            &mut a,
            "rollout",
            flag(pb::Stage::Beta, vec![env("production", false, 10_000)], &[]),
        )
        .await;
        let seen_created = wait_for(&mut b, "rollout", |e| e.error_code.is_empty()).await;
        assert!(
            seen_created.is_some(),
            "replica b never saw the new flag on {}",
            backend.name
        );

        a.update_flag(pb::UpdateFlagRequest {
            flag: Some(pb::Flag {
                name: "flags/rollout".into(),
                environments: vec![env("production", true, 10_000)],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["environments".into()],
            }),
        })
        .await
        .expect("update");
        let elapsed = wait_for(&mut b, "rollout", |e| e.value).await;
        let elapsed = elapsed.unwrap_or_else(|| {
            panic!(
                "replica b did not see the update within a second on {}",
                backend.name
            )
        });
        eprintln!(
            "{}: replica b saw the update after {elapsed:?}",
            backend.name
        );
    }
}

/// Polls replica `c` for up to one second until `done` holds; returns how long it took.
async fn wait_for(
    c: &mut Client,
    key: &str,
    done: impl Fn(&pb::Evaluation) -> bool,
) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let e = c
            .batch_evaluate_flags(pb::BatchEvaluateFlagsRequest {
                context: Some(pb::EvaluationContext {
                    environment: String::new(),
                    tenant_id: "t1".into(),
                    user_id: String::new(),
                }),
                keys: vec![key.into()],
            })
            .await
            .expect("batch")
            .into_inner()
            .evaluations;
        if e.first().is_some_and(&done) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
