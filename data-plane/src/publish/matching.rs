//! Which subscriptions get a published event: the tenant's ACTIVE ones naming the topic, while the
//! tenant's entitlement to the topic's zone is valid at publish time. Stopped subscriptions get
//! nothing, and nothing is held for them.

use std::{sync::Arc, time::SystemTime};

use hookplane_proto::v1::{NodeSubscription, NodeTenant, SubscriptionState, Zone};

use crate::config::Snapshot;

pub fn matching(
    snapshot: &Snapshot,
    tenant: &NodeTenant,
    topic: &str,
    zone: Zone,
    now: SystemTime,
) -> Vec<Arc<NodeSubscription>> {
    if !entitled(tenant, zone, now) {
        return Vec::new();
    }
    snapshot
        .subscriptions_of(&tenant.id)
        .iter()
        .filter(|s| s.state == SubscriptionState::Active as i32)
        .filter(|s| s.event_types.iter().any(|t| t == topic))
        .cloned()
        .collect()
}

/// Whether `tenant` has bought `zone` until after `now`.
pub fn entitled(tenant: &NodeTenant, zone: Zone, now: SystemTime) -> bool {
    tenant
        .zones
        .iter()
        .filter(|z| z.zone == zone as i32)
        .filter_map(|z| z.valid_until)
        .filter_map(|t| SystemTime::try_from(t).ok())
        .any(|until| until > now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookplane_proto::v1::{
        ConfigResource, ConfigUpdate, ZoneEntitlement, config_resource::Resource,
    };

    use super::*;

    const TOPIC: &str = "receipt.receipt_validated";

    fn tenant(zone: Zone, valid_until: SystemTime) -> NodeTenant {
        NodeTenant {
            id: "tnt_1".into(),
            display_name: "Brand".into(),
            zones: vec![ZoneEntitlement {
                zone: zone as i32,
                valid_until: Some(valid_until.into()),
            }],
            purge_before: None,
        }
    }

    fn sub(id: &str, tenant: &str, state: SubscriptionState, topics: &[&str]) -> Resource {
        Resource::Subscription(NodeSubscription {
            id: id.into(),
            tenant_id: tenant.into(),
            state: state as i32,
            event_types: topics.iter().map(|t| (*t).to_owned()).collect(),
            ..NodeSubscription::default()
        })
    }

    fn snapshot(resources: Vec<Resource>) -> Snapshot {
        Snapshot::default().apply(&ConfigUpdate {
            revision: 1,
            snapshot: true,
            upserts: resources
                .into_iter()
                .map(|r| ConfigResource { resource: Some(r) })
                .collect(),
            ..ConfigUpdate::default()
        })
    }

    fn ids(subs: &[Arc<NodeSubscription>]) -> Vec<&str> {
        subs.iter().map(|s| s.id.as_str()).collect()
    }

    fn in_a_year() -> SystemTime {
        SystemTime::now() + Duration::from_secs(365 * 86_400)
    }

    #[test]
    fn active_subscriptions_naming_the_topic_match() {
        let s = snapshot(vec![
            sub("sub_a", "tnt_1", SubscriptionState::Active, &[TOPIC]),
            sub(
                "sub_b",
                "tnt_1",
                SubscriptionState::Active,
                &["prize.points_added"],
            ),
            sub("sub_c", "tnt_2", SubscriptionState::Active, &[TOPIC]),
        ]);
        let found = matching(
            &s,
            &tenant(Zone::Zone1, in_a_year()),
            TOPIC,
            Zone::Zone1,
            SystemTime::now(),
        );
        assert_eq!(ids(&found), ["sub_a"]);
    }

    #[test]
    fn a_stopped_subscription_does_not_match() {
        let s = snapshot(vec![sub(
            "sub_a",
            "tnt_1",
            SubscriptionState::Stopped,
            &[TOPIC],
        )]);
        let found = matching(
            &s,
            &tenant(Zone::Zone1, in_a_year()),
            TOPIC,
            Zone::Zone1,
            SystemTime::now(),
        );
        assert!(found.is_empty());
    }

    #[test]
    fn nothing_matches_once_the_zone_entitlement_has_ended() {
        let s = snapshot(vec![sub(
            "sub_a",
            "tnt_1",
            SubscriptionState::Active,
            &[TOPIC],
        )]);
        let ended = SystemTime::now() - Duration::from_secs(1);
        let found = matching(
            &s,
            &tenant(Zone::Zone1, ended),
            TOPIC,
            Zone::Zone1,
            SystemTime::now(),
        );
        assert!(found.is_empty());
    }

    #[test]
    fn nothing_matches_for_a_zone_never_bought() {
        let s = snapshot(vec![sub(
            "sub_a",
            "tnt_1",
            SubscriptionState::Active,
            &["message.first_open"],
        )]);
        let found = matching(
            &s,
            &tenant(Zone::Zone1, in_a_year()),
            "message.first_open",
            Zone::Zone2,
            SystemTime::now(),
        );
        assert!(found.is_empty());
    }
}
