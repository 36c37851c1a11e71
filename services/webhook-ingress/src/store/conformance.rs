//! The behaviour every [`EventStore`] must have; the tests stamp it onto SQLite and PostgreSQL.
//!
//! Sections use their own tenants. Claiming is global, so a section that claims first drains
//! whatever earlier sections left pending.
use maxai_kit::{storage::now_micros, ErrorKind};

use super::EventStore;
use crate::domain::{
    Account, Appended, CanonicalEvent, Cutoffs, DeadLetterFilter, DeadLetterState, Delivery,
    DeliveryState, EndpointFilter, EndpointKey, EndpointUpdate, EventFilter, Failure, Header,
    NewEndpoint, NewEvent, NewQuarantined, NewSecret, Next, Provider, QuarantineFailure,
    QuarantineFilter, QuarantineReason, QuarantineState, RetentionSettings, SchemaError,
    SecretState, MAX_ATTEMPTS_KEPT,
};

/// A claim time later than anything the suite schedules.
pub const FAR: i64 = i64::MAX / 4;
const SECOND: i64 = 1_000_000;

pub fn canonical(tenant: &str, provider_event_id: &str, ordering_key: &str) -> CanonicalEvent {
    CanonicalEvent {
        cloud_event_id: format!("retell:{provider_event_id}"),
        source: "maxai://providers/retell".into(),
        event_type: "voice.call.ended".into(),
        subject: format!("calls/{ordering_key}"),
        time_us: 1_700_000_000_000_000,
        data: r#"{"call_id":"c1","duration_ms":61000}"#.into(),
        tenant_id: tenant.into(),
        client_id: "dental".into(),
        provider: Provider::Retell,
        provider_event_id: provider_event_id.into(),
        ordering_key: ordering_key.into(),
    }
}

/// An event of `tenant` for the orchestrator (and billing when `billing`).
pub fn new_event(
    tenant: &str,
    provider_event_id: &str,
    ordering_key: &str,
    billing: bool,
) -> NewEvent {
    let mut consumers = vec!["orchestrator".to_owned()];
    if billing {
        consumers.push("billing".to_owned());
    }
    NewEvent {
        event: canonical(tenant, provider_event_id, ordering_key),
        endpoint_id: "retell-main".into(),
        received_at_us: now_micros(),
        replayed_from: None,
        consumers,
    }
}

fn kind_of<T: std::fmt::Debug>(r: maxai_kit::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind
}

fn stored(a: &Appended) -> String {
    match a {
        Appended::Stored(r) => r.id.clone(),
        Appended::Duplicate(r) => panic!("expected a new event, got a duplicate of {}", r.id),
    }
}

/// Delivers everything claimable at any time, so a section starts from an empty queue.
pub async fn drain(store: &dyn EventStore) {
    loop {
        let batch = store.claim("drain", FAR, 1, 1000).await.expect("claim");
        if batch.is_empty() {
            return;
        }
        for d in batch {
            store
                .delivered(d.outbox_id, "drain", false, FAR)
                .await
                .expect("delivered");
        }
    }
}

fn failure(at: i64, message: &str) -> Failure {
    Failure {
        status_code: "UNAVAILABLE".into(),
        error_message: message.into(),
        attempted_at_us: at,
        latency_us: 1500,
    }
}

fn keys(ds: &[Delivery]) -> Vec<(String, String)> {
    ds.iter()
        .map(|d| (d.event.event.provider_event_id.clone(), d.consumer.clone()))
        .collect()
}

pub async fn run_all(store: &dyn EventStore) {
    append_and_read(store).await;
    duplicates(store).await;
    listing(store).await;
    ordering_and_leases(store).await;
    dead_letters(store).await;
    attempts_are_capped(store).await;
    quarantine(store).await;
    endpoints(store).await;
    secrets(store).await;
    retention(store).await;
}

async fn append_and_read(store: &dyn EventStore) {
    assert!(store.append(&[]).await.expect("empty batch").is_empty());
    let mut unkeyed = new_event("t-append", "evt-3", "", false);
    unkeyed.consumers = vec!["orchestrator".into(), "orchestrator".into()];
    unkeyed.replayed_from = Some("q-1".into());
    let batch = vec![
        new_event("t-append", "evt-1", "call-1", true),
        new_event("t-append", "evt-2", "call-1", false),
        unkeyed,
    ];
    let out = store.append(&batch).await.expect("append");
    assert_eq!(out.len(), 3);
    let ids: Vec<String> = out.iter().map(stored).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    assert_eq!(out[0].event().tenant_id, "t-append");
    assert_eq!(out[0].event().cloud_event_id, "retell:evt-1");

    let rec = store
        .get_event("t-append", &ids[0])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(rec.event.id, ids[0]);
    assert_eq!(rec.event.event, batch[0].event);
    assert_eq!(rec.event.endpoint_id, "retell-main");
    assert_eq!(rec.event.received_at_us, batch[0].received_at_us);
    assert_eq!(rec.event.replayed_from, None);
    let consumers: Vec<&str> = rec.deliveries.iter().map(|d| d.consumer.as_str()).collect();
    assert_eq!(consumers, ["orchestrator", "billing"]);
    for d in &rec.deliveries {
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.attempts, 0);
        assert!(d.next_attempt_at_us.is_some());
        assert!(!d.dead_letter && !d.duplicate && d.last_error.is_none());
    }
    assert_eq!(rec.delivery_state(), DeliveryState::Pending);

    let third = store
        .get_event("t-append", &ids[2])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        third.deliveries.len(),
        1,
        "a consumer listed twice gets one row"
    );
    assert_eq!(third.event.replayed_from.as_deref(), Some("q-1"));
    assert_eq!(third.event.event.ordering_key, "");

    assert!(store
        .get_event("t-other", &ids[0])
        .await
        .expect("get")
        .is_none());
    assert!(store
        .get_event("t-append", "nope")
        .await
        .expect("get")
        .is_none());

    let mut bad = new_event("t-append", "", "k", false);
    bad.event.provider_event_id.clear();
    assert_eq!(
        kind_of(store.append(&[bad]).await),
        ErrorKind::InvalidArgument
    );
}

