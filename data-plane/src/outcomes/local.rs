//! Delivery outcomes kept on the node until reported (the spool backend). Attempts gather in
//! memory and are reported in batches over ReportDeliveries; a batch the control plane does not
//! accept is written to the spool's `outcomes` tree and sent from there, oldest first, once it is
//! back, as is whatever is unsent when the node stops. Writing every attempt to disk first cost
//! more than the attempt's own settling (docs/BENCHMARKS.md); the price is that a `kill -9`
//! forgets the attempts of the last moments (a batch gathers for 200 ms) from the attempt log.
//! The deliveries themselves are the queue's business and are not affected.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use hookplane_proto::v1::DeliveryAttempt;
use prost::Message as _;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use super::{BATCH, GATHER, Outcomes, ReportTo, send_report, shrunk_capacity};
use crate::{Error, backoff::Backoff, metrics::Metrics};

/// Unsent outcomes kept while the control plane is away, in memory and on disk each; the oldest
/// go first.
const MAX_UNSENT: u64 = 200_000;

pub struct OutcomeLog {
    /// Spilled outcomes, oldest first.
    tree: sled::Tree,
    next_seq: AtomicU64,
    spilled: AtomicU64,
    fresh: Mutex<VecDeque<DeliveryAttempt>>,
    arrivals: Notify,
}

