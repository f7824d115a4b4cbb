//! Sign-in and sign-out, the start page (the tenants the token sees, each with its pages one
//! click away), a tenant's settings (notification emails, zones and their valid-until), and its
//! notifications.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hookplane_proto::v1::{
    Entitlements, ListNotificationsRequest, ListTenantsRequest, NotificationState, Tenant, Zone,
    ZoneEntitlement,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, csrf_field, error_box};
use super::session::{self, ABSOLUTE_LIMIT, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::text::{Text, fill};
use super::{Console, Visit, api, cookie_header, fields, over_tls};

/// How long a sign-in form stays usable.
const SIGN_IN_FORM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

pub async fn sign_in_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let signed_in = session::cookie(cookie_header(&headers), SESSION_COOKIE)
        .and_then(|id| console.sessions.find(id))
        .is_some();
    if signed_in {
        return Redirect::to("/").into_response();
    }
    sign_in_form(&console, &headers, None, StatusCode::OK)
}

/// The sign-in form with a fresh double-submit CSRF value. The token field is never filled in.
fn sign_in_form(
    console: &Console,
    headers: &HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let t = console.text;
    let csrf = session::random_token();
    let body = html! {
        div.card {
            p { (t.sign_in_intro) }
            form method="post" action="/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { (t.sign_in_token) }
                input type="password" id="token" name="token" autocomplete="off" required autofocus;
                (error_box(error))
                div.actions { button type="submit" { (t.sign_in) } }
            }
        }
    };
    let cookie = session::set_cookie(
        SIGN_IN_COOKIE,
        &csrf,
        SIGN_IN_FORM_LIFETIME,
        over_tls(headers),
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        layout::page(t, t.sign_in_title, None, None, body),
    )
        .into_response()
}

