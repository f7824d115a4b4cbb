//! The harness of hookplane's end-to-end tests: it builds the real binaries once, starts them on
//! free ports with their own data directories, and offers real receivers (an HTTP server that
//! records what it gets, Python receivers that verify with the official libraries, an SMTP server
//! that records the emails it gets).
//!
//! Tests live in `tests/`, one file per area, each test one behaviour.

pub mod api;
pub mod binaries;
pub mod browser;
pub mod fake_genesys;
pub mod fake_line;
pub mod fixtures;
pub mod ingress;
pub mod nats;
pub mod otlp;
pub mod process;
pub mod python;
pub mod receiver;
pub mod resetting;
pub mod smtp;

pub use fixtures::{FIXTURE_CHANNEL_SECRET, fixture};
pub use otlp::OtlpReceiver;
pub use process::{ControlProcess, DataNode, NodeSetup, Standalone};
pub use python::PyReceiver;
pub use receiver::{Receiver, Respond};
pub use resetting::ResettingReceiver;
pub use smtp::{Mail, SmtpReceiver};

use std::time::Duration;

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What `hookctl --json` printed, once it succeeded.
pub fn hookctl_json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "hookctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}
