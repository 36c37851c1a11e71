//! Webhook endpoints: the provider accounts of a client, how an inbound webhook resolves to
//! one, and the versions of its verification secret.
//!
//! Secrets are stored as ciphertext the caller produced (AES-256-GCM under the master key); the
//! store never sees them in the clear. Rotation keeps the previous version verifying until its
//! expiry, so at most two versions are active; expired versions keep only their metadata.
use serde::{Deserialize, Serialize};

use super::event::Provider;

/// The provider account an endpoint receives webhooks for (one per provider, by variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Account {
    /// A GoHighLevel sub-account (`location_id`) or, without one, an agency (`company_id`).
    Ghl {
        location_id: String,
        company_id: String,
    },
    /// A Twilio account; an empty `to_number` matches every number of it.
    Twilio {
        account_sid: String,
        to_number: String,
    },
    Retell {
        agent_id: String,
    },
    Stripe {
        account_id: String,
    },
    /// PayPal webhooks do not name their webhook: they resolve by the endpoint named in the
    /// ingest URL's query string, and `webhook_id` keeps two endpoints from sharing one.
    Paypal {
        account_id: String,
        webhook_id: String,
    },
}

impl Account {
    pub fn provider(&self) -> Provider {
        match self {
            Account::Ghl { .. } => Provider::Ghl,
            Account::Twilio { .. } => Provider::Twilio,
            Account::Retell { .. } => Provider::Retell,
            Account::Stripe { .. } => Provider::Stripe,
            Account::Paypal { .. } => Provider::Paypal,
        }
    }

    /// The key the account is stored and resolved by; unique per provider across the platform.
    pub fn key(&self) -> String {
        match self {
            Account::Ghl {
                location_id,
                company_id,
            } => {
                if location_id.is_empty() {
                    format!("company/{company_id}")
                } else {
                    format!("location/{location_id}")
                }
            }
            Account::Twilio {
                account_sid,
                to_number,
            } => {
                let to = if to_number.is_empty() { "*" } else { to_number };
                format!("{account_sid}/{to}")
            }
            Account::Retell { agent_id } => agent_id.clone(),
            Account::Stripe { account_id } => account_id.clone(),
            Account::Paypal { webhook_id, .. } => webhook_id.clone(),
        }
    }

    /// GHL webhook keys, best first: the location, else the agency (agency-level events).
    pub fn ghl_lookup(location_id: &str, company_id: &str) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if !location_id.is_empty() {
            keys.push(format!("location/{location_id}"));
        }
        if !company_id.is_empty() {
            keys.push(format!("company/{company_id}"));
        }
        keys
    }

    /// Twilio webhook keys, best first: the account's endpoint for the `To` number, else the
    /// account's catch-all endpoint.
    pub fn twilio_lookup(account_sid: &str, to_number: &str) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if !to_number.is_empty() {
            keys.push(format!("{account_sid}/{to_number}"));
        }
        keys.push(format!("{account_sid}/*"));
        keys
    }

    pub fn retell_lookup(agent_id: &str) -> Vec<String> {
        vec![agent_id.to_owned()]
    }

    pub fn stripe_lookup(account_id: &str) -> Vec<String> {
        vec![account_id.to_owned()]
    }
}

/// Names an endpoint: `tenants/{tenant}/clients/{client}/webhookEndpoints/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub tenant_id: String,
    pub client_id: String,
    pub id: String,
}

/// An endpoint to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub key: EndpointKey,
    pub display_name: String,
    pub account: Account,
    pub disabled: bool,
}

/// The mutable fields of an endpoint, replaced as a whole (the provider cannot change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUpdate {
    pub key: EndpointKey,
    pub display_name: String,
    pub account: Account,
    pub disabled: bool,
}

/// A secret to store: ciphertext made by the caller, and a fingerprint to tell versions apart
/// (first 8 hex digits of the SHA-256 of the plain secret).
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecret {
    pub ciphertext: String,
    pub fingerprint: String,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Whether a secret version still verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretState {
    Active,
    Expired,
}

/// Metadata of one secret version (the secret itself is never returned from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    /// 1, 2, ... in rotation order.
    pub version: i64,
    pub fingerprint: String,
    pub created_at_us: i64,
    /// When it stops verifying; `None` for the newest version.
    pub expire_at_us: Option<i64>,
    /// The ciphertext has been erased.
    pub destroyed: bool,
}

impl SecretVersion {
    pub fn state(&self, now_us: i64) -> SecretState {
        match self.expire_at_us {
            _ if self.destroyed => SecretState::Expired,
            Some(at) if at <= now_us => SecretState::Expired,
            _ => SecretState::Active,
        }
    }
}

/// A stored endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub key: EndpointKey,
    pub display_name: String,
    pub account: Account,
    pub disabled: bool,
    /// 1 on create, +1 with every change (updates and rotations): the etag.
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    /// Newest first.
    pub secret_versions: Vec<SecretVersion>,
}

impl Endpoint {
    pub fn provider(&self) -> Provider {
        self.account.provider()
    }
    /// Key of this endpoint in a page ordered by (client, id) (pass it back as `after`).
    pub fn page_key(&self) -> String {
        format!("{}/{}", self.key.client_id, self.key.id)
    }
}

/// A secret that verifies now, for the signature check.
#[derive(Clone, PartialEq, Eq)]
pub struct ActiveSecret {
    pub version: i64,
    pub ciphertext: String,
    pub expire_at_us: Option<i64>,
}

impl std::fmt::Debug for ActiveSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveSecret")
            .field("version", &self.version)
            .field("expire_at_us", &self.expire_at_us)
            .finish_non_exhaustive()
    }
}

/// An endpoint with the secrets that verify now, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub endpoint: Endpoint,
    pub secrets: Vec<ActiveSecret>,
}

/// Filters of ListWebhookEndpoints; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFilter {
    /// `None` lists every client of the tenant (`clients/-`).
    pub client_id: Option<String>,
    pub provider: Option<Provider>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_keys_accounts_are_stored_by() {
        let twilio = Account::Twilio {
            account_sid: "AC1".into(),
            to_number: "+15550100".into(),
        };
        let catch_all = Account::Twilio {
            account_sid: "AC1".into(),
            to_number: String::new(),
        };
        let keys = Account::twilio_lookup("AC1", "+15550100");
        assert_eq!(keys, [twilio.key(), catch_all.key()]);
        let location = Account::Ghl {
            location_id: "loc".into(),
            company_id: "co".into(),
        };
        let agency = Account::Ghl {
            location_id: String::new(),
            company_id: "co".into(),
        };
        assert_eq!(
            Account::ghl_lookup("loc", "co"),
            [location.key(), agency.key()]
        );
        assert_eq!(Account::ghl_lookup("", "co"), [agency.key()]);
        assert_eq!(
            Account::retell_lookup("ag"),
            [Account::Retell {
                agent_id: "ag".into()
            }
            .key()]
        );
    }

    #[test]
    fn secret_versions_expire() {
        let mut v = SecretVersion {
            version: 1,
            fingerprint: "abcd0123".into(),
            created_at_us: 0,
            expire_at_us: Some(10),
            destroyed: false,
        };
        assert_eq!(v.state(9), SecretState::Active);
        assert_eq!(v.state(10), SecretState::Expired);
        v.expire_at_us = None;
        assert_eq!(v.state(i64::MAX), SecretState::Active);
        v.destroyed = true;
        assert_eq!(v.state(0), SecretState::Expired);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = NewSecret {
            ciphertext: "sealed-bytes".into(),
            fingerprint: "abcd0123".into(),
        };
        assert!(!format!("{s:?}").contains("sealed"));
    }
}