/// Checks the token against the API (it must be able to list tenants) and starts a session.
pub async fn sign_in(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let t = console.text;
    let form = fields(&body);
    let token = form.get("token").to_owned();
    if token.is_empty() {
        return sign_in_form(
            &console,
            &headers,
            Some(t.sign_in_empty),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let api = api::Api::new(console.grpc.clone(), &token);
    let checked = api
        .tenants()
        .list_tenants(api.call(ListTenantsRequest {
            page_size: 1,
            page_token: String::new(),
        }))
        .await;
    if let Err(status) = checked {
        let message = match status.code() {
            tonic::Code::Unauthenticated => t.sign_in_refused.to_owned(),
            tonic::Code::PermissionDenied => t.sign_in_not_admin.to_owned(),
            _ => api::readable(t, &status),
        };
        return sign_in_form(&console, &headers, Some(&message), StatusCode::UNAUTHORIZED);
    }
    let id = console.sessions.start(token);
    let secure = over_tls(&headers);
    let mut response = Redirect::to("/").into_response();
    let set = response.headers_mut();
    for cookie in [
        session::set_cookie(SESSION_COOKIE, &id, ABSOLUTE_LIMIT, secure),
        session::set_cookie(SIGN_IN_COOKIE, "", std::time::Duration::ZERO, secure),
    ] {
        if let Ok(value) = cookie.parse() {
            set.append(header::SET_COOKIE, value);
        }
    }
    response
}

pub async fn sign_out(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = session::cookie(cookie_header(&headers), SESSION_COOKIE) {
        console.sessions.end(id);
    }
    let cookie = session::set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
        over_tls(&headers),
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response()
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page: String,
}

/// The tenants this token sees (a tenant admin: its own), each with links to its pages, and
/// the form to add one (the API refuses it to anyone but an operator).
pub async fn start_page(visit: Visit, Query(query): Query<PageQuery>) -> Response {
    start(&visit, &query.page, &TenantInput::default(), None).await
}

async fn start(visit: &Visit, page: &str, input: &TenantInput, error: Option<&str>) -> Response {
    let t = visit.t;
    let listed = visit
        .api
        .tenants()
        .list_tenants(visit.api.call(ListTenantsRequest {
            page_size: 100,
            page_token: page.to_owned(),
        }))
        .await;
    let listed = match listed {
        Ok(listed) => listed.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let body = html! {
        @if listed.tenants.is_empty() {
            p.muted { (t.tenants_none) }
        }
        @for tenant in &listed.tenants {
            section.card {
                h2 { (tenant.display_name) " " span.muted { (tenant.id) } }
                (zones_summary(t, tenant))
                nav.actions {
                    a href=(format!("/tenants/{}/channels", tenant.id)) { (t.nav_channels) }
                    a href=(format!("/tenants/{}/webhooks", tenant.id)) { (t.nav_webhooks) }
                    a href=(format!("/tenants/{}/notifications", tenant.id)) { (t.nav_notifications) }
                    a href=(format!("/tenants/{}", tenant.id)) { (t.nav_tenant_settings) }
                }
            }
        }
        @if !listed.next_page_token.is_empty() {
            p { a href=(format!("/?page={}", listed.next_page_token)) { (t.next_page) } }
        }
        section.card {
            h2 { (t.tenant_create) }
            (tenant_form(visit, "/tenants", input, error, t.tenant_create_button))
        }
    };
    let response = visit.page(t.start_title, body);
    if error.is_some() {
        (StatusCode::UNPROCESSABLE_ENTITY, response).into_response()
    } else {
        response
    }
}

fn zones_summary(t: &Text, tenant: &Tenant) -> Markup {
    let zones = tenant
        .entitlements
        .as_ref()
        .map(|e| e.zones.as_slice())
        .unwrap_or_default();
    html! {
        p {
            @if zones.is_empty() { span.muted { (t.zones_none) } }
            @for zone in zones {
                span.badge { (zone_name(t, zone.zone)) " · " (fill(t.valid_until, &[&layout::time(zone.valid_until.as_ref())])) }
                " "
            }
        }
    }
}

pub fn zone_name(t: &Text, zone: i32) -> &'static str {
    match Zone::try_from(zone) {
        Ok(Zone::Zone1) => t.zone_1,
        Ok(Zone::Zone2) => t.zone_2,
        _ => t.zone_unknown,
    }
}

/// A tenant form's values as typed, so a refused form comes back as it was.
#[derive(Default)]
struct TenantInput {
    display_name: String,
    emails: String,
    zone_1: String,
    zone_2: String,
}

impl TenantInput {
    fn of(tenant: &Tenant) -> TenantInput {
        let until = |zone: Zone| {
            tenant
                .entitlements
                .as_ref()
                .and_then(|e| e.zones.iter().find(|z| z.zone == zone as i32))
                .map(|z| layout::date_value(z.valid_until.as_ref()))
                .unwrap_or_default()
        };
        TenantInput {
            display_name: tenant.display_name.clone(),
            emails: tenant.notification_emails.join("\n"),
            zone_1: until(Zone::Zone1),
            zone_2: until(Zone::Zone2),
        }
    }

    fn from_form(body: &Bytes) -> TenantInput {
        let form = fields(body);
        TenantInput {
            display_name: form.get("display_name").to_owned(),
            emails: form.get("emails").to_owned(),
            zone_1: form.get("zone_1").to_owned(),
            zone_2: form.get("zone_2").to_owned(),
        }
    }

    /// The tenant this input describes; a date that is not one is named.
    fn to_tenant(&self, t: &Text, mut entitlements: Entitlements) -> Result<Tenant, String> {
        let mut zones = Vec::new();
        for (zone, value) in [(Zone::Zone1, &self.zone_1), (Zone::Zone2, &self.zone_2)] {
            if value.is_empty() {
                continue;
            }
            let until = layout::parse_date(value)
                .ok_or_else(|| fill(t.tenant_bad_date, &[zone_name(t, zone as i32)]))?;
            zones.push(ZoneEntitlement {
                zone: zone as i32,
                valid_until: Some(until),
            });
        }
        entitlements.zones = zones;
        Ok(Tenant {
            display_name: self.display_name.clone(),
            notification_emails: self
                .emails
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect(),
            entitlements: Some(entitlements),
            ..Default::default()
        })
    }
}

fn tenant_form(
    visit: &Visit,
    action: &str,
    input: &TenantInput,
    error: Option<&str>,
    button: &str,
) -> Markup {
    let t = visit.t;
    // `/tenants` → `tenant-new-name`, `/tenants/tnt_x` → `tenant-tnt_x-name`.
    let prefix = match action.strip_prefix("/tenants/") {
        Some(id) => format!("tenant-{id}"),
        None => "tenant-new".to_owned(),
    };
    let id = |name: &str| format!("{prefix}-{name}");
    html! {
        form method="post" action=(action) {
            (csrf_field(&visit.session))
            label for=(id("name")) { (t.tenant_name) }
            input type="text" id=(id("name")) name="display_name" value=(input.display_name) required;
            label for=(id("emails")) { (t.tenant_emails) }
            textarea id=(id("emails")) name="emails" rows="2" { (input.emails) }
            div.row {
                div {
                    label for=(id("zone1")) { (t.tenant_zone_1_until) }
                    input type="date" id=(id("zone1")) name="zone_1" value=(input.zone_1);
                }
                div {
                    label for=(id("zone2")) { (t.tenant_zone_2_until) }
                    input type="date" id=(id("zone2")) name="zone_2" value=(input.zone_2);
                }
            }
            p.why { (t.tenant_zone_hint) }
            (error_box(error))
            div.actions { button type="submit" { (button) } }
        }
    }
}

pub async fn create_tenant(visit: Visit, body: Bytes) -> Response {
    let t = visit.t;
    let input = TenantInput::from_form(&body);
    let tenant = match input.to_tenant(t, Entitlements::default()) {
        Ok(tenant) => tenant,
        Err(problem) => return start(&visit, "", &input, Some(&problem)).await,
    };
    let created = visit
        .api
        .tenants()
        .create_tenant(visit.api.call(hookplane_proto::v1::CreateTenantRequest {
            tenant: Some(tenant),
        }))
        .await;
    match created {
        Ok(created) => {
            let created = created.into_inner();
            visit.done("/", fill(t.tenant_created, &[&created.display_name]))
        }
        Err(status) => start(&visit, "", &input, Some(&api::readable(t, &status))).await,
    }
}

async fn fetch_tenant(visit: &Visit, id: &str) -> Result<Tenant, Response> {
    visit
        .api
        .tenants()
        .get_tenant(
            visit
                .api
                .call(hookplane_proto::v1::GetTenantRequest { id: id.to_owned() }),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| visit.failed(&status))
}

pub async fn tenant_page(visit: Visit, Path(tenant): Path<String>) -> Response {
    let tenant = match fetch_tenant(&visit, &tenant).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    tenant_settings(&visit, &tenant, &TenantInput::of(&tenant), None)
}

fn tenant_settings(
    visit: &Visit,
    tenant: &Tenant,
    input: &TenantInput,
    error: Option<&str>,
) -> Response {
    let t = visit.t;
    let action = format!("/tenants/{}", tenant.id);
    let body = html! {
        p.muted { (tenant.id) }
        section.card {
            (tenant_form(visit, &action, input, error, t.save))
        }
    };
    let title = fill(t.tenant_settings_title, &[&tenant.display_name]);
    if error.is_some() {
        visit.refused_form(&title, body)
    } else {
        visit.page(&title, body)
    }
}

pub async fn update_tenant(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let current = match fetch_tenant(&visit, &id).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let input = TenantInput::from_form(&body);
    // The limits are not on this form: they are sent back as they are.
    let mut tenant = match input.to_tenant(t, current.entitlements.clone().unwrap_or_default()) {
        Ok(tenant) => tenant,
        Err(problem) => return tenant_settings(&visit, &current, &input, Some(&problem)),
    };
    tenant.id = id.clone();
    let updated = visit
        .api
        .tenants()
        .update_tenant(visit.api.call(hookplane_proto::v1::UpdateTenantRequest {
            tenant: Some(tenant),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "display_name".into(),
                    "notification_emails".into(),
                    "entitlements".into(),
                ],
            }),
        }))
        .await;
    match updated {
        Ok(_) => visit.done(&format!("/tenants/{id}"), t.saved.to_owned()),
        Err(status) => tenant_settings(&visit, &current, &input, Some(&api::readable(t, &status))),
    }
}

