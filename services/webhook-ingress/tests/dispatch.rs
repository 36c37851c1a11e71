//! The dispatcher and the retention job on every backend, against real gRPC consumers served on
//! 127.0.0.1: delivery once per consumer, order per ordering key across concurrent dispatchers,
//! backoff and dead letters on a fake clock (`Dispatcher::pass(now)`), non-retryable codes,
//! recovery, leases taken over after a crash or lost mid-call, and the retention purge.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use maxai_kit::{
    storage::{self, now_micros},
    CancellationToken, ErrorKind,
};
use maxai_proto::maxai::{
    common::v1 as common,
    webhook::v1::{
        event_consumer_service_server::{EventConsumerService, EventConsumerServiceServer},
        ConsumeEventRequest, ConsumeEventResponse,
    },
};
use maxai_testkit::{backends, Backend};
use maxai_webhook_ingress::{
    config::{DispatchConfig, RetentionConfig},
    dispatch::{Credential, Dispatcher},
    domain::{
        Appended, ConsumerDelivery, DeadLetterFilter, DeadLetterState, DeliveryState, Header,
        NewEvent, NewQuarantined, Provider, Purged, QuarantineFailure, QuarantineReason,
        RetentionSettings,
    },
    retention,
    store::{conformance::new_event, EventStore, SqlEventStore},
    MIGRATIONS, STORAGE_NAME,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tonic::{
    transport::{server::TcpIncoming, Channel, Server},
    Code, Request, Response, Status,
};

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;
const TOKEN: &str = "dispatcher-token";

// ---- the test consumer -------------------------------------------------------------------------

/// One call a consumer received.
#[derive(Debug, Clone)]
struct Got {
    event: common::CanonicalEvent,
    attempt: i32,
    authorization: Option<String>,
}

#[derive(Default)]
struct ConsumerState {
    /// Every call, in arrival order, refused ones included.
    calls: Vec<Got>,
    /// Events consumed for the first time, in arrival order.
    accepted: Vec<Got>,
    /// Event ids consumed: a second call for one is answered as a duplicate.
    seen: HashSet<String>,
    /// The next this many calls fail with `fail_code`.
    fail_next: usize,
    fail_code: Option<Code>,
    /// Provider event ids always refused with this code.
    refuse: HashMap<String, Code>,
    /// When set, each call waits for a permit before it answers.
    gate: Option<Arc<Semaphore>>,
}

/// An `EventConsumerService` that records what it got, idempotent by event id.
#[derive(Clone, Default)]
struct TestConsumer {
    state: Arc<Mutex<ConsumerState>>,
}

impl TestConsumer {
    fn with<T>(&self, f: impl FnOnce(&mut ConsumerState) -> T) -> T {
        f(&mut self.state.lock().expect("consumer state"))
    }
    fn fail_next(&self, n: usize, code: Code) {
        self.with(|s| {
            s.fail_next = n;
            s.fail_code = Some(code);
        });
    }
    fn refuse(&self, provider_event_id: &str, code: Code) {
        self.with(|s| s.refuse.insert(provider_event_id.to_owned(), code));
    }
    fn calls(&self) -> Vec<Got> {
        self.with(|s| s.calls.clone())
    }
    fn accepted(&self) -> Vec<Got> {
        self.with(|s| s.accepted.clone())
    }
    /// Provider event ids accepted, in arrival order.
    fn accepted_ids(&self) -> Vec<String> {
        self.with(|s| {
            s.accepted
                .iter()
                .map(|g| g.event.provider_event_id.clone())
                .collect()
        })
    }
}

#[tonic::async_trait]
impl EventConsumerService for TestConsumer {
    async fn consume_event(
        &self,
        request: Request<ConsumeEventRequest>,
    ) -> Result<Response<ConsumeEventResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let event = request
            .event
            .ok_or_else(|| Status::invalid_argument("event is required"))?;
        let got = Got {
            event,
            attempt: request.attempt,
            authorization,
        };
        let gate = self.with(|s| {
            s.calls.push(got.clone());
            s.gate.clone()
        });
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.with(|s| {
            if let Some(code) = s.refuse.get(&got.event.provider_event_id) {
                return Err(Status::new(*code, "refused on purpose"));
            }
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Err(Status::new(
                    s.fail_code.unwrap_or(Code::Unavailable),
                    "failing on purpose",
                ));
            }
            let duplicate = !s.seen.insert(got.event.id.clone());
            if !duplicate {
                s.accepted.push(got);
            }
            Ok(Response::new(ConsumeEventResponse { duplicate }))
        })
    }
}

