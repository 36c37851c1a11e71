//! Persistence of flags, prerequisites and allowlists. One trait; one SQL implementation that
//! runs on PostgreSQL and SQLite (the SQL is the same in both), checked by one conformance suite.
#[doc(hidden)]
pub mod conformance;
mod sql;

use async_trait::async_trait;
use maxai_kit::Result;

use crate::domain::{AllowlistKind, Flag, FlagKey, Stage};

pub use sql::SqlFlagStore;

/// One allowlist entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistEntry {
    pub environment: String,
    pub kind: AllowlistKind,
    pub subject: String,
}

#[async_trait]
pub trait FlagStore: Send + Sync + 'static {
    /// Inserts a new flag at revision 1. With a `request_id` already used, returns the flag
    /// that request created instead. `AlreadyExists` when the key is taken.
    async fn create(&self, flag: &Flag, request_id: Option<&str>) -> Result<Flag>;
    async fn get(&self, key: &FlagKey) -> Result<Option<Flag>>;
    /// Flags with key > `after`, by key.
    async fn list(
        &self,
        after: Option<&str>,
        limit: i64,
        stage: Option<Stage>,
    ) -> Result<Vec<Flag>>;
    /// Replaces the mutable fields and bumps the revision. `Conflict` when `expected_revision`
    /// is given and differs; `NotFound` when the flag is gone.
    async fn update(&self, flag: &Flag, expected_revision: Option<i64>) -> Result<Flag>;
    /// `PreconditionFailed` while another flag names it as prerequisite.
    async fn delete(&self, key: &FlagKey, expected_revision: Option<i64>) -> Result<()>;
    /// Adds subjects; returns how many were new and the flag's new revision.
    async fn add_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        subjects: &[String],
    ) -> Result<(u64, i64)>;
    /// Removes subjects; returns how many were present and the flag's new revision.
    async fn remove_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        subjects: &[String],
    ) -> Result<(u64, i64)>;
    async fn list_allowlist(
        &self,
        key: &FlagKey,
        env: &str,
        kind: AllowlistKind,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>>;
    /// Every allowlist entry of one flag.
    async fn allowlist_entries(&self, key: &FlagKey) -> Result<Vec<AllowlistEntry>>;
    /// Every prerequisite edge (flag, prerequisite), for cycle checks.
    async fn prerequisite_edges(&self) -> Result<Vec<(String, String)>>;
}
