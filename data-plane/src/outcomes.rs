//! Delivery outcomes on their way to the control plane. Each attempt is written to the spool's
//! `outcomes` tree first, then reported in batches over ReportDeliveries and removed once the
//! control plane has accepted the batch; a control plane that is away just lets them pile up
//! (bounded) until it returns.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hookplane_proto::v1::{DeliveryAttempt, DeliveryReport};
use prost::Message as _;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::{Error, backoff::Backoff, control::ControlPlane, metrics::Metrics};

const BATCH: usize = 500;
/// How long a first outcome waits for company before it is sent.
const GATHER: Duration = Duration::from_millis(200);
/// Unsent outcomes kept while the control plane is away; the oldest go first.
const MAX_UNSENT: u64 = 200_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

pub struct OutcomeLog {
    tree: sled::Tree,
    next_seq: AtomicU64,
    unsent: AtomicU64,
    arrivals: Notify,
}

impl OutcomeLog {
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        let tree = db.open_tree("outcomes")?;
        let next_seq = match tree.last()? {
            Some((key, _)) => seq_of(&key) + 1,
            None => 0,
        };
        let unsent = tree.len() as u64;
        Ok(Self {
            tree,
            next_seq: AtomicU64::new(next_seq),
            unsent: AtomicU64::new(unsent),
            arrivals: Notify::new(),
        })
    }

    /// Keeps an attempt for reporting. Losing one is better than failing the delivery over it,
    /// so a spool error is logged, not returned.
    pub fn record(&self, attempt: &DeliveryAttempt) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tree.insert(seq.to_be_bytes(), attempt.encode_to_vec()) {
            warn!(error = %e, "could not keep a delivery outcome");
            return;
        }
        if self.unsent.fetch_add(1, Ordering::Relaxed) + 1 > MAX_UNSENT
            && let Ok(Some(_)) = self.tree.pop_min()
        {
            self.unsent.fetch_sub(1, Ordering::Relaxed);
        }
        self.arrivals.notify_one();
    }

    pub fn unsent(&self) -> u64 {
        self.unsent.load(Ordering::Relaxed)
    }

    fn oldest(&self, max: usize) -> Result<(Vec<sled::IVec>, Vec<DeliveryAttempt>), Error> {
        let mut keys = Vec::new();
        let mut attempts = Vec::new();
        for entry in self.tree.iter().take(max) {
            let (key, value) = entry?;
            match DeliveryAttempt::decode(value.as_ref()) {
                Ok(attempt) => attempts.push(attempt),
                Err(e) => warn!(error = %e, "dropping an unreadable delivery outcome"),
            }
            keys.push(key);
        }
        Ok((keys, attempts))
    }

    fn forget(&self, keys: &[sled::IVec]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch)?;
        self.unsent.fetch_sub(keys.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends outcomes until `stop` turns true.
pub async fn report_outcomes(
    log: Arc<OutcomeLog>,
    control: ControlPlane,
    metrics: Arc<Metrics>,
    node_id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        metrics.set_outcomes_unsent(log.unsent());
        if log.unsent() == 0 {
            tokio::select! {
                () = log.arrivals.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if log.unsent() < BATCH as u64 {
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        match send_batch(&log, &control, &node_id).await {
            Ok(()) => backoff.reset(),
            Err(reason) => {
                warn!(%reason, unsent = log.unsent(), "delivery outcomes not reported yet");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

async fn send_batch(log: &OutcomeLog, control: &ControlPlane, node_id: &str) -> Result<(), String> {
    let (keys, attempts) = log.oldest(BATCH).map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Ok(());
    }
    let sent = attempts.len();
    let report = DeliveryReport {
        node_id: node_id.to_owned(),
        attempts,
    };
    let mut client = control.config();
    let call = client.report_deliveries(tokio_stream::once(report));
    match tokio::time::timeout(SEND_TIMEOUT, call).await {
        Ok(Ok(_)) => {
            log.forget(&keys).map_err(|e| e.to_string())?;
            debug!(sent, "delivery outcomes reported");
            Ok(())
        }
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("the control plane did not answer in time".to_owned()),
    }
}

fn seq_of(key: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    be.copy_from_slice(&key[..8]);
    u64::from_be_bytes(be)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str) -> DeliveryAttempt {
        DeliveryAttempt {
            id: id.to_owned(),
            ..DeliveryAttempt::default()
        }
    }

    #[test]
    fn recorded_outcomes_come_out_oldest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let log = OutcomeLog::open(&db).unwrap();
            log.record(&attempt("att_1"));
            log.record(&attempt("att_2"));
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(&attempt("att_3"));
        let (_, attempts) = log.oldest(10).unwrap();
        let ids: Vec<_> = attempts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, vec!["att_1", "att_2", "att_3"]);
    }

    #[test]
    fn forgotten_outcomes_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(&attempt("att_1"));
        log.record(&attempt("att_2"));
        let (keys, _) = log.oldest(1).unwrap();
        log.forget(&keys).unwrap();
        let (_, attempts) = log.oldest(10).unwrap();
        assert_eq!(attempts, vec![attempt("att_2")]);
        assert_eq!(log.unsent(), 1);
    }
}
