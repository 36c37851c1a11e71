//! GHL JSON ⇄ CRM port messages. Port messages are destructured without `..`, so a new port
//! field breaks the build until someone decides how GHL carries it. GHL's JSON is read
//! leniently (unknown fields ignored, nulls accepted): providers add fields without notice.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use maxai_adapter::money;
pub use maxai_kit::structs::{json_to_value, value_to_json};
use maxai_proto::maxai::ports::crm::v1::{
    Contact, CustomFieldValue, Note, Opportunity, OpportunityStatus,
};
use prost_types::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Port contact fields GHL can write, with their GHL names.
pub const WRITABLE_FIELDS: &[(&str, &str)] = &[
    ("first_name", "firstName"),
    ("last_name", "lastName"),
    ("name", "name"),
    ("email", "email"),
    ("phone", "phone"),
    ("company_name", "companyName"),
    ("tags", "tags"),
    ("custom_fields", "customFields"),
    ("source", "source"),
    ("timezone", "timezone"),
    ("dnd", "dnd"),
    ("assigned_to", "assignedTo"),
];

/// A contact as GHL returns it (`GET /contacts/{id}`, create, update, upsert).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GhlContact {
    pub id: String,
    pub location_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company_name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub custom_fields: Option<Vec<GhlCustomField>>,
    pub source: Option<String>,
    pub timezone: Option<String>,
    pub dnd: Option<bool>,
    pub assigned_to: Option<String>,
    pub date_added: Option<String>,
    pub date_updated: Option<String>,
}

/// `{id, value}` as GHL returns custom fields (some endpoints say `fieldValue`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GhlCustomField {
    pub id: String,
    #[serde(alias = "fieldValue", alias = "field_value")]
    pub value: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ContactEnvelope {
    pub contact: GhlContact,
}

