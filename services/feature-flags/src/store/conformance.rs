//! The behaviour every [`FlagStore`] must have. The tests stamp it onto SQLite and PostgreSQL.
use maxai_kit::ErrorKind;

use super::FlagStore;
use crate::domain::{AllowlistKind, EnvName, EnvironmentState, Flag, FlagKey, RolloutUnit, Stage};

pub fn sample(key: &str, prerequisites: &[&str]) -> Flag {
    Flag {
        key: FlagKey::parse(key).expect("valid key"),
        description: format!("{key} flag"),
        stage: Stage::Beta,
        environments: vec![EnvironmentState {
            environment: EnvName::parse("production").expect("valid env"),
            enabled: true,
            rollout_basis_points: 2_500,
            rollout_unit: RolloutUnit::Tenant,
        }],
        prerequisites: prerequisites
            .iter()
            .map(|p| FlagKey::parse(p).expect("valid key"))
            .collect(),
        revision: 0,
        created_at_us: 0,
        updated_at_us: 0,
    }
}

fn kind_of<T: std::fmt::Debug>(r: maxai_kit::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind
}

/// Runs every check against an empty store.
pub async fn run(store: &dyn FlagStore) {
    create_get_and_idempotency(store).await;
    list_pages_in_key_order(store).await;
    update_checks_revision(store).await;
    prerequisites_must_exist_and_block_delete(store).await;
    allowlists_are_sets(store).await;
}

