//! One revision of the configuration and how an update turns it into the next.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt as _};
use hookplane_proto::v1::{
    ConfigUpdate, ForwardingKind, NodeChannel, NodeForwardingSet, NodePublisherToken,
    NodeSubscription, NodeTenant, ResourceKind, config_resource::Resource,
};

/// One revision of the configuration, with the lookups the hot path needs precomputed.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub revision: u64,
    /// The control plane's store this config came from (empty: none named yet). Saved with the
    /// config, so the node still knows it after a restart.
    pub store_id: String,
    /// The bootstrap publisher token's hash: it publishes for any tenant.
    pub publisher_token_sha256: String,
    /// API tokens that may publish, by id. A config saved before tokens existed holds none.
    publisher_tokens: HashMap<String, Arc<NodePublisherToken>>,
    tenants: HashMap<String, Arc<NodeTenant>>,
    channel_records: HashMap<String, Arc<NodeChannel>>,
    forwarding_sets: HashMap<String, Arc<NodeForwardingSet>>,
    subscriptions: HashMap<String, Arc<NodeSubscription>>,
    channels: HashMap<String, Arc<ChannelEntry>>,
    /// Every subscription of a tenant, whatever its state, ordered by id.
    tenant_subscriptions: HashMap<String, Vec<Arc<NodeSubscription>>>,
}

/// An instant of the config as the queue's clock reads it.
fn system_time(ts: &prost_types::Timestamp) -> Option<std::time::SystemTime> {
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(seconds, nanos))
}

/// A channel with the forwarding sets its webhooks fan out to.
pub struct ChannelEntry {
    pub channel: Arc<NodeChannel>,
    /// Enabled raw forwards, ordered by id.
    pub targets: Vec<Arc<NodeForwardingSet>>,
    /// Enabled Genesys Open Messaging connectors, ordered by id.
    pub genesys: Vec<Arc<NodeForwardingSet>>,
}

