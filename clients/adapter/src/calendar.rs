//! What both calendar adapters check and convert alike: IANA time zones, an event's time range
//! (timed or all-day) and attendees, and calendar dates.
use chrono::{Datelike as _, NaiveDate};
use chrono_tz::Tz;
use maxai_kit::error::Violations;
use maxai_proto::maxai::ports::calendar::v1::{Date, Event};

pub fn check_zone(field: &str, zone: &str, v: &mut Violations) {
    if !zone.is_empty() && zone.parse::<Tz>().is_err() {
        v.add(field, "must be an IANA time zone such as America/New_York");
    }
}

/// The checks an event must pass for the fields in `paths`.
pub fn check_event(event: &Event, paths: &[&str], v: &mut Violations) {
    let has = |p: &str| paths.contains(&p);
    check_zone("event.time_zone", &event.time_zone, v);
    let touches_times = [
        "start_time",
        "end_time",
        "start_date",
        "end_date",
        "all_day",
        "time_zone",
    ]
    .iter()
    .any(|p| has(p));
    if touches_times {
        if event.all_day {
            let start = event.start_date.as_ref().and_then(naive_date);
            let end = event.end_date.as_ref().and_then(naive_date);
            match (start, end) {
                (Some(s), Some(e)) if e <= s => {
                    v.add("event.end_date", "must be after event.start_date")
                }
                (Some(_), Some(_)) => {}
                (s, e) => {
                    if s.is_none() {
                        v.add("event.start_date", "is required and must be a valid date");
                    }
                    if e.is_none() {
                        v.add("event.end_date", "is required and must be a valid date");
                    }
                }
            }
        } else {
            crate::validate::time_range(
                "event.start_time",
                event.start_time.as_ref(),
                "event.end_time",
                event.end_time.as_ref(),
                v,
            );
        }
    }
    if has("attendees") {
        for (i, a) in event.attendees.iter().enumerate() {
            if !a.email.contains('@') {
                v.add(
                    format!("event.attendees[{i}].email"),
                    "must be an email address",
                );
            }
        }
    }
}

pub fn naive_date(d: &Date) -> Option<NaiveDate> {
    let Date { year, month, day } = *d;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

pub fn date_of(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap_or(0),
        day: i32::try_from(d.day()).unwrap_or(0),
    }
}
