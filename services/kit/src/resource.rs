//! Helpers every resource-oriented service shares: etags from revisions (AIP-154), timestamps
//! stored as UTC microseconds, field masks, and request ids (AIP-155).
use crate::error::{Error, Result};

/// The etag of a stored revision.
pub fn etag(revision: i64) -> String {
    format!("r{revision}")
}

/// The revision an etag names, if it is one of ours.
pub fn revision_of(etag: &str) -> Option<i64> {
    etag.trim_matches('"').strip_prefix('r')?.parse().ok()
}

/// `None` for an empty etag; an error naming `field` for one this service did not issue.
pub fn expected_revision(etag: &str, field: &str) -> Result<Option<i64>> {
    if etag.is_empty() {
        return Ok(None);
    }
    revision_of(etag)
        .map(Some)
        .ok_or_else(|| Error::invalid(field, "is not an etag this service issued"))
}

/// UTC microseconds → protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Protobuf timestamp → UTC microseconds (saturating).
pub fn micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1_000)
}

/// The update-mask paths of a request, checked against the ones a resource allows; an empty
/// mask means every allowed path.
pub fn mask_paths(mask: Option<&prost_types::FieldMask>, allowed: &[&str]) -> Result<Vec<String>> {
    let paths: Vec<String> = mask.map(|m| m.paths.clone()).unwrap_or_default();
    let mut v = crate::error::Violations::new();
    for (i, p) in paths.iter().enumerate() {
        v.check(
            allowed.contains(&p.as_str()),
            format!("update_mask.paths[{i}]"),
            format!("must be one of {}", allowed.join(", ")),
        );
    }
    v.into_result()?;
    Ok(if paths.is_empty() {
        allowed.iter().map(|s| s.to_string()).collect()
    } else {
        paths
    })
}

/// A request id (AIP-155): empty means none; at most 128 bytes.
pub fn request_id(raw: &str) -> Result<Option<&str>> {
    if raw.len() > 128 {
        return Err(Error::invalid("request_id", "must be at most 128 bytes"));
    }
    Ok((!raw.is_empty()).then_some(raw))
}

/// A resource id segment: 1..=max chars of `a-z 0-9 -`, starting with a letter, not ending
/// with '-' (AIP-122).
pub fn check_id(raw: &str, min: usize, max: usize) -> std::result::Result<(), String> {
    let ok = raw.len() >= min
        && raw.len() <= max
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && !raw.ends_with('-')
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("must be {min}-{max} characters of a-z, 0-9 or '-', starting with a letter and not ending with '-'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_timestamps_and_ids() {
        assert_eq!(revision_of(&etag(42)), Some(42));
        assert_eq!(revision_of("\"r7\""), Some(7));
        assert!(expected_revision("junk", "etag").is_err());
        assert_eq!(
            micros(&timestamp(1_700_000_000_123_456)),
            1_700_000_000_123_456
        );
        assert_eq!(micros(&timestamp(-1)), -1);
        assert!(check_id("acme-agency", 3, 63).is_ok());
        for bad in ["ab", "Acme", "1acme", "acme-", "ac_me"] {
            assert!(check_id(bad, 3, 63).is_err(), "{bad}");
        }
        let mask = prost_types::FieldMask {
            paths: vec!["x".into()],
        };
        assert!(mask_paths(Some(&mask), &["a", "b"]).is_err());
        assert_eq!(mask_paths(None, &["a", "b"]).unwrap(), ["a", "b"]);
    }
}