impl Snapshot {
    /// The whole snapshot as one full update: what applying it to an empty node rebuilds.
    pub fn to_update(&self) -> ConfigUpdate {
        let upserts = self
            .tenants
            .values()
            .map(|t| Resource::Tenant((**t).clone()))
            .chain(
                self.channel_records
                    .values()
                    .map(|c| Resource::Channel((**c).clone())),
            )
            .chain(
                self.forwarding_sets
                    .values()
                    .map(|f| Resource::ForwardingSet((**f).clone())),
            )
            .chain(
                self.subscriptions
                    .values()
                    .map(|s| Resource::Subscription((**s).clone())),
            )
            .chain(
                self.publisher_tokens
                    .values()
                    .map(|t| Resource::PublisherToken((**t).clone())),
            )
            .map(|r| hookplane_proto::v1::ConfigResource { resource: Some(r) })
            .collect();
        ConfigUpdate {
            revision: self.revision,
            snapshot: true,
            upserts,
            publisher_token_sha256: self.publisher_token_sha256.clone(),
            store_id: self.store_id.clone(),
            ..ConfigUpdate::default()
        }
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<ChannelEntry>> {
        self.channels.get(id)
    }

    pub fn forwarding_set(&self, id: &str) -> Option<&Arc<NodeForwardingSet>> {
        self.forwarding_sets.get(id)
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<NodeTenant>> {
        self.tenants.get(id)
    }

    /// Each purged tenant with the time until which its jobs are to be dropped.
    pub fn purges(&self) -> impl Iterator<Item = (&str, std::time::SystemTime)> {
        self.tenants.values().filter_map(|t| {
            let before = system_time(t.purge_before.as_ref()?)?;
            Some((t.id.as_str(), before))
        })
    }

    pub fn subscription(&self, id: &str) -> Option<&Arc<NodeSubscription>> {
        self.subscriptions.get(id)
    }

    /// The API token `id`, if it may publish and has not been revoked.
    pub fn publisher_token(&self, id: &str) -> Option<&Arc<NodePublisherToken>> {
        self.publisher_tokens.get(id)
    }

    /// The tenant's subscriptions (any state), ordered by id.
    pub fn subscriptions_of(&self, tenant_id: &str) -> &[Arc<NodeSubscription>] {
        self.tenant_subscriptions
            .get(tenant_id)
            .map_or(&[], Vec::as_slice)
    }

    /// The snapshot after `update`: a full replacement when it is a snapshot, else its upserts
    /// and deletes on top of this one.
    pub fn apply(&self, update: &ConfigUpdate) -> Snapshot {
        let mut next = if update.snapshot {
            Snapshot::default()
        } else {
            Snapshot {
                channels: HashMap::new(),
                tenant_subscriptions: HashMap::new(),
                ..self.clone()
            }
        };
        next.revision = update.revision;
        // A control plane older than store ids names none: the one known is kept.
        next.store_id = if update.store_id.is_empty() {
            self.store_id.clone()
        } else {
            update.store_id.clone()
        };
        if update.snapshot || !update.publisher_token_sha256.is_empty() {
            next.publisher_token_sha256 = update.publisher_token_sha256.clone();
        }
        for key in &update.deletes {
            match ResourceKind::try_from(key.kind) {
                Ok(ResourceKind::Tenant) => {
                    next.tenants.remove(&key.id);
                }
                Ok(ResourceKind::Channel) => {
                    next.channel_records.remove(&key.id);
                }
                Ok(ResourceKind::ForwardingSet) => {
                    next.forwarding_sets.remove(&key.id);
                }
                Ok(ResourceKind::Subscription) => {
                    next.subscriptions.remove(&key.id);
                }
                Ok(ResourceKind::PublisherToken) => {
                    next.publisher_tokens.remove(&key.id);
                }
                Ok(ResourceKind::Unspecified) | Err(_) => {}
            }
        }
        for upsert in &update.upserts {
            match &upsert.resource {
                Some(Resource::Tenant(t)) => {
                    next.tenants.insert(t.id.clone(), Arc::new(t.clone()));
                }
                Some(Resource::Channel(c)) => {
                    next.channel_records
                        .insert(c.id.clone(), Arc::new(c.clone()));
                }
                Some(Resource::ForwardingSet(f)) => {
                    next.forwarding_sets
                        .insert(f.id.clone(), Arc::new(f.clone()));
                }
                Some(Resource::Subscription(s)) => {
                    next.subscriptions.insert(s.id.clone(), Arc::new(s.clone()));
                }
                Some(Resource::PublisherToken(t)) => {
                    next.publisher_tokens
                        .insert(t.id.clone(), Arc::new(t.clone()));
                }
                None => {}
            }
        }
        next.index_channels();
        next.index_subscriptions();
        next
    }

    fn index_subscriptions(&mut self) {
        let mut by_tenant: HashMap<String, Vec<Arc<NodeSubscription>>> = HashMap::new();
        for sub in self.subscriptions.values() {
            by_tenant
                .entry(sub.tenant_id.clone())
                .or_default()
                .push(Arc::clone(sub));
        }
        for subs in by_tenant.values_mut() {
            subs.sort_by(|a, b| a.id.cmp(&b.id));
        }
        self.tenant_subscriptions = by_tenant;
    }

    fn index_channels(&mut self) {
        let mut targets: HashMap<&str, Vec<Arc<NodeForwardingSet>>> = HashMap::new();
        let mut genesys: HashMap<&str, Vec<Arc<NodeForwardingSet>>> = HashMap::new();
        for set in self.forwarding_sets.values().filter(|s| s.enabled) {
            let by_channel = match ForwardingKind::try_from(set.kind) {
                Ok(ForwardingKind::Raw | ForwardingKind::Unspecified) => &mut targets,
                Ok(ForwardingKind::GenesysOpenMessaging) => &mut genesys,
                // A kind newer than this node: better skipped than forwarded raw by mistake.
                Err(_) => continue,
            };
            by_channel
                .entry(set.channel_id.as_str())
                .or_default()
                .push(Arc::clone(set));
        }
        let by_id = |sets: &mut HashMap<&str, Vec<Arc<NodeForwardingSet>>>, id: &str| {
            let mut sets = sets.remove(id).unwrap_or_default();
            sets.sort_by(|a, b| a.id.cmp(&b.id));
            sets
        };
        let channels = self
            .channel_records
            .iter()
            .map(|(id, channel)| {
                let entry = ChannelEntry {
                    channel: Arc::clone(channel),
                    targets: by_id(&mut targets, id),
                    genesys: by_id(&mut genesys, id),
                };
                (id.clone(), Arc::new(entry))
            })
            .collect();
        self.channels = channels;
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::{ConfigResource, ResourceKey};

    use super::*;

    fn channel(id: &str) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::Channel(NodeChannel {
                id: id.to_owned(),
                tenant_id: "tnt_1".to_owned(),
                ..NodeChannel::default()
            })),
        }
    }

