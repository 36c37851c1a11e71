//! The credential a provider call is made with. In production IAM holds every connection's
//! secrets sealed and hands out the current one over `ConnectionCredentialService` (refreshing
//! OAuth tokens as needed); the adapter keeps it only until shortly before it expires, and for
//! API keys a minute, so a revoked connection stops working everywhere within that minute.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use maxai_kit::ttl_map::TtlMap;
use maxai_proto::maxai::iam::v1::{
    connection_credential_service_client::ConnectionCredentialServiceClient, ConnectionCredential,
    ConnectionProvider, GetConnectionCredentialRequest,
};
use tonic::Status;

/// Credentials kept per process.
const CACHE_CAPACITY: usize = 10_000;
/// An OAuth token is not used when it expires sooner than this.
const MIN_REMAINING: Duration = Duration::from_secs(60);
/// How long an API-key credential is reused before IAM is asked again.
const API_KEY_TTL: Duration = Duration::from_secs(60);

/// Where an adapter gets a connection's current credential.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// `force_refresh` after the provider refused the credential (401).
    async fn credential(
        &self,
        connection: &str,
        force_refresh: bool,
    ) -> Result<ConnectionCredential, Status>;
}

/// Refuses a credential of another provider: a Twilio connection named in a CRM call is a
/// mistake of the caller, caught before anything is sent.
pub fn require_provider(
    credential: &ConnectionCredential,
    expected: &[ConnectionProvider],
) -> Result<(), Status> {
    let actual = credential.provider();
    if expected.contains(&actual) {
        return Ok(());
    }
    Err(maxai_kit::Error::new(
        maxai_kit::ErrorKind::PreconditionFailed,
        format!(
            "connection {} is a {} connection, which this port cannot use",
            credential.connection,
            actual.as_str_name()
        ),
    )
    .into())
}

/// The bearer token of the platform's own service identity.
pub type ServiceToken = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Credentials from IAM's ConnectionCredentialService, called with the platform's service
/// identity.
pub struct IamCredentials {
    client: ConnectionCredentialServiceClient<tonic::transport::Channel>,
    token: ServiceToken,
    cache: TtlMap<ConnectionCredential>,
}

impl IamCredentials {
    pub fn new(channel: tonic::transport::Channel, token: ServiceToken) -> Self {
        IamCredentials {
            client: ConnectionCredentialServiceClient::new(channel),
            token,
            cache: TtlMap::new(CACHE_CAPACITY),
        }
    }

    /// Forgets a connection's cached credential (after it was revoked here).
    pub fn forget(&self, connection: &str) {
        self.cache.retain(|c| c.connection != connection);
    }
}

#[async_trait]
impl CredentialSource for IamCredentials {
    async fn credential(
        &self,
        connection: &str,
        force_refresh: bool,
    ) -> Result<ConnectionCredential, Status> {
        if !force_refresh {
            if let Some(hit) = self.cache.get(connection) {
                return Ok(hit);
            }
        }
        let mut request = tonic::Request::new(GetConnectionCredentialRequest {
            name: connection.to_owned(),
            min_remaining: Some(prost_types::Duration {
                seconds: MIN_REMAINING.as_secs() as i64 * 2,
                nanos: 0,
            }),
            force_refresh,
        });
        if let Some(token) = (self.token)() {
            maxai_kit::auth::with_bearer(&mut request, &token);
        }
        let credential = self
            .client
            .clone()
            .get_connection_credential(request)
            .await?
            .into_inner()
            .credential
            .ok_or_else(|| Status::internal("IAM answered without a credential"))?;
        let ttl = match credential
            .access_token_expire_time
            .as_ref()
            .and_then(|t| SystemTime::try_from(*t).ok())
        {
            Some(expires) => expires
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(MIN_REMAINING),
            None => API_KEY_TTL,
        };
        if !ttl.is_zero() {
            self.cache
                .insert(connection.to_owned(), credential.clone(), ttl);
        }
        Ok(credential)
    }
}

/// Fixed credentials for tests and tools: what a forced refresh returns can be set up front.
#[derive(Default)]
pub struct StaticCredentials {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Default)]
struct Entry {
    current: Option<ConnectionCredential>,
    refreshed: Option<ConnectionCredential>,
    refreshes: usize,
}

impl StaticCredentials {
    pub fn new() -> Arc<Self> {
        Arc::new(StaticCredentials::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the credential of `credential.connection`.
    pub fn insert(&self, credential: ConnectionCredential) {
        let key = credential.connection.clone();
        self.lock().entry(key).or_default().current = Some(credential);
    }

    /// What the next forced refresh of `credential.connection` switches to.
    pub fn insert_refreshed(&self, credential: ConnectionCredential) {
        let key = credential.connection.clone();
        self.lock().entry(key).or_default().refreshed = Some(credential);
    }

    /// Forced refreshes asked for `connection` so far.
    pub fn refreshes(&self, connection: &str) -> usize {
        self.lock().get(connection).map_or(0, |e| e.refreshes)
    }
}

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn credential(
        &self,
        connection: &str,
        force_refresh: bool,
    ) -> Result<ConnectionCredential, Status> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(connection)
            .ok_or_else(|| Status::not_found(format!("connection {connection} not found")))?;
        if force_refresh {
            entry.refreshes += 1;
            if let Some(next) = entry.refreshed.take() {
                entry.current = Some(next);
            }
        }
        entry
            .current
            .clone()
            .ok_or_else(|| Status::not_found(format!("connection {connection} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(connection: &str, token: &str) -> ConnectionCredential {
        ConnectionCredential {
            connection: connection.to_owned(),
            provider: ConnectionProvider::Ghl as i32,
            access_token: token.to_owned(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn static_credentials_switch_on_forced_refresh() {
        let creds = StaticCredentials::new();
        let name = "tenants/a/clients/c/connections/ghl";
        creds.insert(cred(name, "old"));
        creds.insert_refreshed(cred(name, "new"));
        assert_eq!(
            creds.credential(name, false).await.unwrap().access_token,
            "old"
        );
        assert_eq!(
            creds.credential(name, true).await.unwrap().access_token,
            "new"
        );
        assert_eq!(creds.refreshes(name), 1);
        assert_eq!(
            creds
                .credential("tenants/a/clients/c/connections/x", false)
                .await
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn another_providers_connection_is_refused() {
        let c = cred("tenants/a/clients/c/connections/ghl", "t");
        assert!(require_provider(&c, &[ConnectionProvider::Ghl]).is_ok());
        let err = require_provider(&c, &[ConnectionProvider::Twilio]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }
}