/// Serves `consumer` on a fresh port until the returned guard is dropped.
async fn serve(consumer: TestConsumer) -> (Channel, StopOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        Server::builder()
            .add_service(EventConsumerServiceServer::new(consumer))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), token.cancelled_owned())
            .await
            .expect("test consumer server");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    (channel, StopOnDrop(stop))
}

/// Stops a test server when dropped.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

// ---- the rig -----------------------------------------------------------------------------------

/// A store on `backend`; calling it twice gives two replicas (two pools) on one database.
async fn open(backend: &Backend) -> Arc<dyn EventStore> {
    let db = storage::connect(&backend.storage, STORAGE_NAME, &MIGRATIONS)
        .await
        .expect("connect");
    Arc::new(SqlEventStore::new(db))
}

fn config() -> DispatchConfig {
    DispatchConfig {
        enabled: true,
        batch: 16,
        lease_secs: 30,
        timeout_ms: 5_000,
        max_attempts: 4,
        backoff_base_ms: 1_000,
        backoff_max_secs: 60,
        idle_poll_ms: 50,
    }
}

fn credential() -> Credential {
    Arc::new(|| Some(TOKEN.to_owned()))
}

/// A store and the two consumers, orchestrator and billing, each on its own server.
struct Rig {
    backend: &'static str,
    store: Arc<dyn EventStore>,
    orchestrator: TestConsumer,
    billing: TestConsumer,
    channels: HashMap<String, Channel>,
    _servers: Vec<StopOnDrop>,
}

impl Rig {
    async fn new(backend: &Backend) -> Rig {
        let orchestrator = TestConsumer::default();
        let billing = TestConsumer::default();
        let (o, o_guard) = serve(orchestrator.clone()).await;
        let (b, b_guard) = serve(billing.clone()).await;
        Rig {
            backend: backend.name,
            store: open(backend).await,
            orchestrator,
            billing,
            channels: HashMap::from([("orchestrator".to_owned(), o), ("billing".to_owned(), b)]),
            _servers: vec![o_guard, b_guard],
        }
    }

    fn dispatcher(&self, config: DispatchConfig) -> Dispatcher {
        Dispatcher::new(
            self.store.clone(),
            self.channels.clone(),
            config,
            credential(),
        )
    }

    /// Stores the events (one batch); returns their platform ids.
    async fn append(&self, events: &[NewEvent]) -> Vec<String> {
        self.store
            .append(events)
            .await
            .expect("append")
            .into_iter()
            .map(|a| match a {
                Appended::Stored(r) => r.id,
                Appended::Duplicate(r) => panic!("{}: unexpected duplicate {}", self.backend, r.id),
            })
            .collect()
    }

    /// The delivery of event `id` (tenant `tenant`) to `consumer`.
    async fn delivery(&self, tenant: &str, id: &str, consumer: &str) -> ConsumerDelivery {
        let record = self
            .store
            .get_event(tenant, id)
            .await
            .expect("get event")
            .unwrap_or_else(|| panic!("{}: event {id} is stored", self.backend));
        record
            .deliveries
            .into_iter()
            .find(|d| d.consumer == consumer)
            .unwrap_or_else(|| panic!("{}: event {id} has a {consumer} delivery", self.backend))
    }

    async fn exists(&self, tenant: &str, id: &str) -> bool {
        self.store
            .get_event(tenant, id)
            .await
            .expect("get event")
            .is_some()
    }
}

/// Passes at `now_us` until one handles nothing; returns how many rows were handled in all.
async fn drain(dispatcher: &Dispatcher, now_us: i64) -> usize {
    let mut total = 0;
    for _ in 0..1_000 {
        let n = dispatcher.pass(now_us).await.expect("pass");
        if n == 0 {
            return total;
        }
        total += n;
    }
    panic!("the outbox never drained");
}

/// Polls `condition` every few milliseconds for up to ten seconds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn event_at(tenant: &str, id: &str, key: &str, billing: bool, received_at_us: i64) -> NewEvent {
    let mut e = new_event(tenant, id, key, billing);
    e.received_at_us = received_at_us;
    e
}

