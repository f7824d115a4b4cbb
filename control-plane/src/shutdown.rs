//! The signal that tells long-lived streams to end, so a graceful server shutdown can finish.

use tokio::sync::watch;

/// Resolves once shutdown has begun (or its sender is gone).
#[derive(Clone)]
pub(crate) struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub fn new() -> (watch::Sender<bool>, Stopping) {
        let (tx, rx) = watch::channel(false);
        (tx, Stopping(rx))
    }

    /// Whether shutdown has begun, for work that checks between steps instead of awaiting.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        // The guard `wait_for` returns is dropped at once: holding it across an await would make
        // the callers' futures !Send.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}
