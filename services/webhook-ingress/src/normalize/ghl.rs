//! GoHighLevel: contacts, conversation messages, appointments and opportunities.
//!
//! Provider event id: `webhookId` when the body has one (GHL's own dedupe key); otherwise
//! `<type>:<object id>` for events that happen once per object (creates, deletes, one message)
//! and `<type>:<object id>:<content hash>` for updates, whose repeats differ in content (the
//! hash is over the canonical JSON of the body, so a redelivery of the same update hashes alike).
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::money::Money;
use super::types;
use super::util::{content_hash, first_time, Doc};
use super::{Invalid, Mapped, Parsed};

pub(crate) fn normalize(parsed: &Parsed, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let d = Doc(&parsed.body);
    match parsed.event_type.as_str() {
        "ContactCreate" => contact(
            d,
            types::CRM_CONTACT_CREATED,
            Some("/dateAdded"),
            received_at,
        ),
        "ContactUpdate" => contact(
            d,
            types::CRM_CONTACT_UPDATED,
            Some("/dateUpdated"),
            received_at,
        ),
        "ContactDelete" => contact(d, types::CRM_CONTACT_DELETED, None, received_at),
        "InboundMessage" => message(d, true, received_at),
        "OutboundMessage" => message(d, false, received_at),
        "AppointmentCreate" => appointment(
            d,
            types::CRM_APPOINTMENT_CREATED,
            "/appointment/dateAdded",
            received_at,
        ),
        "AppointmentUpdate" => appointment(
            d,
            types::CRM_APPOINTMENT_UPDATED,
            "/appointment/dateUpdated",
            received_at,
        ),
        "OpportunityCreate" => {
            opportunity(d, types::CRM_OPPORTUNITY_CREATED, "/dateAdded", received_at)
        }
        "OpportunityStatusUpdate" => opportunity(
            d,
            types::CRM_OPPORTUNITY_STATUS_CHANGED,
            "/dateUpdated",
            received_at,
        ),
        other => Err(Invalid::normalization(format!(
            "no mapping for GHL event type {other:?}"
        ))),
    }
}

/// Whether an event type happens at most once per object.
fn once_per_object(event_type: &str) -> bool {
    !event_type.ends_with("Update")
}

fn event_id(d: Doc<'_>, object_id: &str) -> Result<String, Invalid> {
    if let Some(id) = d.str("/webhookId").filter(|s| !s.is_empty()) {
        return Ok(id.to_owned());
    }
    let event_type = d.req_str("/type")?;
    Ok(if once_per_object(event_type) {
        format!("{event_type}:{object_id}")
    } else {
        format!("{event_type}:{object_id}:{}", content_hash(d.0))
    })
}

