//! Response messages as proto3 JSON (lowerCamelCase names, enums by name, RFC 3339 instants,
//! `1.5s` durations), the way grpcurl shows them. prost messages carry no serde, so each is
//! mapped by hand. Every field is present, unset ones as `null`, so scripts can rely on keys.

use std::collections::HashMap;

use hookplane_client::v1::{
    AttemptOutcome, AuditEvent, Channel, CreateTokenResponse, Delivery, DeliveryAttempt,
    DeliveryState, Entitlements, ForwardingKind, ForwardingSet, GenesysSettings, Notification,
    NotificationState, PurgeTenantDataResponse, RevealSecretResponse, Role, SendTestEventResponse,
    SignatureScheme, Subscription, SubscriptionState, Tenant, Token, Zone, ZoneEntitlement,
};
use serde_json::{Value, json};

pub fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

pub fn duration(d: Option<&prost_types::Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.to_string()))
}

/// An enum by its proto name; a number the client does not know stays a number, as in proto JSON.
fn enumeration<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> Value {
    E::try_from(value).map_or_else(|_| json!(value), |e| json!(name(e)))
}

fn string_map(map: &HashMap<String, String>) -> Value {
    // serde_json's map is ordered by key, so output is stable whatever the HashMap order.
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub fn tenant(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "displayName": t.display_name,
        "notificationEmails": t.notification_emails,
        "entitlements": t.entitlements.as_ref().map_or(Value::Null, entitlements),
        "createTime": timestamp(t.create_time.as_ref()),
        "updateTime": timestamp(t.update_time.as_ref()),
        "lastPurgeTime": timestamp(t.last_purge_time.as_ref()),
    })
}

/// What a purge removed; the nodes' share is in their own metrics (see tenant.proto).
pub fn purged(p: &PurgeTenantDataResponse) -> Value {
    json!({
        "attemptsDeleted": p.attempts_deleted.to_string(),
        "deliveriesDeleted": p.deliveries_deleted.to_string(),
        "notificationBodiesDeleted": p.notification_bodies_deleted.to_string(),
        "purgeTime": timestamp(p.purge_time.as_ref()),
    })
}

fn entitlements(e: &Entitlements) -> Value {
    json!({
        "zones": e.zones.iter().map(zone_entitlement).collect::<Vec<_>>(),
        "maxActiveSubscriptions": e.max_active_subscriptions,
        "maxForwardingSetsPerChannel": e.max_forwarding_sets_per_channel,
    })
}

fn zone_entitlement(z: &ZoneEntitlement) -> Value {
    json!({
        "zone": enumeration(z.zone, |z: Zone| z.as_str_name()),
        "validUntil": timestamp(z.valid_until.as_ref()),
    })
}

pub fn channel(c: &Channel) -> Value {
    json!({
        "id": c.id,
        "tenantId": c.tenant_id,
        "displayName": c.display_name,
        "ingressPath": c.ingress_path,
        "metadata": string_map(&c.metadata),
        "hasAccessToken": c.has_access_token,
        "previousSecretValidUntil": timestamp(c.previous_secret_valid_until.as_ref()),
        "createTime": timestamp(c.create_time.as_ref()),
        "updateTime": timestamp(c.update_time.as_ref()),
    })
}

pub fn forwarding_set(f: &ForwardingSet) -> Value {
    json!({
        "id": f.id,
        "channelId": f.channel_id,
        "name": f.name,
        "url": f.url,
        // The API defines unset as enabled; showing the effective value spares readers the rule.
        "enabled": f.enabled.unwrap_or(true),
        "kind": enumeration(f.kind, |k: ForwardingKind| k.as_str_name()),
        "timeout": duration(f.timeout.as_ref()),
        "genesys": f.genesys.as_ref().map_or(Value::Null, genesys),
        "outboundPath": f.outbound_path,
        "createTime": timestamp(f.create_time.as_ref()),
        "updateTime": timestamp(f.update_time.as_ref()),
    })
}

fn genesys(g: &GenesysSettings) -> Value {
    // client_secret and outbound_signature_secret are input only; never echo them.
    json!({
        "regionDomain": g.region_domain,
        "loginBaseUrl": g.login_base_url,
        "apiBaseUrl": g.api_base_url,
        "clientId": g.client_id,
        "integrationId": g.integration_id,
        "customAttributes": string_map(&g.custom_attributes),
    })
}

pub fn subscription(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "tenantId": s.tenant_id,
        "name": s.name,
        "url": s.url,
        "eventTypes": s.event_types,
        "state": enumeration(s.state, |x: SubscriptionState| x.as_str_name()),
        "signatureScheme": enumeration(s.signature_scheme, |x: SignatureScheme| x.as_str_name()),
        "validUntil": timestamp(s.valid_until.as_ref()),
        "stateReason": s.state_reason,
        "stoppedBySystem": s.stopped_by_system,
        "createTime": timestamp(s.create_time.as_ref()),
        "updateTime": timestamp(s.update_time.as_ref()),
    })
}

pub fn revealed_secret(r: &RevealSecretResponse) -> Value {
    json!({
        "secret": r.secret,
        "previousSecretValidUntil": timestamp(r.previous_secret_valid_until.as_ref()),
    })
}

pub fn test_event_result(r: &SendTestEventResponse) -> Value {
    json!({
        "success": r.success,
        "httpStatus": r.http_status,
        "failureReason": r.failure_reason,
        "latency": duration(r.latency.as_ref()),
        "eventId": r.event_id,
        "requestBody": r.request_body,
        "responseBody": r.response_body,
    })
}

