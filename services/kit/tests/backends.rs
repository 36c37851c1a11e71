//! The kit's storage and shared-state backends against real SQLite, PostgreSQL and Redis.
use std::time::Duration;

use maxai_kit::{
    on_db,
    shared_state::SharedState,
    storage::{connect, Db, Migrations},
};
use secrecy::SecretString;
use sqlx::migrate::Migrator;

static PG: Migrator = sqlx::migrate!("tests/migrations/postgres");
static LITE: Migrator = sqlx::migrate!("tests/migrations/sqlite");
const MIGRATIONS: Migrations = Migrations {
    postgres: &PG,
    sqlite: &LITE,
};

#[tokio::test]
async fn sqlite_is_a_wal_file_per_service_with_migrations_applied() {
    let backend = maxai_testkit::sqlite();
    let a = connect(&backend.storage, "svc-a", &MIGRATIONS)
        .await
        .expect("connect a");
    let b = connect(&backend.storage, "svc-b", &MIGRATIONS)
        .await
        .expect("connect b");
    let Db::Sqlite(pool) = &a else {
        panic!("expected sqlite")
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    assert!(backend.storage.data_dir.join("svc_a.db").exists());
    assert!(backend.storage.data_dir.join("svc_b.db").exists());
    insert_and_count(&a, 1).await;
    insert_and_count(&b, 1).await;
    // Reconnecting does not apply the migrations twice or lose rows.
    let again = connect(&backend.storage, "svc-a", &MIGRATIONS)
        .await
        .expect("reconnect");
    insert_and_count(&again, 2).await;
}

#[tokio::test]
async fn postgres_is_a_schema_per_service() {
    let Some(backend) = maxai_testkit::postgres().await else {
        return;
    };
    let a = connect(&backend.storage, "svc-a", &MIGRATIONS)
        .await
        .expect("connect a");
    let b = connect(&backend.storage, "svc-b", &MIGRATIONS)
        .await
        .expect("connect b");
    insert_and_count(&a, 1).await;
    insert_and_count(&a, 2).await;
    insert_and_count(&b, 1).await;
    let Db::Postgres(pool) = &a else {
        panic!("expected postgres")
    };
    let schemas: Vec<String> = sqlx::query_scalar("SELECT table_schema FROM information_schema.tables WHERE table_name = 'kit_probe' ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("schemas");
    assert_eq!(schemas, ["svc_a", "svc_b"]);
}

async fn insert_and_count(db: &Db, expected: i64) {
    let n: i64 = on_db!(db, |pool| {
        sqlx::query("INSERT INTO kit_probe (note) VALUES ($1)")
            .bind("x")
            .execute(pool)
            .await
            .expect("insert");
        sqlx::query_scalar("SELECT COUNT(*) FROM kit_probe")
            .fetch_one(pool)
            .await
            .expect("count")
    });
    assert_eq!(n, expected, "{}", db.dialect());
}

#[tokio::test]
async fn unsupported_database_url_is_refused() {
    let mut backend = maxai_testkit::sqlite();
    backend.storage.database_url = SecretString::from("mysql://localhost/x");
    let err = connect(&backend.storage, "svc", &MIGRATIONS)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
}

async fn shared_states() -> Vec<(&'static str, SharedState, SharedState)> {
    let mut all = vec![("memory", SharedState::memory(), SharedState::memory())];
    if let Some(backend) = maxai_testkit::postgres().await {
        let one = SharedState::connect(&backend.storage).await.expect("redis");
        let two = SharedState::connect(&backend.storage).await.expect("redis");
        all.push(("redis", one, two));
    }
    all
}

#[tokio::test]
async fn set_if_absent_lets_exactly_one_of_racing_replicas_win() {
    for (name, one, two) in shared_states().await {
        let key = format!("once-{}", uuid::Uuid::new_v4());
        let mut racers = Vec::new();
        for i in 0..16 {
            // Two memory caches share nothing; two Redis clients are two replicas.
            let cache = if i % 2 == 0 || name == "memory" {
                one.cache.clone()
            } else {
                two.cache.clone()
            };
            let key = key.clone();
            racers.push(tokio::spawn(async move {
                cache
                    .set_if_absent(&key, format!("{i}").as_bytes(), Duration::from_secs(30))
                    .await
                    .expect("set_if_absent")
            }));
        }
        let mut winners = 0;
        for r in racers {
            winners += usize::from(r.await.expect("join"));
        }
        assert_eq!(winners, 1, "{name}: one winner");
        // Expired entries count as absent.
        let short = format!("short-{}", uuid::Uuid::new_v4());
        assert!(one
            .cache
            .set_if_absent(&short, b"a", Duration::from_millis(50))
            .await
            .expect("set"));
        assert!(!one
            .cache
            .set_if_absent(&short, b"b", Duration::from_secs(5))
            .await
            .expect("set"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(one
            .cache
            .set_if_absent(&short, b"c", Duration::from_secs(5))
            .await
            .expect("set"));
        assert_eq!(
            one.cache.get(&short).await.expect("get").as_deref(),
            Some(&b"c"[..]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn cache_stores_expires_and_deletes() {
    for (name, state, _) in shared_states().await {
        let cache = &state.cache;
        cache
            .set("k", b"value", Duration::from_secs(30))
            .await
            .expect("set");
        assert_eq!(
            cache.get("k").await.expect("get").as_deref(),
            Some(&b"value"[..]),
            "{name}"
        );
        cache
            .set("short", b"v", Duration::from_millis(50))
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            cache.get("short").await.expect("get"),
            None,
            "{name}: expired entry"
        );
        cache.delete("k").await.expect("delete");
        assert_eq!(
            cache.get("k").await.expect("get"),
            None,
            "{name}: deleted entry"
        );
    }
}

/// A message published by one replica reaches subscribers of the channel: within one process for
/// memory, across separately connected replicas for Redis.
#[tokio::test]
async fn notifications_reach_other_replicas() {
    for (name, a, b) in shared_states().await {
        let b = if name == "memory" { a.clone() } else { b };
        let mut rx = b
            .notifier
            .subscribe("test.channel")
            .await
            .expect("subscribe");
        let mut other = b
            .notifier
            .subscribe("other.channel")
            .await
            .expect("subscribe");
        a.notifier
            .publish("test.channel", "hello")
            .await
            .expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("within a second")
            .expect("message");
        assert_eq!(got, "hello", "{name}");
        assert!(
            other.try_recv().is_err(),
            "{name}: other channels stay quiet"
        );
    }
}

#[test]
fn memory_cache_stays_within_its_capacity() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cache = maxai_kit::shared_state::MemoryCache::new(3);
        use maxai_kit::shared_state::Cache;
        for i in 0..10 {
            cache
                .set(&format!("k{i}"), b"v", Duration::from_secs(60 + i))
                .await
                .expect("set");
        }
        let kept = futures::future::join_all((0..10).map(|i| {
            let cache = &cache;
            async move { cache.get(&format!("k{i}")).await.expect("get").is_some() }
        }))
        .await;
        assert_eq!(kept.iter().filter(|k| **k).count(), 3);
        assert!(kept[9], "the newest entry is kept");
    });
}
