//! The behaviour every [`TenancyStore`] must have; the tests stamp it onto SQLite and PostgreSQL.
use std::collections::BTreeMap;

use maxai_kit::ErrorKind;

use super::TenancyStore;
use crate::domain::{
    Client, ClientState, RateLimits, Tenant, TenantState, DEFAULT_AUDIT_RETENTION_SECS,
};

pub fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.to_owned(),
        display_name: format!("{id} agency"),
        state: TenantState::Active,
        contact_email: format!("ops@{id}.example"),
        rate_limits: RateLimits {
            requests_per_minute: 600,
            burst: 100,
            ..RateLimits::default()
        },
        audit_retention_secs: DEFAULT_AUDIT_RETENTION_SECS,
        labels: BTreeMap::from([("tier".to_owned(), "gold".to_owned())]),
        revision: 0,
        created_at_us: 0,
        updated_at_us: 0,
        deleted_at_us: None,
    }
}

pub fn client(tenant_id: &str, id: &str) -> Client {
    Client {
        tenant_id: tenant_id.to_owned(),
        id: id.to_owned(),
        display_name: format!("{id} dental"),
        state: ClientState::Active,
        time_zone: "America/Chicago".into(),
        website: format!("https://{id}.example"),
        contact_email: format!("front@{id}.example"),
        labels: BTreeMap::new(),
        revision: 0,
        created_at_us: 0,
        updated_at_us: 0,
    }
}

fn kind_of<T: std::fmt::Debug>(r: maxai_kit::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind
}

pub async fn run(store: &dyn TenancyStore) {
    tenants(store).await;
    clients(store).await;
}

/// Everything, on one store implementing both traits.
pub async fn run_all<S: TenancyStore + super::AccessStore>(store: &S) {
    run(store).await;
    access(store).await;
}

async fn tenants(store: &dyn TenancyStore) {
    let a = store
        .create_tenant(&tenant("acme"), Some("rq-1"))
        .await
        .expect("create");
    assert_eq!((a.revision, a.state), (1, TenantState::Active));
    assert_eq!(a.rate_limits.requests_per_minute, 600);
    assert_eq!(a.labels["tier"], "gold");
    assert_eq!(
        store
            .create_tenant(&tenant("acme"), Some("rq-1"))
            .await
            .expect("retry"),
        a
    );
    assert_eq!(
        kind_of(store.create_tenant(&tenant("acme"), None).await),
        ErrorKind::AlreadyExists
    );
    store
        .create_tenant(&tenant("beta"), None)
        .await
        .expect("create");
    store
        .create_tenant(&tenant("gamma"), None)
        .await
        .expect("create");

    let mut changed = a.clone();
    changed.display_name = "Acme Agency".into();
    changed.rate_limits.burst = 5;
    let updated = store
        .update_tenant(&changed, a.revision)
        .await
        .expect("update");
    assert_eq!(
        (
            updated.revision,
            updated.display_name.as_str(),
            updated.rate_limits.burst
        ),
        (2, "Acme Agency", 5)
    );
    assert_eq!(
        kind_of(store.update_tenant(&changed, a.revision).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind_of(store.update_tenant(&tenant("nobody"), 1).await),
        ErrorKind::NotFound
    );

    // Soft delete: kept, listed only when asked for.
    let mut gone = store
        .get_tenant("gamma")
        .await
        .expect("get")
        .expect("exists");
    let rev = gone.revision;
    gone.state = TenantState::Deleted;
    gone.deleted_at_us = Some(42);
    store.update_tenant(&gone, rev).await.expect("delete");
    let listed: Vec<String> = store
        .list_tenants(None, 10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ["acme", "beta"]);
    let deleted: Vec<String> = store
        .list_tenants(None, 10, Some(TenantState::Deleted))
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(deleted, ["gamma"]);
    let page: Vec<String> = store
        .list_tenants(Some("acme"), 1, None)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(page, ["beta"]);
}

async fn clients(store: &dyn TenancyStore) {
    let c = store
        .create_client(&client("acme", "smile"), Some("rq-c"))
        .await
        .expect("create");
    assert_eq!((c.revision, c.time_zone.as_str()), (1, "America/Chicago"));
    assert_eq!(
        store
            .create_client(&client("acme", "smile"), Some("rq-c"))
            .await
            .expect("retry"),
        c
    );
    assert_eq!(
        kind_of(store.create_client(&client("acme", "smile"), None).await),
        ErrorKind::AlreadyExists
    );
    // The same client id in another tenant is another client.
    store
        .create_client(&client("beta", "smile"), None)
        .await
        .expect("other tenant");
    assert_eq!(
        kind_of(store.create_client(&client("nobody", "x"), None).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(store.create_client(&client("gamma", "x"), None).await),
        ErrorKind::PreconditionFailed
    );

    store
        .create_client(&client("acme", "bright"), None)
        .await
        .expect("create");
    let mut paused = client("acme", "zen");
    paused.state = ClientState::Paused;
    store.create_client(&paused, None).await.expect("create");
    let ids = |cs: Vec<Client>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_clients("acme", None, 10, None)
            .await
            .expect("list")),
        ["bright", "smile", "zen"]
    );
    assert_eq!(
        ids(store
            .list_clients("acme", Some("bright"), 1, None)
            .await
            .expect("list")),
        ["smile"]
    );
    assert_eq!(
        ids(store
            .list_clients("acme", None, 10, Some(ClientState::Paused))
            .await
            .expect("list")),
        ["zen"]
    );
    assert_eq!(
        ids(store
            .list_clients("beta", None, 10, None)
            .await
            .expect("list")),
        ["smile"]
    );

    let mut changed = c.clone();
    changed.website = "https://smile.dental".into();
    let updated = store
        .update_client(&changed, c.revision)
        .await
        .expect("update");
    assert_eq!(
        (updated.revision, updated.website.as_str()),
        (2, "https://smile.dental")
    );
    assert_eq!(
        kind_of(store.update_client(&changed, c.revision).await),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind_of(store.delete_client("acme", "smile", Some(1)).await),
        ErrorKind::Conflict
    );
    store
        .delete_client("acme", "smile", Some(2))
        .await
        .expect("delete");
    assert_eq!(store.get_client("acme", "smile").await.expect("get"), None);
    assert!(
        store
            .get_client("beta", "smile")
            .await
            .expect("get")
            .is_some(),
        "the other tenant's client stays"
    );
    assert_eq!(
        kind_of(store.delete_client("acme", "smile", None).await),
        ErrorKind::NotFound
    );
}