pub fn attempt(a: &DeliveryAttempt) -> Value {
    json!({
        "id": a.id,
        "deliveryId": a.delivery_id,
        "eventId": a.event_id,
        "forwardingSetId": a.forwarding_set_id,
        "subscriptionId": a.subscription_id,
        "channelId": a.channel_id,
        "tenantId": a.tenant_id,
        "attemptNumber": a.attempt_number,
        "time": timestamp(a.time.as_ref()),
        "url": a.url,
        "httpStatus": a.http_status,
        "reason": a.reason,
        "latency": duration(a.latency.as_ref()),
        "responseBody": a.response_body,
        "outcome": enumeration(a.outcome, |x: AttemptOutcome| x.as_str_name()),
        "nodeId": a.node_id,
    })
}

pub fn delivery(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "eventId": d.event_id,
        "forwardingSetId": d.forwarding_set_id,
        "subscriptionId": d.subscription_id,
        "state": enumeration(d.state, |x: DeliveryState| x.as_str_name()),
        "attempts": d.attempts,
        "lastReason": d.last_reason,
    })
}

pub fn notification(n: &Notification) -> Value {
    json!({
        "id": n.id,
        "tenantId": n.tenant_id,
        "kind": n.kind,
        "recipients": n.recipients,
        "subject": n.subject,
        "bodyText": n.body_text,
        "state": enumeration(n.state, |x: NotificationState| x.as_str_name()),
        "createTime": timestamp(n.create_time.as_ref()),
        "sentTime": timestamp(n.sent_time.as_ref()),
        "lastError": n.last_error,
    })
}

pub fn token(t: &Token) -> Value {
    json!({
        "id": t.id,
        "displayName": t.display_name,
        "role": enumeration(t.role, |r: Role| r.as_str_name()),
        "tenantId": t.tenant_id,
        "createTime": timestamp(t.create_time.as_ref()),
        "lastUsedTime": timestamp(t.last_used_time.as_ref()),
        "expireTime": timestamp(t.expire_time.as_ref()),
    })
}

/// A new token with its secret, which the server shows this once.
pub fn created_token(r: &CreateTokenResponse) -> Value {
    json!({
        "token": r.token.as_ref().map_or(Value::Null, token),
        "secret": r.secret,
    })
}

pub fn audit_event(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "time": timestamp(e.time.as_ref()),
        "tokenId": e.token_id,
        "tokenName": e.token_name,
        "method": e.method,
        "resourceId": e.resource_id,
        "tenantId": e.tenant_id,
        "fields": e.fields,
        "peer": e.peer,
    })
}

/// A list response: `{"<items>": [...], "nextPageToken": "..."}`.
pub fn list<T>(
    items_key: &str,
    items: &[T],
    item: fn(&T) -> Value,
    next_page_token: &str,
) -> Value {
    let mut object = serde_json::Map::new();
    object.insert(
        items_key.to_owned(),
        Value::Array(items.iter().map(item).collect()),
    );
    object.insert("nextPageToken".to_owned(), json!(next_page_token));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn tenant_uses_lower_camel_case_names_and_zone_names() {
        let t = Tenant {
            id: "tnt_1".into(),
            display_name: "Acme".into(),
            notification_emails: vec!["ops@acme.test".into()],
            entitlements: Some(Entitlements {
                zones: vec![ZoneEntitlement {
                    zone: Zone::Zone1 as i32,
                    valid_until: at(1_830_211_200),
                }],
                max_active_subscriptions: Some(5),
                max_forwarding_sets_per_channel: None,
            }),
            create_time: at(0),
            update_time: None,
            last_purge_time: at(60),
        };
        assert_eq!(
            tenant(&t),
            json!({
                "id": "tnt_1",
                "displayName": "Acme",
                "notificationEmails": ["ops@acme.test"],
                "entitlements": {
                    "zones": [{"zone": "ZONE_1", "validUntil": "2027-12-31T00:00:00Z"}],
                    "maxActiveSubscriptions": 5,
                    "maxForwardingSetsPerChannel": null,
                },
                "createTime": "1970-01-01T00:00:00Z",
                "updateTime": null,
                "lastPurgeTime": "1970-01-01T00:01:00Z",
            })
        );
    }

    #[test]
    fn an_unknown_enum_number_stays_a_number() {
        let s = Subscription {
            state: 42,
            ..Subscription::default()
        };
        assert_eq!(subscription(&s)["state"], json!(42));
    }

    #[test]
    fn durations_use_the_proto_json_seconds_form() {
        let f = ForwardingSet {
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
            ..ForwardingSet::default()
        };
        assert_eq!(forwarding_set(&f)["timeout"], json!("2.500s"));
    }

    #[test]
    fn an_unset_enabled_flag_reads_as_enabled() {
        assert_eq!(
            forwarding_set(&ForwardingSet::default())["enabled"],
            json!(true)
        );
    }

    #[test]
    fn genesys_secrets_are_never_shown() {
        let f = ForwardingSet {
            genesys: Some(GenesysSettings {
                client_secret: "cs".into(),
                outbound_signature_secret: "ss".into(),
                ..GenesysSettings::default()
            }),
            ..ForwardingSet::default()
        };
        let text = forwarding_set(&f).to_string();
        assert!(!text.contains("\"cs\"") && !text.contains("\"ss\""));
    }

    #[test]
    fn channel_secrets_are_never_shown() {
        let c = Channel {
            line_channel_secret: "sekrit".into(),
            line_channel_access_token: "tok".into(),
            ..Channel::default()
        };
        let text = channel(&c).to_string();
        assert!(!text.contains("sekrit") && !text.contains("tok"));
    }

    #[test]
    fn list_names_the_items_and_the_next_page_token() {
        let value = list("tenants", &[Tenant::default()], tenant, "p2");
        assert_eq!(value["tenants"].as_array().unwrap().len(), 1);
        assert_eq!(value["nextPageToken"], json!("p2"));
    }
}
