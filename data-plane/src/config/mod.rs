//! The node's view of the control plane's configuration: an immutable [`Snapshot`] swapped in
//! whole for every update, so a request sees one revision from start to end.

mod snapshot;
mod watcher;

pub use snapshot::{ChannelEntry, Snapshot};
pub use watcher::watch_config;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

/// Holds the current snapshot and whether one has been applied yet.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    ready: watch::Sender<bool>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            ready: watch::channel(false).0,
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

    /// Replaces the snapshot in one step.
    pub fn install(&self, next: Snapshot, complete: bool) {
        self.current.store(Arc::new(next));
        if complete {
            self.ready.send_replace(true);
        }
    }
}
