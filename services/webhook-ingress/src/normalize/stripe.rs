//! Stripe: invoices, subscriptions and Checkout Sessions, from the event envelope.
//!
//! The provider event id is the event's `id` (`evt_…`); its time is `created`. Events of one
//! subscription (its invoices included) share the ordering key `stripe:subscription:<id>`.
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::money::Money;
use super::types;
use super::util::{opt_time, Doc};
use super::{Invalid, Mapped, Parsed};

pub(crate) fn normalize(parsed: &Parsed, _received_at: DateTime<Utc>) -> Result<Mapped, Invalid> {
    let d = Doc(&parsed.body);
    let event_id = d.req_str("/id")?.to_owned();
    let time = d
        .unix_s("/created")?
        .ok_or_else(|| Invalid::normalization("/created is missing"))?;
    let (event_type, subject, data, ordering_key) = match parsed.event_type.as_str() {
        "invoice.paid" => invoice(d, types::PAYMENTS_INVOICE_PAID)?,
        "invoice.payment_failed" => invoice(d, types::PAYMENTS_INVOICE_PAYMENT_FAILED)?,
        "customer.subscription.created" => subscription(d, types::PAYMENTS_SUBSCRIPTION_CREATED)?,
        "customer.subscription.updated" => subscription(d, types::PAYMENTS_SUBSCRIPTION_UPDATED)?,
        "customer.subscription.deleted" => subscription(d, types::PAYMENTS_SUBSCRIPTION_CANCELED)?,
        "checkout.session.completed" => checkout(d)?,
        other => {
            return Err(Invalid::normalization(format!(
                "no mapping for Stripe event type {other:?}"
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

const OBJECT: &str = "/data/object";

fn p(field: &str) -> String {
    format!("{OBJECT}/{field}")
}

/// An integer minor-unit amount of the object, as [`Money`] JSON (or `null`).
fn amount(d: Doc<'_>, field: &str, currency: Option<&str>) -> Result<Value, Invalid> {
    let pointer = p(field);
    match (d.i64(&pointer), currency) {
        (None, _) => Ok(Value::Null),
        (Some(minor), Some(currency)) => Money::from_stripe_minor(minor, currency)
            .map(|m| m.to_json())
            .ok_or_else(|| Invalid::normalization(format!("{pointer} is out of range"))),
        (Some(_), None) => Err(Invalid::normalization(format!("{pointer} has no currency"))),
    }
}

fn time(d: Doc<'_>, field: &str) -> Result<Value, Invalid> {
    Ok(opt_time(d.unix_s(&p(field))?))
}

fn ordering_key(subscription: Option<&str>, object: &str, id: &str) -> String {
    match subscription {
        Some(sub) => format!("stripe:subscription:{sub}"),
        None => format!("stripe:{object}:{id}"),
    }
}

fn invoice(d: Doc<'_>, event_type: &'static str) -> Result<Parts, Invalid> {
    let id = d.req_str(&p("id"))?;
    let currency = d.req_str(&p("currency"))?;
    // API 2025-03-31.basil and later: parent.subscription_details.subscription; before: subscription.
    let subscription = d
        .str(&p("parent/subscription_details/subscription"))
        .or_else(|| d.str(&p("subscription")))
        .filter(|s| !s.is_empty());
    let data = json!({
        "invoice_id": id,
        "customer_id": d.non_empty(&p("customer")),
        "customer_email": d.non_empty(&p("customer_email")),
        "subscription_id": subscription,
        "status": d.req_str(&p("status"))?,
        "number": d.non_empty(&p("number")),
        "billing_reason": d.non_empty(&p("billing_reason")),
        "amount_due": amount(d, "amount_due", Some(currency))?,
        "amount_paid": amount(d, "amount_paid", Some(currency))?,
        "amount_remaining": amount(d, "amount_remaining", Some(currency))?,
        "total": amount(d, "total", Some(currency))?,
        "fee": null,
        "attempt_count": d.int(&p("attempt_count")),
        "next_payment_attempt": time(d, "next_payment_attempt")?,
        "period_start": time(d, "period_start")?,
        "period_end": time(d, "period_end")?,
        "hosted_invoice_url": d.non_empty(&p("hosted_invoice_url")),
        "custom_id": null,
        "metadata": d.object(&p("metadata")),
        "livemode": d.bool("/livemode"),
    });
    Ok((
        event_type,
        format!("invoices/{id}"),
        data,
        ordering_key(subscription, "invoice", id),
    ))
}

fn subscription(d: Doc<'_>, event_type: &'static str) -> Result<Parts, Invalid> {
    let id = d.req_str(&p("id"))?;
    let status = d.req_str(&p("status"))?;
    // Period bounds: on the subscription before API 2025-03-31.basil, on its items since.
    let period = |field: &str| -> Result<Value, Invalid> {
        match d.i64(&p(field)) {
            Some(_) => time(d, field),
            None => time(d, &format!("items/data/0/{field}")),
        }
    };
    let plan_id = d
        .str(&p("items/data/0/price/id"))
        .or_else(|| d.str(&p("plan/id")))
        .filter(|s| !s.is_empty());
    let changed_fields = d
        .get("/data/previous_attributes")
        .and_then(Value::as_object)
        .map(|changed| {
            let mut keys: Vec<&String> = changed.keys().collect();
            keys.sort();
            json!(keys)
        })
        .unwrap_or(Value::Null);
    let data = json!({
        "subscription_id": id,
        "customer_id": d.non_empty(&p("customer")),
        "customer_email": null,
        "status": status,
        "provider_status": status,
        "plan_id": plan_id,
        "current_period_start": period("current_period_start")?,
        "current_period_end": period("current_period_end")?,
        "cancel_at_period_end": d.bool(&p("cancel_at_period_end")),
        "cancel_at": time(d, "cancel_at")?,
        "canceled_at": time(d, "canceled_at")?,
        "ended_at": time(d, "ended_at")?,
        "trial_end": time(d, "trial_end")?,
        "custom_id": null,
        "metadata": d.object(&p("metadata")),
        "changed_fields": changed_fields,
        "livemode": d.bool("/livemode"),
    });
    Ok((
        event_type,
        format!("subscriptions/{id}"),
        data,
        ordering_key(Some(id), "subscription", id),
    ))
}

fn checkout(d: Doc<'_>) -> Result<Parts, Invalid> {
    let id = d.req_str(&p("id"))?;
    let currency = d.str(&p("currency")).filter(|c| !c.is_empty());
    let subscription = d.str(&p("subscription")).filter(|s| !s.is_empty());
    let customer_email = match d.non_empty(&p("customer_details/email")) {
        Value::Null => d.non_empty(&p("customer_email")),
        email => email,
    };
    let data = json!({
        "session_id": id,
        "mode": d.req_str(&p("mode"))?,
        "status": d.non_empty(&p("status")),
        "payment_status": d.non_empty(&p("payment_status")),
        "customer_id": d.non_empty(&p("customer")),
        "customer_email": customer_email,
        "subscription_id": subscription,
        "invoice_id": d.non_empty(&p("invoice")),
        "client_reference_id": d.non_empty(&p("client_reference_id")),
        "amount_total": amount(d, "amount_total", currency)?,
        "amount_subtotal": amount(d, "amount_subtotal", currency)?,
        "metadata": d.object(&p("metadata")),
        "livemode": d.bool("/livemode"),
    });
    Ok((
        types::PAYMENTS_CHECKOUT_COMPLETED,
        format!("checkout_sessions/{id}"),
        data,
        ordering_key(subscription, "checkout", id),
    ))
}
