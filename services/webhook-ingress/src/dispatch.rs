//! The dispatcher: hands every stored event to its consumers' `EventConsumerService.ConsumeEvent`
//! from the durable outbox, with exponential backoff and jitter, until the consumer accepts it or
//! the retry budget runs out (then the outbox row is a dead letter).
//!
//! - **Leases.** Rows are taken with [`EventStore::claim`] under an owner unique to this
//!   dispatcher (host name + random UUID), so replicas never deliver the same row at once. A
//!   replica that dies holding rows loses them when the lease expires and another replica takes
//!   over. A completion the store refuses with `Conflict` means exactly that happened (the lease
//!   ran out mid-call): the row is left to its new owner. Consumers are idempotent by event id,
//!   so the rare second delivery this allows is harmless.
//! - **Order.** `claim` leases only the head of each (consumer, ordering key) queue, so the
//!   events of one call or conversation reach a consumer one at a time, in stored order; a
//!   failing head holds back the events behind it until it is delivered or dead-lettered.
//! - **Retries.** Every gRPC error is retried after [`retry_delay_us`] (doubling from
//!   `backoff_base_ms`, capped at `backoff_max_secs`, uniformly jittered over the upper half of
//!   the window), except [`Code::InvalidArgument`] and [`Code::FailedPrecondition`]: the consumer
//!   contract (`consumer.proto`) reserves those for "this event will never be accepted", so they
//!   dead-letter at once. Everything else — `UNAVAILABLE`, `DEADLINE_EXCEEDED`, but also
//!   `PERMISSION_DENIED`, `UNAUTHENTICATED`, `NOT_FOUND`, `UNIMPLEMENTED` — is usually a
//!   deployment or credential problem that gets fixed, so it is retried until the budget
//!   (`max_attempts` attempts since the last replay) is spent. A row whose consumer this replica
//!   has no channel for (configuration differs between replicas during a rollout) is failed as
//!   `UNAVAILABLE` and retried the same way.
//! - **Concurrency.** [`Dispatcher::run`] keeps up to `batch` deliveries in flight, each on its
//!   own task, and claims more as soon as at least half of the slots are free, so one slow
//!   consumer does not hold up the others. [`Dispatcher::pass`] is one claim of up to `batch`
//!   rows delivered concurrently — what tests drive with a fake clock.
//! - **Metrics.** [`DELIVERIES_TOTAL`] by consumer and outcome, [`DELIVERY_DURATION_SECONDS`]
//!   by consumer.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use maxai_kit::{storage::now_micros, telemetry::CORRELATION_HEADER, CancellationToken};
use maxai_kit::{ErrorKind, Result};
use maxai_proto::maxai::{
    common::v1 as common,
    webhook::v1::{event_consumer_service_client::EventConsumerServiceClient, ConsumeEventRequest},
};
use tokio::{sync::Notify, task::JoinSet};
use tonic::{metadata::MetadataValue, transport::Channel, Code, Status};

use crate::{
    config::DispatchConfig,
    domain::{retry_delay_us, Delivery, Failure, Next, StoredEvent},
    store::EventStore,
};

/// Counter of finished delivery attempts, labelled `consumer` and `outcome` (`delivered`,
/// `duplicate`, `retry`, `dead`, `lease_lost`).
pub const DELIVERIES_TOTAL: &str = "maxai_webhook_deliveries_total";
/// Histogram of consumer call latency in seconds, labelled `consumer`.
pub const DELIVERY_DURATION_SECONDS: &str = "maxai_webhook_delivery_duration_seconds";

/// Gives the bearer token the dispatcher presents to consumers (its service identity), if any.
pub type Credential = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Longest error message kept per failed attempt.
const MAX_ERROR_CHARS: usize = 1024;

/// Whether a consumer's answer with `code` is worth another attempt (see the module docs).
pub fn retryable(code: Code) -> bool {
    !matches!(code, Code::InvalidArgument | Code::FailedPrecondition)
}