/// Custom roles and assignments; needs the tenants `acme` and `beta` (see [`run_all`]).
pub async fn access(store: &dyn super::AccessStore) {
    use std::collections::BTreeSet;

    use super::AssignmentFilter;
    use crate::domain::{Assignment, CustomRole};

    let role = CustomRole {
        tenant_id: "acme".into(),
        id: "publisher".into(),
        title: "Publisher".into(),
        description: String::new(),
        permissions: BTreeSet::from(["prompt.instances.publish".to_owned()]),
        revision: 0,
        created_at_us: 0,
        updated_at_us: 0,
    };
    let created = store
        .create_role(&role, Some("rq-r"))
        .await
        .expect("create role");
    assert_eq!(created.revision, 1);
    assert_eq!(
        store.create_role(&role, Some("rq-r")).await.expect("retry"),
        created
    );
    assert_eq!(
        kind_of(store.create_role(&role, None).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        store
            .list_roles("beta", None, 10)
            .await
            .expect("list")
            .len(),
        0,
        "roles belong to their tenant"
    );

    let assign =
        |id: &str, principal: &str, role: &str, scope: &str, expire: Option<i64>| Assignment {
            tenant_id: "acme".into(),
            id: id.into(),
            principal: principal.into(),
            role: role.into(),
            scope: scope.into(),
            description: String::new(),
            expire_at_us: expire,
            creator: String::new(),
            revision: 0,
            created_at_us: 0,
            updated_at_us: 0,
        };
    store
        .create_assignment(
            &assign(
                "a1",
                "tenants/acme/users/u1",
                "tenants/acme/roles/publisher",
                "tenants/acme",
                None,
            ),
            Some("rq-a"),
        )
        .await
        .expect("assign");
    let again = store
        .create_assignment(
            &assign("a9", "tenants/acme/users/u1", "x", "tenants/acme", None),
            Some("rq-a"),
        )
        .await
        .expect("retry");
    assert_eq!(
        again.id, "a1",
        "the same request id answers with the first assignment"
    );
    store
        .create_assignment(
            &assign(
                "a2",
                "tenants/acme/users/u2",
                "roles/client-viewer",
                "tenants/acme/clients/bright",
                None,
            ),
            None,
        )
        .await
        .expect("assign");
    store
        .create_assignment(
            &assign(
                "a3",
                "tenants/acme/users/u1",
                "roles/tenant-member",
                "tenants/acme",
                Some(1),
            ),
            None,
        )
        .await
        .expect("assign");
    assert_eq!(
        store
            .assignments_of("tenants/acme/users/u1")
            .await
            .expect("of")
            .len(),
        2
    );
    let active = AssignmentFilter {
        active_at_us: Some(10),
        ..Default::default()
    };
    let ids = |xs: Vec<Assignment>| xs.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_assignments("acme", &active, None, 10)
            .await
            .expect("list")),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(store
            .list_assignments("acme", &AssignmentFilter::default(), Some("a1"), 1)
            .await
            .expect("list")),
        ["a2"]
    );
    let by_principal = AssignmentFilter {
        principal: Some("tenants/acme/users/u2".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .list_assignments("acme", &by_principal, None, 10)
            .await
            .expect("list")),
        ["a2"]
    );
    let platform_scope = AssignmentFilter {
        scope: Some(String::new()),
        ..Default::default()
    };
    assert!(store
        .list_assignments("acme", &platform_scope, None, 10)
        .await
        .expect("list")
        .is_empty());

    assert_eq!(
        kind_of(store.delete_role("acme", "publisher", None).await),
        ErrorKind::PreconditionFailed,
        "assigned roles stay"
    );
    let a1 = store
        .get_assignment("acme", "a1")
        .await
        .expect("get")
        .expect("exists");
    let mut changed = a1.clone();
    changed.description = "for launches".into();
    let updated = store
        .update_assignment(&changed, a1.revision)
        .await
        .expect("update");
    assert_eq!(
        (updated.revision, updated.description.as_str()),
        (2, "for launches")
    );
    assert_eq!(
        kind_of(store.update_assignment(&changed, a1.revision).await),
        ErrorKind::Conflict
    );
    store
        .delete_assignment("acme", "a1", Some(2))
        .await
        .expect("delete");
    assert_eq!(
        kind_of(store.delete_assignment("acme", "a1", None).await),
        ErrorKind::NotFound
    );
    store
        .delete_role("acme", "publisher", Some(created.revision))
        .await
        .expect("unassigned roles go");
}
