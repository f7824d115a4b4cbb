//! Where nodes' attempt reports are taken in: stored by the attempt log's writer, counted, and
//! watched for subscriptions failing for days (a stop then reaches the nodes with the store's
//! flush). ReportDeliveries feeds it from its gRPC stream; in standalone the node of the same
//! process hands its reports over through [`LocalReports`], without the trip through gRPC and
//! protobuf at both ends, about 45 % of what an attempt cost the control plane
//! (`attempt_log_cost`, docs/BENCHMARKS.md).

use std::sync::{Arc, PoisonError, RwLock};

use hookplane_proto::v1::DeliveryAttempt;

use crate::attempt_writer::AttemptWriter;
use crate::delivery_log::DeliveryLog;
use crate::error::Error;
use crate::metrics::ControlMetrics;
use crate::store::Store;
use crate::system_stop::SystemStop;

#[derive(Clone)]
pub(crate) struct ReportIntake {
    store: Store,
    attempts: AttemptWriter,
    system_stop: SystemStop,
    metrics: ControlMetrics,
}

impl ReportIntake {
    /// Starts the attempt log's writer thread; it ends when the last clone is dropped.
    pub fn start(
        store: Store,
        log: DeliveryLog,
        system_stop: SystemStop,
        metrics: ControlMetrics,
    ) -> Result<ReportIntake, Error> {
        Ok(ReportIntake {
            store,
            attempts: AttemptWriter::start(log)?,
            system_stop,
            metrics,
        })
    }

    /// Takes in one report of `node_id`; returns how many of its attempts were stored.
    pub async fn take(
        &self,
        node_id: String,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<u64, Error> {
        let written = self.attempts.record(node_id, Arc::clone(&attempts)).await?;
        self.metrics.attempts_written(written);
        // The log holds the attempts whatever happens here; failing the report would only make
        // the node send them again. A stop reaches nodes with the flush, which also follows a
        // failure (it may come after a stop was committed).
        match self.system_stop.observe(&attempts) {
            Ok(stopped) if stopped.is_empty() => {}
            Ok(_) => self.store.flush().await?,
            Err(e) => {
                tracing::warn!(error = %e, "following subscription failures failed");
                self.store.flush().await?;
            }
        }
        Ok(written)
    }
}

/// The control plane's intake for a node in the same process (standalone), from
/// [`ControlPlane::local_reports`](crate::ControlPlane::local_reports): it takes reports while
/// the control plane serves, and refuses them before and after, as an unreachable control plane
/// would (the node keeps them and sends them again).
#[derive(Clone, Default)]
pub struct LocalReports(Arc<RwLock<Option<ReportIntake>>>);

impl LocalReports {
    /// Takes in one report of `node_id`; returns how many of its attempts were stored, or why
    /// none were.
    pub async fn report(
        &self,
        node_id: &str,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<u64, String> {
        let intake = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or("the control plane is not serving")?;
        intake
            .take(node_id.to_owned(), attempts)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reports go to `intake` from now on.
    pub(crate) fn open(&self, intake: ReportIntake) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(intake);
    }

    /// The control plane stopped: reports are refused, and the writer is left to the last
    /// report in progress.
    pub(crate) fn close(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookplane_proto::v1::AttemptOutcome;
    use tokio::sync::broadcast;

    use super::*;
    use crate::clock::Time;
    use crate::delivery_log::Retention;
    use crate::test_fixtures::*;

    #[tokio::test]
    async fn local_reports_are_taken_only_while_the_control_plane_serves() {
        let (dir, store, fwd_id) = store_with_forwarding_set().await;
        let retention = Retention {
            count: 10,
            age: Duration::from_secs(60),
        };
        let log = DeliveryLog::new(store.clone(), retention, broadcast::channel(16).0).unwrap();
        let intake = report_intake(&dir, &store, &log);
        let report = || {
            Arc::new(vec![DeliveryAttempt {
                delivery_id: "dlv_1".into(),
                forwarding_set_id: fwd_id.clone(),
                time: Some(Time::now().to_proto()),
                outcome: AttemptOutcome::Succeeded as i32,
                ..DeliveryAttempt::default()
            }])
        };

        let local = LocalReports::default();
        assert!(
            local.report("n", report()).await.is_err(),
            "taken before serving"
        );
        local.open(intake);
        assert_eq!(local.report("n", report()).await, Ok(1));
        assert_eq!(listed_attempts(&log, &fwd_id).await.len(), 1);
        local.close();
        assert!(
            local.report("n", report()).await.is_err(),
            "taken after stopping"
        );
    }
}
