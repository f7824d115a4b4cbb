//! Stable identities of LINE events: the event id a webhook request gets, and the one a single
//! LINE event gets. Both derive from content, never from arrival, so a LINE redelivery and a
//! crash duplicate carry the same ids (and so the same delivery ids, `queue::delivery_id`) and
//! receivers can dedupe on them.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The few fields of a LINE webhook body the node reads; everything else stays opaque.
#[derive(Debug, Deserialize)]
pub struct WebhookHead {
    pub events: Vec<EventHead>,
}

#[derive(Debug, Deserialize)]
pub struct EventHead {
    #[serde(rename = "webhookEventId", default)]
    pub webhook_event_id: Option<String>,
}

impl WebhookHead {
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// `evt_` + a hash of the sorted webhookEventIds, or of the body when any is missing.
    pub fn event_id(&self, body: &[u8]) -> String {
        let ids: Option<Vec<&str>> = self
            .events
            .iter()
            .map(|e| e.webhook_event_id.as_deref().filter(|id| !id.is_empty()))
            .collect();
        match ids {
            Some(ids) if !ids.is_empty() => of_webhook_event_ids(ids),
            _ => {
                let mut hash = Sha256::new();
                hash.update(b"line-webhook-body\n");
                hash.update(body);
                format!("evt_{}", hex::encode(&hash.finalize()[..16]))
            }
        }
    }
}

fn of_webhook_event_ids(mut ids: Vec<&str>) -> String {
    ids.sort_unstable();
    ids.dedup();
    let mut hash = Sha256::new();
    hash.update(b"line-webhook-event-ids\n");
    for id in ids {
        hash.update(id.as_bytes());
        hash.update(b"\n");
    }
    format!("evt_{}", hex::encode(&hash.finalize()[..16]))
}

/// The event id of one LINE event: what a webhook carrying only that event gets, so a
/// connector's delivery of one message shares its id with a raw forward of it. Without a
/// webhookEventId, LINE's message id stands in.
pub fn single_event_id(webhook_event_id: &str, line_message_id: &str) -> String {
    if !webhook_event_id.is_empty() {
        return of_webhook_event_ids(vec![webhook_event_id]);
    }
    let mut hash = Sha256::new();
    hash.update(b"line-message-id\n");
    hash.update(line_message_id.as_bytes());
    format!("evt_{}", hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_id(body: &str) -> String {
        WebhookHead::parse(body.as_bytes())
            .unwrap()
            .event_id(body.as_bytes())
    }

    #[test]
    fn the_event_id_ignores_everything_but_the_webhook_event_ids() {
        let first = r#"{"destination":"U1","events":[{"type":"message","webhookEventId":"01A","deliveryContext":{"isRedelivery":false}}]}"#;
        let redelivered = r#"{"destination":"U1","events":[{"type":"message","webhookEventId":"01A","deliveryContext":{"isRedelivery":true}}]}"#;
        assert_eq!(event_id(first), event_id(redelivered));
    }

    #[test]
    fn the_event_id_does_not_depend_on_event_order() {
        let ab = r#"{"events":[{"webhookEventId":"01A"},{"webhookEventId":"01B"}]}"#;
        let ba = r#"{"events":[{"webhookEventId":"01B"},{"webhookEventId":"01A"}]}"#;
        assert_eq!(event_id(ab), event_id(ba));
    }

    #[test]
    fn different_events_get_different_ids() {
        let a = r#"{"events":[{"webhookEventId":"01A"}]}"#;
        let b = r#"{"events":[{"webhookEventId":"01B"}]}"#;
        assert_ne!(event_id(a), event_id(b));
    }

    #[test]
    fn without_webhook_event_ids_the_body_decides() {
        let a = r#"{"events":[{"type":"follow"}]}"#;
        let b = r#"{"events":[{"type":"unfollow"}]}"#;
        assert_eq!(event_id(a), event_id(a));
        assert_ne!(event_id(a), event_id(b));
    }

    #[test]
    fn the_event_id_has_its_prefix_and_a_fixed_length() {
        let id = event_id(r#"{"events":[{"webhookEventId":"01A"}]}"#);
        assert!(id.starts_with("evt_"));
        assert_eq!(id.len(), 4 + 32);
    }

    #[test]
    fn one_event_has_the_id_of_a_webhook_carrying_only_it() {
        let single = r#"{"events":[{"webhookEventId":"01A"}]}"#;
        assert_eq!(single_event_id("01A", "m1"), event_id(single));
        assert_ne!(single_event_id("01A", "m1"), single_event_id("01B", "m1"));
    }

    #[test]
    fn without_a_webhook_event_id_the_message_id_decides() {
        assert_eq!(single_event_id("", "m1"), single_event_id("", "m1"));
        assert_ne!(single_event_id("", "m1"), single_event_id("", "m2"));
    }

    #[test]
    fn unknown_event_types_and_fields_are_tolerated() {
        let body = r#"{"destination":"U1","events":[{"type":"brandNewThing","webhookEventId":"01A","x":{"y":[1,2]}}]}"#;
        assert_eq!(WebhookHead::parse(body.as_bytes()).unwrap().events.len(), 1);
    }

    #[test]
    fn a_body_without_events_is_rejected() {
        assert!(WebhookHead::parse(br#"{"destination":"U1"}"#).is_err());
        assert!(WebhookHead::parse(b"not json").is_err());
    }
}
