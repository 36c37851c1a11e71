use std::fmt;

use serde::{Deserialize, Serialize};

/// 10,000 basis points = 100 %.
pub const MAX_BASIS_POINTS: u32 = 10_000;

/// A flag key: 1–63 chars of `a-z 0-9 - _ .`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlagKey(String);

impl FlagKey {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let ok_first = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
        if raw.is_empty() || raw.len() > 63 || !ok_first || !ok_rest {
            return Err("must be 1-63 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit");
        }
        Ok(FlagKey(raw.to_owned()))
    }
    /// Parses a resource name `flags/{key}`.
    pub fn from_name(name: &str) -> Result<Self, &'static str> {
        match name.strip_prefix("flags/") {
            Some(key) => FlagKey::parse(key),
            None => Err("must be a flag name of the form flags/{flag}"),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn name(&self) -> String {
        format!("flags/{}", self.0)
    }
}

impl fmt::Display for FlagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An environment name: 1–32 chars of `a-z 0-9 -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty()
            || raw.len() > 32
            || !raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err("must be 1-32 characters of a-z, 0-9 or '-'");
        }
        Ok(EnvName(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Alpha,
    Beta,
    Ga,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Alpha => "alpha",
            Stage::Beta => "beta",
            Stage::Ga => "ga",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alpha" => Some(Stage::Alpha),
            "beta" => Some(Stage::Beta),
            "ga" => Some(Stage::Ga),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutUnit {
    Tenant,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowlistKind {
    Tenant,
    User,
}

impl AllowlistKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowlistKind::Tenant => "tenant",
            AllowlistKind::User => "user",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(AllowlistKind::Tenant),
            "user" => Some(AllowlistKind::User),
            _ => None,
        }
    }
}

/// A flag's rules in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentState {
    pub environment: EnvName,
    pub enabled: bool,
    /// 0..=10_000.
    pub rollout_basis_points: u32,
    pub rollout_unit: RolloutUnit,
}

/// A boolean feature flag. Allowlists are stored as sets beside it, not in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub key: FlagKey,
    pub description: String,
    pub stage: Stage,
    pub environments: Vec<EnvironmentState>,
    pub prerequisites: Vec<FlagKey>,
    /// Bumped by every change, allowlists included; the etag is derived from it.
    pub revision: i64,
    /// Microseconds since the epoch, UTC.
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

impl Flag {
    pub fn etag(&self) -> String {
        etag(self.revision)
    }
    pub fn environment(&self, env: &str) -> Option<&EnvironmentState> {
        self.environments
            .iter()
            .find(|e| e.environment.as_str() == env)
    }
}

pub use maxai_kit::resource::{etag, revision_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(FlagKey::parse("voice.new-tts_v2").is_ok());
        for bad in ["", "Upper", "-lead", "has space", &"a".repeat(64)] {
            assert!(FlagKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(FlagKey::from_name("flags/x").unwrap().as_str(), "x");
        assert!(FlagKey::from_name("tenants/x").is_err());
    }
}