pub use maxai_kit::error::code_name;

/// The `maxai.common.v1.CanonicalEvent` consumers receive for a stored event. `Err` when the
/// stored data is not a JSON object (the store only ever keeps objects).
pub fn to_proto(stored: &StoredEvent) -> std::result::Result<common::CanonicalEvent, String> {
    let e = &stored.event;
    let data = match serde_json::from_str::<serde_json::Value>(&e.data) {
        Ok(serde_json::Value::Object(fields)) => json_object(fields),
        Ok(_) => {
            return Err(format!(
                "event {}: stored data is not a JSON object",
                stored.id
            ))
        }
        Err(err) => {
            return Err(format!(
                "event {}: stored data is not JSON: {err}",
                stored.id
            ))
        }
    };
    Ok(common::CanonicalEvent {
        id: e.cloud_event_id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        subject: e.subject.clone(),
        time: Some(prost_types::Timestamp {
            seconds: e.time_us.div_euclid(1_000_000),
            nanos: (e.time_us.rem_euclid(1_000_000) * 1_000) as i32,
        }),
        data: Some(data),
        spec_version: crate::domain::SPEC_VERSION.to_owned(),
        tenant: format!("tenants/{}", e.tenant_id),
        client: if e.client_id.is_empty() {
            String::new()
        } else {
            format!("tenants/{}/clients/{}", e.tenant_id, e.client_id)
        },
        provider: e.provider.as_str().to_owned(),
        provider_event_id: e.provider_event_id.clone(),
        ordering_key: e.ordering_key.clone(),
    })
}

fn json_object(fields: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k, json_value(v)))
            .collect(),
    }
}

fn json_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(json_object(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Where a delivery reads the time: a fixed instant ([`Dispatcher::pass`], fake clocks in
/// tests) or the system clock ([`Dispatcher::run`]).
#[derive(Debug, Clone, Copy)]
enum Clock {
    Fixed(i64),
    System,
}

impl Clock {
    fn now(self) -> i64 {
        match self {
            Clock::Fixed(t) => t,
            Clock::System => now_micros(),
        }
    }
}

/// How one leased row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Duplicate,
    Retry,
    Dead,
    /// The lease ran out and another replica owns the row now.
    LeaseLost,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
            Outcome::LeaseLost => "lease_lost",
        }
    }
}

/// Delivers outbox rows to their consumers; one per process (see the module docs).
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    consumers: HashMap<String, EventConsumerServiceClient<Channel>>,
    config: DispatchConfig,
    credential: Credential,
    owner: String,
    lease_us: i64,
    timeout: Duration,
}