// ---- delivery ----------------------------------------------------------------------------------

#[tokio::test]
async fn every_event_reaches_each_consumer_once() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let mut events = Vec::new();
        for i in 0..20 {
            let key = match i % 3 {
                0 => String::new(),
                k => format!("call-{k}"),
            };
            events.push(new_event("t-once", &format!("once-{i}"), &key, i % 2 == 0));
        }
        let ids = rig.append(&events).await;
        let now = now_micros() + SECOND;
        let dispatcher = rig.dispatcher(config());
        assert_eq!(drain(&dispatcher, now).await, 30, "{}", backend.name);
        assert_eq!(dispatcher.pass(now + DAY).await.expect("pass"), 0);

        let mut orchestrator = rig.orchestrator.accepted_ids();
        orchestrator.sort();
        let mut expected: Vec<String> = (0..20).map(|i| format!("once-{i}")).collect();
        expected.sort();
        assert_eq!(orchestrator, expected, "{}: orchestrator", backend.name);
        let mut billing = rig.billing.accepted_ids();
        billing.sort();
        let mut expected: Vec<String> = (0..20)
            .filter(|i| i % 2 == 0)
            .map(|i| format!("once-{i}"))
            .collect();
        expected.sort();
        assert_eq!(billing, expected, "{}: billing", backend.name);
        assert_eq!(
            rig.orchestrator.calls().len() + rig.billing.calls().len(),
            30,
            "{}: no call twice",
            backend.name
        );

        // What a consumer sees: the canonical event, the attempt and the dispatcher's identity.
        let got = rig
            .orchestrator
            .accepted()
            .into_iter()
            .find(|g| g.event.provider_event_id == "once-1")
            .expect("once-1");
        assert_eq!(got.attempt, 1);
        assert_eq!(
            got.authorization.as_deref(),
            Some("Bearer dispatcher-token")
        );
        let e = &got.event;
        assert_eq!(e.id, "retell:once-1");
        assert_eq!(e.source, "maxai://providers/retell");
        assert_eq!(e.r#type, "voice.call.ended");
        assert_eq!(e.subject, "calls/call-1");
        assert_eq!(e.spec_version, "1.0");
        assert_eq!(e.tenant, "tenants/t-once");
        assert_eq!(e.client, "tenants/t-once/clients/dental");
        assert_eq!(e.provider, "retell");
        assert_eq!(e.ordering_key, "call-1");
        let time = e.time.expect("time");
        assert_eq!((time.seconds, time.nanos), (1_700_000_000, 0));
        let data = e.data.as_ref().expect("data");
        assert_eq!(
            data.fields.get("call_id").and_then(|v| v.kind.clone()),
            Some(prost_types::value::Kind::StringValue("c1".into()))
        );
        assert_eq!(
            data.fields.get("duration_ms").and_then(|v| v.kind.clone()),
            Some(prost_types::value::Kind::NumberValue(61_000.0))
        );

        for (i, id) in ids.iter().enumerate() {
            let d = rig.delivery("t-once", id, "orchestrator").await;
            assert_eq!(d.state, DeliveryState::Delivered, "{}", backend.name);
            assert_eq!((d.attempts, d.duplicate), (1, false));
            assert_eq!(d.delivered_at_us, Some(now));
            if i % 2 == 0 {
                let d = rig.delivery("t-once", id, "billing").await;
                assert_eq!(d.state, DeliveryState::Delivered, "{}", backend.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dispatchers_keep_each_key_in_order_and_deliver_once() {
    const KEYS: usize = 4;
    const PER_KEY: usize = 12;
    const UNKEYED: usize = 6;
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        // Interleaved keys, over many transactions, as concurrent webhooks would store them.
        for seq in 0..PER_KEY {
            let batch: Vec<NewEvent> = (0..KEYS)
                .map(|k| {
                    new_event(
                        "t-order",
                        &format!("k{k}-{seq:02}"),
                        &format!("call-{k}"),
                        true,
                    )
                })
                .collect();
            rig.append(&batch).await;
        }
        let unkeyed: Vec<NewEvent> = (0..UNKEYED)
            .map(|i| new_event("t-order", &format!("free-{i}"), "", true))
            .collect();
        rig.append(&unkeyed).await;
        let expected = KEYS * PER_KEY + UNKEYED;
        // Retries in the mix: every seventh call fails, with a tiny backoff on the real clock.
        rig.orchestrator.fail_next(0, Code::Unavailable);
        let flaky = rig.orchestrator.clone();
        let config = DispatchConfig {
            batch: 4,
            max_attempts: 100,
            backoff_base_ms: 1,
            backoff_max_secs: 1,
            ..config()
        };
        let mut tasks = Vec::new();
        for r in 0..3 {
            // Each dispatcher on its own pool, as separate replicas would be.
            let dispatcher = Dispatcher::new(
                open(&backend).await,
                rig.channels.clone(),
                config.clone(),
                credential(),
            );
            let orchestrator = rig.orchestrator.clone();
            let billing = rig.billing.clone();
            let flaky = flaky.clone();
            tasks.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut handled = 0;
                let mut passes = 0u64;
                while orchestrator.accepted().len() < expected
                    || billing.accepted().len() < expected
                {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "dispatcher {r} timed out"
                    );
                    passes += 1;
                    if passes.is_multiple_of(7) {
                        flaky.with(|s| s.fail_next = 1);
                    }
                    let n = dispatcher.pass(now_micros()).await.expect("pass");
                    handled += n;
                    if n == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                handled
            }));
        }
        let mut per_dispatcher = Vec::new();
        for t in tasks {
            per_dispatcher.push(t.await.expect("dispatcher task"));
        }
        eprintln!(
            "{}: rows handled per dispatcher {per_dispatcher:?}",
            backend.name
        );
        assert!(
            per_dispatcher.iter().all(|&n| n > 0),
            "{}: every dispatcher took part: {per_dispatcher:?}",
            backend.name
        );
        for (name, consumer) in [
            ("orchestrator", &rig.orchestrator),
            ("billing", &rig.billing),
        ] {
            let accepted = consumer.accepted_ids();
            assert_eq!(accepted.len(), expected, "{}: {name}", backend.name);
            let unique: HashSet<&String> = accepted.iter().collect();
            assert_eq!(
                unique.len(),
                expected,
                "{}: {name} got each event once",
                backend.name
            );
            let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for got in consumer.accepted() {
                if !got.event.ordering_key.is_empty() {
                    by_key
                        .entry(got.event.ordering_key.clone())
                        .or_default()
                        .push(got.event.provider_event_id.clone());
                }
            }
            for k in 0..KEYS {
                let stored: Vec<String> = (0..PER_KEY).map(|s| format!("k{k}-{s:02}")).collect();
                assert_eq!(
                    by_key.get(&format!("call-{k}")),
                    Some(&stored),
                    "{}: {name} got call-{k} in stored order",
                    backend.name
                );
            }
        }
        // Calls beyond the accepted ones are exactly the failed attempts: nothing was delivered
        // twice.
        let billing_calls = rig.billing.calls().len();
        assert_eq!(
            billing_calls, expected,
            "{}: billing never failed",
            backend.name
        );
        let orchestrator_failed = rig.orchestrator.calls().len() - expected;
        assert!(
            orchestrator_failed > 0,
            "{}: some orchestrator calls failed and were retried",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_failing_consumer_is_retried_with_growing_delays_then_dead_lettered() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let ids = rig
            .append(&[
                new_event("t-retry", "head", "call-9", false),
                new_event("t-retry", "next", "call-9", false),
            ])
            .await;
        let (head, next) = (&ids[0], &ids[1]);
        let config = config();
        let dispatcher = rig.dispatcher(config.clone());
        rig.orchestrator
            .fail_next(config.max_attempts as usize, Code::Unavailable);
        let base = config.backoff_base_ms as i64 * 1_000;
        let mut now = now_micros() + SECOND;
        let mut previous_delay = 0;
        for attempt in 1..=config.max_attempts {
            assert_eq!(
                dispatcher.pass(now).await.expect("pass"),
                1,
                "{}",
                backend.name
            );
            let calls = rig.orchestrator.calls();
            assert_eq!(
                calls.len() as i64,
                attempt,
                "{}: only the head is tried",
                backend.name
            );
            assert_eq!(calls.last().map(|g| g.attempt as i64), Some(attempt));
            let d = rig.delivery("t-retry", head, "orchestrator").await;
            assert_eq!(d.attempts, attempt);
            if attempt == config.max_attempts {
                assert_eq!(d.state, DeliveryState::DeadLettered, "{}", backend.name);
                assert_eq!(d.next_attempt_at_us, None);
                break;
            }
            assert_eq!(d.state, DeliveryState::Retrying, "{}", backend.name);
            let at = d.next_attempt_at_us.expect("next attempt scheduled");
            let delay = at - now;
            let window = base << (attempt - 1);
            assert!(
                (window / 2..=window).contains(&delay),
                "{}: retry {attempt} after {delay} µs, window {window}",
                backend.name
            );
            assert!(delay >= previous_delay, "{}: delays grow", backend.name);
            previous_delay = delay;
            // Not due yet, and the next event of the call waits behind its head.
            assert_eq!(
                dispatcher.pass(at - 1).await.expect("pass"),
                0,
                "{}",
                backend.name
            );
            now = at;
        }
        let letters = rig
            .store
            .list_dead_letters("t-retry", &DeadLetterFilter::default(), None, 10)
            .await
            .expect("list dead letters");
        assert_eq!(letters.len(), 1, "{}", backend.name);
        let letter = &letters[0];
        assert_eq!(letter.event.id, *head);
        assert_eq!(letter.consumer, "orchestrator");
        assert_eq!(letter.state, DeadLetterState::Failed);
        assert_eq!(letter.attempt_count, config.max_attempts);
        assert_eq!(letter.attempts.len() as i64, config.max_attempts);
        assert!(letter
            .attempts
            .iter()
            .all(|a| a.status_code == "UNAVAILABLE"));
        assert_eq!(letter.last_error, "failing on purpose");

        // A dead head no longer holds back its call: the next event goes out.
        assert_eq!(dispatcher.pass(now).await.expect("pass"), 1);
        assert_eq!(
            rig.orchestrator.accepted_ids(),
            ["next"],
            "{}",
            backend.name
        );
        assert_eq!(
            rig.delivery("t-retry", next, "orchestrator").await.state,
            DeliveryState::Delivered
        );

        // Replayed, with the consumer healthy again, it is delivered (attempts count on).
        rig.store
            .replay_dead_letter("t-retry", letter.id, now)
            .await
            .expect("replay");
        assert_eq!(dispatcher.pass(now).await.expect("pass"), 1);
        assert_eq!(rig.orchestrator.accepted_ids(), ["next", "head"]);
        assert_eq!(
            rig.orchestrator.accepted().last().map(|g| g.attempt),
            Some(config.max_attempts as i32 + 1)
        );
        let letter = rig
            .store
            .get_dead_letter("t-retry", letter.id)
            .await
            .expect("get dead letter")
            .expect("kept");
        assert_eq!(letter.state, DeadLetterState::Replayed, "{}", backend.name);
    }
}

#[tokio::test]
async fn non_retryable_codes_dead_letter_at_once_and_others_retry() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let cases = [
            ("bad-arg", Code::InvalidArgument, true),
            ("bad-state", Code::FailedPrecondition, true),
            ("denied", Code::PermissionDenied, false),
            ("missing", Code::NotFound, false),
            ("internal", Code::Internal, false),
        ];
        let events: Vec<NewEvent> = cases
            .iter()
            .map(|(id, code, _)| {
                rig.orchestrator.refuse(id, *code);
                new_event("t-codes", id, id, false)
            })
            .collect();
        let ids = rig.append(&events).await;
        let now = now_micros() + SECOND;
        assert_eq!(rig.dispatcher(config()).pass(now).await.expect("pass"), 5);
        for ((name, code, dead), id) in cases.iter().zip(&ids) {
            let d = rig.delivery("t-codes", id, "orchestrator").await;
            let want = if *dead {
                DeliveryState::DeadLettered
            } else {
                DeliveryState::Retrying
            };
            assert_eq!(d.state, want, "{}: {name} ({code:?})", backend.name);
            assert_eq!(d.attempts, 1);
        }
        let letters = rig
            .store
            .list_dead_letters("t-codes", &DeadLetterFilter::default(), None, 10)
            .await
            .expect("list dead letters");
        let mut codes: Vec<&str> = letters
            .iter()
            .map(|l| l.attempts[0].status_code.as_str())
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            ["FAILED_PRECONDITION", "INVALID_ARGUMENT"],
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_consumer_that_recovers_gets_the_event() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let ids = rig
            .append(&[new_event("t-recover", "recover", "call-r", true)])
            .await;
        rig.orchestrator.fail_next(2, Code::Unavailable);
        let dispatcher = rig.dispatcher(config());
        let mut now = now_micros() + SECOND;
        // Billing takes it at once; the orchestrator fails twice.
        assert_eq!(dispatcher.pass(now).await.expect("pass"), 2);
        assert_eq!(rig.billing.accepted_ids(), ["recover"], "{}", backend.name);
        for _ in 0..2 {
            now = rig
                .delivery("t-recover", &ids[0], "orchestrator")
                .await
                .next_attempt_at_us
                .expect("retry scheduled");
            assert_eq!(dispatcher.pass(now).await.expect("pass"), 1);
        }
        assert_eq!(
            rig.orchestrator.accepted_ids(),
            ["recover"],
            "{}",
            backend.name
        );
        assert_eq!(rig.orchestrator.accepted()[0].attempt, 3);
        let d = rig.delivery("t-recover", &ids[0], "orchestrator").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{}", backend.name);
        assert_eq!((d.attempts, d.delivered_at_us), (3, Some(now)));
        assert!(!d.dead_letter);
        assert_eq!(dispatcher.pass(now + DAY).await.expect("pass"), 0);
        assert_eq!(rig.billing.calls().len(), 1, "billing is not called again");
    }
}

