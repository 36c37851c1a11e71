//! The policy engine: decisions over a principal's role assignments, cached with bounded memory.
//! Any change to roles or assignments bumps a generation here and on every replica (through the
//! kit's notifier), which empties the cache, so a revoked role stops granting at once.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use maxai_kit::{
    shared_state::Notifier, storage::now_micros, ttl_map::TtlMap, CancellationToken, Result,
};

use crate::{
    domain::{decide, Decision, TenantState, UserState},
    store::{AccessStore, AccountStore, TenancyStore, UserStore},
};

pub use maxai_kit::auth::POLICY_CHANNEL;
/// Cached decisions at most; past it the cache starts over (bounded, and cheap to refill).
const CACHE_CAPACITY: usize = 100_000;

/// Decisions are kept this long at most; a change announces itself sooner.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The principals' standing: a deleted tenant, a suspended user or a disabled or deleted
/// service account holds nothing, whatever its assignments say.
pub struct Principals {
    pub tenancy: Arc<dyn TenancyStore>,
    pub users: Arc<dyn UserStore>,
    pub accounts: Arc<dyn AccountStore>,
}

impl Principals {
    /// Why `subject` may hold nothing now, if so.
    async fn barred(&self, subject: &str) -> Result<Option<String>> {
        let parts: Vec<&str> = subject.split('/').collect();
        let ["tenants", t, kind, id] = parts.as_slice() else {
            return Ok(Some(format!("{subject} is not a principal")));
        };
        match self.tenancy.get_tenant(t).await? {
            Some(tenant) if tenant.state == TenantState::Active => {}
            _ => return Ok(Some(format!("tenant {t} is not active"))),
        }
        let standing = match *kind {
            "users" => match self.users.get_user(t, id).await? {
                Some(u) if u.state != UserState::Suspended => None,
                Some(_) => Some(format!("{subject} is suspended")),
                None => Some(format!("{subject} does not exist")),
            },
            "serviceAccounts" => match self.accounts.get_account(t, id).await? {
                Some(a) if !a.disabled => None,
                Some(_) => Some(format!("{subject} is disabled")),
                None => Some(format!("{subject} does not exist")),
            },
            _ => Some(format!("{subject} is not a principal")),
        };
        Ok(standing)
    }
}

pub struct PolicyEngine {
    store: Arc<dyn AccessStore>,
    principals: Principals,
    notifier: Arc<dyn Notifier>,
    cache: TtlMap<Decision>,
}

impl PolicyEngine {
    /// Starts following change announcements until `shutdown`.
    pub async fn start(
        store: Arc<dyn AccessStore>,
        principals: Principals,
        notifier: Arc<dyn Notifier>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let engine = Arc::new(PolicyEngine {
            store,
            principals,
            notifier: notifier.clone(),
            cache: TtlMap::new(CACHE_CAPACITY),
        });
        let mut rx = notifier
            .subscribe(POLICY_CHANNEL)
            .await
            .map_err(maxai_kit::Error::internal)?;
        let follower = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = rx.recv() => {
                        let Some(engine) = follower.upgrade() else { break };
                        // A lagged receiver missed changes: clearing is the safe answer to both.
                        if matches!(msg, Err(tokio::sync::broadcast::error::RecvError::Closed)) { break }
                        engine.clear();
                    }
                }
            }
        });
        Ok(engine)
    }

    fn clear(&self) {
        self.cache.clear();
    }

    /// The notifier replicas share (revocations ride on it too).
    pub fn notifier(&self) -> &dyn Notifier {
        self.notifier.as_ref()
    }

    /// Forgets every decision here and on every other replica.
    pub async fn changed(&self) {
        self.clear();
        if let Err(e) = self.notifier.publish(POLICY_CHANNEL, "*").await {
            tracing::warn!(error = %e, "could not announce a policy change; other replicas keep decisions until they hear of one");
        }
    }

    pub async fn check(&self, subject: &str, permission: &str, resource: &str) -> Result<Decision> {
        // NUL cannot occur in a name or a permission: the key is unambiguous.
        let key = format!("{subject}\0{permission}\0{resource}");
        if let Some(d) = self.cache.get(&key) {
            return Ok(d);
        }
        if let Some(reason) = self.principals.barred(subject).await? {
            // Cached like any decision: the change that lifts the bar announces itself.
            let d = Decision {
                allowed: false,
                reason,
                assignment: None,
                role: None,
            };
            self.cache.insert(key, d.clone(), CACHE_TTL);
            return Ok(d);
        }
        let now = now_micros();
        let assignments: Vec<_> = self
            .store
            .assignments_of(subject)
            .await?
            .into_iter()
            .filter(|a| a.active_at(now))
            .collect();
        let mut custom: HashMap<String, BTreeSet<String>> = HashMap::new();
        for a in &assignments {
            let parts: Vec<&str> = a.role.split('/').collect();
            if let ["tenants", t, "roles", r] = parts.as_slice() {
                if let Some(role) = self.store.get_role(t, r).await? {
                    custom.insert(a.role.clone(), role.permissions);
                }
            }
        }
        let decision = decide(&assignments, permission, resource, now, &|name| {
            custom.get(name).cloned()
        });
        // Expiring assignments change decisions without a write: a decision is kept no longer
        // than the first expiry that could flip it.
        let ttl = assignments
            .iter()
            .filter_map(|a| a.expire_at_us)
            .map(|e| std::time::Duration::from_micros((e - now).max(0) as u64))
            .fold(CACHE_TTL, std::cmp::min);
        self.cache.insert(key, decision.clone(), ttl);
        Ok(decision)
    }
}

#[async_trait::async_trait]
impl maxai_kit::auth::Authorizer for PolicyEngine {
    async fn authorize(
        &self,
        caller: &maxai_kit::auth::Principal,
        _credential: &str,
        permission: &str,
        resource: &str,
    ) -> Result<maxai_kit::auth::Verdict> {
        let d = self.check(&caller.subject, permission, resource).await?;
        Ok(maxai_kit::auth::Verdict {
            allowed: d.allowed,
            reason: d.reason,
        })
    }
}
