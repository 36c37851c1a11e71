//! Group commit: many concurrent webhooks, few transactions.
//!
//! Each ingest request calls [`GroupCommitter::submit`] and waits. A background task takes
//! whatever has queued up (up to `max_batch`, optionally lingering a little for more), appends
//! it with [`EventStore::append`] in one transaction, and only then answers every caller — so a
//! provider's 2xx always follows the commit of its event, while the number of commits (fsyncs)
//! grows with load far slower than the number of webhooks. Under light load a batch holds one
//! event and adds no latency; under heavy load batches grow while the previous commit runs.
//!
//! Up to `max_in_flight` batches commit at once. Events submitted concurrently have no defined
//! order between them; an event submitted after another's `submit` returned is stored (and so
//! delivered, within its ordering key) after it.
//!
//! If a batch fails because of its contents (a refused event, a constraint, a deadlock), its
//! events are retried one per transaction, so one bad event cannot fail its neighbours; each
//! caller gets its own event's outcome. If the database is unavailable, every caller of the
//! batch gets the error at once.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use maxai_kit::{Error, ErrorKind, Result};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::EventStore;
use crate::domain::{Appended, NewEvent};

/// How the committer batches.
#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most events in one transaction.
    pub max_batch: usize,
    /// How long to wait for more events after the first of a batch (zero: take only what is
    /// already queued).
    pub linger: Duration,
    /// Most transactions committing at once.
    pub max_in_flight: usize,
    /// Submissions waiting beyond this apply back-pressure (`submit` waits for room).
    pub queue_capacity: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 256,
            linger: Duration::ZERO,
            max_in_flight: 2,
            queue_capacity: 8192,
        }
    }
}

/// Counters of a committer.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    transactions: AtomicU64,
    events: AtomicU64,
    failed_batches: AtomicU64,
    largest_batch: AtomicU64,
}

impl GroupCommitStats {
    /// Transactions attempted (batches, plus the one-by-one retries of failed batches).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
    /// Events submitted to the store.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Batches that failed and were retried one event at a time.
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }
    pub fn largest_batch(&self) -> u64 {
        self.largest_batch.load(Ordering::Relaxed)
    }
}

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<Appended>>,
}

/// Handle to a background group committer; cheap to clone. The task ends (after committing
/// everything queued) when the last handle is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
    stats: Arc<GroupCommitStats>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn stopped() -> Error {
    Error::new(ErrorKind::Unavailable, "the event committer has stopped")
}

impl GroupCommitter {
    /// Starts the committer on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn EventStore>, config: GroupCommitConfig) -> GroupCommitter {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(GroupCommitStats::default());
        tokio::spawn(run(store, rx, config, stats.clone()));
        GroupCommitter { queue, stats }
    }

    /// Stores `event` (in some batch) and answers once that batch has committed.
    pub async fn submit(&self, event: NewEvent) -> Result<Appended> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { event, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    mut rx: mpsc::Receiver<Job>,
    config: GroupCommitConfig,
    stats: Arc<GroupCommitStats>,
) {
    let max_batch = config.max_batch.max(1);
    let in_flight = config.max_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // Wait for a free slot before gathering, so that whatever queues meanwhile joins the
        // next batch instead of waiting behind it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !config.linger.is_zero() && batch.len() < max_batch {
            let deadline = tokio::time::Instant::now() + config.linger;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        let store = store.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            commit(&*store, batch, &stats).await;
            drop(slot);
        });
    }
    // Let the batches still committing finish before the task ends.
    let _ = slots.acquire_many(in_flight as u32).await;
}

async fn commit(store: &dyn EventStore, batch: Vec<Job>, stats: &GroupCommitStats) {
    let (events, replies): (Vec<NewEvent>, Vec<oneshot::Sender<Result<Appended>>>) =
        batch.into_iter().map(|j| (j.event, j.reply)).unzip();
    let n = events.len() as u64;
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    stats.events.fetch_add(n, Ordering::Relaxed);
    stats.largest_batch.fetch_max(n, Ordering::Relaxed);
    match store.append(&events).await {
        Ok(outcomes) if outcomes.len() == events.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The caller may have gone (its request was cancelled); the event is stored
                // all the same and the provider's retry will be a duplicate.
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(outcomes) => {
            tracing::error!(
                events = events.len(),
                outcomes = outcomes.len(),
                "event store answered a batch with the wrong number of outcomes"
            );
            for reply in replies {
                let _ = reply.send(Err(Error::internal(anyhow::anyhow!(
                    "event store answered a batch with the wrong number of outcomes"
                ))));
            }
        }
        Err(e) if events.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) if !may_be_one_event(&e) => {
            // The database itself failed (unreachable, pool exhausted): retrying each event
            // alone would only multiply the wait. Every caller answers 5xx; providers retry.
            tracing::warn!(events = events.len(), error = %e, "event batch failed");
            for reply in replies {
                let _ = reply.send(Err(shared(&e)));
            }
        }
        Err(e) => {
            tracing::warn!(events = events.len(), error = %e, "event batch failed; retrying one by one");
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            for (event, reply) in events.iter().zip(replies) {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                let outcome = store
                    .append(std::slice::from_ref(event))
                    .await
                    .and_then(|mut v| {
                        v.pop().ok_or_else(|| {
                            Error::internal(anyhow::anyhow!("event store answered no outcome"))
                        })
                    });
                let _ = reply.send(outcome);
            }
        }
    }
}

/// Whether a batch error may come from one of its events (refused input, a constraint, a
/// deadlock) rather than from the database being unavailable.
fn may_be_one_event(e: &Error) -> bool {
    e.kind == ErrorKind::InvalidArgument
        || e.source
            .as_ref()
            .and_then(|s| s.downcast_ref::<sqlx::Error>())
            .is_some_and(|s| matches!(s, sqlx::Error::Database(_)))
}

/// A copy of a batch's error for each of its callers (the cause was logged once).
fn shared(e: &Error) -> Error {
    let mut copy = Error::new(e.kind, e.message.clone());
    copy.violations = e.violations.clone();
    copy.retry_after = e.retry_after;
    copy
}
