//! Delivery outcomes shared through JetStream (`--queue nats://...`): every attempt record is
//! published to the `<prefix>_outcomes` work-queue stream before its job is settled, and every
//! node reports from that stream's one consumer, acknowledging a record only once the control
//! plane took its batch. A node killed for good leaves its records for the others to report;
//! a batch reported twice (a node lost between report and ack) is harmless, as the control plane
//! keeps an attempt id once.
//!
//! Records are published in groups, as the spool's enqueues are synced: whatever attempts end
//! while one group is being stored go together in the next message (a `DeliveryReport`), and
//! each waits for its group's acknowledgement. One message per attempt cost the stream a publish,
//! a delivery and an ack per attempt, and held NATS mode to a fraction of the spool's rate
//! (docs/BENCHMARKS.md).

use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::{AckKind, message::Acker};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use hookplane_proto::v1::{DeliveryAttempt, DeliveryReport};
use prost::Message as _;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{debug, warn};

use super::{BATCH, GATHER, Outcomes, ReportTo, send_report, shrunk_capacity};
use crate::{backoff::Backoff, metrics::Metrics, nats::Nats};

/// Groups of records one pull of the reporter asks for.
const GROUPS_PER_PULL: usize = 16;
/// The shortest pull worth asking NATS for.
const MIN_PULL: std::time::Duration = std::time::Duration::from_millis(10);

pub struct SharedOutcomes {
    nats: Nats,
    waiting: Arc<Waiting>,
    writer: tokio::task::JoinHandle<()>,
}

/// Records not yet in the stream, each with who waits for it to be stored.
#[derive(Default)]
struct Waiting {
    records: Mutex<Vec<(DeliveryAttempt, oneshot::Sender<()>)>>,
    arrived: Notify,
}

impl Drop for SharedOutcomes {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl SharedOutcomes {
    /// Starts the group writer (on the current runtime).
    pub fn new(nats: Nats) -> Self {
        let waiting = Arc::new(Waiting::default());
        let writer = tokio::spawn(write_groups(nats.clone(), Arc::clone(&waiting)));
        Self {
            nats,
            waiting,
            writer,
        }
    }

    /// Groups of records to report together: what comes within [`GATHER`] of the first, until
    /// they hold [`BATCH`] attempts (a pull's groups are all taken: a message left unread would
    /// only come back after the consumer's ack wait). Groups are small when attempts are few; one report per group cost the control
    /// plane a write of its delivery log for every handful of attempts.
    async fn next_batch(&self) -> Result<Vec<(Vec<DeliveryAttempt>, Acker)>, String> {
        let mut batch = Vec::new();
        let mut attempts = 0;
        let mut give_up = None;
        while attempts < BATCH {
            let wait = match give_up {
                None => GATHER,
                Some(at) => {
                    let left = tokio::time::Instant::saturating_duration_since(
                        &at,
                        tokio::time::Instant::now(),
                    );
                    if left < MIN_PULL {
                        break;
                    }
                    left
                }
            };
            let mut messages = self
                .nats
                .report
                .batch()
                .max_messages(GROUPS_PER_PULL)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(message) = messages.next().await {
                let (message, acker) = message.map_err(|e| e.to_string())?.split();
                match DeliveryReport::decode(message.payload.as_ref()) {
                    Ok(group) => {
                        give_up.get_or_insert_with(|| tokio::time::Instant::now() + GATHER);
                        attempts += group.attempts.len();
                        batch.push((group.attempts, acker));
                    }
                    Err(e) => {
                        warn!(error = %e, "dropping an unreadable group of delivery outcomes");
                        let _ = acker.ack_with(AckKind::Term).await;
                    }
                }
            }
            if give_up.is_none() {
                // Nothing came within a whole GATHER: report nothing, and ask again.
                break;
            }
        }
        Ok(batch)
    }
}

/// Publishes whatever records wait, up to [`BATCH`] in a message, and tells their waiters once
/// the stream has them.
async fn write_groups(nats: Nats, waiting: Arc<Waiting>) {
    let subject = nats.names.outcome_subject();
    loop {
        waiting.arrived.notified().await;
        loop {
            let group: Vec<_> = {
                let mut records = waiting
                    .records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let take = records.len().min(BATCH);
                let group = records.drain(..take).collect();
                if let Some(keep) = shrunk_capacity(records.len(), records.capacity()) {
                    records.shrink_to(keep);
                }
                group
            };
            if group.is_empty() {
                break;
            }
            let (attempts, waiters): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let count = attempts.len();
            let message = DeliveryReport {
                node_id: String::new(),
                attempts,
            };
            let payload = Bytes::from(message.encode_to_vec());
            // Sent until the stream has it: while NATS is away (or the stream elects a new
            // leader) the attempts' jobs wait unsettled rather than lose their records. The
            // control plane keeps an attempt id once, so a group stored twice is harmless.
            let mut backoff = Backoff::default();
            loop {
                let stored = match nats.js.publish(subject.clone(), payload.clone()).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => break,
                    Err(e) => {
                        warn!(records = count, error = %e, "delivery outcomes not kept yet; trying again");
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
            }
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }
}

#[async_trait]
impl Outcomes for SharedOutcomes {
    async fn record(&self, attempt: DeliveryAttempt) {
        let (stored, wait) = oneshot::channel();
        self.waiting
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((attempt, stored));
        self.waiting.arrived.notify_one();
        let _ = wait.await;
    }

    async fn report(
        self: Arc<Self>,
        to: ReportTo,
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
            let (groups, ackers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let attempts: Vec<DeliveryAttempt> = groups.into_iter().flatten().collect();
            let sent = attempts.len();
            metrics.set_outcomes_unsent(sent as u64);
            match send_report(&to, &node_id, Arc::new(attempts)).await {
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
