//! PayPal: billing subscriptions and completed sales, from the webhook event envelope.
//!
//! The provider event id is the envelope's `id` (`WH-…`); its time is `create_time`. Events of
//! one subscription (the sales that pay it included, by `billing_agreement_id`) share the
//! ordering key `paypal:subscription:<id>`.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::types;
use super::util::{opt_time, Doc};
use super::{Invalid, Mapped, Parsed};

pub(crate) fn normalize(parsed: &Parsed, _received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let d = Doc(&parsed.body);
    let event_id = d.req_str("/id")?.to_owned();
    let time = d
        .time("/create_time")?
        .ok_or_else(|| Invalid::normalization("/create_time is missing"))?;
    let (event_type, subject, data, ordering_key) = match parsed.event_type.as_str() {
        "BILLING.SUBSCRIPTION.ACTIVATED" | "BILLING.SUBSCRIPTION.UPDATED" => {
            subscription(d, types::PAYMENTS_SUBSCRIPTION_UPDATED)?
        }
        "BILLING.SUBSCRIPTION.CANCELLED" => subscription(d, types::PAYMENTS_SUBSCRIPTION_CANCELED)?,
        "PAYMENT.SALE.COMPLETED" => sale(d)?,
        other => {
            return Err(Invalid::normalization(format!(
                "no mapping for PayPal event type {other:?}"
            )))
        }
    };
    Ok(Mapped {
        event_type,
        subject,
        time,
        data,
        provider_event_id: event_id,
        ordering_key,
    })
}

type Parts = (&'static str, String, Value, String);

/// PayPal subscription statuses in the catalogue's (Stripe's) words.
pub(crate) fn subscription_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "APPROVAL_PENDING" | "APPROVED" => "incomplete",
        "ACTIVE" => "active",
        "SUSPENDED" => "paused",
        "CANCELLED" => "canceled",
        "EXPIRED" => "expired",
        _ => return None,
    })
}

fn subscription(d: Doc<'_>, event_type: &'static str) -> Result<Parts, Invalid> {
    let id = d.req_str("/resource/id")?;
    let provider_status = d.req_str("/resource/status")?;
    let status = subscription_status(provider_status).ok_or_else(|| {
        Invalid::normalization(format!(
            "no mapping for PayPal subscription status {provider_status:?}"
        ))
    })?;
    let canceled_at = if provider_status == "CANCELLED" {
        d.time("/resource/status_update_time")?
    } else {
        None
    };
    let data = json!({
        "subscription_id": id,
        "customer_id": d.non_empty("/resource/subscriber/payer_id"),
        "customer_email": d.non_empty("/resource/subscriber/email_address"),
        "status": status,
        "provider_status": provider_status,
        "plan_id": d.non_empty("/resource/plan_id"),
        "current_period_start": null,
        "current_period_end": d.time_json("/resource/billing_info/next_billing_time")?,
        "cancel_at_period_end": null,
        "cancel_at": null,
        "canceled_at": opt_time(canceled_at),
        "ended_at": null,
        "trial_end": null,
        "custom_id": d.non_empty("/resource/custom_id"),
        "metadata": null,
        "changed_fields": null,
        "livemode": null,
    });
    Ok((
        event_type,
        format!("subscriptions/{id}"),
        data,
        format!("paypal:subscription:{id}"),
    ))
}

fn sale(d: Doc<'_>) -> Result<Parts, Invalid> {
    let id = d.req_str("/resource/id")?;
    let subscription = d
        .str("/resource/billing_agreement_id")
        .filter(|s| !s.is_empty());
    let paid = d.decimal_money("/resource/amount/total", "/resource/amount/currency")?;
    let data = json!({
        "invoice_id": id,
        "customer_id": null,
        "customer_email": null,
        "subscription_id": subscription,
        "status": "paid",
        "number": d.non_empty("/resource/invoice_number"),
        "billing_reason": null,
        "amount_due": null,
        "amount_paid": paid,
        "amount_remaining": null,
        "total": paid,
        "fee": d.decimal_money("/resource/transaction_fee/value", "/resource/transaction_fee/currency")?,
        "attempt_count": null,
        "next_payment_attempt": null,
        "period_start": null,
        "period_end": null,
        "hosted_invoice_url": null,
        "custom_id": d.non_empty("/resource/custom"),
        "metadata": null,
        "livemode": null,
    });
    let ordering_key = match subscription {
        Some(sub) => format!("paypal:subscription:{sub}"),
        None => format!("paypal:sale:{id}"),
    };
    Ok((
        types::PAYMENTS_INVOICE_PAID,
        format!("sales/{id}"),
        data,
        ordering_key,
    ))
}
