//! Follows WatchConfig: a snapshot, then changes in revision order, each installed whole.
//! When the stream breaks the node keeps its last snapshot and reconnects with its revision.
//! An update from another store than the node's, or at a revision behind the node's, is refused:
//! taking it would drop every queued delivery whose target it lacks. The node keeps its config and
//! its queue, reports not ready, and tries the control plane again until it offers the node's
//! store at its revision or later.
//!
//! A tenant's `purge_before` (TenantService.PurgeTenantData) makes the queue drop the tenant's
//! jobs enqueued until then, once per process for each value: a node that was offline meets it
//! in its first snapshot, and a node that restarts applies it again (a no-op by then).

use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc, time::SystemTime};

use hookplane_proto::v1::{ConfigUpdate, WatchConfigRequest, config_resource::Resource};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::{ConfigCache, ConfigStore, Snapshot};
use crate::{backoff::Backoff, control::ControlPlane, metrics::Metrics, queue::Queue};

/// What the watcher needs besides the control plane.
pub struct Watching {
    pub store: Arc<ConfigStore>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    /// The saved config, named in the refusal's advice (deleting it moves the node on purpose).
    pub cache_path: PathBuf,
}

pub async fn watch_config(
    control: ControlPlane,
    watching: Watching,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut purges = AppliedPurges::default();
    // The saved config's purges, while the control plane may be away.
    if watching.store.is_ready() {
        purges.apply(&watching, &watching.store.load()).await;
    }
    loop {
        let follow = follow(&control, &watching, &mut backoff, &mut purges);
        let result = tokio::select! {
            r = follow => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match result {
            Ok(Followed::Ended) => info!("config stream ended; reconnecting"),
            // Logged when refused; the backoff (not reset) paces the next tries.
            Ok(Followed::Refused) => {}
            Err(status) => warn!(
                code = ?status.code(),
                message = status.message(),
                "config stream broke; serving the last config and reconnecting"
            ),
        }
        let wait = backoff.next_wait();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How a stream that did not break ended.
enum Followed {
    Ended,
    /// Its update was refused: what follows on that stream builds on what the node did not take.
    Refused,
}

async fn follow(
    control: &ControlPlane,
    watching: &Watching,
    backoff: &mut Backoff,
    purges: &mut AppliedPurges,
) -> Result<Followed, tonic::Status> {
    let store = &watching.store;
    // A node that refuses asks for a whole snapshot: what it takes next must not be changes on
    // top of another store's history.
    let last_revision = if store.is_ready() && store.refusal().is_none() {
        store.load().revision
    } else {
        0
    };
    let mut stream = control
        .config()
        .watch_config(WatchConfigRequest {
            node_id: watching.node_id.clone(),
            last_revision,
        })
        .await?
        .into_inner();
    while let Some(update) = stream.message().await? {
        if let Some(refusal) = refusal(store, &update) {
            refuse(watching, &refusal);
            return Ok(Followed::Refused);
        }
        backoff.reset();
        apply(store, &update, &watching.metrics);
        requeue(&watching.queue, &update.retry_delivery_ids).await;
        if store.is_ready() && update.upserts.iter().any(is_tenant) {
            purges.apply(watching, &store.load()).await;
        }
    }
    Ok(Followed::Ended)
}

/// Why the node cannot take an update on top of the config it holds.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The control plane's store is not the one the node's config came from.
    OtherStore {
        held: String,
        offered: String,
        revision: u64,
    },
    /// The node's store, at an earlier revision than the node holds.
    Backwards {
        store_id: String,
        held: u64,
        offered: u64,
    },
}

impl Refusal {
    /// The `reason` label of hookplane_config_refused_total.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::OtherStore { .. } => "store_id",
            Refusal::Backwards { .. } => "revision",
        }
    }

    fn of(held: &Snapshot, update: &ConfigUpdate) -> Option<Refusal> {
        // An empty id is a node that remembers none (it takes the first it meets) or a control
        // plane older than store ids (only its revision can be checked).
        if !held.store_id.is_empty()
            && !update.store_id.is_empty()
            && held.store_id != update.store_id
        {
            return Some(Refusal::OtherStore {
                held: held.store_id.clone(),
                offered: update.store_id.clone(),
                revision: held.revision,
            });
        }
        (update.revision < held.revision).then(|| Refusal::Backwards {
            store_id: held.store_id.clone(),
            held: held.revision,
            offered: update.revision,
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OtherStore {
                held,
                offered,
                revision,
            } => write!(
                f,
                "the control plane serves store {offered}, but this node's config (revision                  {revision}) comes from store {held}: the control plane's store was replaced or                  emptied"
            ),
            Refusal::Backwards {
                store_id,
                held,
                offered,
            } => write!(
                f,
                "the control plane's store {store_id} is at revision {offered}, behind the                  revision {held} this node holds: the store went back (restored from a backup?)"
            ),
        }
    }
}

/// The refusal for `update`, if the node holds a config it must not give up for it.
fn refusal(store: &ConfigStore, update: &ConfigUpdate) -> Option<Refusal> {
    // A node without config has nothing to lose.
    if !store.is_ready() {
        return None;
    }
    Refusal::of(&store.load(), update)
}

fn refuse(watching: &Watching, refusal: &Refusal) {
    watching.metrics.config_refused(refusal.reason());
    let why = format!("refusing the control plane's config: {refusal}");
    if watching.store.refuse(why.clone()) {
        error!(
            "{why}. This node keeps its config and its queued deliveries, answers /readyz with              503 and retries. Give the control plane its store back (its data dir) and the node              takes it again; to move this node to the control plane's store on purpose, dropping              queued deliveries whose targets that store lacks, stop the node, delete {} and              start it again",
            watching.cache_path.display()
        );
    } else {
        debug!("{why}; still refusing");
    }
}

fn apply(store: &ConfigStore, update: &ConfigUpdate, metrics: &Metrics) {
    let current = store.load();
    let changes_config = !update.upserts.is_empty() || !update.deletes.is_empty();
    if !update.snapshot {
        if !store.is_ready() {
            // Changes on top of nothing would be a partial config; wait for the snapshot.
            debug!(
                revision = update.revision,
                "change before any snapshot ignored"
            );
            return;
        }
        // Nothing new, unless the node serves its saved config: this update is the control
        // plane confirming it, which /readyz should say.
        if !changes_config && update.revision == current.revision && !store.is_cached() {
            return;
        }
    }
    let next = current.apply(update);
    debug!(
        revision = next.revision,
        snapshot = update.snapshot,
        upserts = update.upserts.len(),
        deletes = update.deletes.len(),
        "config applied"
    );
    metrics.set_config_revision(next.revision);
    metrics.config_taken();
    store.install(next, update.snapshot || store.is_ready());
}

fn is_tenant(resource: &hookplane_proto::v1::ConfigResource) -> bool {
    matches!(resource.resource, Some(Resource::Tenant(_)))
}

/// The purge times this process has applied, per tenant.
#[derive(Default)]
struct AppliedPurges(HashMap<String, SystemTime>);

impl AppliedPurges {
    /// Purges the queue of every tenant whose `purge_before` in `snapshot` is later than the
    /// one applied. One that fails (the disk) is tried again with the next tenant update or
    /// reconnection.
    async fn apply(&mut self, watching: &Watching, snapshot: &Snapshot) {
        for (tenant_id, before) in snapshot.purges() {
            if self.0.get(tenant_id).is_some_and(|done| *done >= before) {
                continue;
            }
            match watching.queue.purge_tenant(tenant_id, before).await {
                Ok(purged) => {
                    info!(
                        tenant_id,
                        queued = purged.queued,
                        parked = purged.parked,
                        "tenant data purged from the queue"
                    );
                    watching.metrics.purged(purged.queued, purged.parked);
                    self.0.insert(tenant_id.to_owned(), before);
                }
                Err(e) => error!(tenant_id, error = %e, "could not purge a tenant's jobs"),
            }
        }
    }
}

async fn requeue(queue: &Arc<dyn Queue>, ids: &[String]) {
    for id in ids {
        match queue.requeue_failed(id).await {
            Ok(true) => info!(delivery_id = %id, "failed delivery re-enqueued on request"),
            // Another node's spool holds it.
            Ok(false) => debug!(delivery_id = %id, "retry request for a delivery not held here"),
            Err(e) => warn!(delivery_id = %id, error = %e, "could not re-enqueue a delivery"),
        }
    }
}

/// How long the cache waits after an update for more before it saves: creating 10,000 channels
/// one by one saves a few times, not 10,000.
const SAVE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Saves the config in force to `cache` after the updates applied from the control plane, until
/// `stop` turns true. `applied` is `store.watch_applied()` taken before the config stream starts:
/// subscribed here, a first snapshot applied before this task first ran would count as seen and
/// the node would save nothing until the next change.
pub async fn save_config(
    store: Arc<ConfigStore>,
    cache: Arc<ConfigCache>,
    mut applied: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(SAVE_AFTER) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        applied.borrow_and_update();
        let update = store.load().to_update();
        let cache = Arc::clone(&cache);
        let revision = update.revision;
        match tokio::task::spawn_blocking(move || cache.save(&update)).await {
            Ok(Ok(())) => debug!(
                revision,
                "config saved for a start without the control plane"
            ),
            Ok(Err(e)) => warn!(error = %e, "could not save the config cache"),
            Err(e) => warn!(error = %e, "could not save the config cache"),
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(store_id: &str, revision: u64) -> ConfigUpdate {
        ConfigUpdate {
            revision,
            snapshot: true,
            store_id: store_id.to_owned(),
            ..ConfigUpdate::default()
        }
    }

    fn holding(store_id: &str, revision: u64) -> ConfigStore {
        let store = ConfigStore::default();
        store.install(Snapshot::default().apply(&update(store_id, revision)), true);
        store
    }

    #[tokio::test]
    async fn a_snapshot_applied_before_the_saver_first_runs_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ConfigCache::new(dir.path(), None, "hp_node_x").unwrap());
        let store = Arc::new(ConfigStore::default());
        let applied = store.watch_applied();
        store.install(Snapshot::default().apply(&update("st_1", 7)), true);
        let (stop_tx, stop) = watch::channel(false);
        let saver = tokio::spawn(save_config(
            Arc::clone(&store),
            Arc::clone(&cache),
            applied,
            stop,
        ));
        let saved = async {
            loop {
                if let Some(saved) = cache.load().unwrap() {
                    return saved;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        let saved = tokio::time::timeout(std::time::Duration::from_secs(10), saved)
            .await
            .expect("the snapshot is saved");
        assert_eq!(saved.revision, 7);
        stop_tx.send(true).unwrap();
        saver.await.unwrap();
    }

    #[test]
    fn a_node_without_config_takes_any_store_at_any_revision() {
        let store = ConfigStore::default();
        assert_eq!(refusal(&store, &update("st_b", 1)), None);
    }

    #[test]
    fn a_node_that_remembers_no_store_takes_the_first_and_remembers_it() {
        let store = holding("", 5);
        assert_eq!(refusal(&store, &update("st_a", 6)), None);
        let metrics = Metrics::default();
        apply(&store, &update("st_a", 6), &metrics);
        assert_eq!(store.load().store_id, "st_a");
        assert!(refusal(&store, &update("st_b", 7)).is_some());
    }

    #[test]
    fn another_store_is_refused_whatever_its_revision() {
        let store = holding("st_a", 5);
        for revision in [1, 5, 50] {
            let refused = refusal(&store, &update("st_b", revision)).unwrap();
            assert_eq!(refused.reason(), "store_id");
            let text = refused.to_string();
            assert!(text.contains("st_a") && text.contains("st_b"), "{text}");
        }
    }

    #[test]
    fn a_revision_behind_the_nodes_is_refused_even_from_its_own_store() {
        let store = holding("st_a", 5);
        let refused = refusal(&store, &update("st_a", 3)).unwrap();
        assert_eq!(refused.reason(), "revision");
        let text = refused.to_string();
        assert!(
            text.contains("st_a") && text.contains('3') && text.contains('5'),
            "{text}"
        );
        assert_eq!(refusal(&store, &update("st_a", 5)), None);
        assert_eq!(refusal(&store, &update("st_a", 6)), None);
    }

    #[test]
    fn a_control_plane_that_names_no_store_is_checked_by_revision_only() {
        let store = holding("st_a", 5);
        assert_eq!(refusal(&store, &update("", 6)), None);
        assert_eq!(
            refusal(&store, &update("", 4)).unwrap().reason(),
            "revision"
        );
        apply(&store, &update("", 6), &Metrics::default());
        assert_eq!(store.load().store_id, "st_a");
    }

    #[test]
    fn taking_an_update_ends_the_refusal() {
        let store = holding("st_a", 5);
        assert!(store.refuse("one reason".into()));
        assert!(!store.refuse("one reason".into()));
        assert!(store.refuse("another reason".into()));
        apply(&store, &update("st_a", 6), &Metrics::default());
        assert!(store.refusal().is_none());
    }

    #[test]
    fn a_node_on_its_saved_config_counts_as_reached_at_the_same_revision() {
        let store = ConfigStore::default();
        store.install_cached(Snapshot::default().apply(&update("st_a", 5)));
        let confirm = ConfigUpdate {
            snapshot: false,
            ..update("st_a", 5)
        };
        apply(&store, &confirm, &Metrics::default());
        assert!(!store.is_cached());
    }
}
