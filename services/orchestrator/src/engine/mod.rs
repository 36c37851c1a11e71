//! The execution engine: workers claim runnable executions with expiring leases (fairly across
//! tenants, within every concurrency cap), run their steps and checkpoint after each one, so a
//! killed worker's execution resumes elsewhere from its last finished step. Waiting (delay,
//! delegated workflow) is a state in the database with a wake-up time, never a sleeping task.
//! A runtime failure fails that execution with a stored reason; store errors leave it to be
//! retried when the lease expires. Nothing an execution does can stop a worker. At shutdown a
//! worker drains: it stops claiming, lets each running execution reach its next step boundary
//! (bounded by `drain_ms`), then stops the rest and releases its leases, so another replica
//! resumes them at once instead of after the lease expires.
pub mod ports;
mod run;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use maxai_kit::{
    shared_state::Notifier, storage::now_micros, ttl_map::TtlMap, CancellationToken, Result,
};
use tokio::{
    sync::{broadcast::error::RecvError, Notify},
    task::JoinSet,
};

use crate::{
    config::OrchestratorConfig,
    domain::{flow::Definition, VersionState},
    store::{ClaimCaps, Limits, OrchestratorStore},
};

/// How long a parsed pinned version is reused without reading it again. Active and retired
/// versions never change, but a flow can be deleted and re-created under the same id with a
/// different version 1; this replica forgets a deleted flow at once ([`Engine::forget_flow`]),
/// other replicas after this long.
const VERSION_TTL: Duration = Duration::from_secs(10);
/// Versions kept at most; the cache starts over when full (cheap, and only costs reads).
const VERSION_CACHE_MAX: usize = 10_000;

/// A cached pinned version: its tenant and flow (to forget a deleted flow) and the parsed
/// definition.
type CachedVersion = (String, String, Arc<Definition>);

/// Where replicas announce new runnable work (the message is the announcing replica's id).
const WORK_CHANNEL: &str = "orchestrator:work";

pub use ports::{Credential, PortCaller};

