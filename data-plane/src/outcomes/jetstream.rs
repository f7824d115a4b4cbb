//! Delivery outcomes shared through JetStream (`--queue nats://...`): every attempt record is
//! published to the `<prefix>_outcomes` work-queue stream before its job is settled, and every
//! node reports from that stream's one consumer, acknowledging a record only once the control
//! plane took its batch. A node killed for good leaves its records for the others to report;
//! a batch reported twice (a node lost between report and ack) is harmless, as the control plane
//! keeps an attempt id once.

use std::sync::Arc;

use async_nats::jetstream::{AckKind, message::Acker};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use hookplane_proto::v1::DeliveryAttempt;
use prost::Message as _;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{BATCH, GATHER, Outcomes, send_report};
use crate::{backoff::Backoff, control::ControlPlane, metrics::Metrics, nats::Nats};

pub struct SharedOutcomes {
    nats: Nats,
}

impl SharedOutcomes {
    pub fn new(nats: Nats) -> Self {
        Self { nats }
    }

    /// Up to [`BATCH`] records, waiting up to [`GATHER`] for the first.
    async fn next_batch(&self) -> Result<Vec<(DeliveryAttempt, Acker)>, String> {
        let mut messages = self
            .nats
            .report
            .batch()
            .max_messages(BATCH)
            .expires(GATHER)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut batch = Vec::new();
        while let Some(message) = messages.next().await {
            let (message, acker) = message.map_err(|e| e.to_string())?.split();
            match DeliveryAttempt::decode(message.payload.as_ref()) {
                Ok(attempt) => batch.push((attempt, acker)),
                Err(e) => {
                    warn!(error = %e, "dropping an unreadable delivery outcome");
                    let _ = acker.ack_with(AckKind::Term).await;
                }
            }
        }
        Ok(batch)
    }
}

#[async_trait]
impl Outcomes for SharedOutcomes {
    async fn record(&self, attempt: DeliveryAttempt) {
        let subject = self.nats.names.outcome_subject();
        let stored = match self
            .nats
            .js
            .publish(subject, Bytes::from(attempt.encode_to_vec()))
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            warn!(attempt_id = %attempt.id, error = %e, "could not keep a delivery outcome");
        }
    }

    async fn report(
        self: Arc<Self>,
        control: ControlPlane,
        metrics: Arc<Metrics>,
        node_id: String,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::default();
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = tokio::select! {
                b = self.next_batch() => b,
                _ = stop.wait_for(|s| *s) => return,
            };
            let batch = match batch {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => b,
                Err(reason) => {
                    warn!(%reason, "cannot read delivery outcomes from NATS");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
            };
            let (attempts, ackers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let sent = attempts.len();
            metrics.set_outcomes_unsent(sent as u64);
            match send_report(&control, &node_id, attempts).await {
                Ok(()) => {
                    backoff.reset();
                    for acker in ackers {
                        if let Err(e) = acker.ack().await {
                            debug!(error = %e, "an outcome's ack was lost; it is reported again");
                        }
                    }
                    metrics.set_outcomes_unsent(0);
                    debug!(sent, "delivery outcomes reported");
                }
                Err(reason) => {
                    warn!(%reason, "delivery outcomes not reported yet");
                    let wait = backoff.next_wait();
                    // Back to the stream for any node (this one included) to try again.
                    for acker in ackers {
                        let _ = acker.ack_with(AckKind::Nak(Some(wait))).await;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    fn spill_unsent(&self) {
        // Nothing is held in memory: every record is in the stream before its job is settled.
    }
}
