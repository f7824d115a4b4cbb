//! ConfigService: the live configuration stream to data-plane nodes (a snapshot or the changes
//! since the node's revision, then every later commit once it is durable, each update naming the
//! store) and the nodes' delivery reports, which go to the delivery log and, for subscriptions,
//! to the system stop.

use std::collections::HashSet;
use std::sync::Arc;

use hookplane_proto::v1::config_resource::Resource;
use hookplane_proto::v1::config_service_server::ConfigService;
use hookplane_proto::v1::{
    ConfigResource, ConfigUpdate, DeliveryReport, ForwardingKind, GenesysSettings, NodeChannel,
    NodeForwardingSet, NodePublisherToken, NodeSecret, NodeSubscription, NodeTenant,
    ReportDeliveriesResponse, ReportTokenUseRequest, ReportTokenUseResponse, ResourceKey,
    ResourceKind, WatchConfigRequest,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::clock::{Time, duration_to_proto};
use crate::delivery_log::{DeliveryLog, RetryBatch};
use crate::error::Error;
use crate::metrics::{ControlMetrics, SubscriberGuard};
use crate::report_intake::ReportIntake;
use crate::sealing::{Place, Sealed, Sealer};
use crate::shutdown::Stopping;
use crate::store::{
    ChannelRecord, ForwardingSetRecord, PreviousSecret, Store, SubscriptionRecord, TenantRecord,
    TokenRecord, Touched, sealed_field,
};
use crate::tenants::zone_entitlements;
use crate::tokens::{LastUsed, publishes};

/// Delivery ids one config update carries at most: a recover's thousands go in several, each
/// far below the stream's message limit.
const RETRY_IDS_PER_UPDATE: usize = 1000;

pub(crate) struct ConfigApi {
    store: Store,
    reports: ReportIntake,
    publisher_token_sha256: String,
    retries: broadcast::Sender<RetryBatch>,
    stopping: Stopping,
    metrics: ControlMetrics,
    last_used: Arc<LastUsed>,
}

impl ConfigApi {
    pub fn new(
        store: Store,
        log: &DeliveryLog,
        reports: ReportIntake,
        publisher_token: &str,
        stopping: Stopping,
        metrics: ControlMetrics,
        last_used: Arc<LastUsed>,
    ) -> ConfigApi {
        // The delivery log is where admins' retries are asked for; each stream passes them on.
        let retries = log.retry_requests();
        ConfigApi {
            metrics,
            store,
            reports,
            publisher_token_sha256: hex::encode(Sha256::digest(publisher_token.as_bytes())),
            retries,
            stopping,
            last_used,
        }
    }
}

/// Builds config updates from the store for one node.
#[derive(Clone)]
pub(crate) struct UpdateBuilder {
    store: Store,
    publisher_token_sha256: String,
}

impl UpdateBuilder {
    fn base(&self, revision: u64, snapshot: bool) -> ConfigUpdate {
        ConfigUpdate {
            revision,
            snapshot,
            upserts: Vec::new(),
            deletes: Vec::new(),
            publisher_token_sha256: self.publisher_token_sha256.clone(),
            retry_delivery_ids: Vec::new(),
            store_id: self.store.id().to_owned(),
        }
    }

    /// The first update for a node holding `last_revision`: changes since then when the change
    /// log still covers them, otherwise a full snapshot. A node ahead of the store (a store
    /// emptied or restored from a backup) gets the snapshot too, and refuses it.
    pub fn first(&self, last_revision: u64) -> Result<ConfigUpdate, Error> {
        let current = self.store.durable_revision();
        if last_revision == 0 || last_revision > current {
            return self.snapshot();
        }
        if last_revision == current {
            return Ok(self.base(current, false));
        }
        match self.since(last_revision)? {
            Some(update) => Ok(update),
            None => self.snapshot(),
        }
    }

    /// Every resource, secrets in clear. The revision is read before the resources: anything
    /// committed meanwhile is newer than it and will be sent again in the next update.
    pub fn snapshot(&self) -> Result<ConfigUpdate, Error> {
        let mut update = self.base(self.store.durable_revision(), true);
        let sealer = self.store.sealer();
        for t in self.store.all_tenants()? {
            update
                .upserts
                .push(resource(Resource::Tenant(node_tenant(&t))));
        }
        for c in self.store.all_channels()? {
            update
                .upserts
                .push(resource(Resource::Channel(node_channel(&c, sealer)?)));
        }
        for f in self.store.all_forwarding_sets()? {
            update
                .upserts
                .push(resource(Resource::ForwardingSet(node_forwarding_set(
                    &f, sealer,
                )?)));
        }
        for s in self.store.all_subscriptions()? {
            update
                .upserts
                .push(resource(Resource::Subscription(node_subscription(
                    &s, sealer,
                )?)));
        }
        for t in self.store.all_tokens()? {
            if let Some(token) = node_publisher_token(&t) {
                update
                    .upserts
                    .push(resource(Resource::PublisherToken(token)));
            }
        }
        Ok(update)
    }

    /// The current value of everything touched after `after` up to the durable revision, or
    /// `None` when the change log no longer reaches back that far.
    pub fn since(&self, after: u64) -> Result<Option<ConfigUpdate>, Error> {
        let changes = self
            .store
            .changes_between(after, self.store.durable_revision())?;
        let Some(&(first, _)) = changes.first() else {
            return Ok(Some(self.base(after, false)));
        };
        if first != after + 1 {
            return Ok(None);
        }
        let last = changes.last().map_or(after, |(rev, _)| *rev);
        let mut update = self.base(last, false);
        let mut seen = HashSet::new();
        let sealer = self.store.sealer();
        for touched in changes.into_iter().flat_map(|(_, t)| t) {
            if !seen.insert(touched.clone()) {
                continue;
            }
            match self.current(&touched, sealer)? {
                Some(r) => update.upserts.push(resource(r)),
                None => update.deletes.push(ResourceKey {
                    kind: touched.kind,
                    id: touched.id,
                }),
            }
        }
        Ok(Some(update))
    }

    fn current(&self, touched: &Touched, sealer: &Sealer) -> Result<Option<Resource>, Error> {
        let id = touched.id.as_str();
        Ok(match ResourceKind::try_from(touched.kind) {
            Ok(ResourceKind::Tenant) => self
                .store
                .find_tenant(id)?
                .map(|t| Resource::Tenant(node_tenant(&t))),
            Ok(ResourceKind::Channel) => match self.store.find_channel(id)? {
                Some(c) => Some(Resource::Channel(node_channel(&c, sealer)?)),
                None => None,
            },
            Ok(ResourceKind::ForwardingSet) => match self.store.find_forwarding_set(id)? {
                Some(f) => Some(Resource::ForwardingSet(node_forwarding_set(&f, sealer)?)),
                None => None,
            },
            Ok(ResourceKind::Subscription) => match self.store.find_subscription(id)? {
                Some(s) => Some(Resource::Subscription(node_subscription(&s, sealer)?)),
                None => None,
            },
            // A token that may not publish goes to nodes as a delete, like a revoked one.
            Ok(ResourceKind::PublisherToken) => self
                .store
                .find_token(id)?
                .as_ref()
                .and_then(node_publisher_token)
                .map(Resource::PublisherToken),
            Ok(ResourceKind::Unspecified) | Err(_) => None,
        })
    }

    fn retry(&self, revision: u64, ids: Vec<String>) -> ConfigUpdate {
        let mut update = self.base(revision, false);
        update.retry_delivery_ids = ids;
        update
    }
}

fn resource(r: Resource) -> ConfigResource {
    ConfigResource { resource: Some(r) }
}

/// What a node needs to check a token that may publish: never the secret, only its hash.
fn node_publisher_token(t: &TokenRecord) -> Option<NodePublisherToken> {
    publishes(t.role).then(|| NodePublisherToken {
        id: t.id.clone(),
        secret_sha256: t.secret_sha256.clone(),
        tenant_id: t.tenant_id.clone(),
        expire_time: t.expire_time.map(Time::to_proto),
    })
}

fn node_tenant(t: &TenantRecord) -> NodeTenant {
    NodeTenant {
        id: t.id.clone(),
        display_name: t.display_name.clone(),
        zones: zone_entitlements(t),
        purge_before: t.purged_before.map(Time::to_proto),
    }
}

/// The current secret first, then the previous one while its grace period runs.
fn node_secrets(
    record: &str,
    current: &Sealed,
    previous: Option<&PreviousSecret>,
    sealer: &Sealer,
) -> Result<Vec<NodeSecret>, Error> {
    let mut secrets = vec![NodeSecret {
        secret: sealer.open(current, Place::new(record, sealed_field::SECRET))?,
        valid_until: None,
    }];
    if let Some(p) = previous.filter(|p| p.still_valid(Time::now())) {
        secrets.push(NodeSecret {
            secret: sealer.open(&p.secret, Place::new(record, sealed_field::PREVIOUS_SECRET))?,
            valid_until: Some(p.valid_until.to_proto()),
        });
    }
    Ok(secrets)
}

fn node_channel(c: &ChannelRecord, sealer: &Sealer) -> Result<NodeChannel, Error> {
    Ok(NodeChannel {
        id: c.id.clone(),
        tenant_id: c.tenant_id.clone(),
        display_name: c.display_name.clone(),
        secrets: node_secrets(&c.id, &c.secret, c.previous_secret.as_ref(), sealer)?,
        access_token: match &c.access_token {
            Some(token) => sealer.open(token, Place::new(&c.id, sealed_field::ACCESS_TOKEN))?,
            None => String::new(),
        },
        metadata: c
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn node_forwarding_set(
    f: &ForwardingSetRecord,
    sealer: &Sealer,
) -> Result<NodeForwardingSet, Error> {
    let genesys = match &f.genesys {
        Some(g) => Some(GenesysSettings {
            region_domain: g.region_domain.clone(),
            login_base_url: g.login_base_url.clone(),
            api_base_url: g.api_base_url.clone(),
            client_id: g.client_id.clone(),
            client_secret: sealer.open(
                &g.client_secret,
                Place::new(&f.id, sealed_field::GENESYS_CLIENT_SECRET),
            )?,
            integration_id: g.integration_id.clone(),
            outbound_signature_secret: sealer.open(
                &g.outbound_signature_secret,
                Place::new(&f.id, sealed_field::GENESYS_OUTBOUND_SIGNATURE_SECRET),
            )?,
            custom_attributes: g
                .custom_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        None => None,
    };
    Ok(NodeForwardingSet {
        id: f.id.clone(),
        channel_id: f.channel_id.clone(),
        tenant_id: f.tenant_id.clone(),
        name: f.name.clone(),
        url: f.url.clone(),
        enabled: f.enabled,
        kind: if f.kind == ForwardingKind::Unspecified as i32 {
            ForwardingKind::Raw as i32
        } else {
            f.kind
        },
        timeout: Some(duration_to_proto(f.timeout)),
        genesys,
    })
}

fn node_subscription(s: &SubscriptionRecord, sealer: &Sealer) -> Result<NodeSubscription, Error> {
    Ok(NodeSubscription {
        id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        name: s.name.clone(),
        url: s.url.clone(),
        event_types: s.event_types.clone(),
        state: s.state,
        signature_scheme: s.signature_scheme,
        secrets: node_secrets(&s.id, &s.secret, s.previous_secret.as_ref(), sealer)?,
    })
}

type UpdateSender = mpsc::Sender<Result<ConfigUpdate, Status>>;

/// Feeds one node's stream until the node goes away or the server stops.
struct NodeStream {
    node_id: String,
    builder: UpdateBuilder,
    tx: UpdateSender,
    retries: broadcast::Receiver<RetryBatch>,
    stopping: Stopping,
    /// Counts the stream in `hookplane_control_config_subscribers` while it runs.
    _subscriber: SubscriberGuard,
}

/// How a node stream ended.
enum End {
    NodeGone,
    Stopping,
    Failed(Error),
}

impl NodeStream {
    async fn run(mut self, last_revision: u64) {
        tracing::info!(node_id = %self.node_id, last_revision, "node connected to the config stream");
        let end = self.feed(last_revision).await;
        match end {
            End::NodeGone => {
                tracing::info!(node_id = %self.node_id, "node disconnected from the config stream");
            }
            End::Stopping => {
                tracing::info!(node_id = %self.node_id, "config stream closed for shutdown");
                let _ = self
                    .tx
                    .send(Err(Error::Unavailable(
                        "control plane shutting down".into(),
                    )
                    .into()))
                    .await;
            }
            End::Failed(e) => {
                tracing::error!(node_id = %self.node_id, error = %e, "config stream failed");
                let _ = self.tx.send(Err(e.into())).await;
            }
        }
    }

    async fn send(&self, update: ConfigUpdate) -> Result<(), End> {
        self.tx.send(Ok(update)).await.map_err(|_| End::NodeGone)
    }

    /// Sends an update read from the store. Its revision is durable, but the values read may be
    /// a later commit's, not yet flushed: the flush first, so a node never holds a value that a
    /// crash could take back. It usually joins the flush of the write that woke the stream.
    async fn send_config(&self, update: ConfigUpdate) -> Result<(), End> {
        self.builder.store.flush().await.map_err(End::Failed)?;
        self.send(update).await
    }

    /// Sends whatever was made durable after `sent`; returns the revision the node now holds.
    async fn catch_up(&self, sent: u64) -> Result<u64, End> {
        if self.builder.store.durable_revision() <= sent {
            return Ok(sent);
        }
        let update = match self.builder.since(sent).map_err(End::Failed)? {
            Some(update) => update,
            // Fell behind the whole change log (100,000 revisions): start over.
            None => self.builder.snapshot().map_err(End::Failed)?,
        };
        let revision = update.revision;
        self.send_config(update).await?;
        Ok(revision)
    }

    async fn feed(&mut self, last_revision: u64) -> End {
        // Subscribe before the first read so no flush between the two goes unnoticed.
        let mut revisions = self.builder.store.watch_durable_revision();
        let first = match self.builder.first(last_revision) {
            Ok(update) => update,
            Err(e) => return End::Failed(e),
        };
        let mut sent = first.revision;
        if let Err(end) = self.send_config(first).await {
            return end;
        }
        loop {
            let mut stopping = self.stopping.clone();
            tokio::select! {
                () = self.tx.closed() => return End::NodeGone,
                () = stopping.wait() => return End::Stopping,
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return End::Stopping;
                    }
                    match self.catch_up(sent).await {
                        Ok(revision) => sent = revision,
                        Err(end) => return end,
                    }
                }
                retry = self.retries.recv() => {
                    let mut ids = match retry {
                        Ok(batch) => batch.to_vec(),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(node_id = %self.node_id, missed, "missed delivery retries");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return End::Stopping,
                    };
                    while let Ok(batch) = self.retries.try_recv() {
                        ids.extend(batch.iter().cloned());
                    }
                    // The retry update claims the node's revision, so config goes out first.
                    match self.catch_up(sent).await {
                        Ok(revision) => sent = revision,
                        Err(end) => return end,
                    }
                    for chunk in ids.chunks(RETRY_IDS_PER_UPDATE) {
                        if let Err(end) = self.send(self.builder.retry(sent, chunk.to_vec())).await {
                            return end;
                        }
                    }
                }
            }
        }
    }
}

type WatchStream = ReceiverStream<Result<ConfigUpdate, Status>>;

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    type WatchConfigStream = WatchStream;

    async fn watch_config(
        &self,
        request: Request<WatchConfigRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let stream = NodeStream {
            node_id: req.node_id,
            builder: UpdateBuilder {
                store: self.store.clone(),
                publisher_token_sha256: self.publisher_token_sha256.clone(),
            },
            tx,
            retries: self.retries.subscribe(),
            stopping: self.stopping.clone(),
            _subscriber: self.metrics.config_subscriber(),
        };
        tokio::spawn(stream.run(req.last_revision));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_deliveries(
        &self,
        request: Request<Streaming<DeliveryReport>>,
    ) -> Result<Response<ReportDeliveriesResponse>, Status> {
        let mut reports = request.into_inner();
        let mut stopping = self.stopping.clone();
        let mut accepted = 0u64;
        loop {
            let report = tokio::select! {
                report = reports.message() => report?,
                () = stopping.wait() => break,
            };
            let Some(report) = report else { break };
            accepted += self
                .reports
                .take(report.node_id, Arc::new(report.attempts))
                .await?;
        }
        Ok(Response::new(ReportDeliveriesResponse { accepted }))
    }

    async fn report_token_use(
        &self,
        request: Request<ReportTokenUseRequest>,
    ) -> Result<Response<ReportTokenUseResponse>, Status> {
        for id in &request.get_ref().token_ids {
            // A token revoked meanwhile keeps no last use.
            if self.store.find_token(id)?.is_some() {
                self.last_used.touch(id)?;
            }
        }
        Ok(Response::new(ReportTokenUseResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookplane_proto::v1::RotateChannelSecretRequest;
    use hookplane_proto::v1::channel_service_server::ChannelService as _;
    use hookplane_proto::v1::tenant_service_server::TenantService as _;
    use hookplane_proto::v1::{DeleteTenantRequest, ForwardingSet, GenesysSettings as Genesys};
    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::channels::ChannelApi;
    use crate::delivery_log::Retention;
    use crate::tenants::TenantApi;
    use crate::test_fixtures::*;

    /// The config service of `store`, its delivery log announcing admins' retries on `retries`.
    fn config_api(
        dir: &tempfile::TempDir,
        store: &Store,
        retries: &broadcast::Sender<RetryBatch>,
        stopping: Stopping,
        last_used: Arc<LastUsed>,
    ) -> ConfigApi {
        let retention = Retention {
            count: 10,
            age: Duration::from_secs(60),
        };
        let log = DeliveryLog::new(store.clone(), retention, retries.clone()).unwrap();
        ConfigApi::new(
            store.clone(),
            &log,
            report_intake(dir, store, &log),
            "hp_pub_x",
            stopping,
            ControlMetrics::new(store.clone()),
            last_used,
        )
    }

    fn builder(store: &Store) -> UpdateBuilder {
        UpdateBuilder {
            store: store.clone(),
            publisher_token_sha256: hex::encode(Sha256::digest(b"hp_pub_x")),
        }
    }

    fn ids(update: &ConfigUpdate) -> Vec<String> {
        update
            .upserts
            .iter()
            .map(|r| match &r.resource {
                Some(Resource::Tenant(t)) => t.id.clone(),
                Some(Resource::Channel(c)) => c.id.clone(),
                Some(Resource::ForwardingSet(f)) => f.id.clone(),
                Some(Resource::Subscription(s)) => s.id.clone(),
                Some(Resource::PublisherToken(t)) => t.id.clone(),
                None => String::new(),
            })
            .collect()
    }

    /// A tenant with a channel, a Genesys forwarding set and a subscription.
    async fn populated(store: &Store) -> (String, String, String, String) {
        let tenant = create_tenant(store, tenant_input()).await;
        let channel = create_channel(store, &tenant.id).await;
        let set = create_forwarding_set(
            store,
            &channel.id,
            ForwardingSet {
                name: "Genesys".into(),
                kind: ForwardingKind::GenesysOpenMessaging as i32,
                genesys: Some(Genesys {
                    region_domain: "mypurecloud.com".into(),
                    client_id: "client".into(),
                    client_secret: "genesys-client-secret".into(),
                    integration_id: "integration".into(),
                    outbound_signature_secret: "genesys-signature-secret".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let sub = create_subscription(store, &tenant.id, subscription_input())
            .await
            .unwrap();
        (tenant.id, channel.id, set.id, sub.id)
    }

    #[tokio::test]
    async fn a_node_without_config_gets_a_snapshot_with_secrets_in_clear() {
        let (_dir, store) = store();
        let (tenant, channel, set, sub) = populated(&store).await;
        let update = builder(&store).first(0).unwrap();
        assert!(update.snapshot);
        assert_eq!(update.revision, store.revision());
        assert_eq!(ids(&update), [tenant, channel, set, sub]);
        assert_eq!(
            update.publisher_token_sha256,
            hex::encode(Sha256::digest(b"hp_pub_x"))
        );
        for r in &update.upserts {
            match &r.resource {
                Some(Resource::Channel(c)) => {
                    assert_eq!(c.secrets[0].secret, "line-secret-0123456789");
                }
                Some(Resource::ForwardingSet(f)) => {
                    let g = f.genesys.as_ref().unwrap();
                    assert_eq!(g.client_secret, "genesys-client-secret");
                    assert_eq!(g.outbound_signature_secret, "genesys-signature-secret");
                }
                Some(Resource::Subscription(s)) => {
                    assert!(s.secrets[0].secret.starts_with("whsec_"));
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_rotated_channel_secret_is_sent_after_the_current_one_with_its_end() {
        let (_dir, store) = store();
        let (_, channel, _, _) = populated(&store).await;
        ChannelApi::new(store.clone())
            .rotate_channel_secret(operator(RotateChannelSecretRequest {
                id: channel.clone(),
                new_secret: "new-secret".into(),
                grace_period: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            }))
            .await
            .unwrap();
        let update = builder(&store).first(0).unwrap();
        let node_channel = update
            .upserts
            .iter()
            .find_map(|r| match &r.resource {
                Some(Resource::Channel(c)) => Some(c.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(node_channel.secrets[0].secret, "new-secret");
        assert!(node_channel.secrets[0].valid_until.is_none());
        assert_eq!(node_channel.secrets[1].secret, "line-secret-0123456789");
        assert!(node_channel.secrets[1].valid_until.is_some());
    }

    #[tokio::test]
    async fn a_node_at_the_current_revision_gets_an_empty_update() {
        let (_dir, store) = store();
        populated(&store).await;
        let update = builder(&store).first(store.revision()).unwrap();
        assert!(!update.snapshot);
        assert!(update.upserts.is_empty() && update.deletes.is_empty());
        assert_eq!(update.revision, store.revision());
    }

    #[tokio::test]
    async fn a_node_ahead_of_the_store_gets_a_snapshot() {
        let (_dir, store) = store();
        populated(&store).await;
        let update = builder(&store).first(store.revision() + 10).unwrap();
        assert!(update.snapshot);
    }

    #[tokio::test]
    async fn every_update_names_the_store() {
        let (_dir, store) = store();
        populated(&store).await;
        let builder = builder(&store);
        assert_eq!(builder.first(0).unwrap().store_id, store.id());
        assert_eq!(builder.first(1).unwrap().store_id, store.id());
        assert_eq!(builder.retry(1, vec!["dlv_1".into()]).store_id, store.id());
        assert!(store.id().starts_with("st_"));
    }

    #[tokio::test]
    async fn a_commit_reaches_no_node_before_it_is_durable() {
        let (_dir, store) = store();
        populated(&store).await;
        let durable = store.revision();
        let tenant = crate::test_fixtures::tenant_record("tnt_unflushed");
        {
            let guard = store.lock_writes();
            let mut change = crate::store::Change::default();
            change.put_tenant(&tenant);
            store.commit(&guard, change).unwrap();
        }
        let builder = builder(&store);
        assert_eq!(builder.first(0).unwrap().revision, durable);
        let behind = builder.first(durable - 1).unwrap();
        assert_eq!(behind.revision, durable);
        assert!(!ids(&behind).contains(&tenant.id));
        let current = builder.first(durable).unwrap();
        assert_eq!(current.revision, durable);
        assert!(current.upserts.is_empty());

        store.flush().await.unwrap();
        let after = builder.first(durable).unwrap();
        assert_eq!(after.revision, durable + 1);
        assert_eq!(ids(&after), [tenant.id]);
    }

    #[tokio::test]
    async fn a_node_slightly_behind_gets_only_what_changed_including_deletes() {
        let (_dir, store) = store();
        let (tenant, channel, set, sub) = populated(&store).await;
        let held = store.revision();
        let other = create_tenant(&store, tenant_input()).await;
        TenantApi::new(store.clone())
            .delete_tenant(operator(DeleteTenantRequest { id: tenant.clone() }))
            .await
            .unwrap();
        let update = builder(&store).first(held).unwrap();
        assert!(!update.snapshot);
        assert_eq!(update.revision, held + 2);
        assert_eq!(ids(&update), [other.id]);
        let deleted: HashSet<_> = update.deletes.iter().map(|k| k.id.clone()).collect();
        assert_eq!(deleted, HashSet::from([tenant, channel, set, sub]));
    }

    #[tokio::test]
    async fn a_connected_node_receives_an_admin_write_within_a_second() {
        let (dir, store) = store();
        let (retries, _) = broadcast::channel(16);
        let (_stop, stopping) = Stopping::new();
        let api = config_api(&dir, &store, &retries, stopping, LastUsed::new(&store));
        let mut stream = api
            .watch_config(operator(WatchConfigRequest {
                node_id: "node-1".into(),
                last_revision: 0,
            }))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.snapshot);

        let tenant = create_tenant(&store, tenant_input()).await;
        let update = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!update.snapshot);
        assert_eq!(update.revision, store.revision());
        assert_eq!(ids(&update), [tenant.id]);

        retries
            .send(RetryBatch::from(["dlv_1".to_owned()]))
            .unwrap();
        let retry = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(retry.retry_delivery_ids, ["dlv_1"]);
        assert_eq!(retry.revision, store.revision());
        assert!(retry.upserts.is_empty());
    }

    #[tokio::test]
    async fn streams_end_when_the_server_stops() {
        let (dir, store) = store();
        let (retries, _) = broadcast::channel(16);
        let (stop, stopping) = Stopping::new();
        let api = config_api(&dir, &store, &retries, stopping, LastUsed::new(&store));
        let mut stream = api
            .watch_config(operator(WatchConfigRequest::default()))
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        stop.send(true).unwrap();
        let last = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.unwrap_err().code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none());
    }

    async fn make_token(store: &Store, role: hookplane_proto::v1::Role, tenant_id: &str) -> String {
        use hookplane_proto::v1::token_service_server::TokenService as _;
        crate::tokens::TokenApi::new(store.clone(), crate::tokens::LastUsed::new(store))
            .create_token(operator(hookplane_proto::v1::CreateTokenRequest {
                token: Some(hookplane_proto::v1::Token {
                    display_name: "token".into(),
                    role: role as i32,
                    tenant_id: tenant_id.into(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap()
            .id
    }

    fn publisher_tokens(update: &ConfigUpdate) -> Vec<NodePublisherToken> {
        update
            .upserts
            .iter()
            .filter_map(|r| match &r.resource {
                Some(Resource::PublisherToken(t)) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn nodes_get_the_hashes_of_tokens_that_may_publish_and_no_other() {
        use hookplane_proto::v1::Role;
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let publisher = make_token(&store, Role::Publisher, &tenant.id).await;
        let operator_token = make_token(&store, Role::Operator, "").await;
        make_token(&store, Role::TenantAdmin, &tenant.id).await;
        let update = builder(&store).first(0).unwrap();
        let mut sent = publisher_tokens(&update);
        sent.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<_> = sent.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, [publisher.clone(), operator_token]);
        assert_eq!(sent[0].tenant_id, tenant.id);
        assert!(sent[1].tenant_id.is_empty());
        assert_eq!(
            sent[0].secret_sha256,
            store.token(&publisher).unwrap().secret_sha256
        );
    }

    #[tokio::test]
    async fn a_revoked_token_reaches_nodes_as_a_delete() {
        use hookplane_proto::v1::token_service_server::TokenService as _;
        use hookplane_proto::v1::{RevokeTokenRequest, Role};
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let token = make_token(&store, Role::Publisher, &tenant.id).await;
        let held = store.revision();
        crate::tokens::TokenApi::new(store.clone(), crate::tokens::LastUsed::new(&store))
            .revoke_token(operator(RevokeTokenRequest { id: token.clone() }))
            .await
            .unwrap();
        let update = builder(&store).first(held).unwrap();
        assert!(!update.snapshot);
        assert_eq!(
            update.deletes,
            [ResourceKey {
                kind: ResourceKind::PublisherToken as i32,
                id: token,
            }]
        );
    }

    #[tokio::test]
    async fn a_nodes_report_of_token_use_sets_the_last_use_of_tokens_that_still_exist() {
        use hookplane_proto::v1::Role;
        let (dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let token = make_token(&store, Role::Publisher, &tenant.id).await;
        let (retries, _) = broadcast::channel(16);
        let (_stop, stopping) = Stopping::new();
        let last_used = LastUsed::new(&store);
        let api = config_api(&dir, &store, &retries, stopping, last_used.clone());
        api.report_token_use(Request::new(ReportTokenUseRequest {
            node_id: "node-1".into(),
            token_ids: vec![token.clone(), "tok_revoked".into()],
        }))
        .await
        .unwrap();
        assert!(last_used.get(&token).unwrap().is_some());
        assert!(last_used.get("tok_revoked").unwrap().is_none());
    }
}
