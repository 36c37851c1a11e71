//! Cron schedule triggers: next slot in the trigger's time zone (DST handled by croner), and
//! the scheduler tick that fires due slots. Each slot is fired by exactly one replica: firing
//! inserts a unique (trigger, slot) row in the same transaction as the execution. Missed slots
//! (the scheduler was down) follow the trigger's policy: `skip` fires only the latest due slot
//! and moves the trigger past `now`, `catch_up` fires each missed slot, oldest first, up to a
//! bound. A firing re-checks in its transaction that the trigger still belongs to the version
//! it was read with, and honours the tenant's `max_pending` as events do. The same loop purges
//! consumed event ids and fired slots older than `dedupe_retention_secs`.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use maxai_kit::{CancellationToken, Result};

use crate::{
    config::OrchestratorConfig,
    domain::{flow::MissedPolicy, TriggerInfo, TriggerKind},
    store::{NewExecution, OrchestratorStore, TriggerRecord},
};

/// Parses a 5-field cron expression.
pub fn parse_cron(expr: &str) -> std::result::Result<Cron, String> {
    if expr.split_whitespace().count() != 5 {
        return Err("must have 5 fields (minute hour day-of-month month day-of-week)".to_owned());
    }
    Cron::new(expr).parse().map_err(|e| e.to_string())
}