async fn duplicates(store: &dyn EventStore) {
    let first = new_event("t-dup", "dup-1", "call-d", true);
    let mut again = first.clone();
    again.event.data = r#"{"changed":true}"#.into();
    let other = new_event("t-dup", "dup-2", "call-d", false);
    let out = store
        .append(&[first.clone(), again.clone(), other])
        .await
        .expect("append");
    let id = stored(&out[0]);
    assert_eq!(out[1], Appended::Duplicate(out[0].event().clone()));
    stored(&out[2]);

    let retry = store.append(&[again.clone()]).await.expect("append");
    assert_eq!(retry, vec![Appended::Duplicate(out[0].event().clone())]);
    assert!(retry[0].is_duplicate());

    let rec = store
        .get_event("t-dup", &id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        rec.event.event.data, first.event.data,
        "the first copy wins"
    );
    assert_eq!(rec.deliveries.len(), 2, "no outbox rows for duplicates");

    // Unique per provider, not across providers.
    let mut stripe = first.clone();
    stripe.event.provider = Provider::Stripe;
    let out = store.append(&[stripe]).await.expect("append");
    stored(&out[0]);

    let dup = EventFilter {
        provider_event_id: Some("dup-1".into()),
        ..EventFilter::default()
    };
    let listed = store
        .list_events("t-dup", &dup, None, 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
}

async fn listing(store: &dyn EventStore) {
    let base = 1_000 * SECOND;
    let mut batch = Vec::new();
    for i in 0..5 {
        let mut e = new_event("t-list", &format!("list-{i}"), &format!("call-l{i}"), false);
        e.received_at_us = base + i * SECOND;
        if i % 2 == 1 {
            e.event.client_id = "spa".into();
            e.event.event_type = "voice.call.started".into();
        }
        batch.push(e);
    }
    let out = store.append(&batch).await.expect("append");
    let ids: Vec<String> = out.iter().map(stored).collect();

    let all = store
        .list_events("t-list", &EventFilter::default(), None, 10)
        .await
        .expect("list");
    let got: Vec<&str> = all.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(
        got,
        [&ids[4], &ids[3], &ids[2], &ids[1], &ids[0]],
        "newest first"
    );

    let page = store
        .list_events("t-list", &EventFilter::default(), None, 2)
        .await
        .expect("list");
    assert_eq!(page.len(), 2);
    let next = store
        .list_events(
            "t-list",
            &EventFilter::default(),
            Some(&page[1].event.page_key()),
            2,
        )
        .await
        .expect("list");
    let got: Vec<&str> = next.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(got, [&ids[2], &ids[1]]);
    assert_eq!(
        kind_of(
            store
                .list_events("t-list", &EventFilter::default(), Some("garbage"), 2)
                .await
        ),
        ErrorKind::InvalidArgument
    );

    let count = |f: EventFilter| async move {
        store
            .list_events("t-list", &f, None, 100)
            .await
            .expect("list")
            .len()
    };
    assert_eq!(
        count(EventFilter {
            client_id: Some("spa".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(EventFilter {
            event_type: Some("voice.call.ended".into()),
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(EventFilter {
            subject: Some("calls/call-l3".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(EventFilter {
            provider: Some(Provider::Retell),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(EventFilter {
            provider: Some(Provider::Twilio),
            ..Default::default()
        })
        .await,
        0
    );
    assert_eq!(
        count(EventFilter {
            start_us: Some(base + SECOND),
            end_us: Some(base + 3 * SECOND),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(EventFilter {
            delivery_state: Some(DeliveryState::Pending),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(EventFilter {
            delivery_state: Some(DeliveryState::Delivered),
            ..Default::default()
        })
        .await,
        0
    );
    assert!(store
        .list_events("t-nobody", &EventFilter::default(), None, 10)
        .await
        .expect("list")
        .is_empty());
}

async fn ordering_and_leases(store: &dyn EventStore) {
    drain(store).await;
    let out = store
        .append(&[
            new_event("t-order", "o-1", "call-9", false),
            new_event("t-order", "o-2", "call-9", false),
            new_event("t-order", "o-3", "call-10", false),
        ])
        .await
        .expect("append");
    let ids: Vec<String> = out.iter().map(stored).collect();
    let now = now_micros() + SECOND;
    let lease = 30 * SECOND;

    let a = store.claim("a", now, lease, 10).await.expect("claim");
    assert_eq!(
        keys(&a),
        [
            ("o-1".to_owned(), "orchestrator".to_owned()),
            ("o-3".to_owned(), "orchestrator".to_owned())
        ],
        "only the head of each ordering key"
    );
    assert_eq!((a[0].attempt, a[0].round_attempt), (1, 1));
    assert_eq!(a[0].lease_until_us, now + lease);
    assert_eq!(a[0].event.id, ids[0]);
    assert_eq!(a[0].event.event, canonical("t-order", "o-1", "call-9"));
    assert!(store
        .claim("b", now, lease, 10)
        .await
        .expect("claim")
        .is_empty());

    assert_eq!(
        kind_of(store.delivered(a[0].outbox_id, "b", false, now).await),
        ErrorKind::Conflict,
        "only the lease owner completes"
    );
    store
        .delivered(a[0].outbox_id, "a", true, now)
        .await
        .expect("delivered");
    assert_eq!(
        kind_of(store.delivered(a[0].outbox_id, "a", false, now).await),
        ErrorKind::Conflict,
        "a row completes once"
    );
    let rec = store
        .get_event("t-order", &ids[0])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(rec.delivery_state(), DeliveryState::Delivered);
    assert!(rec.deliveries[0].duplicate);
    assert_eq!(rec.deliveries[0].delivered_at_us, Some(now));
    assert_eq!(rec.deliveries[0].next_attempt_at_us, None);

    // o-2 is the head of call-9 now.
    let b = store.claim("b", now, lease, 10).await.expect("claim");
    assert_eq!(keys(&b), [("o-2".to_owned(), "orchestrator".to_owned())]);

    // A fail schedules a retry; until then the row (and its key) waits.
    store
        .failed(
            b[0].outbox_id,
            "b",
            &failure(now, "consumer down"),
            Next::RetryAt(now + 60 * SECOND),
        )
        .await
        .expect("failed");
    let rec = store
        .get_event("t-order", &ids[1])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(rec.delivery_state(), DeliveryState::Retrying);
    assert_eq!(
        rec.deliveries[0].last_error.as_deref(),
        Some("consumer down")
    );
    assert_eq!(
        rec.deliveries[0].next_attempt_at_us,
        Some(now + 60 * SECOND)
    );
    assert_eq!(
        kind_of(
            store
                .failed(b[0].outbox_id, "b", &failure(now, "again"), Next::Dead)
                .await
        ),
        ErrorKind::Conflict,
        "the lease ended with the failure"
    );
    let retrying = EventFilter {
        delivery_state: Some(DeliveryState::Retrying),
        ..EventFilter::default()
    };
    let listed = store
        .list_events("t-order", &retrying, None, 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event.id, ids[1]);

    // Lease expiry: o-3 is still leased to "a" until now + lease.
    assert!(store
        .claim("b", now + SECOND, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    let later = now + lease + SECOND;
    let taken = store.claim("b", later, lease, 10).await.expect("claim");
    assert_eq!(
        keys(&taken),
        [("o-3".to_owned(), "orchestrator".to_owned())]
    );
    assert_eq!(taken[0].attempt, 2, "an expired lease counts as an attempt");
    assert_eq!(
        kind_of(store.delivered(taken[0].outbox_id, "a", false, later).await),
        ErrorKind::Conflict,
        "the old owner lost the row"
    );
    store
        .delivered(taken[0].outbox_id, "b", false, later)
        .await
        .expect("delivered");

    // The retry comes due.
    let due = store
        .claim("a", now + 61 * SECOND, lease, 10)
        .await
        .expect("claim");
    assert_eq!(keys(&due), [("o-2".to_owned(), "orchestrator".to_owned())]);
    assert_eq!((due[0].attempt, due[0].round_attempt), (2, 2));
    store
        .delivered(due[0].outbox_id, "a", false, now + 61 * SECOND)
        .await
        .expect("delivered");
    let delivered = EventFilter {
        delivery_state: Some(DeliveryState::Delivered),
        ..EventFilter::default()
    };
    assert_eq!(
        store
            .list_events("t-order", &delivered, None, 10)
            .await
            .expect("list")
            .len(),
        3
    );
    assert!(store
        .claim("a", FAR, lease, 10)
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        kind_of(store.claim("", now, lease, 10).await),
        ErrorKind::InvalidArgument
    );
}

async fn dead_letters(store: &dyn EventStore) {
    drain(store).await;
    let out = store
        .append(&[new_event("t-dead", "d-1", "call-x", true)])
        .await
        .expect("append");
    let id = stored(&out[0]);
    let now = now_micros() + SECOND;
    let claimed = store.claim("a", now, SECOND, 10).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    for d in &claimed {
        if d.consumer == "billing" {
            store
                .failed(
                    d.outbox_id,
                    "a",
                    &failure(now, "billing refused"),
                    Next::Dead,
                )
                .await
                .expect("dead");
        } else {
            store
                .delivered(d.outbox_id, "a", false, now)
                .await
                .expect("delivered");
        }
    }
    let rec = store
        .get_event("t-dead", &id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(rec.delivery_state(), DeliveryState::DeadLettered);
    let billing = rec
        .deliveries
        .iter()
        .find(|d| d.consumer == "billing")
        .expect("billing row");
    assert!(billing.dead_letter);
    assert_eq!(billing.state, DeliveryState::DeadLettered);
    assert_eq!(billing.next_attempt_at_us, None);
    let dead = EventFilter {
        delivery_state: Some(DeliveryState::DeadLettered),
        ..EventFilter::default()
    };
    assert_eq!(
        store
            .list_events("t-dead", &dead, None, 10)
            .await
            .expect("list")
            .len(),
        1
    );

    let letters = store
        .list_dead_letters("t-dead", &DeadLetterFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 1);
    let dl = &letters[0];
    assert_eq!(dl.id, billing.outbox_id);
    assert_eq!(dl.tenant_id, "t-dead");
    assert_eq!(dl.consumer, "billing");
    assert_eq!(dl.state, DeadLetterState::Failed);
    assert_eq!(dl.attempt_count, 1);
    assert_eq!(dl.last_error, "billing refused");
    assert_eq!(dl.created_at_us, now);
    assert_eq!(dl.event.id, id);
    assert_eq!(dl.attempts.len(), 1);
    assert_eq!(dl.attempts[0].attempt, 1);
    assert_eq!(dl.attempts[0].status_code, "UNAVAILABLE");
    assert_eq!(dl.attempts[0].latency_us, 1500);
    assert_eq!(
        store
            .get_dead_letter("t-dead", dl.id)
            .await
            .expect("get")
            .as_ref(),
        Some(dl)
    );
    assert!(store
        .get_dead_letter("t-other", dl.id)
        .await
        .expect("get")
        .is_none());
    assert!(store
        .list_dead_letters("t-other", &DeadLetterFilter::default(), None, 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        kind_of(store.replay_dead_letter("t-other", dl.id, now).await),
        ErrorKind::NotFound
    );
    let only = |consumer: &str, state: Option<DeadLetterState>| DeadLetterFilter {
        consumer: Some(consumer.into()),
        state,
        ..DeadLetterFilter::default()
    };
    assert!(store
        .list_dead_letters("t-dead", &only("orchestrator", None), None, 10)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store
            .list_dead_letters(
                "t-dead",
                &only("billing", Some(DeadLetterState::Failed)),
                None,
                10
            )
            .await
            .expect("list")
            .len(),
        1
    );

    // A dead row does not hold back the later events of its key.
    let next = store
        .append(&[new_event("t-dead", "d-2", "call-x", true)])
        .await
        .expect("append");
    stored(&next[0]);
    let claimed = store
        .claim("a", now + SECOND, SECOND, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    for d in claimed {
        store
            .delivered(d.outbox_id, "a", false, now + SECOND)
            .await
            .expect("delivered");
    }

    // Replay: pending again with a fresh budget, attempts counted across replays.
    let replay_at = now + 2 * SECOND;
    let replayed = store
        .replay_dead_letter("t-dead", dl.id, replay_at)
        .await
        .expect("replay");
    assert_eq!(replayed.state, DeadLetterState::Replaying);
    assert_eq!(replayed.replayed_at_us, Some(replay_at));
    assert_eq!(
        store
            .replay_dead_letter("t-dead", dl.id, replay_at + 1)
            .await
            .expect("replay while replaying")
            .replayed_at_us,
        Some(replay_at),
        "replaying a replaying letter changes nothing"
    );
    let again = store
        .claim("b", replay_at, SECOND, 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].outbox_id, dl.id);
    assert_eq!((again[0].attempt, again[0].round_attempt), (2, 1));
    store
        .delivered(again[0].outbox_id, "b", false, replay_at)
        .await
        .expect("delivered");
    let done = store
        .get_dead_letter("t-dead", dl.id)
        .await
        .expect("get")
        .expect("still a dead letter");
    assert_eq!(done.state, DeadLetterState::Replayed);
    assert_eq!(done.attempt_count, 2);
    assert_eq!(
        done.created_at_us, now,
        "created when delivery first gave up"
    );
    let rec = store
        .get_event("t-dead", &id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(rec.delivery_state(), DeliveryState::Delivered);
    assert_eq!(
        store
            .replay_dead_letter("t-dead", dl.id, replay_at + 5)
            .await
            .expect("replay a replayed letter")
            .state,
        DeadLetterState::Replaying
    );
    drain(store).await;
    assert_eq!(
        kind_of(store.replay_dead_letter("t-dead", 999_999_999, now).await),
        ErrorKind::NotFound
    );
    let first_page = store
        .list_dead_letters("t-dead", &DeadLetterFilter::default(), None, 1)
        .await
        .expect("list");
    assert!(store
        .list_dead_letters(
            "t-dead",
            &DeadLetterFilter::default(),
            Some(&first_page[0].page_key()),
            1
        )
        .await
        .expect("list")
        .is_empty());
}

async fn attempts_are_capped(store: &dyn EventStore) {
    drain(store).await;
    let out = store
        .append(&[new_event("t-cap", "cap-1", "call-cap", false)])
        .await
        .expect("append");
    stored(&out[0]);
    let total = MAX_ATTEMPTS_KEPT + 3;
    let t0 = now_micros() + SECOND;
    let mut row = 0;
    for i in 0..total {
        let at = t0 + i * SECOND;
        let c = store.claim("a", at, SECOND / 2, 10).await.expect("claim");
        assert_eq!(c.len(), 1);
        row = c[0].outbox_id;
        let next = if i + 1 == total {
            Next::Dead
        } else {
            Next::RetryAt(at + 1)
        };
        store
            .failed(row, "a", &failure(at, &format!("fail {}", i + 1)), next)
            .await
            .expect("failed");
    }
    let dl = store
        .get_dead_letter("t-cap", row)
        .await
        .expect("get")
        .expect("dead letter");
    assert_eq!(dl.attempt_count, total);
    assert_eq!(dl.attempts.len() as i64, MAX_ATTEMPTS_KEPT);
    assert_eq!(
        dl.attempts[0].attempt,
        total - MAX_ATTEMPTS_KEPT + 1,
        "oldest first"
    );
    assert_eq!(dl.attempts.last().map(|a| a.attempt), Some(total));
    assert_eq!(dl.last_error, format!("fail {total}"));
}

fn quarantined(tenant: &str, at: i64) -> NewQuarantined {
    NewQuarantined {
        tenant_id: tenant.into(),
        client_id: "dental".into(),
        endpoint_id: "ghl-main".into(),
        provider: Provider::Ghl,
        raw_body: vec![b'{', 0xff, 0x00, b'}'],
        headers: vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "x-ghl-signature".into(),
                value: "sig".into(),
            },
        ],
        provider_event_type: "ContactCreate".into(),
        provider_event_id: "wh-1".into(),
        failure: QuarantineFailure {
            reason: QuarantineReason::SchemaInvalid,
            schema_errors: vec![SchemaError {
                instance_path: "/contact/email".into(),
                schema_path: "/properties/contact/properties/email/format".into(),
                message: "not an email".into(),
            }],
            error_message: String::new(),
            schema_url: "https://schemas.maxai.dev/ghl/ContactCreate.json".into(),
        },
        received_at_us: at,
    }
}

async fn quarantine(store: &dyn EventStore) {
    let base = 2_000 * SECOND;
    let a = store
        .quarantine(&quarantined("t-q", base))
        .await
        .expect("quarantine");
    let mut other = quarantined("t-q", base + SECOND);
    other.provider = Provider::Twilio;
    other.client_id = "spa".into();
    let b = store.quarantine(&other).await.expect("quarantine");
    assert_eq!(a.state, QuarantineState::Quarantined);
    let got = store
        .get_quarantined("t-q", &a.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got, a);
    assert_eq!(
        got.entry.raw_body,
        vec![b'{', 0xff, 0x00, b'}'],
        "byte for byte"
    );
    assert!(store
        .get_quarantined("t-other", &a.id)
        .await
        .expect("get")
        .is_none());

    let all = store
        .list_quarantined("t-q", &QuarantineFilter::default(), None, 10)
        .await
        .expect("list");
    let got: Vec<&str> = all.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(got, [&b.id, &a.id], "newest first");
    let next = store
        .list_quarantined(
            "t-q",
            &QuarantineFilter::default(),
            Some(&all[0].page_key()),
            10,
        )
        .await
        .expect("list");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, a.id);
    let by = |f: QuarantineFilter| async move {
        store
            .list_quarantined("t-q", &f, None, 10)
            .await
            .expect("list")
            .len()
    };
    assert_eq!(
        by(QuarantineFilter {
            provider: Some(Provider::Twilio),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(QuarantineFilter {
            client_id: Some("dental".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(QuarantineFilter {
            start_us: Some(base + SECOND),
            ..Default::default()
        })
        .await,
        1
    );

    let refused = QuarantineFailure {
        reason: QuarantineReason::NormalizationFailed,
        schema_errors: Vec::new(),
        error_message: "no contact id".into(),
        schema_url: String::new(),
    };
    let failed = store
        .record_replay_failure("t-q", &a.id, &refused, base + 5 * SECOND)
        .await
        .expect("record failure");
    assert_eq!(failed.entry.failure, refused);
    assert_eq!(failed.state, QuarantineState::Quarantined);
    assert_eq!(failed.updated_at_us, base + 5 * SECOND);

    let done = store
        .mark_replayed("t-q", &a.id, "evt-42", base + 6 * SECOND)
        .await
        .expect("mark");
    assert_eq!(done.state, QuarantineState::Replayed);
    assert_eq!(done.replayed_event_id.as_deref(), Some("evt-42"));
    assert_eq!(done.replayed_at_us, Some(base + 6 * SECOND));
    assert_eq!(
        by(QuarantineFilter {
            state: Some(QuarantineState::Replayed),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(QuarantineFilter {
            state: Some(QuarantineState::Quarantined),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        kind_of(store.mark_replayed("t-other", &a.id, "evt-42", base).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(
            store
                .record_replay_failure("t-q", "nope", &refused, base)
                .await
        ),
        ErrorKind::NotFound
    );
}

fn key(tenant: &str, client: &str, id: &str) -> EndpointKey {
    EndpointKey {
        tenant_id: tenant.into(),
        client_id: client.into(),
        id: id.into(),
    }
}

fn secret(text: &str) -> NewSecret {
    NewSecret {
        ciphertext: format!("sealed:{text}"),
        fingerprint: format!("{:0>8}", text.len()),
    }
}

fn endpoint(k: EndpointKey, account: Account) -> NewEndpoint {
    NewEndpoint {
        key: k,
        display_name: "Main line".into(),
        account,
        disabled: false,
    }
}

async fn endpoints(store: &dyn EventStore) {
    let now = 3_000 * SECOND;
    let retell = Account::Retell {
        agent_id: "agent_1".into(),
    };
    let e = endpoint(key("t-ep", "dental", "retell-main"), retell.clone());
    let created = store
        .create_endpoint(&e, Some(&secret("key-1")), Some("rq-1"), now)
        .await
        .expect("create");
    assert_eq!(created.key, e.key);
    assert_eq!(created.revision, 1);
    assert_eq!(created.provider(), Provider::Retell);
    assert_eq!((created.created_at_us, created.updated_at_us), (now, now));
    assert_eq!(created.secret_versions.len(), 1);
    assert_eq!(created.secret_versions[0].version, 1);
    assert_eq!(created.secret_versions[0].state(now), SecretState::Active);
    assert_eq!(
        store
            .create_endpoint(&e, Some(&secret("key-1")), Some("rq-1"), now + 1)
            .await
            .expect("retry"),
        created,
        "the same request id answers with what it created"
    );
    assert_eq!(
        kind_of(store.create_endpoint(&e, None, None, now).await),
        ErrorKind::AlreadyExists
    );
    let mut thief = endpoint(key("t-elsewhere", "c", "mine"), retell.clone());
    assert_eq!(
        kind_of(store.create_endpoint(&thief, None, None, now).await),
        ErrorKind::AlreadyExists,
        "an account belongs to one endpoint across the platform"
    );
    thief.account = Account::Retell {
        agent_id: "agent_2".into(),
    };
    store
        .create_endpoint(&thief, None, None, now)
        .await
        .expect("another agent");

    let twilio_all = endpoint(
        key("t-ep", "spa", "twilio-all"),
        Account::Twilio {
            account_sid: "AC1".into(),
            to_number: String::new(),
        },
    );
    let twilio_one = endpoint(
        key("t-ep", "dental", "twilio-front"),
        Account::Twilio {
            account_sid: "AC1".into(),
            to_number: "+15550100".into(),
        },
    );
    store
        .create_endpoint(&twilio_all, Some(&secret("token")), None, now)
        .await
        .expect("create");
    store
        .create_endpoint(&twilio_one, Some(&secret("token")), None, now)
        .await
        .expect("create");

    let hit = store
        .resolve(
            Provider::Twilio,
            &Account::twilio_lookup("AC1", "+15550100"),
            now,
        )
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(
        hit.endpoint.key, twilio_one.key,
        "the number's endpoint first"
    );
    let fallback = store
        .resolve(
            Provider::Twilio,
            &Account::twilio_lookup("AC1", "+15550199"),
            now,
        )
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(fallback.endpoint.key, twilio_all.key, "then the account's");
    assert!(store
        .resolve(Provider::Twilio, &Account::twilio_lookup("AC9", ""), now)
        .await
        .expect("resolve")
        .is_none());
    assert!(store
        .resolve(Provider::Retell, &[], now)
        .await
        .expect("resolve")
        .is_none());
    let r = store
        .resolve(Provider::Retell, &Account::retell_lookup("agent_1"), now)
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(r.endpoint, created);
    assert_eq!(r.secrets.len(), 1);
    assert_eq!(r.secrets[0].ciphertext, "sealed:key-1");
    assert!(
        store
            .resolve(Provider::Stripe, &Account::retell_lookup("agent_1"), now)
            .await
            .expect("resolve")
            .is_none(),
        "keys are per provider"
    );
    let by_name = store
        .resolve_endpoint(&e.key, now)
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(by_name, r);

    assert!(store
        .get_endpoint(&key("t-other", "dental", "retell-main"))
        .await
        .expect("get")
        .is_none());
    let list = |client: Option<&str>, provider: Option<Provider>, after: Option<String>, limit| {
        let f = EndpointFilter {
            client_id: client.map(str::to_owned),
            provider,
        };
        async move {
            store
                .list_endpoints("t-ep", &f, after.as_deref(), limit)
                .await
                .expect("list")
                .into_iter()
                .map(|e| e.key.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(None, None, None, 10).await,
        ["retell-main", "twilio-front", "twilio-all"],
        "by client, then id"
    );
    assert_eq!(list(Some("spa"), None, None, 10).await, ["twilio-all"]);
    assert_eq!(
        list(None, Some(Provider::Twilio), None, 10).await,
        ["twilio-front", "twilio-all"]
    );
    assert_eq!(
        list(None, None, Some("dental/twilio-front".into()), 10).await,
        ["twilio-all"]
    );
    let listed = store
        .list_endpoints("t-ep", &EndpointFilter::default(), None, 1)
        .await
        .expect("list");
    assert_eq!(listed[0], created, "lists carry secret metadata too");

    let mut update = EndpointUpdate {
        key: e.key.clone(),
        display_name: "After hours".into(),
        account: Account::Retell {
            agent_id: "agent_3".into(),
        },
        disabled: true,
    };
    let updated = store
        .update_endpoint(&update, Some(1), now + SECOND)
        .await
        .expect("update");
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.display_name, "After hours");
    assert!(updated.disabled);
    assert_eq!(updated.updated_at_us, now + SECOND);
    assert_eq!(updated.created_at_us, now);
    assert_eq!(
        kind_of(store.update_endpoint(&update, Some(1), now).await),
        ErrorKind::Conflict
    );
    let moved = store
        .resolve(Provider::Retell, &Account::retell_lookup("agent_3"), now)
        .await
        .expect("resolve")
        .expect("found under its new account");
    assert!(moved.endpoint.disabled, "disabled endpoints still resolve");
    assert!(store
        .resolve(Provider::Retell, &Account::retell_lookup("agent_1"), now)
        .await
        .expect("resolve")
        .is_none());
    update.account = Account::Retell {
        agent_id: "agent_2".into(),
    };
    assert_eq!(
        kind_of(store.update_endpoint(&update, None, now).await),
        ErrorKind::AlreadyExists
    );
    update.account = Account::Stripe {
        account_id: "acct_1".into(),
    };
    assert_eq!(
        kind_of(store.update_endpoint(&update, None, now).await),
        ErrorKind::InvalidArgument
    );
    update.key.id = "missing".into();
    assert_eq!(
        kind_of(store.update_endpoint(&update, None, now).await),
        ErrorKind::NotFound
    );

    assert_eq!(
        kind_of(store.delete_endpoint(&e.key, Some(1)).await),
        ErrorKind::Conflict
    );
    store
        .delete_endpoint(&e.key, Some(2))
        .await
        .expect("delete");
    assert!(store.get_endpoint(&e.key).await.expect("get").is_none());
    assert!(store
        .resolve(Provider::Retell, &Account::retell_lookup("agent_3"), now)
        .await
        .expect("resolve")
        .is_none());
    assert_eq!(
        kind_of(store.delete_endpoint(&e.key, None).await),
        ErrorKind::NotFound
    );
    // Its account is free again.
    store
        .create_endpoint(
            &endpoint(key("t-ep", "dental", "retell-again"), retell),
            None,
            None,
            now,
        )
        .await
        .expect("recreate");
}

async fn secrets(store: &dyn EventStore) {
    let now = 4_000 * SECOND;
    let k = key("t-sec", "dental", "stripe");
    let e = endpoint(
        k.clone(),
        Account::Stripe {
            account_id: "acct_9".into(),
        },
    );
    store
        .create_endpoint(&e, Some(&secret("whsec_1")), None, now)
        .await
        .expect("create");
    let day = 86_400 * SECOND;

    let r1 = store
        .rotate_secret(&k, &secret("whsec_22"), day, Some("rot-1"), now + SECOND)
        .await
        .expect("rotate");
    assert_eq!(r1.revision, 2);
    let v: Vec<(i64, Option<i64>)> = r1
        .secret_versions
        .iter()
        .map(|s| (s.version, s.expire_at_us))
        .collect();
    assert_eq!(
        v,
        [(2, None), (1, Some(now + SECOND + day))],
        "newest first"
    );
    assert_eq!(
        store
            .rotate_secret(
                &k,
                &secret("whsec_22"),
                day,
                Some("rot-1"),
                now + 2 * SECOND
            )
            .await
            .expect("retry"),
        r1,
        "the same request id does not rotate again"
    );
    let both = store
        .resolve_endpoint(&k, now + 2 * SECOND)
        .await
        .expect("resolve")
        .expect("found");
    let active: Vec<&str> = both.secrets.iter().map(|s| s.ciphertext.as_str()).collect();
    assert_eq!(active, ["sealed:whsec_22", "sealed:whsec_1"]);
    let after = store
        .resolve(
            Provider::Stripe,
            &Account::stripe_lookup("acct_9"),
            now + SECOND + day,
        )
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(
        after.secrets.len(),
        1,
        "the previous secret stops at its expiry"
    );
    assert_eq!(after.secrets[0].version, 2);
    assert_eq!(
        after.endpoint.secret_versions[1].state(now + SECOND + day),
        SecretState::Expired
    );

    // A second rotation inside the window: version 1 goes at once, 2 keeps its window.
    let r2 = store
        .rotate_secret(&k, &secret("whsec_333"), day, None, now + 3 * SECOND)
        .await
        .expect("rotate");
    let v: Vec<(i64, Option<i64>, bool)> = r2
        .secret_versions
        .iter()
        .map(|s| (s.version, s.expire_at_us, s.destroyed))
        .collect();
    assert_eq!(
        v,
        [
            (3, None, false),
            (2, Some(now + 3 * SECOND + day), false),
            (1, Some(now + 3 * SECOND), true)
        ]
    );
    // A leaked secret: the previous one stops at once.
    let r3 = store
        .rotate_secret(&k, &secret("whsec_4444"), 0, None, now + 4 * SECOND)
        .await
        .expect("rotate");
    let active = store
        .resolve_endpoint(&k, now + 4 * SECOND)
        .await
        .expect("resolve")
        .expect("found");
    assert_eq!(active.secrets.len(), 1);
    assert_eq!(active.secrets[0].version, 4);
    assert_eq!(r3.revision, 4);
    assert!(r3.secret_versions[1..].iter().all(|s| s.destroyed));
    assert!(r3.secret_versions[1..]
        .iter()
        .all(|s| s.state(now + 4 * SECOND) == SecretState::Expired));

    let r4 = store
        .rotate_secret(&k, &secret("whsec_5"), SECOND, None, now + 5 * SECOND)
        .await
        .expect("rotate");
    assert!(!r4.secret_versions[1].destroyed);
    assert!(
        store
            .destroy_expired_secrets(now + 5 * SECOND)
            .await
            .expect("destroy")
            == 0
    );
    assert!(
        store
            .destroy_expired_secrets(now + 6 * SECOND)
            .await
            .expect("destroy")
            >= 1
    );
    let after = store.get_endpoint(&k).await.expect("get").expect("found");
    assert!(after.secret_versions[1].destroyed);
    assert!(!after.secret_versions[0].destroyed);

    assert_eq!(
        kind_of(
            store
                .rotate_secret(&key("t-sec", "dental", "nope"), &secret("x"), 0, None, now)
                .await
        ),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(
            store
                .rotate_secret(
                    &key("t-other", "dental", "stripe"),
                    &secret("x"),
                    0,
                    None,
                    now
                )
                .await
        ),
        ErrorKind::NotFound,
        "rotation is tenant-scoped"
    );

    // Endpoints without a secret (PayPal verifies with PayPal's certificate).
    let paypal = endpoint(
        key("t-sec", "dental", "paypal"),
        Account::Paypal {
            account_id: "M1".into(),
            webhook_id: "WH-1".into(),
        },
    );
    let p = store
        .create_endpoint(&paypal, None, None, now)
        .await
        .expect("create");
    assert!(p.secret_versions.is_empty());
    let p = store
        .rotate_secret(&paypal.key, &secret("pem"), day, None, now)
        .await
        .expect("first secret by rotation");
    assert_eq!(p.secret_versions.len(), 1);
    assert_eq!(p.secret_versions[0].version, 1);
}

async fn retention(store: &dyn EventStore) {
    let now = 5_000 * SECOND;
    assert!(store.get_retention("t-ret").await.expect("get").is_none());
    let mut s = RetentionSettings {
        tenant_id: "t-ret".into(),
        event_retention_secs: Some(7 * 86_400),
        quarantine_retention_secs: None,
        dead_letter_retention_secs: Some(30 * 86_400),
        revision: 0,
        updated_at_us: 0,
    };
    let v1 = store.put_retention(&s, Some(0), now).await.expect("create");
    assert_eq!((v1.revision, v1.updated_at_us), (1, now));
    assert_eq!(
        kind_of(store.put_retention(&s, Some(0), now).await),
        ErrorKind::Conflict
    );
    s.quarantine_retention_secs = Some(86_400);
    let v2 = store
        .put_retention(&s, Some(1), now + 1)
        .await
        .expect("update");
    assert_eq!(v2.revision, 2);
    assert_eq!(v2.quarantine_retention_secs, Some(86_400));
    assert_eq!(
        kind_of(store.put_retention(&s, Some(1), now).await),
        ErrorKind::Conflict
    );
    let v3 = store
        .put_retention(&s, None, now + 2)
        .await
        .expect("upsert");
    assert_eq!(v3.revision, 3);
    assert_eq!(store.get_retention("t-ret").await.expect("get"), Some(v3));
    let fresh = RetentionSettings {
        tenant_id: "t-ret-2".into(),
        ..s.clone()
    };
    assert_eq!(
        store
            .put_retention(&fresh, None, now)
            .await
            .expect("upsert")
            .revision,
        1
    );

    // Purge: old and done goes; old but pending, or with a recent dead letter, stays.
    drain(store).await;
    let now = now_micros() + SECOND;
    let old = 100 * SECOND;
    let mut batch = Vec::new();
    for (i, name) in [
        "done-1",
        "done-2",
        "done-3",
        "pending",
        "dead-recent",
        "dead-old",
        "new",
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = new_event("t-ret", name, &format!("k-{name}"), false);
        e.received_at_us = if name == "new" { now } else { old + i as i64 };
        batch.push(e);
    }
    let mut foreign = new_event("t-ret-2", "foreign", "k-foreign", false);
    foreign.received_at_us = old;
    batch.push(foreign);
    let ids: Vec<String> = store
        .append(&batch)
        .await
        .expect("append")
        .iter()
        .map(stored)
        .collect();
    let claimed = store.claim("p", now, SECOND, 100).await.expect("claim");
    assert_eq!(claimed.len(), batch.len());
    for d in claimed {
        let name = d.event.event.provider_event_id.as_str();
        match name {
            "pending" => store
                .failed(d.outbox_id, "p", &failure(now, "down"), Next::RetryAt(FAR))
                .await
                .expect("failed"),
            "dead-recent" => store
                .failed(d.outbox_id, "p", &failure(now, "down"), Next::Dead)
                .await
                .expect("failed"),
            "dead-old" => store
                .failed(d.outbox_id, "p", &failure(old, "down"), Next::Dead)
                .await
                .expect("failed"),
            _ => store
                .delivered(d.outbox_id, "p", false, now)
                .await
                .expect("delivered"),
        }
    }
    store
        .quarantine(&quarantined("t-ret", old))
        .await
        .expect("quarantine");
    let young = store
        .quarantine(&quarantined("t-ret", now))
        .await
        .expect("quarantine");

    let tenants = store
        .tenants_with_records(None, 100)
        .await
        .expect("tenants");
    assert!(tenants.contains(&"t-ret".to_owned()) && tenants.contains(&"t-q".to_owned()));
    assert!(tenants.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
    let after = store
        .tenants_with_records(Some("t-ret"), 1)
        .await
        .expect("tenants");
    assert_eq!(after, ["t-ret-2"]);

    let cutoffs = Cutoffs {
        events_before_us: now - SECOND,
        dead_letters_before_us: now - SECOND,
        quarantine_before_us: now - SECOND,
    };
    let purged = store.purge("t-ret", &cutoffs, 1).await.expect("purge");
    assert_eq!((purged.events, purged.quarantined), (4, 1));
    let left: Vec<String> = store
        .list_events("t-ret", &EventFilter::default(), None, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.event.event.provider_event_id)
        .collect();
    assert_eq!(left, ["new", "dead-recent", "pending"]);
    assert!(
        store
            .get_event("t-ret-2", ids.last().expect("foreign"))
            .await
            .expect("get")
            .is_some(),
        "other tenants are untouched"
    );
    let q: Vec<String> = store
        .list_quarantined("t-ret", &QuarantineFilter::default(), None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(q, [young.id]);
    assert!(store
        .list_dead_letters("t-ret", &DeadLetterFilter::default(), None, 10)
        .await
        .expect("list")
        .iter()
        .all(|d| d.event.event.provider_event_id == "dead-recent"));
    assert_eq!(
        store
            .purge("t-ret", &cutoffs, 100)
            .await
            .expect("purge again"),
        Default::default()
    );
}