impl OutcomeLog {
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        let tree = db.open_tree("outcomes")?;
        let next_seq = match tree.last()? {
            Some((key, _)) => seq_of(&key) + 1,
            None => 0,
        };
        let spilled = tree.len() as u64;
        Ok(Self {
            tree,
            next_seq: AtomicU64::new(next_seq),
            spilled: AtomicU64::new(spilled),
            fresh: Mutex::new(VecDeque::new()),
            arrivals: Notify::new(),
        })
    }

    /// Keeps an attempt for reporting. Taken by value: the engine hands over its record, and a
    /// copy per delivery (a dozen strings) showed in the drain's profile.
    pub fn record(&self, attempt: DeliveryAttempt) {
        {
            let mut fresh = self.fresh();
            if fresh.len() as u64 >= MAX_UNSENT {
                fresh.pop_front();
            }
            fresh.push_back(attempt);
        }
        self.arrivals.notify_one();
    }

    pub fn unsent(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed) + self.fresh().len() as u64
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, VecDeque<DeliveryAttempt>> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes outcomes to the spool so they outlive the process; losing one is better than
    /// failing anything over it, so a spool error is logged, not returned.
    fn spill(&self, attempts: &[DeliveryAttempt]) {
        for attempt in attempts {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.tree.insert(seq.to_be_bytes(), attempt.encode_to_vec()) {
                warn!(error = %e, "could not keep a delivery outcome");
                return;
            }
            if self.spilled.fetch_add(1, Ordering::Relaxed) + 1 > MAX_UNSENT
                && let Ok(Some(_)) = self.tree.pop_min()
            {
                self.spilled.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Everything still in memory goes to the spool: the node is stopping.
    pub fn spill_unsent(&self) {
        let fresh: Vec<_> = self.fresh().drain(..).collect();
        self.spill(&fresh);
    }

    /// Up to `max` unsent outcomes, spilled ones first: their keys, the ones taken from memory,
    /// and the whole batch.
    fn next_batch(&self, max: usize) -> Result<Batch, Error> {
        let mut keys = Vec::new();
        let mut attempts = Vec::with_capacity(max);
        for entry in self.tree.iter().take(max) {
            let (key, value) = entry?;
            match DeliveryAttempt::decode(value.as_ref()) {
                Ok(attempt) => attempts.push(attempt),
                Err(e) => warn!(error = %e, "dropping an unreadable delivery outcome"),
            }
            keys.push(key);
        }
        let room = max.saturating_sub(keys.len());
        let mut fresh = self.fresh();
        let take = room.min(fresh.len());
        attempts.extend(fresh.drain(..take));
        if let Some(keep) = shrunk_capacity(fresh.len(), fresh.capacity()) {
            fresh.shrink_to(keep);
        }
        drop(fresh);
        Ok(Batch {
            keys,
            from_memory: take,
            attempts: Arc::new(attempts),
        })
    }

    fn forget(&self, keys: &[sled::IVec]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.clone());
        }
        self.tree.apply_batch(batch)?;
        self.spilled.fetch_sub(keys.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Default)]
struct Batch {
    keys: Vec<sled::IVec>,
    from_memory: usize,
    /// Shared with the report: kept here to be spilled should it fail.
    attempts: Arc<Vec<DeliveryAttempt>>,
}

impl Batch {
    /// The attempts that came from memory (the last ones).
    fn fresh(&self) -> &[DeliveryAttempt] {
        &self.attempts[self.attempts.len() - self.from_memory..]
    }
}

#[async_trait]
impl Outcomes for OutcomeLog {
    async fn record(&self, attempt: DeliveryAttempt) {
        OutcomeLog::record(self, attempt);
    }

    async fn report(
        self: Arc<Self>,
        to: ReportTo,
        metrics: Arc<Metrics>,
        node_id: String,
        stop: watch::Receiver<bool>,
    ) {
        report_outcomes(self, to, metrics, node_id, stop).await;
    }

    fn spill_unsent(&self) {
        OutcomeLog::spill_unsent(self);
    }
}

/// Sends outcomes until `stop` turns true.
async fn report_outcomes(
    log: Arc<OutcomeLog>,
    to: ReportTo,
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
        match send_batch(&log, &to, &node_id).await {
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

async fn send_batch(log: &OutcomeLog, to: &ReportTo, node_id: &str) -> Result<(), String> {
    let batch = log.next_batch(BATCH).map_err(|e| e.to_string())?;
    if batch.attempts.is_empty() {
        return Ok(());
    }
    let sent = batch.attempts.len();
    let failed = match send_report(to, node_id, Arc::clone(&batch.attempts)).await {
        Ok(()) => {
            log.forget(&batch.keys).map_err(|e| e.to_string())?;
            debug!(sent, "delivery outcomes reported");
            return Ok(());
        }
        Err(reason) => reason,
    };
    // Kept on disk from now on: the control plane may be away for long, and the node may stop.
    log.spill(batch.fresh());
    Err(failed)
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

    fn ids(batch: &Batch) -> Vec<&str> {
        batch.attempts.iter().map(|a| a.id.as_str()).collect()
    }

    #[test]
    fn spilled_outcomes_survive_reopening_and_come_out_before_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let log = OutcomeLog::open(&db).unwrap();
            log.record(attempt("att_1"));
            log.record(attempt("att_2"));
            log.spill_unsent();
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(attempt("att_3"));
        assert_eq!(log.unsent(), 3);
        let batch = log.next_batch(10).unwrap();
        assert_eq!(ids(&batch), vec!["att_1", "att_2", "att_3"]);
    }

    #[test]
    fn outcomes_wait_in_memory_without_touching_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(attempt("att_1"));
        assert_eq!(log.unsent(), 1);
        assert!(log.tree.is_empty());
    }

    #[test]
    fn a_batch_that_was_not_accepted_is_kept_on_disk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(attempt("att_1"));
        log.record(attempt("att_2"));
        let batch = log.next_batch(10).unwrap();
        log.record(attempt("att_3"));
        log.spill(batch.fresh());
        assert_eq!(log.tree.len(), 2);
        assert_eq!(
            ids(&log.next_batch(10).unwrap()),
            vec!["att_1", "att_2", "att_3"]
        );
    }

    #[test]
    fn the_queue_gives_back_its_room_once_a_spike_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        for n in 0..100_000 {
            log.record(attempt(&format!("att_{n}")));
        }
        assert!(log.fresh().capacity() >= 100_000);
        while log.unsent() > 0 {
            log.next_batch(BATCH).unwrap();
        }
        assert!(
            log.fresh().capacity() <= crate::outcomes::KEEP_SLOTS,
            "{} slots kept",
            log.fresh().capacity()
        );
    }

    #[test]
    fn forgotten_outcomes_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = OutcomeLog::open(&db).unwrap();
        log.record(attempt("att_1"));
        log.record(attempt("att_2"));
        log.spill_unsent();
        let batch = log.next_batch(1).unwrap();
        log.forget(&batch.keys).unwrap();
        assert_eq!(ids(&log.next_batch(10).unwrap()), vec!["att_2"]);
        assert_eq!(log.unsent(), 1);
    }
}
