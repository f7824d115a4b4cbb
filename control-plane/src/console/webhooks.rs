//! A tenant's subscriptions ("webhooks"): their state, zones and purchase-valid-until; creating
//! one with event types grouped by zone (the zones not bought shown disabled, with why); stop,
//! resume, delete; the share secret (for an ed25519 webhook, its public key alone) revealed only
//! on an explicit click (a POST, never a URL) and changed with or without a grace period; and a
//! test event whose answer is shown.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::Response;
use hookplane_proto::topics::TOPICS;
use hookplane_proto::v1::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, GetSubscriptionRequest, GetTenantRequest,
    ListSubscriptionsRequest, ResumeSubscriptionRequest, RevealSecretRequest, RotateSecretRequest,
    SendTestEventRequest, SendTestEventResponse, SignatureScheme, StopSubscriptionRequest,
    Subscription, SubscriptionState, TargetHealth, Tenant, Zone,
};
use maud::{Markup, html};

use super::channels::{grace_of, grace_select};
use super::layout::{self, confirmation, csrf_field, error_box};
use super::start::zone_name;
use super::text::{Text, fill};
use super::{Visit, api, fields, health};

/// What a POST left to show on one subscription's card, or the create form's refusal.
enum Outcome {
    /// The share secret (or an ed25519 subscription's public key), shown on this answer only.
    Secret {
        webhook: String,
        secret: String,
        public_key: String,
        previous_until: Option<prost_types::Timestamp>,
        rotated: bool,
    },
    Test {
        webhook: String,
        event_type: String,
        answer: SendTestEventResponse,
    },
    Refused {
        webhook: String,
        error: String,
    },
    CreateRefused {
        input: CreateInput,
        error: String,
    },
}

#[derive(Default)]
struct CreateInput {
    name: String,
    url: String,
    event_types: Vec<String>,
    scheme: String,
}

pub async fn webhooks_page(visit: Visit, Path(tenant): Path<String>) -> Response {
    webhooks(&visit, &tenant, None).await
}

