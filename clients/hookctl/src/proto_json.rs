//! Response messages as proto3 JSON, the way grpcurl shows them with `-emit-defaults`:
//! prost-reflect serialises any message through the API's descriptor set, with the standard
//! mapping (lowerCamelCase names, enums by name, RFC 3339 instants, `1.5s` durations, 64-bit
//! integers as strings), and every field of the message's type is printed: at its default when it
//! has no presence, as `null` when it has (an unset message or `optional` number), so scripts can
//! rely on the keys. Two rules of hookctl's own are applied after, in `keep_rules`.

use anyhow::Context;
use hookplane_client::FILE_DESCRIPTOR_SET;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// Fields the API takes but never returns: the server blanks them in every answer. Printing them
/// would show `""` keys that look like a secret could be there, so they are left out, and a
/// secret would not be printed even from a server that sent one.
const INPUT_ONLY: [&str; 4] = [
    "hookplane.v1.Channel.line_channel_secret",
    "hookplane.v1.Channel.line_channel_access_token",
    "hookplane.v1.GenesysSettings.client_secret",
    "hookplane.v1.GenesysSettings.outbound_signature_secret",
];

/// The API defines an unset `enabled` as enabled; showing the effective value spares readers the
/// rule (the standard mapping would leave the key out).
const ENABLED_WHEN_UNSET: &str = "hookplane.v1.ForwardingSet.enabled";

/// `message` as proto3 JSON, with every field of its type that has no presence of its own.
pub fn to_value<M: Message + Name>(message: &M) -> anyhow::Result<Value> {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .context("the API's descriptor set does not decode")?;
    let name = M::full_name();
    let descriptor = pool
        .get_message_by_name(&name)
        .with_context(|| format!("{name} is not in the API's descriptor set"))?;
    let dynamic = DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice())?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut value = dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .with_context(|| format!("{name} as JSON"))?;
    keep_rules(&descriptor, &mut value);
    Ok(value)
}

/// Applies `INPUT_ONLY` and `ENABLED_WHEN_UNSET` to a message's JSON and every message in it,
/// and prints a field with presence that is unset as `null`: prost-reflect leaves it out, while
/// grpcurl's `-emit-defaults` (Go's `EmitUnpopulated`) prints it, and scripts index such keys.
fn keep_rules(descriptor: &MessageDescriptor, value: &mut Value) {
    // Well-known types print as strings; only a message printed as an object has fields here.
    let Value::Object(object) = value else {
        return;
    };
    for field in descriptor.fields() {
        let name = field.json_name();
        if INPUT_ONLY.contains(&field.full_name()) {
            object.remove(name);
            continue;
        }
        if field.full_name() == ENABLED_WHEN_UNSET {
            object.entry(name).or_insert(Value::Bool(true));
        } else if field.supports_presence()
            // Like Go's mapping: of a oneof, only the member that is set is printed.
            && field.containing_oneof().is_none_or(|o| o.is_synthetic())
        {
            object.entry(name).or_insert(Value::Null);
        }
        // The API's maps hold strings, so only singular and repeated messages are walked.
        let (Kind::Message(child), false) = (field.kind(), field.is_map()) else {
            continue;
        };
        match object.get_mut(name) {
            Some(Value::Array(items)) => items.iter_mut().for_each(|v| keep_rules(&child, v)),
            Some(v) => keep_rules(&child, v),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use hookplane_client::v1::{
        Channel, Entitlements, ForwardingSet, GenesysSettings, ListChannelsResponse,
        ListTenantsResponse, Subscription, Tenant, Zone, ZoneEntitlement,
    };
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn json_of<M: Message + Name>(message: &M) -> Value {
        to_value(message).unwrap()
    }

    #[test]
    fn tenant_uses_lower_camel_case_names_and_zone_names_and_shows_unset_messages_as_null() {
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
            last_purge_time: None,
        };
        assert_eq!(
            json_of(&t),
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
                "lastPurgeTime": null,
            })
        );
    }

    #[test]
    fn fields_at_their_default_are_printed_with_it() {
        let value = json_of(&Subscription::default());
        assert_eq!(value["name"], json!(""));
        assert_eq!(value["eventTypes"], json!([]));
        assert_eq!(value["state"], json!("SUBSCRIPTION_STATE_UNSPECIFIED"));
        assert_eq!(value["stoppedBySystem"], json!(false));
        assert_eq!(value["createTime"], Value::Null);
        assert!(
            value.as_object().unwrap().contains_key("createTime"),
            "{value}"
        );
    }

    #[test]
    fn an_unknown_enum_number_stays_a_number() {
        let s = Subscription {
            state: 42,
            ..Subscription::default()
        };
        assert_eq!(json_of(&s)["state"], json!(42));
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
        assert_eq!(json_of(&f)["timeout"], json!("2.500s"));
    }

    #[test]
    fn an_unset_enabled_flag_reads_as_enabled() {
        assert_eq!(json_of(&ForwardingSet::default())["enabled"], json!(true));
        let disabled = ForwardingSet {
            enabled: Some(false),
            ..ForwardingSet::default()
        };
        assert_eq!(json_of(&disabled)["enabled"], json!(false));
    }

    #[test]
    fn genesys_secrets_are_never_shown() {
        let f = ForwardingSet {
            genesys: Some(GenesysSettings {
                client_id: "cid".into(),
                client_secret: "CLIENT-SECRET-VALUE".into(),
                outbound_signature_secret: "SIGNATURE-SECRET-VALUE".into(),
                ..GenesysSettings::default()
            }),
            ..ForwardingSet::default()
        };
        let value = json_of(&f);
        assert_eq!(value["genesys"]["clientId"], json!("cid"));
        let text = value.to_string();
        assert!(!text.contains("-VALUE"), "{text}");
        assert!(!text.contains("Secret"), "{text}");
    }

    #[test]
    fn channel_secrets_are_never_shown_alone_or_in_a_list() {
        let c = Channel {
            line_channel_secret: "SECRET-VALUE".into(),
            line_channel_access_token: "ACCESS-TOKEN-VALUE".into(),
            has_access_token: true,
            ..Channel::default()
        };
        let one = json_of(&c);
        assert_eq!(one["hasAccessToken"], json!(true));
        let listed = json_of(&ListChannelsResponse {
            channels: vec![c],
            next_page_token: String::new(),
        });
        for text in [one.to_string(), listed.to_string()] {
            assert!(!text.contains("-VALUE"), "{text}");
            assert!(!text.contains("lineChannel"), "{text}");
        }
    }

    #[test]
    fn every_input_only_field_and_the_enabled_rule_name_a_field_of_the_api() {
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
        for name in INPUT_ONLY.iter().chain([&ENABLED_WHEN_UNSET]) {
            let (message, field) = name.rsplit_once('.').unwrap();
            let descriptor = pool.get_message_by_name(message).unwrap();
            assert!(descriptor.get_field_by_name(field).is_some(), "{name}");
        }
    }

    #[test]
    fn a_list_names_the_items_and_the_next_page_token() {
        let value = json_of(&ListTenantsResponse {
            tenants: vec![Tenant::default()],
            next_page_token: "p2".into(),
        });
        assert_eq!(value["tenants"].as_array().unwrap().len(), 1);
        assert_eq!(value["nextPageToken"], json!("p2"));
    }
}
