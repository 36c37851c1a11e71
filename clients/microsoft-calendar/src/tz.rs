//! IANA ⇄ Windows time-zone names, which Graph's `dateTimeTimeZone` speaks. The pairs are
//! CLDR's windowsZones (territory 001) for the zones our tenants' clients use; an IANA zone
//! missing here is sent by its IANA name, which Graph accepts too.
use chrono_tz::Tz;

/// (Windows name, IANA name, other IANA names of the same Windows zone).
const ZONES: &[(&str, &str, &[&str])] = &[
    (
        "UTC",
        "Etc/UTC",
        &["UTC", "Etc/GMT", "GMT", "Etc/Universal", "Etc/Zulu"],
    ),
    (
        "GMT Standard Time",
        "Europe/London",
        &["Europe/Dublin", "Europe/Lisbon"],
    ),
    ("Greenwich Standard Time", "Atlantic/Reykjavik", &[]),
    (
        "W. Europe Standard Time",
        "Europe/Berlin",
        &[
            "Europe/Amsterdam",
            "Europe/Rome",
            "Europe/Stockholm",
            "Europe/Vienna",
            "Europe/Zurich",
            "Europe/Oslo",
        ],
    ),
    (
        "Romance Standard Time",
        "Europe/Paris",
        &["Europe/Brussels", "Europe/Madrid", "Europe/Copenhagen"],
    ),
    (
        "Central Europe Standard Time",
        "Europe/Budapest",
        &["Europe/Prague", "Europe/Belgrade"],
    ),
    (
        "Central European Standard Time",
        "Europe/Warsaw",
        &["Europe/Zagreb"],
    ),
    ("GTB Standard Time", "Europe/Bucharest", &["Europe/Athens"]),
    (
        "FLE Standard Time",
        "Europe/Kiev",
        &[
            "Europe/Kyiv",
            "Europe/Helsinki",
            "Europe/Riga",
            "Europe/Vilnius",
            "Europe/Tallinn",
            "Europe/Sofia",
        ],
    ),
    ("Russian Standard Time", "Europe/Moscow", &[]),
    ("Turkey Standard Time", "Europe/Istanbul", &[]),
    ("Israel Standard Time", "Asia/Jerusalem", &[]),
    ("Egypt Standard Time", "Africa/Cairo", &[]),
    ("South Africa Standard Time", "Africa/Johannesburg", &[]),
    ("W. Central Africa Standard Time", "Africa/Lagos", &[]),
    ("Arabian Standard Time", "Asia/Dubai", &[]),
    ("India Standard Time", "Asia/Calcutta", &["Asia/Kolkata"]),
    (
        "SE Asia Standard Time",
        "Asia/Bangkok",
        &["Asia/Jakarta", "Asia/Ho_Chi_Minh"],
    ),
    ("China Standard Time", "Asia/Shanghai", &["Asia/Hong_Kong"]),
    (
        "Singapore Standard Time",
        "Asia/Singapore",
        &["Asia/Kuala_Lumpur", "Asia/Manila"],
    ),
    ("Taipei Standard Time", "Asia/Taipei", &[]),
    ("Tokyo Standard Time", "Asia/Tokyo", &[]),
    ("Korea Standard Time", "Asia/Seoul", &[]),
    ("W. Australia Standard Time", "Australia/Perth", &[]),
    ("E. Australia Standard Time", "Australia/Brisbane", &[]),
    (
        "AUS Eastern Standard Time",
        "Australia/Sydney",
        &["Australia/Melbourne", "Australia/Canberra"],
    ),
    ("New Zealand Standard Time", "Pacific/Auckland", &[]),
    ("Hawaiian Standard Time", "Pacific/Honolulu", &[]),
    ("Alaskan Standard Time", "America/Anchorage", &[]),
    (
        "Pacific Standard Time",
        "America/Los_Angeles",
        &["America/Vancouver", "America/Tijuana"],
    ),
    ("US Mountain Standard Time", "America/Phoenix", &[]),
    (
        "Mountain Standard Time",
        "America/Denver",
        &["America/Edmonton", "America/Boise"],
    ),
    (
        "Central Standard Time",
        "America/Chicago",
        &["America/Winnipeg"],
    ),
    ("Canada Central Standard Time", "America/Regina", &[]),
    ("Central Standard Time (Mexico)", "America/Mexico_City", &[]),
    (
        "Eastern Standard Time",
        "America/New_York",
        &["America/Toronto", "America/Detroit"],
    ),
    (
        "SA Pacific Standard Time",
        "America/Bogota",
        &["America/Lima"],
    ),
    ("Atlantic Standard Time", "America/Halifax", &[]),
    ("Newfoundland Standard Time", "America/St_Johns", &[]),
    ("E. South America Standard Time", "America/Sao_Paulo", &[]),
    (
        "Argentina Standard Time",
        "America/Buenos_Aires",
        &["America/Argentina/Buenos_Aires"],
    ),
    ("Pacific SA Standard Time", "America/Santiago", &[]),
];

/// The Windows name for an IANA zone, or the IANA name itself when no Windows twin is known.
pub fn windows_name(iana: &str) -> &str {
    ZONES
        .iter()
        .find(|(_, main, others)| *main == iana || others.contains(&iana))
        .map_or(iana, |(windows, _, _)| windows)
}

/// The IANA name for a Graph zone name (Windows or IANA); `None` for custom zones.
pub fn iana_name(graph: &str) -> Option<String> {
    if let Some((_, iana, _)) = ZONES.iter().find(|(w, _, _)| w.eq_ignore_ascii_case(graph)) {
        return Some(if *iana == "Etc/UTC" {
            "UTC".to_owned()
        } else {
            (*iana).to_owned()
        });
    }
    graph.parse::<Tz>().ok().map(|tz| tz.name().to_owned())
}

/// The chrono zone of a Graph zone name.
pub fn zone(graph: &str) -> Option<Tz> {
    iana_name(graph)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        assert_eq!(windows_name("America/New_York"), "Eastern Standard Time");
        assert_eq!(windows_name("Asia/Kolkata"), "India Standard Time");
        assert_eq!(windows_name("UTC"), "UTC");
        assert_eq!(windows_name("Africa/Nairobi"), "Africa/Nairobi");
        assert_eq!(
            iana_name("Pacific Standard Time").as_deref(),
            Some("America/Los_Angeles")
        );
        assert_eq!(iana_name("UTC").as_deref(), Some("UTC"));
        assert_eq!(iana_name("Europe/Paris").as_deref(), Some("Europe/Paris"));
        assert_eq!(iana_name("tzone://Microsoft/Custom"), None);
        // Every table entry names a zone chrono-tz knows.
        for (windows, iana, others) in ZONES {
            assert!(zone(windows).is_some(), "{windows}");
            assert!(iana.parse::<Tz>().is_ok(), "{iana}");
            for other in *others {
                assert!(other.parse::<Tz>().is_ok(), "{other}");
            }
        }
    }
}
