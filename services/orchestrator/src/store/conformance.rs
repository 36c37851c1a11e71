//! One behavioural suite for every [`OrchestratorStore`] backend (run on SQLite and PostgreSQL
//! by the crate's tests). Each check asserts observable behaviour, not SQL.
use futures::future::join_all;
use serde_json::json;

use super::*;
use crate::domain::{ExecState, TriggerInfo};
use maxai_kit::ErrorKind;

fn flow(tenant: &str, id: &str, name: &str, now: i64) -> FlowRecord {
    FlowRecord {
        tenant: tenant.into(),
        flow_id: id.into(),
        display_name: name.into(),
        description: String::new(),
        revision: 1,
        draft_version: Some(1),
        active_version: None,
        latest_version: 1,
        create_us: now,
        update_us: now,
    }
}

pub fn new_execution(id: &str, tenant: &str, flow_id: &str, client: &str) -> NewExecution {
    NewExecution {
        id: id.into(),
        tenant: tenant.into(),
        flow_id: flow_id.into(),
        version: 1,
        trigger: TriggerInfo {
            kind: "manual".into(),
            ..TriggerInfo::default()
        },
        client: client.into(),
        input: json!({"n": 1}),
        rerun_of: String::new(),
        ctx: json!({"vars": {}, "steps": {}}),
        cursor: None,
    }
}

/// Creates execution `id` of `tenant` and claims it for `worker` (with whatever else is runnable).
async fn claimed(s: &dyn OrchestratorStore, id: &str, tenant: &str, worker: &str, now: i64) {
    s.create_execution(&new_execution(id, tenant, "f", ""), None, 0, now)
        .await
        .unwrap();
    let claimed = s
        .claim(worker, now, 1_000_000, 1_000, caps(100_000, 100_000))
        .await
        .unwrap();
    assert!(claimed.iter().any(|e| e.id == id));
}

/// The first attempt of condition step `cond`.
fn condition_run() -> NewStepRun {
    NewStepRun {
        step_id: "cond".into(),
        kind: crate::domain::StepKind::Condition,
        attempt: 1,
        iteration: vec![],
        method: String::new(),
        input: None,
    }
}

/// Execution `id` has no step run and no cursor yet.
async fn nothing_written(s: &dyn OrchestratorStore, tenant: &str, id: &str) {
    assert!(s.step_runs(id).await.unwrap().is_empty());
    let e = s.get_execution(tenant, id).await.unwrap().unwrap();
    assert_eq!(e.cursor, None);
}

fn succeeded(out: serde_json::Value) -> StepEnd {
    StepEnd {
        state: crate::domain::StepState::Succeeded,
        output: Some(out),
        error: None,
        resume_us: None,
    }
}

fn caps(global: i64, tenant: i64) -> ClaimCaps {
    ClaimCaps {
        global_running: global,
        defaults: Limits {
            max_running: tenant,
            max_running_per_flow: 1000,
            max_running_per_client: 1000,
            max_pending: 1000,
        },
    }
}

fn trigger(
    tenant: &str,
    flow_id: &str,
    id: &str,
    kind: TriggerKind,
    event_type: &str,
    next: Option<i64>,
) -> TriggerRecord {
    TriggerRecord {
        tenant: tenant.into(),
        flow_id: flow_id.into(),
        trigger_id: id.into(),
        version: 1,
        kind,
        event_type: event_type.into(),
        filter: String::new(),
        schedule: if kind == TriggerKind::Schedule {
            "* * * * *".into()
        } else {
            String::new()
        },
        time_zone: String::new(),
        missed: "skip".into(),
        next_fire_us: next,
    }
}

/// Runs every check against `store` (which must be empty).
pub async fn run(store: &dyn OrchestratorStore) {
    flows_and_versions(store).await;
    executions_and_leases(store).await;
    reclaims_expired_leases_at_the_caps(store).await;
    fair_claims(store).await;
    events_and_schedules(store).await;
    concurrent_retries_and_the_pending_cap(store).await;
    step_results_with_their_checkpoint(store).await;
    boundaries_with_the_next_calls_start(store).await;
}

