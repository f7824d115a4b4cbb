//! A tenant's channels and their forwarding sets: the webhook URL to give the LINE Developers
//! console (with a copy button), the channel secret's rotation with a grace period, and each
//! channel's forwarding sets with their limit, enabled state, edit, enable/disable and delete.

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::Response;
use hookplane_proto::v1::{
    Channel, CreateChannelRequest, CreateForwardingSetRequest, DeleteChannelRequest,
    DeleteForwardingSetRequest, ForwardingKind, ForwardingSet, GenesysSettings, GetChannelRequest,
    GetForwardingSetRequest, GetTenantRequest, ListChannelsRequest, ListForwardingSetsRequest,
    RotateChannelSecretRequest, TargetHealth, UpdateForwardingSetRequest,
};
use maud::{Markup, html};

use super::layout::{self, confirmation, copyable, csrf_field, error_box};
use super::text::{Text, fill};
use super::{Visit, api, fields, health};

/// Forwarding sets per channel when the tenant's entitlements do not say.
const DEFAULT_SETS_PER_CHANNEL: u32 = 10;

/// Which form on the channels page a refusal answers, with what was typed (never a secret).
enum Refused {
    CreateChannel {
        name: String,
        error: String,
    },
    Rotate {
        channel: String,
        error: String,
    },
    CreateSet {
        channel: String,
        input: SetInput,
        error: String,
    },
    Page {
        error: String,
    },
}

#[derive(Default, Clone)]
struct SetInput {
    name: String,
    url: String,
    genesys: bool,
    region_domain: String,
    client_id: String,
    integration_id: String,
}

pub async fn channels_page(visit: Visit, Path(tenant): Path<String>) -> Response {
    channels(&visit, &tenant, None).await
}