/// The failure reminders and other emails of a tenant, newest first, with their state.
pub async fn notifications_page(
    visit: Visit,
    Path(tenant): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let t = visit.t;
    let listed = visit
        .api
        .notifications()
        .list_notifications(visit.api.call(ListNotificationsRequest {
            tenant_id: tenant.clone(),
            page_size: 50,
            page_token: query.page.clone(),
        }))
        .await;
    let listed = match listed {
        Ok(listed) => listed.into_inner(),
        Err(status) => return visit.failed(&status),
    };
    let body = html! {
        @if listed.notifications.is_empty() {
            p.muted { (t.notifications_none) }
        }
        @for n in &listed.notifications {
            section.card {
                h3 { (n.subject) }
                dl {
                    dt { (t.notification_state) }
                    dd { (notification_state(t, n.state)) }
                    dt { (t.notification_kind) } dd { (n.kind) }
                    dt { (t.notification_to) } dd { (n.recipients.join(", ")) }
                    dt { (t.notification_created) } dd { (layout::time(n.create_time.as_ref())) }
                    @if n.sent_time.is_some() {
                        dt { (t.notification_sent) } dd { (layout::time(n.sent_time.as_ref())) }
                    }
                    @if !n.last_error.is_empty() {
                        dt { (t.notification_error) } dd.bad { (n.last_error) }
                    }
                }
                details {
                    summary { (t.notification_body) }
                    pre { (n.body_text) }
                }
            }
        }
        @if !listed.next_page_token.is_empty() {
            p { a href=(format!("/tenants/{tenant}/notifications?page={}", listed.next_page_token)) { (t.next_page) } }
        }
    };
    visit.page(t.notifications_title, body)
}

fn notification_state(t: &Text, state: i32) -> Markup {
    match NotificationState::try_from(state) {
        Ok(NotificationState::Queued) => html! { span.badge { (t.notification_queued) } },
        Ok(NotificationState::Sent) => html! { span.badge.ok { (t.notification_sent_state) } },
        Ok(NotificationState::Logged) => html! { span.badge.muted { (t.notification_logged) } },
        Ok(NotificationState::Undeliverable) => {
            html! { span.badge.bad { (t.notification_undeliverable) } }
        }
        _ => html! { span.badge { "?" } },
    }
}
