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

    pub async fn wait(&mut self) {
        // The guard `wait_for` returns is dropped at once: holding it across an await would make
        // the callers' futures !Send.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}