/// `write_boundary` with a start writes the last step's end, the boundary and the next call's start
/// together — a recorded step before it takes its own seq — and nothing at all for a worker
/// without the lease. Runs last, like the check above.
async fn boundaries_with_the_next_calls_start(s: &dyn OrchestratorStore) {
    use super::StepWrite;
    use crate::domain::{StepKind, StepState};
    let now = 950_000_000_000;
    claimed(s, "cs1", "t-cs", "w-cs", now).await;
    let cond = condition_run();
    let call = |id: &str| NewStepRun {
        step_id: id.into(),
        kind: StepKind::Call,
        method: "m".into(),
        input: Some(json!({"step": id})),
        ..cond.clone()
    };
    let ok = succeeded;
    let at = |cursor: &str, ctx: serde_json::Value| Checkpoint {
        state: ExecState::Running,
        cursor: Some(cursor.into()),
        ctx,
        handling: false,
        wake_us: None,
        output: None,
        error: None,
    };
    let recorded = StepWrite::Record(cond.clone(), ok(json!({"result": true})));
    let cp1 = at(
        "sms",
        json!({"steps": {"cond": {"output": {"result": true}}}}),
    );
    let started = |who: &'static str, t: i64| {
        let (recorded, cp1, run) = (recorded.clone(), cp1.clone(), call("sms"));
        async move {
            s.write_boundary("cs1", who, Some(&recorded), &cp1, Some(&run), t, 1_000_000)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        started("intruder", now + 1).await,
        None,
        "not the lease holder"
    );
    nothing_written(s, "t-cs", "cs1").await;

    assert_eq!(
        started("w-cs", now + 2).await,
        Some(2),
        "the record took seq 1"
    );
    let e = s.get_execution("t-cs", "cs1").await.unwrap().unwrap();
    assert_eq!((e.cursor.as_deref(), &e.ctx), (Some("sms"), &cp1.ctx));
    let runs = s.step_runs("cs1").await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].seq, runs[0].state, runs[0].end_us),
        (1, StepState::Succeeded, Some(now + 2))
    );
    assert_eq!(runs[0].output, Some(json!({"result": true})));
    assert_eq!(
        (runs[1].seq, runs[1].state, runs[1].end_us),
        (2, StepState::Running, None)
    );
    assert_eq!(
        (runs[1].step_id.as_str(), runs[1].start_us),
        ("sms", now + 2)
    );
    assert_eq!(runs[1].input, Some(json!({"step": "sms"})));

    // The call's end, the boundary after it and the next call's start.
    let finished = StepWrite::Finish(2, ok(json!({"sid": "S1"})));
    let cp2 = at(
        "status",
        json!({"steps": {"sms": {"output": {"sid": "S1"}}}}),
    );
    let seq = s
        .write_boundary(
            "cs1",
            "w-cs",
            Some(&finished),
            &cp2,
            Some(&call("status")),
            now + 3,
            1_000_000,
        )
        .await
        .unwrap();
    assert_eq!(seq, Some(3));
    let runs = s.step_runs("cs1").await.unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(
        (runs[1].state, runs[1].end_us),
        (StepState::Succeeded, Some(now + 3))
    );
    assert_eq!(runs[1].output, Some(json!({"sid": "S1"})));
    assert_eq!(
        (runs[2].step_id.as_str(), runs[2].state),
        ("status", StepState::Running)
    );
    let e = s.get_execution("t-cs", "cs1").await.unwrap().unwrap();
    assert_eq!(
        (e.state, e.cursor.as_deref()),
        (ExecState::Running, Some("status"))
    );

    // Without an earlier step to write, only the boundary and the start.
    let seq = s
        .write_boundary(
            "cs1",
            "w-cs",
            None,
            &at("again", json!({})),
            Some(&call("again")),
            now + 4,
            1_000_000,
        )
        .await
        .unwrap();
    assert_eq!(seq, Some(4));
    let runs = s.step_runs("cs1").await.unwrap();
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[2].state, StepState::Running, "untouched");
}