#[tokio::test]
async fn a_slow_consumer_times_out_and_is_retried() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let ids = rig
            .append(&[new_event("t-slow", "slow", "call-s", false)])
            .await;
        let gate = Arc::new(Semaphore::new(0));
        rig.orchestrator.with(|s| s.gate = Some(gate.clone()));
        let dispatcher = rig.dispatcher(DispatchConfig {
            timeout_ms: 200,
            ..config()
        });
        let now = now_micros() + SECOND;
        assert_eq!(dispatcher.pass(now).await.expect("pass"), 1);
        let d = rig.delivery("t-slow", &ids[0], "orchestrator").await;
        assert_eq!(d.state, DeliveryState::Retrying, "{}", backend.name);
        assert!(
            d.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("200 ms")
                || d.last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("Timeout")
                || d.last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("deadline"),
            "{}: {:?}",
            backend.name,
            d.last_error
        );
        gate.add_permits(100);
        let at = d.next_attempt_at_us.expect("retry scheduled");
        assert_eq!(dispatcher.pass(at).await.expect("pass"), 1);
        assert_eq!(
            rig.delivery("t-slow", &ids[0], "orchestrator").await.state,
            DeliveryState::Delivered
        );
    }
}

// ---- leases ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_crashed_dispatchers_rows_are_taken_over_after_the_lease() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let ids = rig
            .append(&[new_event("t-crash", "crash", "call-c", true)])
            .await;
        let config = config();
        let lease = config.lease_secs as i64 * SECOND;
        let now = now_micros() + SECOND;
        // A replica claims both rows and dies without a word.
        let crashed = rig
            .store
            .claim("crashed-replica", now, lease, 100)
            .await
            .expect("claim");
        assert_eq!(crashed.len(), 2, "{}", backend.name);
        let dispatcher = rig.dispatcher(config);
        assert_eq!(
            dispatcher.pass(now + lease - 1).await.expect("pass"),
            0,
            "still leased"
        );
        assert!(rig.orchestrator.calls().is_empty());
        assert_eq!(
            dispatcher.pass(now + lease).await.expect("pass"),
            2,
            "{}",
            backend.name
        );
        assert_eq!(dispatcher.pass(now + 10 * lease).await.expect("pass"), 0);
        for consumer in [&rig.orchestrator, &rig.billing] {
            let calls = consumer.calls();
            assert_eq!(calls.len(), 1, "{}: delivered once", backend.name);
            assert_eq!(
                calls[0].attempt, 2,
                "the crashed claim counted as an attempt"
            );
        }
        // The dead replica's late word is refused.
        let late = rig
            .store
            .delivered(crashed[0].outbox_id, "crashed-replica", false, now + lease)
            .await
            .expect_err("lease was taken over");
        assert_eq!(late.kind, ErrorKind::Conflict);
        let d = rig.delivery("t-crash", &ids[0], "orchestrator").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{}", backend.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_mid_call_is_left_to_the_new_owner() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let ids = rig
            .append(&[new_event("t-lost", "lost", "call-l", false)])
            .await;
        let gate = Arc::new(Semaphore::new(0));
        rig.orchestrator.with(|s| s.gate = Some(gate.clone()));
        let config = DispatchConfig {
            timeout_ms: 10_000,
            lease_secs: 30,
            ..config()
        };
        let lease = config.lease_secs as i64 * SECOND;
        let now = now_micros() + SECOND;
        let slow = Arc::new(rig.dispatcher(config.clone()));
        let other = Arc::new(rig.dispatcher(config));
        let first = {
            let slow = slow.clone();
            tokio::spawn(async move { slow.pass(now).await })
        };
        let orchestrator = rig.orchestrator.clone();
        wait_until("the first call arrives", || orchestrator.calls().len() == 1).await;
        // The first call hangs past its lease (on the fake clock): another replica takes over.
        let second = {
            let other = other.clone();
            tokio::spawn(async move { other.pass(now + lease).await })
        };
        wait_until("the second call arrives", || {
            orchestrator.calls().len() == 2
        })
        .await;
        gate.add_permits(1);
        assert_eq!(
            first
                .await
                .expect("task")
                .expect("a lost lease is not an error"),
            1,
            "{}",
            backend.name
        );
        gate.add_permits(1);
        assert_eq!(second.await.expect("task").expect("pass"), 1);
        let calls = rig.orchestrator.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(rig.orchestrator.accepted().len(), 1, "consumed once");
        let d = rig.delivery("t-lost", &ids[0], "orchestrator").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{}", backend.name);
        assert!(
            d.duplicate,
            "{}: the new owner's call was a duplicate",
            backend.name
        );
    }
}