/// Shared by every worker of a replica.
pub struct Engine {
    pub(crate) store: Arc<dyn OrchestratorStore>,
    pub(crate) ports: PortCaller,
    pub(crate) config: OrchestratorConfig,
    wake: Notify,
    /// Parsed pinned versions (never drafts, which still change), so an execution does not
    /// read and parse its definition on every claim.
    versions: TtlMap<CachedVersion>,
    /// Set by [`Engine::wake_across`]: the notifier new work is announced on, and this
    /// replica's id in those announcements.
    announce: OnceLock<(Arc<dyn Notifier>, String)>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn OrchestratorStore>,
        ports: PortCaller,
        config: OrchestratorConfig,
    ) -> Arc<Self> {
        Arc::new(Engine {
            store,
            ports,
            config,
            wake: Notify::new(),
            versions: TtlMap::new(VERSION_CACHE_MAX),
            announce: OnceLock::new(),
        })
    }

    /// The parsed definition an execution is pinned to; `None` when missing or unreadable.
    pub(crate) async fn pinned_definition(
        &self,
        tenant: &str,
        flow_id: &str,
        version: i64,
    ) -> Result<Option<Arc<Definition>>> {
        let key = format!("{tenant}/{flow_id}/{version}");
        if let Some((_, _, def)) = self.versions.get(&key) {
            return Ok(Some(def));
        }
        let Some(record) = self.store.get_version(tenant, flow_id, version).await? else {
            return Ok(None);
        };
        let Ok(def) = Definition::parse(&record.definition) else {
            return Ok(None);
        };
        let def = Arc::new(def);
        if record.state != VersionState::Draft {
            let cached = (tenant.to_owned(), flow_id.to_owned(), def.clone());
            self.versions.insert(key, cached, VERSION_TTL);
        }
        Ok(Some(def))
    }

    /// Drops a flow's cached versions (it was deleted; its id may be reused).
    pub fn forget_flow(&self, tenant: &str, flow_id: &str) {
        self.versions
            .retain(|(t, f, _)| !(t == tenant && f == flow_id));
    }

    /// Tells idle workers new work exists (RunFlow, an event) instead of waiting for the poll,
    /// and, after [`Engine::wake_across`], the workers of every other replica too.
    pub fn notify(&self) {
        self.wake.notify_waiters();
        if let Some((notifier, me)) = self.announce.get() {
            let (notifier, me) = (notifier.clone(), me.clone());
            tokio::spawn(async move {
                if let Err(e) = notifier.publish(WORK_CHANNEL, &me).await {
                    tracing::debug!(error = %e, "announcing new work failed; replicas poll");
                }
            });
        }
    }

    /// Shares wake-ups between replicas through `notifier` (Redis pub/sub): work created on one
    /// replica wakes the idle workers of the others at once instead of at their next poll.
    /// The returned task ends at `shutdown`.
    pub async fn wake_across(
        self: &Arc<Self>,
        notifier: Arc<dyn Notifier>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let me = uuid::Uuid::new_v4().simple().to_string();
        let mut announced = notifier.subscribe(WORK_CHANNEL).await?;
        let _ = self.announce.set((notifier, me.clone()));
        let engine = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = announced.recv() => match got {
                        // Its own announcements woke this replica's workers already.
                        Ok(from) if from == me => {}
                        Ok(_) | Err(RecvError::Lagged(_)) => engine.wake.notify_waiters(),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        }))
    }

    pub(crate) fn lease_us(&self) -> i64 {
        (self.config.lease_ms as i64).saturating_mul(1000)
    }

    fn caps(&self) -> ClaimCaps {
        let c = &self.config;
        ClaimCaps {
            global_running: c.global_max_running,
            defaults: Limits {
                max_running: c.default_max_running,
                max_running_per_flow: c.default_max_running_per_flow,
                max_running_per_client: c.default_max_running_per_client,
                max_pending: c.default_max_pending,
            },
        }
    }

    /// Starts `config.workers` workers; they stop at `shutdown`.
    pub fn spawn_workers(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|i| {
                let id = format!("{}-{i}", uuid::Uuid::new_v4().simple());
                tokio::spawn(self.clone().worker(id, shutdown.clone()))
            })
            .collect()
    }

    /// One worker: claims while it has free slots, runs each claimed execution in its own task.
    /// At `shutdown` it drains (see the module doc); dropping it (a killed process) abandons its
    /// executions to their leases.
    pub async fn worker(self: Arc<Self>, id: String, shutdown: CancellationToken) {
        let mut running = JoinSet::new();
        let slots = self.config.executions_per_worker.max(1);
        let poll = Duration::from_millis(self.config.poll_ms.max(1));
        loop {
            if shutdown.is_cancelled() {
                return self.drain(&id, running).await;
            }
            let free = slots.saturating_sub(running.len());
            if free > 0 {
                match self
                    .store
                    .claim(&id, now_micros(), self.lease_us(), free as i64, self.caps())
                    .await
                {
                    Ok(claimed) => {
                        for exec in claimed {
                            let engine = self.clone();
                            let worker = id.clone();
                            let stop = shutdown.clone();
                            running.spawn(async move {
                                engine.run_execution(&worker, exec, &stop).await
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, worker = %id, "claim failed"),
                }
            }
            let notified = self.wake.notified();
            tokio::select! {
                _ = shutdown.cancelled() => return self.drain(&id, running).await,
                _ = notified => {}
                _ = tokio::time::sleep(poll) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
    }

    /// The shutdown half of [`worker`](Self::worker): executions see the cancelled token at
    /// their next step boundary and hand their lease back themselves; those still busy after
    /// `drain_ms` are stopped, and every lease left is released.
    async fn drain(&self, id: &str, mut running: JoinSet<()>) {
        let grace = Duration::from_millis(self.config.drain_ms);
        let all_done = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(worker = %id, left = running.len(), "drain timed out; stopping the rest");
        }
        // Aborts the stragglers and waits for them, so none writes after the release below.
        running.shutdown().await;
        match self.store.release_leases(id, None, now_micros()).await {
            Ok(n) if n > 0 => tracing::info!(worker = %id, released = n, "leases released"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(worker = %id, error = %e, "releasing leases failed; they expire")
            }
        }
    }

    /// Claims what is runnable now and runs it to its next stop (finished or waiting); returns
    /// how many executions it ran. Deterministic driving for tests and tools.
    pub async fn run_once(self: &Arc<Self>, worker: &str, max: i64) -> Result<usize> {
        let claimed = self
            .store
            .claim(worker, now_micros(), self.lease_us(), max, self.caps())
            .await?;
        let n = claimed.len();
        let mut set = JoinSet::new();
        for exec in claimed {
            let engine = self.clone();
            let worker = worker.to_owned();
            set.spawn(async move {
                engine
                    .run_execution(&worker, exec, &CancellationToken::new())
                    .await
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }
}