async fn channels(visit: &Visit, tenant_id: &str, refused: Option<Refused>) -> Response {
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
    let limit = tenant
        .entitlements
        .as_ref()
        .and_then(|e| e.max_forwarding_sets_per_channel)
        .unwrap_or(DEFAULT_SETS_PER_CHANNEL);
    let listed = match api
        .channels()
        .list_channels(api.call(ListChannelsRequest {
            tenant_id: tenant_id.to_owned(),
            page_size: 1000,
            page_token: String::new(),
        }))
        .await
    {
        Ok(listed) => listed.into_inner().channels,
        Err(status) => return visit.failed(&status),
    };
    let mut cards = Vec::with_capacity(listed.len());
    for channel in &listed {
        let sets = match api
            .forwarding()
            .list_forwarding_sets(api.call(ListForwardingSetsRequest {
                channel_id: channel.id.clone(),
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
        {
            Ok(sets) => sets.into_inner().forwarding_sets,
            Err(status) => return visit.failed(&status),
        };
        let mut healths = Vec::with_capacity(sets.len());
        for set in &sets {
            healths.push(health::of(visit, &set.id, "").await);
        }
        let sets: Vec<_> = sets.into_iter().zip(healths).collect();
        cards.push(channel_card(visit, channel, &sets, limit, refused.as_ref()));
    }
    let (create_name, create_error) = match &refused {
        Some(Refused::CreateChannel { name, error }) => (name.as_str(), Some(error.as_str())),
        _ => ("", None),
    };
    let page_error = match &refused {
        Some(Refused::Page { error }) => Some(error.as_str()),
        _ => None,
    };
    let body = html! {
        (error_box(page_error))
        @if listed.is_empty() { p.muted { (t.channels_none) } }
        @for card in cards { (card) }
        section.card {
            h2 { (t.channel_create) }
            form method="post" action=(format!("/tenants/{tenant_id}/channels")) {
                (csrf_field(&visit.session))
                label for="new-channel-name" { (t.channel_name) }
                input type="text" id="new-channel-name" name="display_name" value=(create_name) required;
                label for="new-channel-secret" { (t.channel_secret) }
                input type="password" id="new-channel-secret" name="secret" autocomplete="off" required;
                label for="new-channel-token" { (t.channel_access_token) }
                input type="password" id="new-channel-token" name="access_token" autocomplete="off";
                p.why { (t.secrets_not_kept) }
                (error_box(create_error))
                div.actions { button type="submit" { (t.channel_create_button) } }
            }
        }
    };
    let title = fill(t.channels_title, &[&tenant.display_name]);
    if refused.is_some() {
        visit.refused_form(&title, body)
    } else {
        visit.page(&title, body)
    }
}

/// The public URL of an ingress path, or the path alone when the base URL is not configured.
fn public_url(visit: &Visit, path: &str) -> String {
    match &visit.console.settings.public_ingress_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => path.to_owned(),
    }
}

fn channel_card(
    visit: &Visit,
    channel: &Channel,
    sets: &[(ForwardingSet, Option<TargetHealth>)],
    limit: u32,
    refused: Option<&Refused>,
) -> Markup {
    let t = visit.t;
    let id = &channel.id;
    let rotate_error = match refused {
        Some(Refused::Rotate { channel, error }) if channel == id => Some(error.as_str()),
        _ => None,
    };
    let (set_input, set_error) = match refused {
        Some(Refused::CreateSet {
            channel,
            input,
            error,
        }) if channel == id => (input.clone(), Some(error.as_str())),
        _ => (SetInput::default(), None),
    };
    let full = sets.len() as u32 >= limit;
    html! {
        section.card id=(id) {
            h2 { (channel.display_name) " " span.muted { (id) } }
            p { strong { (t.webhook_url) } br; (copyable(t, &public_url(visit, &channel.ingress_path))) }
            @if visit.console.settings.public_ingress_url.is_none() {
                p.why { (t.webhook_url_path_only) }
            }
            p.why { (t.webhook_url_hint) }
            @if channel.previous_secret_valid_until.is_some() {
                p { (fill(t.previous_secret_until, &[&layout::time(channel.previous_secret_valid_until.as_ref())])) }
            }
            h3 { (fill(t.sets_heading, &[&sets.len().to_string(), &limit.to_string()])) }
            @if sets.is_empty() { p.muted { (t.sets_none) } } @else {
                div.table { table {
                    thead { tr { th { (t.set_name) } th { (t.set_target) } th { (t.set_state) } th { (t.actions) } } }
                    tbody { @for (set, health) in sets { (set_row(visit, set, health.as_ref())) } }
                } }
            }
            @if full {
                p.why { (fill(t.sets_full, &[&limit.to_string()])) }
            } @else {
                details open[set_error.is_some()] {
                    summary { (t.set_create) }
                    (set_form(visit, id, &set_input, set_error))
                }
            }
            details open[rotate_error.is_some()] {
                summary { (t.rotate_secret) }
                form method="post" action=(format!("/channels/{id}/rotate-secret")) {
                    (csrf_field(&visit.session))
                    label for=(format!("{id}-new-secret")) { (t.rotate_new_secret) }
                    input type="password" id=(format!("{id}-new-secret")) name="new_secret" autocomplete="off" required;
                    (grace_select(t, &format!("{id}-grace")))
                    (error_box(rotate_error))
                    div.actions { button type="submit" { (t.rotate_secret_button) } }
                }
            }
            div.actions {
                form method="post" action=(format!("/channels/{id}/delete")) {
                    (csrf_field(&visit.session))
                    button.danger type="submit" { (t.channel_delete) }
                }
            }
        }
    }
}

/// A grace-period choice for secret rotations (0 to 7 days, as the API allows).
pub fn grace_select(t: &Text, id: &str) -> Markup {
    html! {
        label for=(id) { (t.grace_period) }
        select id=(id) name="grace" {
            option value="0" { (t.grace_none) }
            option value="3600" { (t.grace_hour) }
            option value="86400" selected { (t.grace_day) }
            option value="604800" { (t.grace_week) }
        }
    }
}

/// The chosen grace period; anything else is none.
pub fn grace_of(value: &str) -> Option<prost_types::Duration> {
    let seconds: i64 = value.parse().ok().filter(|s| *s > 0)?;
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn set_row(visit: &Visit, set: &ForwardingSet, health: Option<&TargetHealth>) -> Markup {
    let t = visit.t;
    let enabled = set.enabled.unwrap_or(true);
    let genesys = set.kind == ForwardingKind::GenesysOpenMessaging as i32;
    html! {
        tr {
            td { (set.name) br; span.muted { (set.id) } }
            td {
                @if genesys {
                    span.badge { (t.set_kind_genesys) } br;
                    @if !set.url.is_empty() { code.url { (set.url) } br; }
                    (t.set_outbound_url) " " (copyable(t, &public_url(visit, &set.outbound_path)))
                } @else {
                    code.url { (set.url) }
                }
            }
            td {
                @if enabled { span.badge.ok { (t.enabled) } } @else { span.badge.muted { (t.disabled) } }
                @if let Some(health) = health { br; (health::counts(t, health)) }
            }
            td { div.actions {
                form method="post" action=(format!("/forwarding-sets/{}/enabled", set.id)) {
                    (csrf_field(&visit.session))
                    input type="hidden" name="enabled" value=(if enabled { "false" } else { "true" });
                    button.secondary type="submit" { (if enabled { t.disable } else { t.enable }) }
                }
                a href=(format!("/forwarding-sets/{}", set.id)) { (t.edit) }
                a href=(format!("/forwarding-sets/{}/attempts", set.id)) { (t.nav_attempts) }
                form method="post" action=(format!("/forwarding-sets/{}/delete", set.id)) {
                    (csrf_field(&visit.session))
                    button.danger type="submit" { (t.delete) }
                }
            } }
        }
    }
}

fn set_form(visit: &Visit, channel: &str, input: &SetInput, error: Option<&str>) -> Markup {
    let t = visit.t;
    let id = |name: &str| format!("{channel}-set-{name}");
    html! {
        form method="post" action=(format!("/channels/{channel}/forwarding-sets")) {
            (csrf_field(&visit.session))
            label for=(id("name")) { (t.set_name) }
            input type="text" id=(id("name")) name="name" value=(input.name) required;
            label for=(id("kind")) { (t.set_kind) }
            select id=(id("kind")) name="kind" {
                option value="raw" selected[!input.genesys] { (t.set_kind_raw) }
                option value="genesys" selected[input.genesys] { (t.set_kind_genesys) }
            }
            label for=(id("url")) { (t.set_url) }
            input type="url" id=(id("url")) name="url" value=(input.url) placeholder="https://";
            fieldset {
                legend { (t.set_genesys_settings) }
                label for=(id("region")) { (t.genesys_region) }
                input type="text" id=(id("region")) name="region_domain" value=(input.region_domain) placeholder="mypurecloud.com";
                label for=(id("client")) { (t.genesys_client_id) }
                input type="text" id=(id("client")) name="client_id" value=(input.client_id);
                label for=(id("client-secret")) { (t.genesys_client_secret) }
                input type="password" id=(id("client-secret")) name="client_secret" autocomplete="off";
                label for=(id("integration")) { (t.genesys_integration_id) }
                input type="text" id=(id("integration")) name="integration_id" value=(input.integration_id);
                label for=(id("signing")) { (t.genesys_signature_secret) }
                input type="password" id=(id("signing")) name="signature_secret" autocomplete="off";
            }
            (error_box(error))
            div.actions { button type="submit" { (t.set_create_button) } }
        }
    }
}

async fn tenant_of_channel(visit: &Visit, channel: &str) -> Result<Channel, Response> {
    visit
        .api
        .channels()
        .get_channel(visit.api.call(GetChannelRequest {
            id: channel.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| visit.failed(&status))
}

pub async fn create_channel(visit: Visit, Path(tenant): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let form = fields(&body);
    let name = form.get("display_name").to_owned();
    let created = visit
        .api
        .channels()
        .create_channel(visit.api.call(CreateChannelRequest {
            tenant_id: tenant.clone(),
            channel: Some(Channel {
                display_name: name.clone(),
                line_channel_secret: form.get("secret").to_owned(),
                line_channel_access_token: form.get("access_token").to_owned(),
                ..Default::default()
            }),
        }))
        .await;
    match created {
        Ok(created) => {
            let created = created.into_inner();
            visit.done(
                &format!("/tenants/{tenant}/channels#{}", created.id),
                fill(t.channel_created, &[&created.display_name]),
            )
        }
        Err(status) => {
            let error = api::readable(t, &status);
            channels(
                &visit,
                &tenant,
                Some(Refused::CreateChannel { name, error }),
            )
            .await
        }
    }
}

pub async fn rotate_secret(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let channel = match tenant_of_channel(&visit, &id).await {
        Ok(channel) => channel,
        Err(response) => return response,
    };
    let form = fields(&body);
    let rotated = visit
        .api
        .channels()
        .rotate_channel_secret(visit.api.call(RotateChannelSecretRequest {
            id: id.clone(),
            new_secret: form.get("new_secret").to_owned(),
            grace_period: grace_of(form.get("grace")),
        }))
        .await;
    let back = format!("/tenants/{}/channels#{id}", channel.tenant_id);
    match rotated {
        Ok(rotated) => {
            let rotated = rotated.into_inner();
            let message = match &rotated.previous_secret_valid_until {
                Some(until) => fill(t.rotated_with_grace, &[&layout::time(Some(until))]),
                None => t.rotated_at_once.to_owned(),
            };
            visit.done(&back, message)
        }
        Err(status) => {
            let error = api::readable(t, &status);
            channels(
                &visit,
                &channel.tenant_id,
                Some(Refused::Rotate { channel: id, error }),
            )
            .await
        }
    }
}

pub async fn delete_channel(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let channel = match tenant_of_channel(&visit, &id).await {
        Ok(channel) => channel,
        Err(response) => return response,
    };
    let back = format!("/tenants/{}/channels", channel.tenant_id);
    if fields(&body).get("confirm") != "yes" {
        return visit.page(
            t.confirm_title,
            confirmation(
                t,
                &visit.session,
                &fill(t.channel_delete_question, &[&channel.display_name]),
                &format!("/channels/{id}/delete"),
                &[],
                &back,
            ),
        );
    }
    match visit
        .api
        .channels()
        .delete_channel(visit.api.call(DeleteChannelRequest { id }))
        .await
    {
        Ok(_) => visit.done(&back, fill(t.channel_deleted, &[&channel.display_name])),
        Err(status) => {
            let error = api::readable(t, &status);
            channels(&visit, &channel.tenant_id, Some(Refused::Page { error })).await
        }
    }
}

fn set_input(body: &Bytes) -> SetInput {
    let form = fields(body);
    SetInput {
        name: form.get("name").to_owned(),
        url: form.get("url").to_owned(),
        genesys: form.get("kind") == "genesys",
        region_domain: form.get("region_domain").to_owned(),
        client_id: form.get("client_id").to_owned(),
        integration_id: form.get("integration_id").to_owned(),
    }
}

pub async fn create_set(visit: Visit, Path(channel_id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let channel = match tenant_of_channel(&visit, &channel_id).await {
        Ok(channel) => channel,
        Err(response) => return response,
    };
    let input = set_input(&body);
    let form = fields(&body);
    let set = ForwardingSet {
        name: input.name.clone(),
        url: input.url.clone(),
        kind: if input.genesys {
            ForwardingKind::GenesysOpenMessaging
        } else {
            ForwardingKind::Raw
        } as i32,
        genesys: input.genesys.then(|| GenesysSettings {
            region_domain: input.region_domain.clone(),
            client_id: input.client_id.clone(),
            client_secret: form.get("client_secret").to_owned(),
            integration_id: input.integration_id.clone(),
            outbound_signature_secret: form.get("signature_secret").to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = visit
        .api
        .forwarding()
        .create_forwarding_set(visit.api.call(CreateForwardingSetRequest {
            channel_id: channel_id.clone(),
            forwarding_set: Some(set),
        }))
        .await;
    match created {
        Ok(created) => visit.done(
            &format!("/tenants/{}/channels#{channel_id}", channel.tenant_id),
            fill(t.set_created, &[&created.into_inner().name]),
        ),
        Err(status) => {
            let error = api::readable(t, &status);
            channels(
                &visit,
                &channel.tenant_id,
                Some(Refused::CreateSet {
                    channel: channel_id,
                    input,
                    error,
                }),
            )
            .await
        }
    }
}

async fn fetch_set(visit: &Visit, id: &str) -> Result<(ForwardingSet, Channel), Response> {
    let set = visit
        .api
        .forwarding()
        .get_forwarding_set(
            visit
                .api
                .call(GetForwardingSetRequest { id: id.to_owned() }),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| visit.failed(&status))?;
    let channel = tenant_of_channel(visit, &set.channel_id).await?;
    Ok((set, channel))
}

/// The edit page of one forwarding set: name, URL, timeout.
pub async fn set_page(visit: Visit, Path(id): Path<String>) -> Response {
    match fetch_set(&visit, &id).await {
        Ok((set, channel)) => {
            let input = EditInput {
                name: set.name.clone(),
                url: set.url.clone(),
                timeout: set
                    .timeout
                    .map(|d| d.seconds.to_string())
                    .unwrap_or_default(),
            };
            edit_set(&visit, &set, &channel, &input, None)
        }
        Err(response) => response,
    }
}

struct EditInput {
    name: String,
    url: String,
    timeout: String,
}

fn edit_set(
    visit: &Visit,
    set: &ForwardingSet,
    channel: &Channel,
    input: &EditInput,
    error: Option<&str>,
) -> Response {
    let t = visit.t;
    let body = html! {
        p { a href=(format!("/tenants/{}/channels#{}", channel.tenant_id, channel.id)) { (fill(t.back_to_channels, &[&channel.display_name])) } }
        section.card {
            form method="post" action=(format!("/forwarding-sets/{}", set.id)) {
                (csrf_field(&visit.session))
                label for="set-name" { (t.set_name) }
                input type="text" id="set-name" name="name" value=(input.name) required;
                label for="set-url" { (t.set_url) }
                input type="url" id="set-url" name="url" value=(input.url);
                label for="set-timeout" { (t.set_timeout) }
                input type="text" id="set-timeout" name="timeout" inputmode="numeric" value=(input.timeout) placeholder="10";
                (error_box(error))
                div.actions { button type="submit" { (t.save) } }
            }
        }
    };
    let title = fill(t.set_edit_title, &[&set.name]);
    if error.is_some() {
        visit.refused_form(&title, body)
    } else {
        visit.page(&title, body)
    }
}

pub async fn update_set(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let (set, channel) = match fetch_set(&visit, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let form = fields(&body);
    let input = EditInput {
        name: form.get("name").to_owned(),
        url: form.get("url").to_owned(),
        timeout: form.get("timeout").to_owned(),
    };
    let mut paths = vec!["name".to_owned(), "url".to_owned()];
    let mut timeout = None;
    if !input.timeout.is_empty() {
        match input.timeout.parse::<i64>() {
            Ok(seconds) => {
                timeout = Some(prost_types::Duration { seconds, nanos: 0 });
                paths.push("timeout".to_owned());
            }
            Err(_) => {
                return edit_set(&visit, &set, &channel, &input, Some(t.set_timeout_bad));
            }
        }
    }
    let updated = visit
        .api
        .forwarding()
        .update_forwarding_set(visit.api.call(UpdateForwardingSetRequest {
            forwarding_set: Some(ForwardingSet {
                id: id.clone(),
                name: input.name.clone(),
                url: input.url.clone(),
                timeout,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await;
    match updated {
        Ok(_) => visit.done(
            &format!("/tenants/{}/channels#{}", channel.tenant_id, channel.id),
            fill(t.set_saved, &[&input.name]),
        ),
        Err(status) => edit_set(
            &visit,
            &set,
            &channel,
            &input,
            Some(&api::readable(t, &status)),
        ),
    }
}

pub async fn set_enabled(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let (set, channel) = match fetch_set(&visit, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let enabled = fields(&body).get("enabled") == "true";
    let updated = visit
        .api
        .forwarding()
        .update_forwarding_set(visit.api.call(UpdateForwardingSetRequest {
            forwarding_set: Some(ForwardingSet {
                id,
                enabled: Some(enabled),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".to_owned()],
            }),
        }))
        .await;
    let back = format!("/tenants/{}/channels#{}", channel.tenant_id, channel.id);
    match updated {
        Ok(_) => {
            let said = if enabled {
                t.set_enabled
            } else {
                t.set_disabled
            };
            visit.done(&back, fill(said, &[&set.name]))
        }
        Err(status) => {
            let error = api::readable(t, &status);
            channels(&visit, &channel.tenant_id, Some(Refused::Page { error })).await
        }
    }
}

pub async fn delete_set(visit: Visit, Path(id): Path<String>, body: Bytes) -> Response {
    let t = visit.t;
    let (set, channel) = match fetch_set(&visit, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = format!("/tenants/{}/channels#{}", channel.tenant_id, channel.id);
    if fields(&body).get("confirm") != "yes" {
        return visit.page(
            t.confirm_title,
            confirmation(
                t,
                &visit.session,
                &fill(t.set_delete_question, &[&set.name, &set.url]),
                &format!("/forwarding-sets/{id}/delete"),
                &[],
                &back,
            ),
        );
    }
    match visit
        .api
        .forwarding()
        .delete_forwarding_set(visit.api.call(DeleteForwardingSetRequest { id }))
        .await
    {
        Ok(_) => visit.done(&back, fill(t.set_deleted, &[&set.name])),
        Err(status) => {
            let error = api::readable(t, &status);
            channels(&visit, &channel.tenant_id, Some(Refused::Page { error })).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_grace_is_none_and_a_day_is_86400_seconds() {
        assert!(grace_of("0").is_none());
        assert!(grace_of("").is_none());
        assert_eq!(grace_of("86400").unwrap().seconds, 86_400);
    }
}
