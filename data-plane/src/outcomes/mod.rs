//! Delivery outcomes on their way to the control plane, behind the same backend choice as the
//! queue: [`local::OutcomeLog`] keeps unsent attempts on the node (memory, then the spool's sled
//! database), [`jetstream::SharedOutcomes`] keeps them in a JetStream stream that every node
//! reports from, so a node lost for good takes no attempt record with it. Either reports to a
//! [`ReportSink`]: the control plane over gRPC, or in standalone the one in the same process.

pub mod jetstream;
pub mod local;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use hookplane_proto::v1::{DeliveryAttempt, DeliveryReport};
use tokio::sync::watch;

use crate::{config::ConfigStore, control::ControlPlane, metrics::Metrics};

pub use local::OutcomeLog;

/// Attempts per ReportDeliveries message.
const BATCH: usize = 500;
/// How long a first outcome waits for company before it is sent.
const GATHER: Duration = Duration::from_millis(200);
/// Slots an outcome queue keeps once it is small again after a spike (a control plane or a
/// stream slow for a while): a few batches. A queue's buffer grows to its longest and kept that
/// size; as a ring turns, every slot of it comes to be written, so all of it stayed resident.
/// At the 200,000 unsent the spool's log keeps in memory, the slots alone are 90 MiB (a heap
/// profile of a drain, docs/BENCHMARKS.md, change 43).
const KEEP_SLOTS: usize = 8 * BATCH;

/// Gives back what `capacity` holds beyond [`KEEP_SLOTS`] once `len` is under a quarter of it:
/// the capacity to shrink to, if any.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP_SLOTS && len < capacity / 4).then(|| (len * 2).max(KEEP_SLOTS))
}
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where attempt records wait until the control plane has them.
#[async_trait]
pub trait Outcomes: Send + Sync + 'static {
    /// Keeps an attempt until it is reported. Returns once it is as safe as the backend makes
    /// it: memory for the spool (a failure to keep it further is logged, never passed on:
    /// losing an attempt record must not fail a delivery), the stream's acknowledgement for
    /// JetStream (waited for while NATS is away: the job stays unsettled meanwhile).
    async fn record(&self, attempt: DeliveryAttempt);
    /// Reports kept attempts to the control plane until `stop` turns true.
    async fn report(
        self: Arc<Self>,
        to: ReportTo,
        metrics: Arc<Metrics>,
        node_id: String,
        stop: watch::Receiver<bool>,
    );
    /// The node is stopping: whatever is only in memory goes where it outlives the process.
    fn spill_unsent(&self);
}

/// Where attempts are reported: the control plane, as long as the node follows it.
pub struct ReportTo {
    pub sink: Arc<dyn ReportSink>,
    pub config: Arc<ConfigStore>,
}

/// What takes a node's attempt reports: the control plane over ReportDeliveries
/// ([`GrpcReports`]), or in standalone the control plane of the same process, handed the
/// attempts directly (the composition root of the binary makes that one).
#[async_trait]
pub trait ReportSink: Send + Sync + 'static {
    /// Stores `attempts`; the reason they were not accepted, if they were not. The control plane
    /// drops an attempt id it already holds, so a report taken twice is harmless.
    ///
    /// Shared, not owned: the reporter keeps its share to spill the batch should the report
    /// fail, and the control plane copies only what it keeps. A copy of every attempt, a dozen
    /// strings each, was most of what reporting cost the node (docs/BENCHMARKS.md, change 36).
    async fn report(
        &self,
        node_id: &str,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<(), String>;
}

/// Reports over ReportDeliveries: up to [`BATCH`] attempts a message, all in one call.
pub struct GrpcReports(pub(crate) ControlPlane);

#[async_trait]
impl ReportSink for GrpcReports {
    async fn report(
        &self,
        node_id: &str,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<(), String> {
        // Taken whole when the reporter kept no share of it (JetStream's), copied otherwise.
        let attempts = Arc::try_unwrap(attempts).unwrap_or_else(|shared| shared.as_ref().clone());
        let mut attempts = attempts.into_iter().peekable();
        let mut reports = Vec::new();
        while attempts.peek().is_some() {
            reports.push(DeliveryReport {
                node_id: node_id.to_owned(),
                attempts: attempts.by_ref().take(BATCH).collect(),
            });
        }
        let mut client = self.0.config();
        match client.report_deliveries(tokio_stream::iter(reports)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// Sends one batch to the sink; the reason it was not accepted, if it was not.
///
/// Nothing is sent while the node refuses the control plane's config (another store, or one
/// restored to an earlier revision): its attempts belong to the store its config came from, and
/// wait, kept, until that one answers again.
async fn send_report(
    to: &ReportTo,
    node_id: &str,
    attempts: Arc<Vec<DeliveryAttempt>>,
) -> Result<(), String> {
    if let Some(why) = to.config.refusal() {
        return Err(format!(
            "not reported to a control plane whose config this node refuses ({why})"
        ));
    }
    match tokio::time::timeout(SEND_TIMEOUT, to.sink.report(node_id, attempts)).await {
        Ok(reported) => reported,
        Err(_) => Err("the control plane did not answer in time".to_owned()),
    }
}
