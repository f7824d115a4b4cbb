//! The node's view of the control plane's configuration: an immutable [`Snapshot`] swapped in
//! whole for every update, so a request sees one revision from start to end, and whether the node
//! refuses the control plane it reaches (another store, or its revision gone backwards).

mod cache;
mod snapshot;
mod watcher;

pub use cache::ConfigCache;
pub use snapshot::{ChannelEntry, Snapshot};
pub use watcher::{Watching, save_config, watch_config};

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

/// Holds the current snapshot and whether one has been applied yet.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    ready: watch::Sender<bool>,
    /// Serving the config saved on disk, the control plane not reached since start.
    cached: AtomicBool,
    /// Bumped by every update applied from the control plane (what the cache saves).
    applied: watch::Sender<u64>,
    /// Why the control plane's config is refused, while it is: the node serves on with its own
    /// and /readyz says why it is not ready.
    refusal: ArcSwapOption<String>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            ready: watch::channel(false).0,
            cached: AtomicBool::new(false),
            applied: watch::channel(0).0,
            refusal: ArcSwapOption::empty(),
        }
    }
}

impl ConfigStore {
    /// The snapshot in force; hold the `Arc` for the length of one request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// True once the first full snapshot is applied.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the store is gone, and with it anyone who would wait.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Replaces the snapshot in one step with one from the control plane.
    pub fn install(&self, next: Snapshot, complete: bool) {
        self.current.store(Arc::new(next));
        self.cached.store(false, Ordering::Release);
        self.refusal.store(None);
        self.applied.send_modify(|n| *n += 1);
        if complete {
            self.ready.send_replace(true);
        }
    }

    /// Serves the config the node saved before it last stopped, until the control plane is
    /// reached.
    pub fn install_cached(&self, saved: Snapshot) {
        self.current.store(Arc::new(saved));
        self.cached.store(true, Ordering::Release);
        self.ready.send_replace(true);
    }

    /// True while the config in force is the one saved on disk.
    pub fn is_cached(&self) -> bool {
        self.cached.load(Ordering::Acquire)
    }

    /// Keeps the config in force and records why the control plane's is refused, until an
    /// update is installed. True when the reason is new (the node was not refusing, or refused
    /// for another reason).
    pub fn refuse(&self, why: String) -> bool {
        let previous = self.refusal.swap(Some(Arc::new(why)));
        previous.as_deref() != self.refusal.load().as_deref()
    }

    /// Why the node refuses the control plane's config, while it does.
    pub fn refusal(&self) -> Option<Arc<String>> {
        self.refusal.load_full()
    }

    /// Wakes on every update applied from the control plane.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}
