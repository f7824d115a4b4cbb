//! Follows WatchConfig: a snapshot, then changes in revision order, each installed whole.
//! When the stream breaks the node keeps its last snapshot and reconnects with its revision.

use std::sync::Arc;

use hookplane_proto::v1::{ConfigUpdate, WatchConfigRequest};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{ConfigCache, ConfigStore};
use crate::{backoff::Backoff, control::ControlPlane, metrics::Metrics, queue::Queue};

pub async fn watch_config(
    control: ControlPlane,
    store: Arc<ConfigStore>,
    queue: Arc<dyn Queue>,
    metrics: Arc<Metrics>,
    node_id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        let follow = follow(&control, &store, &queue, &metrics, &node_id, &mut backoff);
        let result = tokio::select! {
            r = follow => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match result {
            Ok(()) => info!("config stream ended; reconnecting"),
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

async fn follow(
    control: &ControlPlane,
    store: &ConfigStore,
    queue: &Arc<dyn Queue>,
    metrics: &Metrics,
    node_id: &str,
    backoff: &mut Backoff,
) -> Result<(), tonic::Status> {
    let last_revision = if store.is_ready() {
        store.load().revision
    } else {
        0
    };
    let mut stream = control
        .config()
        .watch_config(WatchConfigRequest {
            node_id: node_id.to_owned(),
            last_revision,
        })
        .await?
        .into_inner();
    while let Some(update) = stream.message().await? {
        backoff.reset();
        apply(store, &update, metrics);
        requeue(queue, &update.retry_delivery_ids).await;
    }
    Ok(())
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
        if update.revision < current.revision
            || (!changes_config && update.revision == current.revision)
        {
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
    store.install(next, update.snapshot || store.is_ready());
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
/// `stop` turns true.
pub async fn save_config(
    store: Arc<ConfigStore>,
    cache: Arc<ConfigCache>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = store.watch_applied();
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