impl Dispatcher {
    /// `consumers`: consumer name → channel to its `EventConsumerService` (the caller builds
    /// them from `webhook.consumers`, resolving "" to this process's own listener).
    /// `credential`: the bearer token to send, as `authorization: Bearer …`, when it gives one.
    ///
    /// The lease is `lease_secs`, but never shorter than the call deadline plus one second: a
    /// lease that ran out mid-call would let another replica deliver the same row concurrently.
    pub fn new(
        store: Arc<dyn EventStore>,
        consumers: HashMap<String, Channel>,
        config: DispatchConfig,
        credential: Credential,
    ) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "dispatcher".to_owned());
        let owner = format!("{host}/{}", uuid::Uuid::new_v4().simple());
        let timeout_us = i64::try_from(config.timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000);
        let configured_us = i64::try_from(config.lease_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        let lease_us = configured_us.max(timeout_us.saturating_add(1_000_000));
        if lease_us != configured_us {
            tracing::warn!(
                lease_secs = config.lease_secs,
                timeout_ms = config.timeout_ms,
                "webhook.dispatch.lease_secs does not outlast the call deadline; leasing for {} ms",
                lease_us / 1_000
            );
        }
        let consumers = consumers
            .into_iter()
            .map(|(name, channel)| (name, EventConsumerServiceClient::new(channel)))
            .collect();
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                consumers,
                timeout: Duration::from_millis(config.timeout_ms.max(1)),
                config,
                credential,
                owner,
                lease_us,
            }),
        }
    }

    /// The lease owner this dispatcher claims rows as.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Delivers until `shutdown`, then lets the deliveries in flight finish (each is bounded by
    /// the call deadline) so their outcomes are recorded. Sleeps `idle_poll_ms` when nothing is
    /// due, waking early on `wake` (store events with `notify_one`, so a wake-up that comes while
    /// the dispatcher is busy is not lost) or when a delivery finishes (it may have unblocked the
    /// next event of its ordering key). Storage errors are logged and retried after the idle
    /// sleep.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let inner = self.inner;
        let slots = usize::try_from(inner.config.batch.max(1)).unwrap_or(1);
        let refill_at = slots.div_ceil(2);
        let idle = Duration::from_millis(inner.config.idle_poll_ms.max(1));
        let mut in_flight: JoinSet<()> = JoinSet::new();
        tracing::info!(
            owner = %inner.owner,
            consumers = ?inner.consumers.keys().collect::<Vec<_>>(),
            "webhook dispatcher started"
        );
        while !shutdown.is_cancelled() {
            while let Some(done) = in_flight.try_join_next() {
                report_panic(done);
            }
            let free = slots - in_flight.len();
            if free >= refill_at {
                match inner
                    .store
                    .claim(&inner.owner, now_micros(), inner.lease_us, free as i64)
                    .await
                {
                    Ok(rows) => {
                        for d in rows {
                            let inner = inner.clone();
                            in_flight.spawn(async move {
                                if let Err(e) = inner.deliver(d, Clock::System).await {
                                    tracing::warn!(error = %e, "recording a delivery failed; the row is retried when its lease expires");
                                }
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming outbox rows failed"),
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => report_panic(done),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        while let Some(done) = in_flight.join_next().await {
            report_panic(done);
        }
        tracing::info!(owner = %inner.owner, "webhook dispatcher stopped");
    }

    /// One claim of up to `batch` due rows at `now_us`, delivered concurrently; everything the
    /// pass records (completion, failure, next attempt) is timed at `now_us`. Returns how many
    /// rows it handled, lost leases included; the first storage error recording an outcome, if
    /// any, after every delivery finished.
    pub async fn pass(&self, now_us: i64) -> Result<usize> {
        let inner = &self.inner;
        let rows = inner
            .store
            .claim(
                &inner.owner,
                now_us,
                inner.lease_us,
                inner.config.batch.max(1),
            )
            .await?;
        let handled = rows.len();
        let mut deliveries = JoinSet::new();
        for d in rows {
            let inner = inner.clone();
            deliveries.spawn(async move { inner.deliver(d, Clock::Fixed(now_us)).await });
        }
        let mut first_error = None;
        while let Some(done) = deliveries.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => {
                    first_error.get_or_insert(maxai_kit::Error::internal(anyhow::anyhow!(
                        "delivery task failed: {panic}"
                    )));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(handled),
        }
    }
}

fn report_panic(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "delivery task failed; the row is retried when its lease expires");
    }
}

impl Inner {
    /// Calls the row's consumer once and records the outcome.
    async fn deliver(&self, d: Delivery, clock: Clock) -> Result<()> {
        let attempted_at_us = clock.now();
        let started = Instant::now();
        let answer = self.call(&d).await;
        let latency = started.elapsed();
        metrics::histogram!(DELIVERY_DURATION_SECONDS, "consumer" => d.consumer.clone())
            .record(latency.as_secs_f64());
        let now_us = clock.now();
        let (outcome, recorded) = match answer {
            Ok(duplicate) => {
                let outcome = if duplicate {
                    Outcome::Duplicate
                } else {
                    Outcome::Delivered
                };
                let recorded = self
                    .store
                    .delivered(d.outbox_id, &self.owner, duplicate, now_us)
                    .await;
                (outcome, recorded)
            }
            Err(status) => {
                let next = self.next_after(&d, status.code(), now_us);
                let failure = Failure {
                    status_code: code_name(status.code()).to_owned(),
                    error_message: status.message().chars().take(MAX_ERROR_CHARS).collect(),
                    attempted_at_us,
                    latency_us: i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
                };
                let outcome = match next {
                    Next::RetryAt(_) => Outcome::Retry,
                    Next::Dead => Outcome::Dead,
                };
                match outcome {
                    Outcome::Dead => tracing::warn!(
                        outbox_id = d.outbox_id, consumer = %d.consumer, event = %d.event.id,
                        attempt = d.attempt, code = %failure.status_code,
                        error = %failure.error_message, "delivery gave up: dead letter"
                    ),
                    _ => tracing::debug!(
                        outbox_id = d.outbox_id, consumer = %d.consumer, event = %d.event.id,
                        attempt = d.attempt, code = %failure.status_code,
                        error = %failure.error_message, ?next, "delivery failed; will retry"
                    ),
                }
                let recorded = self
                    .store
                    .failed(d.outbox_id, &self.owner, &failure, next)
                    .await;
                (outcome, recorded)
            }
        };
        let outcome = match recorded {
            Ok(()) => outcome,
            Err(e) if e.kind == ErrorKind::Conflict => {
                tracing::debug!(
                    outbox_id = d.outbox_id, consumer = %d.consumer, event = %d.event.id,
                    "lease lost mid-delivery; the row belongs to another dispatcher now"
                );
                Outcome::LeaseLost
            }
            Err(e) => return Err(e),
        };
        metrics::counter!(DELIVERIES_TOTAL, "consumer" => d.consumer, "outcome" => outcome.label())
            .increment(1);
        Ok(())
    }

    /// The consumer's answer: `Ok(duplicate)` when it accepted the event.
    async fn call(&self, d: &Delivery) -> std::result::Result<bool, Status> {
        let Some(client) = self.consumers.get(&d.consumer) else {
            return Err(Status::unavailable(format!(
                "consumer {:?} is not configured on dispatcher {}",
                d.consumer, self.owner
            )));
        };
        let event = to_proto(&d.event).map_err(Status::internal)?;
        let mut request = tonic::Request::new(ConsumeEventRequest {
            event: Some(event),
            attempt: i32::try_from(d.attempt).unwrap_or(i32::MAX),
        });
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        // The consumer's logs of every attempt at one event share the event's id.
        if let Ok(v) = MetadataValue::try_from(d.event.id.as_str()) {
            metadata.insert(CORRELATION_HEADER, v);
        }
        if let Some(token) = (self.credential)() {
            match MetadataValue::try_from(format!("Bearer {token}")) {
                Ok(v) => {
                    metadata.insert("authorization", v);
                }
                Err(_) => tracing::warn!("the dispatcher's credential is not a valid header value"),
            }
        }
        let mut client = client.clone();
        match tokio::time::timeout(self.timeout, client.consume_event(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner().duplicate),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Retry with backoff, or give up: on a non-retryable code, or once `max_attempts`
    /// attempts since the last replay have failed.
    fn next_after(&self, d: &Delivery, code: Code, now_us: i64) -> Next {
        if !retryable(code) || d.round_attempt >= self.config.max_attempts.max(1) {
            return Next::Dead;
        }
        let base_us = i64::try_from(self.config.backoff_base_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000);
        let max_us = i64::try_from(self.config.backoff_max_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        let delay = retry_delay_us(d.round_attempt, base_us, max_us, rand::random::<f64>());
        Next::RetryAt(now_us.saturating_add(delay))
    }
}
