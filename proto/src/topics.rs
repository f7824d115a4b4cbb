//! The catalog of event types (topics) that subscriptions may name, and the zone each is sold in
//! (PROTOCOLS.md §2). The control plane validates subscriptions against it; data-plane nodes
//! validate published events and check zone entitlements with it.

use crate::v1::Zone;

/// One event type of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    pub zone: Zone,
}

/// Every event type a subscription may name, in catalog order.
pub const TOPICS: [Topic; 6] = [
    Topic {
        name: "receipt.receipt_validated",
        zone: Zone::Zone1,
    },
    Topic {
        name: "form.surveycake_submitted",
        zone: Zone::Zone1,
    },
    Topic {
        name: "pnp.status_updated",
        zone: Zone::Zone1,
    },
    Topic {
        name: "pnp.profile_updated",
        zone: Zone::Zone1,
    },
    Topic {
        name: "prize.points_added",
        zone: Zone::Zone1,
    },
    Topic {
        name: "message.first_open",
        zone: Zone::Zone2,
    },
];

/// The zone a tenant must have bought to receive `topic`; `None` for a topic not in the catalog.
pub fn zone_of(topic: &str) -> Option<Zone> {
    TOPICS.iter().find(|t| t.name == topic).map(|t| t.zone)
}

/// The catalog's topic names joined for error messages.
pub fn known_names() -> String {
    TOPICS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_is_the_only_zone_2_topic() {
        let zone_2: Vec<_> = TOPICS
            .iter()
            .filter(|t| t.zone == Zone::Zone2)
            .map(|t| t.name)
            .collect();
        assert_eq!(zone_2, ["message.first_open"]);
    }

    #[test]
    fn receipt_validated_is_in_zone_1() {
        assert_eq!(zone_of("receipt.receipt_validated"), Some(Zone::Zone1));
    }

    #[test]
    fn known_names_lists_the_catalog_in_order() {
        assert!(known_names().starts_with("receipt.receipt_validated, form.surveycake_submitted"));
        assert!(known_names().ends_with("message.first_open"));
    }

    #[test]
    fn an_unknown_topic_has_no_zone() {
        assert_eq!(zone_of("order.created"), None);
    }
}