// ---- the run loop ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_stored_events_on_wake_and_stops_on_shutdown() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let first = rig
            .append(&[new_event("t-run", "run-1", "call-run", true)])
            .await;
        let wake = Arc::new(tokio::sync::Notify::new());
        let shutdown = CancellationToken::new();
        // Polls only once a minute: only the wake-up can bring the second event in time.
        let dispatcher = rig.dispatcher(DispatchConfig {
            idle_poll_ms: 60_000,
            ..config()
        });
        let running = tokio::spawn(dispatcher.run(wake.clone(), shutdown.clone()));
        let (o, b) = (rig.orchestrator.clone(), rig.billing.clone());
        wait_until("the first event is delivered", || {
            o.accepted().len() == 1 && b.accepted().len() == 1
        })
        .await;
        // Once both outcomes are recorded and the dispatcher has gone idle, only a wake-up
        // brings the next event in before the one-minute poll.
        for consumer in ["orchestrator", "billing"] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while rig.delivery("t-run", &first[0], consumer).await.state != DeliveryState::Delivered
            {
                assert!(tokio::time::Instant::now() < deadline, "recorded");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rig.append(&[new_event("t-run", "run-2", "call-run", true)])
            .await;
        wake.notify_one();
        wait_until("the second event is delivered", || {
            o.accepted().len() == 2 && b.accepted().len() == 2
        })
        .await;
        assert_eq!(rig.orchestrator.accepted_ids(), ["run-1", "run-2"]);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("run stops on shutdown")
            .expect("run task");
    }
}