#[derive(Debug, Deserialize)]
pub struct UpsertEnvelope {
    /// GHL's `new`: true when no contact matched.
    #[serde(rename = "new", default)]
    pub created: bool,
    pub contact: GhlContact,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GhlNote {
    pub id: String,
    pub body: Option<String>,
    pub user_id: Option<String>,
    pub date_added: Option<String>,
    pub contact_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NoteEnvelope {
    pub note: GhlNote,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GhlOpportunity {
    pub id: String,
    pub name: Option<String>,
    /// A JSON number in the location's currency (sometimes absent or null).
    pub monetary_value: Option<Value>,
    pub pipeline_id: Option<String>,
    pub pipeline_stage_id: Option<String>,
    pub assigned_to: Option<String>,
    pub status: Option<String>,
    pub source: Option<String>,
    pub last_status_change_at: Option<String>,
    pub last_stage_change_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub contact_id: Option<String>,
    pub location_id: Option<String>,
    pub custom_fields: Option<Vec<GhlCustomField>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SearchMeta {
    pub total: Option<i64>,
    pub next_page_url: Option<String>,
    /// Milliseconds; GHL has sent it both as a number and as a string.
    pub start_after: Option<Value>,
    pub start_after_id: Option<String>,
    pub next_page: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchResponse {
    pub opportunities: Vec<GhlOpportunity>,
    pub meta: SearchMeta,
}

/// RFC 3339 text into a timestamp; GHL sends ISO 8601 with an offset or `Z`.
pub fn timestamp(text: Option<&str>) -> Option<Timestamp> {
    let time = chrono::DateTime::parse_from_rfc3339(text?).ok()?;
    Some(Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn custom_fields_from_ghl(fields: Option<Vec<GhlCustomField>>) -> Vec<CustomFieldValue> {
    fields
        .unwrap_or_default()
        .into_iter()
        .map(|GhlCustomField { id, value }| CustomFieldValue {
            id,
            key: String::new(),
            value: value.as_ref().map(json_to_value),
        })
        .collect()
}

/// GHL's write shape of custom fields: `{id | key, field_value}`.
fn custom_fields_to_ghl(fields: &[CustomFieldValue]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|CustomFieldValue { id, key, value }| {
                let mut item = Map::new();
                if !id.is_empty() {
                    item.insert("id".into(), json!(id));
                } else {
                    item.insert("key".into(), json!(key));
                }
                item.insert(
                    "field_value".into(),
                    value.as_ref().map_or(Value::Null, value_to_json),
                );
                Value::Object(item)
            })
            .collect(),
    )
}

pub fn contact_from_ghl(contact: GhlContact) -> Contact {
    let GhlContact {
        id,
        location_id,
        first_name,
        last_name,
        name,
        email,
        phone,
        company_name,
        tags,
        custom_fields,
        source,
        timezone,
        dnd,
        assigned_to,
        date_added,
        date_updated,
    } = contact;
    Contact {
        id,
        location_id: location_id.unwrap_or_default(),
        first_name: first_name.unwrap_or_default(),
        last_name: last_name.unwrap_or_default(),
        name: name.unwrap_or_default(),
        email: email.unwrap_or_default(),
        phone: phone.unwrap_or_default(),
        company_name: company_name.unwrap_or_default(),
        tags: tags.unwrap_or_default(),
        custom_fields: custom_fields_from_ghl(custom_fields),
        source: source.unwrap_or_default(),
        timezone: timezone.unwrap_or_default(),
        dnd: dnd.unwrap_or_default(),
        assigned_to: assigned_to.unwrap_or_default(),
        date_added: timestamp(date_added.as_deref()),
        date_updated: timestamp(date_updated.as_deref()),
    }
}

/// One writable field of a port contact: `(port name, GHL name, GHL value, is empty)`.
pub struct Field {
    pub port: &'static str,
    pub ghl: &'static str,
    pub value: Value,
    pub empty: bool,
}

/// Every writable field of `contact`, in [`WRITABLE_FIELDS`] order.
pub fn contact_fields(contact: &Contact) -> Vec<Field> {
    let Contact {
        // Output only, or carried by the path / the connection rather than the body.
        id: _,
        location_id: _,
        date_added: _,
        date_updated: _,
        first_name,
        last_name,
        name,
        email,
        phone,
        company_name,
        tags,
        custom_fields,
        source,
        timezone,
        dnd,
        assigned_to,
    } = contact;
    let text = |s: &String| (json!(s), s.is_empty());
    let values = [
        text(first_name),
        text(last_name),
        text(name),
        text(email),
        text(phone),
        text(company_name),
        (json!(tags), tags.is_empty()),
        (
            custom_fields_to_ghl(custom_fields),
            custom_fields.is_empty(),
        ),
        text(source),
        text(timezone),
        (json!(dnd), !dnd),
        text(assigned_to),
    ];
    WRITABLE_FIELDS
        .iter()
        .zip(values)
        .map(|(&(port, ghl), (value, empty))| Field {
            port,
            ghl,
            value,
            empty,
        })
        .collect()
}

/// Body of `POST /contacts/` and `/contacts/upsert`: every non-empty field plus the location.
pub fn create_body(contact: &Contact, location_id: &str) -> Value {
    let mut body = Map::new();
    body.insert("locationId".into(), json!(location_id));
    for field in contact_fields(contact) {
        if !field.empty {
            body.insert(field.ghl.into(), field.value);
        }
    }
    Value::Object(body)
}

/// Body of `PUT /contacts/{id}`: the masked fields only; an emptied text field is sent as
/// null, which clears it in GHL.
pub fn update_body(contact: &Contact, paths: &[String]) -> Map<String, Value> {
    let mut body = Map::new();
    for field in contact_fields(contact) {
        if paths.iter().any(|p| p == field.port) {
            let clear_text = field.empty && field.value.is_string();
            body.insert(
                field.ghl.into(),
                if clear_text { Value::Null } else { field.value },
            );
        }
    }
    body
}

/// GHL's tag form: trimmed and lower-case.
pub fn normalize_tag(tag: &str) -> String {
    tag.trim().to_lowercase()
}

/// `current + add − remove`, in GHL's tag form, first occurrence kept.
pub fn merge_tags(current: &[String], add: &[String], remove: &[String]) -> Vec<String> {
    let remove: Vec<String> = remove.iter().map(|t| normalize_tag(t)).collect();
    let mut out: Vec<String> = Vec::new();
    for tag in current.iter().chain(add) {
        let tag = normalize_tag(tag);
        if !tag.is_empty() && !remove.contains(&tag) && !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

pub fn note_from_ghl(note: GhlNote, contact_id: &str) -> Note {
    let GhlNote {
        id,
        body,
        user_id,
        date_added,
        contact_id: ghl_contact_id,
    } = note;
    Note {
        id,
        contact_id: ghl_contact_id.unwrap_or_else(|| contact_id.to_owned()),
        body: body.unwrap_or_default(),
        user_id: user_id.unwrap_or_default(),
        date_added: timestamp(date_added.as_deref()),
    }
}

pub fn status_to_ghl(status: OpportunityStatus) -> Option<&'static str> {
    match status {
        OpportunityStatus::Unspecified => None,
        OpportunityStatus::Open => Some("open"),
        OpportunityStatus::Won => Some("won"),
        OpportunityStatus::Lost => Some("lost"),
        OpportunityStatus::Abandoned => Some("abandoned"),
    }
}

pub fn status_from_ghl(status: Option<&str>) -> OpportunityStatus {
    match status {
        Some("open") => OpportunityStatus::Open,
        Some("won") => OpportunityStatus::Won,
        Some("lost") => OpportunityStatus::Lost,
        Some("abandoned") => OpportunityStatus::Abandoned,
        _ => OpportunityStatus::Unspecified,
    }
}

pub fn opportunity_from_ghl(opportunity: GhlOpportunity, currency: &str) -> Opportunity {
    let GhlOpportunity {
        id,
        name,
        monetary_value,
        pipeline_id,
        pipeline_stage_id,
        assigned_to,
        status,
        source,
        last_status_change_at,
        last_stage_change_at,
        created_at,
        updated_at,
        contact_id,
        location_id,
        custom_fields,
    } = opportunity;
    let monetary_value = match &monetary_value {
        Some(Value::Number(n)) => money::from_json_number(n, currency).ok(),
        Some(Value::String(s)) if !s.trim().is_empty() => money::from_decimal_str(s, currency).ok(),
        _ => None,
    };
    Opportunity {
        id,
        location_id: location_id.unwrap_or_default(),
        name: name.unwrap_or_default(),
        monetary_value,
        pipeline_id: pipeline_id.unwrap_or_default(),
        pipeline_stage_id: pipeline_stage_id.unwrap_or_default(),
        status: status_from_ghl(status.as_deref()) as i32,
        contact_id: contact_id.unwrap_or_default(),
        assigned_to: assigned_to.unwrap_or_default(),
        source: source.unwrap_or_default(),
        custom_fields: custom_fields_from_ghl(custom_fields),
        last_status_change_time: timestamp(last_status_change_at.as_deref()),
        last_stage_change_time: timestamp(last_stage_change_at.as_deref()),
        create_time: timestamp(created_at.as_deref()),
        update_time: timestamp(updated_at.as_deref()),
    }
}

/// Where the next page starts in GHL terms, bound to the filters it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub start_after: i64,
    pub start_after_id: String,
    pub filters: u64,
}

const CURSOR_VERSION: &str = "v1";

impl Cursor {
    pub fn encode(&self) -> String {
        let text = format!(
            "{CURSOR_VERSION}.{}.{:016x}.{}",
            self.start_after, self.filters, self.start_after_id
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(token: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, '.');
        if parts.next()? != CURSOR_VERSION {
            return None;
        }
        let start_after = parts.next()?.parse().ok()?;
        let filters = u64::from_str_radix(parts.next()?, 16).ok()?;
        let start_after_id = parts.next()?.to_owned();
        (!start_after_id.is_empty()).then_some(Cursor {
            start_after,
            start_after_id,
            filters,
        })
    }

    /// The next page's cursor, when GHL says there is one.
    pub fn next(meta: &SearchMeta, filters: u64) -> Option<Cursor> {
        let more = meta.next_page.as_ref().is_some_and(|p| !p.is_null())
            || meta.next_page_url.as_ref().is_some_and(|u| !u.is_empty());
        if !more {
            return None;
        }
        let start_after = match meta.start_after.as_ref()? {
            Value::Number(n) => n.as_i64()?,
            Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        Some(Cursor {
            start_after,
            start_after_id: meta.start_after_id.clone().filter(|s| !s.is_empty())?,
            filters,
        })
    }
}

/// FNV-1a over the filter values: stable across processes and releases, unlike std's hasher,
/// so a page token keeps working on another replica.
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghl_contacts_convert_with_nulls_and_times() {
        let raw = json!({
            "id": "c1", "locationId": "loc", "firstName": "Ann", "lastName": null,
            "email": "ann@example.com", "tags": ["vip"], "dnd": true,
            "customFields": [{"id": "f1", "value": "x"}, {"id": "f2", "value": 3}],
            "dateAdded": "2025-01-28T14:35:00.123Z", "somethingNew": {"a": 1},
        });
        let contact: GhlContact = serde_json::from_value(raw).expect("contact");
        let c = contact_from_ghl(contact);
        assert_eq!(c.first_name, "Ann");
        assert_eq!(c.last_name, "");
        assert!(c.dnd);
        assert_eq!(c.custom_fields.len(), 2);
        assert_eq!(
            c.custom_fields[1].value.as_ref().map(value_to_json),
            Some(json!(3))
        );
        let added = c.date_added.expect("date");
        assert_eq!((added.seconds, added.nanos), (1_738_074_900, 123_000_000));
    }

    #[test]
    fn bodies_carry_only_what_they_should() {
        let contact = Contact {
            id: "ignored".into(),
            first_name: "Ann".into(),
            email: String::new(),
            tags: vec!["VIP".into()],
            custom_fields: vec![CustomFieldValue {
                id: String::new(),
                key: "contact.reason".into(),
                value: Some(json_to_value(&json!("cleaning"))),
            }],
            ..Contact::default()
        };
        assert_eq!(
            create_body(&contact, "loc"),
            json!({
                "locationId": "loc", "firstName": "Ann", "tags": ["VIP"],
                "customFields": [{"key": "contact.reason", "field_value": "cleaning"}],
            })
        );
        let body = update_body(&contact, &["first_name".into(), "email".into()]);
        assert_eq!(
            Value::Object(body),
            json!({"firstName": "Ann", "email": null})
        );
    }

    #[test]
    fn tags_merge_case_insensitively() {
        let merged = merge_tags(
            &["vip".into(), "lead".into()],
            &["New ".into(), "VIP".into()],
            &["LEAD".into()],
        );
        assert_eq!(merged, ["vip", "new"]);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            start_after: 1_735_689_600_000,
            start_after_id: "abc.def".into(),
            filters: fingerprint(&["loc", "", "open"]),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a token"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v2.1.0.x")), None);
        assert_ne!(fingerprint(&["a", "bc"]), fingerprint(&["ab", "c"]));
    }

    #[test]
    fn opportunity_values_are_exact() {
        let raw = json!({"id": "o1", "monetaryValue": 1250.5, "status": "won"});
        let o: GhlOpportunity = serde_json::from_value(raw).expect("opportunity");
        let o = opportunity_from_ghl(o, "usd");
        let value = o.monetary_value.expect("value");
        assert_eq!(
            (value.currency_code.as_str(), value.units, value.nanos),
            ("USD", 1250, 500_000_000)
        );
        assert_eq!(o.status, OpportunityStatus::Won as i32);
    }
}