/// `write_boundary` writes a step's end (a whole instant step, or a started run's end) and the
/// boundary after it together, and nothing at all for a worker without the lease. Runs last:
/// it claims whatever is runnable and only looks at its own execution.
async fn step_results_with_their_checkpoint(s: &dyn OrchestratorStore) {
    use super::StepWrite;
    use crate::domain::{StepKind, StepState};
    let now = 900_000_000_000;
    claimed(s, "rs1", "t-rs", "w-rs", now).await;
    let instant = condition_run();
    let ok = succeeded;
    let next = Checkpoint {
        state: ExecState::Running,
        cursor: Some("call".into()),
        ctx: json!({"steps": {"cond": {"output": {"result": true}}}}),
        handling: false,
        wake_us: None,
        output: None,
        error: None,
    };
    let recorded = StepWrite::Record(instant.clone(), ok(json!({"result": true})));
    assert_eq!(
        s.write_boundary(
            "rs1",
            "intruder",
            Some(&recorded),
            &next,
            None,
            now + 1,
            1_000_000
        )
        .await
        .unwrap(),
        None,
        "not the lease holder"
    );
    nothing_written(s, "t-rs", "rs1").await;
    assert_eq!(
        s.write_boundary(
            "rs1",
            "w-rs",
            Some(&recorded),
            &next,
            None,
            now + 2,
            1_000_000
        )
        .await
        .unwrap(),
        Some(1)
    );
    let e = s.get_execution("t-rs", "rs1").await.unwrap().unwrap();
    assert_eq!(e.cursor.as_deref(), Some("call"));
    assert_eq!(e.ctx, next.ctx);
    let runs = s.step_runs("rs1").await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, StepState::Succeeded);
    assert_eq!(runs[0].output, Some(json!({"result": true})));
    assert_eq!(runs[0].end_us, Some(now + 2));

    let call = NewStepRun {
        step_id: "call".into(),
        kind: StepKind::Call,
        method: "m".into(),
        input: Some(json!({"k": 2})),
        ..instant.clone()
    };
    let seq = s
        .start_step("rs1", "w-rs", &call, now + 3, 1_000_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seq, 2);
    let done = Checkpoint {
        state: ExecState::Succeeded,
        cursor: None,
        output: Some(json!({"sid": "S1"})),
        ..next.clone()
    };
    let answer = StepWrite::Finish(seq, ok(json!({"sid": "S1"})));
    assert!(s
        .write_boundary(
            "rs1",
            "intruder",
            Some(&answer),
            &done,
            None,
            now + 4,
            1_000_000
        )
        .await
        .unwrap()
        .is_none());
    let runs = s.step_runs("rs1").await.unwrap();
    assert_eq!(
        runs[1].state,
        StepState::Running,
        "nothing written without the lease"
    );
    assert!(s
        .write_boundary(
            "rs1",
            "w-rs",
            Some(&answer),
            &done,
            None,
            now + 5,
            1_000_000
        )
        .await
        .unwrap()
        .is_some());
    let e = s.get_execution("t-rs", "rs1").await.unwrap().unwrap();
    assert_eq!(e.state, ExecState::Succeeded);
    assert_eq!(e.output, Some(json!({"sid": "S1"})));
    assert_eq!(e.end_us, Some(now + 5));
    let runs = s.step_runs("rs1").await.unwrap();
    assert_eq!(runs[1].state, StepState::Succeeded);
    assert_eq!(runs[1].output, Some(json!({"sid": "S1"})));
    // Finished: the lease is gone, so a late writer changes nothing.
    assert!(s
        .write_boundary(
            "rs1",
            "w-rs",
            Some(&StepWrite::Finish(seq, ok(json!({})))),
            &done,
            None,
            now + 6,
            1_000_000
        )
        .await
        .unwrap()
        .is_none());
}

/// A worker died holding a tenant at its cap (or the platform at the global cap): its expired
/// leases are claimed again, although older pending work is queued and no slot is free.
async fn reclaims_expired_leases_at_the_caps(s: &dyn OrchestratorStore) {
    let now = 15_000_000;
    for id in ["cap-a", "cap-b"] {
        s.create_execution(&new_execution(id, "capped", "f", ""), None, 0, now)
            .await
            .unwrap();
    }
    let first = s.claim("w1", now, 1_000, 10, caps(100, 2)).await.unwrap();
    assert_eq!(first.len(), 2);
    // Queued while the tenant is at its cap; older than the leases' expiry.
    s.create_execution(
        &new_execution("cap-late", "capped", "f", ""),
        None,
        0,
        now + 1,
    )
    .await
    .unwrap();
    let ids = |v: &[ExecutionRecord]| {
        let mut ids: Vec<String> = v.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    };
    let again = s
        .claim("w2", now + 5_000, 1_000, 10, caps(100, 2))
        .await
        .unwrap();
    assert_eq!(
        ids(&again),
        ["cap-a", "cap-b"],
        "tenant cap: expired leases come back"
    );
    assert!(again.iter().all(|e| e.lease_owner == "w2"));
    assert_eq!(
        s.get_execution("capped", "cap-late")
            .await
            .unwrap()
            .unwrap()
            .state,
        ExecState::Pending,
        "still at the cap: the new one waits"
    );
    // Global cap: two running everywhere, cap 2, another tenant's work is pending.
    s.create_execution(
        &new_execution("g-new", "gnew", "f", ""),
        None,
        0,
        now + 5_001,
    )
    .await
    .unwrap();
    let global = s
        .claim("w3", now + 10_000, 1_000, 10, caps(2, 100))
        .await
        .unwrap();
    assert_eq!(
        ids(&global),
        ["cap-a", "cap-b"],
        "global cap: expired leases come back"
    );
    // Leave nothing runnable for the next checks.
    for (t, id) in [
        ("capped", "cap-a"),
        ("capped", "cap-b"),
        ("capped", "cap-late"),
        ("gnew", "g-new"),
    ] {
        s.cancel_execution(t, id, "", now + 10_001).await.unwrap();
    }
}