    fn set(id: &str, channel: &str, enabled: bool) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::ForwardingSet(NodeForwardingSet {
                id: id.to_owned(),
                channel_id: channel.to_owned(),
                enabled,
                url: format!("https://example.com/{id}"),
                ..NodeForwardingSet::default()
            })),
        }
    }

    fn full(revision: u64, upserts: Vec<ConfigResource>) -> ConfigUpdate {
        ConfigUpdate {
            revision,
            snapshot: true,
            upserts,
            ..ConfigUpdate::default()
        }
    }

    fn target_ids(s: &Snapshot, channel: &str) -> Vec<String> {
        s.channel(channel)
            .unwrap()
            .targets
            .iter()
            .map(|t| t.id.clone())
            .collect()
    }

    #[test]
    fn a_channel_lists_its_enabled_forwarding_sets_in_id_order() {
        let s = Snapshot::default().apply(&full(
            3,
            vec![
                channel("ch_1"),
                set("fwd_b", "ch_1", true),
                set("fwd_a", "ch_1", true),
                set("fwd_c", "ch_1", false),
            ],
        ));
        assert_eq!(s.revision, 3);
        assert_eq!(target_ids(&s, "ch_1"), vec!["fwd_a", "fwd_b"]);
    }

    #[test]
    fn a_snapshot_replaces_everything_held() {
        let s = Snapshot::default().apply(&full(1, vec![channel("ch_1")]));
        let s = s.apply(&full(2, vec![channel("ch_2")]));
        assert!(s.channel("ch_1").is_none());
        assert!(s.channel("ch_2").is_some());
    }

    #[test]
    fn a_change_applies_upserts_and_deletes_on_top() {
        let s =
            Snapshot::default().apply(&full(1, vec![channel("ch_1"), set("fwd_a", "ch_1", true)]));
        let s = s.apply(&ConfigUpdate {
            revision: 2,
            upserts: vec![set("fwd_b", "ch_1", true)],
            deletes: vec![ResourceKey {
                kind: ResourceKind::ForwardingSet.into(),
                id: "fwd_a".to_owned(),
            }],
            ..ConfigUpdate::default()
        });
        assert_eq!(s.revision, 2);
        assert_eq!(target_ids(&s, "ch_1"), vec!["fwd_b"]);
        assert!(s.forwarding_set("fwd_a").is_none());
    }

    #[test]
    fn the_store_id_is_kept_through_changes_and_saved_with_the_config() {
        let s = Snapshot::default().apply(&ConfigUpdate {
            store_id: "st_a".to_owned(),
            ..full(1, vec![channel("ch_1")])
        });
        let s = s.apply(&ConfigUpdate {
            revision: 2,
            upserts: vec![channel("ch_2")],
            ..ConfigUpdate::default()
        });
        assert_eq!(s.store_id, "st_a");
        let saved = s.to_update();
        assert_eq!(saved.store_id, "st_a");
        assert_eq!(Snapshot::default().apply(&saved).store_id, "st_a");
    }

    #[test]
    fn applying_leaves_the_previous_snapshot_untouched() {
        let before = Snapshot::default().apply(&full(1, vec![channel("ch_1")]));
        let _after = before.apply(&ConfigUpdate {
            revision: 2,
            deletes: vec![ResourceKey {
                kind: ResourceKind::Channel.into(),
                id: "ch_1".to_owned(),
            }],
            ..ConfigUpdate::default()
        });
        assert!(before.channel("ch_1").is_some());
    }

    fn subscription(id: &str, tenant: &str) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::Subscription(NodeSubscription {
                id: id.to_owned(),
                tenant_id: tenant.to_owned(),
                ..NodeSubscription::default()
            })),
        }
    }

    fn subscription_ids(s: &Snapshot, tenant: &str) -> Vec<String> {
        s.subscriptions_of(tenant)
            .iter()
            .map(|sub| sub.id.clone())
            .collect()
    }

    #[test]
    fn a_tenant_lists_its_subscriptions_in_id_order() {
        let s = Snapshot::default().apply(&full(
            1,
            vec![
                subscription("sub_b", "tnt_1"),
                subscription("sub_a", "tnt_1"),
                subscription("sub_c", "tnt_2"),
            ],
        ));
        assert_eq!(subscription_ids(&s, "tnt_1"), ["sub_a", "sub_b"]);
        assert!(s.subscriptions_of("tnt_3").is_empty());
    }

    #[test]
    fn a_deleted_subscription_leaves_its_tenants_list() {
        let s = Snapshot::default().apply(&full(1, vec![subscription("sub_a", "tnt_1")]));
        let s = s.apply(&ConfigUpdate {
            revision: 2,
            deletes: vec![ResourceKey {
                kind: ResourceKind::Subscription.into(),
                id: "sub_a".to_owned(),
            }],
            ..ConfigUpdate::default()
        });
        assert!(s.subscriptions_of("tnt_1").is_empty());
    }

    #[test]
    fn genesys_sets_are_not_raw_forwards() {
        let mut genesys = set("fwd_g", "ch_1", true);
        if let Some(Resource::ForwardingSet(f)) = genesys.resource.as_mut() {
            f.kind = ForwardingKind::GenesysOpenMessaging.into();
        }
        let s = Snapshot::default().apply(&full(1, vec![channel("ch_1"), genesys]));
        assert!(target_ids(&s, "ch_1").is_empty());
        assert!(s.forwarding_set("fwd_g").is_some());
    }

    #[test]
    fn a_channel_lists_its_enabled_genesys_connectors_apart() {
        let genesys = |id: &str, enabled: bool| {
            let mut resource = set(id, "ch_1", enabled);
            if let Some(Resource::ForwardingSet(f)) = resource.resource.as_mut() {
                f.kind = ForwardingKind::GenesysOpenMessaging.into();
            }
            resource
        };
        let s = Snapshot::default().apply(&full(
            1,
            vec![
                channel("ch_1"),
                genesys("fwd_g2", true),
                genesys("fwd_g1", true),
                genesys("fwd_off", false),
                set("fwd_raw", "ch_1", true),
            ],
        ));
        let entry = s.channel("ch_1").unwrap();
        let ids: Vec<&str> = entry.genesys.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["fwd_g1", "fwd_g2"]);
        assert_eq!(target_ids(&s, "ch_1"), vec!["fwd_raw"]);
    }

    fn publisher_token(id: &str, tenant: &str) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::PublisherToken(NodePublisherToken {
                id: id.to_owned(),
                secret_sha256: "00".repeat(32),
                tenant_id: tenant.to_owned(),
                expire_time: None,
            })),
        }
    }

    #[test]
    fn publisher_tokens_are_kept_until_deleted_and_saved_with_the_config() {
        let s = Snapshot::default().apply(&full(1, vec![publisher_token("tok_a", "tnt_1")]));
        assert_eq!(s.publisher_token("tok_a").unwrap().tenant_id, "tnt_1");
        let saved = Snapshot::default().apply(&s.to_update());
        assert!(saved.publisher_token("tok_a").is_some());
        let revoked = s.apply(&ConfigUpdate {
            revision: 2,
            deletes: vec![ResourceKey {
                kind: ResourceKind::PublisherToken.into(),
                id: "tok_a".to_owned(),
            }],
            ..ConfigUpdate::default()
        });
        assert!(revoked.publisher_token("tok_a").is_none());
    }
}