async fn webhooks(visit: &Visit, tenant_id: &str, outcome: Option<Outcome>) -> Response {
    let t = visit.t;
    let api = &visit.api;
    let tenant = match api
        .tenants()
        .get_tenant(api.call(GetTenantRequest {
            id: tenant_id.to_owned(),
        }))
        .await
    {
        Ok(tenant) => tenant.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let listed = match api
        .subscriptions()
        .list_subscriptions(api.call(ListSubscriptionsRequest {
            tenant_id: tenant_id.to_owned(),
            page_size: 1000,
            page_token: String::new(),
        }))
        .await
    {
        Ok(listed) => listed.into_inner().subscriptions,
        Err(status) => return visit.failed(&status),
    };
    let mut healths = Vec::with_capacity(listed.len());
    for sub in &listed {
        healths.push(health::of(visit, "", &sub.id).await);
    }
    let active = listed
        .iter()
        .filter(|s| s.state == SubscriptionState::Active as i32)
        .count();
    let max_active = tenant
        .entitlements
        .as_ref()
        .and_then(|e| e.max_active_subscriptions)
        .unwrap_or(3);
    let create_input = match &outcome {
        Some(Outcome::CreateRefused { input, .. }) => Some(input),
        _ => None,
    };
    let create_error = match &outcome {
        Some(Outcome::CreateRefused { error, .. }) => Some(error.as_str()),
        _ => None,
    };
    let body = html! {
        p { (fill(t.webhooks_active, &[&active.to_string(), &max_active.to_string()])) }
        @if listed.is_empty() { p.muted { (t.webhooks_none) } }
        @for (sub, health) in listed.iter().zip(&healths) { (card(visit, sub, health.as_ref(), outcome.as_ref())) }
        section.card {
            h2 { (t.webhook_create) }
            (create_form(visit, &tenant, create_input, create_error))
        }
    };
    let title = fill(t.webhooks_title, &[&tenant.display_name]);
    let refused = matches!(
        outcome,
        Some(Outcome::Refused { .. } | Outcome::CreateRefused { .. })
    );
    if refused {
        visit.refused_form(&title, body)
    } else {
        visit.page(&title, body)
    }
}

fn card(
    visit: &Visit,
    sub: &Subscription,
    health: Option<&TargetHealth>,
    outcome: Option<&Outcome>,
) -> Markup {
    let t = visit.t;
    let id = &sub.id;
    let stopped = sub.state == SubscriptionState::Stopped as i32;
    let action = |what: &str| format!("/webhooks/{id}/{what}");
    let error = match outcome {
        Some(Outcome::Refused { webhook, error }) if webhook == id => Some(error.as_str()),
        _ => None,
    };
    html! {
        section.card id=(id) {
            h2 { (sub.name) " " span.muted { (id) } }
            p {
                @if stopped { span.badge.bad { (t.webhook_stopped) } } @else { span.badge.ok { (t.webhook_active) } }
                @if sub.stopped_by_system { " " span.badge.bad { (t.webhook_stopped_by_system) } }
                @if let Some(health) = health { " " (health::counts(t, health)) }
            }
            @if !sub.state_reason.is_empty() { p.why { (sub.state_reason) } }
            dl {
                dt { (t.webhook_url) } dd { code.url { (sub.url) } }
                dt { (t.webhook_event_types) }
                dd { @for (i, et) in sub.event_types.iter().enumerate() {
                    @if i > 0 { ", " }
                    (t.topic_name(et))
                    @if let Some(zone) = hookplane_proto::topics::zone_of(et) { span.muted { " (" (zone_name(t, zone as i32)) ")" } }
                } }
                dt { (t.webhook_valid_until) } dd { (layout::time(sub.valid_until.as_ref())) }
                dt { (t.webhook_scheme) } dd { (scheme_name(t, sub.signature_scheme)) }
            }
            (error_box(error))
            div.actions {
                form method="post" action=(action(if stopped { "resume" } else { "stop" })) {
                    (csrf_field(&visit.session))
                    button.secondary type="submit" { (if stopped { t.webhook_resume } else { t.webhook_stop }) }
                }
                a href=(format!("/webhooks/{id}/attempts")) { (t.nav_attempts) }
                form method="post" action=(action("delete")) {
                    (csrf_field(&visit.session))
                    button.danger type="submit" { (t.delete) }
                }
            }
            h3 { (t.webhook_secret) }
            @match outcome {
                Some(Outcome::Secret { webhook, secret, public_key, previous_until, rotated }) if webhook == id => {
                    @if *rotated { p role="status" { (t.webhook_secret_changed) } }
                    @if public_key.is_empty() {
                        p { code.secret data-secret { (secret) } }
                    } @else {
                        p.why { (t.webhook_public_key) }
                        p { code.secret data-public-key { (public_key) } }
                    }
                    @if let Some(until) = previous_until {
                        p.why { (fill(t.previous_secret_until, &[&layout::time(Some(until))])) }
                    }
                }
                _ => {
                    form method="post" action=(action("reveal")) {
                        (csrf_field(&visit.session))
                        button.secondary type="submit" {
                            (if sub.signature_scheme == SignatureScheme::StandardWebhooksEd25519 as i32 { t.webhook_reveal_public_key } else { t.webhook_reveal })
                        }
                    }
                }
            }
            details {
                summary { (t.webhook_change_secret) }
                form method="post" action=(action("rotate")) {
                    (csrf_field(&visit.session))
                    (grace_select(t, &format!("{id}-grace")))
                    p.why { (t.webhook_change_secret_hint) }
                    div.actions { button type="submit" { (t.webhook_change_secret_button) } }
                }
            }
            h3 { (t.webhook_test) }
            form method="post" action=(action("test")) {
                (csrf_field(&visit.session))
                div.row {
                    div {
                        label for=(format!("{id}-event-type")) { (t.webhook_test_type) }
                        select id=(format!("{id}-event-type")) name="event_type" {
                            @for et in &sub.event_types { option value=(et) { (t.topic_name(et)) } }
                        }
                    }
                    div.narrow { button type="submit" { (t.webhook_test_button) } }
                }
            }
            @if let Some(Outcome::Test { webhook, event_type, answer }) = outcome && webhook == id {
                (test_result(t, event_type, answer))
            }
        }
    }
}

fn test_result(t: &Text, event_type: &str, answer: &SendTestEventResponse) -> Markup {
    let latency = answer
        .latency
        .map(|d| {
            let millis = d.seconds * 1000 + i64::from(d.nanos) / 1_000_000;
            fill(t.milliseconds, &[&millis.to_string()])
        })
        .unwrap_or_default();
    html! {
        div.card.test-result role="status" {
            p {
                @if answer.success { span.badge.ok { (t.test_succeeded) } } @else { span.badge.bad { (t.test_failed) } }
                " " (t.topic_name(event_type))
            }
            dl {
                dt { (t.test_status) }
                dd.test-status { @if answer.http_status == 0 { (t.test_no_answer) } @else { (answer.http_status) } }
                dt { (t.test_latency) } dd { (latency) }
                @if !answer.failure_reason.is_empty() {
                    dt { (t.test_reason) } dd.bad { (answer.failure_reason) }
                }
                dt { (t.test_event_id) } dd { (answer.event_id) }
            }
            p { strong { (t.test_answer) } }
            @if answer.response_body.is_empty() {
                p.muted { (t.test_empty_answer) }
            } @else {
                pre { (answer.response_body) }
            }
        }
    }
}

fn scheme_name(t: &Text, scheme: i32) -> &'static str {
    match SignatureScheme::try_from(scheme) {
        Ok(SignatureScheme::StandardWebhooks) => t.scheme_standard,
        Ok(SignatureScheme::Both) => t.scheme_both,
        Ok(SignatureScheme::StandardWebhooksEd25519) => t.scheme_standard_ed25519,
        _ => t.scheme_maac,
    }
}

