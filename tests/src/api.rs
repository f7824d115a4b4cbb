//! Small builders for API resources, so a test states only what it is about.

use hookplane_client::v1;
use prost_types::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A timestamp `offset` from now (negative for the past).
pub fn from_now(offset_secs: i64) -> Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Timestamp {
        seconds: now + offset_secs,
        nanos: 0,
    }
}

pub const DAY: i64 = 86_400;

/// A tenant with both zones bought for a year.
pub fn tenant(name: &str) -> v1::Tenant {
    v1::Tenant {
        display_name: name.to_owned(),
        notification_emails: vec!["ops@brand.example".to_owned()],
        entitlements: Some(v1::Entitlements {
            zones: vec![
                zone(v1::Zone::Zone1, 365 * DAY),
                zone(v1::Zone::Zone2, 365 * DAY),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn zone(zone: v1::Zone, valid_for_secs: i64) -> v1::ZoneEntitlement {
    v1::ZoneEntitlement {
        zone: zone as i32,
        valid_until: Some(from_now(valid_for_secs)),
    }
}

pub fn channel(name: &str, secret: &str) -> v1::Channel {
    v1::Channel {
        display_name: name.to_owned(),
        line_channel_secret: secret.to_owned(),
        ..Default::default()
    }
}

pub fn forwarding_set(name: &str, url: &str) -> v1::ForwardingSet {
    v1::ForwardingSet {
        name: name.to_owned(),
        url: url.to_owned(),
        ..Default::default()
    }
}

pub fn subscription(name: &str, url: &str, event_types: &[&str]) -> v1::Subscription {
    v1::Subscription {
        name: name.to_owned(),
        url: url.to_owned(),
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Creates a tenant (both zones) and returns it.
pub async fn create_tenant(
    client: &hookplane_client::Client,
    name: &str,
) -> anyhow::Result<v1::Tenant> {
    Ok(client
        .tenants()
        .create_tenant(v1::CreateTenantRequest {
            tenant: Some(tenant(name)),
        })
        .await?
        .into_inner())
}

/// Creates a channel with `secret` under `tenant_id` and returns it.
pub async fn create_channel(
    client: &hookplane_client::Client,
    tenant_id: &str,
    secret: &str,
) -> anyhow::Result<v1::Channel> {
    Ok(client
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: tenant_id.to_owned(),
            channel: Some(channel("Brand OA", secret)),
        })
        .await?
        .into_inner())
}

/// A forwarding set's latest delivery attempts (up to 100, newest first).
pub async fn set_attempts(
    client: &hookplane_client::Client,
    forwarding_set_id: &str,
) -> anyhow::Result<Vec<v1::DeliveryAttempt>> {
    Ok(client
        .deliveries()
        .list_delivery_attempts(v1::ListDeliveryAttemptsRequest {
            forwarding_set_id: forwarding_set_id.to_owned(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .attempts)
}

/// Creates a RAW forwarding set to `url` on `channel_id` and returns it.
pub async fn create_forwarding_set(
    client: &hookplane_client::Client,
    channel_id: &str,
    url: &str,
) -> anyhow::Result<v1::ForwardingSet> {
    Ok(client
        .forwarding()
        .create_forwarding_set(v1::CreateForwardingSetRequest {
            channel_id: channel_id.to_owned(),
            forwarding_set: Some(forwarding_set("crm", url)),
        })
        .await?
        .into_inner())
}

/// A tenant and a channel signed with the fixtures' secret, forwarding to each of `urls`;
/// returns the channel id and the forwarding set ids.
pub async fn channel_forwarding_to(
    client: &hookplane_client::Client,
    urls: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    let tenant = create_tenant(client, "Brand").await?;
    let channel = create_channel(client, &tenant.id, crate::FIXTURE_CHANNEL_SECRET).await?;
    let mut sets = Vec::new();
    for url in urls {
        sets.push(create_forwarding_set(client, &channel.id, url).await?.id);
    }
    Ok((channel.id, sets))
}
