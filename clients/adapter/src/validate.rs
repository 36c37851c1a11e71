//! Request checks shared by the ports, collected as field violations so a caller learns every
//! problem at once, before any provider is called.
use maxai_kit::error::Violations;
use prost_types::Timestamp;

/// `+` then 2–15 digits, the first not 0 (ITU-T E.164).
pub fn is_e164(value: &str) -> bool {
    let Some(digits) = value.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Adds a violation unless `value` is an E.164 number.
pub fn e164(field: &str, value: &str, v: &mut Violations) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if !is_e164(value) {
        v.add(field, "must be an E.164 number such as +14155550123");
    }
}

pub fn required(field: &str, value: &str, v: &mut Violations) {
    if value.trim().is_empty() {
        v.add(field, "is required");
    }
}

/// Both ends are required and `end` must come after `start`.
pub fn time_range(
    start_field: &str,
    start: Option<&Timestamp>,
    end_field: &str,
    end: Option<&Timestamp>,
    v: &mut Violations,
) {
    match (start, end) {
        (Some(s), Some(e)) => {
            if (e.seconds, e.nanos) <= (s.seconds, s.nanos) {
                v.add(end_field, format!("must be after {start_field}"));
            }
        }
        (s, e) => {
            if s.is_none() {
                v.add(start_field, "is required");
            }
            if e.is_none() {
                v.add(end_field, "is required");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        for ok in ["+14155550123", "+442071838750", "+12"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "14155550123",
            "+0123",
            "+1 415 555",
            "+1234567890123456",
            "+",
            "+1a",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn ranges_need_both_ends_in_order() {
        let t = |s| Timestamp {
            seconds: s,
            nanos: 0,
        };
        let mut v = Violations::new();
        time_range("start_time", Some(&t(10)), "end_time", Some(&t(20)), &mut v);
        assert!(v.is_empty());
        time_range("start_time", Some(&t(20)), "end_time", Some(&t(10)), &mut v);
        time_range("start_time", None, "end_time", None, &mut v);
        let fields: Vec<_> = v.into_fields().into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["end_time", "start_time", "end_time"]);
    }
}
