//! Audit entries and their hash chain: each entry's hash is SHA-256 over the previous hash and
//! a canonical encoding of its fields, so changing, removing or reordering any kept entry is
//! detected by walking the chain.
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The previous hash of a tenant's first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(Outcome::Succeeded),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// What is being recorded, before it gets its place in the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub actor: String,
    pub action: String,
    pub permission: String,
    pub resource: String,
    pub client: String,
    pub outcome: String,
    pub status_code: String,
    pub reason: String,
    pub request_id: String,
    pub ip_address: String,
    pub user_agent: String,
    /// A JSON object, secrets removed.
    pub details: String,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub tenant_id: String,
    pub seq: i64,
    pub occur_at_us: i64,
    pub record: AuditRecord,
    pub previous_hash: String,
    pub hash: String,
}

/// The chain hash of an entry: SHA-256(previous hash ‖ canonical JSON of the entry's fields).
pub fn chain_hash(
    previous_hash: &str,
    tenant_id: &str,
    seq: i64,
    occur_at_us: i64,
    record: &AuditRecord,
) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        tenant_id: &'a str,
        seq: i64,
        occur_at_us: i64,
        record: &'a AuditRecord,
    }
    // Field order is fixed by the struct, so the encoding is canonical.
    let body = serde_json::to_vec(&Canonical {
        tenant_id,
        seq,
        occur_at_us,
        record,
    })
    .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(previous_hash.as_bytes());
    h.update(b"\n");
    h.update(&body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a walk over a chain first broke, if it did.
pub fn first_break(anchor: &str, entries: &[AuditEntry]) -> Option<(i64, String)> {
    let mut expected_prev = anchor.to_owned();
    let mut expected_seq: Option<i64> = None;
    for e in entries {
        if expected_seq.is_some_and(|s| s != e.seq) {
            return Some((
                e.seq,
                format!("entry {} is missing", expected_seq.unwrap_or_default()),
            ));
        }
        if e.previous_hash != expected_prev {
            return Some((
                e.seq,
                "previous_hash does not match the entry before it".into(),
            ));
        }
        if chain_hash(
            &e.previous_hash,
            &e.tenant_id,
            e.seq,
            e.occur_at_us,
            &e.record,
        ) != e.hash
        {
            return Some((e.seq, "the entry was changed after it was written".into()));
        }
        expected_prev = e.hash.clone();
        expected_seq = Some(e.seq + 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let record = AuditRecord {
                    actor: "system".into(),
                    action: format!("a{seq}"),
                    details: "{}".into(),
                    ..Default::default()
                };
                let hash = chain_hash(&prev, "t", seq, seq * 10, &record);
                let e = AuditEntry {
                    tenant_id: "t".into(),
                    seq,
                    occur_at_us: seq * 10,
                    record,
                    previous_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn intact_chains_verify_and_any_change_is_found() {
        let c = chain(5);
        assert_eq!(first_break(GENESIS_HASH, &c), None);
        let mut edited = c.clone();
        edited[2].record.actor = "mallory".into();
        assert_eq!(first_break(GENESIS_HASH, &edited).map(|b| b.0), Some(3));
        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(first_break(GENESIS_HASH, &removed).map(|b| b.0), Some(3));
        assert_eq!(
            first_break(&c[1].hash, &c[2..]),
            None,
            "a purged prefix verifies from its anchor"
        );
        assert!(first_break(GENESIS_HASH, &c[2..]).is_some());
    }
}
