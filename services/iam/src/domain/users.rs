/// The state of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    /// Invited; has not signed in yet.
    Invited,
    Active,
    /// Cannot sign in; tokens are refused.
    Suspended,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Invited => "invited",
            UserState::Active => "active",
            UserState::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "invited" => Some(UserState::Invited),
            "active" => Some(UserState::Active),
            "suspended" => Some(UserState::Suspended),
            _ => None,
        }
    }
}

/// A person of a tenant: `tenants/{tenant_id}/users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub tenant_id: String,
    pub id: String,
    /// Lower-cased.
    pub email: String,
    pub display_name: String,
    pub state: UserState,
    pub google_subject: String,
    pub hosted_domain: String,
    pub picture_uri: String,
    pub last_sign_in_at_us: Option<i64>,
    pub revision: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

impl User {
    pub fn name(&self) -> String {
        format!("tenants/{}/users/{}", self.tenant_id, self.id)
    }
}