/// Concurrent retries with one request id get the first execution (or flow), never an error;
/// concurrent writers never push a tenant past `max_pending` (PostgreSQL included).
async fn concurrent_retries_and_the_pending_cap(s: &dyn OrchestratorStore) {
    let now = 40_000_000;
    let news: Vec<NewExecution> = (0..8)
        .map(|i| new_execution(&format!("rr-{i}"), "retry", "f", ""))
        .collect();
    let results = join_all(
        news.iter()
            .map(|n| s.create_execution(n, Some("same"), 0, now)),
    )
    .await;
    let results: Vec<(ExecutionRecord, bool)> = results
        .into_iter()
        .map(|r| r.expect("a concurrent retry is answered, not refused"))
        .collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let first = &results[0].0.id;
    assert!(results.iter().all(|(e, _)| &e.id == first));
    assert_eq!(
        s.list_executions("retry", &ExecutionFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    let def = json!({"steps": [{"id": "a", "set": {"vars": {"x": "1"}}}]});
    let flows: Vec<FlowRecord> = (0..8)
        .map(|i| flow("retry", &format!("fl-{i}"), "F", now))
        .collect();
    let made = join_all(
        flows
            .iter()
            .map(|f| s.create_flow(f, &def, "u", Some("same-flow"))),
    )
    .await;
    let made: Vec<FlowRecord> = made
        .into_iter()
        .map(|r| r.expect("a concurrent create_flow retry is answered"))
        .collect();
    assert!(made.iter().all(|f| f.flow_id == made[0].flow_id));
    assert_eq!(
        s.list_flows("retry", None, 100, false).await.unwrap().len(),
        1
    );

    // The pending cap under concurrency: RunFlow-style creates and events.
    let news: Vec<NewExecution> = (0..16)
        .map(|i| new_execution(&format!("pc-{i}"), "pcap", "f", ""))
        .collect();
    let results = join_all(news.iter().map(|n| s.create_execution(n, None, 3, now))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.kind == ErrorKind::RateLimited));
    let pending = |tenant: &'static str| async move {
        s.list_executions(
            tenant,
            &ExecutionFilter {
                state: Some(ExecState::Pending),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap()
        .len()
    };
    assert_eq!((ok, pending("pcap").await), (3, 3));
    let events: Vec<(String, NewExecution)> = (0..16)
        .map(|i| {
            (
                format!("pe-{i}"),
                new_execution(&format!("pe-exec-{i}"), "pev", "f", ""),
            )
        })
        .collect();
    join_all(
        events
            .iter()
            .map(|(id, n)| s.consume_event("src", id, "pev", std::slice::from_ref(n), 3, now)),
    )
    .await
    .into_iter()
    .for_each(|r| assert!(r.unwrap().is_some()));
    assert_eq!(pending("pev").await, 3);
}

async fn flows_and_versions(s: &dyn OrchestratorStore) {
    let now = 1_000_000;
    let def = json!({"steps": [{"id": "a", "set": {"vars": {"x": "1"}}}]});
    let a = s
        .create_flow(&flow("t1", "alpha", "Alpha", now), &def, "u", Some("req-1"))
        .await
        .unwrap();
    assert_eq!(
        (a.revision, a.draft_version, a.active_version),
        (1, Some(1), None)
    );
    // Same request id: the same flow back, nothing new.
    let again = s
        .create_flow(&flow("t1", "other", "Other", now), &def, "u", Some("req-1"))
        .await
        .unwrap();
    assert_eq!(again.flow_id, "alpha");
    let dup = s
        .create_flow(&flow("t1", "alpha", "Alpha", now), &def, "u", None)
        .await
        .unwrap_err();
    assert_eq!(dup.kind, ErrorKind::AlreadyExists);
    s.create_flow(&flow("t1", "beta", "Beta", now), &def, "u", None)
        .await
        .unwrap();
    s.create_flow(&flow("t2", "alpha", "Alpha", now), &def, "u", None)
        .await
        .unwrap();
    // Tenant-scoped, ordered by name, keyset pages.
    let page = s.list_flows("t1", None, 1, false).await.unwrap();
    assert_eq!(
        page.iter().map(|f| f.flow_id.as_str()).collect::<Vec<_>>(),
        ["alpha"]
    );
    let rest = s
        .list_flows("t1", Some(("Alpha".into(), "alpha".into())), 10, false)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|f| f.flow_id.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );
    assert!(s.get_flow("t2", "beta").await.unwrap().is_none());

    // Etags refuse lost updates; the draft is edited in place.
    let def2 = json!({"steps": [{"id": "b", "set": {"vars": {"y": "2"}}}]});
    let stale = s
        .update_flow(
            "t1",
            "alpha",
            Some(99),
            None,
            Some((def2.clone(), "u".into())),
            now + 1,
        )
        .await
        .unwrap_err();
    assert_eq!(stale.kind, ErrorKind::Conflict);
    let u = s
        .update_flow(
            "t1",
            "alpha",
            Some(1),
            Some(("Alpha 2".into(), "d".into())),
            Some((def2.clone(), "u".into())),
            now + 1,
        )
        .await
        .unwrap();
    assert_eq!(
        (u.revision, u.display_name.as_str(), u.draft_version),
        (2, "Alpha 2", Some(1))
    );
    assert_eq!(
        s.get_version("t1", "alpha", 1)
            .await
            .unwrap()
            .unwrap()
            .definition,
        def2
    );

    // Activation: draft → active, triggers replaced; a later draft is a new version.
    let v1 = s
        .activate_version(
            "t1",
            "alpha",
            1,
            None,
            "tenants/t1/users/u",
            &[trigger(
                "t1",
                "alpha",
                "ev",
                TriggerKind::Event,
                "voice.call.ended",
                None,
            )],
            now + 2,
        )
        .await
        .unwrap();
    assert_eq!(v1.state, VersionState::Active);
    let f = s.get_flow("t1", "alpha").await.unwrap().unwrap();
    assert_eq!((f.active_version, f.draft_version), (Some(1), None));
    let f = s
        .update_flow(
            "t1",
            "alpha",
            None,
            None,
            Some((def.clone(), "u".into())),
            now + 3,
        )
        .await
        .unwrap();
    assert_eq!((f.draft_version, f.latest_version), (Some(2), 2));
    assert_eq!(
        s.get_version("t1", "alpha", 1)
            .await
            .unwrap()
            .unwrap()
            .definition,
        def2,
        "active versions never change"
    );
    s.activate_version(
        "t1",
        "alpha",
        2,
        None,
        "x",
        &[trigger(
            "t1",
            "alpha",
            "s",
            TriggerKind::Schedule,
            "",
            Some(5),
        )],
        now + 4,
    )
    .await
    .unwrap();
    let v1 = s.get_version("t1", "alpha", 1).await.unwrap().unwrap();
    assert_eq!(v1.state, VersionState::Retired);
    assert!(v1.retire_us.is_some());
    let versions = s
        .list_versions("t1", "alpha", None, 10, None)
        .await
        .unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    let retired = s
        .list_versions("t1", "alpha", None, 10, Some(VersionState::Retired))
        .await
        .unwrap();
    assert_eq!(retired.len(), 1);
    let trig = s
        .list_triggers("t1", &TriggerFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        trig.iter()
            .map(|t| t.trigger_id.as_str())
            .collect::<Vec<_>>(),
        ["s"]
    );
    assert_eq!(s.due_schedules(5, 10).await.unwrap().len(), 1);
    assert_eq!(s.due_schedules(4, 10).await.unwrap().len(), 0);

    // Delete: refused while executions live, force cancels them.
    s.create_execution(&new_execution("e-del", "t1", "beta", ""), None, 0, now)
        .await
        .unwrap();
    let busy = s
        .delete_flow("t1", "beta", None, false, now)
        .await
        .unwrap_err();
    assert_eq!(busy.kind, ErrorKind::PreconditionFailed);
    s.delete_flow("t1", "beta", None, true, now).await.unwrap();
    assert!(s.get_flow("t1", "beta").await.unwrap().is_none());
    assert_eq!(
        s.get_execution("t1", "e-del").await.unwrap().unwrap().state,
        ExecState::Cancelled
    );
}

async fn executions_and_leases(s: &dyn OrchestratorStore) {
    let now = 10_000_000;
    let (e, created) = s
        .create_execution(&new_execution("e1", "t3", "f", "c1"), Some("r1"), 0, now)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(e.state, ExecState::Pending);
    let (same, created) = s
        .create_execution(&new_execution("e1b", "t3", "f", "c1"), Some("r1"), 0, now)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same.id, "e1");
    // The pending cap refuses and stores nothing.
    let full = s
        .create_execution(&new_execution("e2", "t3", "f", ""), None, 1, now)
        .await
        .unwrap_err();
    assert_eq!(full.kind, ErrorKind::RateLimited);
    assert!(s.get_execution("t3", "e2").await.unwrap().is_none());
    assert!(
        s.get_execution("other", "e1").await.unwrap().is_none(),
        "tenant-scoped"
    );

    // One claimant at a time.
    let w1 = s.claim("w1", now, 1_000, 10, caps(100, 100)).await.unwrap();
    assert_eq!(w1.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1"]);
    assert_eq!(w1[0].state, ExecState::Running);
    assert!(s
        .claim("w2", now + 10, 1_000, 10, caps(100, 100))
        .await
        .unwrap()
        .is_empty());
    let run = NewStepRun {
        step_id: "a".into(),
        kind: crate::domain::StepKind::Call,
        attempt: 1,
        iteration: vec![],
        method: "m".into(),
        input: Some(json!({"k": 1})),
    };
    assert_eq!(
        s.start_step("e1", "w1", &run, now + 20, 1_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        s.start_step("e1", "w2", &run, now + 20, 1_000)
            .await
            .unwrap(),
        None,
        "not the owner"
    );
    // The lease expires: another worker takes over and the first can no longer write.
    let w2 = s
        .claim("w2", now + 5_000, 1_000, 10, caps(100, 100))
        .await
        .unwrap();
    assert_eq!(w2.len(), 1);
    let cp = Checkpoint {
        state: ExecState::Running,
        cursor: Some("b".into()),
        ctx: json!({"vars": {"x": 1}}),
        handling: false,
        wake_us: None,
        output: None,
        error: None,
    };
    assert!(!s
        .checkpoint("e1", "w1", &cp, now + 5_001, 1_000)
        .await
        .unwrap());
    assert!(!s.renew("e1", "w1", now + 5_001, 1_000).await.unwrap());
    assert!(s
        .checkpoint("e1", "w2", &cp, now + 5_001, 1_000)
        .await
        .unwrap());
    // More than half of the lease left: its expiry stays as claimed (so the row's indexes do
    // not change); less than half: the boundary renews it.
    let expiry = || async { s.get_execution("t3", "e1").await.unwrap().unwrap().ready_us };
    assert_eq!(expiry().await, now + 6_000);
    assert!(s
        .checkpoint("e1", "w2", &cp, now + 5_600, 1_000)
        .await
        .unwrap());
    assert_eq!(expiry().await, now + 6_600);
    assert_eq!(
        s.start_step("e1", "w2", &run, now + 5_002, 1_000)
            .await
            .unwrap(),
        Some(2)
    );
    s.finish_step(
        "e1",
        2,
        &StepEnd {
            state: crate::domain::StepState::Succeeded,
            output: Some(json!({"ok": true})),
            error: None,
            resume_us: None,
        },
        now + 5_003,
    )
    .await
    .unwrap();
    let runs = s.step_runs("e1").await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].state, crate::domain::StepState::Succeeded);
    assert_eq!(runs[1].output, Some(json!({"ok": true})));
    assert_eq!(runs[0].input, Some(json!({"k": 1})));

    // Waiting holds no lease until it wakes.
    let wait = Checkpoint {
        state: ExecState::Waiting,
        wake_us: Some(now + 9_000),
        ..cp.clone()
    };
    assert!(s
        .checkpoint("e1", "w2", &wait, now + 5_004, 1_000)
        .await
        .unwrap());
    assert!(s
        .claim("w3", now + 8_999, 1_000, 10, caps(100, 100))
        .await
        .unwrap()
        .is_empty());
    let woke = s
        .claim("w3", now + 9_000, 1_000, 10, caps(100, 100))
        .await
        .unwrap();
    assert_eq!(woke[0].cursor.as_deref(), Some("b"));
    assert_eq!(woke[0].ctx, json!({"vars": {"x": 1}}));

    // Cancel: stops the lease holder; a finished execution cannot be cancelled.
    let c = s
        .cancel_execution("t3", "e1", "enough", now + 9_001)
        .await
        .unwrap();
    assert_eq!(c.state, ExecState::Cancelled);
    assert!(c.error.unwrap().message.contains("enough"));
    assert!(!s.renew("e1", "w3", now + 9_002, 1_000).await.unwrap());
    assert_eq!(
        s.cancel_execution("t3", "e1", "", now)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::PreconditionFailed
    );

    let list = s
        .list_executions("t3", &ExecutionFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let none = s
        .list_executions(
            "t3",
            &ExecutionFilter {
                state: Some(ExecState::Running),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    // Limits round-trip with etags.
    assert!(s.get_limits("t3").await.unwrap().is_none());
    let l = Limits {
        max_running: 2,
        max_running_per_flow: 1,
        max_running_per_client: 1,
        max_pending: 5,
    };
    let saved = s.put_limits("t3", l, None, now).await.unwrap();
    assert_eq!((saved.limits, saved.revision), (l, 1));
    assert_eq!(
        s.put_limits("t3", l, Some(7), now).await.unwrap_err().kind,
        ErrorKind::Conflict
    );
}

async fn fair_claims(s: &dyn OrchestratorStore) {
    let now = 20_000_000;
    // A one-tenant burst first, then a small tenant.
    for i in 0..12 {
        s.create_execution(
            &new_execution(&format!("burst-{i:02}"), "big", "f", ""),
            None,
            0,
            now + i,
        )
        .await
        .unwrap();
    }
    for i in 0..2 {
        s.create_execution(
            &new_execution(&format!("small-{i}"), "small", "f", ""),
            None,
            0,
            now + 100 + i,
        )
        .await
        .unwrap();
    }
    let got = s
        .claim("w", now + 1_000, 60_000_000, 4, caps(100, 100))
        .await
        .unwrap();
    let small = got.iter().filter(|e| e.tenant == "small").count();
    assert_eq!(got.len(), 4);
    assert_eq!(
        small,
        2,
        "the small tenant is not starved by the burst: {:?}",
        got.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    // Per-tenant cap: big already runs 2; with a cap of 3 only one more.
    let more = s
        .claim("w", now + 1_000, 60_000_000, 10, caps(100, 3))
        .await
        .unwrap();
    assert_eq!(more.len(), 1);
    // Global cap: 5 running everywhere, cap 6 → one more at most.
    s.put_limits(
        "big",
        Limits {
            max_running: 100,
            ..Limits::default()
        },
        None,
        now,
    )
    .await
    .unwrap();
    let global = s
        .claim("w", now + 1_000, 60_000_000, 10, caps(6, 3))
        .await
        .unwrap();
    assert_eq!(global.len(), 1);
    // Per-flow and per-client caps.
    for i in 0..3 {
        s.create_execution(
            &new_execution(
                &format!("cl-{i}"),
                "clients",
                "f",
                "tenants/clients/clients/c",
            ),
            None,
            0,
            now + i,
        )
        .await
        .unwrap();
    }
    s.put_limits(
        "clients",
        Limits {
            max_running: 10,
            max_running_per_flow: 10,
            max_running_per_client: 2,
            max_pending: 0,
        },
        None,
        now,
    )
    .await
    .unwrap();
    let per_client = s
        .claim("w", now + 1_000, 60_000_000, 10, caps(1000, 10))
        .await
        .unwrap();
    assert_eq!(
        per_client.iter().filter(|e| e.tenant == "clients").count(),
        2
    );
}

async fn events_and_schedules(s: &dyn OrchestratorStore) {
    let now = 30_000_000;
    let first = s
        .consume_event(
            "src",
            "ev-1",
            "t5",
            &[new_execution("ev-exec-1", "t5", "f", "")],
            0,
            now,
        )
        .await
        .unwrap();
    assert_eq!(first, Some(vec!["ev-exec-1".to_owned()]));
    let again = s
        .consume_event(
            "src",
            "ev-1",
            "t5",
            &[new_execution("ev-exec-2", "t5", "f", "")],
            0,
            now,
        )
        .await
        .unwrap();
    assert_eq!(again, None);
    assert!(s.get_execution("t5", "ev-exec-2").await.unwrap().is_none());
    // The same id from another source is another event.
    assert!(s
        .consume_event("other", "ev-1", "t5", &[], 0, now)
        .await
        .unwrap()
        .is_some());

    s.create_flow(
        &flow("t5", "sched", "S", now),
        &json!({"steps": []}),
        "u",
        None,
    )
    .await
    .unwrap();
    let t = trigger("t5", "sched", "tick", TriggerKind::Schedule, "", Some(now));
    s.activate_version("t5", "sched", 1, None, "x", std::slice::from_ref(&t), now)
        .await
        .unwrap();
    let fired = s
        .fire_schedule(
            &t,
            now,
            Some(now + 60_000_000),
            Some(&new_execution("sch-1", "t5", "sched", "")),
            now,
        )
        .await
        .unwrap();
    let twice = s
        .fire_schedule(
            &t,
            now,
            Some(now + 60_000_000),
            Some(&new_execution("sch-2", "t5", "sched", "")),
            now,
        )
        .await
        .unwrap();
    assert!(fired && !twice, "a slot fires once");
    assert!(s.get_execution("t5", "sch-2").await.unwrap().is_none());
    assert!(s
        .due_schedules(now + 59_000_000, 10)
        .await
        .unwrap()
        .iter()
        .all(|x| x.tenant != "t5"));

    // The tenant's pending cap holds for schedules too: t5 has two pending executions.
    let capped = s
        .fire_schedule_slot(
            &t,
            now + 60_000_000,
            Some(now + 120_000_000),
            Some(&new_execution("sch-3", "t5", "sched", "")),
            2,
            now,
        )
        .await
        .unwrap();
    assert!(!capped, "over max_pending the slot starts nothing");
    assert!(s.get_execution("t5", "sch-3").await.unwrap().is_none());

    // A trigger read before the flow was re-activated is stale: it fires nothing and does not
    // move the new trigger.
    s.update_flow(
        "t5",
        "sched",
        None,
        None,
        Some((json!({"steps": []}), "u".into())),
        now,
    )
    .await
    .unwrap();
    s.activate_version("t5", "sched", 2, None, "x", std::slice::from_ref(&t), now)
        .await
        .unwrap();
    let stale = s
        .fire_schedule(
            &t,
            now + 180_000_000,
            Some(now + 240_000_000),
            Some(&new_execution("sch-4", "t5", "sched", "")),
            now,
        )
        .await
        .unwrap();
    assert!(!stale, "a trigger of a retired version does not fire");
    assert!(s.get_execution("t5", "sch-4").await.unwrap().is_none());
    let live = s
        .list_triggers("t5", &TriggerFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        live.iter()
            .map(|x| (x.version, x.next_fire_us))
            .collect::<Vec<_>>(),
        [(2, Some(now))]
    );
    // Nor does one of a deleted flow.
    s.delete_flow("t5", "sched", None, true, now).await.unwrap();
    let gone = TriggerRecord {
        version: 2,
        ..t.clone()
    };
    assert!(!s
        .fire_schedule(
            &gone,
            now + 240_000_000,
            None,
            Some(&new_execution("sch-5", "t5", "sched", "")),
            now
        )
        .await
        .unwrap());
    assert!(s.get_execution("t5", "sch-5").await.unwrap().is_none());

    // Event dedupe is per tenant: another tenant's (source, id) is its own event.
    assert_eq!(
        s.consume_event(
            "src",
            "ev-1",
            "t6",
            &[new_execution("ev-exec-t6", "t6", "f", "")],
            0,
            now
        )
        .await
        .unwrap(),
        Some(vec!["ev-exec-t6".to_owned()])
    );
    // Purge forgets what is older than the cut-off, and only that.
    assert_eq!(s.purge_dedupe(now).await.unwrap(), 0);
    assert!(s.purge_dedupe(now + 1).await.unwrap() >= 4);
    assert!(
        s.consume_event("src", "ev-1", "t5", &[], 0, now + 2)
            .await
            .unwrap()
            .is_some(),
        "a purged id is new again"
    );
}
