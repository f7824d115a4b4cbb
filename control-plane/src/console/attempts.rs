//! The delivery attempts of a forwarding set or a subscription: newest first, filtered by
//! outcome, with their failure reasons as the API words them (`404 Not Found`, `remote network
//! error`) and a retry button on deliveries that failed for good; above them, the target's last
//! 24 hours as counts and a chart.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::response::Response;
use hookplane_proto::v1::{
    AttemptOutcome, DeliveryAttempt, GetChannelRequest, GetForwardingSetRequest,
    GetSubscriptionRequest, ListDeliveryAttemptsRequest, RetryDeliveryRequest,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, csrf_field};
use super::text::{Text, fill};
use super::{Visit, api, fields, health};

/// Attempts shown on one page.
const SHOWN: usize = 100;
/// Attempts read at most to find [`SHOWN`] of one outcome (the default retention keeps 1000).
const SCANNED: usize = 2000;

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    outcome: String,
}

impl Filter {
    fn wanted(&self) -> Option<AttemptOutcome> {
        match self.outcome.as_str() {
            "succeeded" => Some(AttemptOutcome::Succeeded),
            "retrying" => Some(AttemptOutcome::Retrying),
            "failed" => Some(AttemptOutcome::Failed),
            _ => None,
        }
    }
}

/// The attempts of one target (exactly one of the two ids set), newest first, of the wanted
/// outcome; at most [`SHOWN`].
async fn attempts_of(
    visit: &Visit,
    set: &str,
    subscription: &str,
    wanted: Option<AttemptOutcome>,
) -> Result<Vec<DeliveryAttempt>, tonic::Status> {
    let mut shown = Vec::new();
    let mut scanned = 0;
    let mut page_token = String::new();
    loop {
        let page = visit
            .api
            .deliveries()
            .list_delivery_attempts(visit.api.call(ListDeliveryAttemptsRequest {
                forwarding_set_id: set.to_owned(),
                subscription_id: subscription.to_owned(),
                page_size: 500,
                page_token: page_token.clone(),
            }))
            .await?
            .into_inner();
        scanned += page.attempts.len();
        shown.extend(
            page.attempts
                .into_iter()
                .filter(|a| wanted.is_none_or(|w| a.outcome == w as i32)),
        );
        if shown.len() >= SHOWN || page.next_page_token.is_empty() || scanned >= SCANNED {
            shown.truncate(SHOWN);
            return Ok(shown);
        }
        page_token = page.next_page_token;
    }
}