/// The event time: `timestamp` (the delivery's), else the object's own field, else receipt.
fn event_time(
    d: Doc<'_>,
    own: Option<&str>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, Invalid> {
    let own = match own {
        Some(pointer) => d.time(pointer)?,
        None => None,
    };
    Ok(first_time([d.time("/timestamp")?, own], received_at))
}

fn contact(
    d: Doc<'_>,
    event_type: &'static str,
    time_field: Option<&str>,
    received_at: DateTime<Utc>,
) -> Result<Mapped, Invalid> {
    let id = d.req_str("/id")?;
    let custom_fields: Vec<Value> = d
        .get("/customFields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .map(|f| {
                    let f = Doc(f);
                    json!({
                        "id": f.string("/id"),
                        "value": f.get("/value").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let data = json!({
        "contact_id": id,
        "location_id": d.req_str("/locationId")?,
        "first_name": d.string("/firstName"),
        "last_name": d.string("/lastName"),
        "name": d.string("/name"),
        "email": d.non_empty("/email"),
        "phone": d.non_empty("/phone"),
        "company_name": d.string("/companyName"),
        "address1": d.string("/address1"),
        "city": d.string("/city"),
        "state": d.string("/state"),
        "country": d.string("/country"),
        "postal_code": d.string("/postalCode"),
        "website": d.string("/website"),
        "source": d.string("/source"),
        "date_of_birth": d.string("/dateOfBirth"),
        "tags": d.strings("/tags"),
        "dnd": d.bool("/dnd"),
        "assigned_to": d.non_empty("/assignedTo"),
        "custom_fields": custom_fields,
        "date_added": d.time_json("/dateAdded")?,
        "date_updated": d.time_json("/dateUpdated")?,
    });
    Ok(Mapped {
        event_type,
        subject: format!("contacts/{id}"),
        time: event_time(d, time_field, received_at)?,
        data,
        provider_event_id: event_id(d, id)?,
        ordering_key: format!("ghl:contact:{id}"),
    })
}

/// GHL `messageType` as a channel: lower case, `TYPE_` prefix dropped, spaces as `_`
/// (`SMS` → `sms`, `Email` → `email`, `Live Chat` → `live_chat`).
fn channel(message_type: &str) -> String {
    let t = message_type.strip_prefix("TYPE_").unwrap_or(message_type);
    t.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

fn message(d: Doc<'_>, inbound: bool, received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let message_id = d.req_str("/messageId")?;
    let conversation_id = d.req_str("/conversationId")?;
    let channel = channel(d.req_str("/messageType")?);
    let event_type = match (channel == "sms", inbound) {
        (true, true) => types::MESSAGING_SMS_RECEIVED,
        (true, false) => types::MESSAGING_SMS_SENT,
        (false, true) => types::MESSAGING_MESSAGE_RECEIVED,
        (false, false) => types::MESSAGING_MESSAGE_SENT,
    };
    let media: Vec<Value> = d
        .strings("/attachments")
        .as_array()
        .into_iter()
        .flatten()
        .map(|url| json!({ "url": url, "content_type": null }))
        .collect();
    let call_duration = d.scaled_number("/callDuration", 0)?;
    let data = json!({
        "message_id": message_id,
        "channel": channel,
        "direction": if inbound { "inbound" } else { "outbound" },
        "from": null,
        "to": null,
        "body": d.string("/body"),
        "media": media,
        "status": d.non_empty("/status"),
        "conversation_id": conversation_id,
        "contact_id": d.req_str("/contactId")?,
        "location_id": d.req_str("/locationId")?,
        "user_id": d.non_empty("/userId"),
        "account_sid": null,
        "messaging_service_sid": null,
        "num_segments": null,
        "call_duration_seconds": call_duration,
        "call_status": d.non_empty("/callStatus"),
    });
    Ok(Mapped {
        event_type,
        subject: format!("messages/{message_id}"),
        time: event_time(d, Some("/dateAdded"), received_at)?,
        data,
        provider_event_id: event_id(d, message_id)?,
        ordering_key: format!("ghl:conversation:{conversation_id}"),
    })
}

fn appointment(
    d: Doc<'_>,
    event_type: &'static str,
    time_field: &str,
    received_at: DateTime<Utc>,
) -> Result<Mapped, Invalid> {
    let id = d.req_str("/appointment/id")?;
    let data = json!({
        "appointment_id": id,
        "location_id": d.req_str("/locationId")?,
        "calendar_id": d.non_empty("/appointment/calendarId"),
        "contact_id": d.non_empty("/appointment/contactId"),
        "group_id": d.non_empty("/appointment/groupId"),
        "title": d.string("/appointment/title"),
        "status": d.non_empty("/appointment/appointmentStatus"),
        "start_time": d.time_json("/appointment/startTime")?,
        "end_time": d.time_json("/appointment/endTime")?,
        "assigned_user_id": d.non_empty("/appointment/assignedUserId"),
        "users": d.strings("/appointment/users"),
        "address": d.string("/appointment/address"),
        "notes": d.string("/appointment/notes"),
        "source": d.string("/appointment/source"),
    });
    Ok(Mapped {
        event_type,
        subject: format!("appointments/{id}"),
        time: event_time(d, Some(time_field), received_at)?,
        data,
        provider_event_id: event_id(d, id)?,
        ordering_key: format!("ghl:appointment:{id}"),
    })
}

fn opportunity(
    d: Doc<'_>,
    event_type: &'static str,
    time_field: &str,
    received_at: DateTime<Utc>,
) -> Result<Mapped, Invalid> {
    let id = d.req_str("/id")?;
    // `monetaryValue` is a number in the location's currency (major units), which the
    // webhook does not name.
    let monetary_value = d.scaled_number("/monetaryValue", 6)?.map(|micros| {
        Money {
            amount_micros: micros,
            currency: None,
        }
        .to_json()
    });
    let data = json!({
        "opportunity_id": id,
        "location_id": d.req_str("/locationId")?,
        "contact_id": d.non_empty("/contactId"),
        "name": d.string("/name"),
        "status": d.non_empty("/status"),
        "pipeline_id": d.non_empty("/pipelineId"),
        "pipeline_stage_id": d.non_empty("/pipelineStageId"),
        "assigned_to": d.non_empty("/assignedTo"),
        "source": d.string("/source"),
        "monetary_value": monetary_value,
    });
    Ok(Mapped {
        event_type,
        subject: format!("opportunities/{id}"),
        time: event_time(d, Some(time_field), received_at)?,
        data,
        provider_event_id: event_id(d, id)?,
        ordering_key: format!("ghl:opportunity:{id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        assert_eq!(channel("SMS"), "sms");
        assert_eq!(channel("TYPE_SMS"), "sms");
        assert_eq!(channel("Live Chat"), "live_chat");
        assert_eq!(channel("Email"), "email");
    }

    #[test]
    fn only_updates_need_a_content_hash() {
        assert!(once_per_object("ContactCreate"));
        assert!(once_per_object("InboundMessage"));
        assert!(!once_per_object("ContactUpdate"));
        assert!(!once_per_object("OpportunityStatusUpdate"));
    }
}
