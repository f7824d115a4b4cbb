//! The queued work a LINE webhook makes for a channel's Genesys connectors: one job per message
//! per connector, so retries, the attempt log and failure emails work per message, as they do
//! per request for raw forwards.

use std::time::SystemTime;

use tracing::warn;

use super::mapping;
use crate::{
    config::ChannelEntry,
    line_event::single_event_id,
    queue::{ForwardingSetRef, Job, unix_ms},
};

/// The jobs for every enabled Genesys set of `channel`, and how many events were not messages
/// (counted once, however many sets there are).
pub fn inbound_jobs(channel: &ChannelEntry, webhook: &[u8], now: SystemTime) -> (Vec<Job>, usize) {
    let mut jobs = Vec::new();
    let mut skipped = 0;
    for (n, set) in channel.genesys.iter().enumerate() {
        let attributes = set
            .genesys
            .as_ref()
            .map(|g| g.custom_attributes.clone())
            .unwrap_or_default();
        let translation = match mapping::translate(webhook, &channel.channel.metadata, &attributes)
        {
            Ok(translation) => translation,
            Err(e) => {
                // The body passed the signature check and the ingress's own parse, so this is
                // hardly reachable. The error's text may quote the body: only its place is logged.
                warn!(
                    forwarding_set_id = %set.id,
                    line = e.line(),
                    column = e.column(),
                    "webhook not translatable for Genesys"
                );
                continue;
            }
        };
        if n == 0 {
            skipped = translation.skipped;
        }
        jobs.extend(translation.messages.into_iter().map(|message| {
            let event_id = single_event_id(&message.webhook_event_id, &message.line_message_id);
            let to = ForwardingSetRef {
                id: &set.id,
                channel_id: &channel.channel.id,
                tenant_id: &channel.channel.tenant_id,
            };
            Job::genesys_inbound(&event_id, to, message.body, unix_ms(now))
        }));
    }
    (jobs, skipped)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use hookplane_proto::v1::{ForwardingKind, GenesysSettings, NodeChannel, NodeForwardingSet};
    use serde_json::{Value, json};

    use super::*;

    fn set(id: &str, attributes: &[(&str, &str)]) -> Arc<NodeForwardingSet> {
        Arc::new(NodeForwardingSet {
            id: id.to_owned(),
            channel_id: "ch_1".to_owned(),
            tenant_id: "tnt_1".to_owned(),
            enabled: true,
            kind: ForwardingKind::GenesysOpenMessaging.into(),
            genesys: Some(GenesysSettings {
                custom_attributes: attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..GenesysSettings::default()
            }),
            ..NodeForwardingSet::default()
        })
    }

    fn channel(sets: Vec<Arc<NodeForwardingSet>>) -> ChannelEntry {
        ChannelEntry {
            channel: Arc::new(NodeChannel {
                id: "ch_1".to_owned(),
                tenant_id: "tnt_1".to_owned(),
                metadata: HashMap::from([("market".to_owned(), "TW".to_owned())]),
                ..NodeChannel::default()
            }),
            targets: Vec::new(),
            genesys: sets,
        }
    }

    fn webhook() -> Vec<u8> {
        let message = |id: &str, event: &str| {
            json!({"type": "message", "timestamp": 1, "webhookEventId": event,
                   "source": {"type": "user", "userId": "U1"},
                   "message": {"id": id, "type": "text", "text": "hi"}})
        };
        json!({"events": [
            message("m1", "01A"),
            {"type": "follow", "timestamp": 1, "webhookEventId": "01F", "source": {"type": "user", "userId": "U1"}},
            message("m2", "01B"),
        ]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn each_message_becomes_one_job_per_set() {
        let entry = channel(vec![set("fwd_a", &[]), set("fwd_b", &[])]);
        let (jobs, skipped) = inbound_jobs(&entry, &webhook(), SystemTime::now());
        assert_eq!(jobs.len(), 4);
        assert_eq!(skipped, 1);
        assert!(
            jobs.iter()
                .all(|j| j.leg() == crate::queue::Leg::GenesysInbound)
        );
        assert!(
            jobs.iter()
                .all(|j| j.channel_id == "ch_1" && j.tenant_id == "tnt_1")
        );
    }

    #[test]
    fn delivery_ids_are_stable_per_event_and_set() {
        let entry = channel(vec![set("fwd_a", &[]), set("fwd_b", &[])]);
        let (first, _) = inbound_jobs(&entry, &webhook(), SystemTime::now());
        let (again, _) = inbound_jobs(&entry, &webhook(), SystemTime::now());
        let ids = |jobs: &[Job]| {
            jobs.iter()
                .map(|j| j.delivery_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&first), ids(&again));
        let mut unique = ids(&first);
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
        assert_eq!(first[0].event_id, single_event_id("01A", "m1"));
    }

    #[test]
    fn each_set_sends_its_own_attributes() {
        let entry = channel(vec![
            set("fwd_a", &[("brand", "A")]),
            set("fwd_b", &[("brand", "B")]),
        ]);
        let (jobs, _) = inbound_jobs(&entry, &webhook(), SystemTime::now());
        let brand = |job: &Job| {
            let body: Value = serde_json::from_slice(&job.body).unwrap();
            body["channel"]["metadata"]["customAttributes"]["brand"].clone()
        };
        assert_eq!(brand(&jobs[0]), "A");
        assert_eq!(brand(&jobs[2]), "B");
    }

    #[test]
    fn a_channel_without_genesys_sets_makes_no_jobs() {
        let (jobs, skipped) = inbound_jobs(&channel(vec![]), &webhook(), SystemTime::now());
        assert!(jobs.is_empty());
        assert_eq!(skipped, 0);
    }
}