fn tz_of(name: &str) -> chrono_tz::Tz {
    if name.is_empty() {
        chrono_tz::UTC
    } else {
        name.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// The first slot strictly after `after_us`, in UTC microseconds.
pub fn next_slot(cron: &str, time_zone: &str, after_us: i64) -> Option<i64> {
    let cron = parse_cron(cron).ok()?;
    let tz = tz_of(time_zone);
    let after: DateTime<Utc> = Utc.timestamp_micros(after_us).single()?;
    let local = after.with_timezone(&tz);
    cron.find_next_occurrence(&local, false)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
}

/// Slots a `skip` walk steps through at most; a sane cron has far fewer within one window.
const SKIP_WALK_CAP: usize = 100_000;

/// The latest slot at or before `now`, given that `first` (a slot) is due. Searches back from
/// `now` over doubling windows, so a long outage costs a few lookups, not one per missed slot.
pub fn latest_due_slot(cron: &str, time_zone: &str, first: i64, now: i64) -> i64 {
    let mut back: i64 = 60_000_000;
    loop {
        let start = now.saturating_sub(back);
        let found = if start <= first {
            Some(first)
        } else {
            next_slot(cron, time_zone, start - 1).filter(|s| *s <= now)
        };
        if let Some(mut latest) = found {
            for _ in 0..SKIP_WALK_CAP {
                match next_slot(cron, time_zone, latest) {
                    Some(n) if n <= now => latest = n,
                    _ => break,
                }
            }
            return latest;
        }
        back = back.saturating_mul(2);
    }
}

/// Fires every due slot of every due trigger at `now`; returns how many executions it started.
pub async fn tick(
    store: &dyn OrchestratorStore,
    now: i64,
    config: &OrchestratorConfig,
) -> Result<usize> {
    let mut started = 0;
    let mut max_pending: HashMap<String, i64> = HashMap::new();
    for t in store.due_schedules(now, 100).await? {
        let Some(first) = t.next_fire_us else {
            continue;
        };
        // (slot, where the trigger goes after it)
        let plan: Vec<(i64, Option<i64>)> = if MissedPolicy::parse(&t.missed) == MissedPolicy::Skip
        {
            let latest = latest_due_slot(&t.schedule, &t.time_zone, first, now);
            vec![(
                latest,
                next_slot(&t.schedule, &t.time_zone, now.max(latest)),
            )]
        } else {
            let mut slots = vec![first];
            while let Some(next) =
                next_slot(&t.schedule, &t.time_zone, *slots.last().unwrap_or(&first))
            {
                if next > now || slots.len() as u32 >= config.max_catch_up_slots.max(1) {
                    break;
                }
                slots.push(next);
            }
            // Each firing moves the trigger to the slot after it; a bounded catch-up that
            // stops short of `now` goes on from there at the next tick.
            slots
                .into_iter()
                .map(|s| (s, next_slot(&t.schedule, &t.time_zone, s)))
                .collect()
        };
        let cap = match max_pending.get(&t.tenant) {
            Some(c) => *c,
            None => {
                let stored = store
                    .get_limits(&t.tenant)
                    .await?
                    .map(|l| l.limits.max_pending)
                    .unwrap_or(0);
                let c = if stored > 0 {
                    stored
                } else {
                    config.default_max_pending
                };
                max_pending.insert(t.tenant.clone(), c);
                c
            }
        };
        for (slot, next_fire) in plan {
            let exec = execution_for(&t, slot);
            if store
                .fire_schedule_slot(&t, slot, next_fire, Some(&exec), cap, now)
                .await?
            {
                started += 1;
                metrics::counter!(crate::metrics::SCHEDULE_FIRES_TOTAL).increment(1);
            }
        }
    }
    Ok(started)
}

fn execution_for(t: &TriggerRecord, slot: i64) -> NewExecution {
    NewExecution {
        id: uuid::Uuid::now_v7().simple().to_string(),
        tenant: t.tenant.clone(),
        flow_id: t.flow_id.clone(),
        version: t.version,
        trigger: TriggerInfo {
            kind: TriggerKind::Schedule.as_str().to_owned(),
            trigger_id: t.trigger_id.clone(),
            schedule_us: Some(slot),
            ..TriggerInfo::default()
        },
        client: String::new(),
        input: serde_json::json!({"scheduleTime": chrono::Utc.timestamp_micros(slot).single().map(|d| d.to_rfc3339()).unwrap_or_default()}),
        rerun_of: String::new(),
        ctx: serde_json::json!({}),
        cursor: None,
    }
}

/// Runs [`tick`] every `schedule_tick_ms` until `shutdown`, and [`purge`] every
/// `dedupe_purge_every_secs`.
pub async fn run(
    store: Arc<dyn OrchestratorStore>,
    config: OrchestratorConfig,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(config.schedule_tick_ms.max(10));
    let purge_every = Duration::from_secs(config.dedupe_purge_every_secs.max(1));
    let mut last_purge: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = maxai_kit::storage::now_micros();
        if let Err(e) = tick(store.as_ref(), now, &config).await {
            tracing::warn!(error = %e, "schedule tick failed");
        }
        if last_purge.is_none_or(|at| at.elapsed() >= purge_every) {
            last_purge = Some(Instant::now());
            match purge(store.as_ref(), now, &config).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "purged old dedupe records"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dedupe purge failed"),
            }
        }
    }
}

/// Forgets consumed event ids and fired slots older than the retention window at `now`.
pub async fn purge(
    store: &dyn OrchestratorStore,
    now: i64,
    config: &OrchestratorConfig,
) -> Result<u64> {
    let window = i64::try_from(config.dedupe_retention_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000);
    store.purge_dedupe(now.saturating_sub(window)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn slots_follow_the_time_zone_across_dst() {
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        let winter =
            next_slot("0 9 * * *", "America/New_York", us("2026-03-07T15:00:00Z")).unwrap();
        assert_eq!(
            winter,
            us("2026-03-08T13:00:00Z"),
            "the first day after the spring change"
        );
        let before =
            next_slot("0 9 * * *", "America/New_York", us("2026-03-06T15:00:00Z")).unwrap();
        assert_eq!(before, us("2026-03-07T14:00:00Z"));
        assert_eq!(
            next_slot("*/15 * * * *", "", us("2026-01-01T00:00:00Z")),
            Some(us("2026-01-01T00:15:00Z"))
        );
        assert!(parse_cron("* * * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
    }
}
