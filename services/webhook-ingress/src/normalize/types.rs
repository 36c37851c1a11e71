//! The canonical event type catalogue (CloudEvents `type`), documented with each type's `data`
//! in `docs/events.md`. Names are `<domain>.<object>.<what happened>`, lower case.

pub const CRM_CONTACT_CREATED: &str = "crm.contact.created";
pub const CRM_CONTACT_UPDATED: &str = "crm.contact.updated";
pub const CRM_CONTACT_DELETED: &str = "crm.contact.deleted";
pub const CRM_APPOINTMENT_CREATED: &str = "crm.appointment.created";
pub const CRM_APPOINTMENT_UPDATED: &str = "crm.appointment.updated";
pub const CRM_OPPORTUNITY_CREATED: &str = "crm.opportunity.created";
pub const CRM_OPPORTUNITY_STATUS_CHANGED: &str = "crm.opportunity.status_changed";

/// An SMS or MMS message from a contact.
pub const MESSAGING_SMS_RECEIVED: &str = "messaging.sms.received";
/// An SMS or MMS message to a contact.
pub const MESSAGING_SMS_SENT: &str = "messaging.sms.sent";
/// A delivery status change of an outbound SMS or MMS message.
pub const MESSAGING_SMS_STATUS: &str = "messaging.sms.status";
/// Like [`MESSAGING_SMS_RECEIVED`] on another channel (`data.channel`: email, whatsapp, call...).
pub const MESSAGING_MESSAGE_RECEIVED: &str = "messaging.message.received";
/// Like [`MESSAGING_SMS_SENT`] on another channel.
pub const MESSAGING_MESSAGE_SENT: &str = "messaging.message.sent";
/// Like [`MESSAGING_SMS_STATUS`] on another channel.
pub const MESSAGING_MESSAGE_STATUS: &str = "messaging.message.status";

/// A call is being set up (queued, initiated, ringing).
pub const VOICE_CALL_PROGRESS: &str = "voice.call.progress";
pub const VOICE_CALL_STARTED: &str = "voice.call.started";
pub const VOICE_CALL_ENDED: &str = "voice.call.ended";
/// The post-call analysis of a call is ready.
pub const VOICE_CALL_ANALYZED: &str = "voice.call.analyzed";

pub const PAYMENTS_INVOICE_PAID: &str = "payments.invoice.paid";
pub const PAYMENTS_INVOICE_PAYMENT_FAILED: &str = "payments.invoice.payment_failed";
pub const PAYMENTS_SUBSCRIPTION_CREATED: &str = "payments.subscription.created";
pub const PAYMENTS_SUBSCRIPTION_UPDATED: &str = "payments.subscription.updated";
pub const PAYMENTS_SUBSCRIPTION_CANCELED: &str = "payments.subscription.canceled";
pub const PAYMENTS_CHECKOUT_COMPLETED: &str = "payments.checkout.completed";

/// Every type in the catalogue.
pub const ALL: &[&str] = &[
    CRM_CONTACT_CREATED,
    CRM_CONTACT_UPDATED,
    CRM_CONTACT_DELETED,
    CRM_APPOINTMENT_CREATED,
    CRM_APPOINTMENT_UPDATED,
    CRM_OPPORTUNITY_CREATED,
    CRM_OPPORTUNITY_STATUS_CHANGED,
    MESSAGING_SMS_RECEIVED,
    MESSAGING_SMS_SENT,
    MESSAGING_SMS_STATUS,
    MESSAGING_MESSAGE_RECEIVED,
    MESSAGING_MESSAGE_SENT,
    MESSAGING_MESSAGE_STATUS,
    VOICE_CALL_PROGRESS,
    VOICE_CALL_STARTED,
    VOICE_CALL_ENDED,
    VOICE_CALL_ANALYZED,
    PAYMENTS_INVOICE_PAID,
    PAYMENTS_INVOICE_PAYMENT_FAILED,
    PAYMENTS_SUBSCRIPTION_CREATED,
    PAYMENTS_SUBSCRIPTION_UPDATED,
    PAYMENTS_SUBSCRIPTION_CANCELED,
    PAYMENTS_CHECKOUT_COMPLETED,
];