/// Why a zone's event types cannot be chosen now, or `None` when they can.
fn zone_unavailable(t: &Text, tenant: &Tenant, zone: Zone) -> Option<String> {
    let bought = tenant
        .entitlements
        .as_ref()
        .and_then(|e| e.zones.iter().find(|z| z.zone == zone as i32));
    let Some(bought) = bought else {
        return Some(fill(t.zone_not_bought, &[zone_name(t, zone as i32)]));
    };
    let until = bought
        .valid_until
        .and_then(|at| SystemTime::try_from(at).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if until <= SystemTime::now() {
        return Some(fill(
            t.zone_expired,
            &[
                zone_name(t, zone as i32),
                &layout::time(bought.valid_until.as_ref()),
            ],
        ));
    }
    None
}

fn create_form(
    visit: &Visit,
    tenant: &Tenant,
    input: Option<&CreateInput>,
    error: Option<&str>,
) -> Markup {
    let t = visit.t;
    let empty = CreateInput::default();
    let input = input.unwrap_or(&empty);
    html! {
        form method="post" action=(format!("/tenants/{}/webhooks", tenant.id)) {
            (csrf_field(&visit.session))
            label for="webhook-name" { (t.webhook_name) }
            input type="text" id="webhook-name" name="name" value=(input.name) required;
            label for="webhook-url" { (t.webhook_url) }
            input type="url" id="webhook-url" name="url" value=(input.url) placeholder="https://" required;
            @for zone in [Zone::Zone1, Zone::Zone2] {
                @let why = zone_unavailable(t, tenant, zone);
                fieldset {
                    legend { (zone_name(t, zone as i32)) }
                    @if let Some(why) = &why { p.why { (why) } }
                    @for topic in TOPICS.iter().filter(|topic| topic.zone == zone) {
                        span.choice {
                            input type="checkbox" id=(format!("type-{}", topic.name)) name="event_types" value=(topic.name)
                                checked[input.event_types.iter().any(|e| e == topic.name)]
                                disabled[why.is_some()];
                            " "
                            label for=(format!("type-{}", topic.name)) {
                                (t.topic_name(topic.name)) " " span.muted { "(" (topic.name) ")" }
                            }
                        }
                    }
                }
            }
            label for="webhook-scheme" { (t.webhook_scheme) }
            select id="webhook-scheme" name="scheme" {
                option value="maac" selected[!["standard", "both", "ed25519"].contains(&input.scheme.as_str())] { (t.scheme_maac) }
                option value="standard" selected[input.scheme == "standard"] { (t.scheme_standard) }
                option value="both" selected[input.scheme == "both"] { (t.scheme_both) }
                option value="ed25519" selected[input.scheme == "ed25519"] { (t.scheme_standard_ed25519) }
            }
            (error_box(error))
            div.actions { button type="submit" { (t.webhook_create_button) } }
        }
    }
}

pub async fn create_webhook(visit: Visit, Path(tenant): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let form = fields(&body);
    let input = CreateInput {
        name: form.get("name").to_owned(),
        url: form.get("url").to_owned(),
        event_types: form.all("event_types"),
        scheme: form.get("scheme").to_owned(),
    };
    let scheme = match input.scheme.as_str() {
        "standard" => SignatureScheme::StandardWebhooks,
        "both" => SignatureScheme::Both,
        "ed25519" => SignatureScheme::StandardWebhooksEd25519,
        _ => SignatureScheme::Maac,
    };
    let created = visit
        .api
        .subscriptions()
        .create_subscription(visit.api.call(CreateSubscriptionRequest {
            tenant_id: tenant.clone(),
            subscription: Some(Subscription {
                name: input.name.clone(),
                url: input.url.clone(),
                event_types: input.event_types.clone(),
                signature_scheme: scheme as i32,
                ..Default::default()
            }),
        }))
        .await;
    match created {
        Ok(created) => {
            let created = created.into_inner();
            visit.done(
                &format!("/tenants/{tenant}/webhooks#{}", created.id),
                fill(t.webhook_created, &[&created.name]),
            )
        }
        Err(status) => {
            let error = api::readable(t, &status);
            webhooks(
                &visit,
                &tenant,
                Some(Outcome::CreateRefused { input, error }),
            )
            .await
        }
    }
}

/// One action on a subscription's card.
pub async fn act(
    visit: Visit,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
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
    let tenant = sub.tenant_id.clone();
    let back = format!("/tenants/{tenant}/webhooks#{id}");
    let form = fields(&body);
    let mut subs = api.subscriptions();
    let outcome = match action.as_str() {
        "stop" => subs
            .stop_subscription(api.call(StopSubscriptionRequest { id: id.clone() }))
            .await
            .map(|_| None),
        "resume" => subs
            .resume_subscription(api.call(ResumeSubscriptionRequest { id: id.clone() }))
            .await
            .map(|_| None),
        "delete" => {
            if form.get("confirm") != "yes" {
                return visit.page(
                    t.confirm_title,
                    confirmation(
                        t,
                        &visit.session,
                        &fill(t.webhook_delete_question, &[&sub.name, &sub.url]),
                        &format!("/webhooks/{id}/delete"),
                        &[],
                        &back,
                    ),
                );
            }
            subs.delete_subscription(api.call(DeleteSubscriptionRequest { id: id.clone() }))
                .await
                .map(|_| None)
        }
        "reveal" => subs
            .reveal_secret(api.call(RevealSecretRequest { id: id.clone() }))
            .await
            .map(|r| {
                let r = r.into_inner();
                Some(Outcome::Secret {
                    webhook: id.clone(),
                    secret: r.secret,
                    public_key: r.public_key,
                    previous_until: r.previous_secret_valid_until,
                    rotated: false,
                })
            }),
        "rotate" => subs
            .rotate_secret(api.call(RotateSecretRequest {
                id: id.clone(),
                grace_period: grace_of(form.get("grace")),
            }))
            .await
            .map(|r| {
                let r = r.into_inner();
                Some(Outcome::Secret {
                    webhook: id.clone(),
                    secret: r.secret,
                    public_key: r.public_key,
                    previous_until: r.previous_secret_valid_until,
                    rotated: true,
                })
            }),
        "test" => {
            let event_type = form.get("event_type").to_owned();
            subs.send_test_event(api.call(SendTestEventRequest {
                id: id.clone(),
                event_type: event_type.clone(),
            }))
            .await
            .map(|r| {
                Some(Outcome::Test {
                    webhook: id.clone(),
                    event_type,
                    answer: r.into_inner(),
                })
            })
        }
        _ => return visit.failed(&tonic::Status::not_found(t.error_no_such_action)),
    };
    match outcome {
        // Stop, resume, delete: back to the list with a message.
        Ok(None) => {
            let said = match action.as_str() {
                "stop" => t.webhook_stopped_message,
                "resume" => t.webhook_resumed_message,
                _ => t.webhook_deleted_message,
            };
            visit.done(&back, fill(said, &[&sub.name]))
        }
        // A secret or a test's answer is shown in this answer only, never kept for later.
        Ok(Some(shown)) => webhooks(&visit, &tenant, Some(shown)).await,
        Err(status) => {
            let error = api::readable(t, &status);
            webhooks(
                &visit,
                &tenant,
                Some(Outcome::Refused { webhook: id, error }),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::{Entitlements, ZoneEntitlement};

    use std::time::Duration;

    use super::*;
    use crate::console::text::ENGLISH;

    fn tenant_with(zones: Vec<ZoneEntitlement>) -> Tenant {
        Tenant {
            entitlements: Some(Entitlements {
                zones,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_zone_not_bought_says_so() {
        let why = zone_unavailable(&ENGLISH, &tenant_with(vec![]), Zone::Zone2).unwrap();
        assert!(why.contains("Zone 2"), "{why}");
        assert!(why.contains("not bought"), "{why}");
    }

    #[test]
    fn an_expired_zone_says_when_it_ended() {
        let ended = prost_types::Timestamp {
            seconds: 1_000_000_000,
            nanos: 0,
        };
        let why = zone_unavailable(
            &ENGLISH,
            &tenant_with(vec![ZoneEntitlement {
                zone: Zone::Zone1 as i32,
                valid_until: Some(ended),
            }]),
            Zone::Zone1,
        )
        .unwrap();
        assert!(why.contains("2001-09-09"), "{why}");
    }

    #[test]
    fn a_zone_bought_until_later_is_available() {
        let later = prost_types::Timestamp::from(SystemTime::now() + Duration::from_secs(86_400));
        let tenant = tenant_with(vec![ZoneEntitlement {
            zone: Zone::Zone1 as i32,
            valid_until: Some(later),
        }]);
        assert!(zone_unavailable(&ENGLISH, &tenant, Zone::Zone1).is_none());
    }
}
