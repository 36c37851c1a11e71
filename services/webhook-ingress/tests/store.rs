//! The event store on every backend: the conformance suite, then what only concurrency shows —
//! duplicates racing, group commit, dispatcher replicas racing for rows, ordering, leases, dead
//! letters and purge as replicas see them.
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use maxai_kit::{
    storage::{self, now_micros},
    ErrorKind,
};
use maxai_testkit::{backends, Backend};
use maxai_webhook_ingress::{
    domain::{Appended, Cutoffs, DeadLetterState, DeliveryState, EventFilter, Failure, Next},
    store::{
        conformance::{self, new_event},
        EventStore, GroupCommitConfig, GroupCommitter, SqlEventStore,
    },
    MIGRATIONS, STORAGE_NAME,
};

const SECOND: i64 = 1_000_000;

/// A store on `backend`; calling it twice gives two replicas (two pools) on one database.
async fn open(backend: &Backend) -> Arc<dyn EventStore> {
    let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
        .await
        .expect("connect");
    Arc::new(SqlEventStore::new(db))
}

fn committer(store: &Arc<dyn EventStore>) -> GroupCommitter {
    GroupCommitter::spawn(store.clone(), GroupCommitConfig::default())
}

#[tokio::test]
async fn store_conformance_on_every_backend() {
    for backend in backends().await {
        let store = open(&backend).await;
        conformance::run_all(store.as_ref()).await;
        eprintln!("webhook store conformance passed on {}", backend.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_provider_event_racing_is_stored_once() {
    for backend in backends().await {
        let store = open(&backend).await;
        let replica = open(&backend).await;
        let group = committer(&store);
        // Through the committer (deduplicated inside and across batches)...
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .submit(new_event("t-race", "evt-same", "call-1", true))
                        .await
                })
            })
            .collect();
        // ...and straight into the store from another replica (racing on the unique key).
        let direct: Vec<_> = (0..20)
            .map(|_| {
                let replica = replica.clone();
                tokio::spawn(async move {
                    replica
                        .append(&[new_event("t-race", "evt-same", "call-1", true)])
                        .await
                        .map(|mut v| v.remove(0))
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks.into_iter().chain(direct) {
            outcomes.push(t.await.expect("task").expect("append"));
        }
        let stored: Vec<&Appended> = outcomes.iter().filter(|o| !o.is_duplicate()).collect();
        assert_eq!(stored.len(), 1, "{}: exactly one is stored", backend.name);
        let id = stored[0].event().id.clone();
        assert!(
            outcomes.iter().all(|o| o.event().id == id),
            "{}: every duplicate names the stored event",
            backend.name
        );
        let filter = EventFilter {
            provider_event_id: Some("evt-same".into()),
            ..EventFilter::default()
        };
        let listed = store
            .list_events("t-race", &filter, None, 10)
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        let consumers: Vec<&str> = listed[0]
            .deliveries
            .iter()
            .map(|d| d.consumer.as_str())
            .collect();
        assert_eq!(
            consumers,
            ["orchestrator", "billing"],
            "one outbox row per consumer"
        );
        let claimed = store
            .claim("d", conformance::FAR, SECOND, 100)
            .await
            .expect("claim");
        assert_eq!(
            claimed.len(),
            2,
            "{}: nothing else was queued",
            backend.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_transactions_and_answers_after_commit() {
    for backend in backends().await {
        let store = open(&backend).await;
        let group = committer(&store);
        let n = 500;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let group = group.clone();
                let store = store.clone();
                tokio::spawn(async move {
                    let out = group
                        .submit(new_event(
                            "t-group",
                            &format!("g-{i}"),
                            &format!("call-{i}"),
                            true,
                        ))
                        .await
                        .expect("submit");
                    // Answered only after the commit: the event is readable at once.
                    let found = store
                        .get_event("t-group", &out.event().id)
                        .await
                        .expect("get");
                    (out, found.is_some())
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for t in tasks {
            let (out, visible) = t.await.expect("task");
            assert!(!out.is_duplicate());
            assert!(visible, "{}: stored before the answer", backend.name);
            ids.insert(out.event().id.clone());
        }
        assert_eq!(ids.len(), n);
        let stats = group.stats();
        eprintln!(
            "{}: {n} events in {} transactions (largest batch {})",
            backend.name,
            stats.transactions(),
            stats.largest_batch()
        );
        assert_eq!(stats.events(), n as u64);
        assert!(
            stats.transactions() < n as u64,
            "{}: {} transactions for {n} events",
            backend.name,
            stats.transactions()
        );
        assert!(stats.largest_batch() > 1);
        let listed = store
            .list_events("t-group", &EventFilter::default(), None, 1000)
            .await
            .expect("list");
        assert_eq!(listed.len(), n);
        assert!(listed.iter().all(|r| r.deliveries.len() == 2));
    }
}

#[tokio::test]
async fn a_failed_batch_is_retried_one_event_at_a_time() {
    for backend in backends().await {
        let store = open(&backend).await;
        let group = GroupCommitter::spawn(
            store.clone(),
            GroupCommitConfig {
                linger: Duration::from_millis(300),
                ..GroupCommitConfig::default()
            },
        );
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let group = group.clone();
                tokio::spawn(async move {
                    let mut e = new_event("t-poison", &format!("p-{i}"), "", false);
                    if i == 2 {
                        // Refused by the store: it must not take its neighbours down with it.
                        e.event.cloud_event_id.clear();
                    }
                    group.submit(e).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        for (i, r) in results.iter().enumerate() {
            if i == 2 {
                assert_eq!(
                    r.as_ref().expect_err("refused").kind,
                    ErrorKind::InvalidArgument
                );
            } else {
                assert!(!r.as_ref().expect("stored").is_duplicate());
            }
        }
        assert_eq!(group.stats().failed_batches(), 1, "{}", backend.name);
        assert_eq!(
            group.stats().transactions(),
            6,
            "one batch, then five alone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_never_lease_a_row_twice_and_keep_each_call_in_order() {
    for backend in backends().await {
        let store = open(&backend).await;
        let calls = 25;
        let per_call = 4;
        let mut batch = Vec::new();
        for step in 0..per_call {
            for call in 0..calls {
                batch.push(new_event(
                    "t-claim",
                    &format!("call-{call}-step-{step}"),
                    &format!("call-{call}"),
                    false,
                ));
            }
        }
        store.append(&batch).await.expect("append");

        let now = now_micros() + SECOND;
        let seen = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
        let in_flight = Arc::new(Mutex::new(HashSet::<String>::new()));
        let mut replicas = Vec::new();
        for r in 0..4 {
            // Two pools, as two dispatcher processes would have.
            let s = if r % 2 == 0 {
                store.clone()
            } else {
                open(&backend).await
            };
            let seen = seen.clone();
            let in_flight = in_flight.clone();
            replicas.push(tokio::spawn(async move {
                let owner = format!("replica-{r}");
                let mut idle = 0;
                while idle < 20 {
                    let got = s.claim(&owner, now, 60 * SECOND, 7).await.expect("claim");
                    if got.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for d in got {
                        let key = d.event.event.ordering_key.clone();
                        assert!(
                            in_flight.lock().expect("lock").insert(key.clone()),
                            "two rows of {key} leased at once"
                        );
                        seen.lock()
                            .expect("lock")
                            .push((d.event.event.provider_event_id.clone(), d.outbox_id));
                        tokio::task::yield_now().await;
                        in_flight.lock().expect("lock").remove(&key);
                        s.delivered(d.outbox_id, &owner, false, now)
                            .await
                            .expect("only the owner completes, once");
                    }
                }
            }));
        }
        for r in replicas {
            r.await.expect("replica");
        }
        let seen = seen.lock().expect("lock").clone();
        let distinct: HashSet<i64> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "{}: a row was delivered twice",
            backend.name
        );
        assert_eq!(
            seen.len(),
            calls * per_call,
            "{}: every row once",
            backend.name
        );
        // Per call, the steps were delivered in the order they were stored.
        let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pid, _) in &seen {
            let (call, _) = pid.split_once("-step-").expect("name");
            per.entry(call.to_owned()).or_default().push(pid.clone());
        }
        for (call, steps) in per {
            let want: Vec<String> = (0..per_call).map(|s| format!("{call}-step-{s}")).collect();
            assert_eq!(steps, want, "{}: {call} out of order", backend.name);
        }
    }
}

#[tokio::test]
async fn a_call_waits_for_its_earlier_event_and_an_expired_lease_moves_to_another_replica() {
    for backend in backends().await {
        let a = open(&backend).await;
        let b = open(&backend).await;
        a.append(&[
            new_event("t-lease", "first", "call-7", false),
            new_event("t-lease", "second", "call-7", false),
        ])
        .await
        .expect("append");
        let now = now_micros() + SECOND;
        let lease = 10 * SECOND;
        let got = a.claim("a", now, lease, 10).await.expect("claim");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.event.provider_event_id, "first");
        // The second event of the call is not claimable before the first is delivered, by
        // anyone, even long after (while the first keeps being retried).
        assert!(b
            .claim("b", now, lease, 10)
            .await
            .expect("claim")
            .is_empty());
        // Replica a stalls; its lease runs out and b takes the row over.
        let later = now + lease;
        let taken = b.claim("b", later, lease, 10).await.expect("claim");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].outbox_id, got[0].outbox_id);
        assert_eq!(taken[0].attempt, 2);
        assert_eq!(
            a.delivered(got[0].outbox_id, "a", false, later)
                .await
                .expect_err("a lost the lease")
                .kind,
            ErrorKind::Conflict
        );
        assert!(a
            .claim("a", later, lease, 10)
            .await
            .expect("claim")
            .is_empty());
        b.delivered(taken[0].outbox_id, "b", false, later)
            .await
            .expect("delivered");
        let next = a.claim("a", later, lease, 10).await.expect("claim");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].event.event.provider_event_id, "second");
    }
}

#[tokio::test]
async fn dead_letters_replay_and_purge_keeps_what_is_undelivered() {
    for backend in backends().await {
        let store = open(&backend).await;
        let old = now_micros() - 40 * 86_400 * SECOND;
        let mut events = Vec::new();
        for name in ["delivered", "dead", "pending"] {
            let mut e = new_event("t-life", name, &format!("call-{name}"), false);
            e.received_at_us = old;
            events.push(e);
        }
        let ids: Vec<String> = store
            .append(&events)
            .await
            .expect("append")
            .iter()
            .map(|a| a.event().id.clone())
            .collect();
        let now = now_micros() + SECOND;
        let budget = 3;
        // Deliver one; fail "dead" through its whole budget; fail "pending" once.
        for round in 0..budget {
            let at = now + round * SECOND;
            for d in store.claim("a", at, SECOND / 2, 10).await.expect("claim") {
                let name = d.event.event.provider_event_id.clone();
                let failure = Failure {
                    status_code: "UNAVAILABLE".into(),
                    error_message: format!("{name} refused"),
                    attempted_at_us: at,
                    latency_us: 2_000,
                };
                let outcome = match name.as_str() {
                    "delivered" => store.delivered(d.outbox_id, "a", false, at).await,
                    "dead" if d.round_attempt >= budget => {
                        store.failed(d.outbox_id, "a", &failure, Next::Dead).await
                    }
                    "dead" => {
                        store
                            .failed(d.outbox_id, "a", &failure, Next::RetryAt(at + 1))
                            .await
                    }
                    _ => {
                        store
                            .failed(d.outbox_id, "a", &failure, Next::RetryAt(conformance::FAR))
                            .await
                    }
                };
                outcome.expect("outcome");
            }
        }
        let letters = store
            .list_dead_letters("t-life", &Default::default(), None, 10)
            .await
            .expect("list");
        assert_eq!(letters.len(), 1, "{}", backend.name);
        let dl = letters[0].clone();
        assert_eq!(dl.event.id, ids[1]);
        assert_eq!(
            (dl.state, dl.attempt_count),
            (DeadLetterState::Failed, budget)
        );
        assert_eq!(dl.attempts.len() as i64, budget);

        let replayed = store
            .replay_dead_letter("t-life", dl.id, now + 10 * SECOND)
            .await
            .expect("replay");
        assert_eq!(replayed.state, DeadLetterState::Replaying);
        let again = store
            .claim("b", now + 10 * SECOND, SECOND, 10)
            .await
            .expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].round_attempt, 1, "a fresh budget");
        assert_eq!(
            again[0].attempt,
            budget + 1,
            "attempts count across replays"
        );
        store
            .delivered(again[0].outbox_id, "b", false, now + 10 * SECOND)
            .await
            .expect("delivered");
        assert_eq!(
            store
                .get_dead_letter("t-life", dl.id)
                .await
                .expect("get")
                .expect("kept")
                .state,
            DeadLetterState::Replayed
        );

        // Everything is 40 days old; only the event still pending delivery survives a 30-day
        // retention.
        let cutoffs = Cutoffs::at(now_micros(), 30 * 86_400, 30 * 86_400, 30 * 86_400);
        let purged = store.purge("t-life", &cutoffs, 1).await.expect("purge");
        assert_eq!(purged.events, 2, "{}", backend.name);
        let left = store
            .list_events("t-life", &EventFilter::default(), None, 10)
            .await
            .expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event.id, ids[2]);
        assert_eq!(left[0].delivery_state(), DeliveryState::Retrying);
        assert!(store
            .get_dead_letter("t-life", dl.id)
            .await
            .expect("get")
            .is_none());
    }
}
