//! This replica's view of every flag: an immutable snapshot swapped whole on change, so
//! evaluation never waits for storage or a lock. A write reloads the flag here and announces it
//! on the notifier; every other replica reloads it on the announcement (well within a second).
//! A periodic full reload repairs anything a lost message missed.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use maxai_kit::{shared_state::Notifier, CancellationToken, Result};
use tokio::sync::broadcast::error::RecvError;

use crate::{
    domain::{CompiledFlag, FlagKey, Snapshot},
    metrics::{SNAPSHOT_FLAGS, SNAPSHOT_RELOADS_TOTAL},
    store::FlagStore,
};

/// Notifier channel carrying the key of every changed flag.
pub const CHANGES_CHANNEL: &str = "flags.changed";
/// Message meaning "reload everything".
const ALL: &str = "*";

pub struct FlagView {
    store: Arc<dyn FlagStore>,
    notifier: Arc<dyn Notifier>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl FlagView {
    /// Loads every flag, then follows changes until `shutdown`.
    pub async fn start(
        store: Arc<dyn FlagStore>,
        notifier: Arc<dyn Notifier>,
        full_refresh: Duration,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let view = Arc::new(FlagView {
            store,
            notifier,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
        });
        // Subscribe before the first load, so a change made in between is not missed.
        let mut rx = view
            .notifier
            .subscribe(CHANGES_CHANNEL)
            .await
            .map_err(maxai_kit::Error::internal)?;
        view.reload_all().await?;
        let follower = view.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(full_refresh);
            tick.tick().await;
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => follower.reload_all().await,
                    msg = rx.recv() => match msg {
                        Ok(key) if key == ALL => follower.reload_all().await,
                        Ok(key) => follower.reload(&key).await,
                        Err(RecvError::Lagged(_)) => follower.reload_all().await,
                        Err(RecvError::Closed) => break,
                    },
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "flag view reload failed; keeping the previous snapshot");
                }
            }
        });
        Ok(view)
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads `key` here and tells every other replica to do the same.
    pub async fn changed(&self, key: &FlagKey) -> Result<()> {
        self.reload(key.as_str()).await?;
        if let Err(e) = self.notifier.publish(CHANGES_CHANNEL, key.as_str()).await {
            // The periodic full reload brings the other replicas up to date.
            tracing::warn!(error = %e, flag = %key, "could not announce a flag change");
        }
        Ok(())
    }

    async fn compile(&self, key: &FlagKey) -> Result<Option<CompiledFlag>> {
        let Some(flag) = self.store.get(key).await? else {
            return Ok(None);
        };
        let mut allowlists: HashMap<_, HashSet<String>> = HashMap::new();
        for entry in self.store.allowlist_entries(key).await? {
            allowlists
                .entry((entry.environment, entry.kind))
                .or_default()
                .insert(entry.subject);
        }
        Ok(Some(CompiledFlag { flag, allowlists }))
    }

    async fn reload(&self, key: &str) -> Result<()> {
        let Ok(key) = FlagKey::parse(key) else {
            return Ok(());
        };
        let compiled = self.compile(&key).await?;
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Snapshot::clone(&guard);
        match compiled {
            Some(c) => next.flags.insert(key.to_string(), Arc::new(c)),
            None => next.flags.remove(key.as_str()),
        };
        metrics::gauge!(SNAPSHOT_FLAGS).set(next.flags.len() as f64);
        *guard = Arc::new(next);
        metrics::counter!(SNAPSHOT_RELOADS_TOTAL, "scope" => "flag").increment(1);
        Ok(())
    }

    async fn reload_all(&self) -> Result<()> {
        let mut next = Snapshot::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(after.as_deref(), 500, None).await?;
            let Some(last) = page.last().map(|f| f.key.to_string()) else {
                break;
            };
            for flag in page {
                if let Some(c) = self.compile(&flag.key).await? {
                    next.flags.insert(flag.key.to_string(), Arc::new(c));
                }
            }
            after = Some(last);
        }
        metrics::gauge!(SNAPSHOT_FLAGS).set(next.flags.len() as f64);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        metrics::counter!(SNAPSHOT_RELOADS_TOTAL, "scope" => "all").increment(1);
        Ok(())
    }
}