// ---- retention ---------------------------------------------------------------------------------

fn quarantined(tenant: &str, received_at_us: i64) -> NewQuarantined {
    NewQuarantined {
        tenant_id: tenant.into(),
        client_id: "dental".into(),
        endpoint_id: "ghl-main".into(),
        provider: Provider::Ghl,
        raw_body: b"{}".to_vec(),
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        provider_event_type: "ContactCreate".into(),
        provider_event_id: "wh-1".into(),
        failure: QuarantineFailure {
            reason: QuarantineReason::UnknownEventType,
            schema_errors: Vec::new(),
            error_message: "unknown event type".into(),
            schema_url: String::new(),
        },
        received_at_us,
    }
}

#[tokio::test]
async fn retention_purges_old_records_by_their_own_cutoffs() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let start = now_micros();
        let t = "t-ret";
        let ids = rig
            .append(&[
                event_at(t, "old-done", "k1", false, start - 10 * DAY),
                event_at(t, "new-done", "k2", false, start - DAY),
                event_at(t, "old-pending", "k3", false, start - 10 * DAY),
                event_at(t, "old-dead", "k4", false, start - 10 * DAY),
                // Its own settings: events for an hour, the rest by default.
                event_at("t-own", "own-done", "k5", false, start - 2 * 3600 * SECOND),
            ])
            .await;
        let [old_done, new_done, old_pending, old_dead, own_done] =
            <[String; 5]>::try_from(ids).expect("five events");
        rig.store
            .put_retention(
                &RetentionSettings {
                    tenant_id: "t-own".into(),
                    event_retention_secs: Some(3600),
                    quarantine_retention_secs: None,
                    dead_letter_retention_secs: None,
                    revision: 0,
                    updated_at_us: 0,
                },
                None,
                start,
            )
            .await
            .expect("put retention");
        let old_q = rig
            .store
            .quarantine(&quarantined(t, start - 20 * DAY))
            .await
            .expect("quarantine");
        let new_q = rig
            .store
            .quarantine(&quarantined(t, start - DAY))
            .await
            .expect("quarantine");
        rig.orchestrator.refuse("old-pending", Code::Unavailable);
        rig.orchestrator.refuse("old-dead", Code::InvalidArgument);
        let now = now_micros() + SECOND;
        assert_eq!(drain(&rig.dispatcher(config()), now).await, 5);
        assert_eq!(
            rig.delivery(t, &old_dead, "orchestrator").await.state,
            DeliveryState::DeadLettered
        );

        let defaults = RetentionConfig {
            events_days: 7,
            dead_letters_days: 30,
            quarantine_days: 14,
            purge_every_secs: 3_600,
        };
        let purged = retention::purge_once(rig.store.as_ref(), &defaults, now)
            .await
            .expect("purge");
        assert_eq!(
            purged,
            Purged {
                events: 2,
                quarantined: 1
            },
            "{}",
            backend.name
        );
        assert!(
            !rig.exists(t, &old_done).await,
            "{}: old and delivered",
            backend.name
        );
        assert!(
            !rig.exists("t-own", &own_done).await,
            "{}: the tenant's own hour",
            backend.name
        );
        assert!(rig.exists(t, &new_done).await, "{}: recent", backend.name);
        assert!(
            rig.exists(t, &old_pending).await,
            "{}: still pending",
            backend.name
        );
        assert!(
            rig.exists(t, &old_dead).await,
            "{}: recent dead letter",
            backend.name
        );
        let quarantine = |id: String| {
            let store = rig.store.clone();
            async move { store.get_quarantined(t, &id).await.expect("get").is_some() }
        };
        assert!(!quarantine(old_q.id.clone()).await, "{}", backend.name);
        assert!(quarantine(new_q.id.clone()).await, "{}", backend.name);

        // A month later the dead letter has aged out too; the pending event never does.
        let later = now + 31 * DAY;
        let purged = retention::purge_once(rig.store.as_ref(), &defaults, later)
            .await
            .expect("purge");
        assert_eq!(
            purged,
            Purged {
                events: 2,
                quarantined: 1
            },
            "{}",
            backend.name
        );
        assert!(!rig.exists(t, &old_dead).await, "{}", backend.name);
        assert!(!rig.exists(t, &new_done).await, "{}", backend.name);
        assert!(rig.exists(t, &old_pending).await, "{}", backend.name);
        assert!(!quarantine(new_q.id.clone()).await, "{}", backend.name);
        assert_eq!(
            retention::purge_once(rig.store.as_ref(), &defaults, later)
                .await
                .expect("purge"),
            Purged::default()
        );
    }
}

#[tokio::test]
async fn the_retention_job_purges_at_start_and_stops_on_shutdown() {
    for backend in backends().await {
        let rig = Rig::new(&backend).await;
        let old = now_micros() - 10 * DAY;
        let ids = rig
            .append(&[event_at("t-job", "job-old", "k", false, old)])
            .await;
        assert_eq!(
            drain(&rig.dispatcher(config()), now_micros() + SECOND).await,
            1
        );
        let shutdown = CancellationToken::new();
        let job = tokio::spawn(retention::run(
            rig.store.clone(),
            RetentionConfig {
                events_days: 7,
                dead_letters_days: 30,
                quarantine_days: 14,
                purge_every_secs: 3_600,
            },
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rig.exists("t-job", &ids[0]).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: purged",
                backend.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), job)
            .await
            .expect("the job stops on shutdown")
            .expect("job task");
    }
}
