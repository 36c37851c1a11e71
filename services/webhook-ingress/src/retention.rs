//! The retention job: deletes each tenant's webhook records once they are older than its
//! retention settings (or the platform defaults in `[webhook.retention]`), and erases the
//! ciphertext of expired endpoint secrets.
//!
//! The store deletes in transactions of at most [`PURGE_BATCH`] rows, so a purge never holds
//! locks long enough to stall ingestion or delivery. Every replica may run the job: purging is
//! idempotent, and concurrent purges only delete disjoint small batches.
use std::{sync::Arc, time::Duration};

use maxai_kit::{CancellationToken, Result};

use crate::{
    config::RetentionConfig,
    domain::{Cutoffs, Purged, RetentionSettings},
    store::EventStore,
};

/// Rows deleted per purge transaction.
pub const PURGE_BATCH: i64 = 500;
/// Tenants read per page of [`EventStore::tenants_with_records`].
const TENANT_PAGE: i64 = 100;
const DAY_SECS: i64 = 86_400;

/// The cut-offs of one tenant at `now_us`: each of its own settings, or the default where it
/// has none.
pub fn cutoffs(
    settings: Option<&RetentionSettings>,
    defaults: &RetentionConfig,
    now_us: i64,
) -> Cutoffs {
    let pick = |own: Option<i64>, default_days: u32| {
        own.unwrap_or_else(|| i64::from(default_days) * DAY_SECS)
    };
    Cutoffs::at(
        now_us,
        pick(
            settings.and_then(|s| s.event_retention_secs),
            defaults.events_days,
        ),
        pick(
            settings.and_then(|s| s.dead_letter_retention_secs),
            defaults.dead_letters_days,
        ),
        pick(
            settings.and_then(|s| s.quarantine_retention_secs),
            defaults.quarantine_days,
        ),
    )
}

/// Purges every tenant holding records as of `now_us`, then destroys expired secrets. Returns
/// what was purged in total; stops at the first storage error (the next run resumes).
pub async fn purge_once(
    store: &dyn EventStore,
    config: &RetentionConfig,
    now_us: i64,
) -> Result<Purged> {
    let mut total = Purged::default();
    let mut after: Option<String> = None;
    loop {
        let tenants = store
            .tenants_with_records(after.as_deref(), TENANT_PAGE)
            .await?;
        for tenant in &tenants {
            let settings = store.get_retention(tenant).await?;
            let cutoffs = cutoffs(settings.as_ref(), config, now_us);
            // The store itself repeats batches of PURGE_BATCH until one comes back short.
            let purged = store.purge(tenant, &cutoffs, PURGE_BATCH).await?;
            if purged != Purged::default() {
                tracing::info!(
                    tenant = %tenant,
                    events = purged.events,
                    quarantined = purged.quarantined,
                    "webhook retention purged"
                );
            }
            total.events += purged.events;
            total.quarantined += purged.quarantined;
        }
        if (tenants.len() as i64) < TENANT_PAGE {
            break;
        }
        after = tenants.last().cloned();
    }
    let secrets = store.destroy_expired_secrets(now_us).await?;
    if secrets > 0 {
        tracing::info!(secrets, "expired webhook secrets destroyed");
    }
    Ok(total)
}

/// Runs [`purge_once`] at start and then every `purge_every_secs` until `shutdown`. Errors are
/// logged; the next run tries again.
pub async fn run(store: Arc<dyn EventStore>, config: RetentionConfig, shutdown: CancellationToken) {
    let every = Duration::from_secs(config.purge_every_secs.max(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now_us = maxai_kit::storage::now_micros();
        // A purge is many short transactions; stopping between them loses nothing.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = purge_once(store.as_ref(), &config, now_us) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "webhook retention purge failed; retrying next run");
                }
            }
        }
    }
}