async fn create_get_and_idempotency(store: &dyn FlagStore) {
    let created = store
        .create(&sample("alpha", &[]), Some("req-1"))
        .await
        .expect("create");
    assert_eq!(created.revision, 1);
    assert!(created.created_at_us > 0);
    assert_eq!(created.environments, sample("alpha", &[]).environments);
    let again = store
        .create(&sample("alpha", &[]), Some("req-1"))
        .await
        .expect("same request id answers again");
    assert_eq!(again, created);
    assert_eq!(
        kind_of(store.create(&sample("alpha", &[]), Some("req-2")).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind_of(store.create(&sample("alpha", &[]), None).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        store
            .get(&FlagKey::parse("alpha").expect("key"))
            .await
            .expect("get"),
        Some(created)
    );
    assert_eq!(
        store
            .get(&FlagKey::parse("nope").expect("key"))
            .await
            .expect("get"),
        None
    );
}

async fn list_pages_in_key_order(store: &dyn FlagStore) {
    for key in ["list-c", "list-a", "list-b"] {
        store.create(&sample(key, &[]), None).await.expect("create");
    }
    let mut ga = sample("list-ga", &[]);
    ga.stage = Stage::Ga;
    store.create(&ga, None).await.expect("create");
    let page = store.list(Some("list"), 2, None).await.expect("list");
    let keys: Vec<_> = page.iter().map(|f| f.key.to_string()).collect();
    assert_eq!(keys, ["list-a", "list-b"]);
    let page = store.list(Some("list-b"), 10, None).await.expect("list");
    let keys: Vec<_> = page.iter().map(|f| f.key.to_string()).collect();
    assert_eq!(keys, ["list-c", "list-ga"]);
    let ga_only = store.list(None, 100, Some(Stage::Ga)).await.expect("list");
    assert_eq!(
        ga_only
            .iter()
            .map(|f| f.key.to_string())
            .collect::<Vec<_>>(),
        ["list-ga"]
    );
}

async fn update_checks_revision(store: &dyn FlagStore) {
    let created = store
        .create(&sample("upd", &[]), None)
        .await
        .expect("create");
    let mut changed = created.clone();
    changed.description = "new words".into();
    changed.stage = Stage::Ga;
    let updated = store
        .update(&changed, Some(created.revision))
        .await
        .expect("update");
    assert_eq!(updated.revision, created.revision + 1);
    assert_eq!(updated.description, "new words");
    assert_eq!(updated.stage, Stage::Ga);
    // A writer holding the old revision loses, and nothing changes.
    let mut stale = created.clone();
    stale.description = "stale".into();
    assert_eq!(
        kind_of(store.update(&stale, Some(created.revision)).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .get(&created.key)
            .await
            .expect("get")
            .expect("exists")
            .description,
        "new words"
    );
    let mut ghost = sample("ghost", &[]);
    ghost.revision = 1;
    assert_eq!(
        kind_of(store.update(&ghost, None).await),
        ErrorKind::NotFound
    );
}

async fn prerequisites_must_exist_and_block_delete(store: &dyn FlagStore) {
    assert_eq!(
        kind_of(store.create(&sample("child", &["missing"]), None).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        store
            .get(&FlagKey::parse("child").expect("key"))
            .await
            .expect("get"),
        None,
        "failed create leaves nothing"
    );
    store
        .create(&sample("parent", &[]), None)
        .await
        .expect("create");
    let child = store
        .create(&sample("child", &["parent"]), None)
        .await
        .expect("create");
    assert_eq!(
        child.prerequisites,
        vec![FlagKey::parse("parent").expect("key")]
    );
    assert!(store
        .prerequisite_edges()
        .await
        .expect("edges")
        .contains(&("child".into(), "parent".into())));
    let parent = FlagKey::parse("parent").expect("key");
    assert_eq!(
        kind_of(store.delete(&parent, None).await),
        ErrorKind::PreconditionFailed
    );
    assert_eq!(
        kind_of(store.delete(&child.key, Some(child.revision + 5)).await),
        ErrorKind::Conflict
    );
    store
        .delete(&child.key, Some(child.revision))
        .await
        .expect("delete child");
    store.delete(&parent, None).await.expect("delete parent");
    assert_eq!(
        kind_of(store.delete(&parent, None).await),
        ErrorKind::NotFound
    );
}

async fn allowlists_are_sets(store: &dyn FlagStore) {
    let flag = store
        .create(&sample("allow", &[]), None)
        .await
        .expect("create");
    let subjects: Vec<String> = (0..450).map(|i| format!("t{i:04}")).collect();
    let (added, rev) = store
        .add_allowlist(&flag.key, "production", AllowlistKind::Tenant, &subjects)
        .await
        .expect("add");
    assert_eq!(added, 450);
    assert_eq!(rev, flag.revision + 1);
    let (added, _) = store
        .add_allowlist(
            &flag.key,
            "production",
            AllowlistKind::Tenant,
            &["t0000".into(), "t9999".into()],
        )
        .await
        .expect("add");
    assert_eq!(added, 1, "an existing subject is not added twice");
    let page = store
        .list_allowlist(
            &flag.key,
            "production",
            AllowlistKind::Tenant,
            Some("t0447"),
            10,
        )
        .await
        .expect("list");
    assert_eq!(page, ["t0448", "t0449", "t9999"]);
    assert!(store
        .list_allowlist(&flag.key, "production", AllowlistKind::User, None, 10)
        .await
        .expect("list")
        .is_empty());
    let (removed, _) = store
        .remove_allowlist(
            &flag.key,
            "production",
            AllowlistKind::Tenant,
            &["t0000".into(), "absent".into()],
        )
        .await
        .expect("remove");
    assert_eq!(removed, 1);
    assert_eq!(
        store
            .allowlist_entries(&flag.key)
            .await
            .expect("entries")
            .len(),
        450
    );
    let ghost = FlagKey::parse("ghost-allow").expect("key");
    assert_eq!(
        kind_of(
            store
                .add_allowlist(&ghost, "production", AllowlistKind::User, &["u".into()])
                .await
        ),
        ErrorKind::NotFound
    );
    store.delete(&flag.key, None).await.expect("delete");
    assert!(
        store
            .allowlist_entries(&flag.key)
            .await
            .expect("entries")
            .is_empty(),
        "entries go with their flag"
    );
}
