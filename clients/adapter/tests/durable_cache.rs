//! The adapters' durable cache on SQLite and PostgreSQL: what the Twilio adapter's at-most-once
//! sends rely on without Redis — one winner among racing claims, expiry, and entries that
//! outlive the process (a new connection to the same database still sees them).
use std::time::Duration;

use maxai_adapter::SqlCache;
use maxai_kit::shared_state::Cache;
use maxai_testkit::backends;

#[tokio::test]
async fn claims_are_won_once_expire_and_survive_a_restart() {
    for backend in backends().await {
        let cache = SqlCache::connect(&backend.storage).await.expect("connect");
        let day = Duration::from_secs(86_400);
        assert_eq!(cache.get("k").await.unwrap(), None);

        // Sixteen racing claims of one key: exactly one wins, and its value is kept.
        let claims = futures::future::join_all((0..16u8).map(|i| {
            let cache = &cache;
            async move { (i, cache.set_if_absent("send:1", &[i], day).await.unwrap()) }
        }))
        .await;
        let winners: Vec<u8> = claims
            .iter()
            .filter(|(_, won)| *won)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(winners.len(), 1, "{claims:?}");
        assert_eq!(cache.get("send:1").await.unwrap(), Some(vec![winners[0]]));

        // set overwrites; delete forgets; an expired holder can be claimed again.
        cache.set("send:1", b"result", day).await.unwrap();
        assert_eq!(
            cache.get("send:1").await.unwrap().as_deref(),
            Some(&b"result"[..])
        );
        assert!(cache
            .set_if_absent("short", b"a", Duration::from_millis(1))
            .await
            .unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(cache.get("short").await.unwrap(), None, "expired");
        assert!(cache.set_if_absent("short", b"b", day).await.unwrap());
        cache.delete("short").await.unwrap();
        assert_eq!(cache.get("short").await.unwrap(), None);

        // A new process on the same database remembers what was sent.
        drop(cache);
        let reopened = SqlCache::connect(&backend.storage)
            .await
            .expect("reconnect");
        assert_eq!(
            reopened.get("send:1").await.unwrap().as_deref(),
            Some(&b"result"[..]),
            "{}",
            backend.name
        );
        assert!(!reopened
            .set_if_absent("send:1", b"again", day)
            .await
            .unwrap());
    }
}