pub async fn set_attempts_page(
    visit: Visit,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let t = visit.t;
    let api = &visit.api;
    let set = match api
        .forwarding()
        .get_forwarding_set(api.call(GetForwardingSetRequest { id: id.clone() }))
        .await
    {
        Ok(set) => set.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let channel = match api
        .channels()
        .get_channel(api.call(GetChannelRequest {
            id: set.channel_id.clone(),
        }))
        .await
    {
        Ok(channel) => channel.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let attempts = match attempts_of(&visit, &id, "", filter.wanted()).await {
        Ok(attempts) => attempts,
        Err(status) => return visit.failed(&status),
    };
    let health = health::of(&visit, &id, "").await;
    let here = format!("/forwarding-sets/{id}/attempts");
    let body = html! {
        p { a href=(format!("/tenants/{}/channels#{}", channel.tenant_id, channel.id)) { (fill(t.back_to_channels, &[&channel.display_name])) } }
        p { code.url { (set.url) } }
        @if let Some(health) = &health { (health::chart(t, health)) }
        (attempt_list(&visit, &here, &filter, &attempts))
    };
    visit.page(&fill(t.attempts_title, &[&set.name]), body)
}

pub async fn webhook_attempts_page(
    visit: Visit,
    Path(id): Path<String>,
    Query(filter): Query<Filter>,
) -> Response {
    let t = visit.t;
    let api = &visit.api;
    let sub = match api
        .subscriptions()
        .get_subscription(api.call(GetSubscriptionRequest { id: id.clone() }))
        .await
    {
        Ok(sub) => sub.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let attempts = match attempts_of(&visit, "", &id, filter.wanted()).await {
        Ok(attempts) => attempts,
        Err(status) => return visit.failed(&status),
    };
    let health = health::of(&visit, "", &id).await;
    let here = format!("/webhooks/{id}/attempts");
    let body = html! {
        p { a href=(format!("/tenants/{}/webhooks#{id}", sub.tenant_id)) { (t.back_to_webhooks) } }
        p { code.url { (sub.url) } }
        @if let Some(health) = &health { (health::chart(t, health)) }
        (attempt_list(&visit, &here, &filter, &attempts))
    };
    visit.page(&fill(t.attempts_title, &[&sub.name]), body)
}

fn attempt_list(
    visit: &Visit,
    here: &str,
    filter: &Filter,
    attempts: &[DeliveryAttempt],
) -> Markup {
    let t = visit.t;
    html! {
        form.row method="get" action=(here) {
            div {
                label for="outcome" { (t.attempts_filter) }
                select id="outcome" name="outcome" {
                    @for (value, name) in [("", t.outcome_all), ("failed", t.outcome_failed), ("retrying", t.outcome_retrying), ("succeeded", t.outcome_succeeded)] {
                        option value=(value) selected[filter.outcome == value] { (name) }
                    }
                }
            }
            div.narrow { button.secondary type="submit" { (t.attempts_filter_button) } }
        }
        @if attempts.is_empty() {
            p.muted { (t.attempts_none) }
        } @else {
            div.table { table.attempts {
                thead { tr {
                    th { (t.attempt_time) } th { (t.attempt_outcome) } th { (t.attempt_reason) }
                    th { (t.attempt_latency) } th { (t.attempt_answer) } th { (t.actions) }
                } }
                tbody { @for a in attempts { (attempt_row(visit, here, a)) } }
            } }
        }
    }
}

fn outcome_badge(t: &Text, outcome: i32) -> Markup {
    match AttemptOutcome::try_from(outcome) {
        Ok(AttemptOutcome::Succeeded) => html! { span.badge.ok { (t.outcome_succeeded) } },
        Ok(AttemptOutcome::Retrying) => html! { span.badge { (t.outcome_retrying) } },
        Ok(AttemptOutcome::Failed) => html! { span.badge.bad { (t.outcome_failed) } },
        _ => html! { span.badge { "?" } },
    }
}

fn attempt_row(visit: &Visit, here: &str, a: &DeliveryAttempt) -> Markup {
    let t = visit.t;
    let latency = a
        .latency
        .map(|d| {
            let millis = d.seconds * 1000 + i64::from(d.nanos) / 1_000_000;
            fill(t.milliseconds, &[&millis.to_string()])
        })
        .unwrap_or_default();
    html! {
        tr {
            td { (layout::time(a.time.as_ref())) br; span.muted { (fill(t.attempt_number, &[&a.attempt_number.to_string()])) } }
            td { (outcome_badge(t, a.outcome)) }
            td.reason {
                @if a.reason.is_empty() { (a.http_status) } @else { (a.reason) }
            }
            td { (latency) }
            td { @if !a.response_body.is_empty() { code { (a.response_body.chars().take(120).collect::<String>()) } } }
            td {
                @if a.outcome == AttemptOutcome::Failed as i32 {
                    form method="post" action=(format!("/deliveries/{}/retry", a.delivery_id)) {
                        (csrf_field(&visit.session))
                        input type="hidden" name="back" value=(here);
                        button.secondary type="submit" { (t.retry) }
                    }
                }
            }
        }
    }
}

/// Re-enqueues a failed delivery, then back to the attempts page it was asked from.
pub async fn retry(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let form = fields(&body);
    let back = form.get("back");
    // Only back to a page of the console's own (never an address a form could smuggle in).
    let back = if (back.starts_with("/forwarding-sets/") || back.starts_with("/webhooks/"))
        && !back.contains("//")
    {
        back.to_owned()
    } else {
        "/".to_owned()
    };
    match visit
        .api
        .deliveries()
        .retry_delivery(visit.api.call(RetryDeliveryRequest { id: id.clone() }))
        .await
    {
        Ok(_) => visit.done(&back, fill(t.retry_queued, &[&id])),
        Err(status) => visit.done(&back, api::readable(t, &status)),
    }
}
